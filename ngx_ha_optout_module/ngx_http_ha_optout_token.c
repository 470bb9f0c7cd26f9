
/*
 * ngx_ha_optout_module: JWT bearer token verification (SPEC sections 4
 * and 9): the JWS header, the signature, the claims.
 *
 * JWS compact serialization only (RFC 7515), HS256 / ES256 / EdDSA /
 * RS256 (RFC 7518, RFC 8037).  The payload is parsed only after its
 * signature verified, so jansson never sees unauthenticated claims.  The
 * keys it verifies with are loaded by ngx_http_ha_optout_keys.c.
 *
 * A little over a thousand lines: one concern, a token's verification
 * (header, signature, each claim), which reads best in one file.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <jansson.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "ngx_http_ha_optout_token.h"


/* a bearer token is a header line; anything larger is not ours */
#define NGX_HA_OPTOUT_TOKEN_MAX       8192
#define NGX_HA_OPTOUT_SIG_HS256       32
#define NGX_HA_OPTOUT_SIG_ES256       64
#define NGX_HA_OPTOUT_SIG_EDDSA       64


/* 9999-12-31T23:59:59Z: keeps every time sum far from time_t overflow */
#define NGX_HA_OPTOUT_TIME_MAX        253402300799LL


typedef struct {
    ngx_uint_t      has_exp;
    ngx_uint_t      has_iat;
    ngx_uint_t      has_nbf;
    ngx_uint_t      has_iss;
    json_t         *aud;           /* borrowed from the payload object */
} ngx_http_ha_optout_seen_t;


static ngx_int_t ngx_http_ha_optout_jws_decode(ngx_pool_t *pool,
    ngx_str_t *token, ngx_uint_t *alg, ngx_str_t *kid, ngx_uint_t *typ_ok,
    ngx_str_t *payload, ngx_str_t *sig, ngx_str_t *input);
static ngx_int_t ngx_http_ha_optout_jws_header(ngx_pool_t *pool,
    ngx_str_t *header, ngx_uint_t *alg, ngx_str_t *kid, ngx_uint_t *typ_ok);
static ngx_uint_t ngx_http_ha_optout_typ_ok(json_t *typ);
static ngx_http_ha_optout_key_t *ngx_http_ha_optout_key_select(
    ngx_array_t *keys, ngx_str_t *kid);
static ngx_int_t ngx_http_ha_optout_verify_sig(ngx_http_ha_optout_key_t *key,
    ngx_str_t *data, ngx_str_t *sig);
static ngx_int_t ngx_http_ha_optout_verify_hs256(
    ngx_http_ha_optout_key_t *key, ngx_str_t *data, ngx_str_t *sig);
static ngx_int_t ngx_http_ha_optout_verify_es256(
    ngx_http_ha_optout_key_t *key, ngx_str_t *data, ngx_str_t *sig);
static ngx_int_t ngx_http_ha_optout_verify_pkey(EVP_PKEY *pkey,
    const EVP_MD *md, ngx_str_t *data, u_char *sig, size_t siglen);
static ngx_int_t ngx_http_ha_optout_claims_parse(ngx_pool_t *pool,
    json_t *root, ngx_http_ha_optout_claims_t *claims,
    ngx_http_ha_optout_seen_t *seen);
static ngx_int_t ngx_http_ha_optout_claim_time(json_t *root,
    const char *name, time_t *t, ngx_uint_t *seen);
static ngx_int_t ngx_http_ha_optout_claim_str(ngx_pool_t *pool, json_t *root,
    const char *name, ngx_str_t *s);
static ngx_int_t ngx_http_ha_optout_claim_upstreams(ngx_pool_t *pool,
    json_t *root, ngx_http_ha_optout_claims_t *claims);
static ngx_int_t ngx_http_ha_optout_claim_scopes(ngx_pool_t *pool,
    json_t *root, ngx_http_ha_optout_claims_t *claims);
static ngx_uint_t ngx_http_ha_optout_scopes(ngx_str_t *scope);
static ngx_uint_t ngx_http_ha_optout_scope_one(u_char *p, size_t len);
static const char *ngx_http_ha_optout_check_time(
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_seen_t *seen,
    time_t max_lifetime, time_t now);
static ngx_int_t ngx_http_ha_optout_check_aud(json_t *aud,
    ngx_str_t *audience);
static ngx_uint_t ngx_http_ha_optout_json_eq(json_t *v, ngx_str_t *s);
static ngx_uint_t ngx_http_ha_optout_strings(json_t *v, ngx_uint_t one);


static u_char  ngx_http_ha_optout_empty[] = "";


/*
 * Longer than a screen and a half: the verification in its order (decode,
 * key, signature, claims, times) is the point.
 */

ngx_int_t
ngx_http_ha_optout_token_verify(ngx_pool_t *pool, ngx_array_t *keys,
    ngx_str_t *token, ngx_str_t *audience, ngx_str_t *issuer,
    time_t max_lifetime, time_t now, ngx_http_ha_optout_claims_t *claims,
    const char **reason)
{
    json_t                     *root;
    ngx_int_t                   rc;
    ngx_str_t                   kid, payload, sig, input;
    ngx_uint_t                  alg, typ_ok;
    json_error_t                err;
    ngx_http_ha_optout_key_t   *key;
    ngx_http_ha_optout_seen_t   seen;

    ngx_memzero(claims, sizeof(ngx_http_ha_optout_claims_t));
    ngx_memzero(&seen, sizeof(ngx_http_ha_optout_seen_t));

    *reason = "malformed";

    rc = ngx_http_ha_optout_jws_decode(pool, token, &alg, &kid, &typ_ok,
                                       &payload, &sig, &input);
    if (rc != NGX_OK) {
        claims->malformed = "it is not a JWS compact token: three base64url "
                            "parts without padding, joined by dots, the "
                            "first a JSON object with \"alg\"";
        return rc;
    }

    if (!typ_ok) {
        *reason = "type";
        return NGX_DECLINED;
    }

    if (alg == 0) {
        *reason = "algorithm";
        return NGX_DECLINED;
    }

    key = ngx_http_ha_optout_key_select(keys, &kid);
    if (key == NULL) {
        *reason = "unknown_kid";
        return NGX_DECLINED;
    }

    if (key->alg != alg) {
        *reason = "algorithm";
        return NGX_DECLINED;
    }

    rc = ngx_http_ha_optout_verify_sig(key, &input, &sig);
    if (rc != NGX_OK) {
        *reason = "signature";
        return rc;
    }

    *reason = "malformed";

    root = json_loadb((const char *) payload.data, payload.len,
                      JSON_REJECT_DUPLICATES, &err);

    if (root == NULL || !json_is_object(root)) {
        claims->malformed = "its payload is not one JSON object (a claim "
                            "given twice counts as not one)";
        json_decref(root);
        return NGX_DECLINED;
    }

    rc = ngx_http_ha_optout_claims_parse(pool, root, claims, &seen);

    if (rc == NGX_OK) {
        claims->kid = key->kid;

        *reason = ngx_http_ha_optout_check_time(claims, &seen, max_lifetime,
                                                now);

        if (*reason == NULL
            && ngx_http_ha_optout_check_aud(seen.aud, audience) != NGX_OK)
        {
            *reason = "audience";
        }

        if (*reason == NULL
            && issuer != NULL && issuer->len != 0
            && (!seen.has_iss
                || claims->iss.len != issuer->len
                || ngx_memcmp(claims->iss.data, issuer->data, issuer->len)
                   != 0))
        {
            *reason = "issuer";
        }

        rc = (*reason == NULL) ? NGX_OK : NGX_DECLINED;
    }

    json_decref(root);

    return rc;
}


/*
 * Splits and decodes "header.payload.signature"; "input" is the JWS
 * signing input, the token text up to the second dot.
 */

static ngx_int_t
ngx_http_ha_optout_jws_decode(ngx_pool_t *pool, ngx_str_t *token,
    ngx_uint_t *alg, ngx_str_t *kid, ngx_uint_t *typ_ok, ngx_str_t *payload,
    ngx_str_t *sig, ngx_str_t *input)
{
    u_char     *last, *dot1, *dot2;
    ngx_int_t   rc;
    ngx_str_t   header;

    if (token->len == 0 || token->len > NGX_HA_OPTOUT_TOKEN_MAX) {
        return NGX_DECLINED;
    }

    last = token->data + token->len;

    dot1 = ngx_strlchr(token->data, last, '.');
    if (dot1 == NULL) {
        return NGX_DECLINED;
    }

    dot2 = ngx_strlchr(dot1 + 1, last, '.');
    if (dot2 == NULL || ngx_strlchr(dot2 + 1, last, '.') != NULL) {
        return NGX_DECLINED;
    }

    input->data = token->data;
    input->len = dot2 - token->data;

    rc = ngx_http_ha_optout_b64url(pool, token->data, dot1, &header);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_b64url(pool, dot1 + 1, dot2, payload);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_b64url(pool, dot2 + 1, last, sig);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_ha_optout_jws_header(pool, &header, alg, kid, typ_ok);
}


int
ngx_http_ha_optout_memeq_ct(const u_char *a, const u_char *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n);
}


/*
 * ngx_decode_base64url() stops silently at the first '=', so padding would
 * let trailing garbage through: JWS forbids padding, refuse it outright.
 */

ngx_int_t
ngx_http_ha_optout_b64url(ngx_pool_t *pool, u_char *start, u_char *end,
    ngx_str_t *dst)
{
    ngx_str_t  src;

    src.data = start;
    src.len = end - start;

    if (ngx_strlchr(start, end, '=') != NULL) {
        return NGX_DECLINED;
    }

    dst->data = ngx_pnalloc(pool, ngx_base64_decoded_length(src.len) + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64url(dst, &src) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * Returns the alg id (0: missing, "none" or unsupported), the kid
 * (empty when absent) and whether typ is acceptable.  NGX_DECLINED: the
 * header is not a JSON object, has duplicate or mistyped members, or asks
 * for "crit" extensions, none of which we implement (RFC 7515 4.1.11).
 */

static ngx_int_t
ngx_http_ha_optout_jws_header(ngx_pool_t *pool, ngx_str_t *header,
    ngx_uint_t *alg, ngx_str_t *kid, ngx_uint_t *typ_ok)
{
    json_t        *root, *v;
    ngx_int_t      rc;
    ngx_str_t      name;
    json_error_t   err;

    *alg = 0;
    *typ_ok = 0;
    ngx_str_set(kid, "");

    root = json_loadb((const char *) header->data, header->len,
                      JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    if (!json_is_object(root) || json_object_get(root, "crit") != NULL) {
        goto done;
    }

    v = json_object_get(root, "kid");
    if (v != NULL) {
        if (!json_is_string(v)) {
            goto done;
        }

        if (ngx_http_ha_optout_copy_str(pool, v, kid) != NGX_OK) {
            rc = NGX_ERROR;
            goto done;
        }
    }

    v = json_object_get(root, "alg");

    if (json_is_string(v)) {
        name.data = (u_char *) json_string_value(v);
        name.len = json_string_length(v);

        /* alg names are case-sensitive (RFC 7515 4.1.1) */

        if (name.len == 5 && ngx_strncmp(name.data, "HS256", 5) == 0) {
            *alg = NGX_HA_OPTOUT_ALG_HS256;

        } else if (name.len == 5 && ngx_strncmp(name.data, "ES256", 5) == 0) {
            *alg = NGX_HA_OPTOUT_ALG_ES256;

        } else if (name.len == 5 && ngx_strncmp(name.data, "EdDSA", 5) == 0) {
            *alg = NGX_HA_OPTOUT_ALG_EDDSA;

        } else if (name.len == 5 && ngx_strncmp(name.data, "RS256", 5) == 0) {
            *alg = NGX_HA_OPTOUT_ALG_RS256;
        }
    }

    *typ_ok = ngx_http_ha_optout_typ_ok(json_object_get(root, "typ"));

    rc = NGX_OK;

done:

    json_decref(root);

    return rc;
}


/*
 * typ is a media type, compared case-insensitively, "application/" implied
 * when it has no '/' (RFC 7515 4.1.9): absent, JWT (RFC 7519) and at+jwt
 * (RFC 9068) are accepted; any other type, e.g. an ID token's "JOSE" or a
 * logout token's "logout+jwt", is not an access token for this API.
 */

static ngx_uint_t
ngx_http_ha_optout_typ_ok(json_t *typ)
{
    u_char      *p, c;
    size_t       len, i, skip;
    ngx_uint_t   n;

    static const char  *types[] = {
        "jwt", "application/jwt", "at+jwt", "application/at+jwt", NULL
    };

    if (typ == NULL) {
        return 1;
    }

    if (!json_is_string(typ)) {
        return 0;
    }

    p = (u_char *) json_string_value(typ);
    len = json_string_length(typ);

    for (n = 0; types[n]; n++) {
        skip = 0;

        if (len != ngx_strlen(types[n])) {
            continue;
        }

        for (i = 0; i < len; i++) {
            c = p[i];

            if (c >= 'A' && c <= 'Z') {
                c |= 0x20;
            }

            if (c != (u_char) types[n][i]) {
                skip = 1;
                break;
            }
        }

        if (!skip) {
            return 1;
        }
    }

    return 0;
}


static ngx_http_ha_optout_key_t *
ngx_http_ha_optout_key_select(ngx_array_t *keys, ngx_str_t *kid)
{
    ngx_uint_t                  i;
    ngx_http_ha_optout_key_t   *key;

    if (keys == NULL || keys->nelts == 0) {
        return NULL;
    }

    key = keys->elts;

    if (kid->len == 0) {
        /*
         * without a kid only an unambiguous key will do, and never one of
         * a JWK Set: the provider's next rotation would make it ambiguous
         */
        return (keys->nelts == 1 && !key[0].jwk) ? &key[0] : NULL;
    }

    for (i = 0; i < keys->nelts; i++) {
        if (key[i].kid.len == kid->len
            && ngx_strncmp(key[i].kid.data, kid->data, kid->len) == 0)
        {
            return &key[i];
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_ha_optout_verify_sig(ngx_http_ha_optout_key_t *key, ngx_str_t *data,
    ngx_str_t *sig)
{
    ngx_int_t  rc;

    switch (key->alg) {

    case NGX_HA_OPTOUT_ALG_HS256:
        rc = ngx_http_ha_optout_verify_hs256(key, data, sig);
        break;

    case NGX_HA_OPTOUT_ALG_ES256:
        rc = ngx_http_ha_optout_verify_es256(key, data, sig);
        break;

    case NGX_HA_OPTOUT_ALG_EDDSA:
        if (sig->len != NGX_HA_OPTOUT_SIG_EDDSA) {
            return NGX_DECLINED;
        }

        rc = ngx_http_ha_optout_verify_pkey(key->pkey, NULL, data,
                                            sig->data, sig->len);
        break;

    case NGX_HA_OPTOUT_ALG_RS256:
        /* RSASSA-PKCS1-v1_5: the signature is exactly the modulus size */
        if (key->pkey == NULL
            || (int) sig->len != EVP_PKEY_get_size(key->pkey))
        {
            return NGX_DECLINED;
        }

        rc = ngx_http_ha_optout_verify_pkey(key->pkey, EVP_sha256(), data,
                                            sig->data, sig->len);
        break;

    default:
        return NGX_DECLINED;
    }

    /* keep failed verifications out of nginx's own SSL error reports */
    ERR_clear_error();

    return rc;
}


static ngx_int_t
ngx_http_ha_optout_verify_hs256(ngx_http_ha_optout_key_t *key,
    ngx_str_t *data, ngx_str_t *sig)
{
    u_char        mac[EVP_MAX_MD_SIZE];
    ngx_int_t     rc;
    unsigned int  len;

    if (sig->len != NGX_HA_OPTOUT_SIG_HS256) {
        return NGX_DECLINED;
    }

    if (HMAC(EVP_sha256(), key->secret.data, (int) key->secret.len,
             data->data, data->len, mac, &len)
        == NULL)
    {
        return NGX_ERROR;
    }

    if (len != NGX_HA_OPTOUT_SIG_HS256) {
        return NGX_ERROR;
    }

    rc = (ngx_http_ha_optout_memeq_ct(mac, sig->data, len) == 0)
         ? NGX_OK : NGX_DECLINED;

    OPENSSL_cleanse(mac, sizeof(mac));

    return rc;
}


/* JWS carries ES256 as raw r || s (RFC 7518 3.4); OpenSSL wants DER */

static ngx_int_t
ngx_http_ha_optout_verify_es256(ngx_http_ha_optout_key_t *key,
    ngx_str_t *data, ngx_str_t *sig)
{
    int         len;
    u_char      der[80], *p;
    BIGNUM     *r, *s;
    ECDSA_SIG  *es;

    if (sig->len != NGX_HA_OPTOUT_SIG_ES256) {
        return NGX_DECLINED;
    }

    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig->data, 32, NULL);
    s = BN_bin2bn(sig->data + 32, 32, NULL);

    if (es == NULL || r == NULL || s == NULL
        || ECDSA_SIG_set0(es, r, s) != 1)
    {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return NGX_ERROR;
    }

    /* es owns r and s now */

    len = i2d_ECDSA_SIG(es, NULL);

    if (len <= 0 || (size_t) len > sizeof(der)) {
        ECDSA_SIG_free(es);
        return NGX_ERROR;
    }

    p = der;
    len = i2d_ECDSA_SIG(es, &p);

    ECDSA_SIG_free(es);

    if (len <= 0) {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_verify_pkey(key->pkey, EVP_sha256(), data,
                                          der, len);
}


static ngx_int_t
ngx_http_ha_optout_verify_pkey(EVP_PKEY *pkey, const EVP_MD *md,
    ngx_str_t *data, u_char *sig, size_t siglen)
{
    ngx_int_t    rc;
    EVP_MD_CTX  *ctx;

    if (pkey == NULL) {
        return NGX_DECLINED;
    }

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) != 1) {
        EVP_MD_CTX_free(ctx);
        return NGX_ERROR;
    }

    rc = (EVP_DigestVerify(ctx, sig, siglen, data->data, data->len) == 1)
         ? NGX_OK : NGX_DECLINED;

    EVP_MD_CTX_free(ctx);

    return rc;
}


/*
 * Copies every claim we use out of jansson's memory.  NGX_DECLINED: a
 * claim has the wrong type or an out of range time, and claims->malformed
 * says which.  Just over a screen and a half: the two tables of claims
 * with their messages are most of it.
 */

static ngx_int_t
ngx_http_ha_optout_claims_parse(ngx_pool_t *pool, json_t *root,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_seen_t *seen)
{
    size_t      i;
    json_t     *aud;
    ngx_int_t   rc;
    struct {                                   /* the NumericDate claims */
        const char  *name;
        time_t      *t;
        ngx_uint_t  *seen;
        const char  *malformed;
    } times[] = {
        { "exp", &claims->exp, &seen->has_exp,
          "the claim \"exp\" is not a NumericDate "
          "(seconds since 1970, not negative)" },
        { "iat", &claims->iat, &seen->has_iat,
          "the claim \"iat\" is not a NumericDate "
          "(seconds since 1970, not negative)" },
        { "nbf", &claims->nbf, &seen->has_nbf,
          "the claim \"nbf\" is not a NumericDate "
          "(seconds since 1970, not negative)" }
    };
    struct {                                   /* the string claims */
        const char  *name;
        ngx_str_t   *s;
        const char  *malformed;
    } strs[] = {
        { "sub", &claims->sub, "the claim \"sub\" is not a string" },
        { "jti", &claims->jti, "the claim \"jti\" is not a string" },
        { "iss", &claims->iss, "the claim \"iss\" is not a string" }
    };

    for (i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        rc = ngx_http_ha_optout_claim_time(root, times[i].name, times[i].t,
                                           times[i].seen);
        if (rc != NGX_OK) {
            claims->malformed = times[i].malformed;
            return rc;
        }
    }

    seen->has_iss = (json_object_get(root, "iss") != NULL);

    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        rc = ngx_http_ha_optout_claim_str(pool, root, strs[i].name,
                                          strs[i].s);
        if (rc != NGX_OK) {
            claims->malformed = strs[i].malformed;
            return rc;
        }
    }

    rc = ngx_http_ha_optout_claim_scopes(pool, root, claims);
    if (rc != NGX_OK) {
        claims->malformed = "the claim \"scope\" is not a string, or "
                            "\"scp\" neither a string nor an array of "
                            "strings";
        return rc;
    }

    aud = json_object_get(root, "aud");

    if (!ngx_http_ha_optout_strings(aud, 1)) {
        claims->malformed = "the claim \"aud\" is neither a string nor an "
                            "array of strings";
        return NGX_DECLINED;
    }

    seen->aud = aud;

    rc = ngx_http_ha_optout_claim_upstreams(pool, root, claims);
    if (rc == NGX_DECLINED) {
        claims->malformed = "the claim \"ha_upstreams\" is not an array of "
                            "strings";
    }

    return rc;
}


/* absent, an array of strings, or (when one may be) a string */

static ngx_uint_t
ngx_http_ha_optout_strings(json_t *v, ngx_uint_t one)
{
    size_t   i;
    json_t  *e;

    if (v == NULL || (one && json_is_string(v))) {
        return 1;
    }

    if (!json_is_array(v)) {
        return 0;
    }

    json_array_foreach(v, i, e) {
        if (!json_is_string(e)) {
            return 0;
        }
    }

    return 1;
}


/* NGX_OK: absent (*seen == 0) or a sane NumericDate; else NGX_DECLINED */

static ngx_int_t
ngx_http_ha_optout_claim_time(json_t *root, const char *name, time_t *t,
    ngx_uint_t *seen)
{
    double       d;
    json_t      *v;
    json_int_t   n;

    *t = 0;
    *seen = 0;

    v = json_object_get(root, name);
    if (v == NULL) {
        return NGX_OK;
    }

    if (json_is_integer(v)) {
        n = json_integer_value(v);

        if (n < 0 || n > NGX_HA_OPTOUT_TIME_MAX) {
            return NGX_DECLINED;
        }

        *t = (time_t) n;

    } else if (json_is_real(v)) {
        d = json_real_value(v);

        /* written so that NaN fails too */
        if (!(d >= 0 && d <= (double) NGX_HA_OPTOUT_TIME_MAX)) {
            return NGX_DECLINED;
        }

        *t = (time_t) d;

    } else {
        return NGX_DECLINED;
    }

    *seen = 1;

    return NGX_OK;
}


/* an absent claim becomes "" */

static ngx_int_t
ngx_http_ha_optout_claim_str(ngx_pool_t *pool, json_t *root,
    const char *name, ngx_str_t *s)
{
    json_t  *v;

    v = json_object_get(root, name);

    if (v == NULL) {
        s->len = 0;
        s->data = ngx_http_ha_optout_empty;
        return NGX_OK;
    }

    if (!json_is_string(v)) {
        return NGX_DECLINED;
    }

    return ngx_http_ha_optout_copy_str(pool, v, s);
}


/* the copy is NUL-terminated for the convenience of "%s" users */

ngx_int_t
ngx_http_ha_optout_copy_str(ngx_pool_t *pool, json_t *v, ngx_str_t *s)
{
    s->len = json_string_length(v);

    s->data = ngx_pnalloc(pool, s->len + 1);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->data, json_string_value(v), s->len);
    s->data[s->len] = '\0';

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_claim_upstreams(ngx_pool_t *pool, json_t *root,
    ngx_http_ha_optout_claims_t *claims)
{
    size_t      i, n;
    json_t     *list, *v;
    ngx_str_t  *s;

    list = json_object_get(root, "ha_upstreams");
    if (list == NULL) {
        return NGX_OK;
    }

    if (!ngx_http_ha_optout_strings(list, 0)) {
        return NGX_DECLINED;
    }

    /* an empty array is kept: it allows no upstream at all */

    n = json_array_size(list);

    claims->upstreams = ngx_array_create(pool, n ? n : 1, sizeof(ngx_str_t));
    if (claims->upstreams == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(list, i, v) {
        s = ngx_array_push(claims->upstreams);
        if (s == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_ha_optout_copy_str(pool, v, s) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * "scope" is a space separated string (RFC 8693, RFC 9068; Keycloak,
 * Auth0); "scp" is the same string (Azure AD) or an array of scopes
 * (Okta), each element one scope.  Both count when both are present;
 * claims->scope is their text joined by spaces (for display only).
 *
 * Longer than a screen and a half: scope and scp in their three forms.
 */

static ngx_int_t
ngx_http_ha_optout_claim_scopes(ngx_pool_t *pool, json_t *root,
    ngx_http_ha_optout_claims_t *claims)
{
    u_char     *p;
    size_t      i, len;
    json_t     *scope, *scp, *v;
    ngx_str_t   s;

    scope = json_object_get(root, "scope");
    scp = json_object_get(root, "scp");

    if ((scope != NULL && !json_is_string(scope))
        || (scp != NULL && !json_is_string(scp) && !json_is_array(scp)))
    {
        return NGX_DECLINED;
    }

    len = scope ? json_string_length(scope) + 1 : 0;

    if (json_is_string(scp)) {
        len += json_string_length(scp) + 1;

    } else if (scp != NULL) {
        json_array_foreach(scp, i, v) {
            if (!json_is_string(v)) {
                return NGX_DECLINED;
            }

            len += json_string_length(v) + 1;
        }
    }

    claims->scopes = 0;

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    claims->scope.data = p;

    if (scope != NULL) {
        s.data = (u_char *) json_string_value(scope);
        s.len = json_string_length(scope);
        claims->scopes |= ngx_http_ha_optout_scopes(&s);
        p = ngx_cpymem(p, s.data, s.len);
    }

    if (json_is_string(scp)) {
        s.data = (u_char *) json_string_value(scp);
        s.len = json_string_length(scp);
        claims->scopes |= ngx_http_ha_optout_scopes(&s);

        if (p != claims->scope.data) {
            *p++ = ' ';
        }

        p = ngx_cpymem(p, s.data, s.len);

    } else if (scp != NULL) {
        json_array_foreach(scp, i, v) {
            s.data = (u_char *) json_string_value(v);
            s.len = json_string_length(v);
            claims->scopes |= ngx_http_ha_optout_scope_one(s.data, s.len);

            if (p != claims->scope.data) {
                *p++ = ' ';
            }

            p = ngx_cpymem(p, s.data, s.len);
        }
    }

    claims->scope.len = p - claims->scope.data;
    *p = '\0';

    return NGX_OK;
}


/* "ha:write" does not imply "ha:read": the caller decides that */

static ngx_uint_t
ngx_http_ha_optout_scopes(ngx_str_t *scope)
{
    u_char      *p, *last, *end;
    ngx_uint_t   scopes;

    scopes = 0;
    p = scope->data;
    last = scope->data + scope->len;

    while (p < last) {
        end = ngx_strlchr(p, last, ' ');
        if (end == NULL) {
            end = last;
        }

        scopes |= ngx_http_ha_optout_scope_one(p, end - p);

        p = end + 1;
    }

    return scopes;
}


/* the scopes a token may carry: a table, one bit each */

static struct {
    ngx_str_t   name;
    ngx_uint_t  bit;
} ngx_http_ha_optout_scope_names[] = {
    { ngx_string("ha:read"),    NGX_HA_OPTOUT_SCOPE_READ },
    { ngx_string("ha:write"),   NGX_HA_OPTOUT_SCOPE_WRITE },
    { ngx_string("ha:fleet"),   NGX_HA_OPTOUT_SCOPE_FLEET },
    { ngx_string("ha:approve"), NGX_HA_OPTOUT_SCOPE_APPROVE }
};


static ngx_uint_t
ngx_http_ha_optout_scope_one(u_char *p, size_t len)
{
    ngx_str_t   *name;
    ngx_uint_t   i;

    for (i = 0; i < sizeof(ngx_http_ha_optout_scope_names)
                    / sizeof(ngx_http_ha_optout_scope_names[0]); i++)
    {
        name = &ngx_http_ha_optout_scope_names[i].name;

        if (len == name->len && ngx_strncmp(p, name->data, len) == 0) {
            return ngx_http_ha_optout_scope_names[i].bit;
        }
    }

    return 0;
}


/* returns NULL when the times are fine, else the reason */

static const char *
ngx_http_ha_optout_check_time(ngx_http_ha_optout_claims_t *claims,
    ngx_http_ha_optout_seen_t *seen, time_t max_lifetime, time_t now)
{
    time_t  lifetime;

    if (!seen->has_exp
        || claims->exp + NGX_HA_OPTOUT_LEEWAY <= now)
    {
        return "expired";
    }

    if ((seen->has_nbf && claims->nbf - NGX_HA_OPTOUT_LEEWAY > now)
        || (seen->has_iat && claims->iat - NGX_HA_OPTOUT_LEEWAY > now))
    {
        return "not_yet_valid";
    }

    lifetime = claims->exp - (seen->has_iat ? claims->iat : now);

    if (lifetime > max_lifetime) {
        return "lifetime";
    }

    return NULL;
}


static ngx_int_t
ngx_http_ha_optout_check_aud(json_t *aud, ngx_str_t *audience)
{
    size_t   i;
    json_t  *v;

    if (audience == NULL || audience->len == 0) {
        return NGX_OK;
    }

    if (aud == NULL) {
        return NGX_DECLINED;
    }

    if (json_is_string(aud)) {
        return ngx_http_ha_optout_json_eq(aud, audience) ? NGX_OK
                                                         : NGX_DECLINED;
    }

    json_array_foreach(aud, i, v) {
        if (ngx_http_ha_optout_json_eq(v, audience)) {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_uint_t
ngx_http_ha_optout_json_eq(json_t *v, ngx_str_t *s)
{
    return json_is_string(v)
           && json_string_length(v) == s->len
           && ngx_memcmp(json_string_value(v), s->data, s->len) == 0;
}
