
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


/* Returns NULL when the line is sound, else what is wrong with it. */
static const char *
hoctl_audit_line(const char *line, size_t len, const char *expect_prev,
    int first, char *hash, char *why, size_t whylen, char *gap)
{
    size_t        mlen;
    json_t       *j, *ph, *h, *a, *x;
    const char   *m, *hex;
    json_error_t  e;
    char          computed[HOCTL_HEX_LEN + 1];

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

    ph = json_object_get(j, "prev_hash");
    h = json_object_get(j, "hash");

    if (!json_is_string(ph) || !json_is_string(h)) {
        json_decref(j);
        return "\"prev_hash\" or \"hash\" is missing or not a string";
    }

    mlen = sizeof(HOCTL_HASH_MEMBER) - 1;
    m = hoctl_find_hash_member(line, len);

    if (m == NULL || (size_t) (line + len - m) != mlen + HOCTL_HEX_LEN + 2
        || memcmp(line + len - 2, "\"}", 2) != 0
        || !hoctl_is_hex64(m + mlen, HOCTL_HEX_LEN))
    {
        json_decref(j);
        return "does not end with , \"hash\": \"<64 lowercase hex>\"}";
    }

    hex = m + mlen;

    if (strlen(json_string_value(h)) != HOCTL_HEX_LEN
        || memcmp(json_string_value(h), hex, HOCTL_HEX_LEN) != 0)
    {
        json_decref(j);
        return "the final \"hash\" member is not the object's hash";
    }

    if (!hoctl_is_hex64(json_string_value(ph),
                        strlen(json_string_value(ph))))
    {
        json_decref(j);
        return "prev_hash is not 64 lowercase hex digits";
    }

    hoctl_sha256_hex(line, m - line, computed);

    if (memcmp(computed, hex, HOCTL_HEX_LEN) != 0) {
        json_decref(j);
        return "hash does not match the line's content (the line was "
               "edited)";
    }

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


int
hoctl_audit_verify(char **files, int nfiles, const char *prev_hash,
    const char *state, int accept_gaps)
{
    int          i, found, multi;
    char         gap[HOCTL_HEX_LEN + 1];
    char         gapwhy[HOCTL_ERRLEN];
    size_t       gaps;
    FILE        *f;
    char        *line, prev[HOCTL_HEX_LEN + 1], why[HOCTL_ERRLEN];
    char         anchor[HOCTL_HEX_LEN + 1], where[HOCTL_ERRLEN];
    char         joint[HOCTL_ERRLEN + 1024];
    size_t       cap, n, total, after;
    ssize_t      len;
    const char  *bad, *swhy;

    if (prev_hash != NULL) {
        if (!hoctl_is_hex64(prev_hash, strlen(prev_hash))) {
            hoctl_warn("--prev-hash must be 64 lowercase hex digits");
            return HOCTL_USAGE;
        }

        memcpy(prev, prev_hash, sizeof(prev));

    } else {
        memcpy(prev, hoctl_zero_hash, sizeof(prev));
    }

    if (state != NULL
        && hoctl_state_hash(state, anchor, &swhy) != HOCTL_OK)
    {
        hoctl_warn("state file \"%s\": %s", hoctl_safe(state), swhy);
        return HOCTL_USAGE;
    }

    /* every file first: a typo is a usage error, not a broken chain */

    for (i = 0; i < nfiles; i++) {
        if (strcmp(files[i], "-") != 0 && access(files[i], R_OK) != 0) {
            hoctl_warn("cannot open \"%s\": %s", hoctl_safe(files[i]),
                       strerror(errno));
            return HOCTL_USAGE;
        }
    }

    multi = (nfiles > 1);
    found = (state != NULL && strcmp(anchor, prev) == 0);
    where[0] = '\0';
    after = 0;
    total = 0;
    gaps = 0;
    line = NULL;
    cap = 0;

    for (i = 0; i < nfiles; i++) {
        f = (strcmp(files[i], "-") == 0) ? stdin : fopen(files[i], "rb");
        if (f == NULL) {
            hoctl_warn("cannot open \"%s\": %s", hoctl_safe(files[i]),
                       strerror(errno));
            free(line);
            return HOCTL_USAGE;
        }

        n = 0;

        while ((len = getline(&line, &cap, f)) != -1) {
            n++;
            total++;

            if (len > 0 && line[len - 1] == '\n') {
                len--;
            }

            bad = hoctl_audit_line(line, len, prev, total == 1, prev, why,
                                   sizeof(why), gap);

            if (bad == NULL && gap[0]) {
                gaps++;

                if (!accept_gaps) {
                    snprintf(gapwhy, sizeof(gapwhy), "the log was cut before "
                             "this restart: the state file expected %s "
                             "(--accept-gaps accepts it)", gap);
                    bad = gapwhy;
                }
            }

            if (bad != NULL && n == 1 && total > 1) {
                /* where one file should continue the one before it */
                snprintf(joint, sizeof(joint), "%.400s (it does not "
                         "continue \"%.200s\": a file between them is "
                         "missing, or they are not in order, oldest first)",
                         bad, hoctl_safe(files[i - 1]));
                bad = joint;
            }

            if (bad != NULL && total > 1 && len > 0
                && strstr(line, "\"prev_hash\": \"0000000000000000000000000"
                                "000000000000000000000000000000000000000\"")
                   != NULL)
            {
                bad = "prev_hash is 64 zeros: the chain starts again here "
                      "(nginx found neither a log nor a state file to "
                      "continue when it started, or an older version "
                      "restarted the chain at each start); what comes "
                      "before it cannot be checked against it";
            }

            if (bad != NULL) {
                if (multi) {
                    printf("%s: line %zu: %s\n", hoctl_safe(files[i]), n, bad);
                } else {
                    printf("line %zu: %s\n", n, bad);
                }

                free(line);
                if (f != stdin) {
                    fclose(f);
                }
                return HOCTL_REFUSED;
            }

            if (found) {
                after++;

            } else if (state != NULL && strcmp(prev, anchor) == 0) {
                found = 1;
                snprintf(where, sizeof(where), "%.200s%sline %zu",
                         multi ? hoctl_safe(files[i]) : "", multi ? ": " : "",
                         n);
            }
        }

        if (ferror(f)) {
            hoctl_warn("cannot read \"%s\": %s", hoctl_safe(files[i]),
                       strerror(errno));
            free(line);
            if (f != stdin) {
                fclose(f);
            }
            return HOCTL_USAGE;
        }

        if (f != stdin) {
            fclose(f);
        }
    }

    free(line);

    if (state != NULL && !found) {
        printf("the state file's audit_hash %.16s... is not a line of %s: "
               "lines at the end were removed (or the newest file is not "
               "given)\n", anchor, multi ? "these files" : "the log");
        return HOCTL_REFUSED;
    }

    if (gaps) {
        printf("accepted: %zu chain_gap line%s (the log was cut while nginx "
               "was stopped)\n", gaps, gaps == 1 ? "" : "s");
    }

    if (multi) {
        printf("ok: %zu line%s in %d files\n", total,
               total == 1 ? "" : "s", nfiles);
    } else {
        printf("ok: %zu line%s\n", total, total == 1 ? "" : "s");
    }

    if (state != NULL) {
        if (where[0]) {
            printf("state file: its audit_hash is %s; %zu line%s after it\n",
                   where, after, after == 1 ? "" : "s");
        } else {
            printf("state file: its audit_hash is where the chain starts; "
                   "%zu lines after it\n", after);
        }
    }

    return HOCTL_OK;
}


static int
hoctl_audit_list(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    char           path[64], *line, *safe;
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
        line = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        safe = hoctl_escape(line, 1);
        printf("%s\n", safe ? safe : "");
        free(safe);
        free(line);
        json_decref(j);
        return HOCTL_OK;
    }

    /* one entry per line, as the log holds them, nothing raw */

    json_array_foreach(list, i, e) {
        line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER
                             | JSON_ENCODE_ANY);
        safe = hoctl_escape(line, 1);
        printf("%s\n", safe ? safe : "");
        free(safe);
        free(line);
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
