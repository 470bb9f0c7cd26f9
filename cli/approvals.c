
/*
 * ha-optoutctl approvals list|approve|reject: the two-person rule
 * (SPEC section 10) from the command line.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hoctl.h"
#include "verb.h"


static const char *
hoctl_approval_str(json_t *o, const char *key)
{
    const char  *s;

    s = json_string_value(json_object_get(o, key));

    return s ? hoctl_safe(s) : "-";
}


/* "bob, carol" of an approved_by array, or "-" */

static void
hoctl_approval_print_by(json_t *by)
{
    size_t   i;
    json_t  *e;

    if (!json_is_array(by) || json_array_size(by) == 0) {
        printf("-");
        return;
    }

    json_array_foreach(by, i, e) {
        printf("%s%s", i ? "," : "",
               json_is_string(e) ? hoctl_safe(json_string_value(e)) : "?");
    }
}


static void
hoctl_approval_line(json_t *a)
{
    char    *what;
    json_t  *by;

    by = json_object_get(a, "approved_by");
    what = hoctl_flag_summary(json_object_get(a, "flag"));

    printf("%s  %s  by %s  %zu/%lld approvals (",
           hoctl_approval_str(a, "id"), hoctl_approval_str(a, "upstream"),
           hoctl_approval_str(a, "requested_by"),
           json_is_array(by) ? json_array_size(by) : 0,
           (long long) json_integer_value(json_object_get(a, "needed")));
    hoctl_approval_print_by(by);
    printf(")  %s  until %s  reason \"%s\"\n", what ? what : "?",
           hoctl_approval_str(a, "expires_at"),
           hoctl_approval_str(a, "reason"));

    free(what);
}


/* set's answer 202: what was requested, for whom to approve */

void
hoctl_print_approval_requested(json_t *body, const char *upstream)
{
    json_t  *a;

    a = json_object_get(body, "approval");

    if (json_is_null(json_object_get(a, "id"))) {
        /* ?dry_run=1: nothing was requested */
        printf("%s: dry run, would need %lld approval(s) by others; nothing "
               "requested\n", hoctl_safe(upstream),
               (long long) json_integer_value(json_object_get(a, "needed")));
        return;
    }

    printf("%s: approval requested, nothing changed yet: id %s, needs "
           "%lld approval(s) by others before %s\n", hoctl_safe(upstream),
           hoctl_approval_str(a, "id"),
           (long long) json_integer_value(json_object_get(a, "needed")),
           hoctl_approval_str(a, "expires_at"));
}


/* the method and path of an action on the approvals; the id checked */
static int
hoctl_approvals_path(const char *action, const char *id,
    const char **method, char **path)
{
    size_t  i, len;

    if (strcmp(action, "list") == 0) {
        *method = "GET";
        *path = strdup("v1/approvals");

    } else {
        *method = (strcmp(action, "approve") == 0) ? "POST" : "DELETE";

        /* ids are 16 hex digits: nothing to escape in the path */
        for (i = 0; id[i]; i++) {
            if (!((id[i] >= '0' && id[i] <= '9')
                  || (id[i] >= 'a' && id[i] <= 'f')))
            {
                hoctl_warn("--id must be the approval's 16 hex digits");
                return HOCTL_USAGE;
            }
        }

        len = sizeof("v1/approvals/") + strlen(id);
        *path = malloc(len);
        if (*path) {
            snprintf(*path, len, "v1/approvals/%s", id);
        }
    }

    if (*path == NULL) {
        hoctl_warn("out of memory");
        return HOCTL_REFUSED;
    }

    return HOCTL_OK;
}


/* what the answer says, for a human */
static void
hoctl_approvals_print(json_t *j, const char *action, const char *upstream)
{
    size_t   i, n;
    json_t  *arr, *a;

    if (strcmp(action, "list") == 0) {
        arr = json_object_get(j, "approvals");
        n = 0;

        json_array_foreach(arr, i, a) {
            if (upstream
                && strcmp(json_string_value(json_object_get(a, "upstream"))
                          ? json_string_value(json_object_get(a, "upstream"))
                          : "", upstream) != 0)
            {
                continue;
            }

            hoctl_approval_line(a);
            n++;
        }

        if (n == 0) {
            printf("no pending approvals\n");
        }

    } else if (strcmp(action, "reject") == 0) {
        a = json_object_get(j, "approval");
        printf("%s: rejected, nothing applied (%s)\n",
               hoctl_approval_str(a, "id"),
               hoctl_approval_str(a, "upstream"));

    } else if ((a = json_object_get(j, "approval")) != NULL) {
        printf("%s: approved, still pending: ", hoctl_approval_str(a, "id"));
        hoctl_approval_line(a);

    } else {
        char  *what = hoctl_flag_summary(j);

        printf("%s: approved and applied: HA suspended: %s until %s "
               "(requested by %s, approved by ",
               hoctl_approval_str(j, "upstream"), what ? what : "?",
               hoctl_approval_str(j, "expires_at"),
               hoctl_approval_str(j, "actor"));
        hoctl_approval_print_by(json_object_get(j, "approved_by"));
        printf(")\n");
        free(what);
    }
}


int
hoctl_approvals(const hoctl_conn_t *c, const char *action, const char *id,
    const char *upstream, int json)
{
    int            rc;
    char          *path;
    json_t        *j;
    const char    *method;
    hoctl_resp_t   r;

    rc = hoctl_approvals_path(action, id, &method, &path);
    if (rc != HOCTL_OK) {
        return rc;
    }

    rc = hoctl_request(c, method, path, NULL, NULL, &r);
    free(path);

    if (rc != HOCTL_OK) {
        fprintf(stderr, "error: %s\n", r.error);
        hoctl_resp_free(&r);
        return rc;
    }

    if (json) {
        char  *s = hoctl_escape(r.body ? r.body : "", 1);

        printf("%s\n", s ? s : "");
        free(s);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    j = json_loads(r.body ? r.body : "", 0, NULL);
    hoctl_resp_free(&r);

    if (j == NULL) {
        fprintf(stderr, "error: the answer is not JSON\n");
        return HOCTL_REFUSED;
    }

    hoctl_approvals_print(j, action, upstream);

    json_decref(j);

    return HOCTL_OK;
}


int
hoctl_verb_approvals(const hoctl_verb_t *v, hoctl_args_t *a)
{
    const char  *action;

    if (a->nargs > 1) {
        return hoctl_usage(v, "unexpected argument \"%s\": give the "
                           "approval's id as --id %s", a->args[1],
                           a->args[1]);
    }

    if (a->nargs != 1) {
        return hoctl_usage(v, "give one of list, approve, reject");
    }

    action = a->args[0];

    if (strcmp(action, "list") != 0 && strcmp(action, "approve") != 0
        && strcmp(action, "reject") != 0)
    {
        return hoctl_usage(v, "unknown approvals action \"%s\" (list, "
                           "approve, reject)", action);
    }

    if (strcmp(action, "list") != 0 && a->id == NULL) {
        return hoctl_usage(v, "--id ID is required");
    }

    return hoctl_approvals(&a->conn, action, a->id, a->flag.upstream,
                           a->json);
}
