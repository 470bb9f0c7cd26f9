
/*
 * ngx_ha_optout_module: POST v1/windows/{upstream}/end|skip: an operator
 * ends the open occurrence of a policy window, or skips the next one.
 */


#include "ngx_http_ha_optout_admin.h"


static ngx_int_t ngx_http_ha_optout_window_body(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len,
    json_t **root, ngx_str_t *window, ngx_str_t *reason);
static ngx_int_t ngx_http_ha_optout_window_jti(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, time_t now);
static ngx_uint_t ngx_http_ha_optout_window_close(
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_flag_t *occ,
    ngx_uint_t action);
static json_t *ngx_http_ha_optout_window_json(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_str_t *name,
    ngx_http_ha_optout_flag_t *occ, ngx_uint_t ended, ngx_str_t *reason,
    time_t now);


/*
 * POST v1/windows/{upstream}/end or .../skip, body {"reason": "...",
 * "window": NAME}: the open occurrence of a policy window ends now, or the
 * next one does not open.  Audited as window_end / window_skip with the
 * token's actor and the reason given; kept in the state file.
 *
 * Longer than a screen and a half: the order of act, save, close and audit
 * is the point.
 */

ngx_int_t
ngx_http_ha_optout_admin_window(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    char                            *code;
    time_t                           now;
    json_t                          *root, *out;
    ngx_int_t                        rc;
    ngx_str_t                        window, name, message, reason, actor;
    ngx_str_t                        client, *request_id;
    ngx_uint_t                       status, action, ended;
    ngx_http_ha_optout_flag_t        occ;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    now = ngx_time();
    root = NULL;

    if (ngx_http_ha_optout_window_body(r, ctx, body, len, &root, &window,
                                       &reason)
        != NGX_OK)
    {
        return ctx->rc;
    }

    /* the strings live in root, which lives until the answer is made */

    if (ngx_http_ha_optout_window_jti(r, ctx, now) != NGX_OK) {
        json_decref(root);
        return ctx->rc;
    }

    rc = ngx_http_ha_optout_window_act(hmcf, ctx->hscf, &window, ctx->skip,
                                       &occ, &name, &status, &code, &message,
                                       r->pool);
    if (rc == NGX_ERROR) {
        json_decref(root);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        json_decref(root);

        /* a 403 is audited as "denied" by admin_error() */
        return ngx_http_ha_optout_admin_error(r, status, code, &message);
    }

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        ngx_http_ha_optout_window_unact(&occ);
        json_decref(root);
        return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "StateNotPersisted",
                                 "the state file could not be written; "
                                 "nothing was changed");
    }

    action = ctx->skip ? NGX_HA_OPTOUT_ACT_WINDOW_SKIP
                       : NGX_HA_OPTOUT_ACT_WINDOW_END;

    ended = ngx_http_ha_optout_window_close(ctx, &occ, action);

    actor = ctx->claims.sub;
    client = r->connection->addr_text;
    request_id = ngx_http_ha_optout_request_id(r);

    ngx_http_ha_optout_audit(hmcf, r->connection->log, action,
                             &ctx->hscf->name, &actor, &client, &reason,
                             &occ, NULL, request_id);

    /* another window that is open now takes over (audited by policy) */
    ngx_http_ha_optout_windows_tick(hmcf, r->connection->log);

    out = ngx_http_ha_optout_window_json(r, ctx, &name, &occ, ended, &reason,
                                         now);

    json_decref(root);

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, out,
                                         NGX_HA_OPTOUT_NO_ETAG);
}


/*
 * The body: {"reason": "...", "window": NAME}, its strings in *root for
 * the caller to free.  NGX_OK, or NGX_DECLINED once refused (ctx->rc).
 */

static ngx_int_t
ngx_http_ha_optout_window_body(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len,
    json_t **root, ngx_str_t *window, ngx_str_t *reason)
{
    size_t         i;
    json_t        *v;
    json_error_t   jerr;
    const char    *key;

    if (body == NULL || len == 0) {
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                    "InvalidJSON",
                                    "a JSON body is required: "
                                    "{\"reason\": \"...\"}, and \"window\" "
                                    "to name one");
    }

    *root = json_loadb((char *) body, len, JSON_REJECT_DUPLICATES, &jerr);

    if (*root == NULL || !json_is_object(*root)) {
        json_decref(*root);
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                    "InvalidJSON",
                                    "body must be a JSON object");
    }

    ngx_str_null(window);
    ngx_str_null(reason);

    json_object_foreach(*root, key, v) {
        if (ngx_strcmp(key, "reason") == 0 && json_is_string(v)) {
            reason->data = (u_char *) json_string_value(v);
            reason->len = json_string_length(v);

        } else if (ngx_strcmp(key, "window") == 0 && json_is_string(v)) {
            window->data = (u_char *) json_string_value(v);
            window->len = json_string_length(v);

        } else if (ngx_strcmp(key, "reason") == 0
                   || ngx_strcmp(key, "window") == 0)
        {
            json_decref(*root);
            return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                        "InvalidField",
                                        "reason and window must be strings");

        } else {
            json_decref(*root);
            return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                        "UnknownField",
                                        "unknown field; a window takes "
                                        "\"reason\" and \"window\"");
        }
    }

    for (i = 0; i < reason->len; i++) {
        if (reason->data[i] < 0x20 || reason->data[i] == 0x7f) {
            break;
        }
    }

    if (reason->len == 0 || reason->len > NGX_HA_OPTOUT_REASON_LEN
        || i < reason->len)
    {
        json_decref(*root);
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                    "InvalidReason",
                                    "reason is required (1..256 bytes, no "
                                    "control bytes)");
    }

    return NGX_OK;
}


/* with "ha_optout_admin_replay on": a jti, spent here */

static ngx_int_t
ngx_http_ha_optout_window_jti(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, time_t now)
{
    ngx_int_t                        rc;
    ngx_http_ha_optout_loc_conf_t   *hlcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (!hlcf->replay) {
        return NGX_OK;
    }

    if (ctx->claims.jti.len == 0) {
        ngx_http_ha_optout_auth_count("replay");
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_UNAUTHORIZED,
                                    "InvalidToken",
                                    "bearer token rejected: a write needs "
                                    "a jti claim");
    }

    if (!ngx_http_ha_optout_sh->restored) {
        ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    rc = ngx_http_ha_optout_replay_check_locked(&ctx->claims.jti,
                                                ctx->claims.exp, now);
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (rc == NGX_DECLINED) {
        ngx_http_ha_optout_auth_count("replay");
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_UNAUTHORIZED,
                                    "InvalidToken",
                                    "bearer token rejected: replayed jti");
    }

    return NGX_OK;
}


/*
 * The window layer closes now, not at the timer's next tick (an "end" of
 * the occurrence that acts: *occ becomes it); 1 when it was acting
 */

static ngx_uint_t
ngx_http_ha_optout_window_close(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_http_ha_optout_flag_t *occ, ngx_uint_t action)
{
    ngx_uint_t                 ended;
    ngx_http_ha_optout_rec_t  *rec;

    rec = ctx->hscf->rec;
    ended = 0;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (!ctx->skip && rec->window.present
        && rec->window.set_at == occ->set_at
        && rec->window.expires_at == occ->expires_at)
    {
        *occ = rec->window;
        ngx_memzero(&rec->window, sizeof(ngx_http_ha_optout_flag_t));
        ngx_http_ha_optout_bump();
        ended = 1;
    }

    (void) ngx_atomic_fetch_add(&rec->changes[action], 1);

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return ended;
}


/* the answer: the occurrence ended or skipped, and the flag acting now */

static json_t *
ngx_http_ha_optout_window_json(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_str_t *name,
    ngx_http_ha_optout_flag_t *occ, ngx_uint_t ended, ngx_str_t *reason,
    time_t now)
{
    u_char                           s[sizeof("2026-11-27T10:00:00Z")];
    u_char                           e[sizeof("2026-11-27T10:00:00Z")];
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    return json_pack("{s:s%,s:s,s:s%,s:s%,s:s%,s:b,s:s%,s:s%,s:o}",
                     "upstream", ctx->hscf->name.data, ctx->hscf->name.len,
                     "action", ctx->skip ? "skip" : "end",
                     "window", name->data, name->len,
                     "start", s,
                     ngx_http_ha_optout_time_iso(s, occ->set_at) - s,
                     "end", e,
                     ngx_http_ha_optout_time_iso(e, occ->expires_at) - e,
                     "was_acting", (int) ended,
                     "actor", ctx->claims.sub.data, ctx->claims.sub.len,
                     "reason", reason->data, reason->len,
                     "flag", ngx_http_ha_optout_flag_json(
                                 ngx_http_ha_optout_acting(ctx->hscf, now),
                                 &ctx->hscf->name, &hmcf->environment));
}
