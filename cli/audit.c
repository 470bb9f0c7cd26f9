
/*
 * ha-optoutctl audit verify: checks the SHA-256 chain of an audit log.
 *
 * Each line is {...members..., "prev_hash": "<hex>", "hash": "<hex>"}.
 * hash = hex SHA-256 of the line with its final `, "hash": "<hex>"` cut
 * out, i.e. line[0 : index of `, "hash": "`] + "}".  prev_hash of the first
 * line is 64 zeros, of each next line the hash of the line before it.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "hoctl.h"


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
    int first, char *hash, char *why, size_t whylen)
{
    size_t        mlen;
    json_t       *j, *ph, *h;
    const char   *m, *hex;
    json_error_t  e;
    char          computed[HOCTL_HEX_LEN + 1];

    if (len == 0) {
        return "empty line";
    }

    j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        snprintf(why, whylen, "not valid JSON: %s (column %d)", e.text,
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
                   "--prev-hash): lines before it are missing";
        }

        return "prev_hash does not match the hash of the line before it "
               "(a line was deleted, inserted or moved)";
    }

    memcpy(hash, hex, HOCTL_HEX_LEN);
    hash[HOCTL_HEX_LEN] = '\0';

    json_decref(j);
    return NULL;
}


int
hoctl_audit_verify(const char *file, const char *prev_hash)
{
    FILE        *f;
    char        *line, prev[HOCTL_HEX_LEN + 1], why[HOCTL_ERRLEN];
    size_t       cap, n;
    ssize_t      len;
    const char  *bad;

    if (prev_hash != NULL) {
        if (!hoctl_is_hex64(prev_hash, strlen(prev_hash))) {
            hoctl_warn("--prev-hash must be 64 lowercase hex digits");
            return HOCTL_USAGE;
        }

        memcpy(prev, prev_hash, sizeof(prev));

    } else {
        memset(prev, '0', HOCTL_HEX_LEN);
        prev[HOCTL_HEX_LEN] = '\0';
    }

    f = (strcmp(file, "-") == 0) ? stdin : fopen(file, "rb");
    if (f == NULL) {
        hoctl_warn("cannot open \"%s\": %s", file, strerror(errno));
        return HOCTL_USAGE;
    }

    line = NULL;
    cap = 0;
    n = 0;

    while ((len = getline(&line, &cap, f)) != -1) {
        n++;

        if (len > 0 && line[len - 1] == '\n') {
            len--;
        }

        bad = hoctl_audit_line(line, len, prev, n == 1, prev, why,
                               sizeof(why));
        if (bad != NULL) {
            printf("line %zu: %s\n", n, bad);
            free(line);
            if (f != stdin) {
                fclose(f);
            }
            return HOCTL_REFUSED;
        }
    }

    free(line);

    if (ferror(f)) {
        hoctl_warn("cannot read \"%s\": %s", file, strerror(errno));
        if (f != stdin) {
            fclose(f);
        }
        return HOCTL_USAGE;
    }

    if (f != stdin) {
        fclose(f);
    }

    printf("ok: %zu lines\n", n);
    return HOCTL_OK;
}
