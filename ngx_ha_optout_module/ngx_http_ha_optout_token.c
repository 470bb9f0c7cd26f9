
/*
 * ngx_ha_optout_module: JWT bearer token verification (SPEC section 4).
 *
 * JWS compact serialization only (RFC 7515), HS256 / ES256 / EdDSA
 * (RFC 7518, RFC 8037).  The payload is parsed only after its signature
 * verified, so jansson never sees unauthenticated claims.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <jansson.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include "ngx_http_ha_optout_token.h"


/* a bearer token is a header line; anything larger is not ours */
#define NGX_HA_OPTOUT_TOKEN_MAX       8192
#define NGX_HA_OPTOUT_KEY_FILE_MAX    16384
#define NGX_HA_OPTOUT_HS256_MIN       32
#define NGX_HA_OPTOUT_SIG_HS256       32
#define NGX_HA_OPTOUT_SIG_ES256       64
#define NGX_HA_OPTOUT_SIG_EDDSA       64

/* 9999-12-31T23:59:59Z: keeps every time sum far from time_t overflow */
#define NGX_HA_OPTOUT_TIME_MAX        253402300799LL


typedef struct {
    ngx_uint_t      has_exp;
    ngx_uint_t      has_iat;
    ngx_uint_t      has_nbf;
    json_t         *aud;           /* borrowed from the payload object */
} ngx_http_ha_optout_seen_t;


static ngx_int_t ngx_http_ha_optout_jws_decode(ngx_pool_t *pool,
    ngx_str_t *token, ngx_uint_t *alg, ngx_str_t *kid, ngx_str_t *payload,
    ngx_str_t *sig, ngx_str_t *input);
static ngx_int_t ngx_http_ha_optout_b64url(ngx_pool_t *pool, u_char *start,
    u_char *end, ngx_str_t *dst);
static ngx_int_t ngx_http_ha_optout_jws_header(ngx_pool_t *pool,
    ngx_str_t *header, ngx_uint_t *alg, ngx_str_t *kid);
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
static ngx_int_t ngx_http_ha_optout_copy_str(ngx_pool_t *pool, json_t *v,
    ngx_str_t *s);
static ngx_int_t ngx_http_ha_optout_claim_upstreams(ngx_pool_t *pool,
    json_t *root, ngx_http_ha_optout_claims_t *claims);
static ngx_uint_t ngx_http_ha_optout_scopes(ngx_str_t *scope);
static const char *ngx_http_ha_optout_check_time(
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_seen_t *seen,
    time_t max_lifetime, time_t now);
static ngx_int_t ngx_http_ha_optout_check_aud(json_t *aud,
    ngx_str_t *audience);
static ngx_uint_t ngx_http_ha_optout_json_eq(json_t *v, ngx_str_t *s);

static ngx_int_t ngx_http_ha_optout_key_read(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, ngx_str_t *data);
static char *ngx_http_ha_optout_key_secret(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, ngx_str_t *data);
static char *ngx_http_ha_optout_key_pkey(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, ngx_str_t *data);
static void ngx_http_ha_optout_pkey_cleanup(void *data);
static void ngx_http_ha_optout_secret_cleanup(void *data);


static u_char  ngx_http_ha_optout_empty[] = "";


ngx_int_t
ngx_http_ha_optout_token_verify(ngx_pool_t *pool, ngx_array_t *keys,
    ngx_str_t *token, ngx_str_t *audience, time_t max_lifetime, time_t now,
    ngx_http_ha_optout_claims_t *claims, const char **reason)
{
    json_t                     *root;
    ngx_int_t                   rc;
    ngx_str_t                   kid, payload, sig, input;
    ngx_uint_t                  alg;
    json_error_t                err;
    ngx_http_ha_optout_key_t   *key;
    ngx_http_ha_optout_seen_t   seen;

    ngx_memzero(claims, sizeof(ngx_http_ha_optout_claims_t));
    ngx_memzero(&seen, sizeof(ngx_http_ha_optout_seen_t));

    *reason = "malformed";

    rc = ngx_http_ha_optout_jws_decode(pool, token, &alg, &kid, &payload,
                                       &sig, &input);
    if (rc != NGX_OK) {
        return rc;
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
    if (root == NULL) {
        return NGX_DECLINED;
    }

    rc = json_is_object(root)
         ? ngx_http_ha_optout_claims_parse(pool, root, claims, &seen)
         : NGX_DECLINED;

    if (rc == NGX_OK) {
        claims->kid = key->kid;

        *reason = ngx_http_ha_optout_check_time(claims, &seen, max_lifetime,
                                                now);

        if (*reason == NULL
            && ngx_http_ha_optout_check_aud(seen.aud, audience) != NGX_OK)
        {
            *reason = "audience";
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
    ngx_uint_t *alg, ngx_str_t *kid, ngx_str_t *payload, ngx_str_t *sig,
    ngx_str_t *input)
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

    return ngx_http_ha_optout_jws_header(pool, &header, alg, kid);
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

static ngx_int_t
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
 * Returns the alg id (0: missing, "none" or unsupported) and the kid
 * (empty when absent).  NGX_DECLINED: the header is not a JSON object,
 * has duplicate or mistyped members, or asks for "crit" extensions,
 * none of which we implement (RFC 7515 4.1.11).
 */

static ngx_int_t
ngx_http_ha_optout_jws_header(ngx_pool_t *pool, ngx_str_t *header,
    ngx_uint_t *alg, ngx_str_t *kid)
{
    json_t        *root, *v;
    ngx_int_t      rc;
    ngx_str_t      name;
    json_error_t   err;

    *alg = 0;
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
        }
    }

    rc = NGX_OK;

done:

    json_decref(root);

    return rc;
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
        /* without a kid only an unambiguous key will do */
        return (keys->nelts == 1) ? &key[0] : NULL;
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
 * claim has the wrong type or an out of range time.
 */

static ngx_int_t
ngx_http_ha_optout_claims_parse(ngx_pool_t *pool, json_t *root,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_seen_t *seen)
{
    size_t      i;
    json_t     *aud, *v;
    ngx_int_t   rc;

    rc = ngx_http_ha_optout_claim_time(root, "exp", &claims->exp,
                                       &seen->has_exp);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_claim_time(root, "iat", &claims->iat,
                                       &seen->has_iat);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_claim_time(root, "nbf", &claims->nbf,
                                       &seen->has_nbf);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_claim_str(pool, root, "sub", &claims->sub);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_claim_str(pool, root, "jti", &claims->jti);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ha_optout_claim_str(pool, root, "scope", &claims->scope);
    if (rc != NGX_OK) {
        return rc;
    }

    claims->scopes = ngx_http_ha_optout_scopes(&claims->scope);

    aud = json_object_get(root, "aud");

    if (aud != NULL && !json_is_string(aud)) {
        if (!json_is_array(aud)) {
            return NGX_DECLINED;
        }

        json_array_foreach(aud, i, v) {
            if (!json_is_string(v)) {
                return NGX_DECLINED;
            }
        }
    }

    seen->aud = aud;

    return ngx_http_ha_optout_claim_upstreams(pool, root, claims);
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

static ngx_int_t
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

    if (!json_is_array(list)) {
        return NGX_DECLINED;
    }

    json_array_foreach(list, i, v) {
        if (!json_is_string(v)) {
            return NGX_DECLINED;
        }
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


/* "ha:write" does not imply "ha:read": the caller decides that */

static ngx_uint_t
ngx_http_ha_optout_scopes(ngx_str_t *scope)
{
    u_char      *p, *last, *end;
    size_t       len;
    ngx_uint_t   scopes;

    scopes = 0;
    p = scope->data;
    last = scope->data + scope->len;

    while (p < last) {
        end = ngx_strlchr(p, last, ' ');
        if (end == NULL) {
            end = last;
        }

        len = end - p;

        if (len == sizeof("ha:read") - 1
            && ngx_strncmp(p, "ha:read", len) == 0)
        {
            scopes |= NGX_HA_OPTOUT_SCOPE_READ;

        } else if (len == sizeof("ha:write") - 1
                   && ngx_strncmp(p, "ha:write", len) == 0)
        {
            scopes |= NGX_HA_OPTOUT_SCOPE_WRITE;
        }

        p = end + 1;
    }

    return scopes;
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


char *
ngx_http_ha_optout_key_load(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key)
{
    ngx_str_t  data;

    if (ngx_http_ha_optout_key_read(cf, key, &data) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    switch (key->alg) {

    case NGX_HA_OPTOUT_ALG_HS256:
        return ngx_http_ha_optout_key_secret(cf, key, &data);

    case NGX_HA_OPTOUT_ALG_ES256:
    case NGX_HA_OPTOUT_ALG_EDDSA:
        return ngx_http_ha_optout_key_pkey(cf, key, &data);

    default:
        return "has an unknown key algorithm";
    }
}


/*
 * fstat() of the opened descriptor, not stat() of the name, so the checked
 * file is the read one.  Symlinks are followed on purpose: mounted secrets
 * are usually symlinks.
 */

static ngx_int_t
ngx_http_ha_optout_key_read(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    ngx_str_t *data)
{
    u_char           *name;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_int_t         rc;
    ngx_file_info_t   fi;

    name = ngx_pnalloc(cf->pool, key->file.len + 1);
    if (name == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(name, key->file.data, key->file.len + 1);

    fd = ngx_open_file(name, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " key file \"%V\" failed",
                           &key->file);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " key file \"%V\" failed",
                           &key->file);
        goto done;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is not a regular file",
                           &key->file);
        goto done;
    }

    if (ngx_file_access(&fi) & 077) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is accessible by group or others "
                           "(chmod 600)", &key->file);
        goto done;
    }

    if (ngx_file_size(&fi) <= 0
        || ngx_file_size(&fi) > NGX_HA_OPTOUT_KEY_FILE_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is empty or larger than %d bytes",
                           &key->file, NGX_HA_OPTOUT_KEY_FILE_MAX);
        goto done;
    }

    size = (size_t) ngx_file_size(&fi);

    data->data = ngx_pnalloc(cf->pool, size + 1);
    if (data->data == NULL) {
        goto done;
    }

    data->len = 0;

    while (data->len < size) {
        n = ngx_read_fd(fd, data->data + data->len, size - data->len);

        if (n == -1 && ngx_errno == NGX_EINTR) {
            continue;
        }

        if (n == -1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               ngx_read_fd_n " key file \"%V\" failed",
                               &key->file);
            goto done;
        }

        if (n == 0) {
            break;
        }

        data->len += n;
    }

    if (data->len != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" changed while being read",
                           &key->file);
        goto done;
    }

    data->data[size] = '\0';
    rc = NGX_OK;

done:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " key file \"%V\" failed",
                           &key->file);
    }

    return rc;
}


static char *
ngx_http_ha_optout_key_secret(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    ngx_str_t *data)
{
    ngx_pool_cleanup_t  *cln;

    /* wipe the secret when the cycle that loaded it goes away */

    cln = ngx_pool_cleanup_add(cf->pool, sizeof(ngx_str_t));
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_ha_optout_secret_cleanup;
    *(ngx_str_t *) cln->data = *data;

    key->secret = *data;

    if (key->secret.len && key->secret.data[key->secret.len - 1] == '\n') {
        key->secret.len--;

        if (key->secret.len && key->secret.data[key->secret.len - 1] == '\r')
        {
            key->secret.len--;
        }
    }

    /*
     * A public key used as an HMAC secret is the classic algorithm
     * confusion: anyone holding the public key could mint tokens.
     */

    if (key->secret.len >= sizeof("-----BEGIN") - 1
        && ngx_strncmp(key->secret.data, "-----BEGIN",
                       sizeof("-----BEGIN") - 1)
           == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "HS256 secret in \"%V\" is a PEM key, "
                           "not a shared secret", &key->file);
        return NGX_CONF_ERROR;
    }

    if (key->secret.len < NGX_HA_OPTOUT_HS256_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "HS256 secret in \"%V\" is shorter than 32 bytes",
                           &key->file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ha_optout_key_pkey(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    ngx_str_t *data)
{
    int                  nid;
    BIO                 *bio;
    char                 group[64];
    size_t               len;
    EVP_PKEY            *pkey;
    ngx_pool_cleanup_t  *cln;

    bio = BIO_new_mem_buf(data->data, (int) data->len);
    if (bio == NULL) {
        return NGX_CONF_ERROR;
    }

    pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();

    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" holds no PEM public key "
                           "(\"-----BEGIN PUBLIC KEY-----\")", &key->file);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(pkey);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_ha_optout_pkey_cleanup;
    cln->data = pkey;

    if (key->alg == NGX_HA_OPTOUT_ALG_EDDSA) {
        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key file \"%V\" is not an Ed25519 public key",
                               &key->file);
            return NGX_CONF_ERROR;
        }

        key->pkey = pkey;
        return NGX_CONF_OK;
    }

    /* explicit curve parameters have no group name and are refused too */

    nid = NID_undef;

    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC
        && EVP_PKEY_get_group_name(pkey, group, sizeof(group), &len) == 1)
    {
        nid = OBJ_sn2nid(group);
    }

    ERR_clear_error();

    if (nid != NID_X9_62_prime256v1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is not a P-256 EC public key",
                           &key->file);
        return NGX_CONF_ERROR;
    }

    key->pkey = pkey;

    return NGX_CONF_OK;
}


static void
ngx_http_ha_optout_pkey_cleanup(void *data)
{
    EVP_PKEY_free(data);
}


static void
ngx_http_ha_optout_secret_cleanup(void *data)
{
    ngx_str_t  *secret = data;

    OPENSSL_cleanse(secret->data, secret->len);
}
