
/*
 * ngx_ha_optout_module: a flag write of the admin API (PUT, PATCH, DELETE
 * on v1/flags/{upstream} and v1/fleet/{upstream}, POST on v1/windows and
 * v1/approvals): the wait for the writer lock, then the request parsed and
 * checked against the upstream and the policy before anything is touched.
 * What is then applied is ngx_http_ha_optout_admin_apply.c's.
 */


#include "ngx_http_ha_optout_admin.h"


/*
 * What a flag write prepares before the zone is touched: the flag as it
 * will be, and what the steps below hand each other.
 */

typedef struct {
    ngx_http_ha_optout_flag_t  *flag;
    ngx_http_ha_optout_flag_t  *layer;     /* the zone's layer written */
    time_t                      now;
    time_t                      ttl;
    ngx_uint_t                  ttl_set;
    uint64_t                    revision;  /* of the fleet record */
    ngx_str_t                   actor;     /* the fleet record's, if sent */
} ngx_http_ha_optout_change_t;


static ngx_int_t ngx_http_ha_optout_write_window(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);
static ngx_int_t ngx_http_ha_optout_write_prepare(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);
static void ngx_http_ha_optout_admin_retry(ngx_http_request_t *r);
static ngx_int_t ngx_http_ha_optout_admin_prepare(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);
static ngx_int_t ngx_http_ha_optout_admin_patch_base(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch);
static ngx_int_t ngx_http_ha_optout_admin_parse(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch,
    u_char *body, size_t len);
static ngx_int_t ngx_http_ha_optout_admin_check(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch);
static void ngx_http_ha_optout_admin_stamp(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch);
static ngx_int_t ngx_http_ha_optout_admin_approval(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch);
static ngx_int_t ngx_http_ha_optout_admin_dry_run(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch);
static ngx_int_t ngx_http_ha_optout_admin_jti(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);


/*
 * PUT, PATCH and DELETE.  Everything is checked before the zone is
 * touched; the replay cache and If-Match are checked last, under the
 * zone's lock, so that a request rejected for any reason burns nothing.
 *
 * A change that suspends HA (PUT, PATCH) needs the writer lock, from its
 * change to its state file and audit line, and is refused (503) when it
 * cannot have it within NGX_HA_OPTOUT_LOCK_WAIT, or cannot be saved or
 * audited: nothing of it acts then.  It is published to the workers (the
 * zone's generation) only once both are written.  A restore (DELETE) takes
 * effect in the zone at once, lock or not, and its audit line is queued in
 * the same critical section; it is saved now if the lock can be had within
 * the wait, else by worker 0's timer, and answered 200 either way, with
 * "persisted": false when it is not on disk yet (SPEC section 8).
 *
 * Waiting never blocks the event loop: the request sleeps on a timer of
 * its connection, as limit_req's delay does.
 */

ngx_int_t
ngx_http_ha_optout_admin_write(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    ngx_int_t                        rc;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    if (ctx->route == NGX_HA_OPTOUT_R_FLEET_DENIED) {
        return ngx_http_ha_optout_admin_fleet_denied(r, ctx, body, len);
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (ctx->route == NGX_HA_OPTOUT_R_WINDOW) {
        return ngx_http_ha_optout_write_window(r, ctx, body, len);
    }

    if (!ctx->prepared) {
        rc = ngx_http_ha_optout_write_prepare(r, ctx, body, len);
        if (rc != NGX_OK || ctx->flag == NULL) {
            return rc;
        }
    }

    if (r->method == NGX_HTTP_DELETE) {
        return ngx_http_ha_optout_admin_restore(r, ctx);
    }

    if (ngx_http_ha_optout_writer_trylock() == NGX_OK) {
        if (!ngx_http_ha_optout_sh->restored) {
            ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
        }

        rc = ctx->approval
             ? ngx_http_ha_optout_approval_request(r, &ctx->claims,
                                                   ctx->hscf, ctx->flag,
                                                   ctx->ttl_set, ctx->ttl, 1)
             : NGX_DECLINED;

        if (rc == NGX_DECLINED) {
            /* NGX_DECLINED of approval_request(): narrower, applied now */
            ctx->narrows = ctx->approval;
            rc = ngx_http_ha_optout_admin_suspend(r, ctx);
        }

        ngx_http_ha_optout_writer_unlock();
        return rc;
    }

    if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
        return ngx_http_ha_optout_admin_wait(r, ctx);
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "ha_optout: write on \"%V\" refused: another write of "
                  "flags (process %P) has held the writer lock for more "
                  "than %M ms", &ctx->hscf->name,
                  (ngx_pid_t) ngx_http_ha_optout_sh->writer,
                  (ngx_msec_t) NGX_HA_OPTOUT_LOCK_WAIT);

    /* a 503 WriterBusy tells when to try again */
    if (ngx_http_ha_optout_admin_header(r, "Retry-After", "2") == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE, "WriterBusy",
                             "another write of flags has been in progress "
                             "for too long (a slow or stuck state file or "
                             "audit log, see error_log); nothing was "
                             "changed, retry later");
}


/* v1/windows: with the writer lock, waited for as a flag write waits */

static ngx_int_t
ngx_http_ha_optout_write_window(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    ngx_int_t  rc;

    if (ngx_http_ha_optout_writer_trylock() == NGX_OK) {
        rc = ngx_http_ha_optout_admin_window(r, ctx, body, len);
        ngx_http_ha_optout_writer_unlock();
        return rc;
    }

    if (!ctx->waiting) {
        ctx->wait_start = ngx_current_msec;
    }

    if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
        ctx->body = body;
        ctx->len = len;
        return ngx_http_ha_optout_admin_wait(r, ctx);
    }

    return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                             "WriterBusy", "another write of flags has "
                             "been in progress for too long (a slow or "
                             "stuck state file or audit log, see "
                             "error_log); nothing was changed, retry "
                             "later");
}


/*
 * Once per write: the state file restored first if the zone is fresh,
 * then admin_prepare(); NGX_OK with ctx->flag NULL when it has answered
 */

static ngx_int_t
ngx_http_ha_optout_write_prepare(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    ngx_int_t                        rc;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (!ctx->waiting) {
        ctx->wait_start = ngx_current_msec;
    }

    /*
     * a fresh zone: the state file comes back first (its flags, which
     * a PATCH or DELETE acts on, and its spent jtis, before one is
     * checked).  Its reader holds the writer lock: the write waits for
     * it as for any writer, then goes on (a suspension reads the file
     * below, with the lock, if need be)
     */
    if (!ngx_http_ha_optout_sh->restored) {
        if (ngx_http_ha_optout_writer_trylock() == NGX_OK) {
            ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
            ngx_http_ha_optout_writer_unlock();

        } else if (ngx_current_msec - ctx->wait_start
                   < NGX_HA_OPTOUT_LOCK_WAIT)
        {
            ctx->body = body;
            ctx->len = len;
            return ngx_http_ha_optout_admin_wait(r, ctx);
        }
    }

    /* an answer sent (a refusal, a dry run) leaves ctx->flag NULL */
    rc = ngx_http_ha_optout_admin_prepare(r, ctx, body, len);
    if (rc != NGX_OK || ctx->flag == NULL) {
        return rc;
    }

    ctx->prepared = 1;

    if (!ctx->waiting) {
        ctx->wait_start = ngx_current_msec;
    }

    return NGX_OK;
}


/* 409 PinConflict for a pin that names no server: which ones there are */

static ngx_int_t
ngx_http_ha_optout_pin_unknown(ngx_http_request_t *r,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag)
{
    u_char                    *p, *last;
    ngx_str_t                  message;
    ngx_uint_t                 i, n;
    ngx_http_ha_optout_rec_t  *rec;

    message.data = ngx_pnalloc(r->pool, 2048);
    if (message.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = message.data;
    last = p + 2048 - 64;
    rec = hscf->rec;

    p = ngx_cpymem(p, "pin \"", 5);
    p = ngx_http_ha_optout_echo(p, last, flag->pin, flag->pin_len);
    p = ngx_slprintf(p, last, "\" names no server of upstream \"%V\"; its "
                     "servers:", &hscf->name);

    for (i = 0, n = 0; rec && i < rec->nservers && p < last; i++) {
        if (rec->servers[i].len) {
            p = ngx_slprintf(p, last, "%s %*s", n++ ? "," : "",
                             rec->servers[i].len, rec->servers[i].name);
        }
    }

    if (n == 0) {
        p = ngx_slprintf(p, last, " (none known)");
    }

    message.len = p - message.data;

    return ngx_http_ha_optout_admin_error(r, NGX_HTTP_CONFLICT, "PinConflict",
                                          &message);
}


ngx_int_t
ngx_http_ha_optout_admin_wait(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_event_t  *wev;

    if (!ctx->waiting) {
        /* the request lives on past this handler: finalized by the retry */
        ctx->waiting = 1;
        r->main->count++;
    }

    ctx->delay = ctx->delay ? ngx_min(ctx->delay * 2, 50) : 5;

    if (!r->discard_body) {
        r->read_event_handler = ngx_http_test_reading;
    }

    r->write_event_handler = ngx_http_ha_optout_admin_retry;

    wev = r->connection->write;
    wev->delayed = 1;
    ngx_add_timer(wev, ctx->delay);

    return NGX_DONE;
}


/*
 * v1/approvals (approval.c): NGX_BUSY is the writer lock busy; the request
 * waits for it on its timer as a flag write does, then 503 WriterBusy
 */

ngx_int_t
ngx_http_ha_optout_admin_approvals(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (!ctx->waiting) {
        ctx->wait_start = ngx_current_msec;
    }

    rc = ngx_http_ha_optout_approval_handler(r, &ctx->claims,
                                             &ctx->upstream);
    if (rc != NGX_BUSY) {
        return rc;
    }

    if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
        return ngx_http_ha_optout_admin_wait(r, ctx);
    }

    /* a 503 WriterBusy tells when to try again */
    if (ngx_http_ha_optout_admin_header(r, "Retry-After", "2") == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE, "WriterBusy",
                             "another write holds the writer lock; retry "
                             "in a moment");
}


static void
ngx_http_ha_optout_admin_retry(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_event_t                     *wev;
    ngx_http_ha_optout_admin_ctx_t  *ctx;

    wev = r->connection->write;

    if (wev->delayed) {
        /* the socket became writable: not our timer yet */
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    if (!r->discard_body) {
        r->read_event_handler = ngx_http_block_reading;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);

    rc = (ctx->route == NGX_HA_OPTOUT_R_APPROVALS)
         ? ngx_http_ha_optout_admin_approvals(r, ctx)
         : ngx_http_ha_optout_admin_write(r, ctx, ctx->body, ctx->len);

    if (rc == NGX_DONE) {
        return;                         /* waits again */
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * The steps of a write, in order: the flag a PATCH changes, the body
 * parsed, checked against the upstream and the policy, stamped with its
 * actor and times, held for approvers, answered as a dry run, or handed
 * on with its jti.  Each step answers NGX_OK to go on, or NGX_DECLINED
 * once it has answered the request (its status in ctx->rc, as the
 * refusals of admin_auth() and admin_route()).
 */

static ngx_int_t
ngx_http_ha_optout_admin_prepare(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    ngx_int_t                     rc;
    ngx_http_ha_optout_flag_t    *before;
    ngx_http_ha_optout_change_t   ch;

    /*
     * the audit trail names who did it: a token without "sub" may read,
     * not write (its kid names a key, which many people may hold)
     */
    if (ctx->claims.sub.len == 0) {
        ngx_http_ha_optout_auth_count("malformed");
        return ngx_ha_optout_err(r, NGX_HTTP_UNAUTHORIZED, "InvalidToken",
                                 "bearer token rejected: a write needs a "
                                 "sub claim, the actor of the audit trail");
    }

    ctx->body = body;
    ctx->len = len;

    ngx_memzero(&ch, sizeof(ngx_http_ha_optout_change_t));
    ch.now = ngx_time();

    ch.flag = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_flag_t));
    before = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_flag_t));
    if (ch.flag == NULL || before == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the API layer, or the fleet layer (v1/fleet: the same code path) */
    ch.layer = (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET) ? &ctx->hscf->rec->fleet
                                                       : &ctx->hscf->rec->api;

    rc = ngx_http_ha_optout_admin_patch_base(r, ctx, &ch);

    if (rc == NGX_OK && r->method != NGX_HTTP_DELETE) {
        rc = ngx_http_ha_optout_admin_parse(r, ctx, &ch, body, len);

        if (rc == NGX_OK) {
            rc = ngx_http_ha_optout_admin_check(r, ctx, &ch);
        }

        if (rc == NGX_OK) {
            ngx_http_ha_optout_admin_stamp(r, ctx, &ch);
            rc = ngx_http_ha_optout_admin_approval(r, ctx, &ch);
        }
    }

    if (rc == NGX_OK) {
        rc = ngx_http_ha_optout_admin_dry_run(r, ctx, &ch);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_ha_optout_admin_jti(r, ctx);
    }

    if (rc != NGX_OK) {
        return ctx->rc;
    }

    ctx->flag = ch.flag;
    ctx->before = before;

    return NGX_OK;
}


/* a PATCH changes the layer's live flag: it starts from a copy */

static ngx_int_t
ngx_http_ha_optout_admin_patch_base(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch)
{
    ngx_uint_t  fleet;

    if (r->method != NGX_HTTP_PATCH) {
        return NGX_OK;
    }

    fleet = (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    *ch->flag = *ch->layer;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (!ngx_http_ha_optout_flag_live(ch->flag, ch->now)) {
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_CONFLICT, "NoFlag",
                                    fleet ? "there is no fleet flag to "
                                            "change on this upstream; use "
                                            "PUT"
                                          : "there is no API flag to change "
                                            "on this upstream; use PUT");
    }

    ch->revision = ch->flag->revision;

    return NGX_OK;
}


/* the body: a fleet write's own fields taken out, the rest a flag */

static ngx_int_t
ngx_http_ha_optout_admin_parse(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch,
    u_char *body, size_t len)
{
    char       *text;
    ngx_int_t   rc;
    ngx_str_t   code, message;

    if (body == NULL || len == 0) {
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                    "InvalidJSON",
                                    "a JSON body is required");
    }

    if (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET) {
        text = NULL;
        rc = ngx_http_ha_optout_admin_fleet_body(r, &body, &len,
                                                 &ch->revision, &ch->actor,
                                                 &text);
        if (rc == NGX_ABORT) {
            return ngx_http_ha_optout_admin_refuse(ctx,
                                           NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        if (rc == NGX_ERROR) {
            return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                        "InvalidField", text);
        }
    }

    if (ngx_http_ha_optout_flag_parse(r->pool, body, len,
                                      r->method == NGX_HTTP_PATCH, ch->flag,
                                      &ch->ttl, &ch->ttl_set, &code, &message)
        != NGX_OK)
    {
        if (message.data == NULL) {
            return ngx_http_ha_optout_admin_refuse(ctx,
                                           NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        /* code is a static literal, so it is terminated */
        return ngx_ha_optout_refuse_str(ctx, r, NGX_HTTP_BAD_REQUEST,
                                        (char *) code.data, &message);
    }

    return NGX_OK;
}


/* the flag against its upstream (pin, pin_selector) and the policy */

static ngx_int_t
ngx_http_ha_optout_admin_check(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch)
{
    ngx_int_t                        rc;
    ngx_str_t                        message;
    ngx_uint_t                       down;
    ngx_http_ha_optout_flag_t       *flag;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    hscf = ctx->hscf;
    flag = ch->flag;

    if (flag->pin_len) {
        rc = ngx_http_ha_optout_upstream_peer(hscf, flag->pin,
                                              flag->pin_len, &down, NULL);
        if (rc == NGX_BUSY) {
            return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_CONFLICT,
                                        "PinConflict",
                                        "the pinned server is marked "
                                        "\"down\" in the upstream and "
                                        "cannot be pinned");
        }

        if (rc != NGX_OK) {
            return ngx_http_ha_optout_admin_refuse(ctx,
                       ngx_http_ha_optout_pin_unknown(r, hscf, flag));
        }
    }

    if (flag->selector_len && hscf->stream_conf) {
        /* stream's "ha_optout" has no selector= to point to */
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                    "InvalidField",
                                    "pin_selector is http only: a stream "
                                    "upstream has no request header to "
                                    "select on (\"ha_optout\" in stream "
                                    "takes only sticky_key=$var); send "
                                    "\"pin\" alone to hold every new "
                                    "connection on that server, or "
                                    "\"sticky\": true to keep each client "
                                    "on its server");
    }

    if (flag->selector_len && hscf->selector == NULL) {
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_BAD_REQUEST,
                                    "InvalidField",
                                    "pin_selector needs \"ha_optout "
                                    "selector=$var\" in the upstream");
    }

    if (ngx_http_ha_optout_policy_check(hmcf, &hscf->name, flag, ch->ttl_set,
                                        ch->ttl, &message, r->pool)
        != NGX_OK)
    {
        if (message.data == NULL) {
            return ngx_http_ha_optout_admin_refuse(ctx,
                                           NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return ngx_ha_optout_refuse_str(ctx, r, NGX_HTTP_FORBIDDEN,
                                        "ForbiddenByPolicy", &message);
    }

    return NGX_OK;
}


/* the flag's layer, actor (and the fleet's revision and via) and times */

static void
ngx_http_ha_optout_admin_stamp(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch)
{
    ngx_str_t                   factor;
    ngx_http_ha_optout_flag_t  *flag;

    flag = ch->flag;

    flag->present = 1;
    flag->source = ctx->layer;

    if (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET) {
        /* the record's signed actor, by way of the agent */
        factor = ch->actor;

        if (factor.len == 0) {
            factor.data = flag->actor;      /* a PATCH keeps it */
            factor.len = flag->actor_len;
        }

        flag->revision = ch->revision;
        ngx_http_ha_optout_admin_via(flag, &ctx->claims.sub);

    } else {
        factor = ctx->claims.sub;
    }

    /* a long sub is cut on a UTF-8 character boundary */
    flag->actor_len = ngx_http_ha_optout_admin_cut(factor.data, factor.len,
                                                   NGX_HA_OPTOUT_ACTOR_LEN);

    ngx_memmove(flag->actor, factor.data, flag->actor_len);

    if (r->method == NGX_HTTP_PUT) {
        flag->set_at = ch->now;
    }

    if (ch->ttl_set) {
        flag->expires_at = ch->ttl ? ch->now + ch->ttl : 0;
    }
}


/*
 * policy "approvers": a write that suspends HA waits (202); not a fleet
 * write: the agents only mirror a record signed in etcd, and each nginx
 * holding it for its own approvals would split the fleet
 */

static ngx_int_t
ngx_http_ha_optout_admin_approval(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch)
{
    ngx_int_t  rc;

    if (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET) {
        return NGX_OK;
    }

    rc = ngx_http_ha_optout_approval_request(r, &ctx->claims, ctx->hscf,
                                             ch->flag, ch->ttl_set, ch->ttl,
                                             0);
    if (rc == NGX_AGAIN) {
        /* requested below, with the writer lock */
        ctx->approval = 1;
        ctx->ttl_set = ch->ttl_set ? 1 : 0;
        ctx->ttl = ch->ttl;

    } else if (rc != NGX_DECLINED) {
        return ngx_http_ha_optout_admin_refuse(ctx, rc);
    }

    return NGX_OK;
}


/* ?dry_run=1: the flag that would be, and nothing changes */

static ngx_int_t
ngx_http_ha_optout_admin_dry_run(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_http_ha_optout_change_t *ch)
{
    json_t                          *json;
    ngx_str_t                        dry;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    dry.len = 0;

    if (!(r->args.len
          && ngx_http_arg(r, (u_char *) "dry_run", 7, &dry) == NGX_OK
          && dry.len == 1 && dry.data[0] == '1'))
    {
        return NGX_OK;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    ch->flag->version = ch->layer->version;

    json = (r->method == NGX_HTTP_DELETE)
           ? json_null()
           : ngx_http_ha_optout_flag_json(ch->flag, &ctx->hscf->name,
                                          &hmcf->environment);

    return ngx_http_ha_optout_admin_refuse(ctx,
               ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                                             ch->layer->version));
}


/* with "ha_optout_admin_replay on", a write needs a jti to spend */

static ngx_int_t
ngx_http_ha_optout_admin_jti(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    if (hlcf->replay && ctx->claims.jti.len == 0) {
        ngx_http_ha_optout_auth_count("replay");
        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_UNAUTHORIZED,
                                    "InvalidToken",
                                    "bearer token rejected: a write needs "
                                    "a jti claim");
    }

    return NGX_OK;
}
