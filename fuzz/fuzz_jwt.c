
/*
 * fuzz_jwt: ngx_http_ha_optout_token_verify() (ngx_http_ha_optout_token.c)
 * with an HS256 key (kid "ops") and an ES256 key (kid "ci").
 *
 * Input byte 0:
 *   bits 0-1  mode
 *               0  the rest is the token text as it came after "Bearer "
 *               1  the rest is "HEADER\nPAYLOAD" (JSON texts); the harness
 *                  base64url-encodes and signs them with the HS256 secret,
 *                  so the claims parser is reached (HEADER defaults to
 *                  {"alg":"HS256","kid":"ops"} when there is no newline)
 *               2  the same signed with the ES256 private key
 *               3  "HEADER\nPAYLOAD\nSIG": SIG (raw bytes) is the
 *                  signature, unverified garbage of any length
 *   bits 2-3  key set: both keys, HS256 only, ES256 only, none
 *   bit 4     audience "edge-eu-1" required
 *   bit 5     issuer "https://idp.example" required
 *
 * Checked: the result is NGX_OK or NGX_DECLINED with a reason from the
 * header's list; NGX_OK means exp, nbf, iat, lifetime and audience hold
 * at FUZZ_NOW; a token the harness signed itself is never refused for
 * its signature; claim strings are NUL-terminated and readable.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <jansson.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "ngx_http_ha_optout_token.h"
#include "fuzz.h"


#define FUZZ_LIFETIME   3600
#define FUZZ_TOKEN_MAX  (3 * 8192)


/* a throwaway key made for fuzzing; it guards nothing */
static const char  fuzz_es_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgIb6tNFAGcxmpPm1I\n"
    "n9XK0Y7NfhGzOQHlfa8rj74JoaShRANCAARAoOx+6VBnot38T5DT14xNt8wabX8c\n"
    "Eh27Zw+uDej015CWcoHn/YZ8ky2MEt9CBtFzry8hI7L+gP2dAc5DJNSz\n"
    "-----END PRIVATE KEY-----\n";

static u_char  fuzz_secret[] = "fuzz-hs256-secret-0123456789abcdef-ops";

static const char  *fuzz_reasons[] = {
    "malformed", "algorithm", "unknown_kid", "signature", "expired",
    "not_yet_valid", "lifetime", "audience", "issuer", "type", NULL
};

static EVP_PKEY     *fuzz_es_priv;
static ngx_array_t  *fuzz_keys[4];
static ngx_str_t     fuzz_audience = ngx_string("edge-eu-1");
static ngx_str_t     fuzz_issuer = ngx_string("https://idp.example");


static ngx_array_t *
keys_make(ngx_pool_t *pool, ngx_http_ha_optout_key_t *hs,
    ngx_http_ha_optout_key_t *es)
{
    ngx_array_t               *a;
    ngx_http_ha_optout_key_t  *k;

    a = ngx_array_create(pool, 2, sizeof(ngx_http_ha_optout_key_t));

    if (hs) {
        k = ngx_array_push(a);
        *k = *hs;
    }

    if (es) {
        k = ngx_array_push(a);
        *k = *es;
    }

    return a;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    BIO                       *bio;
    u_char                    *der, *p;
    int                        len;
    EVP_PKEY                  *pub;
    ngx_pool_t                *pool;
    const u_char              *cp;
    ngx_http_ha_optout_key_t   hs, es;

    json_object_seed(1);

    bio = BIO_new_mem_buf(fuzz_es_pem, -1);
    fuzz_es_priv = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (fuzz_es_priv == NULL) {
        fuzz_fail("cannot load the ES256 key");
    }

    /* the verifier gets the public half only, as from a PEM file */

    len = i2d_PUBKEY(fuzz_es_priv, NULL);
    der = p = OPENSSL_malloc(len);
    i2d_PUBKEY(fuzz_es_priv, &p);
    cp = der;
    pub = d2i_PUBKEY(NULL, &cp, len);
    OPENSSL_free(der);

    if (pub == NULL) {
        fuzz_fail("cannot derive the ES256 public key");
    }

    pool = ngx_create_pool(4096, NULL);     /* lives as long as the run */

    ngx_memzero(&hs, sizeof(hs));
    hs.alg = NGX_HA_OPTOUT_ALG_HS256;
    ngx_str_set(&hs.kid, "ops");
    ngx_str_set(&hs.file, "/fuzz/ops.key");
    hs.secret.data = fuzz_secret;
    hs.secret.len = sizeof(fuzz_secret) - 1;

    ngx_memzero(&es, sizeof(es));
    es.alg = NGX_HA_OPTOUT_ALG_ES256;
    ngx_str_set(&es.kid, "ci");
    ngx_str_set(&es.file, "/fuzz/ci.pub.pem");
    es.pkey = pub;

    fuzz_keys[0] = keys_make(pool, &hs, &es);
    fuzz_keys[1] = keys_make(pool, &hs, NULL);
    fuzz_keys[2] = keys_make(pool, NULL, &es);
    fuzz_keys[3] = keys_make(pool, NULL, NULL);

    return 0;
}


static size_t
b64url(const u_char *in, size_t len, char *out)
{
    size_t  n, i, j;

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


static size_t
sign_es256(const u_char *data, size_t len, u_char *sig)
{
    size_t         dlen;
    u_char         der[128];
    EVP_MD_CTX    *ctx;
    ECDSA_SIG     *es;
    const BIGNUM  *r, *s;
    const u_char  *p;

    ctx = EVP_MD_CTX_new();
    dlen = sizeof(der);

    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, fuzz_es_priv) != 1
        || EVP_DigestSign(ctx, der, &dlen, data, len) != 1)
    {
        fuzz_fail("ES256 signing failed");
    }

    EVP_MD_CTX_free(ctx);

    p = der;
    es = d2i_ECDSA_SIG(NULL, &p, (long) dlen);
    ECDSA_SIG_get0(es, &r, &s);
    BN_bn2binpad(r, sig, 32);
    BN_bn2binpad(s, sig + 32, 32);
    ECDSA_SIG_free(es);

    return 64;
}


/* builds HEADER.PAYLOAD.SIG into buf (FUZZ_TOKEN_MAX + 1 bytes) */

static size_t
build_token(ngx_uint_t mode, const u_char *data, size_t size, char *buf,
    ngx_uint_t *own_header)
{
    size_t         n, hlen, plen, slen;
    u_char         sig[EVP_MAX_MD_SIZE > 64 ? EVP_MAX_MD_SIZE : 64];
    unsigned int   mlen;
    const u_char  *hdr, *pay, *nl, *rawsig;

    nl = memchr(data, '\n', size);
    *own_header = (nl == NULL);

    if (nl == NULL) {
        hdr = (const u_char *) ((mode == 2) ? "{\"alg\":\"ES256\",\"kid\":\"ci\"}"
                                : "{\"alg\":\"HS256\",\"kid\":\"ops\"}");
        hlen = strlen((const char *) hdr);
        pay = data;
        plen = size;
        rawsig = NULL;
        slen = 0;

    } else {
        hdr = data;
        hlen = nl - data;
        pay = nl + 1;
        plen = size - hlen - 1;
        rawsig = NULL;
        slen = 0;

        if (mode == 3) {
            nl = memchr(pay, '\n', plen);

            if (nl) {
                rawsig = nl + 1;
                slen = plen - (nl - pay) - 1;
                plen = nl - pay;
            }
        }
    }

    /* base64url grows 3 bytes into 4: stay inside buf */
    if ((hlen + plen + slen + 3) / 3 * 4 + 8 > FUZZ_TOKEN_MAX) {
        return 0;
    }

    n = b64url(hdr, hlen, buf);
    buf[n++] = '.';
    n += b64url(pay, plen, buf + n);

    switch (mode) {

    case 1:
        HMAC(EVP_sha256(), fuzz_secret, (int) sizeof(fuzz_secret) - 1,
             (u_char *) buf, n, sig, &mlen);
        slen = mlen;
        break;

    case 2:
        slen = sign_es256((u_char *) buf, n, sig);
        break;

    default:
        if (slen > sizeof(sig)) {
            slen = sizeof(sig);
        }

        if (slen) {
            memcpy(sig, rawsig, slen);
        }
    }

    buf[n++] = '.';
    n += b64url(sig, slen, buf + n);

    return n;
}


static void
check_claims(ngx_http_ha_optout_claims_t *c, ngx_uint_t aud)
{
    ngx_uint_t   i;
    ngx_str_t   *s;

    fuzz_assert(c->exp + NGX_HA_OPTOUT_LEEWAY > FUZZ_NOW,
                "an expired token was accepted (exp %lld)",
                (long long) c->exp);
    fuzz_assert(c->nbf - NGX_HA_OPTOUT_LEEWAY <= FUZZ_NOW,
                "a token not yet valid was accepted (nbf %lld)",
                (long long) c->nbf);
    fuzz_assert(c->iat - NGX_HA_OPTOUT_LEEWAY <= FUZZ_NOW,
                "a token issued in the future was accepted (iat %lld)",
                (long long) c->iat);
    fuzz_assert(c->exp - (c->iat ? c->iat : FUZZ_NOW) <= FUZZ_LIFETIME,
                "a token living longer than the limit was accepted");
    fuzz_assert((c->scopes & ~(NGX_HA_OPTOUT_SCOPE_READ
                               |NGX_HA_OPTOUT_SCOPE_WRITE)) == 0,
                "unknown scope bits %lx", (unsigned long) c->scopes);
    fuzz_assert(c->kid.len == 2 || c->kid.len == 3, "kid of no key");

    fuzz_assert(c->sub.data && c->sub.data[c->sub.len] == '\0',
                "sub not terminated");
    fuzz_assert(c->jti.data && c->jti.data[c->jti.len] == '\0',
                "jti not terminated");
    fuzz_assert(c->scope.data && c->scope.data[c->scope.len] == '\0',
                "scope not terminated");

    fuzz_touch(c->sub.data, c->sub.len + 1);
    fuzz_touch(c->jti.data, c->jti.len + 1);
    fuzz_touch(c->scope.data, c->scope.len + 1);

    if (c->upstreams) {
        s = c->upstreams->elts;

        for (i = 0; i < c->upstreams->nelts; i++) {
            fuzz_touch(s[i].data, s[i].len + 1);
        }
    }

    (void) aud;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char                         *buf;
    size_t                        len;
    ngx_int_t                     rc;
    ngx_str_t                     token;
    ngx_uint_t                    mode, set, aud, iss, i, known;
    ngx_uint_t                    own_header;
    ngx_pool_t                   *pool;
    const char                   *reason;
    ngx_http_ha_optout_claims_t   claims;

    if (size < 1 || size > FUZZ_TOKEN_MAX) {
        return 0;
    }

    mode = data[0] & 3;
    set = (data[0] >> 2) & 3;
    aud = (data[0] >> 4) & 1;
    iss = (data[0] >> 5) & 1;
    data++;
    size--;

    buf = NULL;
    own_header = 0;

    if (mode == 0) {
        /* exactly the token's bytes, so that an overread is caught */
        buf = malloc(size ? size : 1);
        memcpy(buf, data, size);
        len = size;

    } else {
        buf = malloc(FUZZ_TOKEN_MAX + 1);
        len = build_token(mode, data, size, buf, &own_header);

        if (len == 0) {
            free(buf);
            return 0;
        }
    }

    pool = ngx_create_pool(1024, NULL);

    token.data = (u_char *) buf;
    token.len = len;
    reason = NULL;

    rc = ngx_http_ha_optout_token_verify(pool, fuzz_keys[set], &token,
                                         aud ? &fuzz_audience : NULL,
                                         iss ? &fuzz_issuer : NULL,
                                         FUZZ_LIFETIME, FUZZ_NOW, &claims,
                                         &reason);

    if (rc == NGX_OK) {
        fuzz_assert(set != 3, "a token verified with no key at all");
        fuzz_assert(!iss || (claims.iss.len == fuzz_issuer.len
                             && ngx_memcmp(claims.iss.data, fuzz_issuer.data,
                                           fuzz_issuer.len) == 0),
                    "a token of another issuer was accepted");
        check_claims(&claims, aud);

    } else {
        fuzz_assert(rc == NGX_DECLINED, "token_verify() returned %ld",
                    (long) rc);
        fuzz_assert(reason != NULL, "a refusal without a reason");

        known = 0;
        for (i = 0; fuzz_reasons[i]; i++) {
            if (strcmp(reason, fuzz_reasons[i]) == 0) {
                known = 1;
            }
        }

        fuzz_assert(known, "unknown reason \"%s\"", reason);

        /*
         * What the harness signed itself, under a header it wrote itself
         * (HS256 "ops" for mode 1, ES256 "ci" for mode 2), verifies with
         * any key set that holds that key, whatever the payload says.
         */
        fuzz_assert(!(own_header
                      && ((mode == 1 && (set == 0 || set == 1))
                          || (mode == 2 && (set == 0 || set == 2)))
                      && strcmp(reason, "signature") == 0),
                    "a correctly signed token was refused as \"signature\"");
    }

    ngx_destroy_pool(pool);
    free(buf);

    return 0;
}
