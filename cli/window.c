
/*
 * ha-optoutctl window end|skip: a policy window ends now, or its next
 * occurrence does not open (v1/windows/NAME/end|skip).
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

#include "verb.h"


/* v1/windows/UPSTREAM/end|skip, the name escaped; NULL out of memory */
static char *
hoctl_window_path(const char *upstream, int skip)
{
    char  *esc, *path;

    esc = curl_easy_escape(NULL, upstream, 0);

    if (esc == NULL
        || asprintf(&path, "v1/windows/%s/%s", esc, skip ? "skip" : "end")
           < 0)
    {
        path = NULL;
    }

    curl_free(esc);

    return path;
}


int
hoctl_verb_window(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc, skip;
    char          *path, *body;
    json_t        *j, *req;
    hoctl_resp_t   r;

    if (a->nargs != 1 || (strcmp(a->args[0], "end") != 0
                          && strcmp(a->args[0], "skip") != 0))
    {
        return hoctl_usage(v, "give end or skip");
    }

    skip = (a->args[0][0] == 's');

    if (a->flag.upstream == NULL) {
        return hoctl_usage(v, "--upstream is required");
    }

    if (a->flag.reason == NULL || a->flag.reason[0] == '\0') {
        return hoctl_usage(v, "--reason is required");
    }

    req = json_pack("{s:s}", "reason", a->flag.reason);
    if (req == NULL
        || (a->window
            && json_object_set_new(req, "window", json_string(a->window))
               != 0))
    {
        json_decref(req);
        return hoctl_usage(v, "--reason and --window must be UTF-8");
    }

    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    path = hoctl_window_path(a->flag.upstream, skip);
    if (body == NULL || path == NULL) {
        free(body);
        free(path);
        return HOCTL_USAGE;
    }

    rc = hoctl_send(&a->conn, "POST", path, body, NULL, a->json, &r);
    free(path);
    free(body);

    if (rc != HOCTL_OK || a->json) {
        return rc;
    }

    j = json_loads(r.body ? r.body : "", 0, NULL);
    hoctl_resp_free(&r);

    printf("%s: window %s %s: %s .. %s\n", hoctl_safe(a->flag.upstream),
           hoctl_safe(json_string_value(json_object_get(j, "window"))
                      ? json_string_value(json_object_get(j, "window"))
                      : "?"),
           skip ? "skipped" : "ended",
           hoctl_safe(json_string_value(json_object_get(j, "start"))
                      ? json_string_value(json_object_get(j, "start"))
                      : "?"),
           hoctl_safe(json_string_value(json_object_get(j, "end"))
                      ? json_string_value(json_object_get(j, "end"))
                      : "?"));
    json_decref(j);

    return HOCTL_OK;
}
