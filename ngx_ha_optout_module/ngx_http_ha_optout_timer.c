
/*
 * ngx_ha_optout_module: the worker's periodic job.  Worker 0 (or the
 * single process) ticks every 250 ms: the sticky sweep, the first restore
 * of the state file, the revalidation of the zone against a reloaded
 * configuration, the removal of temporary files left by killed workers,
 * the expiry of flags, the policy windows and approvals, and the retry of
 * what could not be persisted.
 */


#include "ngx_http_ha_optout_module.h"


static void ngx_http_ha_optout_tick(ngx_event_t *ev);
static void ngx_http_ha_optout_expire(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);
static void ngx_http_ha_optout_revalidate(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_log_t *log);

static void ngx_http_ha_optout_tmp_sweep(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);
static ngx_int_t ngx_http_ha_optout_tmp_pid(u_char *p, size_t len,
    u_char *base, size_t blen);
static void ngx_http_ha_optout_tmp_remove(u_char *path, ngx_log_t *log);

static ngx_uint_t  ngx_http_ha_optout_revalidated;

static ngx_event_t       ngx_http_ha_optout_timer;
static ngx_connection_t  ngx_http_ha_optout_timer_conn;


/* init_process of worker 0 (or of the single process) */

void
ngx_http_ha_optout_timer_start(ngx_cycle_t *cycle)
{
    ngx_http_ha_optout_timer_conn.fd = (ngx_socket_t) -1;

    ngx_http_ha_optout_timer.handler = ngx_http_ha_optout_tick;
    ngx_http_ha_optout_timer.log = cycle->log;
    ngx_http_ha_optout_timer.data = &ngx_http_ha_optout_timer_conn;
    ngx_http_ha_optout_timer.cancelable = 1;

    ngx_add_timer(&ngx_http_ha_optout_timer, 1);
}


/*
 * A restore (expiry, a dropped flag) has taken effect in the zone already;
 * when its state file cannot be saved, it stays restored and the save is
 * retried by the timer (SPEC section 8).
 */

static void
ngx_http_ha_optout_save_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, const char *what)
{
    if (ngx_http_ha_optout_state_save_restore(hmcf, log) == NGX_OK) {
        return;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    ngx_http_ha_optout_sh->state_dirty++;
    ngx_http_ha_optout_sh->state_failures++;
    ngx_http_ha_optout_sh->retry_delay = 1;
    ngx_http_ha_optout_sh->retry_at = ngx_time() + 1;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "ha_optout: %s are cleared in memory (HA is restored) but "
                  "the state file \"%V\" could not be saved; it is retried",
                  what, &hmcf->state_file);
}
static ngx_uint_t  ngx_http_ha_optout_ticks;


static void
ngx_http_ha_optout_tick(ngx_event_t *ev)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_ha_optout_module);

    /* not the zone's mutex: cheap, and never waits for a writer */
    ngx_http_ha_optout_sticky_sweep(hmcf);

    /*
     * the writer lock is only tried: a busy (or stuck) writer makes this
     * tick skip its writes, never wait.  An expired flag stopped acting on
     * the request path already; it is cleared and audited at a later tick.
     */
    if (ngx_http_ha_optout_writer_trylock() != NGX_OK) {
        ngx_add_timer(ev, 250);
        return;
    }

    if (!ngx_http_ha_optout_sh->restored) {
        ngx_http_ha_optout_state_restore(hmcf, ev->log);
    }

    if (!ngx_http_ha_optout_revalidated) {
        ngx_http_ha_optout_revalidated = 1;
        ngx_http_ha_optout_revalidate(hmcf, ev->log);
    }

    if (ngx_http_ha_optout_ticks++ % 240 == 0) {
        ngx_http_ha_optout_tmp_sweep(hmcf, ev->log);
    }

    ngx_http_ha_optout_expire(hmcf, ev->log);
    ngx_http_ha_optout_windows_tick(hmcf, ev->log);
    ngx_http_ha_optout_approvals_tick(hmcf, ev->log);

    /*
     * what could not be saved or audited before (retried with a backoff),
     * and the state file's audit_hash following the log (once a second)
     */
    ngx_http_ha_optout_persist_retry(hmcf, ev->log, 0);

    ngx_http_ha_optout_writer_unlock();

    ngx_add_timer(ev, 250);
}


/*
 * The zone outlives a reload, the configuration does not: once per new
 * worker 0, drop what no longer fits it, as a restore would (an API flag
 * whose pin names no server of its upstream any more would send every
 * request to a 502; a layer of an upstream that lost "ha_optout" would
 * never expire and keep the request path off its fast path).
 */

typedef struct {
    ngx_http_ha_optout_flag_t       flag;
    u_char                          name[NGX_HA_OPTOUT_NAME_LEN];
    size_t                          len;
    ngx_str_t                      *why;
} ngx_http_ha_optout_dropped_t;


#define NGX_HA_OPTOUT_DROP_MAX  32

static ngx_uint_t ngx_http_ha_optout_revalidate_drop(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_dropped_t *d);
static void ngx_http_ha_optout_revalidate_audit(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_log_t *log,
    ngx_http_ha_optout_dropped_t *d);


static void
ngx_http_ha_optout_revalidate(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    ngx_uint_t                     i, n;
    ngx_http_ha_optout_dropped_t  *d;

    d = ngx_alloc(NGX_HA_OPTOUT_DROP_MAX
                  * sizeof(ngx_http_ha_optout_dropped_t), log);
    if (d == NULL) {
        return;
    }

    n = ngx_http_ha_optout_revalidate_drop(hmcf, d);

    for (i = 0; i < n; i++) {
        ngx_http_ha_optout_revalidate_audit(hmcf, log, &d[i]);
    }

    ngx_free(d);

    if (n) {
        ngx_http_ha_optout_save_restore(hmcf, log, "dropped flags");
    }
}


/*
 * Under the zone mutex: the layers that no longer fit are cleared, and
 * copied to d (NGX_HA_OPTOUT_DROP_MAX at most) for their audit lines.
 */

static ngx_uint_t
ngx_http_ha_optout_revalidate_drop(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_dropped_t *d)
{
    ngx_str_t                       name;
    ngx_uint_t                      i, n;
    ngx_queue_t                    *q;
    ngx_http_ha_optout_rec_t       *rec;
    ngx_http_ha_optout_srv_conf_t  *hscf;

    static ngx_str_t  reload = ngx_string("dropped at reload");

    n = 0;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    for (q = ngx_queue_head(&ngx_http_ha_optout_sh->upstreams);
         q != ngx_queue_sentinel(&ngx_http_ha_optout_sh->upstreams)
         && n + 3 <= NGX_HA_OPTOUT_DROP_MAX;
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_ha_optout_rec_t, queue);

        name.data = rec->name;
        name.len = rec->name_len;
        hscf = ngx_http_ha_optout_find_upstream(hmcf, &name);

        for (i = 0; i < 3; i++) {
            ngx_http_ha_optout_flag_t  *layer;

            layer = (i == 2) ? &rec->fleet : i ? &rec->window : &rec->api;

            if (!layer->present
                || (hscf
                    && (i == 1 || layer->pin_len == 0
                        || ngx_http_ha_optout_upstream_peer(hscf, layer->pin,
                                                            layer->pin_len,
                                                            NULL, NULL)
                           == NGX_OK)))
            {
                continue;
            }

            d[n].flag = *layer;
            d[n].why = &reload;
            d[n].len = rec->name_len;
            ngx_memcpy(d[n].name, rec->name, rec->name_len);
            n++;

            ngx_memzero(layer, sizeof(ngx_http_ha_optout_flag_t));
            (void) ngx_atomic_fetch_add(
                &rec->changes[NGX_HA_OPTOUT_ACT_RESTORE_REJECTED], 1);
        }
    }

    if (n) {
        ngx_http_ha_optout_bump();
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return n;
}


/* the restore_rejected line of a dropped flag */

static void
ngx_http_ha_optout_revalidate_audit(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_http_ha_optout_dropped_t *d)
{
    u_char     *p, cbuf[2048];
    ngx_str_t   name, actor, reason, cause;

    name.data = d->name;
    name.len = d->len;
    actor.data = d->flag.actor;
    actor.len = d->flag.actor_len;
    reason.data = d->flag.reason;
    reason.len = d->flag.reason_len;

    /* the flag's own reason, as at start; why it went in "cause" */
    p = ngx_cpymem(cbuf, d->why->data, d->why->len);
    p = ngx_http_ha_optout_drop_cause(ngx_cpymem(p, ": ", 2),
                                      cbuf + sizeof(cbuf),
                                      ngx_http_ha_optout_find_upstream(
                                          hmcf, &name),
                                      &name, &d->flag, ngx_time());
    cause.data = cbuf;
    cause.len = p - cbuf;

    ngx_http_ha_optout_audit_cause(hmcf, log,
                                   NGX_HA_OPTOUT_ACT_RESTORE_REJECTED,
                                   &name, &actor, NULL, &reason,
                                   &d->flag, NULL, NULL, &cause);
}


/*
 * Clears API flags past expires_at (they stopped acting on the request path
 * already) and moves policy windows.  Idempotent: two "worker 0" may run it
 * during a reload.
 */

static void
ngx_http_ha_optout_expire(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    time_t                           now;
    ngx_str_t                        upstream, actor, reason;
    ngx_uint_t                       i, n;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t        before, *layer;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    now = ngx_time();
    hscfp = hmcf->upstreams.elts;
    n = 0;

    for (i = 0; i < hmcf->upstreams.nelts * 2; i++) {
        rec = hscfp[i / 2]->rec;

        if (rec == NULL) {
            continue;
        }

        /* the API layer, then the fleet layer */
        layer = (i % 2) ? &rec->fleet : &rec->api;

        if (!layer->present || layer->expires_at == 0
            || now < layer->expires_at)
        {
            continue;
        }

        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        if (!layer->present || layer->expires_at == 0
            || now < layer->expires_at)
        {
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
            continue;
        }

        before = *layer;
        ngx_memzero(layer, sizeof(ngx_http_ha_optout_flag_t));
        (void) ngx_atomic_fetch_add(&rec->changes[NGX_HA_OPTOUT_ACT_EXPIRE],
                                    1);
        ngx_http_ha_optout_bump();

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        upstream = hscfp[i / 2]->name;
        actor.data = before.actor;
        actor.len = before.actor_len;
        reason.data = before.reason;
        reason.len = before.reason_len;

        ngx_http_ha_optout_audit(hmcf, log, NGX_HA_OPTOUT_ACT_EXPIRE,
                                 &upstream, &actor, NULL, &reason, &before,
                                 NULL, NULL);
        n++;
    }

    if (n) {
        ngx_http_ha_optout_save_restore(hmcf, log, "expired flags");
    }
}


/*
 * A worker killed while saving leaves its "STATE.tmp.PID.RANDOM" behind
 * (an older version: "STATE.tmp.PID"): the timer removes those of
 * processes that no longer exist (about once a minute), so the state
 * directory does not fill up with them.  Only regular files are removed:
 * an entry is looked at with lstat(), never through a symbolic link, and
 * anything else planted under such a name is left alone.
 */

static void
ngx_http_ha_optout_tmp_sweep(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    u_char     *base, path[NGX_MAX_PATH];
    size_t      blen, len;
    ngx_str_t   dirname;
    ngx_int_t   pid;
    ngx_dir_t   dir;

    if (hmcf->state_file.len == 0
        || hmcf->state_file.len + 64 > NGX_MAX_PATH)
    {
        return;
    }

    /* the path is absolute (ngx_conf_full_name): split at the last "/" */

    base = hmcf->state_file.data + hmcf->state_file.len;

    while (base > hmcf->state_file.data && base[-1] != '/') {
        base--;
    }

    if (base == hmcf->state_file.data) {
        return;
    }

    dirname.len = base - hmcf->state_file.data;
    dirname.data = path;
    ngx_memcpy(path, hmcf->state_file.data, dirname.len);
    path[dirname.len] = '\0';

    blen = hmcf->state_file.data + hmcf->state_file.len - base;

    if (ngx_open_dir(&dirname, &dir) == NGX_ERROR) {
        return;
    }

    while (ngx_read_dir(&dir) == NGX_OK) {
        len = ngx_de_namelen(&dir);

        if (len + dirname.len >= NGX_MAX_PATH) {
            continue;
        }

        pid = ngx_http_ha_optout_tmp_pid(ngx_de_name(&dir), len, base, blen);

        if (pid <= 0 || kill((ngx_pid_t) pid, 0) == 0
            || ngx_errno != NGX_ESRCH)
        {
            continue;
        }

        (void) ngx_snprintf(path + dirname.len, NGX_MAX_PATH - dirname.len,
                            "%*s%Z", ngx_de_namelen(&dir), ngx_de_name(&dir));

        ngx_http_ha_optout_tmp_remove(path, log);

        path[dirname.len] = '\0';
    }

    (void) ngx_close_dir(&dir);
}


/*
 * The PID in a directory entry named "STATE.tmp.PID.RANDOM" (RANDOM: 16
 * hex digits) or "STATE.tmp.PID" (base, blen: STATE); <= 0 for any other
 * name.
 */

static ngx_int_t
ngx_http_ha_optout_tmp_pid(u_char *p, size_t len, u_char *base, size_t blen)
{
    u_char      *dot;
    size_t       plen;
    ngx_uint_t   i;

    if (len <= blen + sizeof(".tmp.") - 1
        || ngx_strncmp(p, base, blen) != 0
        || ngx_strncmp(p + blen, ".tmp.", sizeof(".tmp.") - 1) != 0)
    {
        return NGX_ERROR;
    }

    /* PID, then ".RANDOM" (16 hex digits) or nothing */

    p += blen + sizeof(".tmp.") - 1;
    len -= blen + sizeof(".tmp.") - 1;

    dot = ngx_strlchr(p, p + len, '.');
    plen = dot ? (size_t) (dot - p) : len;

    if (dot) {
        if (len - plen != 1 + 16) {
            return NGX_ERROR;
        }

        for (i = 1; i <= 16; i++) {
            if (!((dot[i] >= '0' && dot[i] <= '9')
                  || (dot[i] >= 'a' && dot[i] <= 'f')))
            {
                break;
            }
        }

        if (i <= 16) {
            return NGX_ERROR;
        }
    }

    return ngx_atoi(p, plen);
}


/* a regular file only, looked at with lstat() */

static void
ngx_http_ha_optout_tmp_remove(u_char *path, ngx_log_t *log)
{
    ngx_file_info_t  fi;

    if (ngx_link_info(path, &fi) == NGX_FILE_ERROR
        || !ngx_is_file(&fi))
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: \"%s\" is not a regular file: it was "
                      "not made by nginx and is left alone", path);
        return;
    }

    if (ngx_delete_file(path) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_INFO, log, ngx_errno,
                      "ha_optout: " ngx_delete_file_n " \"%s\" failed",
                      path);
    } else {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "ha_optout: removed \"%s\" left by a killed "
                      "worker", path);
    }
}
