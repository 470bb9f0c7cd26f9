
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
 *
 * Over 1,000 lines: the line's queue, its chain, its write (cut back when
 * torn) and the continuation of the chain at start (the tail of the log,
 * a gap, a torn last line) are one mechanism, each step a short function.
 */


#include "ngx_http_ha_optout_module.h"

#include <jansson.h>
#include <openssl/evp.h>


static void ngx_http_ha_optout_audit_warn(ngx_log_t *log, ngx_uint_t action,
    ngx_str_t *upstream, ngx_str_t *actor, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *flag);
static char *ngx_http_ha_optout_audit_build_cause(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_log_t *log, ngx_uint_t action,
    ngx_str_t *upstream, ngx_str_t *actor, ngx_str_t *client,
    ngx_str_t *reason, ngx_http_ha_optout_flag_t *before,
    ngx_http_ha_optout_flag_t *after, ngx_str_t *request_id,
    ngx_str_t *cause);


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


/*
 * The JSON object of an audit line, without its chain members (malloc()ed,
 * free() it), or NULL (alerted).
 */

char *
ngx_http_ha_optout_audit_build(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id)
{
    return ngx_http_ha_optout_audit_build_cause(hmcf, log, action, upstream,
                                                actor, client, reason, before,
                                                after, request_id, NULL);
}


/*
 * cause: why a restore (or the reload after it) dropped a flag, as the
 * "cause" member after the others; NULL: none, the line as before
 */

static char *
ngx_http_ha_optout_audit_build_cause(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id, ngx_str_t *cause)
{
    u_char                      now[sizeof("2026-11-27T10:00:00Z")];
    char                       *s;
    json_t                     *json;
    ngx_http_ha_optout_flag_t  *fl;

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
        return NULL;
    }

    /*
     * the layer the change is in; a fleet change also names the etcd
     * revision and the agent ("via"), even when the flag itself is absent
     * (a refused record is audited with an empty flag of the fleet layer)
     */

    fl = after ? after : before;

    if (fl) {
        json_object_set_new(json, "layer",
                            json_string(fl->source == NGX_HA_OPTOUT_SRC_FLEET
                                        ? "fleet"
                                        : fl->source == NGX_HA_OPTOUT_SRC_API
                                        ? "api"
                                        : fl->source
                                          == NGX_HA_OPTOUT_SRC_WINDOW
                                        ? "window" : "config"));

        if (fl->source == NGX_HA_OPTOUT_SRC_FLEET) {
            json_object_set_new(json, "revision",
                                json_integer((json_int_t) fl->revision));
            json_object_set_new(json, "via",
                                json_stringn((char *) fl->via, fl->via_len));
        }
    }

    if (cause && cause->len) {
        json_object_set_new(json, "cause",
                            json_stringn((char *) cause->data, cause->len));
    }

    s = json_dumps(json, 0);
    json_decref(json);

    if (s == NULL || s[0] != '{' || ngx_strlen(s) < 2) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: audit record could not be built");
        free(s);
        return NULL;
    }

    return s;
}


/*
 * Every audit line goes through a queue in the zone, in the order of the
 * changes, and is written from its head by the holder of the writer lock
 * only: so its place in the hash chain is decided when it is written, and a
 * line that cannot be written yet (the log's directory is full, a FIFO
 * stalls, the writer lock is busy) waits there and is retried by worker 0's
 * timer, never cut and never lost without an alert.  The queue is bounded
 * (NGX_HA_OPTOUT_AUDIT_PENDING lines, and the zone): past it a line is given
 * up, in full, to error_log at "alert".
 */

ngx_http_ha_optout_audit_line_t *
ngx_http_ha_optout_audit_enqueue_locked(char *body)
{
    size_t                            len, size;
    ngx_http_ha_optout_shctx_t       *sh;
    ngx_http_ha_optout_audit_line_t  *line;

    sh = ngx_http_ha_optout_sh;

    if (sh->audit_pending.next == NULL) {
        /* a zone made before the queue existed: never, but be safe */
        ngx_queue_init(&sh->audit_pending);
    }

    if (sh->audit_npending >= NGX_HA_OPTOUT_AUDIT_PENDING) {
        return NULL;
    }

    len = ngx_strlen(body);

    /* the line: the body without "}", the chain, "}\n" */
    size = offsetof(ngx_http_ha_optout_audit_line_t, data) + len
           + len + sizeof(", \"prev_hash\": \"\", \"hash\": \"\"}\n") + 2 * 64;

    line = ngx_slab_alloc_locked(ngx_http_ha_optout_shpool, size);

    while (line == NULL && ngx_http_ha_optout_make_room_locked()) {
        line = ngx_slab_alloc_locked(ngx_http_ha_optout_shpool, size);
    }

    if (line == NULL) {
        return NULL;
    }

    line->writing = 0;
    line->off = 0;
    line->body_len = len;
    line->line_len = 0;
    ngx_memcpy(line->data, body, len);

    ngx_queue_insert_tail(&sh->audit_pending, &line->queue);
    sh->audit_npending++;

    return line;
}


static void
ngx_http_ha_optout_audit_drop_locked(ngx_http_ha_optout_audit_line_t *line)
{
    ngx_queue_remove(&line->queue);
    ngx_http_ha_optout_sh->audit_npending--;
    ngx_slab_free_locked(ngx_http_ha_optout_shpool, line);
}


/* still waiting in the queue (not written); the lock holder's own line */

ngx_int_t
ngx_http_ha_optout_audit_queued_locked(ngx_http_ha_optout_audit_line_t *line)
{
    ngx_queue_t  *q;

    for (q = ngx_queue_head(&ngx_http_ha_optout_sh->audit_pending);
         q != ngx_queue_sentinel(&ngx_http_ha_optout_sh->audit_pending);
         q = ngx_queue_next(q))
    {
        if (q == &line->queue) {
            return 1;
        }
    }

    return 0;
}


/* a refused change takes back its line, which has not been written */

void
ngx_http_ha_optout_audit_unqueue_locked(ngx_http_ha_optout_audit_line_t *line)
{
    if (line && ngx_http_ha_optout_audit_queued_locked(line)
        && line->writing == 0)
    {
        ngx_http_ha_optout_audit_drop_locked(line);
    }
}


void
ngx_http_ha_optout_audit_lost(ngx_log_t *log, char *body)
{
    (void) ngx_atomic_fetch_add(&ngx_http_ha_optout_sh->audit_lost, 1);

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "ha_optout: audit line given up (%ui lines wait for the "
                  "audit log already, or the zone is full): %s",
                  ngx_http_ha_optout_sh->audit_npending, body);
}


/* the chain members, from the hash of the line written last */

static void
ngx_http_ha_optout_audit_chain_locked(ngx_http_ha_optout_audit_line_t *line)
{
    u_char  *start, *p;

    start = line->data + line->body_len;

    p = ngx_cpymem(start, line->data, line->body_len - 1);
    p = ngx_sprintf(p, ", \"prev_hash\": \"%s\"}",
                    ngx_http_ha_optout_sh->audit_hash);

    ngx_http_ha_optout_sha256_hex(start, p - start, line->hash);

    p--;
    p = ngx_sprintf(p, ", \"hash\": \"%s\"}\n", line->hash);

    line->line_len = p - start;
}


/*
 * The audit log keeps "other" out, as Debian's nginx logs (0640): nginx
 * creates its files 0644.  Run by the master after it opened them, and by
 * a worker for a file it reopened (USR1), which it owns.
 */

void
ngx_http_ha_optout_audit_mode(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    ngx_file_info_t  fi;

    if (hmcf->audit_log == NULL || hmcf->audit_log->fd == NGX_INVALID_FILE) {
        return;
    }

    if (ngx_fd_info(hmcf->audit_log->fd, &fi) == NGX_FILE_ERROR
        || !S_ISREG(fi.st_mode) || (fi.st_mode & 0027) == 0)
    {
        return;
    }

    if (fchmod(hmcf->audit_log->fd, fi.st_mode & 07750) == -1) {
        ngx_log_error(NGX_LOG_INFO, log, ngx_errno,
                      "ha_optout: fchmod(0%03o) of the audit log \"%V\" "
                      "failed", (int) (fi.st_mode & 0750),
                      &hmcf->audit_log->name);
    }
}


/*
 * A write() of n bytes of the line stopped short (err) at offset size: cut
 * back to size where the file is regular, else the torn piece stays.
 */

static void
ngx_http_ha_optout_audit_cut_back(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_http_ha_optout_audit_line_t *line, ssize_t n,
    off_t size, ngx_uint_t regular, ngx_err_t err)
{
    ngx_fd_t  fd;

    fd = hmcf->audit_log->fd;

    if (regular && ftruncate(fd, size) == 0) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      "ha_optout: audit line cut after %z of %uz bytes "
                      "in \"%V\": cut back, it is retried",
                      n, line->line_len, &hmcf->audit_log->name);

    } else {
        ngx_http_ha_optout_sh->audit_torn = 1;
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "ha_optout: audit line cut after %z of %uz bytes "
                      "in \"%V\" could not be cut back: the torn line "
                      "stays, the next line starts after it",
                      n, line->line_len, &hmcf->audit_log->name);
    }
}


/*
 * A line whose writer was killed during write(), in a regular file of
 * *size bytes: NGX_OK when it is there whole; else a part of it is cut
 * (*size set back to its offset) and NGX_DECLINED.
 */

static ngx_int_t
ngx_http_ha_optout_audit_resume(ngx_fd_t fd, ngx_log_t *log,
    ngx_http_ha_optout_audit_line_t *line, off_t *size)
{
    u_char  *text, *back;

    text = line->data + line->body_len;

    if (*size >= line->off + (off_t) line->line_len) {
        back = ngx_alloc(line->line_len, log);

        if (back
            && pread(fd, back, line->line_len, line->off)
               == (ssize_t) line->line_len
            && ngx_memcmp(back, text, line->line_len) == 0)
        {
            ngx_free(back);
            return NGX_OK;
        }

        if (back) {
            ngx_free(back);
        }
    }

    if (*size <= line->off + (off_t) line->line_len
        && ftruncate(fd, line->off) == 0)
    {
        *size = line->off;
    }

    return NGX_DECLINED;
}


/*
 * Writes one whole line at the end of the log, or nothing: the line is
 * made before, and goes in one write(); a write() that stops short (a full
 * file system) is cut back with ftruncate() to the size before it.  Should
 * that fail too, the torn piece is left on a line of its own (the next line
 * starts with "\n"), where "audit verify" reports it.  A line whose writer
 * was killed during write() is looked for at its offset: written whole, it
 * is not written again; in part, it is cut.
 */

static ngx_int_t
ngx_http_ha_optout_audit_write(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_http_ha_optout_audit_line_t *line)
{
    u_char           *text;
    off_t             size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_err_t         err;
    ngx_uint_t        regular;
    ngx_file_info_t   fi;

    static ngx_fd_t   checked = NGX_INVALID_FILE;

    fd = hmcf->audit_log->fd;
    text = line->data + line->body_len;

    if (fd != checked) {
        /* a file opened anew (start, USR1): 0640 */
        checked = fd;
        ngx_http_ha_optout_audit_mode(hmcf, log);
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        err = ngx_errno;
        goto failed;
    }

    regular = S_ISREG(fi.st_mode);
    size = regular ? fi.st_size : 0;

    if (regular && line->writing && size > line->off
        && ngx_http_ha_optout_audit_resume(fd, log, line, &size) == NGX_OK)
    {
        return NGX_OK;                      /* its writer died after it */
    }

    if (ngx_http_ha_optout_sh->audit_torn) {
        if (write(fd, "\n", 1) != 1) {
            err = ngx_errno;
            goto failed;
        }

        ngx_http_ha_optout_sh->audit_torn = 0;
        size++;
    }

    line->off = size;
    line->writing = ngx_pid;

    n = write(fd, text, line->line_len);

    if (n == (ssize_t) line->line_len) {
        return NGX_OK;
    }

    err = (n == -1) ? ngx_errno : NGX_ENOSPC;

    if (n > 0) {
        ngx_http_ha_optout_audit_cut_back(hmcf, log, line, n, size, regular,
                                          err);
    }

    line->writing = 0;

failed:

    if (ngx_http_ha_optout_sh->audit_failures++ == 0) {
        ngx_log_error(NGX_LOG_ALERT, log, err,
                      "ha_optout: audit line could not be written to \"%V\"; "
                      "%ui lines wait in the zone and are retried",
                      &hmcf->audit_log->name,
                      ngx_http_ha_optout_sh->audit_npending);
    }

    return NGX_ERROR;
}


/* a written line into the ring for GET v1/audit; an old line gives way */

static void
ngx_http_ha_optout_audit_ring_locked(ngx_http_ha_optout_audit_line_t *line)
{
    u_char                      *copy, **slot;
    size_t                       len;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    len = line->line_len;
    slot = &sh->audit_ring[sh->audit_next];

    if (*slot) {
        ngx_slab_free_locked(ngx_http_ha_optout_shpool, *slot);
        *slot = NULL;
    }

    copy = ngx_slab_alloc_locked(ngx_http_ha_optout_shpool, len);

    while (copy == NULL && ngx_http_ha_optout_make_room_locked()) {
        copy = ngx_slab_alloc_locked(ngx_http_ha_optout_shpool, len);
    }

    if (copy) {
        /* the written line, without its "\n" */
        ngx_memcpy(copy, line->data + line->body_len, len - 1);
        copy[len - 1] = '\0';
        *slot = copy;
        sh->audit_next = (sh->audit_next + 1) % NGX_HA_OPTOUT_AUDIT_RING;
        sh->audit_count++;
    }
}


/*
 * Writes the queued lines, oldest first, with the writer lock held.
 * NGX_OK: none is left; NGX_ERROR: the head could not be written (alerted
 * once; the lines stay).
 */

ngx_int_t
ngx_http_ha_optout_audit_flush(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    ngx_uint_t                        written;
    ngx_queue_t                      *q;
    ngx_http_ha_optout_shctx_t       *sh;
    ngx_http_ha_optout_audit_line_t  *line;

    sh = ngx_http_ha_optout_sh;
    written = 0;

    if (sh->audit_pending.next == NULL) {
        return NGX_OK;
    }

    if (!sh->restored && !ngx_queue_empty(&sh->audit_pending)) {
        /*
         * a line before worker 0's first tick (a "denied" one): the state
         * file first, whose audit_hash continues a chain the master found
         * no log for (rotated away)
         */
        ngx_http_ha_optout_state_restore(hmcf, log);
    }

    for ( ;; ) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        if (ngx_queue_empty(&sh->audit_pending)) {
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
            break;
        }

        q = ngx_queue_head(&sh->audit_pending);
        line = ngx_queue_data(q, ngx_http_ha_optout_audit_line_t, queue);

        if (!line->writing) {
            /* chained to the line written last (it may be a new log) */
            ngx_http_ha_optout_audit_chain_locked(line);
        }

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        /*
         * only the holder of the writer lock takes lines off the queue, so
         * the line stays where it is while it is written
         */

        if (hmcf->audit_log && hmcf->audit_log->fd != NGX_INVALID_FILE
            && ngx_http_ha_optout_audit_write(hmcf, log, line) != NGX_OK)
        {
            return NGX_ERROR;
        }

        written++;

        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        ngx_memcpy(sh->audit_hash, line->hash, 65);

        ngx_http_ha_optout_audit_ring_locked(line);

        ngx_http_ha_optout_audit_drop_locked(line);

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
    }

    if (sh->audit_failures && written) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ha_optout: the audit log is written again: %ui "
                      "waiting lines written after %ui failed attempts",
                      written, sh->audit_failures);
        sh->audit_failures = 0;
    }

    return NGX_OK;
}


/*
 * Audits a change: its warn line in error_log, and its audit line queued
 * and written at once when this process holds the writer lock or can take
 * it, else by worker 0's timer.  NGX_OK: written; NGX_AGAIN: queued;
 * NGX_ERROR: given up (alerted).
 */

ngx_int_t
ngx_http_ha_optout_audit(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id)
{
    return ngx_http_ha_optout_audit_cause(hmcf, log, action, upstream, actor,
                                          client, reason, before, after,
                                          request_id, NULL);
}


/* as ngx_http_ha_optout_audit(), the line with a "cause" member */

ngx_int_t
ngx_http_ha_optout_audit_cause(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id, ngx_str_t *cause)
{
    char                             *s;
    ngx_int_t                         rc;
    ngx_http_ha_optout_audit_line_t  *line;

    ngx_http_ha_optout_audit_warn(log, action, upstream, actor, reason,
                                  after ? after : before);

    /* built outside the lock: only the chain is made under it */

    s = ngx_http_ha_optout_audit_build_cause(hmcf, log, action, upstream,
                                             actor, client, reason, before,
                                             after, request_id, cause);
    if (s == NULL) {
        return NGX_ERROR;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    line = ngx_http_ha_optout_audit_enqueue_locked(s);
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (line == NULL) {
        ngx_http_ha_optout_audit_lost(log, s);
        free(s);
        return NGX_ERROR;
    }

    free(s);

    if (ngx_http_ha_optout_writer_trylock() != NGX_OK) {
        return NGX_AGAIN;
    }

    rc = ngx_http_ha_optout_audit_flush(hmcf, log);

    ngx_http_ha_optout_writer_unlock();

    return (rc == NGX_OK) ? NGX_OK : NGX_AGAIN;
}


void
ngx_http_ha_optout_audit_warn_line(ngx_log_t *log, ngx_uint_t action,
    ngx_str_t *upstream, ngx_str_t *actor, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *flag)
{
    ngx_http_ha_optout_audit_warn(log, action, upstream, actor, reason, flag);
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
 * Whether the piece after the last newline is a whole chain line that
 * lacks only its newline: a JSON object ending with , "hash": "<hex>"},
 * whose prev_hash is the previous line's hash (prev) and whose hash
 * recomputes.  Its hash goes to *hash.
 */

static ngx_uint_t
ngx_http_ha_optout_audit_whole(u_char *piece, size_t len, u_char *prev,
    u_char *hash, ngx_log_t *log)
{
    u_char        *m, *copy;
    u_char         hex[65];
    size_t         mlen, plen;
    json_t        *j;
    json_error_t   e;

    static const char  member[] = ", \"hash\": \"";
    static const char  pmember[] = ", \"prev_hash\": \"";

    mlen = sizeof(member) - 1;
    plen = sizeof(pmember) - 1;

    if (len < 2 + plen + 65 + mlen + 66 || piece[0] != '{'
        || ngx_strncmp(piece + len - 2, "\"}", 2) != 0)
    {
        return 0;
    }

    m = piece + len - 2 - 64 - mlen;

    if (ngx_strncmp(m, member, mlen) != 0
        || ngx_strncmp(m - 65 - plen, pmember, plen) != 0
        || m[-1] != '"'
        || ngx_strncmp(m - 65, prev, 64) != 0)
    {
        return 0;
    }

    j = json_loadb((char *) piece, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        return 0;
    }

    if (!json_is_object(j)) {
        json_decref(j);
        return 0;
    }

    json_decref(j);

    copy = ngx_alloc(m - piece + 1, log);
    if (copy == NULL) {
        return 0;
    }

    ngx_memcpy(copy, piece, m - piece);
    copy[m - piece] = '}';
    ngx_http_ha_optout_sha256_hex(copy, m - piece + 1, hex);
    ngx_free(copy);

    if (ngx_strncmp(hex, m + mlen, 64) != 0) {
        return 0;
    }

    ngx_memcpy(hash, hex, 65);

    return 1;
}


/*
 * The log ends inside a line: a write was cut (a full disk, a crash).  A
 * whole, valid line that lacks only its newline gets it, and the chain
 * continues from it.  Anything else would be glued to the next line and
 * neither would verify: the piece is moved aside, to LOG.torn.<time> (a
 * new regular file, never one that exists), and cut off the log (not when
 * only testing the configuration); the error log says so.
 *
 * Longer than a screen: find the tail, mend it or move it aside and cut;
 * each system call with its own error line.
 */

static void
ngx_http_ha_optout_audit_untear(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_shctx_t *sh, ngx_file_info_t *fi, u_char *piece,
    size_t len, ngx_log_t *log)
{
    u_char           *name;
    u_char            hash[65];
    ssize_t           w;
    ngx_fd_t          fd, afd;
    ngx_file_info_t   wfi;

    fd = hmcf->audit_log->fd;

    if (ngx_test_config || fd == NGX_INVALID_FILE
        || ngx_fd_info(fd, &wfi) == NGX_FILE_ERROR
        || wfi.st_dev != fi->st_dev || wfi.st_ino != fi->st_ino
        || ngx_file_size(&wfi) != ngx_file_size(fi))
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: the audit log \"%V\" ends inside a line "
                      "(%uz bytes of a cut write); the chain continues from "
                      "the last whole line", &hmcf->audit_log->name, len);
        return;
    }

    if (ngx_http_ha_optout_audit_whole(piece, len, sh->audit_hash, hash, log)
        && write(fd, "\n", 1) == 1)
    {
        ngx_memcpy(sh->audit_hash, hash, 65);

        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: the last line of the audit log \"%V\" "
                      "lacked only its newline: it was added, and the chain "
                      "continues from that line", &hmcf->audit_log->name);
        return;
    }

    name = ngx_alloc(hmcf->audit_log->name.len + sizeof(".torn.")
                     + NGX_INT64_LEN, log);
    afd = NGX_INVALID_FILE;

    if (name) {
        ngx_sprintf(name, "%V.torn.%T%Z", &hmcf->audit_log->name, ngx_time());
        afd = open((char *) name, O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW
                                  |O_CLOEXEC, 0600);
    }

    w = -1;

    if (afd != NGX_INVALID_FILE) {
        w = write(afd, piece, len);
        ngx_close_file(afd);
    }

    if (w != (ssize_t) len) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "ha_optout: the audit log \"%V\" ends inside a line "
                      "(%uz bytes of a cut write) that could not be moved "
                      "aside to \"%s\"; the log is left as it is",
                      &hmcf->audit_log->name, len, name ? name : (u_char *) "");
        ngx_free(name);
        return;
    }

    if (ftruncate(fd, ngx_file_size(fi) - (off_t) len) == -1) {
        ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                      "ha_optout: the audit log \"%V\" ends inside a line "
                      "(%uz bytes of a cut write, copied to \"%s\") that "
                      "could not be cut off",
                      &hmcf->audit_log->name, len, name);
        ngx_free(name);
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "ha_optout: the audit log \"%V\" ends inside a line "
                  "(%uz bytes of a cut write): they were moved to \"%s\", "
                  "and the chain continues from the last whole line",
                  &hmcf->audit_log->name, len, name);
    ngx_free(name);
}


/* the audit log, a regular file, opened to continue its chain */

static ngx_fd_t
ngx_http_ha_optout_audit_open_chain(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_file_info_t *fi, ngx_log_t *log)
{
    ngx_fd_t     fd;
    ngx_uint_t   level;
    const char  *why;

    fd = ngx_http_ha_optout_open_regular(hmcf->audit_log->name.data, 0, fi,
                                         &why);

    if (fd == NGX_INVALID_FILE && why) {
        /* /dev/stdout or a pipe (a container's log) is not an error */

        level = (ngx_strncmp(why, "not a regular", 13) == 0)
                ? NGX_LOG_NOTICE : NGX_LOG_ALERT;

        ngx_log_error(level, log, 0,
                      "ha_optout: audit log \"%V\": %s; its chain "
                      "cannot be continued and starts again",
                      &hmcf->audit_log->name, why);
    }

    return fd;
}


/*
 * The hash of the last whole line of the log's tail (buf, n bytes read at
 * offset from): NULL, alerted, when it has none; *lastp: the end of that
 * line, its "\n".
 */

static u_char *
ngx_http_ha_optout_audit_tail_hash(ngx_http_ha_optout_main_conf_t *hmcf,
    u_char *buf, size_t n, off_t from, u_char **lastp, ngx_log_t *log)
{
    u_char      *last, *start, *p;
    size_t       len;
    ngx_uint_t   i;

    static const char  member[] = ", \"hash\": \"";

    /* the last whole line: [start, last) without its "\n" */

    last = buf + n;

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
        return NULL;
    }

    *lastp = last;
    p += sizeof(member) - 1;

    for (i = 0; i < 64; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "ha_optout: the last line of the audit log "
                          "\"%V\" has no valid hash; its chain starts "
                          "again", &hmcf->audit_log->name);
            return NULL;
        }
    }

    return p;
}


/*
 * A fresh zone: the chain continues from the last line of the log.  Only
 * its tail is read (the log may be large), with O_NONBLOCK and only if it
 * is a regular file.  A log that ends inside a line (a crash while it was
 * written) continues from the last whole line.
 */

#define NGX_HA_OPTOUT_AUDIT_TAIL  (4 * NGX_HA_OPTOUT_AUDIT_LINE)

static void ngx_http_ha_optout_audit_gap_find(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_shctx_t *sh,
    u_char *tail, size_t n, ngx_log_t *log);

void
ngx_http_ha_optout_audit_chain_init(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_shctx_t *sh, ngx_log_t *log)
{
    u_char           *buf, *last, *p;
    off_t             size, from;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_uint_t        torn;
    ngx_file_info_t   fi;

    if (hmcf->audit_log == NULL) {
        return;
    }

    fd = ngx_http_ha_optout_audit_open_chain(hmcf, &fi, log);

    if (fd == NGX_INVALID_FILE) {
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

    torn = (buf[n - 1] != '\n');

    p = ngx_http_ha_optout_audit_tail_hash(hmcf, buf, (size_t) n, from, &last,
                                           log);
    if (p == NULL) {
        ngx_free(buf);
        return;
    }

    ngx_memcpy(sh->audit_hash, p, 64);
    sh->audit_hash[64] = '\0';

    ngx_http_ha_optout_audit_gap_find(hmcf, sh, buf, (size_t) n, log);

    if (torn) {
        ngx_http_ha_optout_audit_untear(hmcf, sh, &fi, last + 1,
                                        (size_t) (buf + n - (last + 1)),
                                        log);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0,
                   "ha_optout: audit chain of \"%V\" continues from %s",
                   &hmcf->audit_log->name, sh->audit_hash);

    ngx_free(buf);
}


/*
 * At start on a fresh zone (the master, which may read both files): the
 * state file names the hash of the last line nginx had written when it
 * saved it.  When the log nginx continues is not empty and that hash is
 * neither its last line's nor anywhere in its tail (buf, n bytes), lines
 * were cut from its end while nginx was stopped: it is kept in
 * sh->audit_gap, and the restore of the state file writes a "chain_gap"
 * line first (ngx_http_ha_optout_audit_gap_locked()).  A log rotated away
 * (empty or gone) is not a gap: chain_init never gets here for it.  The
 * hash is looked for as the line "audit_hash: HEX" that nginx writes; the
 * restore checks it against the parsed file.
 */

static void
ngx_http_ha_optout_audit_gap_find(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_shctx_t *sh, u_char *tail, size_t n, ngx_log_t *log)
{
    u_char           *buf, *p, *last, *h;
    size_t            size;
    ssize_t           r;
    ngx_fd_t          fd;
    ngx_uint_t        i;
    const char       *why;
    ngx_file_info_t   fi;

    static const char  key[] = "\naudit_hash: ";

    if (hmcf->state_file.len == 0) {
        return;
    }

    fd = ngx_http_ha_optout_open_regular(hmcf->state_file.data, 1, &fi,
                                         &why);
    if (fd == NGX_INVALID_FILE) {
        return;
    }

    size = (size_t) ngx_min(ngx_file_size(&fi), 4 * 1024 * 1024);
    buf = ngx_alloc(size + 1, log);

    if (buf == NULL) {
        ngx_close_file(fd);
        return;
    }

    r = ngx_read_fd(fd, buf + 1, size);
    ngx_close_file(fd);

    h = NULL;
    buf[0] = '\n';

    for (p = buf, last = buf + 1 + (r > 0 ? r : 0);
         p + sizeof(key) - 1 + 64 <= last;
         p++)
    {
        if (*p == '\n'
            && ngx_strncmp(p, key, sizeof(key) - 1) == 0)
        {
            h = p + sizeof(key) - 1;
            break;
        }
    }

    for (i = 0; h && i < 64; i++) {
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f'))) {
            h = NULL;
        }
    }

    if (h == NULL || ngx_strncmp(h, sh->audit_hash, 64) == 0) {
        ngx_free(buf);
        return;
    }

    for (p = tail, last = tail + n; p + 64 <= last; p++) {
        if (*p == h[0] && ngx_strncmp(p, h, 64) == 0) {
            /* lines after it were written after the last save: fine */
            ngx_free(buf);
            return;
        }
    }

    ngx_memcpy(sh->audit_gap, h, 64);
    sh->audit_gap[64] = '\0';

    ngx_free(buf);
}


/*
 * The restore of the state file (zone mutex held, before any new line):
 * when chain_init found the log cut and the state file's parsed audit_hash
 * is the one it looked for, a "chain_gap" line, chained as any other so
 * that the chain stays verifiable, records it ("audit verify" fails on it).
 */

void
ngx_http_ha_optout_audit_gap_locked(ngx_http_ha_optout_main_conf_t *hmcf,
    u_char *expected, ngx_log_t *log)
{
    u_char                      now[sizeof("2026-11-27T10:00:00Z")];
    char                       *s;
    json_t                     *json;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    if (hmcf->audit_log == NULL || sh->audit_gap[0] == '\0'
        || ngx_strncmp(sh->audit_gap, expected, 64) != 0)
    {
        return;
    }

    sh->audit_gap[0] = '\0';

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "ha_optout: the audit log \"%V\" was cut while nginx was "
                  "stopped: the state file expected its last line to be "
                  "%*s, the log ends with %*s; a \"chain_gap\" line records "
                  "it (\"ha-optoutctl audit verify\" fails on it)",
                  &hmcf->audit_log->name, (size_t) 64, expected,
                  (size_t) 64, sh->audit_hash);

    json = json_pack("{s:s%,s:s%,s:s,s:s%,s:s%}",
                     "time", now, ngx_http_ha_optout_time_iso(now, ngx_time())
                                  - now,
                     "environment", hmcf->environment.data,
                     hmcf->environment.len,
                     "action", "chain_gap",
                     "expected", expected, (size_t) 64,
                     "found", sh->audit_hash, (size_t) 64);
    if (json == NULL) {
        return;
    }

    s = json_dumps(json, 0);
    json_decref(json);

    if (s == NULL) {
        return;
    }

    if (ngx_http_ha_optout_audit_enqueue_locked(s) == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "ha_optout: audit line lost: %s", s);
    }

    free(s);
}


/*
 * Why a saved flag (state file at start) or a flag of the zone (at reload)
 * cannot act under this configuration, for the "cause" of its
 * restore_rejected (or expire) audit line: p .. last, returns the end,
 * p itself when it may act.  The checks of state_judge() and revalidate(),
 * in their order; names and pins escaped (the state file may hold
 * anything).
 *
 * Longer than a screen: one branch per check, in the order of the checks
 * it explains, so that the two can be read side by side.
 */

u_char *
ngx_http_ha_optout_drop_cause(u_char *p, u_char *last,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *upstream,
    ngx_http_ha_optout_flag_t *flag, time_t now)
{
    u_char                    ubuf[NGX_HA_OPTOUT_NAME_LEN * 4];
    u_char                    buf[NGX_HA_OPTOUT_SELECTOR_LEN * 4];
    u_char                    iso[sizeof("2026-11-27T10:00:00Z")];
    size_t                    ulen;
    ngx_int_t                 rc;
    ngx_uint_t                i, n;
    ngx_http_ha_optout_rec_t  *rec;

    ulen = ngx_http_ha_optout_escape(ubuf, sizeof(ubuf), upstream->data,
                                     upstream->len) - ubuf;

    if (hscf == NULL || hscf->rec == NULL) {
        return ngx_slprintf(p, last, "unknown upstream: no upstream \"%*s\" "
                            "has \"ha_optout\" in the configuration now "
                            "(removed or renamed, or its \"ha_optout\" "
                            "line is gone)", ulen, ubuf);
    }

    if (ngx_http_ha_optout_header_safe(flag->pin, flag->pin_len) != NGX_OK
        || ngx_http_ha_optout_header_safe(flag->selector, flag->selector_len)
           != NGX_OK)
    {
        return ngx_slprintf(p, last, "text not header-safe: its pin or "
                            "pin_selector holds control bytes or non-ASCII, "
                            "which would reach the X-HA-Optout header");
    }

    if (flag->pin_len) {
        rc = ngx_http_ha_optout_upstream_peer(hscf, flag->pin, flag->pin_len,
                                              NULL, NULL);
        if (rc != NGX_OK) {
            p = ngx_slprintf(p, last, "pin \"%*s\" ",
                             ngx_http_ha_optout_escape(buf, sizeof(buf),
                                 flag->pin, flag->pin_len) - buf, buf);

            if (rc == NGX_BUSY) {
                return ngx_slprintf(p, last, "names a server of upstream "
                                    "\"%*s\" that is marked \"down\" now",
                                    ulen, ubuf);
            }

            p = ngx_slprintf(p, last, "names no server of upstream \"%*s\" "
                             "now; its servers:", ulen, ubuf);

            rec = hscf->rec;

            for (i = 0, n = 0; i < rec->nservers && p < last; i++) {
                if (rec->servers[i].len) {
                    p = ngx_slprintf(p, last, "%s %*s", n++ ? "," : "",
                                     rec->servers[i].len,
                                     rec->servers[i].name);
                }
            }

            return n ? p : ngx_slprintf(p, last, " (none known)");
        }
    }

    if (flag->selector_len && hscf->selector == NULL) {
        return ngx_slprintf(p, last, "pin_selector \"%*s\" needs \"ha_optout "
                            "selector=$var\" in upstream \"%*s\", which it "
                            "no longer has",
                            ngx_http_ha_optout_escape(buf, sizeof(buf),
                                flag->selector, flag->selector_len) - buf,
                            buf, ulen, ubuf);
    }

    if (flag->expires_at && flag->expires_at <= now) {
        return ngx_slprintf(p, last, "expired: its expires_at %*s passed "
                            "while nginx was down",
                            ngx_http_ha_optout_time_iso(iso, flag->expires_at)
                            - iso, iso);
    }

    return p;
}
