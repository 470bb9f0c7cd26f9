
/*
 * ngx_ha_optout_module: a checked flag write applied.  Under the zone's
 * mutex: If-Match, the replay cache, the change staged with its audit
 * line; then the state file saved and the line written, and only then the
 * change published to the workers (a suspension), or saved after the fact
 * (a restore, which acts at once).  A suspension that cannot be persisted
 * is undone.
 */


#include "ngx_http_ha_optout_admin.h"


static ngx_int_t ngx_http_ha_optout_admin_decide_locked(
    ngx_http_request_t *r, ngx_http_ha_optout_admin_ctx_t *ctx,
    char **ecode, char **text);
static ngx_int_t ngx_http_ha_optout_admin_clear(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_uint_t ngx_http_ha_optout_admin_restore_persist(
    ngx_http_request_t *r, ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_admin_restored(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t persisted);
static ngx_int_t ngx_http_ha_optout_admin_stage_locked(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_str_t *actor, ngx_str_t *reason,
    ngx_str_t *request_id, char **s, char **ecode, char **text);
static char *ngx_http_ha_optout_admin_no_room_locked(ngx_http_request_t *r,
    ngx_uint_t built);
static ngx_int_t ngx_http_ha_optout_admin_persist(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);


/* the layer this request writes, in the zone */

static ngx_http_ha_optout_flag_t *
ngx_http_ha_optout_admin_layer(ngx_http_ha_optout_admin_ctx_t *ctx)
{
    return (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET) ? &ctx->hscf->rec->fleet
                                                   : &ctx->hscf->rec->api;
}


/*
 * With the zone's mutex held: If-Match, a PATCH built on a version that is
 * no longer current, and the replay cache (last, so a request refused for
 * any other reason burns no jti).  0 or the status of a refusal.
 */

static ngx_int_t
ngx_http_ha_optout_admin_decide_locked(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, char **ecode, char **text)
{
    ngx_int_t                       rc;
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    *ctx->before = *ngx_http_ha_optout_admin_layer(ctx);

    if (ngx_http_ha_optout_if_match(r, ctx->before->present
                                       ? ctx->before->version : 0)
        != NGX_OK)
    {
        *ecode = "PreconditionFailed";
        *text = "If-Match does not match the current version of the flag";
        return NGX_HTTP_PRECONDITION_FAILED;
    }

    if (r->method == NGX_HTTP_PATCH
        && (!ctx->before->present
            || ctx->before->version != ctx->flag->version))
    {
        *ecode = "Conflict";
        *text = "the flag changed while this PATCH was processed; retry";
        return NGX_HTTP_CONFLICT;
    }

    if (ctx->narrows
        && !ngx_http_ha_optout_approval_narrows(ctx->flag, ctx->before,
                                                ngx_time()))
    {
        *ecode = "Conflict";
        *text = "the approved flag this write narrows was removed or "
                "changed while it waited; nothing was changed: send it "
                "again (it may need approval now)";
        return NGX_HTTP_CONFLICT;
    }

    if (!hlcf->replay) {
        return 0;
    }

    rc = ngx_http_ha_optout_replay_check_locked(&ctx->claims.jti,
                                                ctx->claims.exp, ngx_time());

    if (rc == NGX_DECLINED) {
        *ecode = "InvalidToken";
        *text = "bearer token rejected: replayed jti";
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (rc == NGX_BUSY && r->method != NGX_HTTP_DELETE) {
        /* restoring HA (DELETE) is never refused for want of room */
        u_char                          *p, *last;
        ngx_http_ha_optout_main_conf_t  *hmcf;

        hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

        *ecode = "ZoneFull";
        *text = "the replay cache is full; try again when older tokens "
                "expire";

        p = ngx_pnalloc(r->pool, 512);
        if (p != NULL) {
            last = ngx_http_ha_optout_zone_full_text_locked(p, p + 511,
                                                          hmcf->shm_zone,
                                                          ngx_time(), NULL);
            *last = '\0';
            *text = (char *) p;
        }

        return NGX_HTTP_INSUFFICIENT_STORAGE;
    }

    return 0;
}


static ngx_int_t
ngx_http_ha_optout_admin_refused(ngx_http_request_t *r, ngx_int_t status,
    char *ecode, char *text)
{
    if (status == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_ha_optout_auth_count("replay");
    }

    return ngx_ha_optout_err(r, status, ecode, text);
}


/*
 * DELETE: the API flag cleared in the zone at once (admin_clear), then,
 * with the writer lock if it can be had within the wait, the state file
 * saved and the audit line written (admin_restore_persist)
 */

ngx_int_t
ngx_http_ha_optout_admin_restore(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_uint_t  persisted;

    if (!ctx->applied) {
        if (ngx_http_ha_optout_admin_clear(r, ctx) != NGX_OK) {
            return ctx->rc;
        }

        if (!ctx->changed) {
            /* nothing to restore, nothing to save */
            return ngx_http_ha_optout_admin_restored(r, ctx, 1);
        }
    }

    if (ngx_http_ha_optout_writer_trylock() != NGX_OK) {
        if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
            return ngx_http_ha_optout_admin_wait(r, ctx);
        }

        return ngx_http_ha_optout_admin_restored(r, ctx, 0);
    }

    persisted = ngx_http_ha_optout_admin_restore_persist(r, ctx);

    ngx_http_ha_optout_writer_unlock();

    return ngx_http_ha_optout_admin_restored(r, ctx, persisted);
}


/*
 * Under the zone's mutex: If-Match and the replay cache, then the flag
 * cleared with its audit line queued (in this section, and made first, so
 * that a kill leaves both or neither).  NGX_OK, or NGX_DECLINED once
 * refused (ctx->rc).
 *
 * Longer than a screen and a half: what one critical section does, in one
 * place.
 */

static ngx_int_t
ngx_http_ha_optout_admin_clear(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    char                            *s, *ecode, *text;
    ngx_str_t                        actor, client, reason, *request_id;
    ngx_int_t                        status;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    request_id = ngx_http_ha_optout_request_id(r);
    if (request_id == NULL) {
        return ngx_http_ha_optout_admin_refuse(ctx,
                                           NGX_HTTP_INTERNAL_SERVER_ERROR);
    }

    ngx_http_ha_optout_admin_actor(ctx, &actor);
    client = r->connection->addr_text;
    s = NULL;
    ecode = NULL;
    text = NULL;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    status = ngx_http_ha_optout_admin_decide_locked(r, ctx, &ecode, &text);
    if (status) {
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        return ngx_http_ha_optout_admin_refuse(ctx,
                   ngx_http_ha_optout_admin_refused(r, status, ecode, text));
    }

    ctx->applied = 1;
    ctx->changed = ctx->before->present;

    if (ctx->changed) {
        /*
         * queued in the order of the changes: in this section, and
         * made first, so that a kill leaves both or neither
         */

        reason.data = ctx->before->reason;
        reason.len = ctx->before->reason_len;

        s = ngx_http_ha_optout_audit_build(hmcf, r->connection->log,
                                           NGX_HA_OPTOUT_ACT_CLEAR,
                                           &ctx->hscf->name, &actor,
                                           &client, &reason, ctx->before,
                                           NULL, request_id);
        if (s) {
            ctx->line = ngx_http_ha_optout_audit_enqueue_locked(s);
        }

        ngx_memzero(ngx_http_ha_optout_admin_layer(ctx),
                    sizeof(ngx_http_ha_optout_flag_t));
        (void) ngx_atomic_fetch_add(
                   &ctx->hscf->rec->changes[NGX_HA_OPTOUT_ACT_CLEAR], 1);
        ngx_http_ha_optout_bump();
        ngx_http_ha_optout_sh->state_dirty++;
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (ctx->changed) {
        ngx_http_ha_optout_audit_warn_line(r->connection->log,
                                           NGX_HA_OPTOUT_ACT_CLEAR,
                                           &ctx->hscf->name, &actor,
                                           &reason, ctx->before);
        if (s && ctx->line == NULL) {
            ngx_http_ha_optout_audit_lost(r->connection->log, s);
        }
    }

    if (s) {
        free(s);
    }

    return NGX_OK;
}


/*
 * With the writer lock held: the audit line written and the state file
 * saved; what is not is left to the timer, in a second.  1 when both are.
 */

static ngx_uint_t
ngx_http_ha_optout_admin_restore_persist(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    uint64_t                         dirty;
    ngx_int_t                        saved, audited;
    ngx_http_ha_optout_shctx_t      *sh;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    sh = ngx_http_ha_optout_sh;

    (void) ngx_http_ha_optout_audit_flush(hmcf, r->connection->log);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    audited = ctx->line == NULL
              ? 0 : !ngx_http_ha_optout_audit_queued_locked(ctx->line);
    dirty = sh->state_dirty;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    saved = (ngx_http_ha_optout_state_save_restore(hmcf, r->connection->log)
             == NGX_OK);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (saved) {
        sh->state_dirty -= ngx_min(dirty, sh->state_dirty);

    } else {
        sh->state_failures++;
    }

    if (!saved || !audited) {
        /* the timer tries again in a second */
        sh->retry_delay = 1;
        sh->retry_at = ngx_time() + 1;
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ctx->audited = audited;

    return saved && audited;
}


/*
 * HA is restored in the zone: the answer is the flag that acts now (null,
 * or the window or config flag the API flag hid); when the restore is not
 * on disk yet, {"acting": ..., "persisted": false}.
 */

static ngx_int_t
ngx_http_ha_optout_admin_restored(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t persisted)
{
    json_t                          *json;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    json = ngx_http_ha_optout_flag_json(
               ngx_http_ha_optout_acting(ctx->hscf, ngx_time()),
               &ctx->hscf->name, &hmcf->environment);

    if (persisted) {
        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json, 0);
    }

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "ha_optout: HA on \"%V\" is restored in memory, but %s; "
                  "worker 0 retries until it is written",
                  &ctx->hscf->name,
                  ctx->waiting && !ctx->audited && ngx_current_msec
                      - ctx->wait_start >= NGX_HA_OPTOUT_LOCK_WAIT
                  ? "another write holds the writer lock, so the state file "
                    "and the audit line are not written yet"
                  : "its state file or audit line could not be written");

    json = json_pack("{s:o,s:b}", "acting", json ? json : json_null(),
                     "persisted", 0);

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json, 0);
}


/* a suspension that failed to persist is undone, unless replaced since */

static void
ngx_http_ha_optout_admin_undo(ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_http_ha_optout_rec_t   *rec;
    ngx_http_ha_optout_flag_t  *layer;

    rec = ctx->hscf->rec;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    layer = ngx_http_ha_optout_admin_layer(ctx);

    if (layer->present && layer->version == ctx->flag->version) {
        *layer = *ctx->before;
        (void) ngx_atomic_fetch_add(&rec->changes[ctx->action], -1);
    }

    ngx_http_ha_optout_audit_unqueue_locked(ctx->line);
    ctx->line = NULL;

    ngx_http_ha_optout_sh->pending.pid = 0;

    /* in case another change published it meanwhile */
    ngx_http_ha_optout_bump();

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
}


/* PUT and PATCH, with the writer lock held: staged, persisted, published */

/*
 * Longer than a screen and a half: its steps in their order (the fleet
 * revision sent again, decide, stage, persist, publish) are the point, kept
 * in one place.
 */

ngx_int_t
ngx_http_ha_optout_admin_suspend(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    char                            *s, *ecode, *text;
    ngx_str_t                        actor, reason, *request_id;
    ngx_int_t                        status;
    json_t                          *json;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t       *flag, *before;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    hscf = ctx->hscf;
    rec = hscf->rec;
    flag = ctx->flag;
    before = ctx->before;

    /*
     * what waits for the audit log goes first; if it cannot be written,
     * neither could this change's line: refused before anything acts
     */
    if (ngx_http_ha_optout_audit_flush(hmcf, r->connection->log) != NGX_OK) {
        return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "AuditNotWritten",
                                 "the audit log cannot be written (see "
                                 "error_log); a change that suspends HA is "
                                 "refused until it can, nothing was "
                                 "changed");
    }

    request_id = ngx_http_ha_optout_request_id(r);
    if (request_id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actor.data = flag->actor;
    actor.len = flag->actor_len;
    reason.data = flag->reason;
    reason.len = flag->reason_len;
    ecode = NULL;
    text = NULL;
    s = NULL;

    ctx->action = (r->method == NGX_HTTP_PATCH) ? NGX_HA_OPTOUT_ACT_UPDATE
                                                : NGX_HA_OPTOUT_ACT_SET;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    /*
     * the agent applies each revision once; one it sends again (after a
     * restart, a reconnect) changes nothing and writes no audit line
     */
    if (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET && r->method == NGX_HTTP_PUT
        && ngx_http_ha_optout_flag_live(&rec->fleet, ngx_time())
        && rec->fleet.revision == flag->revision)
    {
        *before = rec->fleet;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        json = ngx_http_ha_optout_flag_json(before, &hscf->name,
                                            &hmcf->environment);

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                                             before->version);
    }

    status = ngx_http_ha_optout_admin_decide_locked(r, ctx, &ecode, &text);

    if (status == 0) {
        status = ngx_http_ha_optout_admin_stage_locked(r, ctx, &actor,
                                                       &reason, request_id,
                                                       &s, &ecode, &text);
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (s) {
        free(s);
    }

    if (status) {
        return ngx_http_ha_optout_admin_refused(r, status, ecode, text);
    }

    if (ngx_http_ha_optout_admin_persist(r, ctx) != NGX_OK) {
        return ctx->rc;
    }

    /* saved and audited: it acts now */

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    ngx_http_ha_optout_bump();
    ngx_http_ha_optout_sh->pending.pid = 0;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ctx->line = NULL;

    ngx_http_ha_optout_audit_warn_line(r->connection->log, ctx->action,
                                       &hscf->name, &actor, &reason, flag);

    json = ngx_http_ha_optout_flag_json(flag, &hscf->name,
                                        &hmcf->environment);

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                                         flag->version);
}


/*
 * With the zone's mutex held, after admin_decide_locked(): the line is
 * made first (*s, for the caller to free): what follows takes no time, so
 * a writer killed in this section leaves the change with its line, or
 * neither.  The change is then staged: in the zone for the state file,
 * not yet published to the workers (no generation bump) until it is saved
 * and audited; a killed writer's change is finished by the next one.
 * 0 or the status of a refusal.
 */

static ngx_int_t
ngx_http_ha_optout_admin_stage_locked(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_str_t *actor, ngx_str_t *reason,
    ngx_str_t *request_id, char **s, char **ecode, char **text)
{
    ngx_str_t                        client;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t       *flag, *before;
    ngx_http_ha_optout_shctx_t      *sh;
    ngx_http_ha_optout_pending_t    *pending;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    hscf = ctx->hscf;
    rec = hscf->rec;
    sh = ngx_http_ha_optout_sh;
    flag = ctx->flag;
    before = ctx->before;
    client = r->connection->addr_text;

    flag->version = ++sh->version_seq;

    /* a new flag: its sticky bindings start afresh (flag_ident()) */
    if (r->method == NGX_HTTP_PUT) {
        flag->put_version = flag->version;
    }

    *s = ngx_http_ha_optout_audit_build(hmcf, r->connection->log,
                                        ctx->action, &hscf->name, actor,
                                        &client, reason,
                                        before->present ? before : NULL,
                                        flag, request_id);

    ctx->line = *s ? ngx_http_ha_optout_audit_enqueue_locked(*s) : NULL;

    if (ctx->line == NULL) {
        *ecode = "ZoneFull";
        *text = ngx_http_ha_optout_admin_no_room_locked(r, *s != NULL);
        return NGX_HTTP_INSUFFICIENT_STORAGE;
    }

    *ngx_http_ha_optout_admin_layer(ctx) = *flag;
    (void) ngx_atomic_fetch_add(&rec->changes[ctx->action], 1);

    pending = &sh->pending;
    pending->action = ctx->action;
    pending->upstream_len = hscf->name.len;
    ngx_memcpy(pending->upstream, hscf->name.data, hscf->name.len);
    pending->before = *before;
    pending->after = *flag;
    pending->pid = ngx_pid;

    return 0;
}


/* 507 for want of room for the audit line: and whether a larger zone helps */

static char *
ngx_http_ha_optout_admin_no_room_locked(ngx_http_request_t *r,
    ngx_uint_t built)
{
    u_char                          *p;
    char                            *text;
    ngx_http_ha_optout_shctx_t      *sh;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    sh = ngx_http_ha_optout_sh;

    text = "no room in the zone for the audit line of this change; "
           "nothing was changed";

    p = built ? ngx_pnalloc(r->pool, 512) : NULL;

    if (p != NULL && sh->audit_npending >= NGX_HA_OPTOUT_AUDIT_PENDING) {
        /* the log is stuck: a larger zone would not help */
        *ngx_slprintf(p, p + 511, "%s: %ui audit lines wait for the audit "
                      "log already, the most the zone keeps; error_log says "
                      "why they cannot be written (a full disk, a FIFO "
                      "nobody reads)", text, sh->audit_npending) = '\0';
        text = (char *) p;

    } else if (p != NULL) {
        *ngx_http_ha_optout_zone_full_text_locked(
            ngx_slprintf(p, p + 511, "nothing was changed: "),
            p + 511, hmcf->shm_zone, ngx_time(),
            "the audit line of this change") = '\0';
        text = (char *) p;
    }

    return text;
}


/*
 * The staged suspension saved in the state file, then its audit line
 * written; when either fails it is undone (and a state file that holds it
 * is saved again without it).  NGX_OK, or NGX_DECLINED once refused (its
 * status in ctx->rc).
 */

static ngx_int_t
ngx_http_ha_optout_admin_persist(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_uint_t                       queued;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        ngx_http_ha_optout_admin_undo(ctx);

        return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "StateNotPersisted",
                                    "the state file could not be written; "
                                    "nothing was changed; see error_log: "
                                    "its directory must be writable by the "
                                    "worker user");
    }

    (void) ngx_http_ha_optout_audit_flush(hmcf, r->connection->log);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    queued = ngx_http_ha_optout_audit_queued_locked(ctx->line);
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (!queued) {
        return NGX_OK;
    }

    ngx_http_ha_optout_admin_undo(ctx);

    /* the state file holds the change: it must not come back */
    if (ngx_http_ha_optout_state_save_restore(hmcf, r->connection->log)
        != NGX_OK)
    {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        ngx_http_ha_optout_sh->state_dirty++;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
    }

    return ngx_ha_optout_refuse(ctx, r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "AuditNotWritten",
                                "the audit line of this change could not "
                                "be written (see error_log); nothing was "
                                "changed");
}
