
/*
 * fuzz_jwks: ngx_http_ha_optout_jwks_parse() (ngx_http_ha_optout_keys.c),
 * the RFC 7517 JWK Set parser behind "ha_optout_admin_key jwks FILE".
 * The input is the file's content.  The key array starts with one key
 * (HS256, kid "ops") as if an earlier ha_optout_admin_key line had set it.
 *
 * Checked: the result is NGX_CONF_OK or NGX_CONF_ERROR; on NGX_CONF_OK
 * the set added at least one key, every added key has a non-empty kid
 * that no other key has, an alg of the four, an EVP_PKEY fit for that
 * alg (or an HS256 secret of at least 32 bytes, and then the set is
 * reported secret); a token naming each key's kid and alg reaches the
 * signature check (not "unknown_kid" or "algorithm"), and for an Ed25519
 * key the trivial signature R = identity, S = 0 fails it too (a key of
 * small order would take it for any token); every EVP_PKEY is
 * freed by the pool cleanups (LeakSanitizer).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/evp.h>

#include "ngx_http_ha_optout_token.h"
#include "fuzz.h"


#define FUZZ_JWKS_MAX  (64 * 1024)


static u_char  fuzz_secret[] = "fuzz-hs256-secret-0123456789abcdef-ops";


static size_t
fuzz_b64url(const u_char *in, size_t len, char *out)
{
    int     n, i, j;

    n = EVP_EncodeBlock((u_char *) out, in, (int) len);

    for (i = 0, j = 0; i < n; i++) {
        if (out[i] == '=') {
            continue;
        }

        out[j++] = (out[i] == '+') ? '-' : (out[i] == '/') ? '_' : out[i];
    }

    out[j] = '\0';

    return j;
}


/* a token for "key" with a garbage signature: must fail as "signature" */

static void
fuzz_probe(ngx_pool_t *pool, ngx_array_t *keys, ngx_http_ha_optout_key_t *key)
{
    char                         *hdr, *tok, *p, *sig;
    u_char                        rs[64];
    size_t                        n;
    ngx_uint_t                    try;
    ngx_int_t                     rc;
    ngx_str_t                     token;
    const char                   *alg, *reason;
    ngx_http_ha_optout_claims_t   claims;

    static const char  *algs[] = { "", "HS256", "ES256", "EdDSA", "RS256" };

    alg = algs[key->alg];

    /* a kid with a quote or a backslash would need JSON escaping: skip */
    for (n = 0; n < key->kid.len; n++) {
        if (key->kid.data[n] == '"' || key->kid.data[n] == '\\'
            || key->kid.data[n] < 0x20)
        {
            return;
        }
    }

    n = key->kid.len + 64;
    hdr = malloc(n);
    n = snprintf(hdr, n, "{\"alg\":\"%s\",\"kid\":\"%.*s\"}", alg,
                 (int) key->kid.len, key->kid.data);

    tok = malloc(n * 2 + 160);
    p = tok + fuzz_b64url((u_char *) hdr, n, tok);
    p += sprintf(p, ".e30.");
    sig = p;
    p += sprintf(p, "AAAA");
    free(hdr);

    for (try = 0; try < 2; try++) {
        token.data = (u_char *) tok;
        token.len = p - tok;
        reason = NULL;

        rc = ngx_http_ha_optout_token_verify(pool, keys, &token, NULL, NULL,
                                             3600, FUZZ_NOW, &claims,
                                             &reason);

        fuzz_assert(rc == NGX_DECLINED && reason != NULL
                    && strcmp(reason, "signature") == 0,
                    "a token for kid \"%.*s\" (%s) was not refused as "
                    "\"signature\" but \"%s\"", (int) key->kid.len,
                    key->kid.data, alg, reason ? reason : "(none)");

        if (key->alg != NGX_HA_OPTOUT_ALG_EDDSA) {
            break;
        }

        /* R = the identity, S = 0: verifies for a small-order key */
        ngx_memzero(rs, sizeof(rs));
        rs[0] = 1;
        p = sig + fuzz_b64url(rs, sizeof(rs), sig);
    }

    free(tok);
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char                      *rv;
    u_char                    *buf;
    ngx_str_t                  file = ngx_string("/fuzz/idp.jwks");
    ngx_str_t                  text;
    ngx_uint_t                 i, j, secret, hs;
    ngx_conf_t                 cf;
    ngx_pool_t                *pool;
    ngx_array_t               *keys;
    ngx_http_ha_optout_key_t  *k;

    if (size > FUZZ_JWKS_MAX) {
        return 0;
    }

    pool = ngx_create_pool(4096, NULL);

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = pool;

    keys = ngx_array_create(pool, 2, sizeof(ngx_http_ha_optout_key_t));
    k = ngx_array_push(keys);
    ngx_memzero(k, sizeof(ngx_http_ha_optout_key_t));
    k->alg = NGX_HA_OPTOUT_ALG_HS256;
    ngx_str_set(&k->kid, "ops");
    k->secret.data = fuzz_secret;
    k->secret.len = sizeof(fuzz_secret) - 1;

    /* exactly the input's bytes, so that an overread is caught */
    buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    text.data = buf;
    text.len = size;

    secret = 0;

    rv = ngx_http_ha_optout_jwks_parse(&cf, keys, &file, &text, &secret);

    if (rv == NGX_CONF_OK) {
        fuzz_assert(keys->nelts >= 2, "a set accepted without a usable key");

        k = keys->elts;
        hs = 0;

        for (i = 1; i < keys->nelts; i++) {
            fuzz_assert(k[i].kid.len > 0, "key %lu has no kid",
                        (unsigned long) i);
            fuzz_touch(k[i].kid.data, k[i].kid.len);

            for (j = 0; j < i; j++) {
                fuzz_assert(k[j].kid.len != k[i].kid.len
                            || memcmp(k[j].kid.data, k[i].kid.data,
                                      k[i].kid.len) != 0,
                            "duplicate kid accepted");
            }

            switch (k[i].alg) {

            case NGX_HA_OPTOUT_ALG_HS256:
                fuzz_assert(k[i].secret.len >= 32 && k[i].pkey == NULL,
                            "a short or odd HS256 key");
                fuzz_touch(k[i].secret.data, k[i].secret.len);
                hs = 1;
                break;

            case NGX_HA_OPTOUT_ALG_ES256:
                fuzz_assert(k[i].pkey && EVP_PKEY_is_a(k[i].pkey, "EC"),
                            "an ES256 key that is not EC");
                break;

            case NGX_HA_OPTOUT_ALG_EDDSA:
                fuzz_assert(k[i].pkey
                            && EVP_PKEY_is_a(k[i].pkey, "ED25519"),
                            "an EdDSA key that is not Ed25519");
                break;

            case NGX_HA_OPTOUT_ALG_RS256:
                fuzz_assert(k[i].pkey && EVP_PKEY_is_a(k[i].pkey, "RSA")
                            && EVP_PKEY_get_bits(k[i].pkey) >= 2048,
                            "an RS256 key that is not RSA >= 2048 bits");
                break;

            default:
                fuzz_fail("key %lu has alg %lu", (unsigned long) i,
                          (unsigned long) k[i].alg);
            }

            fuzz_probe(pool, keys, &k[i]);
        }

        fuzz_assert(!hs || secret, "an oct key did not make the set secret");

    } else {
        fuzz_assert(rv == NGX_CONF_ERROR, "jwks_parse returned %p",
                    (void *) rv);
    }

    ngx_destroy_pool(pool);
    free(buf);

    return 0;
}
