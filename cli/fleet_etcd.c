
/*
 * ha-optoutctl set|clear|run --etcd: the writer side of the fleet (SPEC
 * section 11).  A record (record.c) is stored under
 * <prefix>/<env>/flags/<upstream> on a lease of the flag's TTL; status
 * --etcd and fleet status --etcd are fleet_status.c.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "etcd.h"

char *
hoctl_flag_key(hoctl_etcd_t *e, const char *upstream)
{
    char    *k;
    size_t   len;

    len = strlen(e->prefix) + sizeof("flags/") + strlen(upstream);
    k = malloc(len);
    snprintf(k, len, "%sflags/%s", e->prefix, upstream);

    return k;
}


static void
hoctl_kv_b64(json_t *obj, const char *name, const char *s)
{
    char  *b;

    b = hoctl_b64(s, strlen(s));
    json_object_set_new(obj, name, json_string(b));
    free(b);
}


/* the txn's compare on key: if_match "0" absent, N at mod_revision N */
static int
hoctl_etcd_compare(json_t *cmp, const char *key, const char *if_match,
    char *err, size_t errlen)
{
    char     *end;
    json_t   *op;
    int64_t   want;

    want = strtoll(if_match, &end, 10);
    if (*end != '\0' || want < 0) {
        snprintf(err, errlen, "--if-match takes a revision (0: only "
                 "if there is no record)");
        return HOCTL_USAGE;
    }

    op = json_object();
    hoctl_kv_b64(op, "key", key);
    json_object_set_new(op, "result", json_string("EQUAL"));

    if (want == 0) {
        json_object_set_new(op, "target", json_string("CREATE"));
        json_object_set_new(op, "create_revision", json_string("0"));
    } else {
        json_object_set_new(op, "target", json_string("MOD"));
        json_object_set_new(op, "mod_revision", hoctl_json_str_int(want));
    }

    json_array_append_new(cmp, op);

    return HOCTL_OK;
}


/* the txn's put of value on lease, or delete (value NULL), else a read */
static void
hoctl_etcd_write_ops(json_t *req, const char *key, const char *value,
    int64_t lease)
{
    json_t  *op;

    op = json_object();
    hoctl_kv_b64(op, "key", key);

    if (value != NULL) {
        hoctl_kv_b64(op, "value", value);
        if (lease != 0) {
            json_object_set_new(op, "lease", hoctl_json_str_int(lease));
        }
        json_object_set_new(op, "prev_kv", json_true());
        json_object_set_new(req, "success",
                            json_pack("[{s:o}]", "request_put", op));

    } else {
        /* the deleted record's lease, to end it too (no copy on it) */
        json_object_set_new(op, "prev_kv", json_true());
        json_object_set_new(req, "success",
                            json_pack("[{s:o}]", "request_delete_range", op));
    }

    op = json_object();
    hoctl_kv_b64(op, "key", key);
    json_object_set_new(req, "failure",
                        json_pack("[{s:o}]", "request_range", op));
}


/*
 * One txn on key: compare (if_match: NULL none, "0" absent, N its
 * mod_revision), then put value on lease, or delete (value NULL).
 * Answers OK with *revision, REFUSED when the compare failed (and *current
 * is the key's mod_revision now), or the failure.
 */
static int
hoctl_etcd_write(hoctl_etcd_t *e, const char *key, const char *if_match,
    const char *value, int64_t lease, int64_t *revision, int64_t *current,
    int64_t *deleted, int64_t *deleted_lease, char *err, size_t errlen)
{
    int      rc;
    json_t  *req, *cmp, *resp, *r, *kvs;

    req = json_object();
    cmp = json_array();

    if (if_match != NULL
        && hoctl_etcd_compare(cmp, key, if_match, err, errlen) != HOCTL_OK)
    {
        json_decref(req);
        json_decref(cmp);
        return HOCTL_USAGE;
    }

    json_object_set_new(req, "compare", cmp);

    hoctl_etcd_write_ops(req, key, value, lease);

    rc = hoctl_etcd_call(e, "/v3/kv/txn", req, &resp, err, errlen);
    if (rc != HOCTL_OK) {
        return rc;
    }

    *revision = hoctl_json_int(json_object_get(json_object_get(resp,
                                                   "header"), "revision"));
    r = json_array_get(json_object_get(resp, "responses"), 0);

    if (!json_is_true(json_object_get(resp, "succeeded"))) {
        kvs = json_object_get(json_object_get(r, "response_range"), "kvs");
        *current = hoctl_json_int(json_object_get(json_array_get(kvs, 0),
                                                  "mod_revision"));
        json_decref(resp);
        if (*current) {
            snprintf(err, errlen, "412 PreconditionFailed: the fleet record "
                     "is at revision %" PRId64 ", not %s", *current,
                     if_match);
        } else {
            snprintf(err, errlen, "412 PreconditionFailed: there is no "
                     "fleet record (revision %s was asked for)", if_match);
        }
        return HOCTL_REFUSED;
    }

    if (deleted != NULL) {
        *deleted = hoctl_json_int(json_object_get(
                       json_object_get(r, "response_delete_range"),
                       "deleted"));
    }

    /* the lease of the record deleted or replaced */
    if (deleted_lease != NULL) {
        *deleted_lease = value != NULL
            ? hoctl_json_int(json_object_get(json_object_get(
                  json_object_get(r, "response_put"), "prev_kv"), "lease"))
            : hoctl_json_int(json_object_get(json_array_get(
                  json_object_get(json_object_get(r,
                      "response_delete_range"), "prev_kvs"), 0), "lease"));
    }

    json_decref(resp);
    return HOCTL_OK;
}


int
hoctl_etcd_fail(int rc, const char *err)
{
    if (rc == HOCTL_USAGE) {
        hoctl_warn("%s", err);
    } else {
        fprintf(stderr, "error: %s\n", err);
    }

    return rc;
}


static long
hoctl_fleet_ttl(const hoctl_flag_t *f, char *err, size_t errlen)
{
    long  ttl;

    ttl = hoctl_parse_duration(f->ttl);
    if (ttl <= 0) {
        snprintf(err, errlen, "a fleet flag lives on an etcd lease: "
                 "--ttl must be Ns, Nm or Nh (not none)");
        return -1;
    }

    return ttl;
}


/*
 * Grants a lease of the TTL, signs the record and writes it: the start of
 * set and run.  On failure the lease is revoked again.
 */
static int
hoctl_etcd_put_record(hoctl_etcd_t *e, const hoctl_conn_t *c,
    const hoctl_etcd_opts_t *o, const hoctl_flag_t *f, long ttl,
    int64_t *lease, int64_t *revision, json_t **record, char *err,
    size_t errlen)
{
    int       rc;
    char     *key, *value, buf[32], e2[HOCTL_ERRLEN];
    time_t    now;
    int64_t   current, old;

    now = time(NULL);
    *record = hoctl_record_new(c, f, o->environment, now, ttl);
    hoctl_iso_time(now + ttl, buf, sizeof(buf));
    json_object_set_new(*record, "expires_at", json_string(buf));

    /* a key that cannot sign is a usage error, before etcd is asked */
    value = hoctl_record_sign(c, *record, err, errlen);
    if (value == NULL) {
        json_decref(*record);
        *record = NULL;
        return HOCTL_USAGE;
    }

    free(value);

    rc = hoctl_etcd_lease_grant(e, ttl, lease, err, errlen);
    if (rc != HOCTL_OK) {
        json_decref(*record);
        *record = NULL;
        return rc;
    }

    /*
     * the lease is signed too: agents apply the record only on that lease,
     * so a copy put back into etcd after its writer's lease is gone (or on
     * a lease of its own) is refused
     */
    json_object_set_new(*record, "lease", hoctl_json_str_int(*lease));

    value = hoctl_record_sign(c, *record, err, errlen);
    if (value == NULL) {
        hoctl_etcd_lease_revoke(e, *lease, e2, sizeof(e2));
        json_decref(*record);
        *record = NULL;
        return HOCTL_USAGE;
    }

    key = hoctl_flag_key(e, f->upstream);
    old = 0;
    rc = hoctl_etcd_write(e, key, f->if_match, value, *lease, revision,
                          &current, NULL, &old, err, errlen);
    free(key);
    free(value);

    /* the record replaced: its lease ends, so no copy lives on it */
    if (rc == HOCTL_OK && old != 0 && old != *lease) {
        hoctl_etcd_lease_revoke(e, old, e2, sizeof(e2));
    }

    if (rc != HOCTL_OK) {
        hoctl_etcd_lease_revoke(e, *lease, e2, sizeof(e2));
        json_decref(*record);
        *record = NULL;
    }

    return rc;
}


int
hoctl_etcd_set(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, int json)
{
    int            rc;
    long           ttl;
    char          *what, *s, err[HOCTL_ERRLEN];
    json_t        *record;
    int64_t        lease, revision;
    hoctl_etcd_t   e;

    ttl = hoctl_fleet_ttl(f, err, sizeof(err));
    if (ttl < 0) {
        return hoctl_etcd_fail(HOCTL_USAGE, err);
    }

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    if (f->dry_run) {
        record = hoctl_record_new(c, f, o->environment, time(NULL), ttl);
        s = hoctl_record_sign(c, record, err, sizeof(err));
        json_decref(record);
        hoctl_etcd_free(&e);

        if (s == NULL) {
            return hoctl_etcd_fail(HOCTL_USAGE, err);
        }

        printf("%s\n", s);
        free(s);
        return HOCTL_OK;
    }

    rc = hoctl_etcd_put_record(&e, c, o, f, ttl, &lease, &revision, &record,
                               err, sizeof(err));
    hoctl_etcd_free(&e);

    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    if (json) {
        json_object_set_new(record, "revision", json_integer(revision));
        json_object_set_new(record, "lease", hoctl_json_str_int(lease));
        s = json_dumps(record, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);

    } else {
        what = hoctl_flag_summary(record);
        printf("%s: HA suspended on the fleet %s: %s until %s "
               "(revision %" PRId64 ")\n", f->upstream, o->environment, what,
               json_string_value(json_object_get(record, "expires_at")),
               revision);
        free(what);
    }

    json_decref(record);
    return HOCTL_OK;
}


int
hoctl_etcd_clear(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, int json)
{
    int            rc;
    char          *key, err[HOCTL_ERRLEN], e2[HOCTL_ERRLEN];
    int64_t        revision, current, deleted, lease;
    hoctl_etcd_t   e;

    (void) c;

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    key = hoctl_flag_key(&e, f->upstream);
    deleted = 0;
    lease = 0;
    rc = hoctl_etcd_write(&e, key, f->if_match, NULL, 0, &revision, &current,
                          &deleted, &lease, err, sizeof(err));
    free(key);

    /*
     * the record's lease goes too: while it lives, a copy of the record
     * put back on it would still be on "the lease its writer signed"
     */
    if (rc == HOCTL_OK && lease != 0
        && hoctl_etcd_lease_revoke(&e, lease, e2, sizeof(e2)) != HOCTL_OK)
    {
        hoctl_warn("%s: the record is deleted, but its lease could not be "
                   "revoked (%s): it ends by itself", f->upstream, e2);
    }

    hoctl_etcd_free(&e);

    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    if (json) {
        printf("{\"upstream\":\"%s\",\"environment\":\"%s\","
               "\"deleted\":%" PRId64 ",\"revision\":%" PRId64 "}\n",
               f->upstream, o->environment, deleted, revision);

    } else {
        printf("%s: HA restored on the fleet %s%s (revision %" PRId64 ")\n",
               f->upstream, o->environment,
               deleted ? "" : " (there was no fleet flag)", revision);
    }

    return HOCTL_OK;
}


/* ---------------------------------------------------------------- run */

/*
 * A heartbeat: keep the lease, then re-sign the record with a fresh
 * expires_at, unless another writer replaced it meanwhile.
 */
static int
hoctl_erun_heartbeat(hoctl_etcd_t *e, const hoctl_conn_t *c,
    const hoctl_flag_t *f, json_t *record, long ttl, int64_t lease,
    int64_t *revision, int *lost)
{
    int       rc;
    long      left;
    char     *key, *value, buf[32], rev[32], err[HOCTL_ERRLEN];
    int64_t   nrev, current;

    rc = hoctl_etcd_lease_keepalive(e, lease, &left, err, sizeof(err));
    if (rc != HOCTL_OK) {
        hoctl_warn("%s: cannot renew the lease: %s", f->upstream, err);
        return rc;
    }

    if (left <= 0) {
        hoctl_warn("%s: the lease has expired: HA is back on the fleet",
                   f->upstream);
        *lost = 1;
        return HOCTL_REFUSED;
    }

    hoctl_iso_time(time(NULL) + ttl, buf, sizeof(buf));
    json_object_set_new(record, "expires_at", json_string(buf));

    value = hoctl_record_sign(c, record, err, sizeof(err));
    if (value == NULL) {
        hoctl_warn("%s: %s", f->upstream, err);
        return HOCTL_USAGE;
    }

    snprintf(rev, sizeof(rev), "%" PRId64, *revision);
    key = hoctl_flag_key(e, f->upstream);
    rc = hoctl_etcd_write(e, key, rev, value, lease, &nrev, &current, NULL,
                          NULL, err, sizeof(err));
    free(key);
    free(value);

    if (rc == HOCTL_OK) {
        *revision = nrev;

    } else if (rc == HOCTL_REFUSED) {
        hoctl_warn("%s: the fleet record was replaced or cleared by "
                   "someone else (%s): no longer renewing it", f->upstream,
                   err);
        *lost = 1;

    } else {
        hoctl_warn("%s: cannot renew the record: %s", f->upstream, err);
    }

    return rc;
}


/*
 * While COMMAND runs: a heartbeat every interval (every second after a
 * failed one, none once the record is lost), signals passed on.  Answers
 * COMMAND's wait status.
 */
static int
hoctl_erun_wait(hoctl_etcd_t *e, const hoctl_conn_t *c,
    const hoctl_flag_t *f, json_t *record, long ttl, int64_t lease,
    int64_t *revision, long interval, pid_t pid, sigset_t *set)
{
    int               status, lost;
    long long         next, now;

    status = 0;
    lost = 0;
    next = hoctl_now_ms() + interval;

    for ( ;; ) {
        now = hoctl_now_ms();

        if (now >= next) {
            if (lost) {
                next = now + 3600 * 1000LL;

            } else if (hoctl_erun_heartbeat(e, c, f, record, ttl, lease,
                                            revision, &lost)
                       == HOCTL_OK)
            {
                next = now + interval;

            } else {
                next = now + (interval < 1000 ? interval : 1000);
            }

            continue;
        }

        if (hoctl_run_take_signal(set, next - now, pid, &status)) {
            return status;
        }
    }
}


/* revoking the lease deletes the record (if it is still ours) */
static void
hoctl_erun_revoke(hoctl_etcd_t *e, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, int64_t lease, long ttl)
{
    int   i, rc;
    char  err[HOCTL_ERRLEN];

    rc = HOCTL_OK;

    for (i = 0; i < 3; i++) {
        if (i > 0) {
            sleep(1);
        }

        rc = hoctl_etcd_lease_revoke(e, lease, err, sizeof(err));
        if (rc == HOCTL_OK) {
            hoctl_warn("%s: HA restored on the fleet %s", f->upstream,
                       o->environment);
            break;
        }

        hoctl_warn("%s: cannot revoke the lease: %s", f->upstream, err);
    }

    if (rc != HOCTL_OK) {
        hoctl_warn("%s: the fleet flag lapses with its lease, within %lds",
                   f->upstream, ttl);
    }
}


int
hoctl_etcd_run(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, char **argv)
{
    int            rc, status;
    long           ttl, interval;
    char          *what, err[HOCTL_ERRLEN];
    pid_t          pid;
    json_t        *record;
    int64_t        lease, revision;
    sigset_t       set, old;
    hoctl_etcd_t   e;

    ttl = hoctl_fleet_ttl(f, err, sizeof(err));
    if (ttl < 0) {
        return hoctl_etcd_fail(HOCTL_USAGE, err);
    }

    interval = ttl * 1000 / 3;

    hoctl_run_signals(&set, &old);

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    /* a heartbeat that hangs must not outlive the lease it renews */
    e.timeout = interval / 1000 > 2 ? interval / 1000 : 2;

    rc = hoctl_etcd_put_record(&e, c, o, f, ttl, &lease, &revision, &record,
                               err, sizeof(err));
    if (rc != HOCTL_OK) {
        hoctl_etcd_fail(rc, err);
        hoctl_warn("%s: fleet flag not set, \"%s\" not run", f->upstream,
                   argv[0]);
        hoctl_etcd_free(&e);
        return rc;
    }

    what = hoctl_flag_summary(record);
    hoctl_warn("%s: HA suspended on the fleet %s (%s), revision %" PRId64
               ", lease of %lds renewed every %ld.%03lds, running \"%s\"",
               f->upstream, o->environment, what, revision, ttl,
               interval / 1000, interval % 1000, argv[0]);
    free(what);

    fflush(stdout);
    fflush(stderr);

    pid = hoctl_run_spawn(argv, &old);

    if (pid < 0) {
        hoctl_warn("fork: %s", strerror(errno));
        status = -1;

    } else {
        status = hoctl_erun_wait(&e, c, f, record, ttl, lease, &revision,
                                 interval, pid, &set);
    }

    hoctl_erun_revoke(&e, o, f, lease, ttl);

    json_decref(record);
    hoctl_etcd_free(&e);

    if (status == -1) {
        return HOCTL_REFUSED;
    }

    return hoctl_run_exit(status);
}
