
/*
 * ngx_ha_optout_module: the writer lock and the persistence of changes.
 * One writer of flags at a time, from its change in the zone to its state
 * file and audit line; the change a killed writer left pending is finished
 * by the next one to take the lock; what could not be written (audit
 * lines, a restore's state file) is retried by worker 0's timer.  Above
 * the store: it uses the store, the audit log and the state file, and the
 * store calls none of them.
 */


#include "ngx_http_ha_optout_module.h"


static void ngx_http_ha_optout_writer_recover(void);


/*
 * Writers of flags (the API, the expiry and window timer, the restore) are
 * serialised from their change to its state file and audit line, so that
 * an undo after a failed save can never hide another writer's change.  Not
 * the zone mutex: that one is taken on the request path, and a save takes
 * an fsync.  A writer killed with its lock is recognised by its pid.
 *
 * Nobody waits for it inside the event loop: it is only ever tried.  The
 * timer skips a tick when it is busy; an API write waits for it with a
 * request timer, at most NGX_HA_OPTOUT_LOCK_WAIT, and a restore (DELETE)
 * takes effect without it (see admin.c).  A stuck holder (a state file on
 * a hung mount, an audit FIFO nobody reads) so stops the other writes of
 * flags, for a bounded time each, and never a request.
 */

static ngx_uint_t  ngx_http_ha_optout_writer_depth;


ngx_int_t
ngx_http_ha_optout_writer_trylock(void)
{
    ngx_atomic_uint_t  owner;

    if (ngx_http_ha_optout_writer_depth) {
        ngx_http_ha_optout_writer_depth++;
        return NGX_OK;
    }

    owner = ngx_http_ha_optout_sh->writer;

    if (owner == (ngx_atomic_uint_t) ngx_pid) {
        /* left behind by this process: never happens */

    } else if (owner == 0) {
        if (!ngx_atomic_cmp_set(&ngx_http_ha_optout_sh->writer, 0,
                                (ngx_atomic_uint_t) ngx_pid))
        {
            return NGX_BUSY;
        }

    } else if (kill((ngx_pid_t) owner, 0) == -1 && ngx_errno == NGX_ESRCH) {
        /* its holder was killed */
        if (!ngx_atomic_cmp_set(&ngx_http_ha_optout_sh->writer, owner,
                                (ngx_atomic_uint_t) ngx_pid))
        {
            return NGX_BUSY;
        }

    } else {
        return NGX_BUSY;
    }

    ngx_http_ha_optout_writer_depth = 1;

    /* a change left unfinished by a killed writer is ours to finish first */

    if (ngx_http_ha_optout_sh->pending.pid
        && ngx_http_ha_optout_sh->pending.pid != ngx_pid)
    {
        ngx_http_ha_optout_writer_recover();
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_ha_optout_writer_held(void)
{
    return ngx_http_ha_optout_writer_depth;
}


/*
 * Lines that others queued while the lock was held (a "denied" line, a
 * DELETE) are written before it is released; and since one may come just
 * before the release, the queue is looked at again after it: whoever
 * queued a line either took the lock itself or is seen here.
 */

void
ngx_http_ha_optout_writer_unlock(void)
{
    ngx_http_ha_optout_shctx_t      *sh;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    if (--ngx_http_ha_optout_writer_depth) {
        return;
    }

    sh = ngx_http_ha_optout_sh;
    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_ha_optout_module);

    for ( ;; ) {
        if (hmcf && sh->audit_npending && sh->audit_failures == 0) {
            /* still held: a line audited meanwhile nests, never releases */
            ngx_http_ha_optout_writer_depth = 1;
            (void) ngx_http_ha_optout_audit_flush(hmcf, ngx_cycle->log);
            ngx_http_ha_optout_writer_depth = 0;
        }

        (void) ngx_atomic_cmp_set(&sh->writer, (ngx_atomic_uint_t) ngx_pid,
                                  0);

        ngx_memory_barrier();

        if (hmcf == NULL || sh->audit_npending == 0 || sh->audit_failures
            || !ngx_atomic_cmp_set(&sh->writer, 0,
                                   (ngx_atomic_uint_t) ngx_pid))
        {
            return;
        }
    }
}


/*
 * Is the state file's "audit_hash" behind the last line written to the
 * audit log?  Lines that change no flag ("denied") save nothing on their
 * own, and a restore's line may be written after its save.
 */

static ngx_uint_t
ngx_http_ha_optout_state_behind(ngx_http_ha_optout_main_conf_t *hmcf)
{
    ngx_uint_t                   behind;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    if (hmcf->state_file.len == 0 || !sh->restored) {
        return 0;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    behind = (ngx_strncmp(sh->state_audit_hash, sh->audit_hash, 64) != 0);
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return behind;
}


/*
 * With the writer lock held (worker 0's timer, the recovery of a killed
 * writer): the one mechanism that brings the files up to the zone.  What
 * waits is audit lines in the queue, changes a restore could not save
 * (state_dirty), and a state file whose "audit_hash" is behind the log
 * (it must name the last line written, for "audit verify --state" and for
 * a start that finds the log rotated away).  Lines first, then the state
 * file, so that it names them.  Done at once when forced, else when
 * retry_at has passed: a second after a success at the soonest (the state
 * file follows the log at most once a second), and after a failure 1 s,
 * doubling up to 8 s.
 */

void
ngx_http_ha_optout_persist_retry(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t force)
{
    time_t                       now;
    ngx_uint_t                   ok, dirty;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;
    now = ngx_time();

    if (sh->state_dirty == 0 && sh->audit_npending == 0
        && !ngx_http_ha_optout_state_behind(hmcf))
    {
        sh->retry_delay = 0;
        return;
    }

    if (!force && now < sh->retry_at) {
        return;
    }

    ok = (ngx_http_ha_optout_audit_flush(hmcf, log) == NGX_OK);

    dirty = sh->state_dirty;

    if (dirty || ngx_http_ha_optout_state_behind(hmcf)) {
        if ((dirty ? ngx_http_ha_optout_state_save_restore(hmcf, log)
                   : ngx_http_ha_optout_state_save(hmcf, log))
            == NGX_OK)
        {
            ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
            sh->state_dirty -= ngx_min(dirty, sh->state_dirty);
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

            if (sh->state_failures) {
                ngx_log_error(NGX_LOG_NOTICE, log, 0,
                              "ha_optout: state file \"%V\" saved after %ui "
                              "failed attempts: what the zone holds (a "
                              "restored HA too) is persisted",
                              &hmcf->state_file, sh->state_failures);
                sh->state_failures = 0;
            }

        } else {
            sh->state_failures++;
            ok = 0;
        }
    }

    if (ok) {
        sh->retry_delay = 0;
        sh->retry_at = now + 1;
        return;
    }

    sh->retry_delay = sh->retry_delay ? ngx_min(sh->retry_delay * 2, 8) : 1;
    sh->retry_at = now + sh->retry_delay;
}


/*
 * A writer killed between its change and the end of its write leaves the
 * change pending in the zone, with its audit line queued (both are made in
 * one critical section).  The next writer to take the writer lock (a live
 * writer always clears its own before releasing it) publishes the change
 * to the workers, writes the line and saves the state file that the dead
 * writer may not have saved.
 */

static void
ngx_http_ha_optout_writer_recover(void)
{
    u_char                           abuf[NGX_HA_OPTOUT_ACTOR_LEN * 4];
    ngx_str_t                        upstream, actor;
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
    ngx_http_ha_optout_sh->state_dirty++;
    ngx_http_ha_optout_bump();

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    f = p.after.present ? &p.after : &p.before;

    upstream.data = p.upstream;
    upstream.len = p.upstream_len;
    actor.data = f->actor;
    actor.len = f->actor_len;

    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                  "ha_optout: the %s of \"%V\" by \"%*s\" was made by "
                  "process %P, which died before finishing it: its audit "
                  "line and state file are written now",
                  ngx_http_ha_optout_actions[p.action], &upstream,
                  (size_t) (ngx_http_ha_optout_escape(abuf, sizeof(abuf),
                                                      actor.data, actor.len)
                            - abuf),
                  abuf, p.pid);

    hmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_ha_optout_module);
    if (hmcf == NULL) {
        return;
    }

    ngx_http_ha_optout_persist_retry(hmcf, ngx_cycle->log, 1);
}
