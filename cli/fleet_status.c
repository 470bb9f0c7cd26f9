
/*
 * ha-optoutctl status --etcd and fleet status --etcd: what the fleet in
 * etcd holds, every flag's record and, per agent, whether it applied each
 * one (SPEC section 11).
 */

#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd.h"


#define HOCTL_AGENT_SILENT   10        /* seconds without a report */


/* {upstream: record + revision, lease} of every flag; NULL on failure */
static json_t *
hoctl_etcd_flags(hoctl_etcd_t *e, int64_t *revision, int *rc, char *err,
    size_t errlen)
{
    char     *key, *k, *v;
    size_t    i, plen, len;
    json_t   *kvs, *kv, *flags, *rec;

    key = hoctl_flag_key(e, "");
    plen = strlen(key);

    *rc = hoctl_etcd_range(e, key, 1, &kvs, revision, err, errlen);
    free(key);

    if (*rc != HOCTL_OK) {
        return NULL;
    }

    flags = json_object();

    json_array_foreach(kvs, i, kv) {
        k = hoctl_kv_key(kv);
        v = hoctl_kv_value(kv, &len);

        rec = v ? hoctl_record_peek(v) : NULL;
        if (rec == NULL) {
            rec = json_pack("{s:s}", "error", "not a JSON record");
        }

        json_object_set_new(rec, "revision", json_integer(
                                hoctl_json_int(json_object_get(kv,
                                                   "mod_revision"))));
        json_object_del(rec, "signature");

        if (k != NULL && strlen(k) > plen) {
            json_object_set_new(flags, k + plen, rec);
        } else {
            json_decref(rec);
        }

        free(k);
        free(v);
    }

    json_decref(kvs);
    return flags;
}


static void
hoctl_etcd_flags_table(json_t *flags)
{
    int          w;
    char        *what, *left;
    time_t       now;
    json_t      *rec;
    const char  *name, *actor, *reason;

    w = (int) sizeof("UPSTREAM") - 1;
    json_object_foreach(flags, name, rec) {
        if ((int) strlen(name) > w) {
            w = (int) strlen(name);
        }
    }

    now = time(NULL);

    printf("%-*s  %-8s  %-32s  %-12s  %-9s  %s\n", w, "UPSTREAM",
           "REVISION", "SUSPENDED", "ACTOR", "LEFT", "REASON");

    json_object_foreach(flags, name, rec) {
        what = hoctl_flag_summary(rec);
        left = hoctl_time_left(rec, now);
        actor = json_string_value(json_object_get(rec, "actor"));
        reason = json_string_value(json_object_get(rec, "reason"));

        /* what etcd holds, signed or not: no control byte reaches the tty */
        printf("%-*s  %-8" PRId64 "  %-32s  %-12s  %-9s  %s\n", w,
               hoctl_safe(name),
               hoctl_json_int(json_object_get(rec, "revision")),
               hoctl_safe(what ? what : "-"),
               hoctl_safe(actor ? actor : "-"), left,
               hoctl_safe(reason ? reason : "-"));

        free(what);
        free(left);
    }
}


int
hoctl_etcd_status(const hoctl_etcd_opts_t *o, const char *upstream,
    int json)
{
    int            rc;
    char          *s, err[HOCTL_ERRLEN];
    json_t        *flags, *one, *out;
    int64_t        revision;
    hoctl_etcd_t   e;

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    flags = hoctl_etcd_flags(&e, &revision, &rc, err, sizeof(err));
    hoctl_etcd_free(&e);

    if (flags == NULL) {
        return hoctl_etcd_fail(rc, err);
    }

    if (upstream != NULL) {
        one = json_object();
        json_object_set(one, upstream,
                        json_object_get(flags, upstream)
                        ? json_object_get(flags, upstream) : json_null());
        json_decref(flags);
        flags = one;
    }

    if (json) {
        out = json_pack("{s:s, s:I, s:o}", "environment", o->environment,
                        "revision", (json_int_t) revision, "flags", flags);
        s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(out);
        return HOCTL_OK;
    }

    printf("fleet %s at etcd revision %" PRId64 "\n", o->environment,
           revision);
    hoctl_etcd_flags_table(flags);
    json_decref(flags);

    return HOCTL_OK;
}


/* --upstream: that flag only (*missing when it is not there) */
static json_t *
hoctl_fs_only(json_t *flags, const char *upstream, int *missing)
{
    json_t  *rec, *one;

    rec = json_object_get(flags, upstream);
    one = json_object();

    if (rec != NULL) {
        json_object_set(one, upstream, rec);
    } else {
        *missing = 1;
    }

    json_decref(flags);

    return one;
}


/* the members: every agent that ever reported, without a lease */
static int
hoctl_fs_members(hoctl_etcd_t *e, json_t *agents, char **members, char *err,
    size_t errlen)
{
    int      rc;
    char    *key, *k;
    size_t   i, plen, len;
    json_t  *kvs, *kv;

    len = strlen(e->prefix) + sizeof("members/");
    key = malloc(len);
    snprintf(key, len, "%smembers/", e->prefix);
    plen = strlen(key);
    rc = hoctl_etcd_range(e, key, 1, &kvs, NULL, err, errlen);
    *members = key;             /* for the hint on silent agents */

    if (rc == HOCTL_OK) {
        json_array_foreach(kvs, i, kv) {
            k = hoctl_kv_key(kv);
            if (k != NULL && strlen(k) > plen) {
                json_object_set_new(agents, k + plen, json_pack(
                    "{s:b, s:n, s:n, s:o}", "silent", 1, "seen_at",
                    "nginx_reachable", "upstreams", json_object()));
            }
            free(k);
        }
        json_decref(kvs);
    }

    return rc;
}


/* the agents' reports, each replacing its member's entry */
static void
hoctl_fs_reports(json_t *kvs, size_t plen, json_t *agents, time_t now)
{
    char    *k, *v;
    size_t   i, len;
    time_t   seen;
    json_t  *kv, *rep, *a;

    json_array_foreach(kvs, i, kv) {
        k = hoctl_kv_key(kv);
        v = hoctl_kv_value(kv, &len);
        rep = v ? json_loads(v, 0, NULL) : NULL;

        if (k != NULL && strlen(k) > plen && json_is_object(rep)) {
            seen = hoctl_parse_iso(json_string_value(
                                       json_object_get(rep, "seen_at")));
            a = json_object();
            json_object_set_new(a, "silent",
                                json_boolean(now - seen
                                             > HOCTL_AGENT_SILENT));
            json_object_set(a, "seen_at", json_object_get(rep, "seen_at"));
            json_object_set(a, "nginx_reachable",
                            json_object_get(rep, "nginx_reachable"));
            json_object_set(a, "applied_revision",
                            json_object_get(rep, "applied_revision"));
            json_object_set_new(a, "upstreams", json_object());
            json_object_set(a, "report", rep);
            json_object_set_new(agents, k + plen, a);
        }

        json_decref(rep);
        free(k);
        free(v);
    }
}


/* members and reports: the agents, or the failure (etcd is freed) */
static int
hoctl_fs_agents(hoctl_etcd_t *e, json_t *agents, time_t now, char **members,
    char *err, size_t errlen)
{
    int      rc;
    char    *key;
    size_t   plen, len;
    json_t  *kvs;

    rc = hoctl_fs_members(e, agents, members, err, errlen);

    len = strlen(e->prefix) + sizeof("agents/");
    key = malloc(len);
    snprintf(key, len, "%sagents/", e->prefix);
    plen = strlen(key);
    if (rc == HOCTL_OK) {
        rc = hoctl_etcd_range(e, key, 1, &kvs, NULL, err, errlen);
    }
    free(key);
    hoctl_etcd_free(e);

    if (rc != HOCTL_OK) {
        return rc;
    }

    hoctl_fs_reports(kvs, plen, agents, now);
    json_decref(kvs);

    return HOCTL_OK;
}


/*
 * One agent: converged, pending or refused per flag (and per upstream it
 * still holds); answers whether it is converged on all of them.
 */
static int
hoctl_fs_agent(json_t *a, json_t *flags, const char *upstream)
{
    int          all, silent, reachable;
    json_t      *rep, *mine, *ups, *msgs, *rec, *st;
    int64_t      frev;
    const char  *up, *res;

    all = 1;
    silent = json_is_true(json_object_get(a, "silent"));
    reachable = !json_is_false(json_object_get(a, "nginx_reachable"));
    rep = json_object_get(a, "report");
    mine = json_object_get(rep, "upstreams");
    ups = json_object_get(a, "upstreams");
    msgs = json_object();
    json_object_set_new(a, "messages", msgs);

    if (silent) {
        all = 0;
    }

    json_object_foreach(flags, up, rec) {
        frev = hoctl_json_int(json_object_get(rec, "revision"));
        st = json_object_get(mine, up);
        res = json_string_value(json_object_get(st, "result"));

        if (!silent && res != NULL && reachable
            && hoctl_json_int(json_object_get(st, "revision")) == frev)
        {
            if (strcmp(res, "applied") == 0) {
                json_object_set_new(ups, up, json_string("converged"));
                continue;
            }

            if (strcmp(res, "refused") == 0) {
                json_object_set_new(ups, up, json_string("refused"));
                if (json_is_string(json_object_get(st, "message"))) {
                    json_object_set(msgs, up,
                                    json_object_get(st, "message"));
                }
                all = 0;
                continue;
            }
        }

        json_object_set_new(ups, up, json_string("pending"));
        all = 0;
    }

    /* a flag cleared in etcd that this agent still holds */
    json_object_foreach(mine, up, st) {
        res = json_string_value(json_object_get(st, "result"));
        if (upstream != NULL && strcmp(up, upstream) != 0) {
            continue;
        }
        if (json_object_get(flags, up) == NULL && res != NULL
            && strcmp(res, "applied") == 0)
        {
            json_object_set_new(ups, up, json_string("pending"));
            all = 0;
        }
    }

    json_object_del(a, "report");

    return all;
}


/* the agents' table, then why: what they said, what to do if silent */
static void
hoctl_fs_print_agents(json_t *agents, const char *members)
{
    char        when[64];
    json_t     *a, *ups, *st;
    const char *host, *up, *name;

    printf("\n%-24s  %-6s  %-6s  %-20s  %s\n", "AGENT", "STATE", "NGINX",
           "SEEN", "FLAGS");

    json_object_foreach(agents, host, a) {
        name = json_string_value(json_object_get(a, "seen_at"));
        snprintf(when, sizeof(when), "%s", name ? name : "-");

        printf("%-24s  %-6s  %-6s  %-20s ", hoctl_safe(host),
               json_is_true(json_object_get(a, "silent")) ? "SILENT" : "up",
               json_is_false(json_object_get(a, "nginx_reachable"))
               ? "DOWN" : json_is_true(json_object_get(a, "nginx_reachable"))
               ? "ok" : "-", hoctl_safe(when));

        ups = json_object_get(a, "upstreams");
        if (json_object_size(ups) == 0) {
            printf(" -");
        }
        json_object_foreach(ups, up, st) {
            printf(" %s=%s", hoctl_safe(up),
                   hoctl_safe(json_string_value(st) ? json_string_value(st)
                                                    : "?"));
        }
        printf("\n");
    }

    json_object_foreach(agents, host, a) {
        json_object_foreach(json_object_get(a, "messages"), up, st) {
            printf("%s: %s refused: %s\n", hoctl_safe(host), hoctl_safe(up),
                   hoctl_safe(json_string_value(st) ? json_string_value(st)
                                                    : "?"));
        }

        if (json_is_true(json_object_get(a, "silent"))) {
            printf("%s: silent (no report for %ds): is its agent running and"
                   " reaching etcd? a host that left the fleet: etcdctl del"
                   " %s%s\n", hoctl_safe(host), HOCTL_AGENT_SILENT,
                   members, hoctl_safe(host));
        }
    }
}


/*
 * fleet status: every flag, and per agent whether it applied (converged),
 * not yet (pending) or refused each one; agents whose report is old or
 * gone (their member key outlives the report's lease) are silent.
 */
int
hoctl_etcd_fleet_status(const hoctl_etcd_opts_t *o, const char *upstream,
    int json)
{
    int            rc, all, missing;
    char          *s, *members, err[HOCTL_ERRLEN];
    json_t        *flags, *agents, *a, *out;
    int64_t        revision;
    const char    *host;
    hoctl_etcd_t   e;

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    flags = hoctl_etcd_flags(&e, &revision, &rc, err, sizeof(err));
    if (flags == NULL) {
        hoctl_etcd_free(&e);
        return hoctl_etcd_fail(rc, err);
    }

    missing = 0;

    if (upstream != NULL) {
        flags = hoctl_fs_only(flags, upstream, &missing);
    }

    agents = json_object();

    rc = hoctl_fs_agents(&e, agents, time(NULL), &members, err, sizeof(err));
    if (rc != HOCTL_OK) {
        free(members);
        json_decref(flags);
        json_decref(agents);
        return hoctl_etcd_fail(rc, err);
    }

    all = !missing && json_object_size(agents) > 0;

    json_object_foreach(agents, host, a) {
        if (!hoctl_fs_agent(a, flags, upstream)) {
            all = 0;
        }
    }

    if (json) {
        out = json_pack("{s:s, s:I, s:b, s:o, s:o}", "environment",
                        o->environment, "revision", (json_int_t) revision,
                        "converged", all, "flags", flags, "agents", agents);
        s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(out);
        free(members);
        return all ? HOCTL_OK : HOCTL_REFUSED;
    }

    printf("fleet %s at etcd revision %" PRId64 ": %s%s%s%s%s\n",
           o->environment, revision, all ? "converged" : "NOT converged",
           json_object_size(agents) ? "" : " (no agent reports)",
           missing ? " (no fleet flag on " : "", missing ? upstream : "",
           missing ? ")" : "");
    hoctl_etcd_flags_table(flags);
    hoctl_fs_print_agents(agents, members);

    free(members);
    json_decref(flags);
    json_decref(agents);

    return all ? HOCTL_OK : HOCTL_REFUSED;
}
