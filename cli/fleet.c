
/*
 * ha-optoutctl fleet: one change (or one look) across many nginx
 * instances, a thread each, one line each; a down instance is reported.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "hoctl.h"
#include "verb.h"


#define HOCTL_FLEET_MAX  1024


typedef struct {
    hoctl_conn_t        conn;
    const char         *action;
    const hoctl_flag_t *flag;
    int                 json;
    int                 rc;
    char               *line;       /* what to print for this instance */
    int                 suspended;  /* clear: another layer still acts */
    json_t             *result;     /* --json: the answer or the error */
    char               *key_path;   /* resolved against the fleet file */
    char               *cacert_path;
    pthread_t           tid;
} hoctl_instance_t;


static char *hoctl_fleet_dir;


static const char *
hoctl_yaml_str(yaml_document_t *doc, yaml_node_t *n)
{
    (void) doc;

    if (n == NULL || n->type != YAML_SCALAR_NODE) {
        return NULL;
    }

    return (const char *) n->data.scalar.value;
}


/* A key path relative to the fleet file reads as the operator meant it. */
static const char *
hoctl_fleet_path(const char *p, char **owned)
{
    size_t  len;

    if (p[0] == '/' || hoctl_fleet_dir == NULL) {
        return p;
    }

    free(*owned);

    len = strlen(hoctl_fleet_dir) + 1 + strlen(p) + 1;
    *owned = malloc(len);
    if (*owned == NULL) {
        return p;
    }

    snprintf(*owned, len, "%s/%s", hoctl_fleet_dir, p);
    return *owned;
}


static int
hoctl_fleet_instance(const char *file, yaml_document_t *doc,
    yaml_node_t *n, const hoctl_conn_t *defaults, hoctl_instance_t *in)
{
    const char         *k, *v;
    yaml_node_t        *kn, *vn;
    yaml_node_pair_t   *p;

    if (n->type != YAML_MAPPING_NODE) {
        fprintf(stderr, "%s:%zu:%zu: an instance must be a mapping "
                "(name: ..., url: ...)\n", file, n->start_mark.line + 1,
                n->start_mark.column + 1);
        return -1;
    }

    in->conn = *defaults;
    in->conn.name = NULL;
    in->conn.url = NULL;

    for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
         p++)
    {
        kn = yaml_document_get_node(doc, p->key);
        vn = yaml_document_get_node(doc, p->value);
        k = hoctl_yaml_str(doc, kn);
        v = hoctl_yaml_str(doc, vn);

        if (k == NULL || v == NULL) {
            fprintf(stderr, "%s:%zu:%zu: instance fields are \"key: "
                    "value\" scalars\n", file, vn->start_mark.line + 1,
                    vn->start_mark.column + 1);
            return -1;
        }

        if (strcmp(k, "name") == 0) {
            in->conn.name = v;
        } else if (strcmp(k, "url") == 0) {
            in->conn.url = v;
        } else if (strcmp(k, "token") == 0) {
            in->conn.token = v;
            in->conn.key = NULL;
        } else if (strcmp(k, "key") == 0) {
            in->conn.key = hoctl_fleet_path(v, &in->key_path);
            in->conn.token = NULL;
        } else if (strcmp(k, "alg") == 0) {
            in->conn.alg = v;
        } else if (strcmp(k, "kid") == 0) {
            in->conn.kid = v;
        } else if (strcmp(k, "aud") == 0) {
            in->conn.aud = v;
        } else if (strcmp(k, "sub") == 0) {
            in->conn.sub = v;
        } else if (strcmp(k, "scope") == 0) {
            in->conn.scope = v;
        } else if (strcmp(k, "cacert") == 0) {
            in->conn.cacert = hoctl_fleet_path(v, &in->cacert_path);
        } else {
            /* a typo here would silently use the wrong credentials */
            fprintf(stderr, "%s:%zu:%zu: unknown instance field \"%s\" "
                    "(name, url, token, key, alg, kid, aud, sub, scope, "
                    "cacert)\n", file, kn->start_mark.line + 1,
                    kn->start_mark.column + 1, k);
            return -1;
        }
    }

    if (in->conn.url == NULL) {
        fprintf(stderr, "%s:%zu:%zu: instance without \"url\"\n", file,
                n->start_mark.line + 1, n->start_mark.column + 1);
        return -1;
    }

    if (in->conn.name == NULL) {
        in->conn.name = in->conn.url;
    }

    return 0;
}


static int
hoctl_fleet_parse(const char *file, yaml_document_t *doc)
{
    FILE  *f;
    char  *dir, err[HOCTL_ERRLEN];

    f = fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open fleet file \"%s\": %s\n",
                hoctl_progname, file, strerror(errno));
        return -1;
    }

    dir = strdup(file);
    hoctl_fleet_dir = dir ? strdup(dirname(dir)) : NULL;
    free(dir);

    if (hoctl_yaml_load(f, file, "YAML error", doc, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }

    return 0;
}


static yaml_node_t *
hoctl_fleet_list(const char *file, yaml_document_t *doc)
{
    const char        *k;
    yaml_node_t       *root, *list;
    yaml_node_pair_t  *p;

    root = yaml_document_get_root_node(doc);
    list = NULL;

    if (root != NULL && root->type == YAML_MAPPING_NODE) {
        for (p = root->data.mapping.pairs.start;
             p < root->data.mapping.pairs.top; p++)
        {
            k = hoctl_yaml_str(doc, yaml_document_get_node(doc, p->key));

            if (k != NULL && strcmp(k, "instances") == 0) {
                list = yaml_document_get_node(doc, p->value);
            }
        }
    }

    if (list == NULL || list->type != YAML_SEQUENCE_NODE) {
        fprintf(stderr, "%s: expected \"instances:\" with a list of "
                "instances\n", file);
        return NULL;
    }

    return list;
}


/* Returns the number of instances, or -1 after printing file:line:col. */
static int
hoctl_fleet_load(const char *file, yaml_document_t *doc,
    const hoctl_conn_t *defaults, hoctl_instance_t **out)
{
    int                 n;
    yaml_node_t        *list, *item;
    yaml_node_item_t   *it;
    hoctl_instance_t   *in;

    if (hoctl_fleet_parse(file, doc) != 0) {
        return -1;
    }

    list = hoctl_fleet_list(file, doc);
    if (list == NULL) {
        goto failed;
    }

    n = list->data.sequence.items.top - list->data.sequence.items.start;
    if (n == 0 || n > HOCTL_FLEET_MAX) {
        fprintf(stderr, "%s: %d instances (1..%d expected)\n", file, n,
                HOCTL_FLEET_MAX);
        goto failed;
    }

    in = calloc(n, sizeof(hoctl_instance_t));
    if (in == NULL) {
        fprintf(stderr, "%s: out of memory\n", hoctl_progname);
        goto failed;
    }

    n = 0;
    for (it = list->data.sequence.items.start;
         it < list->data.sequence.items.top; it++)
    {
        item = yaml_document_get_node(doc, *it);

        if (hoctl_fleet_instance(file, doc, item, defaults, &in[n]) != 0) {
            do {
                free(in[n].key_path);
                free(in[n].cacert_path);
            } while (n-- > 0);

            free(in);
            goto failed;
        }

        n++;
    }

    *out = in;
    return n;

failed:

    yaml_document_delete(doc);
    free(hoctl_fleet_dir);
    hoctl_fleet_dir = NULL;

    return -1;
}


static char *
hoctl_fleet_status_line(json_t *flags)
{
    char        buf[1024], *what, *left;
    size_t      len;
    time_t      now;
    json_t     *flag;
    const char *name;
    int         active, total;

    now = time(NULL);
    active = 0;
    total = 0;
    len = 0;
    buf[0] = '\0';

    json_object_foreach(flags, name, flag) {
        total++;

        if (!json_is_object(flag)) {
            continue;
        }

        active++;
        what = hoctl_flag_summary(flag);
        left = hoctl_time_left(flag, now);

        if (len < sizeof(buf)) {
            len += snprintf(buf + len, sizeof(buf) - len, "; %s %s by %s, "
                            "%s left", hoctl_safe(name), what,
                            json_string_value(json_object_get(flag, "actor"))
                            ? hoctl_safe(json_string_value(
                                  json_object_get(flag, "actor")))
                            : "-", left);
        }

        free(what);
        free(left);
    }

    if (asprintf(&what, "%d upstream%s, %d with HA suspended%s", total,
                 total == 1 ? "" : "s", active, buf) < 0)
    {
        return NULL;
    }

    return what;
}


static void *
hoctl_fleet_worker(void *arg)
{
    hoctl_instance_t  *in = arg;
    char              *path, *body, *what, *line;
    json_t            *j, *wrap;
    const char        *exp;
    hoctl_resp_t       r;

    body = NULL;
    line = NULL;

    if (strcmp(in->action, "status") == 0) {
        path = in->flag->upstream ? hoctl_upstream_path(in->flag->upstream)
                                  : strdup("v1/flags");
        in->rc = hoctl_request(&in->conn, "GET", path, NULL, NULL, &r);

    } else if (strcmp(in->action, "set") == 0) {
        path = hoctl_upstream_path(in->flag->upstream);
        body = hoctl_flag_body(in->flag);
        in->rc = hoctl_request(&in->conn, "PUT", path, body, NULL, &r);

    } else {
        path = hoctl_upstream_path(in->flag->upstream);
        in->rc = hoctl_request(&in->conn, "DELETE", path, NULL, NULL, &r);
    }

    free(path);
    free(body);

    if (in->rc != HOCTL_OK) {
        in->line = strdup(r.error);
        in->result = json_pack("{s:{s:s}}", "error", "message", r.error);
        hoctl_resp_free(&r);
        return NULL;
    }

    j = json_loads(r.body ? r.body : "null", JSON_DECODE_ANY, NULL);
    in->result = j ? json_incref(j) : json_null();

    if (strcmp(in->action, "status") == 0) {
        if (in->flag->upstream != NULL) {
            wrap = json_object();
            json_object_set(wrap, in->flag->upstream, j);
            line = hoctl_fleet_status_line(wrap);
            json_decref(wrap);
        } else {
            line = hoctl_fleet_status_line(j);
        }

    } else if (strcmp(in->action, "set") == 0) {
        what = hoctl_flag_summary(j);
        exp = json_string_value(json_object_get(j, "expires_at"));
        if (asprintf(&line, "%s: HA suspended: %s until %s (etag %s)",
                     hoctl_safe(in->flag->upstream), what,
                     exp ? hoctl_safe(exp) : "-",
                     r.etag[0] ? hoctl_safe(r.etag) : "-") < 0)
        {
            line = NULL;
        }
        free(what);

    } else {
        /* what still acts once the API flag is gone (as clear says it) */
        in->suspended = hoctl_clear_outcome(j, in->flag->upstream,
                                            in->flag->api_only, &line) != 0;
    }

    json_decref(j);
    hoctl_resp_free(&r);
    in->line = line;

    return NULL;
}


/* every instance asked at once, a thread each (or in turn when no thread
 * can be had); the width of the longest name, for the table */
static int
hoctl_fleet_ask(hoctl_instance_t *in, int n, const char *action,
    const hoctl_flag_t *f, int json)
{
    int  i, w;

    for (i = 0; i < n; i++) {
        in[i].action = action;
        in[i].flag = f;
        in[i].json = json;

        if (pthread_create(&in[i].tid, NULL, hoctl_fleet_worker, &in[i])
            != 0)
        {
            in[i].tid = 0;
            hoctl_fleet_worker(&in[i]);
        }
    }

    w = 4;
    for (i = 0; i < n; i++) {
        if (in[i].tid != 0) {
            pthread_join(in[i].tid, NULL);
        }

        if ((int) strlen(in[i].conn.name) > w) {
            w = (int) strlen(in[i].conn.name);
        }
    }

    return w;
}


int
hoctl_fleet(const hoctl_conn_t *defaults, const char *file,
    const char *action, const hoctl_flag_t *f, int json)
{
    int                 n, i, w, refused, unreachable, usage;
    char               *s, *line;
    json_t             *all;
    yaml_document_t     doc;
    hoctl_instance_t   *in;
    static const char  *state[] = { "ok", "refused", "error", "unreachable" };

    n = hoctl_fleet_load(file, &doc, defaults, &in);
    if (n < 0) {
        return HOCTL_USAGE;
    }

    w = hoctl_fleet_ask(in, n, action, f, json);

    refused = 0;
    unreachable = 0;
    usage = 0;
    all = json_object();

    for (i = 0; i < n; i++) {
        switch (in[i].rc) {
        case HOCTL_OK:          refused += in[i].suspended; break;
        case HOCTL_REFUSED:     refused++; break;
        case HOCTL_UNREACHABLE: unreachable++; break;
        default:                usage++; break;
        }

        if (json) {
            json_object_set_new(all, in[i].conn.name,
                                json_pack("{s:s,s:o}", "state",
                                          (in[i].rc == HOCTL_OK
                                           && in[i].suspended)
                                          ? "suspended" : state[in[i].rc],
                                          "result", in[i].result));
        } else {
            printf("%-*s  %-11s  %s\n", w, in[i].conn.name,
                   (in[i].rc == HOCTL_OK && in[i].suspended)
                   ? "suspended" : state[in[i].rc],
                   in[i].line ? in[i].line
                   : in[i].suspended ? "whether HA is back cannot be told"
                   : "");
            json_decref(in[i].result);
        }

        free(in[i].line);
        free(in[i].key_path);
        free(in[i].cacert_path);
    }

    if (json) {
        s = json_dumps(all, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        line = hoctl_escape(s ? s : "{}", 1);
        printf("%s\n", line ? line : "{}");
        free(line);
        free(s);
    }

    json_decref(all);
    free(in);
    free(hoctl_fleet_dir);
    hoctl_fleet_dir = NULL;
    yaml_document_delete(&doc);

    /* an instance we could not even ask (bad key) counts as refused */
    if (refused + usage > 0) {
        return HOCTL_REFUSED;
    }

    return unreachable > 0 ? HOCTL_UNREACHABLE : HOCTL_OK;
}


int
hoctl_verb_fleet(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char        err[HOCTL_ERRLEN];
    const char *action;

    if (a->etcd.etcd != NULL) {
        if (a->fleet != NULL) {
            return hoctl_usage(v, "give --fleet FILE.yaml or --etcd, not "
                               "both");
        }

        if (a->nargs != 1) {
            return hoctl_usage(v, "give one of set, clear, status");
        }

        if (strcmp(a->args[0], "status") == 0) {
            return hoctl_etcd_fleet_status(&a->etcd, a->flag.upstream,
                                           a->json);
        }

        if (strcmp(a->args[0], "set") == 0) {
            if (hoctl_flag_check(&a->flag, 0, err, sizeof(err)) != 0) {
                return hoctl_usage(v, "%s", err);
            }
            return hoctl_etcd_set(&a->conn, &a->etcd, &a->flag, a->json);
        }

        if (strcmp(a->args[0], "clear") == 0) {
            if (a->flag.upstream == NULL) {
                return hoctl_usage(v, "--upstream is required");
            }
            return hoctl_etcd_clear(&a->conn, &a->etcd, &a->flag, a->json);
        }

        return hoctl_usage(v, "unknown fleet action \"%s\" (set, clear, "
                           "status)", a->args[0]);
    }

    if (a->fleet == NULL) {
        return hoctl_usage(v, "--fleet FILE.yaml is required");
    }

    if (a->url_given) {
        return hoctl_usage(v, "--url does not apply to 'fleet': the urls "
                           "come from the fleet file");
    }

    if (a->nargs != 1) {
        return hoctl_usage(v, "give one of set, clear, status");
    }

    action = a->args[0];

    if (strcmp(action, "set") == 0) {
        if (hoctl_flag_check(&a->flag, 0, err, sizeof(err)) != 0) {
            return hoctl_usage(v, "%s", err);
        }

    } else if (strcmp(action, "clear") == 0) {
        if (a->flag.upstream == NULL) {
            return hoctl_usage(v, "--upstream is required");
        }

    } else if (strcmp(action, "status") != 0) {
        return hoctl_usage(v, "unknown fleet action \"%s\" (set, clear, "
                           "status)", action);
    }

    return hoctl_fleet(&a->conn, a->fleet, action, &a->flag, a->json);
}
