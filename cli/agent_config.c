
/*
 * ha-optoutctl agent --config FILE: the agent's settings from YAML.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "etcd.h"


/*
 * --config FILE: the agent's settings as YAML, e.g. for the systemd unit
 * of the Debian package (/etc/ha-optout/agent.yaml):
 *
 *   etcd: [https://etcd1:2379, https://etcd2:2379]
 *   environment: production
 *   url: http://127.0.0.1/ha-optout/
 *   key: /etc/ha-optout/agent.key
 *   trust-key: [/etc/ha-optout/ops.pub.pem]
 *
 * A value the command line (or the environment) gave wins.  The strings
 * live as long as the process.
 */

static int
hoctl_agent_cfg_scalar(yaml_node_t *n, const char *file, const char *k,
    const char **out, char *err, size_t errlen)
{
    if (n->type != YAML_SCALAR_NODE) {
        snprintf(err, errlen, "%s:%zu: \"%s\" must be a string", file,
                 n->start_mark.line + 1, k);
        return -1;
    }

    if (*out == NULL) {
        *out = strdup((const char *) n->data.scalar.value);
    }

    return 0;
}


int
hoctl_agent_config(const char *file, hoctl_conn_t *c, hoctl_etcd_opts_t *o,
    char *err, size_t errlen)
{
    int                 rc, cli_trust;
    FILE               *f;
    char               *list;
    size_t              len;
    const char         *k, *s, **dst;
    yaml_node_t        *root, *kn, *vn, *item;
    yaml_parser_t       parser;
    yaml_document_t     doc;
    yaml_node_item_t   *it;
    yaml_node_pair_t   *p;

    f = fopen(file, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read --config \"%s\": %s", file,
                 strerror(errno));
        return -1;
    }

    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);

    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%zu:%zu: %s", file,
                 parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1,
                 parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        fclose(f);
        return -1;
    }

    yaml_parser_delete(&parser);
    fclose(f);

    rc = -1;
    root = yaml_document_get_root_node(&doc);

    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        snprintf(err, errlen, "%s: the agent's settings must be a mapping "
                 "(etcd: ..., environment: ..., url: ...)", file);
        goto done;
    }

    cli_trust = o->ntrust;

    for (p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top; p++)
    {
        kn = yaml_document_get_node(&doc, p->key);
        vn = yaml_document_get_node(&doc, p->value);

        if (kn->type != YAML_SCALAR_NODE) {
            snprintf(err, errlen, "%s:%zu: keys are names", file,
                     kn->start_mark.line + 1);
            goto done;
        }

        k = (const char *) kn->data.scalar.value;

        if (strcmp(k, "trust-key") == 0) {
            if (cli_trust) {
                continue;
            }

            if (vn->type == YAML_SCALAR_NODE) {
                o->trust[o->ntrust++] =
                    strdup((const char *) vn->data.scalar.value);
                continue;
            }

            if (vn->type != YAML_SEQUENCE_NODE) {
                snprintf(err, errlen, "%s:%zu: trust-key is a file or a "
                         "list of files", file, vn->start_mark.line + 1);
                goto done;
            }

            for (it = vn->data.sequence.items.start;
                 it < vn->data.sequence.items.top; it++)
            {
                item = yaml_document_get_node(&doc, *it);

                if (item->type != YAML_SCALAR_NODE
                    || o->ntrust == HOCTL_ETCD_MAX_TRUST)
                {
                    snprintf(err, errlen, "%s:%zu: trust-key: at most %d "
                             "file names", file, item->start_mark.line + 1,
                             HOCTL_ETCD_MAX_TRUST);
                    goto done;
                }

                o->trust[o->ntrust++] =
                    strdup((const char *) item->data.scalar.value);
            }

            continue;
        }

        if (strcmp(k, "etcd") == 0 && vn->type == YAML_SEQUENCE_NODE) {
            len = 1;
            list = calloc(1, 1);

            for (it = vn->data.sequence.items.start;
                 it < vn->data.sequence.items.top; it++)
            {
                item = yaml_document_get_node(&doc, *it);
                if (item->type != YAML_SCALAR_NODE) {
                    free(list);
                    snprintf(err, errlen, "%s:%zu: etcd: a list of URLs",
                             file, item->start_mark.line + 1);
                    goto done;
                }

                s = (const char *) item->data.scalar.value;
                len += strlen(s) + 1;
                list = realloc(list, len);
                if (list[0] != '\0') {
                    strcat(list, ",");
                }
                strcat(list, s);
            }

            if (o->etcd == NULL) {
                o->etcd = list;
            } else {
                free(list);
            }

            continue;
        }

        dst = strcmp(k, "etcd") == 0 ? &o->etcd
            : strcmp(k, "environment") == 0 ? &o->environment
            : strcmp(k, "host") == 0 ? &o->host
            : strcmp(k, "etcd-prefix") == 0 ? &o->prefix
            : strcmp(k, "etcd-user") == 0 ? &o->user
            : strcmp(k, "etcd-password-file") == 0 ? &o->password_file
            : strcmp(k, "etcd-cacert") == 0 ? &o->cacert
            : strcmp(k, "etcd-cert") == 0 ? &o->cert
            : strcmp(k, "etcd-key") == 0 ? &o->key
            : strcmp(k, "url") == 0 ? &c->url
            : strcmp(k, "key") == 0 ? &c->key
            : strcmp(k, "alg") == 0 ? &c->alg
            : strcmp(k, "kid") == 0 ? &c->kid
            : strcmp(k, "aud") == 0 ? &c->aud
            : strcmp(k, "cacert") == 0 ? &c->cacert
            : NULL;

        if (dst == NULL) {
            snprintf(err, errlen, "%s:%zu: unknown setting \"%s\"", file,
                     kn->start_mark.line + 1, k);
            goto done;
        }

        if (hoctl_agent_cfg_scalar(vn, file, k, dst, err, errlen) != 0) {
            goto done;
        }
    }

    rc = 0;

done:

    yaml_document_delete(&doc);
    return rc;
}
