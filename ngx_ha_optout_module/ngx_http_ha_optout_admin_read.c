
/*
 * ngx_ha_optout_module: what the admin API reads (GET, HEAD): the acting
 * flags (v1/flags), the fleet layer (v1/fleet), the audit ring (v1/audit)
 * and the token's own claims (v1/whoami).
 */


#include "ngx_http_ha_optout_admin.h"


static json_t *ngx_http_ha_optout_flags_json(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, time_t now);
static json_t *ngx_http_ha_optout_whoami_json(
    ngx_http_ha_optout_admin_ctx_t *ctx);


/*
 * Longer than a screen and a half: the ring copied under the lock, then
 * parsed outside it.
 */

static json_t *
ngx_http_ha_optout_audit_json(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    u_char      *line, **lines;
    size_t       len;
    ngx_str_t    value;
    ngx_int_t    limit;
    ngx_uint_t   i, k, n, pos;
    json_t      *arr, *entry, *up;

    limit = 50;

    if (r->args.len
        && ngx_http_arg(r, (u_char *) "limit", 5, &value) == NGX_OK)
    {
        limit = ngx_atoi(value.data, value.len);
        if (limit <= 0) {
            return NULL;
        }
    }

    lines = ngx_pcalloc(r->pool, NGX_HA_OPTOUT_AUDIT_RING * sizeof(u_char *));
    arr = json_array();
    if (lines == NULL || arr == NULL) {
        return NULL;
    }

    /* copied under the lock, parsed outside it */

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    n = ngx_min(ngx_http_ha_optout_sh->audit_count, NGX_HA_OPTOUT_AUDIT_RING);

    for (i = 0; i < n; i++) {
        pos = (ngx_http_ha_optout_sh->audit_next + NGX_HA_OPTOUT_AUDIT_RING
               - 1 - i) % NGX_HA_OPTOUT_AUDIT_RING;
        line = ngx_http_ha_optout_sh->audit_ring[pos];

        if (line == NULL) {
            break;
        }

        len = ngx_strlen(line) + 1;
        lines[i] = ngx_pnalloc(r->pool, len);
        if (lines[i] == NULL) {
            break;
        }

        ngx_memcpy(lines[i], line, len);
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    for (i = 0, k = 0; i < n && lines[i] && k < (ngx_uint_t) limit; i++) {

        entry = json_loads((char *) lines[i], 0, NULL);
        if (entry == NULL) {
            continue;
        }

        if (ctx->claims.upstreams) {
            /* a token limited to some upstreams sees only their entries */
            up = json_object_get(entry, "upstream");

            if (!json_is_string(up)
                || !ngx_http_ha_optout_admin_may(ctx,
                                          (u_char *) json_string_value(up),
                                          json_string_length(up)))
            {
                json_decref(entry);
                continue;
            }
        }

        json_array_append_new(arr, entry);
        k++;
    }

    return arr;
}


ngx_int_t
ngx_http_ha_optout_admin_get(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    time_t                           now;
    json_t                          *json;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    now = ngx_time();

    switch (ctx->route) {

    case NGX_HA_OPTOUT_R_FLEET:
        json = ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_layer(ctx->hscf,
                                            NGX_HA_OPTOUT_SRC_FLEET, now),
                   &ctx->hscf->name, &hmcf->environment);

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                   ngx_http_ha_optout_flag_live(&ctx->hscf->fleet, now)
                   ? ctx->hscf->fleet.version : 0);

    case NGX_HA_OPTOUT_R_FLAG:
        ngx_http_ha_optout_refresh(ctx->hscf);
        json = ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_acting(ctx->hscf, now),
                   &ctx->hscf->name, &hmcf->environment);

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                   ngx_http_ha_optout_flag_live(&ctx->hscf->api, now)
                   ? ctx->hscf->api.version : 0);

    case NGX_HA_OPTOUT_R_FLEETS:
    case NGX_HA_OPTOUT_R_FLAGS:
        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK,
                   ngx_http_ha_optout_flags_json(r, ctx, now), 0);

    case NGX_HA_OPTOUT_R_AUDIT:
        json = ngx_http_ha_optout_audit_json(r, ctx);
        if (json == NULL) {
            return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidField",
                                     "limit must be a positive integer");
        }

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK,
                                             json_pack("{s:o}", "entries",
                                                       json), 0);

    default: /* NGX_HA_OPTOUT_R_WHOAMI */
        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK,
                   ngx_http_ha_optout_whoami_json(ctx), 0);
    }
}


/*
 * v1/flags: the flag acting on each upstream; v1/fleet: the fleet layer
 * of each.  A token limited to some upstreams sees only those.
 */

static json_t *
ngx_http_ha_optout_flags_json(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, time_t now)
{
    json_t                          *json;
    ngx_uint_t                       i;
    ngx_http_ha_optout_srv_conf_t  **hscfp;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    json = json_object();
    hscfp = hmcf->upstreams.elts;

    for (i = 0; json && i < hmcf->upstreams.nelts; i++) {
        if (!ngx_http_ha_optout_admin_may(ctx, hscfp[i]->name.data,
                                          hscfp[i]->name.len))
        {
            continue;
        }

        json_object_setn_new(json, (char *) hscfp[i]->name.data,
                             hscfp[i]->name.len,
                             ngx_http_ha_optout_flag_json(
                                 ctx->route == NGX_HA_OPTOUT_R_FLEETS
                                 ? ngx_http_ha_optout_layer(hscfp[i],
                                       NGX_HA_OPTOUT_SRC_FLEET, now)
                                 : ngx_http_ha_optout_acting(hscfp[i], now),
                                 &hscfp[i]->name, &hmcf->environment));
    }

    return json;
}


/* v1/whoami: the token's sub, scopes, kid, exp and ha_upstreams */

static json_t *
ngx_http_ha_optout_whoami_json(ngx_http_ha_optout_admin_ctx_t *ctx)
{
    u_char      exp[sizeof("2026-11-27T10:00:00Z")];
    json_t     *scopes, *ups;
    ngx_str_t  *s;
    ngx_uint_t  i;

    scopes = json_array();

    if (scopes && (ctx->claims.scopes & NGX_HA_OPTOUT_SCOPE_READ)) {
        json_array_append_new(scopes, json_string("ha:read"));
    }

    if (scopes && (ctx->claims.scopes & NGX_HA_OPTOUT_SCOPE_WRITE)) {
        json_array_append_new(scopes, json_string("ha:write"));
    }

    if (scopes && (ctx->claims.scopes & NGX_HA_OPTOUT_SCOPE_APPROVE)) {
        json_array_append_new(scopes, json_string("ha:approve"));
    }

    if (ctx->claims.upstreams) {
        ups = json_array();
        s = ctx->claims.upstreams->elts;

        for (i = 0; ups && i < ctx->claims.upstreams->nelts; i++) {
            json_array_append_new(ups, json_stringn((char *) s[i].data,
                                                    s[i].len));
        }

    } else {
        ups = json_null();
    }

    return json_pack("{s:s%,s:o,s:o,s:I,s:s%,s:o}",
                     "sub", ctx->claims.sub.data, ctx->claims.sub.len,
                     "scopes", scopes,
                     "kid", ctx->claims.kid.len
                            ? json_stringn((char *) ctx->claims.kid.data,
                                           ctx->claims.kid.len)
                            : json_null(),
                     "exp", (json_int_t) ctx->claims.exp,
                     "expires_at", exp,
                     ngx_http_ha_optout_time_iso(exp, ctx->claims.exp) - exp,
                     "ha_upstreams", ups);
}
