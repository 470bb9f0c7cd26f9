
/*
 * ha-optoutctl status, set, clear: the verbs on one nginx's flags
 * (v1/flags) or, with --etcd, on the fleet's records.  flag.c has the
 * flag's body, checks and printing they share.
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verb.h"


int
hoctl_verb_status(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    char          *path;
    json_t        *j, *wrap;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_status(&a->etcd, a->flag.upstream, a->json);
    }

    path = a->flag.upstream ? hoctl_upstream_path(a->flag.upstream)
                            : strdup("v1/flags");

    rc = hoctl_get_json(&a->conn, path, a->json, &j);
    free(path);

    if (j == NULL) {
        return rc;
    }

    if (a->flag.upstream != NULL) {
        wrap = json_object();
        json_object_set(wrap, a->flag.upstream, j);
        hoctl_print_flags_table(wrap, "");
        json_decref(wrap);

    } else if (json_is_object(j)) {
        hoctl_print_flags_table(j, "");

    } else {
        fprintf(stderr, "error: v1/flags did not answer an object\n");
        json_decref(j);
        return HOCTL_REFUSED;
    }

    json_decref(j);
    return HOCTL_OK;
}


int
hoctl_verb_set(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    char          *path, *body, *what, err[HOCTL_ERRLEN];
    size_t         len;
    json_t        *j;
    const char    *exp;
    hoctl_resp_t   r;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (hoctl_flag_check(&a->flag, 0, err, sizeof(err)) != 0) {
        return hoctl_usage(v, "%s", err);
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_set(&a->conn, &a->etcd, &a->flag, a->json);
    }

    path = hoctl_upstream_path(a->flag.upstream);
    if (a->flag.dry_run) {
        len = strlen(path) + sizeof("?dry_run=1");
        path = realloc(path, len);
        strcat(path, "?dry_run=1");
    }

    body = hoctl_flag_body(&a->flag);

    rc = hoctl_send(&a->conn, "PUT", path, body, a->flag.if_match, a->json,
                    &r);
    free(path);
    free(body);

    if (rc != HOCTL_OK || a->json) {
        return rc;
    }

    j = hoctl_json_body(&r);
    if (j == NULL) {
        hoctl_resp_free(&r);
        return HOCTL_REFUSED;
    }

    if (json_object_get(j, "approval") != NULL) {
        /* 202: the policy wants approvers; nothing acts yet */
        hoctl_print_approval_requested(j, a->flag.upstream);
        json_decref(j);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    what = hoctl_flag_summary(j);
    exp = json_string_value(json_object_get(j, "expires_at"));

    printf("%s: %s %s until %s (etag %s)\n", hoctl_safe(a->flag.upstream),
           a->flag.dry_run ? "dry run, would set" : "HA suspended:", what,
           exp ? hoctl_safe(exp) : "cleared",
           r.etag[0] ? hoctl_safe(r.etag) : "-");

    free(what);
    json_decref(j);
    hoctl_resp_free(&r);

    return HOCTL_OK;
}


/* whether the upstream has an API flag for a DELETE to remove (1 unless
 * its GET says otherwise) */
static int
hoctl_clear_had_api(const hoctl_conn_t *c, const char *path)
{
    int            removed;
    json_t        *j;
    hoctl_resp_t   r;

    removed = 1;

    if (hoctl_request(c, "GET", path, NULL, NULL, &r) == HOCTL_OK) {
        j = json_loads(r.body ? r.body : "", JSON_DECODE_ANY, NULL);

        if (j != NULL
            && (json_is_null(j)
                || (json_is_object(j)
                    && json_is_string(json_object_get(j, "source"))
                    && strcmp(json_string_value(
                                  json_object_get(j, "source")), "api")
                       != 0)))
        {
            removed = 0;
        }

        json_decref(j);
    }

    hoctl_resp_free(&r);

    return removed;
}


/* the DELETE's answer did not say what acts now: a GET does */
static int
hoctl_clear_ask_again(hoctl_args_t *a, const char *path, int removed,
    char **line)
{
    int            rc, still;
    json_t        *j;
    hoctl_resp_t   r;

    still = -1;

    rc = hoctl_request(&a->conn, "GET", path, NULL, NULL, &r);

    if (rc == HOCTL_OK) {
        j = json_loads(r.body ? r.body : "", JSON_DECODE_ANY, NULL);
        still = hoctl_clear_outcome_ex(j, a->flag.upstream,
                                       a->flag.api_only, removed, line);
        json_decref(j);

    } else {
        fprintf(stderr, "error: %s\n", r.error);
    }

    hoctl_resp_free(&r);

    return still;
}


int
hoctl_verb_clear(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc, still, removed;
    char          *path, *line;
    json_t        *j;
    hoctl_resp_t   r;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (a->flag.upstream == NULL) {
        return hoctl_usage(v, "--upstream is required");
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_clear(&a->conn, &a->etcd, &a->flag, a->json);
    }

    path = hoctl_upstream_path(a->flag.upstream);

    /*
     * was there an API flag?  It wins over the other layers, so the flag
     * that acts says it; the DELETE's answer is the same either way
     */
    removed = hoctl_clear_had_api(&a->conn, path);

    rc = hoctl_request(&a->conn, "DELETE", path, NULL, a->flag.if_match, &r);

    if (rc != HOCTL_OK) {
        free(path);
        return hoctl_fail(rc, &r);
    }

    if (a->json) {
        hoctl_print_raw(&r);
    }

    /*
     * The answer is the flag that acts now: a window or an ha_optout_flag
     * line may still suspend HA, and "HA restored" would then be a lie.
     */

    j = json_loads(r.body ? r.body : "", JSON_DECODE_ANY, NULL);
    hoctl_resp_free(&r);

    still = hoctl_clear_outcome_ex(j, a->flag.upstream, a->flag.api_only,
                                   removed, &line);
    json_decref(j);

    if (still < 0) {
        still = hoctl_clear_ask_again(a, path, removed, &line);
    }

    free(path);

    if (still < 0) {
        fprintf(stderr, "%s: API flag removed; whether HA is back cannot be "
                "told (the answer does not say what acts now)\n",
                hoctl_safe(a->flag.upstream));
        return HOCTL_REFUSED;
    }

    if (line != NULL) {
        fprintf(a->json ? stderr : stdout, "%s\n", line);
        free(line);
    }

    return still ? HOCTL_REFUSED : HOCTL_OK;
}
