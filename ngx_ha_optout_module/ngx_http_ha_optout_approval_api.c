
/*
 * ngx_ha_optout_module: the two-person rule (SPEC section 10), its API.
 * A write that suspends or widens an opt-out on an upstream whose policy
 * asks for "approvers: N" is kept in the zone as a pending approval (202)
 * until N other subjects approve it (POST v1/approvals/{id}, ha:approve);
 * then it is applied as the PUT or PATCH it was, with the policy checked
 * again.  Restoring HA never waits for anyone.  The table and the rules
 * are in ngx_http_ha_optout_approval.c.
 *
 * Over 1,000 lines: one concern, a write kept and then done (request,
 * approve, reject, apply); split further, the apply steps would have to be
 * exported to the one file that calls them.
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_approval.h"

#include <jansson.h>


#if (NGX_HA_OPTOUT_APPROVALS_MAX != 32)
#error "the ZoneFull message of approval_keep() names 32"
#endif

#if (NGX_HA_OPTOUT_APPROVALS_PER_SUBJECT != 8)
#error "the TooManyPending message of approval_keep() names 8"
#endif


static ngx_int_t ngx_http_ha_optout_approval_approve(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_approval_t *a,
    size_t n);
static ngx_int_t ngx_http_ha_optout_approval_reject(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, uint64_t id,
    ngx_http_ha_optout_approval_t *a, size_t n);
static ngx_int_t ngx_http_ha_optout_approval_apply(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_approval_t *a,
    ngx_http_ha_optout_approval_t *undo);


#define ngx_ha_optout_aerr(r, st, c, m)                                       \
    ngx_http_ha_optout_admin_errorf(r, st, c, m)

/* 503 StateNotPersisted, and what the failed save means for the request */
#define ngx_ha_optout_unsaved(r, what)                                        \
    ngx_ha_optout_aerr(r, NGX_HTTP_SERVICE_UNAVAILABLE, "StateNotPersisted",  \
                       "the state file could not be written; " what)


/*
 * The upstream a refused v1/approvals/{id} names in its "denied" audit
 * line: the approval's, or "" (no such approval, no id).  NGX_DECLINED:
 * not a v1/approvals path (found as admin.c chose the scope, by the URI).
 */

ngx_int_t
ngx_http_ha_optout_approval_denied_upstream(ngx_http_request_t *r,
    ngx_str_t *upstream)
{
    u_char                         *p, *last;
    uint64_t                        id;
    ngx_str_t                       ids;
    ngx_http_ha_optout_approval_t  *t;

    last = r->uri.data + r->uri.len;
    p = ngx_strlcasestrn(r->uri.data, last, (u_char *) "v1/approvals",
                         sizeof("v1/approvals") - 2);
    if (p == NULL) {
        return NGX_DECLINED;
    }

    p += sizeof("v1/approvals") - 1;
    ids.data = (p < last && *p == '/') ? p + 1 : last;
    ids.len = last - ids.data;

    ngx_str_set(upstream, "");

    id = ngx_http_ha_optout_approval_parse_id(&ids);
    if (id == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, NGX_HA_OPTOUT_NAME_LEN);
    if (p == NULL) {
        return NGX_OK;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    t = ngx_http_ha_optout_approval_find_locked(id);
    if (t) {
        upstream->len = ngx_min(t->upstream_len, NGX_HA_OPTOUT_NAME_LEN);
        upstream->data = ngx_cpymem(p, t->upstream, upstream->len)
                         - upstream->len;
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ha_optout_approval_dry(ngx_http_request_t *r)
{
    ngx_str_t  dry;

    return r->args.len
           && ngx_http_arg(r, (u_char *) "dry_run", 7, &dry) == NGX_OK
           && dry.len == 1 && dry.data[0] == '1';
}


/* "approval 0123456789abcdef <what>: <reason>" for the audit line */

static ngx_str_t *
ngx_http_ha_optout_approval_reason(ngx_pool_t *pool,
    ngx_http_ha_optout_approval_t *a, char *what)
{
    ngx_str_t  *s;

    s = ngx_palloc(pool, sizeof(ngx_str_t));
    if (s == NULL) {
        return NULL;
    }

    s->data = ngx_pnalloc(pool, 64 + ngx_strlen(what)
                                + a->flag.reason_len);
    if (s->data == NULL) {
        return NULL;
    }

    s->len = ngx_sprintf(s->data, "approval %016xL %s: %*s", a->id, what,
                         (size_t) a->flag.reason_len, a->flag.reason)
             - s->data;

    return s;
}


/* cause: why a request was dropped unapplied ("cause" member), or NULL */

static void
ngx_http_ha_optout_approval_audit(ngx_http_request_t *r, ngx_uint_t action,
    ngx_http_ha_optout_approval_t *a, ngx_str_t *actor, char *what,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *cause)
{
    ngx_str_t                        upstream, *reason, *request_id;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;

    reason = ngx_http_ha_optout_approval_reason(r->pool, a, what);
    request_id = ngx_http_ha_optout_request_id(r);

    if (reason == NULL || request_id == NULL) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_optout: approval audit record could not be built");
        return;
    }

    hscf = ngx_http_ha_optout_find_upstream(hmcf, &upstream);
    if (hscf && hscf->rec) {
        (void) ngx_atomic_fetch_add(&hscf->rec->changes[action], 1);
    }

    ngx_http_ha_optout_audit_cause(hmcf, r->connection->log, action,
                                   &upstream, actor,
                                   &r->connection->addr_text, reason, before,
                                   after, request_id, cause);
}


static ngx_int_t
ngx_http_ha_optout_approval_answer(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_ha_optout_approval_t *a)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    return ngx_http_ha_optout_admin_send(r, status,
               json_pack("{s:o}", "approval",
                         ngx_http_ha_optout_approval_json(a,
                                                   &hmcf->environment)),
               (uint64_t) -1);
}


/*
 * approval_jti() and approval_get() answer NGX_OK, or NGX_DECLINED once
 * they have sent a refusal, whose rc is then in *sent
 */

static ngx_int_t
ngx_http_ha_optout_approval_jti(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_int_t *sent)
{
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    if (hlcf->replay && claims->jti.len == 0) {
        ngx_http_ha_optout_auth_count("replay");
        *sent = ngx_ha_optout_aerr(r, NGX_HTTP_UNAUTHORIZED, "InvalidToken",
                                   "bearer token rejected: a write needs a "
                                   "jti claim");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* copies a live approval out of the zone, or answers 404 / 403 */

static ngx_int_t
ngx_http_ha_optout_approval_get(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, uint64_t id,
    ngx_http_ha_optout_approval_t *a, ngx_int_t *sent)
{
    ngx_http_ha_optout_approval_t  *t;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    t = ngx_http_ha_optout_approval_find_locked(id);
    if (t) {
        *a = *t;
    }
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    /* one past its time is the timer's to audit: it is gone already */

    if (t == NULL || a->expires_at <= ngx_time()) {
        *sent = ngx_ha_optout_aerr(r, NGX_HTTP_NOT_FOUND, "NoSuchApproval",
                                   "no pending approval has this id (it may "
                                   "have been applied, rejected or have "
                                   "expired)");
        return NGX_DECLINED;
    }

    if (!ngx_http_ha_optout_approval_allowed(claims, a->upstream,
                                             a->upstream_len))
    {
        ngx_http_ha_optout_auth_count("scope");
        *sent = ngx_ha_optout_aerr(r, NGX_HTTP_FORBIDDEN,
                                   "UpstreamNotAllowed",
                                   "the token's ha_upstreams claim does not "
                                   "include this approval's upstream");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the pending approval of a write: the flag as sent, without approvers */

static void
ngx_http_ha_optout_approval_build(ngx_http_request_t *r,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag,
    ngx_uint_t ttl_set, time_t ttl, ngx_http_ha_optout_flag_t *cur,
    ngx_uint_t needed, time_t attl, time_t now,
    ngx_http_ha_optout_approval_t *a)
{
    ngx_memzero(a, sizeof(ngx_http_ha_optout_approval_t));

    flag->approvers = 0;
    ngx_memzero(flag->approver_len, sizeof(flag->approver_len));

    a->flag = *flag;
    a->method = (r->method == NGX_HTTP_PATCH) ? NGX_HA_OPTOUT_APPROVAL_PATCH
                                              : NGX_HA_OPTOUT_APPROVAL_PUT;
    a->ttl_set = ttl_set ? 1 : 0;
    a->ttl = ttl;
    a->requested_at = now;
    a->expires_at = now + attl;
    a->needed = needed;
    a->upstream_len = hscf->name.len;
    ngx_memcpy(a->upstream, hscf->name.data, hscf->name.len);
    a->base = cur->present ? cur->version : 0;
}


/*
 * commit 1 of approval_request(), under the writer lock: spends the jti
 * and keeps the request in the zone and the state file, or answers why not
 *
 * Longer than a screen: one critical section (a free slot, the replay
 * cache) and its undo when the state file cannot be written, in one place.
 */

static ngx_int_t
ngx_http_ha_optout_approval_keep(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_approval_t *a,
    ngx_http_ha_optout_flag_t *cur, time_t now)
{
    ngx_int_t                        rc;
    ngx_uint_t                       status;
    char                            *ecode, *text;
    ngx_http_ha_optout_approval_t   *slot;
    ngx_http_ha_optout_loc_conf_t   *hlcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    if (ngx_http_ha_optout_approval_jti(r, claims, &rc) != NGX_OK) {
        return rc;
    }

    status = 0;
    ecode = NULL;
    text = NULL;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    slot = ngx_http_ha_optout_approval_slot_locked();

    if (slot == NULL) {
        status = NGX_HTTP_INSUFFICIENT_STORAGE;
        ecode = "ZoneFull";
        text = "the table of pending approvals is full (32 per zone, "
               "whatever its size): approve or reject one (GET v1/approvals "
               "lists them, DELETE v1/approvals/{id} rejects) or wait for "
               "one to expire; restoring HA needs no room";

    } else if (ngx_http_ha_optout_approvals_by_locked(a->flag.actor,
                                                      a->flag.actor_len, now)
               >= NGX_HA_OPTOUT_APPROVALS_PER_SUBJECT)
    {
        status = NGX_HTTP_TOO_MANY_REQUESTS;
        ecode = "TooManyPending";
        text = "this subject already has 8 requests waiting for approval "
               "(at most 8 of the 32 the table holds, so that one writer "
               "cannot fill it): withdraw one (DELETE v1/approvals/{id}, "
               "ha-optoutctl approvals reject --id ID) or have one "
               "approved; restoring HA needs no room";

    } else if (hlcf->replay) {
        rc = ngx_http_ha_optout_replay_check_locked(&claims->jti,
                                                    claims->exp, now);
        if (rc == NGX_DECLINED) {
            status = NGX_HTTP_UNAUTHORIZED;
            ecode = "InvalidToken";
            text = "bearer token rejected: replayed jti";

        } else if (rc == NGX_BUSY) {
            status = NGX_HTTP_INSUFFICIENT_STORAGE;
            ecode = "ZoneFull";
            text = "the replay cache is full; try again when older tokens "
                   "expire";
        }
    }

    if (status == 0) {
        a->id = ngx_http_ha_optout_approval_new_id_locked();
        *slot = *a;
        ngx_http_ha_optout_bump();
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (status) {
        if (status == NGX_HTTP_UNAUTHORIZED) {
            ngx_http_ha_optout_auth_count("replay");
        }

        return ngx_ha_optout_aerr(r, status, ecode, text);
    }

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        slot->id = 0;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        return ngx_ha_optout_unsaved(r, "nothing was requested");
    }

    ngx_http_ha_optout_approval_audit(r, NGX_HA_OPTOUT_ACT_REQUEST, a,
                                      &claims->sub, "requested",
                                      cur->present ? cur : NULL, &a->flag,
                                      NULL);

    return ngx_http_ha_optout_approval_answer(r, NGX_HTTP_ACCEPTED, a);
}


/*
 * Called by the PUT/PATCH path once the flag is built and has passed the
 * policy, first without the writer lock (commit 0): NGX_DECLINED lets the
 * write go on, NGX_AGAIN says it needs approval (a dry run is answered
 * here); then, for NGX_AGAIN, again with the writer lock (commit 1), which
 * keeps the request (approval_keep()).
 */

ngx_int_t
ngx_http_ha_optout_approval_request(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_http_ha_optout_flag_t *flag, ngx_uint_t ttl_set, time_t ttl,
    ngx_uint_t commit)
{
    time_t                           now, attl;
    ngx_uint_t                       needed;
    ngx_table_elt_t                 *im;
    ngx_http_ha_optout_flag_t        cur;
    ngx_http_ha_optout_approval_t    a;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    needed = ngx_http_ha_optout_policy_approvers(hmcf, &hscf->name, &attl);
    if (needed == 0 || hscf->rec == NULL) {
        return NGX_DECLINED;
    }

    now = ngx_time();

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    cur = hscf->rec->api;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (ngx_http_ha_optout_approval_narrows(flag, &cur, now)) {

        /*
         * it gives HA back: the approvals of the acting flag still hold.
         * Judged again with the writer lock (commit 1): the flag may be
         * deleted or expire while this write waits for it, and then this
         * write suspends HA on its own and needs its own approval
         */
        if (!commit && !ngx_http_ha_optout_approval_dry(r)) {
            return NGX_AGAIN;
        }

        flag->approvers = cur.approvers;
        ngx_memcpy(flag->approver_len, cur.approver_len,
                   sizeof(cur.approver_len));
        ngx_memcpy(flag->approver, cur.approver, sizeof(cur.approver));
        return NGX_DECLINED;
    }

    ngx_http_ha_optout_approval_build(r, hscf, flag, ttl_set, ttl, &cur,
                                      needed, attl, now, &a);

    /*
     * If-Match (and the flag a PATCH was built on) is judged now and again
     * when the last approval comes: the flag must not have changed between
     */

    im = r->headers_in.if_match;
    a.match = (a.method == NGX_HA_OPTOUT_APPROVAL_PATCH)
              || (im && !(im->value.len == 1 && im->value.data[0] == '*'));

    if (ngx_http_ha_optout_if_match(r, a.base) != NGX_OK) {
        return ngx_ha_optout_aerr(r, NGX_HTTP_PRECONDITION_FAILED,
                                  "PreconditionFailed",
                                  "If-Match does not match the current "
                                  "version of the flag");
    }

    if (ngx_http_ha_optout_approval_dry(r)) {
        return ngx_http_ha_optout_approval_answer(r, NGX_HTTP_ACCEPTED, &a);
    }

    if (!commit) {
        return NGX_AGAIN;
    }

    return ngx_http_ha_optout_approval_keep(r, claims, &a, &cur, now);
}


/* GET v1/approvals[/{id}]: the list (the upstreams the token may see) or one */

static ngx_int_t
ngx_http_ha_optout_approval_read(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_str_t *ids, uint64_t id,
    time_t now)
{
    size_t                           i;
    json_t                          *arr, *up;
    ngx_http_ha_optout_approval_t   *t, a;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (!ngx_http_ha_optout_sh->restored) {
        /* just started: the state file's approvals come first */
        if (ngx_http_ha_optout_writer_trylock() != NGX_OK) {
            return NGX_BUSY;        /* admin.c waits and retries */
        }

        ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
        ngx_http_ha_optout_writer_unlock();
    }

    if (ids->len == 0) {
        arr = ngx_http_ha_optout_approvals_json(NULL, now);

        /* a token limited to some upstreams sees only theirs */

        for (i = 0; arr && i < json_array_size(arr); /* void */) {
            up = json_object_get(json_array_get(arr, i), "upstream");

            if (ngx_http_ha_optout_approval_allowed(claims,
                    (u_char *) json_string_value(up),
                    json_string_length(up)))
            {
                i++;
                continue;
            }

            json_array_remove(arr, i);
        }

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK,
                   json_pack("{s:o}", "approvals", arr),
                   (uint64_t) -1);
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    t = ngx_http_ha_optout_approval_find_locked(id);
    if (t) {
        a = *t;
    }
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (t == NULL || a.expires_at <= now
        || !ngx_http_ha_optout_approval_allowed(claims, a.upstream,
                                                a.upstream_len))
    {
        return ngx_ha_optout_aerr(r, NGX_HTTP_NOT_FOUND, "NoSuchApproval",
                                  "no pending approval has this id");
    }

    return ngx_http_ha_optout_approval_answer(r, NGX_HTTP_OK, &a);
}


/* GET v1/approvals[/{id}], POST and DELETE v1/approvals/{id} */

ngx_int_t
ngx_http_ha_optout_approval_handler(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_str_t *ids)
{
    size_t                           n;
    time_t                           now;
    uint64_t                         id;
    ngx_int_t                        rc;
    ngx_http_ha_optout_approval_t    a;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    now = ngx_time();
    id = 0;

    if (ids->len) {
        id = ngx_http_ha_optout_approval_parse_id(ids);
        if (id == 0) {
            return ngx_ha_optout_aerr(r, NGX_HTTP_NOT_FOUND, "NoSuchApproval",
                                      "an approval id is 16 hex digits");
        }
    }

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        return ngx_http_ha_optout_approval_read(r, claims, ids, id, now);
    }

    /*
     * a busy writer lock: admin.c waits on the request's timer as for a
     * flag write, and answers 503 WriterBusy after NGX_HA_OPTOUT_LOCK_WAIT
     */
    if (ngx_http_ha_optout_writer_trylock() != NGX_OK) {
        return NGX_BUSY;
    }

    if (!ngx_http_ha_optout_sh->restored) {
        ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
    }

    /* both act on a copy of the approval as it is now, for the subject */

    if (ngx_http_ha_optout_approval_get(r, claims, id, &a, &rc) == NGX_OK) {
        n = ngx_http_ha_optout_approval_subject(&claims->sub);

        if (r->method == NGX_HTTP_POST) {
            rc = ngx_http_ha_optout_approval_approve(r, claims, &a, n);
        } else {
            rc = ngx_http_ha_optout_approval_reject(r, claims, id, &a, n);
        }
    }

    ngx_http_ha_optout_writer_unlock();

    return rc;
}


/*
 * POST v1/approvals/{id}, under the writer lock: one more approver, then
 * the write itself once enough have approved.  The handler has found the
 * approval (a is a copy, changed here) and cut the subject to n bytes.
 *
 * Longer than a screen and a half: the refusals (same person, twice,
 * replayed token, policy raised) come in the order the audit relies on,
 * after the handler's "not found", before the approver is added and saved.
 */

static ngx_int_t
ngx_http_ha_optout_approval_approve(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_approval_t *a,
    size_t n)
{
    time_t                           attl;
    ngx_int_t                        rc;
    ngx_str_t                        upstream;
    ngx_uint_t                       i, k, now_needed;
    ngx_http_ha_optout_approval_t    undo;
    ngx_http_ha_optout_loc_conf_t   *hlcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    if (n == 0
        || ngx_http_ha_optout_approval_same(claims->sub.data, n,
                                            (u_char *) "", 0))
    {
        return ngx_ha_optout_aerr(r, NGX_HTTP_FORBIDDEN, "ApprovalRefused",
                                  "a token without a subject cannot "
                                  "approve");
    }

    if (ngx_http_ha_optout_approval_same(claims->sub.data, n,
                                         a->flag.actor, a->flag.actor_len))
    {
        return ngx_ha_optout_aerr(r, NGX_HTTP_FORBIDDEN, "SelfApproval",
                                  "the requester cannot approve their own "
                                  "request");
    }

    for (i = 0; i < a->flag.approvers; i++) {
        if (ngx_http_ha_optout_approval_same(claims->sub.data, n,
                                             a->flag.approver[i],
                                             a->flag.approver_len[i]))
        {
            return ngx_ha_optout_aerr(r, NGX_HTTP_FORBIDDEN,
                                      "AlreadyApproved",
                                      "this subject has already approved "
                                      "this request");
        }
    }

    if (ngx_http_ha_optout_approval_jti(r, claims, &rc) != NGX_OK) {
        return rc;
    }

    if (hlcf->replay) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        rc = ngx_http_ha_optout_replay_check_locked(&claims->jti,
                                                    claims->exp, ngx_time());
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        if (rc == NGX_DECLINED) {
            ngx_http_ha_optout_auth_count("replay");
            return ngx_ha_optout_aerr(r, NGX_HTTP_UNAUTHORIZED,
                                      "InvalidToken",
                                      "bearer token rejected: replayed jti");
        }

        if (rc == NGX_BUSY) {
            return ngx_ha_optout_aerr(r, NGX_HTTP_INSUFFICIENT_STORAGE,
                                      "ZoneFull",
                                      "the replay cache is full; try again "
                                      "when older tokens expire");
        }
    }

    undo = *a;
    k = a->flag.approvers;

    /*
     * a reload (or a restart) that raised "approvers" raises what this
     * request needs; one that lowered it does not lower it
     */

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;
    now_needed = ngx_http_ha_optout_policy_approvers(hmcf, &upstream, &attl);

    if (now_needed > a->needed) {
        a->needed = now_needed;
    }

    if (k >= NGX_HA_OPTOUT_APPROVERS_MAX) {
        /* policy bounds "approvers", so a full list is already applied */
        return ngx_ha_optout_aerr(r, NGX_HTTP_CONFLICT, "Conflict",
                                  "this request has all its approvals");
    }

    a->flag.approver_len[k] = (uint16_t) n;
    ngx_memcpy(a->flag.approver[k], claims->sub.data, n);
    a->flag.approvers = (uint16_t) (k + 1);

    if (a->flag.approvers >= a->needed) {
        return ngx_http_ha_optout_approval_apply(r, claims, a, &undo);
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    ngx_http_ha_optout_approval_put_locked(a);
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        ngx_http_ha_optout_approval_put_locked(&undo);
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        return ngx_ha_optout_unsaved(r, "the approval was not recorded");
    }

    ngx_http_ha_optout_approval_audit(r, NGX_HA_OPTOUT_ACT_APPROVE, a,
                                      &claims->sub, "approved", NULL,
                                      &a->flag, NULL);

    return ngx_http_ha_optout_approval_answer(r, NGX_HTTP_OK, a);
}


/*
 * apply(), before the zone is locked: is the upstream still there, does
 * the pin still name a usable server, does the policy still allow it?
 * 0, or the status of the refusal (500: no memory for its message)
 */

static ngx_uint_t
ngx_http_ha_optout_approval_recheck(ngx_http_request_t *r,
    ngx_http_ha_optout_approval_t *a, ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_http_ha_optout_flag_t *flag, char **ecode, ngx_str_t *message)
{
    ngx_int_t                        rc;
    ngx_str_t                        upstream;
    ngx_uint_t                       down;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;

    if (hscf == NULL || hscf->rec == NULL) {
        *ecode = "UnknownUpstream";
        ngx_str_set(message, "the upstream is no longer configured");
        return NGX_HTTP_CONFLICT;
    }

    if (flag->pin_len
        && ((rc = ngx_http_ha_optout_upstream_peer(hscf, flag->pin,
                                                   flag->pin_len, &down,
                                                   NULL))
            != NGX_OK))
    {
        *ecode = "PinConflict";
        ngx_str_set(message, "the pin no longer names a usable server of "
                    "this upstream");
        return NGX_HTTP_CONFLICT;
    }

    if (ngx_http_ha_optout_policy_check(hmcf, &upstream, flag, a->ttl_set,
                                        a->ttl, message, r->pool)
        != NGX_OK)
    {
        if (message->data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        *ecode = "ForbiddenByPolicy";
        return NGX_HTTP_FORBIDDEN;
    }

    return 0;
}


/*
 * apply(), with the zone locked: the flag the request was made on (If-Match,
 * or a PATCH's base) must still be the acting one.  0, or the status
 */

static ngx_uint_t
ngx_http_ha_optout_approval_changed_locked(ngx_http_ha_optout_approval_t *a,
    ngx_http_ha_optout_flag_t *before, time_t now, char **ecode,
    ngx_str_t *message)
{
    ngx_uint_t  patch;

    patch = (a->method == NGX_HA_OPTOUT_APPROVAL_PATCH);

    if (a->match && (before->present ? before->version : 0) != a->base) {
        *ecode = patch ? "Conflict" : "PreconditionFailed";
        ngx_str_set(message, "the flag changed after this request was made "
                    "(If-Match, or the flag a PATCH was made on): the "
                    "request was dropped, nothing was changed; send it "
                    "again (a new request, to be approved again)");
        return patch ? NGX_HTTP_CONFLICT : NGX_HTTP_PRECONDITION_FAILED;
    }

    if (patch && !ngx_http_ha_optout_flag_live(before, now)) {
        *ecode = "NoFlag";
        ngx_str_set(message, "the flag this PATCH changes is gone");
        return NGX_HTTP_CONFLICT;
    }

    return 0;
}


/*
 * apply(), once the change is saved: its audit line (the actor is the
 * requester, approved_by the rest), then published to the workers, and
 * answered as a write is, with its ETag
 */

static ngx_int_t
ngx_http_ha_optout_approval_applied(ngx_http_request_t *r,
    ngx_http_ha_optout_approval_t *a, ngx_uint_t action,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *flag)
{
    ngx_str_t                        upstream, actor, client;
    ngx_str_t                       *reason, *request_id;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;
    actor.data = flag->actor;
    actor.len = flag->actor_len;
    client = r->connection->addr_text;
    reason = ngx_http_ha_optout_approval_reason(r->pool, a, "applied");
    request_id = ngx_http_ha_optout_request_id(r);

    if (reason == NULL || request_id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ha_optout_audit(hmcf, r->connection->log, action,
                                 &upstream, &actor, &client, reason,
                                 before->present ? before : NULL, flag,
                                 request_id)
        != NGX_OK)
    {
        /* queued: worker 0's timer writes it (persist_retry) */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "ha_optout: the audit line of the approved change "
                      "of \"%V\" is not written yet", &upstream);
    }

    /*
     * saved (and audited): published to the workers only now, as a PUT
     * is, and no longer a change a killed writer left unfinished
     */

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    ngx_http_ha_optout_bump();
    ngx_http_ha_optout_sh->pending.pid = 0;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    /* the answer of a write: its ETag (admin_send sets it for PUT only) */

    if (ngx_http_ha_optout_admin_etag(r, flag->version) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK,
               ngx_http_ha_optout_flag_json(flag, &upstream,
                                            &hmcf->environment),
               flag->version);
}


/*
 * The last approval: the write is done now, as a PUT or PATCH made now
 * would be.  The ttl counts from now; max_ttl, protected windows, the pin
 * and the flag the request was made on (If-Match, or a PATCH's base) are
 * checked again.  A request that can no longer be applied is dropped and
 * audited as "reject", the error as its cause.
 *
 * Longer than a screen and a half: its larger parts are steps already
 * (recheck, changed_locked, applied); what is left is the one order of
 * build, check, drop or apply, and save.
 */

static ngx_int_t
ngx_http_ha_optout_approval_apply(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_approval_t *a,
    ngx_http_ha_optout_approval_t *undo)
{
    time_t                           now;
    char                            *ecode;
    ngx_str_t                        upstream, message;
    ngx_uint_t                       status, action;
    ngx_http_ha_optout_flag_t        flag, before;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_pending_t    *pending;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    now = ngx_time();

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;

    hscf = ngx_http_ha_optout_find_upstream(hmcf, &upstream);

    flag = a->flag;

    if (a->ttl_set) {
        flag.expires_at = a->ttl ? now + a->ttl : 0;
    }

    if (a->method == NGX_HA_OPTOUT_APPROVAL_PUT) {
        flag.set_at = now;
    }

    ecode = NULL;
    message.len = 0;
    message.data = NULL;

    status = ngx_http_ha_optout_approval_recheck(r, a, hscf, &flag, &ecode,
                                                 &message);
    if (status == NGX_HTTP_INTERNAL_SERVER_ERROR) {
        return status;
    }

    rec = hscf ? hscf->rec : NULL;
    action = (a->method == NGX_HA_OPTOUT_APPROVAL_PATCH)
             ? NGX_HA_OPTOUT_ACT_UPDATE : NGX_HA_OPTOUT_ACT_SET;

    if (status == 0) {
        /* the approval itself is a fact, whatever follows */
        ngx_http_ha_optout_approval_audit(r, NGX_HA_OPTOUT_ACT_APPROVE, a,
                                          &claims->sub, "approved", NULL,
                                          &flag, NULL);
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (rec) {
        before = rec->api;
    } else {
        ngx_memzero(&before, sizeof(ngx_http_ha_optout_flag_t));
    }

    if (status == 0) {
        status = ngx_http_ha_optout_approval_changed_locked(a, &before, now,
                                                            &ecode, &message);
    }

    if (status) {
        ngx_http_ha_optout_approval_drop_locked(a->id);
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        (void) ngx_http_ha_optout_state_save(hmcf, r->connection->log);

        ngx_http_ha_optout_approval_audit(r, NGX_HA_OPTOUT_ACT_REJECT, a,
                                          &claims->sub,
                                          "approved but not applied", NULL,
                                          NULL, &message);

        return ngx_http_ha_optout_admin_error(r, status, ecode, &message);
    }

    flag.version = ++ngx_http_ha_optout_sh->version_seq;

    if (a->method == NGX_HA_OPTOUT_APPROVAL_PUT) {
        flag.put_version = flag.version;
    }

    rec->api = flag;
    (void) ngx_atomic_fetch_add(&rec->changes[action], 1);
    ngx_http_ha_optout_approval_drop_locked(a->id);

    pending = &ngx_http_ha_optout_sh->pending;
    pending->action = action;
    pending->upstream_len = a->upstream_len;
    ngx_memcpy(pending->upstream, a->upstream, a->upstream_len);
    pending->before = before;
    pending->after = flag;
    pending->pid = ngx_pid;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        if (rec->api.version == flag.version) {
            rec->api = before;
            (void) ngx_atomic_fetch_add(&rec->changes[action], -1);
        }

        ngx_http_ha_optout_approval_put_locked(undo);
        ngx_http_ha_optout_sh->pending.pid = 0;

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        return ngx_ha_optout_unsaved(r, "nothing was changed");
    }

    return ngx_http_ha_optout_approval_applied(r, a, action, &before, &flag);
}


/*
 * DELETE v1/approvals/{id}, under the writer lock: the requester withdraws
 * or an approver rejects the approval the handler found
 */

static ngx_int_t
ngx_http_ha_optout_approval_reject(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, uint64_t id,
    ngx_http_ha_optout_approval_t *a, size_t n)
{
    ngx_int_t                        rc;
    ngx_uint_t                       own;
    ngx_http_ha_optout_loc_conf_t   *hlcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    own = (n && n == a->flag.actor_len
           && ngx_memcmp(claims->sub.data, a->flag.actor, n) == 0);

    if (!own && !(claims->scopes & NGX_HA_OPTOUT_SCOPE_APPROVE)) {
        return ngx_ha_optout_aerr(r, NGX_HTTP_FORBIDDEN, "InsufficientScope",
                                  "only the requester or a holder of "
                                  "\"ha:approve\" may withdraw or reject a "
                                  "request");
    }

    if (ngx_http_ha_optout_approval_jti(r, claims, &rc) != NGX_OK) {
        return rc;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    rc = hlcf->replay ? ngx_http_ha_optout_replay_check_locked(&claims->jti,
                                                               claims->exp,
                                                               ngx_time())
                      : NGX_OK;

    /* rejecting keeps HA on: it is never refused for want of room */

    if (rc != NGX_DECLINED) {
        ngx_http_ha_optout_approval_drop_locked(id);
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (rc == NGX_DECLINED) {
        ngx_http_ha_optout_auth_count("replay");
        return ngx_ha_optout_aerr(r, NGX_HTTP_UNAUTHORIZED, "InvalidToken",
                                  "bearer token rejected: replayed jti");
    }

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        /* the timer's state_sync() saves it later */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_optout: the rejection of approval %016xL is not "
                      "persisted yet", id);
    }

    ngx_http_ha_optout_approval_audit(r, NGX_HA_OPTOUT_ACT_REJECT, a,
                                      &claims->sub,
                                      own ? "withdrawn" : "rejected", NULL,
                                      NULL, NULL);

    return ngx_http_ha_optout_approval_answer(r, NGX_HTTP_OK, a);
}
