
/*
 * ha-optoutctl agent: beside each nginx, holds its fleet layer equal to
 * what etcd says (SPEC section 11).
 *
 *   - full reconcile (range of <prefix>/<env>/flags/) at start and after
 *     every reconnect, then a watch from the revision after it;
 *   - a record is applied only when its signature verifies against a
 *     --trust-key; one that does not is refused, reported, sent to nginx
 *     to be audited as "denied", and counts as no flag (HA stays on);
 *   - PUT v1/fleet/{upstream} with ttl = expires_at - now, so the local
 *     flag never outlives the record; DELETE when the key goes;
 *   - each second the local fleet layer is compared with what was
 *     applied (an nginx restarted without state gets it again);
 *   - a report under <prefix>/<env>/agents/<host> on a short lease, and
 *     <prefix>/<env>/members/<host> (no lease) so a silent agent shows;
 *   - etcd unreachable: retry with backoff, apply nothing new; local
 *     fleet flags lapse at their own expires_at.
 *
 * This file is the etcd side and the loop; what the agent asks of its
 * nginx is agent_nginx.c, --config FILE is agent_config.c.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "verb.h"


static volatile sig_atomic_t  hoctl_agent_stop;
static volatile sig_atomic_t  hoctl_agent_hup;


/* SIGTERM, SIGINT: stop; SIGHUP: reload (hoctl_agent_reload()) */
static void
hoctl_agent_signal(int signo)
{
    if (signo == SIGHUP) {
        hoctl_agent_hup = 1;

    } else {
        hoctl_agent_stop = 1;
    }
}


/* text from etcd or nginx goes to our log with control bytes escaped */
void
hoctl_agent_log(hoctl_agent_t *a, const char *fmt, ...)
{
    char            buf[1024], ts[32];
    va_list         ap;
    unsigned char  *p;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    for (p = (unsigned char *) buf; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            *p = '?';
        }
    }

    hoctl_iso_time(time(NULL), ts, sizeof(ts));
    fprintf(stderr, "%s %s: agent %s: %s\n", ts, hoctl_progname, a->host,
            buf);
    fflush(stderr);
}


hoctl_agent_up_t *
hoctl_agent_up(hoctl_agent_t *a, const char *name, int create)
{
    int                i;
    hoctl_agent_up_t  *u;

    for (i = 0; i < a->nups; i++) {
        if (strcmp(a->ups[i].name, name) == 0) {
            return &a->ups[i];
        }
    }

    if (!create || strlen(name) >= sizeof(a->ups[0].name)) {
        return NULL;
    }

    if (a->nups < HOCTL_AGENT_MAX) {
        u = &a->ups[a->nups++];

    } else {
        /*
         * full (keys anyone with write access to etcd can make): take
         * a slot that holds nothing in nginx and wants nothing, one that
         * remembers no ended lease first, so junk keys can neither keep
         * a flag from being removed nor make a cleared one forgotten
         */
        u = NULL;

        for (i = 0; i < a->nups; i++) {
            if (a->ups[i].state != HOCTL_UP_DESIRED
                && a->ups[i].applied == 0
                && (u == NULL || (u->nretired && !a->ups[i].nretired)))
            {
                u = &a->ups[i];
            }
        }

        if (u == NULL) {
            return NULL;
        }

        json_decref(u->record);
    }

    memset(u, 0, sizeof(hoctl_agent_up_t));
    snprintf(u->name, sizeof(u->name), "%s", name);
    u->result = "none";

    return u;
}


static int64_t
hoctl_agent_lease_of(json_t *record)
{
    const char  *s;

    s = json_string_value(json_object_get(record, "lease"));
    return s ? strtoll(s, NULL, 10) : 0;
}


/*
 * The lease of a record that was deleted or replaced by one on another
 * lease: a copy of it put back later (on that lease granted again by
 * whoever can write to etcd) is a replay, refused.
 */
static void
hoctl_agent_retire(hoctl_agent_up_t *u, int64_t lease)
{
    int  i;

    if (lease == 0) {
        return;
    }

    for (i = 0; i < HOCTL_AGENT_RETIRED; i++) {
        if (u->retired[i] == lease) {
            return;
        }
    }

    u->retired[u->nretired++ % HOCTL_AGENT_RETIRED] = lease;
}


static int
hoctl_agent_retired(hoctl_agent_up_t *u, int64_t lease)
{
    int  i;

    for (i = 0; i < HOCTL_AGENT_RETIRED; i++) {
        if (lease != 0 && u->retired[i] == lease) {
            return 1;
        }
    }

    return 0;
}


static void
hoctl_agent_absent(hoctl_agent_t *a, hoctl_agent_up_t *u, int64_t revision)
{
    (void) a;

    hoctl_agent_retire(u, hoctl_agent_lease_of(u->record));
    json_decref(u->record);
    u->record = NULL;
    u->state = HOCTL_UP_ABSENT;
    u->revision = revision;
    u->dirty = 1;
}


/* the record a flag key holds, verified and checked against this agent and
 * upstream, or NULL with the reason in err */
static json_t *
hoctl_agent_verified(hoctl_agent_t *a, hoctl_agent_up_t *u, json_t *kv,
    const char *name, char *err, size_t errlen)
{
    char        *value;
    size_t       len;
    json_t      *rec;
    const char  *s;

    value = hoctl_kv_value(kv, &len);
    rec = value ? hoctl_record_verify(value, a->trust, err, errlen)
                : NULL;
    if (value == NULL) {
        snprintf(err, errlen, "the value is not base64");
    }
    free(value);

    if (rec == NULL) {
        return NULL;
    }

    s = json_string_value(json_object_get(rec, "upstream"));
    if (s == NULL || strcmp(s, name) != 0) {
        snprintf(err, errlen, "the signed record is for upstream "
                 "\"%s\", not \"%s\"", s ? s : "", name);
        json_decref(rec);
        rec = NULL;

    } else if ((s = json_string_value(json_object_get(rec,
                                              "environment"))) == NULL
               || strcmp(s, a->opts->environment) != 0)
    {
        snprintf(err, errlen, "the signed record is for "
                 "environment \"%s\", not \"%s\"", s ? s : "",
                 a->opts->environment);
        json_decref(rec);
        rec = NULL;
    }

    /* the record lives on the lease its writer signed, or not at all */
    if (rec != NULL
        && ((s = json_string_value(json_object_get(rec, "lease")))
            == NULL
            || strtoll(s, NULL, 10) == 0
            || strtoll(s, NULL, 10)
               != hoctl_json_int(json_object_get(kv, "lease"))))
    {
        snprintf(err, errlen, "the record is not on the lease its "
                 "writer signed (%s): a copy put back into etcd",
                 s ? s : "none");
        json_decref(rec);
        rec = NULL;
    }

    if (rec != NULL && hoctl_agent_retired(u, hoctl_agent_lease_of(rec)))
    {
        snprintf(err, errlen, "the record's lease %s ended when it "
                 "was cleared or replaced: a copy put back into etcd",
                 json_string_value(json_object_get(rec, "lease")));
        json_decref(rec);
        rec = NULL;
    }

    return rec;
}


/* a PUT of a flag key: verify it and make it what this upstream wants */
static void
hoctl_agent_ingest(hoctl_agent_t *a, json_t *kv)
{
    char              *key, err[HOCTL_ERRLEN];
    time_t             exp;
    json_t            *rec;
    int64_t            rev;
    const char        *name;
    hoctl_agent_up_t  *u;

    key = hoctl_kv_key(kv);
    if (key == NULL || strncmp(key, a->flags_key, a->flags_len) != 0
        || key[a->flags_len] == '\0' || strchr(key + a->flags_len, '/'))
    {
        free(key);
        return;
    }

    name = key + a->flags_len;
    u = hoctl_agent_up(a, name, 1);
    if (u == NULL) {
        hoctl_agent_log(a, "%s: too many upstreams, ignored", name);
        free(key);
        return;
    }

    rev = hoctl_json_int(json_object_get(kv, "mod_revision"));
    if (rev != 0 && rev == u->revision && u->state != HOCTL_UP_ABSENT) {
        free(key);
        return;                 /* seen already (reconcile after watch) */
    }

    rec = hoctl_agent_verified(a, u, kv, name, err, sizeof(err));

    /* a verified record on a new lease ends the one before */
    if (rec != NULL && u->record != NULL
        && hoctl_agent_lease_of(rec) != hoctl_agent_lease_of(u->record))
    {
        hoctl_agent_retire(u, hoctl_agent_lease_of(u->record));
    }

    json_decref(u->record);
    u->record = NULL;
    u->revision = rev;
    u->dirty = 1;

    if (rec == NULL) {
        u->state = HOCTL_UP_REFUSED;
        u->result = "refused";
        snprintf(u->message, sizeof(u->message), "%s", err);
        hoctl_agent_log(a, "%s: revision %" PRId64 " refused: %s", name, rev,
                        err);
        free(key);
        return;
    }

    exp = hoctl_parse_iso(json_string_value(json_object_get(rec,
                                                            "expires_at")));
    if (exp <= time(NULL)) {
        json_decref(rec);
        u->state = HOCTL_UP_ABSENT;
        hoctl_agent_log(a, "%s: revision %" PRId64 " has expired", name,
                        rev);
        free(key);
        return;
    }

    u->state = HOCTL_UP_DESIRED;
    u->record = rec;
    u->expires_at = exp;

    free(key);
}


static void
hoctl_agent_watch_event(void *ctx, json_t *result)
{
    char              *key;
    size_t             i;
    json_t            *ev, *kv;
    int64_t            rev;
    const char        *type;
    hoctl_agent_t     *a = ctx;
    hoctl_agent_up_t  *u;

    json_array_foreach(json_object_get(result, "events"), i, ev) {
        kv = json_object_get(ev, "kv");
        type = json_string_value(json_object_get(ev, "type"));

        if (type != NULL && strcmp(type, "DELETE") == 0) {
            key = hoctl_kv_key(kv);
            rev = hoctl_json_int(json_object_get(kv, "mod_revision"));

            if (key != NULL
                && strncmp(key, a->flags_key, a->flags_len) == 0)
            {
                u = hoctl_agent_up(a, key + a->flags_len, 0);
                if (u != NULL) {
                    hoctl_agent_log(a, "%s: record deleted (revision %"
                                    PRId64 ")", u->name, rev);
                    hoctl_agent_absent(a, u, rev);
                }
            }

            free(key);
            continue;
        }

        hoctl_agent_ingest(a, kv);
    }

    rev = hoctl_json_int(json_object_get(json_object_get(result, "header"),
                                         "revision"));
    if (rev > a->revision) {
        a->revision = rev;
        a->reported_dirty = 1;
    }

    if (json_object_get(result, "compact_revision") != NULL) {
        hoctl_agent_log(a, "watch compacted: reconciling");
    }
}


/* the whole flags prefix: answers the revision to watch after */
static int
hoctl_agent_reconcile(hoctl_agent_t *a, char *err, size_t errlen)
{
    int                i, rc;
    char              *key;
    size_t             n;
    json_t            *kvs, *kv;
    int64_t            rev;
    hoctl_agent_up_t  *u;
    int                seen[HOCTL_AGENT_MAX];

    rc = hoctl_etcd_range(&a->etcd, a->flags_key, 1, &kvs, &rev, err,
                          errlen);
    if (rc != HOCTL_OK) {
        return rc;
    }

    memset(seen, 0, sizeof(seen));

    json_array_foreach(kvs, n, kv) {
        hoctl_agent_ingest(a, kv);

        key = hoctl_kv_key(kv);
        if (key != NULL && strlen(key) > a->flags_len) {
            u = hoctl_agent_up(a, key + a->flags_len, 0);
            if (u != NULL) {
                seen[u - a->ups] = 1;
            }
        }
        free(key);
    }

    json_decref(kvs);

    for (i = 0; i < a->nups; i++) {
        if (!seen[i] && a->ups[i].state != HOCTL_UP_ABSENT) {
            hoctl_agent_log(a, "%s: record gone while away", a->ups[i].name);
            hoctl_agent_absent(a, &a->ups[i], rev);
        }
    }

    a->revision = rev;
    a->reported_dirty = 1;

    return HOCTL_OK;
}


static int
hoctl_agent_put_key(hoctl_agent_t *a, const char *key, const char *value,
    int64_t lease, char *err, size_t errlen)
{
    int      rc;
    char    *b;
    json_t  *req, *resp;

    req = json_object();
    b = hoctl_b64(key, strlen(key));
    json_object_set_new(req, "key", json_string(b));
    free(b);
    b = hoctl_b64(value, strlen(value));
    json_object_set_new(req, "value", json_string(b));
    free(b);
    if (lease != 0) {
        json_object_set_new(req, "lease", hoctl_json_str_int(lease));
    }

    rc = hoctl_etcd_call(&a->etcd, "/v3/kv/put", req, &resp, err, errlen);
    if (rc == HOCTL_OK) {
        json_decref(resp);
    }

    return rc;
}


/* the lease the report lives on, kept alive or granted anew */
static int
hoctl_agent_lease(hoctl_agent_t *a, char *err, size_t errlen)
{
    int   rc;
    long  left;

    if (a->lease != 0) {
        rc = hoctl_etcd_lease_keepalive(&a->etcd, a->lease, &left, err,
                                        errlen);
        if (rc != HOCTL_OK) {
            return rc;
        }

        if (left <= 0) {
            a->lease = 0;
        }
    }

    if (a->lease == 0) {
        rc = hoctl_etcd_lease_grant(&a->etcd, HOCTL_AGENT_REPORT_TTL,
                                    &a->lease, err, errlen);
        if (rc != HOCTL_OK) {
            return rc;
        }
        a->reported_dirty = 1;
    }

    return HOCTL_OK;
}


/* what the report says of each upstream */
static json_t *
hoctl_agent_report_ups(hoctl_agent_t *a)
{
    int                i;
    json_t            *ups, *one;
    hoctl_agent_up_t  *u;

    ups = json_object();
    for (i = 0; i < a->nups; i++) {
        u = &a->ups[i];
        one = json_pack("{s:I, s:s, s:s}", "revision",
                        (json_int_t) u->revision, "result", u->result,
                        "message", u->message);
        if (u->state == HOCTL_UP_DESIRED) {
            json_object_set(one, "expires_at",
                            json_object_get(u->record, "expires_at"));
        }
        json_object_set_new(ups, u->name, one);
    }

    return ups;
}


static int
hoctl_agent_report(hoctl_agent_t *a)
{
    int      rc;
    char    *key, *value, now[32], err[HOCTL_ERRLEN];
    size_t   len;
    json_t  *rep, *ups;

    rc = hoctl_agent_lease(a, err, sizeof(err));
    if (rc != HOCTL_OK) {
        goto failed;
    }

    hoctl_iso_time(time(NULL), now, sizeof(now));
    len = strlen(a->etcd.prefix) + sizeof("members/") + strlen(a->host);
    key = malloc(len);

    if (!a->member_written) {
        snprintf(key, len, "%smembers/%s", a->etcd.prefix, a->host);
        value = NULL;
        rep = json_pack("{s:s, s:s}", "host", a->host, "first_seen", now);
        value = json_dumps(rep, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(rep);
        rc = hoctl_agent_put_key(a, key, value, 0, err, sizeof(err));
        free(value);
        if (rc != HOCTL_OK) {
            free(key);
            goto failed;
        }
        a->member_written = 1;
    }

    ups = hoctl_agent_report_ups(a);

    rep = json_pack("{s:s, s:s, s:b, s:b, s:I, s:o}", "host", a->host,
                    "seen_at", now, "nginx_reachable", a->nginx_ok,
                    "etcd_connected", a->connected, "applied_revision",
                    (json_int_t) a->revision, "upstreams", ups);
    value = json_dumps(rep, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(rep);

    snprintf(key, len, "%sagents/%s", a->etcd.prefix, a->host);
    rc = hoctl_agent_put_key(a, key, value, a->lease, err, sizeof(err));
    free(key);
    free(value);

    if (rc != HOCTL_OK) {
        goto failed;
    }

    a->reported_dirty = 0;
    return HOCTL_OK;

failed:

    hoctl_agent_log(a, "cannot report to etcd: %s", err);
    return rc;
}


static void
hoctl_agent_sleep(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    nanosleep(&ts, NULL);
}


/* the host this agent reports as, and the options it cannot run without */
static int
hoctl_agent_required(hoctl_agent_t *a, const hoctl_conn_t *c,
    const hoctl_etcd_opts_t *o, char *hostbuf, size_t hostlen)
{
    if (o->host != NULL) {
        a->host = o->host;
    } else {
        if (gethostname(hostbuf, hostlen) != 0) {
            snprintf(hostbuf, hostlen, "unknown");
        }
        hostbuf[hostlen - 1] = '\0';
        a->host = hostbuf;
    }

    if (a->host[0] == '\0' || strchr(a->host, '/') != NULL) {
        hoctl_warn("--host must be a name without \"/\"");
        return HOCTL_USAGE;
    }

    a->local.sub = a->host;

    if (c->url == NULL) {
        hoctl_warn("--url LOCAL_ADMIN_URL is required (this nginx's admin "
                   "location)");
        return HOCTL_USAGE;
    }

    if (c->key == NULL && c->token == NULL) {
        hoctl_warn("--key FILE is required (a key this nginx accepts, for "
                   "tokens with scope ha:fleet)");
        return HOCTL_USAGE;
    }

    if (o->ntrust == 0) {
        hoctl_warn("--trust-key FILE is required: the keys whose signed "
                   "records this agent applies");
        return HOCTL_USAGE;
    }

    return HOCTL_OK;
}


/* the agent's settings checked, its keys loaded, etcd set up */
static int
hoctl_agent_setup(hoctl_agent_t *a, const hoctl_conn_t *c,
    const hoctl_etcd_opts_t *o, char *hostbuf, size_t hostlen)
{
    int     rc;
    char    err[HOCTL_ERRLEN];
    size_t  len;

    a->opts = o;
    a->local = *c;
    a->local.scope = "ha:fleet ha:read";

    if (hoctl_agent_required(a, c, o, hostbuf, hostlen) != HOCTL_OK) {
        return HOCTL_USAGE;
    }

    a->trust = hoctl_trust_load(o->trust, o->ntrust, err, sizeof(err));
    if (a->trust == NULL) {
        hoctl_warn("%s", err);
        return HOCTL_USAGE;
    }

    a->ntrust = o->ntrust;

    /* it runs on, refusing every record: fleet flags go, HA comes back */
    if (hoctl_trust_unsafe_text(a->trust) != NULL) {
        hoctl_warn("%s", hoctl_trust_unsafe_text(a->trust));
    }

    rc = hoctl_etcd_init(&a->etcd, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        hoctl_warn("%s", err);
        return rc;
    }

    /* requests to nginx are local and short */
    if (a->local.timeout > 5) {
        a->local.timeout = 5;
    }
    if (a->etcd.timeout > 3) {
        a->etcd.timeout = 3;
    }

    len = strlen(a->etcd.prefix) + sizeof("flags/");
    a->flags_key = malloc(len);
    snprintf(a->flags_key, len, "%sflags/", a->etcd.prefix);
    a->flags_len = strlen(a->flags_key);

    return HOCTL_OK;
}


/*
 * (Re)connect: a full reconcile, then a watch from the revision after it.
 * Answers 0 once connected, -1 after a failure (waited *backoff, doubled).
 */
static int
hoctl_agent_connect(hoctl_agent_t *a, hoctl_etcd_watch_t *w, long *backoff)
{
    int   rc;
    char  err[HOCTL_ERRLEN];

    hoctl_etcd_watch_stop(w);

    rc = hoctl_agent_reconcile(a, err, sizeof(err));
    if (rc == HOCTL_OK) {
        rc = hoctl_etcd_watch_start(&a->etcd, w, a->flags_key,
                                    a->revision + 1, err, sizeof(err));
    }

    if (rc != HOCTL_OK) {
        hoctl_agent_log(a, "etcd: %s; again in %ld ms", err, *backoff);
        hoctl_agent_apply(a);   /* only expiries, removals */
        hoctl_agent_sleep(*backoff);
        *backoff = *backoff * 2 > 5000 ? 5000 : *backoff * 2;
        return -1;
    }

    hoctl_agent_log(a, "etcd: reconciled at revision %" PRId64 " via %s",
                    a->revision, a->etcd.urls[a->etcd.cur]);
    a->connected = 1;
    a->watch_member = a->etcd.cur;
    *backoff = 200;

    return 0;
}


/* the report, when due: -1 when etcd's member must change (reconnect) */
static int
hoctl_agent_report_due(hoctl_agent_t *a, long long now,
    long long *next_report)
{
    if (now < *next_report && !a->reported_dirty) {
        return 0;
    }

    if (hoctl_agent_report(a) != HOCTL_OK) {
        /* the member we use is gone or stuck: find another */
        a->connected = 0;
        a->etcd.cur = (a->etcd.cur + 1) % a->etcd.nurls;
        *next_report = now + 500;
        return -1;
    }

    *next_report = now + HOCTL_AGENT_REPORT_MS;

    /*
     * the report went to another member than the watch's: the watch's
     * member stopped answering (stopped, partitioned), and a watch there
     * may hang without ending
     */
    if (a->etcd.cur != a->watch_member) {
        hoctl_agent_log(a, "etcd: %s does not answer; watching through %s",
                        a->etcd.urls[a->watch_member],
                        a->etcd.urls[a->etcd.cur]);
        a->connected = 0;
        return -1;
    }

    return 0;
}


/*
 * SIGHUP: the --config file (if any) and the trusted keys read again, with
 * the checks of the start.  A file that does not parse, keys that do not
 * load or are not safe: refused, logged, the keys before kept.  New keys:
 * every record is judged again (a full read of etcd).  The other settings
 * are only compared: a change waits for a restart, and the log says so.
 */
static void
hoctl_agent_reload(hoctl_agent_t *a)
{
    int                 i;
    char                err[HOCTL_ERRLEN], changed[256];
    const char         *file, *unsafe;
    hoctl_conn_t        c;
    hoctl_trust_t      *t;
    hoctl_etcd_opts_t   o;

    c = a->cli_conn;
    o = a->cli_opts;
    file = o.config;
    changed[0] = '\0';

    if (file != NULL) {
        if (hoctl_agent_config(file, &c, &o, err, sizeof(err)) != 0) {
            hoctl_agent_log(a, "SIGHUP: reload refused: %s; the settings "
                            "and the %d trusted keys before are kept", err,
                            a->ntrust);
            return;
        }

        hoctl_agent_config_changed(a->conn, a->opts, &c, &o, changed,
                                   sizeof(changed));
    }

    if (o.ntrust == 0) {
        hoctl_agent_log(a, "SIGHUP: reload refused: no trust-key in \"%s\"; "
                        "the %d trusted keys before are kept", file,
                        a->ntrust);
        return;
    }

    t = hoctl_trust_load(o.trust, o.ntrust, err, sizeof(err));
    if (t == NULL) {
        hoctl_agent_log(a, "SIGHUP: reload refused: %s; the %d trusted keys "
                        "before are kept", err, a->ntrust);
        return;
    }

    unsafe = hoctl_trust_unsafe_text(t);
    if (unsafe != NULL) {
        hoctl_agent_log(a, "SIGHUP: reload refused: %s; the %d trusted keys "
                        "before are kept", unsafe, a->ntrust);
        hoctl_trust_free(t);
        return;
    }

    hoctl_trust_free(a->trust);
    a->trust = t;
    a->ntrust = o.ntrust;

    /* every record judged again with the keys now trusted */
    for (i = 0; i < a->nups; i++) {
        a->ups[i].revision = 0;
    }
    a->connected = 0;

    hoctl_agent_log(a, "SIGHUP: reloaded %d trusted keys%s%s; records are "
                    "verified again%s%s", a->ntrust,
                    file ? " and the settings of " : "", file ? file : "",
                    changed[0] ? "; changed, and kept as they were until "
                                 "a restart: " : "", changed);
}


static void
hoctl_agent_shutdown(hoctl_agent_t *a, hoctl_etcd_watch_t *w)
{
    int   i;
    char  err[HOCTL_ERRLEN];

    hoctl_agent_log(a, "stopping; local fleet flags lapse at their own "
                    "expiry");

    hoctl_etcd_watch_stop(w);
    if (a->lease != 0) {
        hoctl_etcd_lease_revoke(&a->etcd, a->lease, err, sizeof(err));
    }

    for (i = 0; i < a->nups; i++) {
        json_decref(a->ups[i].record);
    }

    hoctl_etcd_free(&a->etcd);
    hoctl_trust_free(a->trust);
    free(a->flags_key);
    free(a);
}


int
hoctl_agent(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_conn_t *cli_c, const hoctl_etcd_opts_t *cli_o)
{
    int                  rc;
    char                 hostbuf[256];
    long                 backoff;
    long long            now, next_report, next_check;
    hoctl_agent_t       *a;
    struct sigaction     sa;
    hoctl_etcd_watch_t   w;

    a = calloc(1, sizeof(hoctl_agent_t));

    rc = hoctl_agent_setup(a, c, o, hostbuf, sizeof(hostbuf));
    if (rc != HOCTL_OK) {
        return rc;
    }

    a->conn = c;
    a->cli_conn = *cli_c;
    a->cli_opts = *cli_o;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = hoctl_agent_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    memset(&w, 0, sizeof(w));
    w.done = 1;
    w.handler = hoctl_agent_watch_event;
    w.ctx = a;

    hoctl_agent_log(a, "watching %s on %s, applying to %s", a->flags_key,
                    o->etcd, c->url);

    backoff = 200;
    next_report = 0;
    next_check = 0;
    a->nginx_ok = 1;

    while (!hoctl_agent_stop) {
        if (hoctl_agent_hup) {
            hoctl_agent_hup = 0;
            hoctl_agent_reload(a);
        }

        now = hoctl_now_ms();

        if (!a->connected) {
            if (hoctl_agent_connect(a, &w, &backoff) != 0) {
                continue;
            }

            next_check = 0;
            next_report = 0;
        }

        if (now >= next_check) {
            hoctl_agent_check_local(a);
            next_check = now + HOCTL_AGENT_CHECK_MS;
        }

        hoctl_agent_apply(a);

        if (hoctl_agent_report_due(a, now, &next_report) != 0) {
            continue;
        }

        if (hoctl_etcd_watch_poll(&w, 200) < 0) {
            hoctl_agent_log(a, "etcd: watch ended; reconnecting");
            a->connected = 0;
            a->etcd.cur = (a->etcd.cur + 1) % a->etcd.nurls;
        }
    }

    hoctl_agent_shutdown(a, &w);

    return HOCTL_OK;
}


int
hoctl_verb_agent(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char               err[HOCTL_ERRLEN];
    hoctl_conn_t       cli_c;
    hoctl_etcd_opts_t  cli_o;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    /* what the command line gave: SIGHUP reads the file again over it */
    cli_c = a->conn;
    cli_o = a->etcd;

    if (a->etcd.config != NULL
        && hoctl_agent_config(a->etcd.config, &a->conn, &a->etcd, err,
                              sizeof(err))
           != 0)
    {
        hoctl_warn("%s", err);
        return HOCTL_USAGE;
    }

    if (a->etcd.etcd == NULL || a->etcd.environment == NULL) {
        return hoctl_usage(v, "--etcd URL and --environment ENV are "
                           "required");
    }

    return hoctl_agent(&a->conn, &a->etcd, &cli_c, &cli_o);
}
