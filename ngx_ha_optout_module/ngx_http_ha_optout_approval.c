
/*
 * ngx_ha_optout_module: the two-person rule (SPEC section 10), its table.
 * Pending approvals live in the zone (32 slots, under the mutex); this
 * file owns that table and the rules that judge a request: which writes
 * are no wider than the acting flag, when two subjects are one person,
 * which upstreams a token may see.  Also the table's JSON (status, the
 * API), worker 0's expiry tick, and an approval read back from the state
 * file.  The API that fills and empties the table is in
 * ngx_http_ha_optout_approval_api.c.
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_approval.h"

#include <jansson.h>


/* the table, allocated in the zone on first use; under the mutex */

static ngx_http_ha_optout_approval_t *
ngx_http_ha_optout_approvals_locked(ngx_uint_t create)
{
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    if (sh->approvals == NULL && create) {
        sh->approvals = ngx_slab_calloc_locked(ngx_http_ha_optout_shpool,
                                     NGX_HA_OPTOUT_APPROVALS_MAX
                                     * sizeof(ngx_http_ha_optout_approval_t));
    }

    return sh->approvals;
}


ngx_http_ha_optout_approval_t *
ngx_http_ha_optout_approval_find_locked(uint64_t id)
{
    ngx_uint_t                      i;
    ngx_http_ha_optout_approval_t  *t;

    t = ngx_http_ha_optout_approvals_locked(0);

    for (i = 0; id && t && i < NGX_HA_OPTOUT_APPROVALS_MAX; i++) {
        if (t[i].id == id) {
            return &t[i];
        }
    }

    return NULL;
}


/* a free slot, or NULL: the table (or the zone) is full */

ngx_http_ha_optout_approval_t *
ngx_http_ha_optout_approval_slot_locked(void)
{
    ngx_uint_t                      i;
    ngx_http_ha_optout_approval_t  *t;

    t = ngx_http_ha_optout_approvals_locked(1);

    for (i = 0; t && i < NGX_HA_OPTOUT_APPROVALS_MAX; i++) {
        if (t[i].id == 0) {
            return &t[i];
        }
    }

    return NULL;
}


/*
 * How many live requests this subject has pending (subjects compared as
 * the two-person rule compares them): one writer may hold at most
 * NGX_HA_OPTOUT_APPROVALS_PER_SUBJECT of the table, so one token holder
 * (or a script gone wrong) cannot fill it and lock out everyone else's
 * requests.
 */

ngx_uint_t
ngx_http_ha_optout_approvals_by_locked(u_char *sub, size_t len, time_t now)
{
    ngx_uint_t                      i, n;
    ngx_http_ha_optout_approval_t  *t;

    t = ngx_http_ha_optout_approvals_locked(0);

    for (i = 0, n = 0; t && i < NGX_HA_OPTOUT_APPROVALS_MAX; i++) {
        if (t[i].id != 0 && t[i].expires_at > now
            && ngx_http_ha_optout_approval_same(t[i].flag.actor,
                                                t[i].flag.actor_len,
                                                sub, len))
        {
            n++;
        }
    }

    return n;
}


uint64_t
ngx_http_ha_optout_approval_new_id_locked(void)
{
    uint64_t  id;

    do {
        id = ((uint64_t) (uint32_t) ngx_random() << 33)
             ^ ((uint64_t) (uint32_t) ngx_random() << 11)
             ^ (uint64_t) (uint32_t) ngx_random()
             ^ ((uint64_t) ngx_pid << 48)
             ^ (uint64_t) ngx_current_msec;
    } while (id == 0 || ngx_http_ha_optout_approval_find_locked(id));

    return id;
}


/* 16 hex digits, as the API prints them */

uint64_t
ngx_http_ha_optout_approval_parse_id(ngx_str_t *s)
{
    u_char      c;
    uint64_t    id;
    ngx_uint_t  i;

    if (s->len != 16) {
        return 0;
    }

    id = 0;

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (c >= '0' && c <= '9') {
            id = (id << 4) | (uint64_t) (c - '0');

        } else if (c >= 'a' && c <= 'f') {
            id = (id << 4) | (uint64_t) (c - 'a' + 10);

        } else {
            return 0;
        }
    }

    return id;
}


static json_t *
ngx_http_ha_optout_approval_time(time_t t)
{
    u_char  buf[sizeof("2026-11-27T10:00:00Z")];

    return json_stringn((char *) buf,
                        ngx_http_ha_optout_time_iso(buf, t) - buf);
}


void *
ngx_http_ha_optout_approval_json(ngx_http_ha_optout_approval_t *a,
    ngx_str_t *environment)
{
    u_char      idbuf[17];
    json_t     *flag, *by, *id;
    ngx_str_t   upstream;

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;

    /* what would be stored: "approved_by" lives in the approval */

    flag = ngx_http_ha_optout_flag_json(&a->flag, &upstream, environment);
    if (flag == NULL) {
        return NULL;
    }

    by = json_object_get(flag, "approved_by");
    json_incref(by);
    json_object_del(flag, "approved_by");
    json_object_del(flag, "version");

    if (a->id) {
        id = json_stringn((char *) idbuf,
                          ngx_sprintf(idbuf, "%016xL", a->id) - idbuf);
    } else {
        id = json_null();       /* a dry run */
    }

    return json_pack("{s:o,s:s%,s:O,s:O,s:s,s:o,s:o,s:I,s:o,s:o}",
                     "id", id,
                     "upstream", a->upstream, a->upstream_len,
                     "requested_by", json_object_get(flag, "actor"),
                     "reason", json_object_get(flag, "reason"),
                     "method", a->method == NGX_HA_OPTOUT_APPROVAL_PATCH
                               ? "PATCH" : "PUT",
                     "flag", flag,
                     "approved_by", by ? by : json_array(),
                     "needed", (json_int_t) a->needed,
                     "requested_at",
                     ngx_http_ha_optout_approval_time(a->requested_at),
                     "expires_at",
                     ngx_http_ha_optout_approval_time(a->expires_at));
}


/*
 * Is the new flag no wider than the acting one: nothing suspended that is
 * not suspended now, the same pin, and it ends no later?  Such a write
 * (a PATCH that only shortens the ttl, one that lifts an opt-out) gives
 * HA back and never waits for approval.
 */

static ngx_uint_t
ngx_http_ha_optout_approval_narrower(ngx_http_ha_optout_flag_t *new,
    ngx_http_ha_optout_flag_t *cur)
{
    if ((new->no_failover && !cur->no_failover)
        || (new->no_replication && !cur->no_replication)
        || (new->sticky && !cur->sticky))
    {
        return 0;
    }

    if (new->pin_len
        && (new->pin_len != cur->pin_len
            || ngx_memcmp(new->pin, cur->pin, cur->pin_len) != 0))
    {
        return 0;
    }

    if (new->selector_len
        && (new->selector_len != cur->selector_len
            || ngx_memcmp(new->selector, cur->selector, cur->selector_len)
               != 0))
    {
        return 0;
    }

    if (cur->expires_at == 0) {
        return 1;
    }

    return new->expires_at != 0 && new->expires_at <= cur->expires_at;
}


/*
 * A write judged no wider than the acting API flag needs no approval of
 * its own.  admin.c asks again with the zone's mutex held, in the section
 * that applies the write, since a DELETE acts without the writer lock.
 */

ngx_uint_t
ngx_http_ha_optout_approval_narrows(ngx_http_ha_optout_flag_t *flag,
    ngx_http_ha_optout_flag_t *cur, time_t now)
{
    return ngx_http_ha_optout_flag_live(cur, now)
           && ngx_http_ha_optout_approval_narrower(flag, cur);
}


/* the subject as the flag keeps it: cut on a UTF-8 boundary */

size_t
ngx_http_ha_optout_approval_subject(ngx_str_t *sub)
{
    size_t  n;

    n = ngx_min(sub->len, NGX_HA_OPTOUT_ACTOR_LEN);

    while (n < sub->len && n > 0 && (sub->data[n] & 0xc0) == 0x80) {
        n--;
    }

    return n;
}


/*
 * The next byte of a subject as the two-person rule compares it: ASCII
 * folded to lower case, fullwidth Latin letters to ASCII, and skipped:
 * white space and control bytes, and the invisible or spacing characters
 * a second token could add (soft hyphen, C1 controls, the U+2000 spaces,
 * zero-width and bidi marks, word joiners, U+180E, U+3000, BOM).  0 at
 * the end.  Homoglyphs of other scripts are not folded (docs/api.md).
 */

static u_char
ngx_http_ha_optout_approval_next(u_char **pp, u_char *last)
{
    u_char  *p, c, c1, c2;

    for (p = *pp; p < last; /* void */) {
        c = *p;

        if (c <= 0x20 || c == 0x7f) {
            p++;
            continue;
        }

        if (c < 0x80) {
            *pp = p + 1;
            return (c >= 'A' && c <= 'Z') ? (u_char) (c | 0x20) : c;
        }

        c1 = (last - p > 1) ? p[1] : 0;
        c2 = (last - p > 2) ? p[2] : 0;

        if ((c == 0xc2 && (c1 <= 0xa0 || c1 == 0xad))
            || (c == 0xcd && c1 == 0x8f)
            || (c == 0xe1 && c1 == 0xa0 && c2 == 0x8e)
            || (c == 0xe2 && c1 == 0x80
                && (c2 <= 0x8f || (c2 >= 0xa8 && c2 <= 0xaf)))
            || (c == 0xe2 && c1 == 0x81
                && (c2 == 0x9f || (c2 >= 0xa0 && c2 <= 0xaf)))
            || (c == 0xe3 && c1 == 0x80 && c2 == 0x80)
            || (c == 0xef && c1 == 0xbb && c2 == 0xbf))
        {
            p += (c < 0xe0) ? 2 : 3;
            continue;
        }

        if (c == 0xef && c1 == 0xbc && c2 >= 0xa1 && c2 <= 0xba) {
            *pp = p + 3;
            return (u_char) ('a' + c2 - 0xa1);
        }

        if (c == 0xef && c1 == 0xbd && c2 >= 0x81 && c2 <= 0x9a) {
            *pp = p + 3;
            return (u_char) ('a' + c2 - 0x81);
        }

        *pp = p + 1;
        return c;
    }

    *pp = last;
    return 0;
}


/*
 * Do two subjects name the same person, as far as bytes can tell?
 * "Alice", " alice" and "ali<U+200B>ce" are all the requester "alice".
 * Two empty skeletons are the same (nobody): refused, never approved.
 */

ngx_uint_t
ngx_http_ha_optout_approval_same(u_char *a, size_t alen, u_char *b,
    size_t blen)
{
    u_char  *ae, *be, ca, cb;

    ae = a + alen;
    be = b + blen;

    do {
        ca = ngx_http_ha_optout_approval_next(&a, ae);
        cb = ngx_http_ha_optout_approval_next(&b, be);

        if (ca != cb) {
            return 0;
        }

    } while (ca);

    return 1;
}


ngx_uint_t
ngx_http_ha_optout_approval_allowed(ngx_http_ha_optout_claims_t *claims,
    u_char *upstream, size_t len)
{
    ngx_uint_t   i;
    ngx_str_t   *u;

    if (claims->upstreams == NULL) {
        return 1;
    }

    u = claims->upstreams->elts;

    for (i = 0; i < claims->upstreams->nelts; i++) {
        if (u[i].len == len && ngx_strncmp(u[i].data, upstream, len) == 0) {
            return 1;
        }
    }

    return 0;
}


void
ngx_http_ha_optout_approval_put_locked(ngx_http_ha_optout_approval_t *a)
{
    ngx_http_ha_optout_approval_t  *t;

    t = ngx_http_ha_optout_approval_find_locked(a->id);

    if (t == NULL) {
        t = ngx_http_ha_optout_approval_slot_locked();
    }

    if (t) {
        *t = *a;
    }

    ngx_http_ha_optout_bump();
}


void
ngx_http_ha_optout_approval_drop_locked(uint64_t id)
{
    ngx_http_ha_optout_approval_t  *t;

    t = ngx_http_ha_optout_approval_find_locked(id);

    if (t) {
        t->id = 0;
    }

    ngx_http_ha_optout_bump();
}


/* worker 0's timer, under the writer lock: expired requests go */

void
ngx_http_ha_optout_approvals_tick(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    u_char                          *p;
    time_t                           now;
    ngx_str_t                        upstream, actor, reason, none;
    ngx_uint_t                       i, expired;
    ngx_http_ha_optout_approval_t   *t, a;
    ngx_http_ha_optout_srv_conf_t   *hscf;

    u_char  buf[64 + NGX_HA_OPTOUT_REASON_LEN];

    if (ngx_http_ha_optout_sh->approvals == NULL) {
        return;
    }

    now = ngx_time();
    expired = 0;
    ngx_str_set(&none, "");

    for (i = 0; i < NGX_HA_OPTOUT_APPROVALS_MAX; i++) {

        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        t = &ngx_http_ha_optout_sh->approvals[i];

        if (t->id == 0 || t->expires_at > now) {
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
            continue;
        }

        a = *t;
        t->id = 0;
        ngx_http_ha_optout_bump();

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        expired++;

        upstream.data = a.upstream;
        upstream.len = a.upstream_len;
        actor.data = a.flag.actor;
        actor.len = a.flag.actor_len;

        p = ngx_snprintf(buf, sizeof(buf), "approval %016xL expired with "
                         "%ui of %ui approvals: %*s", a.id,
                         (ngx_uint_t) a.flag.approvers, a.needed,
                         (size_t) a.flag.reason_len, a.flag.reason);
        reason.data = buf;
        reason.len = p - buf;

        hscf = ngx_http_ha_optout_find_upstream(hmcf, &upstream);
        if (hscf && hscf->rec) {
            (void) ngx_atomic_fetch_add(
                &hscf->rec->changes[NGX_HA_OPTOUT_ACT_APPROVAL_EXPIRED], 1);
        }

        ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_APPROVAL_EXPIRED,
                                 &upstream, &actor, &none, &reason, NULL,
                                 NULL, &none);
    }

    if (expired) {
        (void) ngx_http_ha_optout_state_save(hmcf, log);
    }
}


/* pending approvals (of one upstream, or all) as a JSON array */

void *
ngx_http_ha_optout_approvals_json(ngx_str_t *upstream, time_t now)
{
    ngx_uint_t                       i, n;
    json_t                          *arr;
    ngx_http_ha_optout_approval_t   *snap;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_ha_optout_module);

    arr = json_array();
    if (arr == NULL) {
        return NULL;
    }

    snap = ngx_alloc(NGX_HA_OPTOUT_APPROVALS_MAX
                     * sizeof(ngx_http_ha_optout_approval_t),
                     ngx_cycle->log);
    if (snap == NULL) {
        return arr;
    }

    n = ngx_http_ha_optout_approvals_snapshot(snap);

    for (i = 0; i < n; i++) {
        if (snap[i].expires_at <= now) {
            continue;
        }

        if (upstream
            && (upstream->len != snap[i].upstream_len
                || ngx_strncmp(upstream->data, snap[i].upstream,
                               upstream->len) != 0))
        {
            continue;
        }

        json_array_append_new(arr,
                              ngx_http_ha_optout_approval_json(&snap[i],
                                                   &hmcf->environment));
    }

    ngx_free(snap);

    return arr;
}


/*
 * the one walk of the pending approvals, under the zone's lock: with an
 * upstream, those of it still live at now; without, every pending one.
 * Each is copied to out unless it is NULL; their number.
 */

static ngx_uint_t
ngx_http_ha_optout_approvals_select(ngx_str_t *upstream, time_t now,
    ngx_http_ha_optout_approval_t *out)
{
    ngx_uint_t                      i, n;
    ngx_http_ha_optout_approval_t  *t;

    n = 0;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    t = ngx_http_ha_optout_approvals_locked(0);

    for (i = 0; t && i < NGX_HA_OPTOUT_APPROVALS_MAX; i++) {
        if (t[i].id == 0) {
            continue;
        }

        if (upstream
            && (t[i].expires_at <= now
                || t[i].upstream_len != upstream->len
                || ngx_strncmp(t[i].upstream, upstream->data,
                               upstream->len) != 0))
        {
            continue;
        }

        if (out) {
            out[n] = t[i];
        }

        n++;
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return n;
}


ngx_uint_t
ngx_http_ha_optout_approvals_count(ngx_str_t *upstream, time_t now)
{
    return ngx_http_ha_optout_approvals_select(upstream, now, NULL);
}


/* copies the pending approvals out (for the state file and JSON) */

ngx_uint_t
ngx_http_ha_optout_approvals_snapshot(ngx_http_ha_optout_approval_t *out)
{
    return ngx_http_ha_optout_approvals_select(NULL, 0, out);
}


/*
 * The state file is written by the worker user and signed by no one: an
 * approval read back gets no more than the policy gives a request made
 * now.  "needed" is at least what the policy asks; approved_by loses the
 * requester and repeats (as approve() would have refused them); the
 * expiry is at most approval_ttl from now.  Each change is logged.
 */

static void
ngx_http_ha_optout_approval_sanitize(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_approval_t *a, time_t now, ngx_log_t *log)
{
    time_t                      attl;
    ngx_str_t                   upstream, who;
    ngx_uint_t                  i, j, k, n, dup;
    ngx_http_ha_optout_flag_t  *f;

    u_char  buf[4 * NGX_HA_OPTOUT_ACTOR_LEN];

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;
    f = &a->flag;

    n = ngx_http_ha_optout_policy_approvers(hmcf, &upstream, &attl);

    if (n > a->needed) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: state file: approval %016xL of \"%V\" "
                      "needs %ui approvals, as the policy asks, not %ui",
                      a->id, &upstream, n, a->needed);
        a->needed = n;
    }

    k = 0;

    for (i = 0; i < f->approvers && i < NGX_HA_OPTOUT_APPROVERS_MAX; i++) {
        dup = ngx_http_ha_optout_approval_same(f->approver[i],
                                               f->approver_len[i],
                                               f->actor, f->actor_len);

        for (j = 0; !dup && j < k; j++) {
            dup = ngx_http_ha_optout_approval_same(f->approver[i],
                                                   f->approver_len[i],
                                                   f->approver[j],
                                                   f->approver_len[j]);
        }

        if (dup) {
            who.data = buf;
            who.len = ngx_http_ha_optout_escape(buf, sizeof(buf),
                                                f->approver[i],
                                                f->approver_len[i])
                      - buf;
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "ha_optout: state file: approval %016xL of \"%V\": "
                          "approved_by \"%V\" dropped: the requester or a "
                          "repeat", a->id, &upstream, &who);
            continue;
        }

        if (k != i) {
            f->approver_len[k] = f->approver_len[i];
            ngx_memcpy(f->approver[k], f->approver[i], f->approver_len[i]);
        }

        k++;
    }

    f->approvers = (uint16_t) k;

    if (a->expires_at > now + attl) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: state file: approval %016xL of \"%V\" "
                      "expires within approval_ttl of now, not later",
                      a->id, &upstream);
        a->expires_at = now + attl;
    }
}


/*
 * One approval read from the state file at start: back into the zone, or
 * audited as expired.  NGX_DECLINED: there was no room for it.
 * "locked": called with the zone's mutex held (before "restored" is set,
 * so that no listing sees the zone without them); an expired one is then
 * only NGX_ABORT, audited by a second call without the mutex.
 */

ngx_int_t
ngx_http_ha_optout_approval_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_approval_t *a, time_t now, ngx_log_t *log,
    ngx_uint_t locked)
{
    u_char                          *p;
    ngx_str_t                        upstream, actor, reason, none;
    ngx_http_ha_optout_approval_t   *t;

    u_char  buf[64 + NGX_HA_OPTOUT_REASON_LEN];

    upstream.data = a->upstream;
    upstream.len = a->upstream_len;

    if (a->expires_at <= now
        || ngx_http_ha_optout_find_upstream(hmcf, &upstream) == NULL)
    {
        if (locked) {
            return NGX_ABORT;
        }

        actor.data = a->flag.actor;
        actor.len = a->flag.actor_len;
        ngx_str_set(&none, "");

        p = ngx_snprintf(buf, sizeof(buf), "approval %016xL expired with "
                         "%ui of %ui approvals: %*s", a->id,
                         (ngx_uint_t) a->flag.approvers, a->needed,
                         (size_t) a->flag.reason_len, a->flag.reason);
        reason.data = buf;
        reason.len = p - buf;

        ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_APPROVAL_EXPIRED,
                                 &upstream, &actor, &none, &reason, NULL,
                                 NULL, &none);
        return NGX_OK;
    }

    ngx_http_ha_optout_approval_sanitize(hmcf, a, now, log);

    if (!locked) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    }

    t = ngx_http_ha_optout_approval_find_locked(a->id);
    if (t == NULL) {
        t = ngx_http_ha_optout_approval_slot_locked();
    }

    if (t) {
        *t = *a;
    }

    if (!locked) {
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
    }

    return t ? NGX_OK : NGX_DECLINED;
}
