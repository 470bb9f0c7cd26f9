
/*
 * ngx_ha_optout_module: the audit trail.  One JSON object per line with a
 * SHA-256 hash chain, a ring of recent lines in the zone for v1/audit, and
 * an error_log line for every suspension and restoration.
 *
 * Chain: the line is written as {..., "prev_hash": "<hex>", "hash":
 * "<hex>"}; "hash" is the SHA-256 of the same line without its
 * ', "hash": "<hex>"' member, and "prev_hash" is the previous line's hash
 * (64 zeros for the first line of a log).
 *
 * The chain is one across restarts, zone resizes and log rotation: a fresh
 * zone continues from the last line of the existing log (read once, at
 * start, by the master: only its tail), or, when the log is empty or
 * gone (rotated away), from the hash the state file holds; "nginx -s
 * reopen" changes only the file, the zone keeps the last hash.
 */


#include "ngx_http_ha_optout_module.h"

#include <jansson.h>
#include <openssl/evp.h>


static void ngx_http_ha_optout_audit_warn(ngx_log_t *log, ngx_uint_t action,
    ngx_str_t *upstream, ngx_str_t *actor, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *flag);


static json_t *
ngx_http_ha_optout_audit_str(ngx_str_t *s)
{
    return (s && s->len) ? json_stringn((char *) s->data, s->len)
                         : json_null();
}


static void
ngx_http_ha_optout_sha256_hex(u_char *data, size_t len, u_char *hex)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  n;

    n = 0;

    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1) {
        n = 0;
    }

    ngx_hex_dump(hex, md, n);
    hex[2 * n] = '\0';
}


void
ngx_http_ha_optout_audit(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id)
{
    u_char                      *line, *p, *copy, **slot;
    u_char                       now[sizeof("2026-11-27T10:00:00Z")];
    u_char                       hash[65];
    char                        *s;
    size_t                       len, n;
    json_t                      *json;
    ngx_http_ha_optout_shctx_t  *sh;

    ngx_http_ha_optout_audit_warn(log, action, upstream, actor, reason,
                                  after ? after : before);

    json = json_pack("{s:s%,s:s%,s:s,s:s%,s:o,s:o,s:o,s:o,s:o,s:o}",
                     "time", now, ngx_http_ha_optout_time_iso(now, ngx_time())
                                  - now,
                     "environment", hmcf->environment.data,
                     hmcf->environment.len,
                     "action", ngx_http_ha_optout_actions[action],
                     "upstream", upstream->data, upstream->len,
                     "actor", ngx_http_ha_optout_audit_str(actor),
                     "client", ngx_http_ha_optout_audit_str(client),
                     "reason", ngx_http_ha_optout_audit_str(reason),
                     "before", ngx_http_ha_optout_flag_json(before, upstream,
                                                      &hmcf->environment),
                     "after", ngx_http_ha_optout_flag_json(after, upstream,
                                                      &hmcf->environment),
                     "request_id", ngx_http_ha_optout_audit_str(request_id));
    if (json == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: audit record could not be built");
        return;
    }

    /* built outside the lock: only the chain is made under it */

    s = json_dumps(json, 0);
    json_decref(json);

    if (s == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: audit record could not be built");
        return;
    }

    len = ngx_strlen(s);
    n = len - 1 + sizeof(", \"prev_hash\": \"\", \"hash\": \"\"}\n") - 1
        + 2 * 64;

    line = ngx_alloc(n + 1, log);
    if (line == NULL) {
        free(s);
        return;
    }

    sh = ngx_http_ha_optout_sh;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    p = ngx_cpymem(line, s, len - 1);
    p = ngx_sprintf(p, ", \"prev_hash\": \"%s\"}", sh->audit_hash);
    free(s);

    ngx_http_ha_optout_sha256_hex(line, p - line, hash);

    p--;
    p = ngx_sprintf(p, ", \"hash\": \"%s\"}\n", hash);

    if (hmcf->audit_log && hmcf->audit_log->fd != NGX_INVALID_FILE) {
        if (ngx_write_fd(hmcf->audit_log->fd, line, p - line)
            != (ssize_t) (p - line))
        {
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          "ha_optout: audit line could not be written to "
                          "\"%V\"", &hmcf->audit_log->name);
        }
    }

    ngx_memcpy(sh->audit_hash, hash, 65);

    /* a write's audit line is its last step: it is no longer pending */

    if (sh->pending.pid == ngx_pid) {
        sh->pending.pid = 0;
    }

    /* the ring for GET v1/audit; an old line gives way */

    slot = &sh->audit_ring[sh->audit_next];

    if (*slot) {
        ngx_slab_free_locked(ngx_http_ha_optout_shpool, *slot);
        *slot = NULL;
    }

    copy = ngx_slab_alloc_locked(ngx_http_ha_optout_shpool, p - line);

    while (copy == NULL && ngx_http_ha_optout_make_room_locked()) {
        copy = ngx_slab_alloc_locked(ngx_http_ha_optout_shpool, p - line);
    }

    if (copy) {
        ngx_memcpy(copy, line, p - line - 1);
        copy[p - line - 1] = '\0';
        *slot = copy;
        sh->audit_next = (sh->audit_next + 1) % NGX_HA_OPTOUT_AUDIT_RING;
        sh->audit_count++;
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ngx_free(line);
}


static void
ngx_http_ha_optout_audit_warn(ngx_log_t *log, ngx_uint_t action,
    ngx_str_t *upstream, ngx_str_t *actor, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *flag)
{
    u_char      text[NGX_HA_OPTOUT_TEXT_LEN];
    u_char      until[sizeof("2026-11-27T10:00:00Z")];
    u_char      ubuf[NGX_HA_OPTOUT_NAME_LEN * 4];
    u_char      abuf[NGX_HA_OPTOUT_ACTOR_LEN * 4];
    u_char      rbuf[NGX_HA_OPTOUT_REASON_LEN * 4];
    size_t      len, ulen;
    ngx_str_t   empty = ngx_string("-");
    ngx_str_t   u, a, r;
    const char *what;

    actor = (actor && actor->len) ? actor : &empty;
    reason = (reason && reason->len) ? reason : &empty;

    /*
     * sub, reason and a name from a state file are anyone's text: escaped,
     * so that a newline cannot forge a line of error_log (SPEC section 8)
     */

    u.data = ubuf;
    u.len = ngx_http_ha_optout_escape(ubuf, sizeof(ubuf), upstream->data,
                                      upstream->len) - ubuf;
    a.data = abuf;
    a.len = ngx_http_ha_optout_escape(abuf, sizeof(abuf), actor->data,
                                      actor->len) - abuf;
    r.data = rbuf;
    r.len = ngx_http_ha_optout_escape(rbuf, sizeof(rbuf), reason->data,
                                      reason->len) - rbuf;

    upstream = &u;
    actor = &a;
    reason = &r;

    switch (action) {

    case NGX_HA_OPTOUT_ACT_SET:
    case NGX_HA_OPTOUT_ACT_UPDATE:
    case NGX_HA_OPTOUT_ACT_WINDOW_START:
    case NGX_HA_OPTOUT_ACT_RESTORE:
        len = flag ? ngx_http_ha_optout_flag_text(flag, text) : 0;

        if (flag && flag->expires_at) {
            ulen = ngx_http_ha_optout_time_iso(until, flag->expires_at)
                   - until;
        } else {
            ulen = sizeof("(no ttl)") - 1;
            ngx_memcpy(until, "(no ttl)", ulen);
        }

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: availability protections suspended on "
                      "\"%V\" by \"%V\" (%s): %*s, reason \"%V\", until %*s",
                      upstream, actor, ngx_http_ha_optout_actions[action],
                      len, text, reason, ulen, until);
        return;

    case NGX_HA_OPTOUT_ACT_CLEAR:
    case NGX_HA_OPTOUT_ACT_EXPIRE:
    case NGX_HA_OPTOUT_ACT_WINDOW_END:
        what = ngx_http_ha_optout_actions[action];

        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: availability protections restored on "
                      "\"%V\" (%s, flag set by \"%V\", reason \"%V\")",
                      upstream, what, actor, reason);
        return;

    default:
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: %s on \"%V\" by \"%V\", reason \"%V\"",
                      ngx_http_ha_optout_actions[action], upstream, actor,
                      reason);
    }
}


/*
 * The log ends inside a line: a write was cut (a full disk, a crash).  The
 * next line would be glued to the piece and neither would verify, so the
 * piece, which holds no hash and proves nothing, is cut off (not when
 * only testing the configuration), and the error log says so.
 */

static void
ngx_http_ha_optout_audit_untear(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_file_info_t *fi, size_t piece, ngx_log_t *log)
{
    ngx_fd_t         fd;
    ngx_file_info_t  wfi;

    fd = hmcf->audit_log->fd;

    if (ngx_test_config || fd == NGX_INVALID_FILE
        || ngx_fd_info(fd, &wfi) == NGX_FILE_ERROR
        || wfi.st_dev != fi->st_dev || wfi.st_ino != fi->st_ino
        || ngx_file_size(&wfi) != ngx_file_size(fi)
        || ftruncate(fd, ngx_file_size(fi) - (off_t) piece) == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: the audit log \"%V\" ends inside a line "
                      "(%uz bytes of a cut write); the chain continues from "
                      "the last whole line", &hmcf->audit_log->name, piece);
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "ha_optout: the audit log \"%V\" ends inside a line "
                  "(%uz bytes of a cut write): they were removed, and the "
                  "chain continues from the last whole line",
                  &hmcf->audit_log->name, piece);
}


/*
 * A fresh zone: the chain continues from the last line of the log.  Only
 * its tail is read (the log may be large), with O_NONBLOCK and only if it
 * is a regular file.  A log that ends inside a line (a crash while it was
 * written) continues from the last whole line.
 */

#define NGX_HA_OPTOUT_AUDIT_TAIL  (4 * NGX_HA_OPTOUT_AUDIT_LINE)

void
ngx_http_ha_optout_audit_chain_init(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_shctx_t *sh, ngx_log_t *log)
{
    u_char           *buf, *last, *start, *p;
    off_t             size, from;
    size_t            len;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_uint_t        i, torn, level;
    const char       *why;
    ngx_file_info_t   fi;

    static const char  member[] = ", \"hash\": \"";

    if (hmcf->audit_log == NULL) {
        return;
    }

    fd = ngx_http_ha_optout_open_regular(hmcf->audit_log->name.data, 0, &fi,
                                         &why);

    if (fd == NGX_INVALID_FILE) {
        if (why) {
            /* /dev/stdout or a pipe (a container's log) is not an error */

            level = (ngx_strncmp(why, "not a regular", 13) == 0)
                    ? NGX_LOG_NOTICE : NGX_LOG_ALERT;

            ngx_log_error(level, log, 0,
                          "ha_optout: audit log \"%V\": %s; its chain "
                          "cannot be continued and starts again",
                          &hmcf->audit_log->name, why);
        }

        return;
    }

    size = ngx_file_size(&fi);

    if (size == 0) {
        ngx_close_file(fd);
        return;
    }

    buf = ngx_alloc(NGX_HA_OPTOUT_AUDIT_TAIL, log);
    if (buf == NULL) {
        ngx_close_file(fd);
        return;
    }

    from = ngx_max(0, size - NGX_HA_OPTOUT_AUDIT_TAIL);

    n = pread(fd, buf, (size_t) (size - from), from);

    ngx_close_file(fd);

    if (n <= 0) {
        ngx_log_error(NGX_LOG_ALERT, log, n ? ngx_errno : 0,
                      "ha_optout: audit log \"%V\" cannot be read; its "
                      "chain starts again", &hmcf->audit_log->name);
        ngx_free(buf);
        return;
    }

    /* the last whole line: [start, last) without its "\n" */

    last = buf + n;
    torn = (last[-1] != '\n');

    while (last > buf && last[-1] != '\n') {
        last--;
    }

    if (last > buf) {
        last--;
    }

    start = last;

    while (start > buf && start[-1] != '\n') {
        start--;
    }

    len = sizeof(member) - 1 + 64 + 2;
    p = last - ngx_min(len, (size_t) (last - buf));

    if (last == buf || (start == buf && from > 0)
        || (size_t) (last - start) < len
        || ngx_strncmp(p, member, sizeof(member) - 1) != 0
        || ngx_strncmp(last - 2, "\"}", 2) != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: the last line of the audit log \"%V\" "
                      "has no hash; its chain starts again (\"ha-optoutctl "
                      "audit verify\" will show where)",
                      &hmcf->audit_log->name);
        ngx_free(buf);
        return;
    }

    p += sizeof(member) - 1;

    for (i = 0; i < 64; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "ha_optout: the last line of the audit log "
                          "\"%V\" has no valid hash; its chain starts "
                          "again", &hmcf->audit_log->name);
            ngx_free(buf);
            return;
        }
    }

    ngx_memcpy(sh->audit_hash, p, 64);
    sh->audit_hash[64] = '\0';

    if (torn) {
        ngx_http_ha_optout_audit_untear(hmcf, &fi,
                                        (size_t) (buf + n - (last + 1)),
                                        log);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "ha_optout: audit chain of \"%V\" continues from %s",
                   &hmcf->audit_log->name, sh->audit_hash);

    ngx_free(buf);
}


/*
 * A writer killed between its change and its audit line leaves the change
 * pending in the zone.  The next writer to take the writer lock (a live
 * writer always clears its own before releasing it) writes the line for
 * it, marked so, and saves the state file that the dead writer may not
 * have saved.
 */

void
ngx_http_ha_optout_audit_recover(void)
{
    u_char                           text[NGX_HA_OPTOUT_REASON_LEN + 64];
    u_char                           abuf[NGX_HA_OPTOUT_ACTOR_LEN * 4];
    ngx_str_t                        upstream, actor, reason;
    ngx_http_ha_optout_flag_t       *f;
    ngx_http_ha_optout_pending_t     p;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (ngx_http_ha_optout_sh->pending.pid == 0) {
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        return;
    }

    p = ngx_http_ha_optout_sh->pending;
    ngx_http_ha_optout_sh->pending.pid = 0;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_ha_optout_module);
    if (hmcf == NULL) {
        return;
    }

    f = p.after.present ? &p.after : &p.before;

    upstream.data = p.upstream;
    upstream.len = p.upstream_len;
    actor.data = f->actor;
    actor.len = f->actor_len;
    reason.data = text;
    reason.len = ngx_snprintf(text, sizeof(text), "%*s (audited after "
                              "process %P, which made it, died)",
                              (size_t) f->reason_len, f->reason, p.pid)
                 - text;

    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                  "ha_optout: the %s of \"%V\" by \"%*s\" was made by "
                  "process %P, which died before auditing it",
                  ngx_http_ha_optout_actions[p.action], &upstream,
                  (size_t) (ngx_http_ha_optout_escape(abuf, sizeof(abuf),
                                                      actor.data, actor.len)
                            - abuf),
                  abuf, p.pid);

    ngx_http_ha_optout_audit(hmcf, ngx_cycle->log, p.action, &upstream,
                             &actor, NULL, &reason,
                             p.before.present ? &p.before : NULL,
                             p.after.present ? &p.after : NULL, NULL);

    (void) ngx_http_ha_optout_state_save(hmcf, ngx_cycle->log);
}
