
/*
 * ha-optoutctl agent --config FILE: the agent's settings from YAML.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
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


/* the settings that are one string, and where each goes */
static const struct {
    const char  *name;
    int          conn;          /* in hoctl_conn_t, else hoctl_etcd_opts_t */
    size_t       off;
} hoctl_agent_cfg_strings[] = {
    { "etcd",               0, offsetof(hoctl_etcd_opts_t, etcd) },
    { "environment",        0, offsetof(hoctl_etcd_opts_t, environment) },
    { "host",               0, offsetof(hoctl_etcd_opts_t, host) },
    { "etcd-prefix",        0, offsetof(hoctl_etcd_opts_t, prefix) },
    { "etcd-user",          0, offsetof(hoctl_etcd_opts_t, user) },
    { "etcd-password-file", 0, offsetof(hoctl_etcd_opts_t, password_file) },
    { "etcd-cacert",        0, offsetof(hoctl_etcd_opts_t, cacert) },
    { "etcd-cert",          0, offsetof(hoctl_etcd_opts_t, cert) },
    { "etcd-key",           0, offsetof(hoctl_etcd_opts_t, key) },
    { "url",                1, offsetof(hoctl_conn_t, url) },
    { "key",                1, offsetof(hoctl_conn_t, key) },
    { "alg",                1, offsetof(hoctl_conn_t, alg) },
    { "kid",                1, offsetof(hoctl_conn_t, kid) },
    { "aud",                1, offsetof(hoctl_conn_t, aud) },
    { "cacert",             1, offsetof(hoctl_conn_t, cacert) },
};


static const char **
hoctl_agent_cfg_field(const char *k, hoctl_conn_t *c, hoctl_etcd_opts_t *o)
{
    size_t  i;

    for (i = 0; i < sizeof(hoctl_agent_cfg_strings)
                    / sizeof(hoctl_agent_cfg_strings[0]); i++)
    {
        if (strcmp(k, hoctl_agent_cfg_strings[i].name) == 0) {
            return (const char **)
                   ((char *) (hoctl_agent_cfg_strings[i].conn
                              ? (void *) c : (void *) o)
                    + hoctl_agent_cfg_strings[i].off);
        }
    }

    return NULL;
}


/* the file read as one YAML document */
static int
hoctl_agent_cfg_load(const char *file, yaml_document_t *doc, char *err,
    size_t errlen)
{
    FILE  *f;

    f = fopen(file, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read --config \"%s\": %s", file,
                 strerror(errno));
        return -1;
    }

    return hoctl_yaml_load(f, file, "invalid YAML", doc, err, errlen);
}


/*
 * one file name of trust-key, counted against HOCTL_ETCD_MAX_TRUST: the
 * file may name the setting more than once ("trust-key: a" lines, lists),
 * and every name lands in the same array
 */
static int
hoctl_agent_cfg_trust_one(yaml_node_t *n, const char *file,
    hoctl_etcd_opts_t *o, char *err, size_t errlen)
{
    if (n->type != YAML_SCALAR_NODE) {
        snprintf(err, errlen, "%s:%zu: trust-key is a file or a "
                 "list of files", file, n->start_mark.line + 1);
        return -1;
    }

    if (o->ntrust >= HOCTL_ETCD_MAX_TRUST) {
        snprintf(err, errlen, "%s:%zu: trust-key: at most %d files in "
                 "all", file, n->start_mark.line + 1, HOCTL_ETCD_MAX_TRUST);
        return -1;
    }

    o->trust[o->ntrust++] = strdup((const char *) n->data.scalar.value);

    return 0;
}


/* trust-key: a file or a list of files */
static int
hoctl_agent_cfg_trust(yaml_document_t *doc, yaml_node_t *vn,
    const char *file, hoctl_etcd_opts_t *o, char *err, size_t errlen)
{
    yaml_node_item_t  *it;

    if (vn->type != YAML_SEQUENCE_NODE) {
        return hoctl_agent_cfg_trust_one(vn, file, o, err, errlen);
    }

    for (it = vn->data.sequence.items.start;
         it < vn->data.sequence.items.top; it++)
    {
        if (hoctl_agent_cfg_trust_one(yaml_document_get_node(doc, *it),
                                      file, o, err, errlen)
            != 0)
        {
            return -1;
        }
    }

    return 0;
}


/* etcd: [URL, ...] as the command line's "URL,URL" */
static int
hoctl_agent_cfg_etcd_list(yaml_document_t *doc, yaml_node_t *vn,
    const char *file, hoctl_etcd_opts_t *o, char *err, size_t errlen)
{
    char              *list;
    size_t             len;
    const char        *s;
    yaml_node_t       *item;
    yaml_node_item_t  *it;

    len = 1;
    list = calloc(1, 1);

    for (it = vn->data.sequence.items.start;
         it < vn->data.sequence.items.top; it++)
    {
        item = yaml_document_get_node(doc, *it);
        if (item->type != YAML_SCALAR_NODE) {
            free(list);
            snprintf(err, errlen, "%s:%zu: etcd: a list of URLs",
                     file, item->start_mark.line + 1);
            return -1;
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

    return 0;
}


/* one "name: value" of the settings; a trust-key given on the command line
 * (cli_trust) wins over the file's */
static int
hoctl_agent_cfg_pair(yaml_document_t *doc, yaml_node_pair_t *p,
    const char *file, hoctl_conn_t *c, hoctl_etcd_opts_t *o, int cli_trust,
    char *err, size_t errlen)
{
    const char    *k, **dst;
    yaml_node_t   *kn, *vn;

    kn = yaml_document_get_node(doc, p->key);
    vn = yaml_document_get_node(doc, p->value);

    if (kn->type != YAML_SCALAR_NODE) {
        snprintf(err, errlen, "%s:%zu: keys are names", file,
                 kn->start_mark.line + 1);
        return -1;
    }

    k = (const char *) kn->data.scalar.value;

    if (strcmp(k, "trust-key") == 0) {
        if (!cli_trust
            && hoctl_agent_cfg_trust(doc, vn, file, o, err, errlen)
               != 0)
        {
            return -1;
        }

        return 0;
    }

    if (strcmp(k, "etcd") == 0 && vn->type == YAML_SEQUENCE_NODE) {
        if (hoctl_agent_cfg_etcd_list(doc, vn, file, o, err, errlen)
            != 0)
        {
            return -1;
        }

        return 0;
    }

    dst = hoctl_agent_cfg_field(k, c, o);

    if (dst == NULL) {
        snprintf(err, errlen, "%s:%zu: unknown setting \"%s\"", file,
                 kn->start_mark.line + 1, k);
        return -1;
    }

    return hoctl_agent_cfg_scalar(vn, file, k, dst, err, errlen);
}


int
hoctl_agent_config(const char *file, hoctl_conn_t *c, hoctl_etcd_opts_t *o,
    char *err, size_t errlen)
{
    int                 rc, cli_trust;
    yaml_node_t        *root;
    yaml_document_t     doc;
    yaml_node_pair_t   *p;

    if (hoctl_agent_cfg_load(file, &doc, err, errlen) != 0) {
        return -1;
    }

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
        if (hoctl_agent_cfg_pair(&doc, p, file, c, o, cli_trust, err,
                                 errlen)
            != 0)
        {
            goto done;
        }
    }

    rc = 0;

done:

    yaml_document_delete(&doc);
    return rc;
}


/*
 * The names of the one-string settings that differ between two sets, as
 * "etcd, url" in buf ("" when none): on SIGHUP the agent applies only the
 * trusted keys, and says which other settings wait for a restart.
 */
void
hoctl_agent_config_changed(const hoctl_conn_t *c0,
    const hoctl_etcd_opts_t *o0, const hoctl_conn_t *c1,
    const hoctl_etcd_opts_t *o1, char *buf, size_t len)
{
    size_t        i, n;
    const char   *a, *b;
    const void   *base0, *base1;

    buf[0] = '\0';
    n = 0;

    for (i = 0; i < sizeof(hoctl_agent_cfg_strings)
                    / sizeof(hoctl_agent_cfg_strings[0]); i++)
    {
        base0 = hoctl_agent_cfg_strings[i].conn ? (const void *) c0
                                                : (const void *) o0;
        base1 = hoctl_agent_cfg_strings[i].conn ? (const void *) c1
                                                : (const void *) o1;
        a = *(const char *const *) ((const char *) base0
                                    + hoctl_agent_cfg_strings[i].off);
        b = *(const char *const *) ((const char *) base1
                                    + hoctl_agent_cfg_strings[i].off);

        if (a == b || (a != NULL && b != NULL && strcmp(a, b) == 0)) {
            continue;
        }

        if (n < len) {
            n += snprintf(buf + n, len - n, "%s%s", n ? ", " : "",
                          hoctl_agent_cfg_strings[i].name);
        }
    }
}
