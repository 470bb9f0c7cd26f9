
/*
 * ha-optoutctl run: a dead man's switch around a command.  The flag is set
 * with a short TTL and renewed while the command lives; if we die without
 * a chance to clear it, the server lets it lapse within one TTL.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "hoctl.h"
#include "verb.h"


#define HOCTL_CLEAR_TRIES  3


static const int  hoctl_forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };


static int  hoctl_hup_ignored;


/* never runs: the signals are blocked and taken by sigtimedwait() */

void
hoctl_run_sigchld(int signo)
{
    (void) signo;
}


long long
hoctl_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* a 202 (policy "approvers") is withdrawn: run does not wait for people */

static void
hoctl_run_withdraw(const hoctl_conn_t *c, hoctl_resp_t *r)
{
    char          path[sizeof("v1/approvals/") + 64];
    json_t       *j;
    const char   *id;
    hoctl_resp_t  d;

    j = json_loads(r->body ? r->body : "", 0, NULL);
    id = json_string_value(json_object_get(json_object_get(j, "approval"),
                                           "id"));

    if (id && strlen(id) == 16) {
        snprintf(path, sizeof(path), "v1/approvals/%s", id);
        (void) hoctl_request(c, "DELETE", path, NULL, NULL, &d);
        hoctl_resp_free(&d);
    }

    json_decref(j);
}


static int
hoctl_run_heartbeat(const hoctl_conn_t *c, const char *path, const char *ttl,
    const char *upstream)
{
    int            rc;
    char          *body;
    json_t        *b;
    hoctl_resp_t   r;

    b = json_pack("{s:s}", "ttl", ttl);
    body = json_dumps(b, JSON_COMPACT);
    json_decref(b);

    rc = hoctl_request(c, "PATCH", path, body, NULL, &r);
    free(body);

    if (rc != HOCTL_OK) {
        hoctl_warn("%s: cannot renew the flag: %s", upstream, r.error);

    } else if (r.status == 202) {
        /* policy "approvers": an extension waits for approval */
        hoctl_run_withdraw(c, &r);
        hoctl_warn("%s: cannot renew the flag: the policy wants approvers "
                   "for an extension", upstream);
        rc = HOCTL_REFUSED;
    }

    hoctl_resp_free(&r);
    return rc;
}


static int
hoctl_run_clear(const hoctl_conn_t *c, const char *path, const char *upstream)
{
    int            rc, i;
    char          *line;
    json_t        *j;
    hoctl_resp_t   r;

    for (i = 0; i < HOCTL_CLEAR_TRIES; i++) {
        if (i > 0) {
            sleep(1);
        }

        rc = hoctl_request(c, "DELETE", path, NULL, NULL, &r);

        if (rc == HOCTL_OK) {
            /* our flag is gone; say so honestly if another layer acts */
            j = json_loads(r.body ? r.body : "", JSON_DECODE_ANY, NULL);
            hoctl_resp_free(&r);

            if (hoctl_clear_outcome(j, upstream, 0, &line) < 0) {
                hoctl_warn("%s: flag cleared; whether HA is back cannot be "
                           "told", hoctl_safe(upstream));
            } else if (line != NULL) {
                hoctl_warn("%s", line);
            }

            free(line);
            json_decref(j);
            return HOCTL_OK;
        }

        hoctl_warn("%s: cannot clear the flag: %s", upstream, r.error);
        hoctl_resp_free(&r);

        /* only an unreachable server is worth asking again */
        if (rc != HOCTL_UNREACHABLE) {
            break;
        }
    }

    hoctl_warn("%s: the flag stays until its TTL runs out", upstream);
    return rc;
}


/*
 * COMMAND in a child; never returns there.  run and run --etcd share it
 * (with hoctl_run_signals()), so both give the command the same signals.
 */
pid_t
hoctl_run_spawn(char **argv, const sigset_t *mask)
{
    int    err;
    pid_t  pid;

    pid = fork();
    if (pid != 0) {
        return pid;
    }

    /*
     * The command gets the signal mask we were started with, and default
     * dispositions for what we pass on: started from a shell that ignores
     * SIGINT and SIGQUIT (a background job, CI), it would otherwise ignore
     * the very signals we forward.  SIGHUP stays as inherited, so that
     * "nohup ha-optoutctl run ..." keeps the command alive on a hangup.
     */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (hoctl_hup_ignored) {
        signal(SIGHUP, SIG_IGN);
    } else {
        signal(SIGHUP, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, mask, NULL);

    execvp(argv[0], argv);

    err = errno;
    fprintf(stderr, "%s: cannot run \"%s\": %s\n", hoctl_progname, argv[0],
            strerror(err));
    _exit(err == ENOENT ? 127 : 126);
}


/*
 * Sets the flag with SIGINT and friends already blocked: a Ctrl-C during
 * the PUT must still end in a DELETE.
 */
static int
hoctl_run_set(const hoctl_conn_t *c, const hoctl_flag_t *f, const char *path,
    const char *cmd, long interval)
{
    int            rc;
    char          *body, *what;
    json_t        *j;
    hoctl_resp_t   r;

    body = hoctl_flag_body(f);
    rc = hoctl_request(c, "PUT", path, body, NULL, &r);
    free(body);

    if (rc != HOCTL_OK) {
        fprintf(stderr, "error: %s\n", r.error);
        hoctl_warn("%s: flag not set, \"%s\" not run", f->upstream, cmd);
        hoctl_resp_free(&r);
        return rc;
    }

    if (r.status == 202) {
        hoctl_run_withdraw(c, &r);
        hoctl_warn("%s: the policy wants approvers for this upstream (use "
                   "set and 'approvals'); flag not set, \"%s\" not run",
                   f->upstream, cmd);
        hoctl_resp_free(&r);
        return HOCTL_REFUSED;
    }

    j = json_loads(r.body ? r.body : "", 0, NULL);
    what = hoctl_flag_summary(j);
    hoctl_warn("%s: HA suspended (%s), ttl %s renewed every %ld.%03lds, "
               "running \"%s\"", f->upstream, what, f->ttl, interval / 1000,
               interval % 1000, cmd);
    free(what);
    json_decref(j);
    hoctl_resp_free(&r);

    return HOCTL_OK;
}


/*
 * Waits for the command, renewing the flag every "interval" ms and passing
 * signals on; returns its wait status.
 */
static int
hoctl_run_wait(const hoctl_conn_t *c, const hoctl_flag_t *f,
    const char *path, long interval, pid_t pid, const sigset_t *set)
{
    int               status;
    long long         next, now;
    hoctl_conn_t      hb;

    /* a heartbeat that hangs must not outlive the TTL it is renewing */
    hb = *c;
    if (hb.timeout > interval / 1000) {
        hb.timeout = interval / 1000 > 2 ? interval / 1000 : 2;
    }

    status = 0;
    next = hoctl_now_ms() + interval;

    for ( ;; ) {
        now = hoctl_now_ms();

        if (now >= next) {
            if (hoctl_run_heartbeat(&hb, path, f->ttl, f->upstream)
                == HOCTL_OK)
            {
                next = now + interval;

            } else {
                /* try again soon: the TTL is running out meanwhile */
                next = now + (interval < 5000 ? interval : 5000);
            }

            continue;
        }

        if (hoctl_run_take_signal(set, next - now, pid, &status)) {
            return status;
        }
    }
}


/*
 * Takes one signal of *set within WAIT ms: answers 1 with *status once
 * the command PID has exited, 0 when the time is up (heartbeat time), on
 * EINTR, or after passing a signal on.  hoctl_run_wait() and the etcd
 * run's wait loop share it.
 */
int
hoctl_run_take_signal(const sigset_t *set, long long wait, pid_t pid,
    int *status)
{
    int               sig;
    siginfo_t         info;
    struct timespec   ts;

    ts.tv_sec = wait / 1000;
    ts.tv_nsec = (wait % 1000) * 1000000;

    sig = sigtimedwait(set, &info, &ts);

    if (sig == -1) {
        return 0;               /* EAGAIN: heartbeat time; EINTR */
    }

    if (sig == SIGCHLD) {
        return waitpid(pid, status, WNOHANG) == pid;
    }

    /*
     * A Ctrl-C at the terminal reaches the whole foreground process
     * group (si_code SI_KERNEL): the command has it already.  A kill()
     * aimed at us is passed on.  Either way we wait for the command
     * and clear the flag after it.
     */
    if (info.si_code != SI_KERNEL) {
        kill(pid, sig);
    }

    return 0;
}


/* the signals we pass on (and SIGCHLD) blocked into *set; *old the mask
 * before, for the command; run and run --etcd */
void
hoctl_run_signals(sigset_t *set, sigset_t *old)
{
    size_t             i;
    struct sigaction   sa, sa_old;

    /*
     * Signals wait in the mask until hoctl_run_wait() takes them with
     * sigtimedwait().  SIGCHLD gets a handler since a blocked signal whose
     * default is to be ignored might otherwise be dropped.
     */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = hoctl_run_sigchld;
    sigaction(SIGCHLD, &sa, NULL);

    /*
     * The same handler for every signal we pass on, whatever we inherited:
     * a signal whose disposition is "ignore" may be discarded even while
     * blocked (POSIX leaves it open), and a shell that starts us in the
     * background ignores SIGINT and SIGQUIT.  A kill() aimed at us is
     * always passed on to the command.
     */
    if (sigaction(SIGHUP, NULL, &sa_old) == 0
        && sa_old.sa_handler == SIG_IGN)
    {
        hoctl_hup_ignored = 1;
    }

    for (i = 0; i < sizeof(hoctl_forwarded) / sizeof(int); i++) {
        sigaction(hoctl_forwarded[i], &sa, NULL);
    }

    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    for (i = 0; i < sizeof(hoctl_forwarded) / sizeof(int); i++) {
        sigaddset(set, hoctl_forwarded[i]);
    }
    sigprocmask(SIG_BLOCK, set, old);
}


int
hoctl_run(const hoctl_conn_t *c, const hoctl_flag_t *f, char **argv)
{
    int        rc, status;
    char      *path;
    long       interval;
    pid_t      pid;
    sigset_t   set, old;

    interval = hoctl_parse_duration(f->ttl) * 1000 / 3;

    hoctl_run_signals(&set, &old);

    if (c->token != NULL) {
        hoctl_warn("a static token is good for one write while nginx "
                   "refuses replays: the heartbeat and the clear need "
                   "--key (or ha_optout_admin_replay off)");
    }

    path = hoctl_upstream_path(f->upstream);

    rc = hoctl_run_set(c, f, path, argv[0], interval);
    if (rc != HOCTL_OK) {
        free(path);
        return rc;
    }

    fflush(stdout);
    fflush(stderr);

    pid = hoctl_run_spawn(argv, &old);
    if (pid < 0) {
        hoctl_warn("fork: %s", strerror(errno));
        hoctl_run_clear(c, path, f->upstream);
        free(path);
        return HOCTL_REFUSED;
    }

    status = hoctl_run_wait(c, f, path, interval, pid, &set);

    hoctl_run_clear(c, path, f->upstream);
    free(path);

    return hoctl_run_exit(status);
}


/* COMMAND's wait status as our exit code: its own, or 128+N for signal N */
int
hoctl_run_exit(int status)
{
    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }

    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }

    return HOCTL_REFUSED;
}


int
hoctl_verb_run(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char  err[HOCTL_ERRLEN];

    if (hoctl_flag_check(&a->flag, 1, err, sizeof(err)) != 0) {
        return hoctl_usage(v, "%s", err);
    }

    if (a->flag.dry_run) {
        return hoctl_usage(v, "--dry-run does not apply to 'run'");
    }

    if (a->nargs == 0) {
        return hoctl_usage(v, "no COMMAND given after --");
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_run(&a->conn, &a->etcd, &a->flag, a->args);
    }

    if (a->conn.url == NULL) {
        return hoctl_usage(v, "--url is required (or HA_OPTOUT_URL), e.g. "
                           "--url http://127.0.0.1:8080/ha-optout/");
    }

    return hoctl_run(&a->conn, &a->flag, a->args);
}
