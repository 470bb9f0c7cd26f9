
/*
 * ha-optoutctl audit verify: checks the SHA-256 chain of an audit log.
 *
 * Each line is {...members..., "prev_hash": "<hex>", "hash": "<hex>"}.
 * hash = hex SHA-256 of the line with its final `, "hash": "<hex>"` cut
 * out, i.e. line[0 : index of `, "hash": "`] + "}".  prev_hash of the first
 * line is 64 zeros, of each next line the hash of the line before it.
 *
 * Several files are one chain, in the order given (rotated logs, oldest
 * first).  With --state, the state file's "audit_hash" (the last line
 * nginx had written when it last saved it) must be one of the lines: a
 * log whose last lines were removed fails.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <yaml.h>

#include "hoctl.h"
#include "verb.h"


#define HOCTL_HASH_MEMBER  ", \"hash\": \""
#define HOCTL_HEX_LEN      64


static int
hoctl_is_hex64(const char *s, size_t len)
{
    size_t  i;

    if (len != HOCTL_HEX_LEN) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


/* The last occurrence: the hash member is the last one on the line. */
static const char *
hoctl_find_hash_member(const char *line, size_t len)
{
    const char  *p, *last;
    size_t       mlen;

    mlen = sizeof(HOCTL_HASH_MEMBER) - 1;
    last = NULL;
    p = line;

    while ((p = memmem(p, len - (p - line), HOCTL_HASH_MEMBER, mlen))
           != NULL)
    {
        last = p;
        p += mlen;
    }

    return last;
}


static void
hoctl_sha256_hex(const char *data, size_t len, char *hex)
{
    unsigned int   n, i;
    unsigned char  md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX    *ctx;

    ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, data, len);
    EVP_DigestUpdate(ctx, "}", 1);
    EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);

    for (i = 0; i < n; i++) {
        sprintf(hex + 2 * i, "%02x", md[i]);
    }
}


/*
 * The line ends with its own "hash" member and that is the hash of what
 * comes before it: NULL and *hexp the hash, else what is wrong.
 */
static const char *
hoctl_audit_hashed(json_t *j, const char *line, size_t len,
    const char **hexp)
{
    size_t        mlen;
    json_t       *ph, *h;
    const char   *m;
    char          computed[HOCTL_HEX_LEN + 1];

    ph = json_object_get(j, "prev_hash");
    h = json_object_get(j, "hash");

    if (!json_is_string(ph) || !json_is_string(h)) {
        return "\"prev_hash\" or \"hash\" is missing or not a string";
    }

    mlen = sizeof(HOCTL_HASH_MEMBER) - 1;
    m = hoctl_find_hash_member(line, len);

    if (m == NULL || (size_t) (line + len - m) != mlen + HOCTL_HEX_LEN + 2
        || memcmp(line + len - 2, "\"}", 2) != 0
        || !hoctl_is_hex64(m + mlen, HOCTL_HEX_LEN))
    {
        return "does not end with , \"hash\": \"<64 lowercase hex>\"}";
    }

    *hexp = m + mlen;

    if (strlen(json_string_value(h)) != HOCTL_HEX_LEN
        || memcmp(json_string_value(h), *hexp, HOCTL_HEX_LEN) != 0)
    {
        return "the final \"hash\" member is not the object's hash";
    }

    if (!hoctl_is_hex64(json_string_value(ph),
                        strlen(json_string_value(ph))))
    {
        return "prev_hash is not 64 lowercase hex digits";
    }

    hoctl_sha256_hex(line, m - line, computed);

    if (memcmp(computed, *hexp, HOCTL_HEX_LEN) != 0) {
        return "hash does not match the line's content (the line was "
               "edited)";
    }

    return NULL;
}


/* Returns NULL when the line is sound, else what is wrong with it. */
static const char *
hoctl_audit_line(const char *line, size_t len, const char *expect_prev,
    int first, char *hash, char *why, size_t whylen, char *gap)
{
    json_t       *j, *ph, *a, *x;
    const char   *hex, *bad;
    json_error_t  e;

    if (len == 0) {
        return "empty line";
    }

    j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        snprintf(why, whylen, "not valid JSON: %s (column %d)",
                 hoctl_safe(e.text),
                 e.column);
        return why;
    }

    if (!json_is_object(j)) {
        json_decref(j);
        return "not a JSON object";
    }

    bad = hoctl_audit_hashed(j, line, len, &hex);
    if (bad != NULL) {
        json_decref(j);
        return bad;
    }

    ph = json_object_get(j, "prev_hash");

    if (strcmp(json_string_value(ph), expect_prev) != 0) {
        json_decref(j);

        if (first) {
            return "prev_hash is not where the chain starts (64 zeros, or "
                   "--prev-hash): lines before it are missing (a rotated "
                   "log: give the files before it too, oldest first)";
        }

        return "prev_hash does not match the hash of the line before it "
               "(a line was deleted, inserted or moved)";
    }

    memcpy(hash, hex, HOCTL_HEX_LEN);
    hash[HOCTL_HEX_LEN] = '\0';

    /* nginx found the log cut when it started (docs/tokens.md) */

    gap[0] = '\0';
    a = json_object_get(j, "action");
    x = json_object_get(j, "expected");

    if (json_is_string(a) && strcmp(json_string_value(a), "chain_gap") == 0) {
        snprintf(gap, HOCTL_HEX_LEN + 1, "%s",
                 json_is_string(x) ? hoctl_safe(json_string_value(x)) : "?");
    }

    json_decref(j);
    return NULL;
}


/*
 * The state file's "audit_hash" into hash.  HOCTL_OK; HOCTL_USAGE when the
 * file cannot be read or holds none (then *why says so).
 */
static int
hoctl_state_hash(const char *file, char *hash, const char **why)
{
    int                rc;
    FILE              *f;
    yaml_parser_t      parser;
    yaml_document_t    doc;
    yaml_node_t       *root, *k, *v;
    yaml_node_pair_t  *p;

    f = fopen(file, "rb");
    if (f == NULL) {
        *why = strerror(errno);
        return HOCTL_USAGE;
    }

    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        *why = "out of memory";
        return HOCTL_USAGE;
    }

    yaml_parser_set_input_file(&parser, f);

    if (!yaml_parser_load(&parser, &doc)) {
        yaml_parser_delete(&parser);
        fclose(f);
        *why = "not valid YAML";
        return HOCTL_USAGE;
    }

    rc = HOCTL_USAGE;
    *why = "it holds no audit_hash (no audit line was written before it "
           "was saved, or an older nginx wrote it)";

    root = yaml_document_get_root_node(&doc);

    if (root != NULL && root->type == YAML_MAPPING_NODE) {
        for (p = root->data.mapping.pairs.start;
             p < root->data.mapping.pairs.top;
             p++)
        {
            k = yaml_document_get_node(&doc, p->key);
            v = yaml_document_get_node(&doc, p->value);

            if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE
                || v->type != YAML_SCALAR_NODE
                || k->data.scalar.length != sizeof("audit_hash") - 1
                || memcmp(k->data.scalar.value, "audit_hash",
                          sizeof("audit_hash") - 1) != 0)
            {
                continue;
            }

            if (!hoctl_is_hex64((char *) v->data.scalar.value,
                                v->data.scalar.length))
            {
                *why = "its audit_hash is not 64 lowercase hex digits";
                break;
            }

            memcpy(hash, v->data.scalar.value, HOCTL_HEX_LEN);
            hash[HOCTL_HEX_LEN] = '\0';
            rc = HOCTL_OK;
            break;
        }
    }

    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);

    return rc;
}


static const char  hoctl_zero_hash[] =
    "0000000000000000000000000000000000000000000000000000000000000000";


/* what audit verify carries from line to line and file to file */
typedef struct {
    char       **files;
    int          nfiles;
    const char  *state;
    int          accept_gaps;
    int          multi;
    int          found;         /* the state file's audit_hash was met */
    char         prev[HOCTL_HEX_LEN + 1];
    char         anchor[HOCTL_HEX_LEN + 1];
    char         where[HOCTL_ERRLEN];
    char         why[HOCTL_ERRLEN];
    char         gapwhy[HOCTL_ERRLEN];
    char         joint[HOCTL_ERRLEN + 1024];
    size_t       total, after, gaps;
    char        *line;
    size_t       cap;
} hoctl_verify_t;


/* --prev-hash, --state and every file checked: a typo is a usage error */
static int
hoctl_verify_start(hoctl_verify_t *v, const char *prev_hash)
{
    int          i;
    const char  *swhy;

    if (prev_hash != NULL) {
        if (!hoctl_is_hex64(prev_hash, strlen(prev_hash))) {
            hoctl_warn("--prev-hash must be 64 lowercase hex digits");
            return HOCTL_USAGE;
        }

        memcpy(v->prev, prev_hash, sizeof(v->prev));

    } else {
        memcpy(v->prev, hoctl_zero_hash, sizeof(v->prev));
    }

    if (v->state != NULL
        && hoctl_state_hash(v->state, v->anchor, &swhy) != HOCTL_OK)
    {
        hoctl_warn("state file \"%s\": %s", hoctl_safe(v->state), swhy);
        return HOCTL_USAGE;
    }

    /* every file first: a typo is a usage error, not a broken chain */

    for (i = 0; i < v->nfiles; i++) {
        if (strcmp(v->files[i], "-") != 0
            && access(v->files[i], R_OK) != 0)
        {
            hoctl_warn("cannot open \"%s\": %s", hoctl_safe(v->files[i]),
                       strerror(errno));
            return HOCTL_USAGE;
        }
    }

    v->multi = (v->nfiles > 1);
    v->found = (v->state != NULL && strcmp(v->anchor, v->prev) == 0);

    return HOCTL_OK;
}


/* line n of file i (len bytes): what is wrong with it, or NULL */
static const char *
hoctl_verify_line(hoctl_verify_t *v, int i, size_t n, ssize_t len)
{
    char         gap[HOCTL_HEX_LEN + 1];
    const char  *bad;

    bad = hoctl_audit_line(v->line, len, v->prev, v->total == 1, v->prev,
                           v->why, sizeof(v->why), gap);

    if (bad == NULL && gap[0]) {
        v->gaps++;

        if (!v->accept_gaps) {
            snprintf(v->gapwhy, sizeof(v->gapwhy), "the log was cut before "
                     "this restart: the state file expected %s "
                     "(--accept-gaps accepts it)", gap);
            bad = v->gapwhy;
        }
    }

    if (bad != NULL && n == 1 && v->total > 1) {
        /* where one file should continue the one before it */
        snprintf(v->joint, sizeof(v->joint), "%.400s (it does not "
                 "continue \"%.200s\": a file between them is "
                 "missing, or they are not in order, oldest first)",
                 bad, hoctl_safe(v->files[i - 1]));
        bad = v->joint;
    }

    if (bad != NULL && v->total > 1 && len > 0
        && strstr(v->line, "\"prev_hash\": \"0000000000000000000000000"
                           "000000000000000000000000000000000000000\"")
           != NULL)
    {
        bad = "prev_hash is 64 zeros: the chain starts again here "
              "(nginx found neither a log nor a state file to "
              "continue when it started, or an older version "
              "restarted the chain at each start); what comes "
              "before it cannot be checked against it";
    }

    return bad;
}


/* one file of the chain: OK, REFUSED (the broken line said) or USAGE */
static int
hoctl_verify_file(hoctl_verify_t *v, int i)
{
    int          rc;
    FILE        *f;
    size_t       n;
    ssize_t      len;
    const char  *bad, *name;

    name = v->files[i];
    f = (strcmp(name, "-") == 0) ? stdin : fopen(name, "rb");
    if (f == NULL) {
        hoctl_warn("cannot open \"%s\": %s", hoctl_safe(name),
                   strerror(errno));
        return HOCTL_USAGE;
    }

    n = 0;
    rc = HOCTL_OK;

    while ((len = getline(&v->line, &v->cap, f)) != -1) {
        n++;
        v->total++;

        if (len > 0 && v->line[len - 1] == '\n') {
            len--;
        }

        bad = hoctl_verify_line(v, i, n, len);

        if (bad != NULL) {
            if (v->multi) {
                printf("%s: line %zu: %s\n", hoctl_safe(name), n, bad);
            } else {
                printf("line %zu: %s\n", n, bad);
            }

            rc = HOCTL_REFUSED;
            break;
        }

        if (v->found) {
            v->after++;

        } else if (v->state != NULL && strcmp(v->prev, v->anchor) == 0) {
            v->found = 1;
            snprintf(v->where, sizeof(v->where), "%.200s%sline %zu",
                     v->multi ? hoctl_safe(name) : "",
                     v->multi ? ": " : "", n);
        }
    }

    if (rc == HOCTL_OK && ferror(f)) {
        hoctl_warn("cannot read \"%s\": %s", hoctl_safe(name),
                   strerror(errno));
        rc = HOCTL_USAGE;
    }

    if (f != stdin) {
        fclose(f);
    }

    return rc;
}


/* the whole chain read: the state file's line, gaps accepted, "ok" */
static int
hoctl_verify_report(hoctl_verify_t *v)
{
    if (v->state != NULL && !v->found) {
        printf("the state file's audit_hash %.16s... is not a line of %s: "
               "lines at the end were removed (or the newest file is not "
               "given)\n", v->anchor, v->multi ? "these files" : "the log");
        return HOCTL_REFUSED;
    }

    if (v->gaps) {
        printf("accepted: %zu chain_gap line%s (the log was cut while nginx "
               "was stopped)\n", v->gaps, v->gaps == 1 ? "" : "s");
    }

    if (v->multi) {
        printf("ok: %zu line%s in %d files\n", v->total,
               v->total == 1 ? "" : "s", v->nfiles);
    } else {
        printf("ok: %zu line%s\n", v->total, v->total == 1 ? "" : "s");
    }

    if (v->state != NULL) {
        if (v->where[0]) {
            printf("state file: its audit_hash is %s; %zu line%s after it\n",
                   v->where, v->after, v->after == 1 ? "" : "s");
        } else {
            printf("state file: its audit_hash is where the chain starts; "
                   "%zu lines after it\n", v->after);
        }
    }

    return HOCTL_OK;
}


int
hoctl_audit_verify(char **files, int nfiles, const char *prev_hash,
    const char *state, int accept_gaps)
{
    int             i, rc;
    hoctl_verify_t  v;

    memset(&v, 0, sizeof(hoctl_verify_t));
    v.files = files;
    v.nfiles = nfiles;
    v.state = state;
    v.accept_gaps = accept_gaps;

    rc = hoctl_verify_start(&v, prev_hash);
    if (rc != HOCTL_OK) {
        return rc;
    }

    for (i = 0; i < nfiles; i++) {
        rc = hoctl_verify_file(&v, i);
        if (rc != HOCTL_OK) {
            free(v.line);
            return rc;
        }
    }

    free(v.line);

    return hoctl_verify_report(&v);
}


/* one value as JSON on its own line, nothing a terminal would act on */
static void
hoctl_audit_print(json_t *v, size_t flags)
{
    char  *line, *safe;

    line = json_dumps(v, flags);
    safe = hoctl_escape(line, 1);
    printf("%s\n", safe ? safe : "");
    free(safe);
    free(line);
}


static int
hoctl_audit_list(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    char           path[64];
    size_t         i;
    json_t        *j, *list, *e;

    if (a->nargs != 1) {
        return hoctl_usage(v, "'audit list' takes no FILE");
    }

    snprintf(path, sizeof(path), "v1/audit?limit=%ld", a->limit);

    rc = hoctl_get_json(&a->conn, path, a->json, &j);
    if (j == NULL) {
        return rc;
    }

    /* an array of entries, or an object holding one */
    list = j;
    if (json_is_object(j)) {
        list = json_object_get(j, "entries");
        if (!json_is_array(list)) {
            list = json_object_get(j, "audit");
        }
    }

    if (!json_is_array(list)) {
        hoctl_audit_print(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(j);
        return HOCTL_OK;
    }

    /* one entry per line, as the log holds them, nothing raw */

    json_array_foreach(list, i, e) {
        hoctl_audit_print(e, JSON_COMPACT | JSON_PRESERVE_ORDER
                             | JSON_ENCODE_ANY);
    }

    json_decref(j);
    return HOCTL_OK;
}


int
hoctl_verb_audit(const hoctl_verb_t *v, hoctl_args_t *a)
{
    if (a->nargs == 0) {
        return hoctl_usage(v, "give 'audit verify FILE' or 'audit list'");
    }

    if (strcmp(a->args[0], "verify") == 0) {
        if (a->nargs < 2) {
            return hoctl_usage(v, "'audit verify' takes a FILE (several: "
                               "rotated logs, oldest first)");
        }

        return hoctl_audit_verify(a->args + 1, a->nargs - 1, a->prev_hash,
                                  a->state, a->accept_gaps);
    }

    if (strcmp(a->args[0], "list") == 0) {
        return hoctl_audit_list(v, a);
    }

    return hoctl_usage(v, "unknown audit action \"%s\" (verify, list)",
                       a->args[0]);
}
