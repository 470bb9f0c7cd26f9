
/*
 * ha-optoutctl agent: what it asks of its nginx.  PUT v1/fleet/{upstream}
 * with ttl = expires_at - now, DELETE when the record goes, a refused
 * record sent to be audited as "denied", and each second the local fleet
 * layer compared with what was applied.
 */

#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"


static char *
hoctl_agent_path(const char *upstream, const char *tail)
{
    char    *esc, *path;
    size_t   len;

    esc = curl_easy_escape(NULL, upstream, 0);
    len = sizeof("v1/fleet/") + strlen(esc) + strlen(tail);
    path = malloc(len);
    snprintf(path, len, "v1/fleet/%s%s", esc, tail);
    curl_free(esc);

    return path;
}


/*
 * METHOD v1/fleet/{upstream}TAIL to the agent's nginx with the JSON body B
 * (taken: decref'd here), or none when B is NULL.
 */
static int
hoctl_agent_send(hoctl_agent_t *a, hoctl_agent_up_t *u, const char *method,
    const char *tail, json_t *b, hoctl_resp_t *r)
{
    int    rc;
    char  *path, *body;

    body = NULL;
    if (b != NULL) {
        body = json_dumps(b, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(b);
    }

    path = hoctl_agent_path(u->name, tail);
    rc = hoctl_request(&a->local, method, path, body, NULL, r);
    free(path);
    free(body);

    return rc;
}


static void
hoctl_agent_copy(json_t *to, json_t *from, const char *name)
{
    json_t  *v;

    v = json_object_get(from, name);
    if (v != NULL) {
        json_object_set(to, name, v);
    }
}


static void
hoctl_agent_put(hoctl_agent_t *a, hoctl_agent_up_t *u)
{
    int            rc;
    long           left;
    char           ttl[32];
    json_t        *b;
    hoctl_resp_t   r;

    left = (long) (u->expires_at - time(NULL));
    if (left <= 0) {
        u->state = HOCTL_UP_ABSENT;
        u->dirty = 1;
        return;
    }

    snprintf(ttl, sizeof(ttl), "%lds", left);

    b = json_object();
    hoctl_agent_copy(b, u->record, "failover");
    hoctl_agent_copy(b, u->record, "pin");
    hoctl_agent_copy(b, u->record, "pin_selector");
    hoctl_agent_copy(b, u->record, "replication");
    hoctl_agent_copy(b, u->record, "sticky");
    json_object_set_new(b, "ttl", json_string(ttl));
    hoctl_agent_copy(b, u->record, "reason");
    json_object_set_new(b, "revision", json_integer(u->revision));
    hoctl_agent_copy(b, u->record, "actor");
    json_object_set_new(b, "via", json_string(a->host));

    rc = hoctl_agent_send(a, u, "PUT", "", b, &r);

    if (rc == HOCTL_OK) {
        a->nginx_ok = 1;
        u->retry_at = 0;
        u->applied = u->revision;
        u->result = "applied";
        snprintf(u->message, sizeof(u->message), "until %s",
                 json_string_value(json_object_get(u->record, "expires_at")));
        hoctl_agent_log(a, "%s: applied revision %" PRId64 " (actor %s, "
                        "ttl %s)", u->name, u->revision,
                        json_string_value(json_object_get(u->record,
                                                          "actor")), ttl);

    } else if (rc == HOCTL_REFUSED && r.status >= 400 && r.status < 500) {
        a->nginx_ok = 1;
        u->failed = u->revision;
        u->result = "refused";
        snprintf(u->message, sizeof(u->message), "nginx: %s", r.error);
        hoctl_agent_log(a, "%s: nginx refused revision %" PRId64 ": %s",
                        u->name, u->revision, r.error);

    } else {
        a->nginx_ok = rc != HOCTL_UNREACHABLE;
        u->retry_at = hoctl_now_ms() + 1000;
        u->result = "error";
        snprintf(u->message, sizeof(u->message), "%s", r.error);
        hoctl_agent_log(a, "%s: cannot apply revision %" PRId64 ": %s",
                        u->name, u->revision, r.error);
    }

    hoctl_resp_free(&r);
    a->reported_dirty = 1;
}


static void
hoctl_agent_delete(hoctl_agent_t *a, hoctl_agent_up_t *u)
{
    int            rc;
    hoctl_resp_t   r;

    rc = hoctl_agent_send(a, u, "DELETE", "", NULL, &r);

    if (rc == HOCTL_OK || (rc == HOCTL_REFUSED && r.status == 404)) {
        a->nginx_ok = 1;
        u->applied = 0;
        if (u->state == HOCTL_UP_ABSENT) {
            u->result = "removed";
            u->message[0] = '\0';
        }
        if (u->held_by[0] != '\0') {
            hoctl_agent_log(a, "%s: fleet flag removed (nginx had it from "
                            "agent \"%s\", this agent is \"%s\": is a "
                            "second agent running for this nginx?)",
                            u->name, u->held_by, a->host);
            u->held_by[0] = '\0';

        } else {
            hoctl_agent_log(a, "%s: fleet flag removed", u->name);
        }

    } else {
        a->nginx_ok = rc != HOCTL_UNREACHABLE;
        u->retry_at = hoctl_now_ms() + 1000;
        hoctl_agent_log(a, "%s: cannot remove the fleet flag: %s", u->name,
                        r.error);
    }

    hoctl_resp_free(&r);
    a->reported_dirty = 1;
}


/* a refused record: nginx audits it as "denied" (and changes nothing) */
static void
hoctl_agent_denied(hoctl_agent_t *a, hoctl_agent_up_t *u)
{
    int            rc;
    json_t        *b;
    hoctl_resp_t   r;

    b = json_object();
    json_object_set_new(b, "revision", json_integer(u->revision));
    json_object_set_new(b, "reason", json_string(u->message));
    json_object_set_new(b, "via", json_string(a->host));

    rc = hoctl_agent_send(a, u, "POST", "/denied", b, &r);

    if (rc == HOCTL_OK || (rc == HOCTL_REFUSED && r.status < 500)) {
        u->denied = u->revision;
    } else {
        hoctl_agent_log(a, "%s: cannot report the denial to nginx: %s",
                        u->name, r.error);
    }

    hoctl_resp_free(&r);
}


void
hoctl_agent_apply(hoctl_agent_t *a)
{
    int                i;
    time_t             now;
    hoctl_agent_up_t  *u;

    now = time(NULL);

    for (i = 0; i < a->nups; i++) {
        u = &a->ups[i];

        if (u->state == HOCTL_UP_DESIRED && u->expires_at <= now) {
            hoctl_agent_log(a, "%s: revision %" PRId64 " expired",
                            u->name, u->revision);
            u->state = HOCTL_UP_ABSENT;
            u->result = "removed";
            json_decref(u->record);
            u->record = NULL;
            u->applied = 0;         /* nginx lets it lapse by itself */
            a->reported_dirty = 1;
        }

        if (u->state == HOCTL_UP_DESIRED) {
            /* nothing new while etcd cannot confirm it */
            if (a->connected && u->applied != u->revision
                && u->failed != u->revision
                && hoctl_now_ms() >= u->retry_at)
            {
                hoctl_agent_put(a, u);
            }
            continue;
        }

        if (u->state == HOCTL_UP_REFUSED && u->denied != u->revision) {
            hoctl_agent_denied(a, u);
        }

        /* restoring HA is always allowed */
        if (u->applied != 0 && hoctl_now_ms() >= u->retry_at) {
            hoctl_agent_delete(a, u);
        }

        if (u->state == HOCTL_UP_ABSENT && u->applied == 0
            && strcmp(u->result, "removed") != 0
            && strcmp(u->result, "none") != 0)
        {
            u->result = "removed";
            u->message[0] = '\0';
            a->reported_dirty = 1;
        }

        u->dirty = 0;
    }
}


/* what nginx's fleet flags j say of upstream u: held by whom, applied */
static void
hoctl_agent_check_up(hoctl_agent_t *a, hoctl_agent_up_t *u, json_t *j)
{
    json_t      *f;
    int64_t      rev;
    const char  *name;

    f = json_object_get(j, u->name);
    rev = json_is_object(f)
          ? hoctl_json_int(json_object_get(f, "revision")) : 0;

    /* another agent's flag: the sign of two agents on one nginx */
    name = json_string_value(json_object_get(f, "via"));
    if (name != NULL && strcmp(name, a->host) != 0) {
        snprintf(u->held_by, sizeof(u->held_by), "%s", name);
    } else {
        u->held_by[0] = '\0';
    }

    if (u->state == HOCTL_UP_DESIRED && rev != u->revision
        && u->applied == u->revision)
    {
        hoctl_agent_log(a, "%s: nginx does not hold revision %" PRId64
                        " (holds %" PRId64 "%s%s%s): applying again",
                        u->name, u->revision, rev,
                        u->held_by[0] ? " from agent \"" : "",
                        u->held_by, u->held_by[0]
                        ? "\": a second agent for this nginx?" : "");
        u->applied = 0;

    } else if (u->state == HOCTL_UP_DESIRED && rev == u->revision) {
        if (u->applied != u->revision) {
            u->result = "applied";
            a->reported_dirty = 1;
        }
        u->applied = u->revision;

    } else if (u->state != HOCTL_UP_DESIRED) {
        u->applied = rev;       /* left over: remove it; 0: gone */
    }
}


/* what nginx holds now: an nginx restarted without state is re-applied */
void
hoctl_agent_check_local(hoctl_agent_t *a)
{
    int                rc, i;
    json_t            *j, *f;
    const char        *name;
    hoctl_resp_t       r;
    hoctl_agent_up_t  *u;

    rc = hoctl_request(&a->local, "GET", "v1/fleet", NULL, NULL, &r);

    if (rc != HOCTL_OK) {
        if (a->nginx_ok) {
            hoctl_agent_log(a, "nginx: %s", r.error);
            a->reported_dirty = 1;
        }
        a->nginx_ok = 0;
        hoctl_resp_free(&r);
        return;
    }

    if (!a->nginx_ok) {
        a->reported_dirty = 1;

        for (i = 0; i < a->nups; i++) {
            a->ups[i].retry_at = 0;
        }
    }

    a->nginx_ok = 1;
    j = json_loads(r.body ? r.body : "", 0, NULL);
    hoctl_resp_free(&r);

    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }

    /* a fleet flag nginx holds that etcd no longer has: remove it */
    json_object_foreach(j, name, f) {
        if (json_is_object(f) && hoctl_agent_up(a, name, 0) == NULL) {
            u = hoctl_agent_up(a, name, 1);
            if (u != NULL) {
                u->applied = hoctl_json_int(json_object_get(f, "revision"));
                if (u->applied == 0) {
                    u->applied = -1;
                }
            }
        }
    }

    for (i = 0; i < a->nups; i++) {
        hoctl_agent_check_up(a, &a->ups[i], j);
    }

    json_decref(j);
}
