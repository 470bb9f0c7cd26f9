
/*
 * ngx_ha_optout_module: the state file.
 *
 * The state file is the API layer of every upstream in the zone (and the
 * fleet layer, the spent jtis, the window occurrences ended through the
 * API, the pending approvals and the audit chain's last hash), written
 * after each change (temp file, fsync, rename; in place when a restore of
 * HA cannot be saved otherwise) and read once per fresh zone, where each
 * saved flag is judged against the configuration before it is restored,
 * and a corrupt file is set aside.  docs/state-and-policy.md describes
 * the layout.
 *
 * Over a thousand lines because the file has one writer and one reader
 * that must stay in step (what state_emit() writes, state_parse() reads
 * back, as fuzz_state checks): in this order, the writer, the save, the
 * reader, the restore.
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_yaml.h"

#include <openssl/rand.h>


#define NGX_HA_OPTOUT_STATE_VERSION  1
#define NGX_HA_OPTOUT_STATE_JTIS     4096   /* spent jtis kept, at most */


/* a flag read from the state file */
typedef struct {
    ngx_str_t                        upstream;
    ngx_http_ha_optout_flag_t        flag;
    ngx_uint_t                       action;
    const char                      *why;
    ngx_str_t                        policy;    /* the policy's refusal */
} ngx_http_ha_optout_saved_t;


/* a spent jti read from, or written to, the state file */
typedef struct {
    ngx_str_t                        jti;
    time_t                           exp;
} ngx_http_ha_optout_jti_t;


typedef struct {
    uint64_t                         version_seq;
    ngx_array_t                      flags;     /* saved_t */
    ngx_array_t                      jtis;      /* jti_t */
    ngx_array_t                      approvals; /* approval_t */
    u_char                           audit_hash[65];    /* "": none */
    ngx_uint_t                       nwskips;
    ngx_http_ha_optout_wskip_t       wskips[NGX_HA_OPTOUT_WSKIPS];
} ngx_http_ha_optout_state_t;


static u_char  ngx_http_ha_optout_zero_hash[] =
    "0000000000000000000000000000000000000000000000000000000000000000";


/* "approved_by": ["bob", "carol"], the subjects quoted as user text */

static ngx_int_t
ngx_http_ha_optout_emit_approvers(yaml_emitter_t *e,
    ngx_http_ha_optout_flag_t *f)
{
    ngx_uint_t    i;
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit_key(e, "approved_by") != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                    YAML_FLOW_SEQUENCE_STYLE))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < f->approvers && i < NGX_HA_OPTOUT_APPROVERS_MAX; i++) {
        if (ngx_http_ha_optout_emit_scalar(e, f->approver[i],
                                           f->approver_len[i],
                                           YAML_DOUBLE_QUOTED_SCALAR_STYLE)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit(e, &ev,
                                   yaml_sequence_end_event_initialize(&ev));
}


/* one flag as a mapping: the same fields as the API's JSON */

static ngx_int_t
ngx_http_ha_optout_emit_flag(yaml_emitter_t *e, ngx_http_ha_optout_flag_t *f)
{
    if (ngx_http_ha_optout_emit_mapping(e, NULL) != NGX_OK
        || ngx_http_ha_optout_emit_bool(e, "failover", !f->no_failover)
           != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "pin", f->pin, f->pin_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "pin_selector", f->selector,
                                       f->selector_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_bool(e, "replication", !f->no_replication)
           != NGX_OK
        || ngx_http_ha_optout_emit_bool(e, "sticky", f->sticky) != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "reason", f->reason, f->reason_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_str(e, "actor", f->actor, f->actor_len)
           != NGX_OK
        || ngx_http_ha_optout_emit_uint(e, "version", f->version) != NGX_OK
        || ngx_http_ha_optout_emit_time(e, "set_at", f->set_at) != NGX_OK
        || ngx_http_ha_optout_emit_time(e, "expires_at", f->expires_at)
           != NGX_OK
        || (f->approvers
            && ngx_http_ha_optout_emit_approvers(e, f) != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (f->source == NGX_HA_OPTOUT_SRC_FLEET
        && (ngx_http_ha_optout_emit_uint(e, "revision", f->revision)
            != NGX_OK
            || ngx_http_ha_optout_emit_str(e, "via", f->via, f->via_len)
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_emit_end(e);
}


/* "approvals": the pending approvals, by id (approval.c) */

static ngx_int_t
ngx_http_ha_optout_emit_approvals(yaml_emitter_t *e,
    ngx_http_ha_optout_approval_t *a, ngx_uint_t n)
{
    u_char      id[16];
    ngx_uint_t  i;

    if (ngx_http_ha_optout_emit_mapping(e, "approvals") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_ha_optout_emit_scalar(e, id,
                ngx_sprintf(id, "%016xL", a[i].id) - id,
                YAML_DOUBLE_QUOTED_SCALAR_STYLE)
            != NGX_OK
            || ngx_http_ha_optout_emit_mapping(e, NULL) != NGX_OK
            || ngx_http_ha_optout_emit_str(e, "upstream", a[i].upstream,
                                           a[i].upstream_len)
               != NGX_OK
            || ngx_http_ha_optout_emit_plain(e, "method",
                   (u_char *) (a[i].method == 2 ? "PATCH" : "PUT"),
                   a[i].method == 2 ? 5 : 3)
               != NGX_OK
            || ngx_http_ha_optout_emit_uint(e, "needed", a[i].needed)
               != NGX_OK
            || ngx_http_ha_optout_emit_uint(e, "base", a[i].base) != NGX_OK
            || ngx_http_ha_optout_emit_bool(e, "match", a[i].match)
               != NGX_OK
            || (a[i].ttl_set
                && ngx_http_ha_optout_emit_uint(e, "ttl", a[i].ttl)
                   != NGX_OK)
            || ngx_http_ha_optout_emit_time(e, "requested_at",
                                            a[i].requested_at)
               != NGX_OK
            || ngx_http_ha_optout_emit_time(e, "expires_at",
                                            a[i].expires_at)
               != NGX_OK
            || ngx_http_ha_optout_emit_key(e, "flag") != NGX_OK
            || ngx_http_ha_optout_emit_flag(e, &a[i].flag) != NGX_OK
            || ngx_http_ha_optout_emit_end(e) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit_end(e);
}


/* KEY: SECONDS, both plain, as "jtis" and "windows_ended" hold them */

static ngx_int_t
ngx_http_ha_optout_emit_seconds(yaml_emitter_t *e, u_char *key, size_t len,
    time_t t)
{
    u_char  num[NGX_TIME_T_LEN];

    if (ngx_http_ha_optout_emit_scalar(e, key, len, YAML_PLAIN_SCALAR_STYLE)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_emit_scalar(e, num,
                                          ngx_sprintf(num, "%T", t) - num,
                                          YAML_PLAIN_SCALAR_STYLE);
}


/*
 * "jtis": the spent jtis, hex (a jti is any text: hex keeps the file
 * plain), each with its token's exp in Unix seconds
 */

static ngx_int_t
ngx_http_ha_optout_emit_jtis(yaml_emitter_t *e, ngx_http_ha_optout_jti_t *j,
    ngx_uint_t n)
{
    u_char      hex[2 * 255];
    size_t      len;
    ngx_uint_t  i;

    if (ngx_http_ha_optout_emit_mapping(e, "jtis") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        len = ngx_hex_dump(hex, j[i].jti.data, ngx_min(j[i].jti.len, 255))
              - hex;

        if (ngx_http_ha_optout_emit_seconds(e, hex, len, j[i].exp)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit_end(e);
}


/*
 * "windows_ended": the occurrences of policy windows ended or skipped
 * through the API, "FP-START": END (the window's fingerprint in hex, the
 * occurrence's start and end in Unix seconds), so that a restart does not
 * reopen them
 */

static ngx_int_t
ngx_http_ha_optout_emit_wskips(yaml_emitter_t *e,
    ngx_http_ha_optout_wskip_t *k, ngx_uint_t n)
{
    u_char      key[32];
    ngx_uint_t  i;

    if (ngx_http_ha_optout_emit_mapping(e, "windows_ended") != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_ha_optout_emit_seconds(e, key,
                ngx_sprintf(key, "%08xD-%T", k[i].fp, k[i].start) - key,
                k[i].end)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit_end(e);
}


/* "flags" (the API layer) or "fleet": UPSTREAM: FLAG of each present */

static ngx_int_t
ngx_http_ha_optout_emit_layer(yaml_emitter_t *e, const char *key,
    ngx_http_ha_optout_rec_t *snap, ngx_uint_t n, ngx_uint_t fleet)
{
    ngx_uint_t                  i;
    ngx_http_ha_optout_flag_t  *f;

    if (ngx_http_ha_optout_emit_mapping(e, key) != NGX_OK) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        f = fleet ? &snap[i].fleet : &snap[i].api;

        if (!f->present) {
            continue;
        }

        if (ngx_http_ha_optout_emit_scalar(e, snap[i].name, snap[i].name_len,
                                           YAML_ANY_SCALAR_STYLE)
            != NGX_OK
            || ngx_http_ha_optout_emit_flag(e, f) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_ha_optout_emit_end(e);
}


static ngx_http_ha_optout_wskip_t  ngx_http_ha_optout_save_wskips[
                                       NGX_HA_OPTOUT_WSKIPS];
static ngx_uint_t                  ngx_http_ha_optout_save_nwskips;


/*
 * The whole file: the API layer under "flags", the fleet layer (SPEC
 * section 11) the same way under "fleet", then the jtis, the windows
 * ended and the pending approvals
 */

static ngx_int_t
ngx_http_ha_optout_state_emit(yaml_emitter_t *e, uint64_t version_seq,
    ngx_http_ha_optout_rec_t *snap, ngx_uint_t n, u_char *audit_hash,
    ngx_http_ha_optout_jti_t *jtis, ngx_uint_t njtis,
    ngx_http_ha_optout_approval_t *approvals, ngx_uint_t napprovals)
{
    yaml_event_t  ev;

    if (ngx_http_ha_optout_emit(e, &ev,
            yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING))
        != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
               yaml_document_start_event_initialize(&ev, NULL, NULL, NULL,
                                                    1))
           != NGX_OK
        || ngx_http_ha_optout_emit_mapping(e, NULL) != NGX_OK
        || ngx_http_ha_optout_emit_uint(e, "version",
                                        NGX_HA_OPTOUT_STATE_VERSION)
           != NGX_OK
        || ngx_http_ha_optout_emit_uint(e, "version_seq", version_seq)
           != NGX_OK
        || ngx_http_ha_optout_emit_time(e, "saved_at", ngx_time()) != NGX_OK
        || (audit_hash[0]
            && ngx_http_ha_optout_emit_plain(e, "audit_hash", audit_hash,
                                             ngx_strlen(audit_hash))
               != NGX_OK)
        || ngx_http_ha_optout_emit_layer(e, "flags", snap, n, 0) != NGX_OK
        || ngx_http_ha_optout_emit_layer(e, "fleet", snap, n, 1) != NGX_OK
        || (njtis
            && ngx_http_ha_optout_emit_jtis(e, jtis, njtis) != NGX_OK)
        || (ngx_http_ha_optout_save_nwskips
            && ngx_http_ha_optout_emit_wskips(e,
                   ngx_http_ha_optout_save_wskips,
                   ngx_http_ha_optout_save_nwskips)
               != NGX_OK)
        || (napprovals
            && ngx_http_ha_optout_emit_approvals(e, approvals, napprovals)
               != NGX_OK)
        || ngx_http_ha_optout_emit_end(e) != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
                                   yaml_document_end_event_initialize(&ev, 1))
           != NGX_OK
        || ngx_http_ha_optout_emit(e, &ev,
                                   yaml_stream_end_event_initialize(&ev))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return yaml_emitter_flush(e) ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_ha_optout_state_error(ngx_log_t *log, ngx_err_t err,
    const char *what, u_char *name, ngx_str_t *state_file)
{
    char             *user;
    ngx_core_conf_t  *ccf;

    if (err == NGX_EACCES || err == NGX_EPERM || err == EROFS) {
        ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                               ngx_core_module);
        user = (ccf && ccf->username) ? ccf->username : "of the workers";

        ngx_log_error(NGX_LOG_ERR, log, err,
                      "ha_optout: state file \"%V\" cannot be written: %s "
                      "\"%s\" failed; its directory must be writable by "
                      "the nginx worker user \"%s\"",
                      state_file, what, name, user);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, log, err,
                  "ha_optout: state file \"%V\" cannot be written: %s \"%s\" "
                  "failed", state_file, what, name);
}


/*
 * STATE.tmp.PID.RANDOM: the pid lets the timer sweep what a killed worker
 * left, the random part makes the name unpredictable, and the file is
 * created with O_EXCL|O_NOFOLLOW, so nothing planted in the directory (a
 * symbolic link, a FIFO) is ever opened in its place.
 */

static ngx_fd_t
ngx_http_ha_optout_state_tmp(ngx_str_t *state_file, u_char *tmp)
{
    u_char  rnd[8], *p;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_set_errno(NGX_EAGAIN);
        return NGX_INVALID_FILE;
    }

    p = ngx_sprintf(tmp, "%V.tmp.%P.", state_file, ngx_pid);
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    *p = '\0';

    return open((char *) tmp, O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC,
                0600);
}


/* the jtis exported from the zone, those that expire first first */

static ngx_http_ha_optout_jti_t *
ngx_http_ha_optout_state_jtis(u_char *buf, size_t len, ngx_uint_t *n,
    ngx_log_t *log)
{
    u_char                    *p, *last;
    ngx_uint_t                 i, count;
    ngx_http_ha_optout_jti_t  *j;

    count = 0;
    last = buf + len;

    for (p = buf; p < last; p += sizeof(time_t) + 1 + p[sizeof(time_t)]) {
        count++;
    }

    *n = 0;

    if (count == 0) {
        return NULL;
    }

    j = ngx_alloc(count * sizeof(ngx_http_ha_optout_jti_t), log);
    if (j == NULL) {
        return NULL;
    }

    i = count;

    for (p = buf; p < last; p += sizeof(time_t) + 1 + p[sizeof(time_t)]) {
        i--;
        ngx_memcpy(&j[i].exp, p, sizeof(time_t));
        j[i].jti.len = p[sizeof(time_t)];
        j[i].jti.data = p + sizeof(time_t) + 1;
    }

    *n = count;

    return j;
}


/*
 * Writes the API layer of every record in the zone, the spent jtis (so
 * that a token stays spent across a restart) and the audit chain's last
 * hash (so that "audit verify --state" sees a cut tail).  The snapshot
 * takes a number under the zone's mutex; the rename happens under the
 * mutex too, and only when no later snapshot has been renamed already, so
 * two workers saving at once can never leave the older picture on disk.
 * The write that spent a jti saves after spending it: its own jti is in
 * the snapshot.
 */

static ngx_int_t ngx_http_ha_optout_state_write(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_log_t *log, ngx_uint_t inplace);


ngx_int_t
ngx_http_ha_optout_state_save(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    return ngx_http_ha_optout_state_write(hmcf, log, 0);
}


/*
 * The save of a change that restores HA (a DELETE, an expiry, the undo of
 * a refused suspension).  When the atomic save fails (a directory the
 * workers cannot write: no temporary file, no rename), the existing state
 * file is rewritten in place, if the workers may write it: else the
 * suspension it holds would come back at the next start.  The in-place
 * write is not atomic, but it can only fail towards safety: the file is
 * emptied first, so a torn write leaves an empty file or a cut snapshot
 * that does not parse, which the next start sets aside, and nginx then
 * starts with HA fully on (a cut that parses holds fewer of the flags
 * that act now, never one that was cleared).
 */

ngx_int_t
ngx_http_ha_optout_state_save_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    if (ngx_http_ha_optout_state_write(hmcf, log, 0) == NGX_OK) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_state_write(hmcf, log, 1) == NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: state file \"%V\" rewritten in place "
                      "(its directory cannot be written): the restore is "
                      "saved", &hmcf->state_file);
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "ha_optout: a restore of HA cannot be saved in state file "
                  "\"%V\", neither by rename nor in place: it is retried, "
                  "and lost if nginx stops before it is saved",
                  &hmcf->state_file);

    return NGX_ERROR;
}


/* what one save writes, taken from the zone under its mutex */
typedef struct {
    ngx_http_ha_optout_rec_t       *snap;
    ngx_uint_t                      n;
    ngx_uint_t                      cap;
    u_char                         *jbuf;
    size_t                          jlen;
    size_t                          jcap;
    ngx_http_ha_optout_jti_t       *jtis;
    ngx_uint_t                      njtis;
    ngx_http_ha_optout_approval_t  *approvals;
    ngx_uint_t                      napprovals;
    uint64_t                        seq;
    uint64_t                        version_seq;
    u_char                          audit_hash[65];
} ngx_http_ha_optout_snapshot_t;


/*
 * the records with a flag, as many as sn->snap holds; sn->n: how many
 * there are.  Records are only added (by the master, under the mutex).
 */

static void
ngx_http_ha_optout_state_copy_recs_locked(ngx_http_ha_optout_snapshot_t *sn)
{
    ngx_queue_t                 *q;
    ngx_http_ha_optout_rec_t    *rec;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;
    sn->n = 0;

    for (q = ngx_queue_head(&sh->upstreams);
         q != ngx_queue_sentinel(&sh->upstreams);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_ha_optout_rec_t, queue);

        if (!rec->api.present && !rec->fleet.present) {
            continue;
        }

        if (sn->n < sn->cap) {
            ngx_memcpy(sn->snap[sn->n].name, rec->name, rec->name_len);
            sn->snap[sn->n].name_len = rec->name_len;
            sn->snap[sn->n].api = rec->api;
            sn->snap[sn->n].fleet = rec->fleet;
        }

        sn->n++;
    }
}


/*
 * The records with a flag and the spent jtis, copied under the mutex into
 * buffers allocated outside it: when they are too small, they grow and
 * the copy is taken again.  NGX_OK: *sn holds the snapshot, numbered.
 */

static ngx_int_t
ngx_http_ha_optout_state_copy(ngx_http_ha_optout_snapshot_t *sn, time_t now,
    ngx_log_t *log)
{
    ngx_uint_t                   i;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    for ( ;; ) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        ngx_http_ha_optout_state_copy_recs_locked(sn);

        sn->jlen = ngx_http_ha_optout_replay_export_locked(sn->jbuf,
                       sn->jcap, NGX_HA_OPTOUT_STATE_JTIS, now);

        if (sn->n <= sn->cap && sn->jlen <= sn->jcap) {
            sn->seq = ++sh->state_seq;
            sn->version_seq = sh->version_seq;

            ngx_http_ha_optout_save_nwskips = 0;

            for (i = 0; i < ngx_min(sh->nwskips, NGX_HA_OPTOUT_WSKIPS); i++) {
                if (sh->wskips[i].end > now) {
                    ngx_http_ha_optout_save_wskips[
                        ngx_http_ha_optout_save_nwskips++] = sh->wskips[i];
                }
            }

            ngx_memcpy(sn->audit_hash, sh->audit_hash,
                       sizeof(sn->audit_hash));
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
            return NGX_OK;
        }

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        if (sn->n > sn->cap) {
            if (sn->snap) {
                ngx_free(sn->snap);
            }

            sn->cap = sn->n + 4;
            sn->snap = ngx_alloc(sn->cap * sizeof(ngx_http_ha_optout_rec_t),
                                 log);
            if (sn->snap == NULL) {
                return NGX_ERROR;
            }
        }

        if (sn->jlen > sn->jcap) {
            if (sn->jbuf) {
                ngx_free(sn->jbuf);
            }

            sn->jcap = sn->jlen + 1024;
            sn->jbuf = ngx_alloc(sn->jcap, log);
            if (sn->jbuf == NULL) {
                return NGX_ERROR;
            }
        }
    }
}


/* the snapshot of the zone, its jtis in order and the pending approvals */

static ngx_int_t
ngx_http_ha_optout_state_snapshot(ngx_http_ha_optout_snapshot_t *sn,
    ngx_log_t *log)
{
    if (ngx_http_ha_optout_state_copy(sn, ngx_time(), log) != NGX_OK) {
        return NGX_ERROR;
    }

    sn->audit_hash[64] = '\0';

    if (ngx_strncmp(sn->audit_hash, ngx_http_ha_optout_zero_hash, 64) == 0) {
        /* no audit line yet: nothing to anchor */
        sn->audit_hash[0] = '\0';
    }

    if (sn->jlen) {
        sn->jtis = ngx_http_ha_optout_state_jtis(sn->jbuf, sn->jlen,
                                                 &sn->njtis, log);
        if (sn->jtis == NULL) {
            return NGX_ERROR;
        }
    }

    /* pending approvals change only under the writer lock, as we run */

    sn->approvals = ngx_alloc(NGX_HA_OPTOUT_APPROVALS_MAX
                              * sizeof(ngx_http_ha_optout_approval_t), log);
    if (sn->approvals == NULL) {
        return NGX_ERROR;
    }

    sn->napprovals = ngx_http_ha_optout_approvals_snapshot(sn->approvals);

    return NGX_OK;
}


static void
ngx_http_ha_optout_snapshot_free(ngx_http_ha_optout_snapshot_t *sn)
{
    if (sn->snap) {
        ngx_free(sn->snap);
    }

    if (sn->approvals) {
        ngx_free(sn->approvals);
    }

    if (sn->jtis) {
        ngx_free(sn->jtis);
    }

    if (sn->jbuf) {
        ngx_free(sn->jbuf);
    }
}


/*
 * The existing state file, opened to be rewritten in place: never created,
 * never a planted FIFO.  NGX_DONE: there is no file, so no suspension that
 * could come back at a start.
 */

static ngx_int_t
ngx_http_ha_optout_state_open_inplace(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_fd_t *fdp)
{
    ngx_fd_t         fd;
    ngx_file_info_t  fi;

    fd = open((char *) hmcf->state_file.data,
              O_WRONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC);

    if (fd == NGX_INVALID_FILE && ngx_errno == NGX_ENOENT) {
        return NGX_DONE;
    }

    if (fd == NGX_INVALID_FILE) {
        ngx_http_ha_optout_state_error(log, ngx_errno, "open()",
                                       hmcf->state_file.data,
                                       &hmcf->state_file);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR || !ngx_is_file(&fi)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "ha_optout: state file \"%V\" is not a regular "
                      "file: not rewritten in place", &hmcf->state_file);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    /*
     * emptied first: a write torn after this leaves an empty file or
     * a prefix of the new snapshot, never the new one over the tail
     * of the old, which might parse into a flag that was cleared
     */
    if (ftruncate(fd, 0) == -1) {
        ngx_http_ha_optout_state_error(log, ngx_errno, "ftruncate()",
                                       hmcf->state_file.data,
                                       &hmcf->state_file);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    *fdp = fd;

    return NGX_OK;
}


/* the snapshot as YAML into fd, synced and closed (fd is always closed) */

static ngx_int_t
ngx_http_ha_optout_state_put(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_fd_t fd, u_char *tmp, ngx_http_ha_optout_snapshot_t *sn,
    ngx_log_t *log)
{
    yaml_emitter_t            emitter;
    ngx_http_ha_optout_out_t  out;

    out.fd = fd;
    out.err = 0;

    if (!yaml_emitter_initialize(&emitter)) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    yaml_emitter_set_output(&emitter, ngx_http_ha_optout_emit_write, &out);
    yaml_emitter_set_unicode(&emitter, 1);
    yaml_emitter_set_width(&emitter, 1000);

    if (ngx_http_ha_optout_state_emit(&emitter, sn->version_seq, sn->snap,
                                      sn->n, sn->audit_hash, sn->jtis,
                                      sn->njtis, sn->approvals,
                                      sn->napprovals)
        != NGX_OK)
    {
        yaml_emitter_delete(&emitter);
        ngx_close_file(fd);

        if (out.err) {
            ngx_http_ha_optout_state_error(log, out.err, "write()", tmp,
                                           &hmcf->state_file);
        } else {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "ha_optout: state file \"%V\": YAML emitter "
                          "failed: %s", &hmcf->state_file,
                          emitter.problem ? emitter.problem : "unknown");
        }

        return NGX_ERROR;
    }

    yaml_emitter_delete(&emitter);

    if (fsync(fd) == -1) {
        ngx_http_ha_optout_state_error(log, ngx_errno, "fsync()", tmp,
                                       &hmcf->state_file);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_http_ha_optout_state_error(log, ngx_errno, "close()", tmp,
                                       &hmcf->state_file);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the zone notes which snapshot the file holds (under the mutex) */

static void
ngx_http_ha_optout_state_saved_locked(ngx_http_ha_optout_snapshot_t *sn)
{
    ngx_http_ha_optout_sh->state_saved = sn->seq;
    ngx_memcpy(ngx_http_ha_optout_sh->state_audit_hash,
               sn->audit_hash[0] ? sn->audit_hash
                                 : ngx_http_ha_optout_zero_hash,
               sizeof(sn->audit_hash));
}


/*
 * The file written becomes the state file, unless a later snapshot is
 * there already: the rename (or, in place, the note of what the file
 * holds) happens under the mutex.  NGX_ERROR: the rename failed.
 */

static ngx_int_t
ngx_http_ha_optout_state_commit(ngx_http_ha_optout_main_conf_t *hmcf,
    u_char *tmp, ngx_http_ha_optout_snapshot_t *sn, ngx_uint_t inplace,
    ngx_log_t *log)
{
    ngx_err_t                    err;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (inplace) {
        if (sh->state_saved > sn->seq) {
            /* a later snapshot was overwritten: the timer saves again */
            sh->state_dirty++;

        } else {
            ngx_http_ha_optout_state_saved_locked(sn);
        }

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        return NGX_OK;
    }

    if (sh->state_saved > sn->seq) {
        /* a later snapshot, which includes this one's change, is there */
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        (void) ngx_delete_file(tmp);
        return NGX_OK;
    }

    if (ngx_rename_file(tmp, hmcf->state_file.data) == NGX_FILE_ERROR) {
        err = ngx_errno;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        ngx_http_ha_optout_state_error(log, err, "rename() to",
                                       hmcf->state_file.data,
                                       &hmcf->state_file);
        return NGX_ERROR;
    }

    ngx_http_ha_optout_state_saved_locked(sn);

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "ha_optout: state file saved, %ui flags, %ui jtis, "
                   "snapshot %uL", sn->n, sn->njtis, sn->seq);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_state_write(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t inplace)
{
    u_char                         *tmp;
    ngx_fd_t                        fd;
    ngx_int_t                       rc;
    ngx_http_ha_optout_snapshot_t   sn;

    if (hmcf->state_file.len == 0) {
        return NGX_OK;
    }

    if (!ngx_http_ha_optout_sh->restored) {
        /* a write before worker 0's first tick: the file comes first */
        ngx_http_ha_optout_state_restore(hmcf, log);
    }

    tmp = ngx_alloc(hmcf->state_file.len + sizeof(".tmp..") + NGX_INT64_LEN
                    + 16, log);
    if (tmp == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&sn, sizeof(ngx_http_ha_optout_snapshot_t));

    rc = NGX_ERROR;

    if (ngx_http_ha_optout_state_snapshot(&sn, log) != NGX_OK) {
        goto done;
    }

    if (inplace) {
        rc = ngx_http_ha_optout_state_open_inplace(hmcf, log, &fd);

        if (rc != NGX_OK) {
            rc = (rc == NGX_DONE) ? NGX_OK : NGX_ERROR;
            goto done;
        }

    } else {
        fd = ngx_http_ha_optout_state_tmp(&hmcf->state_file, tmp);

        if (fd == NGX_INVALID_FILE) {
            ngx_http_ha_optout_state_error(log, ngx_errno, "open()", tmp,
                                           &hmcf->state_file);
            goto done;
        }
    }

    rc = ngx_http_ha_optout_state_put(hmcf, fd, tmp, &sn, log);

    if (rc == NGX_OK) {
        rc = ngx_http_ha_optout_state_commit(hmcf, tmp, &sn, inplace, log);
    }

    if (rc != NGX_OK && !inplace) {
        (void) ngx_delete_file(tmp);
    }

done:

    ngx_http_ha_optout_snapshot_free(&sn);
    ngx_free(tmp);

    return rc;
}


/* "approved_by": a list of at most NGX_HA_OPTOUT_APPROVERS_MAX subjects */

static ngx_int_t
ngx_http_ha_optout_state_approvers(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_flag_t *f)
{
    ngx_uint_t         n;
    yaml_node_item_t  *it;

    if (node->type != YAML_SEQUENCE_NODE) {
        return ngx_http_ha_optout_yfail(y, node, "approved_by must be a "
                                        "list");
    }

    n = 0;

    for (it = node->data.sequence.items.start;
         it < node->data.sequence.items.top;
         it++)
    {
        if (n == NGX_HA_OPTOUT_APPROVERS_MAX) {
            return ngx_http_ha_optout_yfail(y, node, "approved_by has more "
                                            "than %d subjects",
                                            NGX_HA_OPTOUT_APPROVERS_MAX);
        }

        if (ngx_http_ha_optout_ystr(y, ngx_http_ha_optout_ynode(y, *it),
                                    "approved_by", f->approver[n],
                                    &f->approver_len[n], 1,
                                    NGX_HA_OPTOUT_ACTOR_LEN)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        n++;
    }

    f->approvers = (uint16_t) n;

    return NGX_OK;
}


static ngx_int_t ngx_http_ha_optout_state_flag(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_flag_t *f);
static ngx_int_t ngx_http_ha_optout_unhex(u_char c);


/* an approval's id: 16 hex digits, not all zero */

static ngx_int_t
ngx_http_ha_optout_approval_id(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *key, ngx_http_ha_optout_approval_t *a)
{
    ngx_int_t   hv;
    ngx_uint_t  i;

    if (key->data.scalar.length != 16) {
        goto badid;
    }

    for (i = 0; i < 16; i++) {
        hv = ngx_http_ha_optout_unhex(key->data.scalar.value[i]);
        if (hv < 0) {
            goto badid;
        }

        a->id = (a->id << 4) | (uint64_t) hv;
    }

    if (a->id == 0) {
        goto badid;
    }

    return NGX_OK;

badid:

    return ngx_http_ha_optout_yfail(y, key, "an approval id is 16 hex "
                                    "digits");
}


/* "method": PUT (1) or PATCH (2) */

static ngx_int_t
ngx_http_ha_optout_approval_method(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *fv, ngx_http_ha_optout_approval_t *a)
{
    ngx_str_t  m;

    if (ngx_http_ha_optout_yscalar(y, fv, "method", &m) != NGX_OK) {
        return NGX_ERROR;
    }

    if (m.len == 3 && ngx_strncmp(m.data, "PUT", 3) == 0) {
        a->method = 1;

    } else if (m.len == 5 && ngx_strncmp(m.data, "PATCH", 5) == 0) {
        a->method = 2;

    } else {
        return ngx_http_ha_optout_yfail(y, fv, "method must be PUT or "
                                        "PATCH");
    }

    return NGX_OK;
}


/* one key of a pending approval */

static ngx_int_t
ngx_http_ha_optout_approval_field(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *k, yaml_node_t *fv, ngx_http_ha_optout_approval_t *a)
{
    uint16_t    len;
    uint64_t    v;
    ngx_uint_t  b;

    if (ngx_http_ha_optout_ykey_is(k, "upstream")) {
        if (ngx_http_ha_optout_ystr(y, fv, "upstream", a->upstream, &len, 1,
                                    NGX_HA_OPTOUT_NAME_LEN - 1)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        a->upstream_len = len;

    } else if (ngx_http_ha_optout_ykey_is(k, "method")) {
        return ngx_http_ha_optout_approval_method(y, fv, a);

    } else if (ngx_http_ha_optout_ykey_is(k, "needed")) {
        if (ngx_http_ha_optout_yuint(y, fv, "needed", &v) != NGX_OK) {
            return NGX_ERROR;
        }

        if (v == 0 || v > NGX_HA_OPTOUT_APPROVERS_MAX) {
            return ngx_http_ha_optout_yfail(y, fv, "needed must be 1..%d",
                                            NGX_HA_OPTOUT_APPROVERS_MAX);
        }

        a->needed = (ngx_uint_t) v;

    } else if (ngx_http_ha_optout_ykey_is(k, "base")) {
        return ngx_http_ha_optout_yuint(y, fv, "base", &a->base);

    } else if (ngx_http_ha_optout_ykey_is(k, "match")) {
        if (ngx_http_ha_optout_ybool(y, fv, "match", &b) != NGX_OK) {
            return NGX_ERROR;
        }

        a->match = b ? 1 : 0;

    } else if (ngx_http_ha_optout_ykey_is(k, "ttl")) {
        if (ngx_http_ha_optout_yuint(y, fv, "ttl", &v) != NGX_OK) {
            return NGX_ERROR;
        }

        if (v > 366 * 86400) {
            return ngx_http_ha_optout_yfail(y, fv, "ttl is too long");
        }

        a->ttl = (time_t) v;
        a->ttl_set = 1;

    } else if (ngx_http_ha_optout_ykey_is(k, "requested_at")) {
        return ngx_http_ha_optout_ytime(y, fv, "requested_at", 0,
                                        &a->requested_at);

    } else if (ngx_http_ha_optout_ykey_is(k, "expires_at")) {
        return ngx_http_ha_optout_ytime(y, fv, "expires_at", 0,
                                        &a->expires_at);

    } else if (ngx_http_ha_optout_ykey_is(k, "flag")) {
        return ngx_http_ha_optout_state_flag(y, fv, &a->flag);

    } else {
        return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" in an "
                                        "approval", k->data.scalar.length,
                                        k->data.scalar.value);
    }

    return NGX_OK;
}


/* "approvals": { ID: {upstream, method, needed, ..., flag}, ... } */

static ngx_int_t
ngx_http_ha_optout_state_parse_approvals(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_state_t *st)
{
    yaml_node_t                    *key, *val;
    yaml_node_pair_t               *p, *fp;
    ngx_http_ha_optout_approval_t  *a;

    if (ngx_http_ha_optout_yis_null(node)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, node, "approvals") != NGX_OK) {
        return NGX_ERROR;
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        key = ngx_http_ha_optout_ynode(y, p->key);
        val = ngx_http_ha_optout_ynode(y, p->value);

        if (st->approvals.nelts == NGX_HA_OPTOUT_APPROVALS_MAX) {
            return ngx_http_ha_optout_yfail(y, key, "more than %d "
                                            "approvals",
                                            NGX_HA_OPTOUT_APPROVALS_MAX);
        }

        a = ngx_array_push(&st->approvals);
        if (a == NULL) {
            return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
        }

        ngx_memzero(a, sizeof(ngx_http_ha_optout_approval_t));

        if (ngx_http_ha_optout_approval_id(y, key, a) != NGX_OK
            || ngx_http_ha_optout_ymapping(y, val, "an approval") != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (fp = val->data.mapping.pairs.start;
             fp < val->data.mapping.pairs.top;
             fp++)
        {
            if (ngx_http_ha_optout_approval_field(y,
                    ngx_http_ha_optout_ynode(y, fp->key),
                    ngx_http_ha_optout_ynode(y, fp->value), a)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (a->upstream_len == 0 || a->method == 0 || a->needed == 0
            || a->expires_at == 0 || !a->flag.present)
        {
            return ngx_http_ha_optout_yfail(y, val, "an approval needs "
                                            "upstream, method, needed, "
                                            "expires_at and flag");
        }

        if (a->flag.approvers >= a->needed) {
            return ngx_http_ha_optout_yfail(y, val, "an approval with all "
                                            "its approvals is not pending");
        }
    }

    return NGX_OK;
}


/*
 * one key of a saved flag; *seen: 1 a reason, 2 expires_at was read
 *
 * Longer than a screen: one branch per key of a flag, as the API has them.
 */

static ngx_int_t
ngx_http_ha_optout_state_flag_key(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *k, yaml_node_t *val, ngx_http_ha_optout_flag_t *f,
    ngx_uint_t *seen)
{
    uint64_t   v;
    ngx_int_t  rc;

    rc = ngx_http_ha_optout_yflag_field(y, k, val, f);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_OK) {
        if (f->reason_len) {
            *seen |= 1;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "actor")) {
        if (ngx_http_ha_optout_ystr(y, val, "actor", f->actor,
                                    &f->actor_len, 0,
                                    NGX_HA_OPTOUT_ACTOR_LEN)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "version")) {
        if (ngx_http_ha_optout_yuint(y, val, "version", &v) != NGX_OK) {
            return NGX_ERROR;
        }

        f->version = v;

    } else if (ngx_http_ha_optout_ykey_is(k, "revision")) {
        if (ngx_http_ha_optout_yuint(y, val, "revision", &v) != NGX_OK) {
            return NGX_ERROR;
        }

        f->revision = v;

    } else if (ngx_http_ha_optout_ykey_is(k, "via")) {
        if (ngx_http_ha_optout_ystr(y, val, "via", f->via, &f->via_len,
                                    0, NGX_HA_OPTOUT_VIA_LEN)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "set_at")) {
        if (ngx_http_ha_optout_ytime(y, val, "set_at", 1, &f->set_at)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_ha_optout_ykey_is(k, "expires_at")) {
        if (ngx_http_ha_optout_ytime(y, val, "expires_at", 1,
                                     &f->expires_at)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        *seen |= 2;

    } else if (ngx_http_ha_optout_ykey_is(k, "approved_by")) {
        if (ngx_http_ha_optout_state_approvers(y, val, f) != NGX_OK) {
            return NGX_ERROR;
        }

    } else {
        return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\" in "
                                        "a flag",
                                        k->data.scalar.length,
                                        k->data.scalar.value);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_state_flag(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_flag_t *f)
{
    ngx_uint_t         seen;
    yaml_node_pair_t  *p;

    if (ngx_http_ha_optout_ymapping(y, node, "a flag") != NGX_OK) {
        return NGX_ERROR;
    }

    seen = 0;

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        if (ngx_http_ha_optout_state_flag_key(y,
                ngx_http_ha_optout_ynode(y, p->key),
                ngx_http_ha_optout_ynode(y, p->value), f, &seen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (seen != 3) {
        return ngx_http_ha_optout_yfail(y, node, "a flag needs \"reason\" "
                                        "and \"expires_at\"");
    }

    if (f->selector_len && f->pin_len == 0) {
        return ngx_http_ha_optout_yfail(y, node, "pin_selector requires "
                                        "pin");
    }

    if (!(f->no_failover || f->no_replication || f->sticky || f->pin_len)) {
        return ngx_http_ha_optout_yfail(y, node, "the flag opts out of "
                                        "nothing");
    }

    f->present = 1;
    f->source = NGX_HA_OPTOUT_SRC_API;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ha_optout_is_hash(u_char *p, size_t len)
{
    size_t  i;

    if (len != 64) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_ha_optout_unhex(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/*
 * "windows_ended": { FP-START: END, ... }, see emit_wskips()
 *
 * Longer than a screen: the key is scanned in place (hex, dash, digits)
 * before its value is checked, and the two read as one entry.
 */

static ngx_int_t
ngx_http_ha_optout_state_parse_wskips(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_state_t *st)
{
    u_char                      *dash, *d;
    size_t                       i, len;
    uint64_t                     end;
    ngx_int_t                    hi;
    int64_t                      fp, start;
    yaml_node_t                 *k;
    yaml_node_pair_t            *p;
    ngx_http_ha_optout_wskip_t  *w;

    if (ngx_http_ha_optout_yis_null(node)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, node, "windows_ended") != NGX_OK) {
        return NGX_ERROR;
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        d = k->data.scalar.value;
        len = k->data.scalar.length;
        dash = ngx_strlchr(d, d + len, '-');

        fp = 0;
        start = 0;

        for (i = 0; dash && d + i < dash; i++) {
            hi = ngx_http_ha_optout_unhex(d[i]);
            fp = (hi < 0) ? NGX_ERROR : fp * 16 + hi;
            if (fp < 0) {
                break;
            }
        }

        for (i = dash ? (size_t) (dash + 1 - d) : len; i < len; i++) {
            if (d[i] < '0' || d[i] > '9' || start > 100000000000LL) {
                start = NGX_ERROR;
                break;
            }

            start = start * 10 + (d[i] - '0');
        }

        if (dash == NULL || fp < 0 || dash - d != 8 || start <= 0
            || dash + 1 == d + len)
        {
            return ngx_http_ha_optout_yfail(y, k, "a windows_ended key "
                                            "must be FINGERPRINT-START "
                                            "(8 hex digits, Unix time)");
        }

        if (ngx_http_ha_optout_yuint(y, ngx_http_ha_optout_ynode(y, p->value),
                                     "a window's end", &end)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (end > (uint64_t) NGX_MAX_TIME_T_VALUE
            || (time_t) end <= start)
        {
            return ngx_http_ha_optout_yfail(y,
                                       ngx_http_ha_optout_ynode(y, p->value),
                                       "a window's end is out of range");
        }

        if (st->nwskips == NGX_HA_OPTOUT_WSKIPS) {
            continue;           /* more than the zone keeps */
        }

        w = &st->wskips[st->nwskips++];
        w->fp = (uint32_t) fp;
        w->start = (time_t) start;
        w->end = (time_t) end;
    }

    return NGX_OK;
}


/*
 * "jtis": { HEX: EXP, ... }, the spent jtis of state_save()
 *
 * Longer than a screen: a jti and its exp are one entry, unhexed and
 * bounded in one loop, as emit_jtis() writes them.
 */

static ngx_int_t
ngx_http_ha_optout_state_parse_jtis(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, ngx_http_ha_optout_state_t *st)
{
    u_char                    *d;
    size_t                     i, len;
    uint64_t                   exp;
    ngx_int_t                  hi, lo;
    ngx_str_t                  v;
    yaml_node_t               *k;
    yaml_node_pair_t          *p;
    ngx_http_ha_optout_jti_t  *j;

    if (ngx_http_ha_optout_yis_null(node)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, node, "jtis") != NGX_OK) {
        return NGX_ERROR;
    }

    if (st->jtis.elts == NULL
        && ngx_array_init(&st->jtis, y->pool, 16,
                          sizeof(ngx_http_ha_optout_jti_t))
           != NGX_OK)
    {
        return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
    }

    for (p = node->data.mapping.pairs.start;
         p < node->data.mapping.pairs.top;
         p++)
    {
        k = ngx_http_ha_optout_ynode(y, p->key);
        v.data = k->data.scalar.value;
        v.len = k->data.scalar.length;
        len = v.len / 2;

        if (v.len == 0 || v.len % 2 || len > 255) {
            return ngx_http_ha_optout_yfail(y, k, "a jti must be 1..255 "
                                            "bytes, hex encoded");
        }

        d = ngx_pnalloc(y->pool, len);
        if (d == NULL) {
            return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
        }

        for (i = 0; i < len; i++) {
            hi = ngx_http_ha_optout_unhex(v.data[2 * i]);
            lo = ngx_http_ha_optout_unhex(v.data[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                return ngx_http_ha_optout_yfail(y, k, "a jti must be 1..255 "
                                                "bytes, hex encoded");
            }

            d[i] = (u_char) (hi * 16 + lo);
        }

        if (ngx_http_ha_optout_yuint(y, ngx_http_ha_optout_ynode(y, p->value),
                                     "a jti's exp", &exp)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (exp == 0 || exp > (uint64_t) NGX_MAX_TIME_T_VALUE) {
            return ngx_http_ha_optout_yfail(y,
                                       ngx_http_ha_optout_ynode(y, p->value),
                                       "a jti's exp is out of range");
        }

        j = ngx_array_push(&st->jtis);
        if (j == NULL) {
            return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
        }

        j->jti.data = d;
        j->jti.len = len;
        j->exp = (time_t) exp;
    }

    return NGX_OK;
}


/* "flags" (the API layer) or "fleet": { UPSTREAM: FLAG, ... } */

static ngx_int_t
ngx_http_ha_optout_state_parse_flags(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *val, ngx_uint_t fleet, ngx_http_ha_optout_state_t *st)
{
    yaml_node_t                 *fk;
    yaml_node_pair_t            *fp;
    ngx_http_ha_optout_saved_t  *s;

    if (ngx_http_ha_optout_yis_null(val)) {
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ymapping(y, val, "flags") != NGX_OK) {
        return NGX_ERROR;
    }

    for (fp = val->data.mapping.pairs.start;
         fp < val->data.mapping.pairs.top;
         fp++)
    {
        fk = ngx_http_ha_optout_ynode(y, fp->key);

        if (fk->data.scalar.length == 0
            || fk->data.scalar.length >= NGX_HA_OPTOUT_NAME_LEN)
        {
            return ngx_http_ha_optout_yfail(y, fk, "invalid upstream name");
        }

        s = ngx_array_push(&st->flags);
        if (s == NULL) {
            return ngx_http_ha_optout_yfail(y, NULL, "out of memory");
        }

        ngx_memzero(s, sizeof(ngx_http_ha_optout_saved_t));

        s->upstream.len = fk->data.scalar.length;
        s->upstream.data = fk->data.scalar.value;
        if (ngx_http_ha_optout_ycopy(y, &s->upstream) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_http_ha_optout_state_flag(y,
                ngx_http_ha_optout_ynode(y, fp->value), &s->flag)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (fleet) {
            s->flag.source = NGX_HA_OPTOUT_SRC_FLEET;
        }
    }

    return NGX_OK;
}


/* one key of the file's top mapping; *version: "version" was read */

static ngx_int_t
ngx_http_ha_optout_state_key(ngx_http_ha_optout_yaml_t *y, yaml_node_t *k,
    yaml_node_t *val, ngx_http_ha_optout_state_t *st, ngx_uint_t *version)
{
    time_t     t;
    uint64_t   v;
    ngx_str_t  hv;

    if (ngx_http_ha_optout_ykey_is(k, "version")) {
        if (ngx_http_ha_optout_yuint(y, val, "version", &v) != NGX_OK) {
            return NGX_ERROR;
        }

        if (v != NGX_HA_OPTOUT_STATE_VERSION) {
            return ngx_http_ha_optout_yfail(y, val, "unsupported state "
                                            "file version %uL", v);
        }

        *version = 1;
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ykey_is(k, "version_seq")) {
        return ngx_http_ha_optout_yuint(y, val, "version_seq",
                                        &st->version_seq);
    }

    if (ngx_http_ha_optout_ykey_is(k, "saved_at")) {
        return ngx_http_ha_optout_ytime(y, val, "saved_at", 1, &t);
    }

    if (ngx_http_ha_optout_ykey_is(k, "audit_hash")) {
        if (ngx_http_ha_optout_yscalar(y, val, "audit_hash", &hv)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (!ngx_http_ha_optout_is_hash(hv.data, hv.len)) {
            return ngx_http_ha_optout_yfail(y, val, "audit_hash must be "
                                            "64 lowercase hex digits");
        }

        ngx_memcpy(st->audit_hash, hv.data, 64);
        st->audit_hash[64] = '\0';
        return NGX_OK;
    }

    if (ngx_http_ha_optout_ykey_is(k, "windows_ended")) {
        return ngx_http_ha_optout_state_parse_wskips(y, val, st);
    }

    if (ngx_http_ha_optout_ykey_is(k, "jtis")) {
        return ngx_http_ha_optout_state_parse_jtis(y, val, st);
    }

    if (ngx_http_ha_optout_ykey_is(k, "approvals")) {
        return ngx_http_ha_optout_state_parse_approvals(y, val, st);
    }

    if (ngx_http_ha_optout_ykey_is(k, "flags")
        || ngx_http_ha_optout_ykey_is(k, "fleet"))
    {
        return ngx_http_ha_optout_state_parse_flags(y, val,
                   ngx_http_ha_optout_ykey_is(k, "fleet"), st);
    }

    return ngx_http_ha_optout_yfail(y, k, "unknown key \"%*s\"",
                                    k->data.scalar.length,
                                    k->data.scalar.value);
}


static ngx_int_t
ngx_http_ha_optout_state_parse(ngx_http_ha_optout_yaml_t *y,
    ngx_http_ha_optout_state_t *st)
{
    ngx_uint_t         version;
    yaml_node_t       *root;
    yaml_node_pair_t  *p;

    root = yaml_document_get_root_node(&y->doc);

    if (root == NULL) {
        return ngx_http_ha_optout_yfail(y, NULL, "the file is empty");
    }

    if (ngx_http_ha_optout_ymapping(y, root, "the state file") != NGX_OK) {
        return NGX_ERROR;
    }

    version = 0;

    for (p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top;
         p++)
    {
        if (ngx_http_ha_optout_state_key(y,
                ngx_http_ha_optout_ynode(y, p->key),
                ngx_http_ha_optout_ynode(y, p->value), st, &version)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!version) {
        return ngx_http_ha_optout_yfail(y, root, "\"version\" is missing");
    }

    return NGX_OK;
}


/*
 * Decides what becomes of a saved flag; config only, no zone access.  An
 * API flag must also pass the policy as a write would now (allow, max_ttl
 * on the time it has left, ttl "none", protected upstreams' windows): the
 * file is written by the workers' user, and whoever can act as that user
 * could otherwise restore a flag no token may set.  A stricter policy
 * since the flag was set drops it likewise (HA comes back; the audit line
 * says why).  Fleet flags are the agents' (they are checked against etcd
 * again), approved_by cannot be proven from the file and is not judged.
 */

static void
ngx_http_ha_optout_state_judge(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_saved_t *s, time_t now, ngx_pool_t *pool)
{
    ngx_http_ha_optout_srv_conf_t  *hscf;

    hscf = ngx_http_ha_optout_find_upstream(hmcf, &s->upstream);

    if (hscf == NULL || hscf->rec == NULL) {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "the upstream has no \"ha_optout\" any more";
        return;
    }

    if (ngx_http_ha_optout_header_safe(s->flag.pin, s->flag.pin_len)
        != NGX_OK
        || ngx_http_ha_optout_header_safe(s->flag.selector,
                                          s->flag.selector_len)
           != NGX_OK)
    {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "its pin or pin_selector holds control bytes or non-ASCII";
        return;
    }

    if (s->flag.pin_len
        && ngx_http_ha_optout_upstream_peer(hscf, s->flag.pin,
                                            s->flag.pin_len, NULL, NULL)
           != NGX_OK)
    {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "its pin no longer names a usable server of the upstream";
        return;
    }

    if (s->flag.selector_len && hscf->selector == NULL) {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "the upstream has no \"ha_optout selector=\" any more";
        return;
    }

    if (s->flag.expires_at && s->flag.expires_at <= now) {
        s->action = NGX_HA_OPTOUT_ACT_EXPIRE;
        s->why = "it expired while nginx was down";
        return;
    }

    if (s->flag.source == NGX_HA_OPTOUT_SRC_API
        && ngx_http_ha_optout_policy_check(hmcf, &hscf->name, &s->flag, 0, 0,
                                           &s->policy, pool)
           != NGX_OK)
    {
        s->action = NGX_HA_OPTOUT_ACT_RESTORE_REJECTED;
        s->why = "the policy refuses it now";

        if (s->policy.data == NULL) {
            ngx_str_set(&s->policy, "the policy's refusal could not be "
                                    "written (no memory)");
        }

        return;
    }

    s->action = NGX_HA_OPTOUT_ACT_RESTORE;
    s->why = NULL;
}


static int ngx_libc_cdecl
ngx_http_ha_optout_jti_cmp(const void *one, const void *two)
{
    const ngx_http_ha_optout_jti_t  *a = one, *b = two;

    return (a->exp < b->exp) ? -1 : (a->exp > b->exp);
}


/* PATH.corrupt-<unix time>, with a suffix if that name is taken */

static u_char *
ngx_http_ha_optout_aside_name(ngx_pool_t *pool, ngx_str_t *file)
{
    u_char           *name, *p;
    ngx_uint_t        i;
    ngx_file_info_t   fi;

    name = ngx_pnalloc(pool, file->len + sizeof(".corrupt--")
                             + 2 * NGX_INT_T_LEN);
    if (name == NULL) {
        return NULL;
    }

    p = ngx_sprintf(name, "%V.corrupt-%T", file, ngx_time());

    for (i = 1; i < 1000; i++) {
        *p = '\0';

        if (ngx_link_info(name, &fi) == NGX_FILE_ERROR
            && ngx_errno == NGX_ENOENT)
        {
            return name;
        }

        p = ngx_sprintf(name, "%V.corrupt-%T-%ui", file, ngx_time(), i);
    }

    return NULL;
}


/* a restore of the state file, from its reading to its audit lines */
typedef struct {
    ngx_http_ha_optout_state_t   st;
    ngx_http_ha_optout_yaml_t   *y;
    ngx_int_t                    rc;        /* of reading the file */
    time_t                       now;
    ngx_uint_t                   nj;        /* jtis to restore */
    u_char                      *aside;     /* the corrupt file's new name */
    ngx_err_t                    err;       /* of renaming it */
    ngx_uint_t                   changed;
    ngx_uint_t                   restored_jtis;
    ngx_uint_t                   noroom;    /* approvals with no room */
} ngx_http_ha_optout_restore_t;


/*
 * The file read and judged outside the mutex (r->rc: NGX_OK, NGX_DECLINED:
 * no file, NGX_ABORT: corrupt, NGX_ERROR: unreadable), and the name it
 * gets if it is set aside.
 */

static void
ngx_http_ha_optout_restore_read(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_restore_t *r, ngx_pool_t *pool, ngx_log_t *log)
{
    ngx_uint_t                   i;
    ngx_http_ha_optout_saved_t  *s;

    r->rc = ngx_http_ha_optout_yaml_load(r->y, &hmcf->state_file, log);

    if (r->rc == NGX_OK) {
        if (ngx_http_ha_optout_state_parse(r->y, &r->st) != NGX_OK) {
            r->rc = NGX_ABORT;
        }

        yaml_document_delete(&r->y->doc);
    }

    s = r->st.flags.elts;
    r->nj = (r->rc == NGX_OK) ? r->st.jtis.nelts : 0;

    if (r->rc == NGX_OK) {
        for (i = 0; i < r->st.flags.nelts; i++) {
            ngx_http_ha_optout_state_judge(hmcf, &s[i], r->now, pool);
        }

        /* in expiry order, each goes to the end of the replay queue */

        if (r->nj > 1) {
            qsort(r->st.jtis.elts, r->nj, sizeof(ngx_http_ha_optout_jti_t),
                  ngx_http_ha_optout_jti_cmp);
        }
    }

    if (r->rc == NGX_ABORT) {
        r->aside = ngx_http_ha_optout_aside_name(pool, &hmcf->state_file);
    }
}


/* the saved flags that are to be restored, each into its layer */

static void
ngx_http_ha_optout_restore_flags_locked(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_restore_t *r)
{
    uint64_t                        max;
    ngx_uint_t                      i;
    ngx_http_ha_optout_rec_t       *rec;
    ngx_http_ha_optout_flag_t      *layer;
    ngx_http_ha_optout_saved_t     *s;
    ngx_http_ha_optout_srv_conf_t  *hscf;

    s = r->st.flags.elts;
    max = r->st.version_seq;

    for (i = 0; r->rc == NGX_OK && i < r->st.flags.nelts; i++) {
        if (s[i].action != NGX_HA_OPTOUT_ACT_RESTORE) {
            continue;
        }

        hscf = ngx_http_ha_optout_find_upstream(hmcf, &s[i].upstream);
        rec = hscf->rec;
        layer = (s[i].flag.source == NGX_HA_OPTOUT_SRC_FLEET) ? &rec->fleet
                                                             : &rec->api;

        if (layer->present) {
            /* set through the API since this start: that one is newer */
            s[i].action = NGX_HA_OPTOUT_ACT_N;
            continue;
        }

        *layer = s[i].flag;
        (void) ngx_atomic_fetch_add(
            &rec->changes[NGX_HA_OPTOUT_ACT_RESTORE], 1);
        max = ngx_max(max, s[i].flag.version);
        r->changed = 1;
    }

    if (ngx_http_ha_optout_sh->version_seq < max) {
        ngx_http_ha_optout_sh->version_seq = max;
    }
}


/*
 * spent jtis stay spent (SPEC 8): they come back before any write, those
 * that expire last first, at most NGX_HA_OPTOUT_STATE_JTIS and a quarter
 * of the zone, so that new writes still find room
 */

static void
ngx_http_ha_optout_restore_jtis_locked(ngx_http_ha_optout_restore_t *r)
{
    ngx_uint_t                 i, room;
    ngx_http_ha_optout_jti_t  *j;

    j = r->st.jtis.elts;

    room = (ngx_uint_t) (ngx_http_ha_optout_shpool->end
                         - (u_char *) ngx_http_ha_optout_shpool)
           / 4 / 128;
    room = ngx_min(room, NGX_HA_OPTOUT_STATE_JTIS);

    for (i = (r->nj > room) ? r->nj - room : 0; i < r->nj; i++) {
        if (j[i].exp + NGX_HA_OPTOUT_LEEWAY <= r->now) {
            continue;
        }

        if (ngx_http_ha_optout_replay_check_locked(&j[i].jti, j[i].exp,
                                                   r->now)
            == NGX_BUSY)
        {
            break;
        }

        r->restored_jtis++;
    }
}


/*
 * Under the mutex, with "restored" checked again: the file is set aside or
 * its content goes into the zone.  NGX_DECLINED: another process did it.
 *
 * Longer than a screen: the one stretch under the mutex, in the order
 * the zone must see it; its larger parts are steps of their own.
 */

static ngx_int_t
ngx_http_ha_optout_restore_locked(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_restore_t *r, ngx_log_t *log)
{
    ngx_int_t                       arc;
    ngx_uint_t                      i;
    ngx_http_ha_optout_state_t     *st;
    ngx_http_ha_optout_shctx_t     *sh;
    ngx_http_ha_optout_approval_t  *ap;

    sh = ngx_http_ha_optout_sh;
    st = &r->st;

    if (sh->restored) {
        return NGX_DECLINED;
    }

    if (r->rc == NGX_OK && st->audit_hash[0]) {
        /* the log cut while nginx was stopped: said before any new line */
        ngx_http_ha_optout_audit_gap_locked(hmcf, st->audit_hash, log);
    }

    if (r->rc == NGX_ABORT) {
        if (r->aside == NULL
            || ngx_rename_file(hmcf->state_file.data, r->aside)
               == NGX_FILE_ERROR)
        {
            r->err = r->aside ? ngx_errno : 0;
            r->aside = NULL;
        }
    }

    ngx_http_ha_optout_restore_flags_locked(hmcf, r);

    /* ended and skipped window occurrences stay so */

    for (i = 0; r->rc == NGX_OK && i < st->nwskips; i++) {
        if (st->wskips[i].end > r->now && sh->nwskips < NGX_HA_OPTOUT_WSKIPS)
        {
            sh->wskips[sh->nwskips++] = st->wskips[i];
        }
    }

    ngx_http_ha_optout_restore_jtis_locked(r);

    /*
     * a log that was empty or gone at start (rotated away): the chain
     * continues from the hash the state file saw last
     */

    if (r->rc == NGX_OK && st->audit_hash[0] && sh->audit_count == 0
        && ngx_strncmp(sh->audit_hash, ngx_http_ha_optout_zero_hash, 64)
           == 0)
    {
        ngx_memcpy(sh->audit_hash, st->audit_hash, 65);
    }

    /*
     * pending approvals (policy "approvers") come back in the same
     * section: a listing that sees "restored" sees them too.  Those
     * expired are audited below; id 0 marks one done here.
     */

    for (i = 0; r->rc == NGX_OK && i < st->approvals.nelts; i++) {
        ap = &((ngx_http_ha_optout_approval_t *) st->approvals.elts)[i];

        arc = ngx_http_ha_optout_approval_restore(hmcf, ap, r->now, log, 1);

        if (arc != NGX_ABORT) {
            r->noroom += (arc == NGX_DECLINED);
            ap->id = 0;
        }
    }

    sh->restored = 1;

    if (r->changed) {
        ngx_http_ha_optout_bump();
    }

    return NGX_OK;
}


/* a file that could not be used: said; NGX_ERROR: nothing more to do */

static ngx_int_t
ngx_http_ha_optout_restore_failed(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_restore_t *r, ngx_log_t *log)
{
    ngx_http_ha_optout_yaml_t  *y;

    y = r->y;

    if (r->rc == NGX_ABORT) {
        if (r->aside) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "ha_optout: state file \"%V\" is corrupt "
                          "(%V:%ui:%ui: %*s); it was renamed to \"%s\" and "
                          "nginx starts with HA fully on (no flags)",
                          &hmcf->state_file, &hmcf->state_file, y->line,
                          y->column, y->err_len, y->err, r->aside);
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_ALERT, log, r->err,
                      "ha_optout: state file \"%V\" is corrupt "
                      "(%V:%ui:%ui: %*s) and could not be renamed "
                      "aside; nginx starts with HA fully on (no flags)",
                      &hmcf->state_file, &hmcf->state_file, y->line,
                      y->column, y->err_len, y->err);
        return NGX_ERROR;
    }

    if (r->rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: state file \"%V\" cannot be read (%*s); "
                      "nginx starts with HA fully on (no flags)",
                      &hmcf->state_file, y->err_len, y->err);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* what became of a saved flag, in the audit log and error_log */

static void
ngx_http_ha_optout_restore_audit(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_saved_t *s, time_t now, ngx_log_t *log)
{
    u_char                          name[NGX_HA_OPTOUT_NAME_LEN * 4];
    u_char                          cbuf[2048];
    ngx_str_t                       actor, reason, cause;
    ngx_http_ha_optout_srv_conf_t  *hscf;

    actor.data = s->flag.actor;
    actor.len = s->flag.actor_len;
    reason.data = s->flag.reason;
    reason.len = s->flag.reason_len;

    switch (s->action) {

    case NGX_HA_OPTOUT_ACT_RESTORE:
        ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_RESTORE,
                                 &s->upstream, &actor, NULL, &reason,
                                 NULL, &s->flag, NULL);
        break;

    case NGX_HA_OPTOUT_ACT_EXPIRE:
    case NGX_HA_OPTOUT_ACT_RESTORE_REJECTED:
        /* the name is the file's text: escaped, one line */
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: saved flag of \"%*s\" dropped: %s%s%V",
                      (size_t) (ngx_http_ha_optout_escape(name,
                                    sizeof(name), s->upstream.data,
                                    s->upstream.len) - name),
                      name, s->why, s->policy.len ? ": " : "", &s->policy);

        hscf = ngx_http_ha_optout_find_upstream(hmcf, &s->upstream);

        if (hscf && hscf->rec) {
            (void) ngx_atomic_fetch_add(&hscf->rec->changes[s->action], 1);
        }

        /* the audit line says why, in its "cause" */
        cause.data = cbuf;

        if (s->policy.len) {
            cause.len = ngx_slprintf(cbuf, cbuf + sizeof(cbuf),
                                     "refused by policy now: %V", &s->policy)
                        - cbuf;

        } else {
            cause.len = ngx_http_ha_optout_drop_cause(cbuf,
                                                      cbuf + sizeof(cbuf),
                                                      hscf, &s->upstream,
                                                      &s->flag, now)
                        - cbuf;
        }

        ngx_http_ha_optout_audit_cause(hmcf, log, s->action, &s->upstream,
                                       &actor, NULL, &reason, &s->flag,
                                       NULL, NULL, &cause);
        break;

    default:
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ha_optout: saved flag of \"%V\" not restored: a "
                      "newer one was set through the API", &s->upstream);
    }
}


/* pending approvals (policy "approvers"): back, or audited expired */

static void
ngx_http_ha_optout_restore_approvals(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_restore_t *r, ngx_log_t *log)
{
    ngx_uint_t                      i;
    ngx_http_ha_optout_approval_t  *ap;

    for (i = 0; r->rc == NGX_OK && i < r->st.approvals.nelts; i++) {
        ap = &((ngx_http_ha_optout_approval_t *) r->st.approvals.elts)[i];

        if (ap->id) {
            (void) ngx_http_ha_optout_approval_restore(hmcf, ap, r->now, log,
                                                       0);
        }
    }

    if (r->noroom) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: no room in the zone for %ui pending "
                      "approvals of \"%V\"", r->noroom, &hmcf->state_file);
    }
}


/*
 * Worker 0, while the zone is fresh (start, restart, zone resize): puts the
 * saved API flags back.  The file is read outside the zone's mutex; the
 * flags are applied, and a corrupt file is renamed aside, under it with
 * "restored" checked again, so that exactly one process does either.
 *
 * Longer than a screen: its parts are steps already (read, restore_locked,
 * failed, audit, approvals); what is left is their order and one pool.
 */

void
ngx_http_ha_optout_state_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    ngx_int_t                       rc;
    ngx_uint_t                      i;
    ngx_pool_t                     *pool;
    ngx_http_ha_optout_shctx_t     *sh;
    ngx_http_ha_optout_saved_t     *s;
    ngx_http_ha_optout_restore_t    r;

    sh = ngx_http_ha_optout_sh;

    if (sh->restored) {
        return;
    }

    if (hmcf->state_file.len == 0) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        sh->restored = 1;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        return;
    }

    pool = ngx_create_pool(16384, log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(&r, sizeof(ngx_http_ha_optout_restore_t));

    r.y = ngx_pcalloc(pool, sizeof(ngx_http_ha_optout_yaml_t));
    if (r.y == NULL
        || ngx_array_init(&r.st.flags, pool, 8,
                          sizeof(ngx_http_ha_optout_saved_t))
           != NGX_OK
        || ngx_array_init(&r.st.approvals, pool, 4,
                          sizeof(ngx_http_ha_optout_approval_t))
           != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return;
    }

    r.y->pool = pool;
    r.y->nofollow = 1;
    r.now = ngx_time();

    ngx_http_ha_optout_restore_read(hmcf, &r, pool, log);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    rc = ngx_http_ha_optout_restore_locked(hmcf, &r, log);
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (rc == NGX_DECLINED
        || ngx_http_ha_optout_restore_failed(hmcf, &r, log) != NGX_OK)
    {
        ngx_destroy_pool(pool);
        return;
    }

    if (r.restored_jtis) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "ha_optout: %ui spent jtis restored from \"%V\"",
                      r.restored_jtis, &hmcf->state_file);
    }

    s = r.st.flags.elts;

    for (i = 0; r.rc == NGX_OK && i < r.st.flags.nelts; i++) {
        ngx_http_ha_optout_restore_audit(hmcf, &s[i], r.now, log);
    }

    ngx_http_ha_optout_restore_approvals(hmcf, &r, log);

    ngx_destroy_pool(pool);

    /* the file now says what the zone holds: dropped flags disappear */

    (void) ngx_http_ha_optout_state_save(hmcf, log);
}
