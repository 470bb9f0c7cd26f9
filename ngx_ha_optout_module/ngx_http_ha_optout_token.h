
/*
 * ngx_ha_optout_module: JWT bearer token verification (SPEC sections 4
 * and 9) and the key files it uses (PEM keys, HS256 secrets, JWK Sets).
 */

#ifndef _NGX_HTTP_HA_OPTOUT_TOKEN_H_INCLUDED_
#define _NGX_HTTP_HA_OPTOUT_TOKEN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HA_OPTOUT_ALG_HS256     1
#define NGX_HA_OPTOUT_ALG_ES256     2
#define NGX_HA_OPTOUT_ALG_EDDSA     3
#define NGX_HA_OPTOUT_ALG_RS256     4

#define NGX_HA_OPTOUT_SCOPE_READ    0x01
#define NGX_HA_OPTOUT_SCOPE_WRITE   0x02
#define NGX_HA_OPTOUT_SCOPE_FLEET   0x04    /* v1/fleet: the agent */
#define NGX_HA_OPTOUT_SCOPE_APPROVE 0x08

#define NGX_HA_OPTOUT_LEEWAY        60


typedef struct {
    ngx_uint_t      alg;           /* NGX_HA_OPTOUT_ALG_* */
    ngx_str_t       kid;           /* empty: no kid given */
    ngx_str_t       file;
    ngx_str_t       secret;        /* HS256 only */
    void           *pkey;          /* EVP_PKEY *: ES256, EdDSA, RS256 */
    ngx_uint_t      jwk;           /* from a JWK Set: selected by kid only */
} ngx_http_ha_optout_key_t;


typedef struct {
    ngx_str_t       sub;           /* "" when absent */
    ngx_str_t       jti;           /* "" when absent */
    ngx_str_t       kid;           /* kid of the key that verified it */
    ngx_str_t       iss;           /* "" when absent */
    ngx_str_t       scope;         /* scope and scp, joined by spaces */
    time_t          exp;
    time_t          iat;           /* 0 when absent */
    time_t          nbf;           /* 0 when absent */
    ngx_uint_t      scopes;        /* NGX_HA_OPTOUT_SCOPE_* */
    ngx_array_t    *upstreams;     /* of ngx_str_t; NULL: no ha_upstreams */
    const char     *malformed;     /* why it is "malformed", for the 401 */
} ngx_http_ha_optout_claims_t;


/*
 * Loads a key file at configuration time (key->alg: HS256, ES256, EdDSA or
 * RS256).  Returns NGX_CONF_OK or NGX_CONF_ERROR after logging the reason
 * (nginx adds file:line).  Key files are read as regular files only,
 * opened with O_NONBLOCK so that a FIFO cannot hang "nginx -t".  Refuses:
 * an unreadable file; an HS256 secret file readable or writable by group
 * or others, shorter than 32 bytes or not text (SPEC section 9: one
 * trailing newline is ignored, any other control or non-ASCII byte is an
 * error); a public key file writable by group or others (public keys may
 * be world-readable); a PEM that is not a P-256 (ES256), Ed25519 (EdDSA)
 * or RSA of 2048 to 8192 bits (RS256) public key.  Memory comes from
 * cf->pool; EVP_PKEYs are freed and secrets wiped by pool cleanups.
 */
char *ngx_http_ha_optout_key_load(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key);

/*
 * Reads the RFC 7517 JWK Set "file" and appends one key per usable JWK to
 * "keys" (RSA -> RS256, EC P-256 -> ES256, OKP Ed25519 -> EdDSA, oct ->
 * HS256).  Keys with "use" other than "sig", "key_ops" without "verify",
 * or an unsupported kty, crv or alg are skipped with a log line; every
 * used key needs a kid that no other key of "keys" has.  A set holding
 * secret material (an oct key, a private "d") must not be accessible by
 * group or others; any set must not be writable by them.
 */
char *ngx_http_ha_optout_jwks_load(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file);

/*
 * The parser behind ngx_http_ha_optout_jwks_load(), for an in-memory set
 * (unit test and fuzzing).  *secret is set when the set holds secret
 * material.  On NGX_CONF_ERROR, "keys" may hold some keys of the set.
 */
char *ngx_http_ha_optout_jwks_parse(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, ngx_str_t *data, ngx_uint_t *secret);

/*
 * Verifies "token" (the text after "Bearer ") against "keys" (an array of
 * ngx_http_ha_optout_key_t).  On success fills "claims" (strings allocated
 * from "pool") and returns NGX_OK.  On failure returns NGX_DECLINED and sets
 * *reason to a short static label used as the Prometheus "reason" label and
 * in the JSON error message:
 *   "malformed"   not three base64url parts, bad JSON, wrong claim types
 *   "type"        header typ present and not JWT or at+jwt (RFC 9068)
 *   "algorithm"   alg missing, "none", or not the alg of the selected key
 *   "unknown_kid" kid names no key (or no kid, and several keys or a key
 *                 of a JWK Set)
 *   "signature"   signature does not verify
 *   "expired"     exp missing or exp + leeway <= now
 *   "not_yet_valid" nbf - leeway > now, or iat - leeway > now
 *   "lifetime"    exp - iat > max_lifetime (iat absent: exp - now)
 *   "audience"    audience set and aud (string or array) lacks it
 *   "issuer"      issuer set and iss is absent or differs
 * Scopes come from "scope" (space separated) and "scp" (a string, space
 * separated, or an array of strings); both are honoured when both exist.
 * Returns NGX_ERROR only on memory failure.
 */
ngx_int_t ngx_http_ha_optout_token_verify(ngx_pool_t *pool,
    ngx_array_t *keys, ngx_str_t *token, ngx_str_t *audience,
    ngx_str_t *issuer, time_t max_lifetime, time_t now,
    ngx_http_ha_optout_claims_t *claims, const char **reason);

/* Constant-time compare of two equal-length buffers: 0 when equal. */
int ngx_http_ha_optout_memeq_ct(const u_char *a, const u_char *b, size_t n);

/*
 * Shared by token.c and keys.c: base64url without padding (NGX_DECLINED
 * for padding or a bad byte), and a pool copy of a JSON string (a json_t),
 * NUL-terminated.
 */
struct json_t;

ngx_int_t ngx_http_ha_optout_b64url(ngx_pool_t *pool, u_char *start,
    u_char *end, ngx_str_t *dst);
ngx_int_t ngx_http_ha_optout_copy_str(ngx_pool_t *pool, struct json_t *v,
    ngx_str_t *s);


#endif /* _NGX_HTTP_HA_OPTOUT_TOKEN_H_INCLUDED_ */
