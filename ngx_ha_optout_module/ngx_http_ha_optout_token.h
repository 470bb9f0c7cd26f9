
/*
 * ngx_ha_optout_module: JWT bearer token verification (SPEC section 4).
 */

#ifndef _NGX_HTTP_HA_OPTOUT_TOKEN_H_INCLUDED_
#define _NGX_HTTP_HA_OPTOUT_TOKEN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HA_OPTOUT_ALG_HS256     1
#define NGX_HA_OPTOUT_ALG_ES256     2
#define NGX_HA_OPTOUT_ALG_EDDSA     3

#define NGX_HA_OPTOUT_SCOPE_READ    0x01
#define NGX_HA_OPTOUT_SCOPE_WRITE   0x02

#define NGX_HA_OPTOUT_LEEWAY        60


typedef struct {
    ngx_uint_t      alg;           /* NGX_HA_OPTOUT_ALG_* */
    ngx_str_t       kid;           /* empty: no kid given */
    ngx_str_t       file;
    ngx_str_t       secret;        /* HS256 only */
    void           *pkey;          /* EVP_PKEY *, ES256 and EdDSA only */
} ngx_http_ha_optout_key_t;


typedef struct {
    ngx_str_t       sub;           /* "" when absent */
    ngx_str_t       jti;           /* "" when absent */
    ngx_str_t       kid;           /* kid of the key that verified it */
    ngx_str_t       scope;         /* the raw scope claim */
    time_t          exp;
    time_t          iat;           /* 0 when absent */
    time_t          nbf;           /* 0 when absent */
    ngx_uint_t      scopes;        /* NGX_HA_OPTOUT_SCOPE_* */
    ngx_array_t    *upstreams;     /* of ngx_str_t; NULL: no ha_upstreams */
} ngx_http_ha_optout_claims_t;


/*
 * Loads a key file at configuration time.  Returns NGX_CONF_OK or an error
 * string for ngx_conf_t (nginx adds file:line).  Refuses: unreadable file,
 * a file readable or writable by group/others (st_mode & 077), an HS256
 * secret shorter than 32 bytes (one trailing newline is stripped), a PEM
 * that is not a P-256 public key (ES256) or an Ed25519 public key (EdDSA).
 * Memory comes from cf->pool; the EVP_PKEY is freed by a pool cleanup.
 */
char *ngx_http_ha_optout_key_load(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key);

/*
 * Verifies "token" (the text after "Bearer ") against "keys" (an array of
 * ngx_http_ha_optout_key_t).  On success fills "claims" (strings allocated
 * from "pool") and returns NGX_OK.  On failure returns NGX_DECLINED and sets
 * *reason to a short static label used as the Prometheus "reason" label and
 * in the JSON error message:
 *   "malformed"   not three base64url parts, bad JSON, wrong claim types
 *   "algorithm"   alg missing, "none", or not the alg of the selected key
 *   "unknown_kid" kid names no key (or no kid and several keys)
 *   "signature"   signature does not verify
 *   "expired"     exp missing or exp + leeway <= now
 *   "not_yet_valid" nbf - leeway > now, or iat - leeway > now
 *   "lifetime"    exp - iat > max_lifetime (iat absent: exp - now)
 *   "audience"    audience set and aud (string or array) lacks it
 * Returns NGX_ERROR only on memory failure.
 */
ngx_int_t ngx_http_ha_optout_token_verify(ngx_pool_t *pool,
    ngx_array_t *keys, ngx_str_t *token, ngx_str_t *audience,
    time_t max_lifetime, time_t now, ngx_http_ha_optout_claims_t *claims,
    const char **reason);

/* Constant-time compare of two equal-length buffers: 0 when equal. */
int ngx_http_ha_optout_memeq_ct(const u_char *a, const u_char *b, size_t n);


#endif /* _NGX_HTTP_HA_OPTOUT_TOKEN_H_INCLUDED_ */
