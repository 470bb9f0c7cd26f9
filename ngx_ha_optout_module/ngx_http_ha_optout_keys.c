
/*
 * ngx_ha_optout_module: the keys that verify admin tokens, loaded at
 * configuration time (ha_optout_admin_key): PEM files, HS256 secret files
 * and RFC 7517 JWK Sets.  JWK parameters become EVP_PKEYs through
 * OpenSSL's own constructors (EVP_PKEY_fromdata,
 * EVP_PKEY_new_raw_public_key): no ASN.1 by hand.
 *
 * Longer than a thousand lines: one concern, the key files read at
 * configuration time.  A JWK becomes a key through the same checks as a
 * PEM (the key's strength, a weak Ed25519 point, a wiped secret, the
 * pool's cleanups); JWK Set parsing could have a file of its own once
 * those checks are shared through token.h.
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


#define NGX_HA_OPTOUT_KEY_FILE_MAX    16384
#define NGX_HA_OPTOUT_HS256_MIN       32
#define NGX_HA_OPTOUT_RSA_MIN_BITS    2048
#define NGX_HA_OPTOUT_RSA_MAX_BITS    8192

/* an identity provider's set with x5c chains is a few KiB per key */
#define NGX_HA_OPTOUT_JWKS_FILE_MAX   (1024 * 1024)
#define NGX_HA_OPTOUT_JWKS_KEYS_MAX   256
#define NGX_HA_OPTOUT_KID_MAX         256


/* what a JWK's kty (and crv) make of it */
typedef struct {
    const char     *kty;
    const char     *crv;           /* NULL: no crv */
    const char     *alg;           /* the JWS alg it verifies */
    ngx_uint_t      id;            /* NGX_HA_OPTOUT_ALG_* */
} ngx_http_ha_optout_jwk_type_t;


static ngx_int_t ngx_http_ha_optout_key_read(ngx_conf_t *cf,
    ngx_str_t *file, size_t max, ngx_str_t *data, ngx_uint_t *mode);
static ngx_int_t ngx_http_ha_optout_wipe_add(ngx_conf_t *cf,
    ngx_str_t *data);
static char *ngx_http_ha_optout_key_secret(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, ngx_str_t *data);
static char *ngx_http_ha_optout_key_pkey(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, ngx_str_t *data);
static ngx_int_t ngx_http_ha_optout_pkey_keep(ngx_conf_t *cf,
    EVP_PKEY *pkey);
static const char *ngx_http_ha_optout_pkey_check(EVP_PKEY *pkey,
    ngx_uint_t alg);
static char *ngx_http_ha_optout_jwk(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, json_t *jwk, ngx_uint_t n, ngx_uint_t *secret,
    ngx_uint_t *used);
static char *ngx_http_ha_optout_jwk_members(ngx_conf_t *cf, ngx_str_t *file,
    json_t *jwk, ngx_uint_t n, ngx_uint_t *secret);
static ngx_http_ha_optout_jwk_type_t *ngx_http_ha_optout_jwk_type(
    ngx_conf_t *cf, ngx_str_t *file, json_t *jwk, ngx_uint_t n);
static char *ngx_http_ha_optout_jwk_kid(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, json_t *kid, ngx_uint_t n,
    ngx_http_ha_optout_jwk_type_t *t);
static char *ngx_http_ha_optout_jwk_secret(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, json_t *jwk, ngx_str_t *file,
    ngx_uint_t n);
static char *ngx_http_ha_optout_jwk_pkey(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, json_t *jwk, ngx_str_t *file,
    ngx_uint_t n);
static ngx_int_t ngx_http_ha_optout_jwk_b64(ngx_conf_t *cf, json_t *jwk,
    const char *name, ngx_str_t *dst);
static EVP_PKEY *ngx_http_ha_optout_jwk_rsa(ngx_conf_t *cf, json_t *jwk,
    ngx_str_t *file, ngx_uint_t n);
static EVP_PKEY *ngx_http_ha_optout_jwk_ec(ngx_conf_t *cf, json_t *jwk,
    ngx_str_t *file, ngx_uint_t n);
static EVP_PKEY *ngx_http_ha_optout_jwk_okp(ngx_conf_t *cf, json_t *jwk,
    ngx_str_t *file, ngx_uint_t n);
static ngx_int_t ngx_http_ha_optout_pkey_public_check(EVP_PKEY *pkey);
static ngx_uint_t ngx_http_ha_optout_ed25519_weak(EVP_PKEY *pkey);
static ngx_uint_t ngx_http_ha_optout_json_is(json_t *v, const char *s);
static void ngx_http_ha_optout_pkey_cleanup(void *data);
static void ngx_http_ha_optout_secret_cleanup(void *data);


static ngx_http_ha_optout_jwk_type_t  ngx_http_ha_optout_jwk_types[] = {
    { "RSA", NULL,      "RS256", NGX_HA_OPTOUT_ALG_RS256 },
    { "EC",  "P-256",   "ES256", NGX_HA_OPTOUT_ALG_ES256 },
    { "OKP", "Ed25519", "EdDSA", NGX_HA_OPTOUT_ALG_EDDSA },
    { "oct", NULL,      "HS256", NGX_HA_OPTOUT_ALG_HS256 },
    { NULL, NULL, NULL, 0 }
};


char *
ngx_http_ha_optout_key_load(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key)
{
    ngx_str_t   data;
    ngx_uint_t  mode;

    if (ngx_http_ha_optout_key_read(cf, &key->file,
                                    NGX_HA_OPTOUT_KEY_FILE_MAX, &data, &mode)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    switch (key->alg) {

    case NGX_HA_OPTOUT_ALG_HS256:
        if (ngx_http_ha_optout_wipe_add(cf, &data) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (mode & 077) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key file \"%V\" is accessible by group or "
                               "others (chmod 600)", &key->file);
            return NGX_CONF_ERROR;
        }

        return ngx_http_ha_optout_key_secret(cf, key, &data);

    case NGX_HA_OPTOUT_ALG_ES256:
    case NGX_HA_OPTOUT_ALG_EDDSA:
    case NGX_HA_OPTOUT_ALG_RS256:

        /* who may write a public key may replace it with their own */

        if (mode & 022) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key file \"%V\" is writable by group or "
                               "others (chmod 644)", &key->file);
            return NGX_CONF_ERROR;
        }

        return ngx_http_ha_optout_key_pkey(cf, key, &data);

    default:
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" has an unknown key algorithm",
                           &key->file);
        return NGX_CONF_ERROR;
    }
}


/*
 * fstat() of the opened descriptor, not stat() of the name, so the checked
 * file is the read one.  Symlinks are followed on purpose: mounted secrets
 * are usually symlinks.  O_NONBLOCK: opening a FIFO would wait for a
 * writer (forever, under "nginx -t"); it has no effect on a regular file.
 *
 * Longer than a screen and a half: every check of a key file (type, owner,
 * mode, size) before a byte of it is used, in order.
 */

static ngx_int_t
ngx_http_ha_optout_key_read(ngx_conf_t *cf, ngx_str_t *file, size_t max,
    ngx_str_t *data, ngx_uint_t *mode)
{
    u_char           *name;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_int_t         rc;
    ngx_file_info_t   fi;

    name = ngx_pnalloc(cf->pool, file->len + 1);
    if (name == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(name, file->data, file->len + 1);

    fd = ngx_open_file(name, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " key file \"%V\" failed", file);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " key file \"%V\" failed", file);
        goto done;
    }

    if (!ngx_is_file(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is not a regular file "
                           "(a FIFO, device or directory is never read): "
                           "give a regular file", file);
        goto done;
    }

    *mode = ngx_file_access(&fi);

    if (ngx_file_size(&fi) <= 0 || (size_t) ngx_file_size(&fi) > max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is empty or larger than %ui "
                           "bytes", file, (ngx_uint_t) max);
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
                               ngx_read_fd_n " key file \"%V\" failed", file);
            goto done;
        }

        if (n == 0) {
            break;
        }

        data->len += n;
    }

    if (data->len != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" changed while being read", file);
        goto done;
    }

    data->data[size] = '\0';
    rc = NGX_OK;

done:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " key file \"%V\" failed", file);
    }

    return rc;
}


/* wipe a buffer holding secret material when the cycle goes away */

static ngx_int_t
ngx_http_ha_optout_wipe_add(ngx_conf_t *cf, ngx_str_t *data)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cf->pool, sizeof(ngx_str_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_ha_optout_secret_cleanup;
    *(ngx_str_t *) cln->data = *data;

    return NGX_OK;
}


/*
 * The secret file is text (SPEC section 9): other signers read it as a
 * string, so a raw binary secret that happens to end in a newline byte
 * would be one byte shorter for some of them.  One trailing newline is
 * ignored; every other byte must be printable ASCII.
 */

static char *
ngx_http_ha_optout_key_secret(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    ngx_str_t *data)
{
    size_t       i;
    const char  *what;

    key->secret = *data;

    if (key->secret.len && key->secret.data[key->secret.len - 1] == '\n') {
        key->secret.len--;
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

    for (i = 0; i < key->secret.len; i++) {
        if (key->secret.data[i] >= 0x20 && key->secret.data[i] < 0x7f) {
            continue;
        }

        what = (key->secret.data[i] == '\r')
               ? "a carriage return (a CRLF line end?)"
               : (key->secret.data[i] == '\n') ? "a second newline"
               : (key->secret.data[i] < 0x80) ? "a control byte"
               : "not ASCII";

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "HS256 secret in \"%V\" is not text: byte %ui is "
                           "%s; the file holds one line of printable ASCII "
                           "(one trailing newline is ignored): store a "
                           "binary secret hex or base64 encoded (\"openssl "
                           "rand -hex 32\") and give every signer that text "
                           "as the secret", &key->file, (ngx_uint_t) i + 1,
                           what);
        return NGX_CONF_ERROR;
    }

    if (key->secret.len < NGX_HA_OPTOUT_HS256_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "HS256 secret in \"%V\" is shorter than 32 "
                           "bytes: make one with \"openssl rand -hex 32\"",
                           &key->file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* "-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----" anywhere in it */

static ngx_uint_t
ngx_http_ha_optout_is_private(ngx_str_t *data)
{
    size_t      i, n;
    const char  *tag = "PRIVATE KEY-----";

    n = sizeof("PRIVATE KEY-----") - 1;

    for (i = 0; i + n <= data->len; i++) {
        if (ngx_memcmp(data->data + i, tag, n) == 0) {
            return 1;
        }
    }

    return 0;
}


static char *
ngx_http_ha_optout_key_pkey(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    ngx_str_t *data)
{
    BIO         *bio;
    EVP_PKEY    *pkey;
    const char  *err;

    bio = BIO_new_mem_buf(data->data, (int) data->len);
    if (bio == NULL) {
        return NGX_CONF_ERROR;
    }

    pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();

    if (pkey == NULL && ngx_http_ha_optout_is_private(data)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is a private key: give nginx "
                           "its public half: openssl pkey -in %V -pubout "
                           "-out %V.pub.pem", &key->file, &key->file,
                           &key->file);
        return NGX_CONF_ERROR;
    }

    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" holds no PEM public key "
                           "(\"-----BEGIN PUBLIC KEY-----\"; from a "
                           "certificate: openssl x509 -pubkey -noout)",
                           &key->file);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ha_optout_pkey_keep(cf, pkey) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    err = ngx_http_ha_optout_pkey_check(pkey, key->alg);

    if (err != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "key file \"%V\" %s",
                           &key->file, err);
        return NGX_CONF_ERROR;
    }

    key->pkey = pkey;

    return NGX_CONF_OK;
}


/* the pool frees the key with the cycle; on failure it is freed at once */

static ngx_int_t
ngx_http_ha_optout_pkey_keep(ngx_conf_t *cf, EVP_PKEY *pkey)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(pkey);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_ha_optout_pkey_cleanup;
    cln->data = pkey;

    return NGX_OK;
}


/* NULL: "pkey" is a public key fit for "alg", else what is wrong */

/*
 * Longer than a screen and a half: one check per key type.
 */

static const char *
ngx_http_ha_optout_pkey_check(EVP_PKEY *pkey, ngx_uint_t alg)
{
    int     nid, bits;
    char    group[64];
    size_t  len;

    switch (alg) {

    case NGX_HA_OPTOUT_ALG_EDDSA:
        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_ED25519) {
            return "is not an Ed25519 public key";
        }

        if (ngx_http_ha_optout_ed25519_weak(pkey)) {
            return "is a small-order Ed25519 point, which trivial "
                   "signatures verify for any token: not a usable key";
        }

        return NULL;

    case NGX_HA_OPTOUT_ALG_RS256:

        /* an RSA-PSS key cannot make PKCS#1 v1.5 signatures: refused */

        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
            return "is not an RSA public key";
        }

        bits = EVP_PKEY_get_bits(pkey);

        if (bits < NGX_HA_OPTOUT_RSA_MIN_BITS) {
            return "is an RSA key of less than 2048 bits (too weak)";
        }

        if (bits > NGX_HA_OPTOUT_RSA_MAX_BITS) {
            return "is an RSA key of more than 8192 bits";
        }

        if (ngx_http_ha_optout_pkey_public_check(pkey) != NGX_OK) {
            return "is not a valid RSA public key";
        }

        return NULL;

    case NGX_HA_OPTOUT_ALG_ES256:

        /* explicit curve parameters have no group name and are refused */

        nid = NID_undef;

        if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC
            && EVP_PKEY_get_group_name(pkey, group, sizeof(group), &len)
               == 1)
        {
            nid = OBJ_sn2nid(group);
        }

        ERR_clear_error();

        if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
            return "is an RSA public key, not a P-256 EC one: give it as "
                   "rs256";
        }

        if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519) {
            return "is an Ed25519 public key, not a P-256 EC one: give it "
                   "as eddsa";
        }

        if (nid != NID_X9_62_prime256v1) {
            return "is not a P-256 EC public key";
        }

        return NULL;

    default:
        return "has an unknown key algorithm";
    }
}


/*
 * OpenSSL checks no Ed25519 public key: a point of small order (the
 * identity, for one) makes R = [S]B with S = 0 a valid signature of any
 * token.  These are the encodings of the 8 points of order 1, 2, 4 and 8
 * (y = 0, 1, -1 and the two order-8 values, and y = p, p + 1 written
 * without reduction), compared without the sign bit of x, as libsodium's
 * blocklist does.  1: "pkey" is one of them, or has no 32-byte key.
 */

static ngx_uint_t
ngx_http_ha_optout_ed25519_weak(EVP_PKEY *pkey)
{
    u_char      a[32];
    size_t      len;
    ngx_uint_t  i;

    static const u_char  small[][32] = {
        { 0 },
        { 1 },
        { 0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4,
          0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6,
          0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05 },
        { 0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b,
          0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39,
          0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a },
        { 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
        { 0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
        { 0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f }
    };

    len = sizeof(a);

    if (EVP_PKEY_get_raw_public_key(pkey, a, &len) != 1 || len != 32) {
        ERR_clear_error();
        return 1;
    }

    a[31] &= 0x7f;

    for (i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
        if (ngx_memcmp(a, small[i], 32) == 0) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_ha_optout_pkey_public_check(EVP_PKEY *pkey)
{
    int            rc;
    EVP_PKEY_CTX  *ctx;

    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = EVP_PKEY_public_check(ctx);

    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();

    return (rc == 1) ? NGX_OK : NGX_DECLINED;
}


char *
ngx_http_ha_optout_jwks_load(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file)
{
    char        *rv;
    ngx_str_t    data;
    ngx_uint_t   mode, secret;

    if (ngx_http_ha_optout_key_read(cf, file, NGX_HA_OPTOUT_JWKS_FILE_MAX,
                                    &data, &mode)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* the text may hold oct keys: wiped with the cycle */

    if (ngx_http_ha_optout_wipe_add(cf, &data) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    secret = 0;

    rv = ngx_http_ha_optout_jwks_parse(cf, keys, file, &data, &secret);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (secret && (mode & 077)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\" holds secret key material (an "
                           "\"oct\" key or a private \"d\") and is "
                           "accessible by group or others (chmod 600)",
                           file);
        return NGX_CONF_ERROR;
    }

    if (mode & 022) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\" is writable by group or others "
                           "(chmod 644)", file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_ha_optout_jwks_parse(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, ngx_str_t *data, ngx_uint_t *secret)
{
    char          *rv;
    size_t         i;
    json_t        *root, *list, *jwk;
    ngx_uint_t     used;
    const char    *hint;
    json_error_t   err;

    root = json_loadb((const char *) data->data, data->len,
                      JSON_REJECT_DUPLICATES, &err);
    if (root == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\" is not JSON: %s (line %d, "
                           "column %d)", file, err.text, err.line,
                           err.column);
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_ERROR;
    list = json_is_object(root) ? json_object_get(root, "keys") : NULL;

    if (!json_is_array(list)) {
        hint = "";

        if (json_is_object(root) && json_object_get(root, "jwks_uri")) {
            hint = "; this is a discovery document: fetch its \"jwks_uri\"";

        } else if (json_is_object(root) && json_object_get(root, "kty")) {
            hint = "; a single JWK goes in {\"keys\": [...]}";
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\" has no \"keys\" array (RFC 7517 "
                           "section 5)%s", file, hint);
        goto done;
    }

    if (json_array_size(list) > NGX_HA_OPTOUT_JWKS_KEYS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\" holds more than %d keys", file,
                           NGX_HA_OPTOUT_JWKS_KEYS_MAX);
        goto done;
    }

    used = 0;

    json_array_foreach(list, i, jwk) {
        if (ngx_http_ha_optout_jwk(cf, keys, file, jwk, i + 1, secret, &used)
            != NGX_CONF_OK)
        {
            goto done;
        }
    }

    if (used == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\" holds no usable signing key "
                           "(RSA for RS256, EC P-256 for ES256, OKP Ed25519 "
                           "for EdDSA, oct for HS256)", file);
        goto done;
    }

    rv = NGX_CONF_OK;

done:

    json_decref(root);

    return rv;
}


/* a JSON string equal to a C string (jansson strings may hold NULs) */

static ngx_uint_t
ngx_http_ha_optout_json_is(json_t *v, const char *s)
{
    return json_is_string(v)
           && json_string_length(v) == ngx_strlen(s)
           && ngx_strcmp(json_string_value(v), s) == 0;
}


/*
 * One JWK of a set, number "n" (from 1) in messages.  Keys that are not
 * for verifying JWS signatures, or of a type we do not verify, are skipped
 * (an identity provider publishes encryption keys and keys for other
 * algorithms beside the ones it signs with, and may add more at any
 * rotation: they must not break a reload).  A key of a supported type that
 * is broken, too weak, or has no kid refuses the whole set.
 */

static char *
ngx_http_ha_optout_jwk(ngx_conf_t *cf, ngx_array_t *keys, ngx_str_t *file,
    json_t *jwk, ngx_uint_t n, ngx_uint_t *secret, ngx_uint_t *used)
{
    char                           *rv;
    json_t                         *kid;
    ngx_http_ha_optout_key_t       *key;
    ngx_http_ha_optout_jwk_type_t  *t;

    if (ngx_http_ha_optout_jwk_members(cf, file, jwk, n, secret)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    t = ngx_http_ha_optout_jwk_type(cf, file, jwk, n);
    if (t == NULL) {
        return NGX_CONF_OK;             /* skipped, and logged */
    }

    kid = json_object_get(jwk, "kid");

    if (ngx_http_ha_optout_jwk_kid(cf, keys, file, kid, n, t) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    key = ngx_array_push(keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(key, sizeof(ngx_http_ha_optout_key_t));

    key->alg = t->id;
    key->file = *file;
    key->jwk = 1;

    if (ngx_http_ha_optout_copy_str(cf->pool, kid, &key->kid) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    rv = (t->id == NGX_HA_OPTOUT_ALG_HS256)
         ? ngx_http_ha_optout_jwk_secret(cf, key, jwk, file, n)
         : ngx_http_ha_optout_jwk_pkey(cf, key, jwk, file, n);

    if (rv != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    (*used)++;

    return NGX_CONF_OK;
}


/* a JWK's members of the right types; *secret when it holds private ones */

static char *
ngx_http_ha_optout_jwk_members(ngx_conf_t *cf, ngx_str_t *file, json_t *jwk,
    ngx_uint_t n, ngx_uint_t *secret)
{
    json_t  *kty, *crv, *alg, *kid, *use, *ops;

    if (!json_is_object(jwk)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": key %ui is not a JSON object",
                           file, n);
        return NGX_CONF_ERROR;
    }

    kty = json_object_get(jwk, "kty");
    crv = json_object_get(jwk, "crv");
    alg = json_object_get(jwk, "alg");
    kid = json_object_get(jwk, "kid");
    use = json_object_get(jwk, "use");
    ops = json_object_get(jwk, "key_ops");

    if (!json_is_string(kty)
        || (crv && !json_is_string(crv))
        || (alg && !json_is_string(alg))
        || (kid && !json_is_string(kid))
        || (use && !json_is_string(use))
        || (ops && !json_is_array(ops)))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": key %ui lacks \"kty\" or has a "
                           "member of the wrong type (kty, crv, alg, kid and "
                           "use are strings, key_ops an array)", file, n);
        return NGX_CONF_ERROR;
    }

    /* private members make the file secret even if the key is skipped */

    if (json_object_get(jwk, "d") != NULL
        || ngx_http_ha_optout_json_is(kty, "oct"))
    {
        *secret = 1;
    }

    return NGX_CONF_OK;
}


/*
 * What a JWK verifies: NULL (logged) when it is not for verifying
 * signatures ("use", "key_ops") or of a kty, crv or alg we do not verify
 */

static ngx_http_ha_optout_jwk_type_t *
ngx_http_ha_optout_jwk_type(ngx_conf_t *cf, ngx_str_t *file, json_t *jwk,
    ngx_uint_t n)
{
    size_t                          i;
    json_t                         *v, *kty, *crv, *alg, *use, *ops;
    ngx_uint_t                      verify;
    ngx_http_ha_optout_jwk_type_t  *t;

    kty = json_object_get(jwk, "kty");
    crv = json_object_get(jwk, "crv");
    alg = json_object_get(jwk, "alg");
    use = json_object_get(jwk, "use");
    ops = json_object_get(jwk, "key_ops");

    if (use && !ngx_http_ha_optout_json_is(use, "sig")) {
        ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                           "JWK Set \"%V\": key %ui skipped: \"use\" is "
                           "\"%s\", not \"sig\"", file, n,
                           json_string_value(use));
        return NULL;
    }

    if (ops) {
        verify = 0;

        json_array_foreach(ops, i, v) {
            if (ngx_http_ha_optout_json_is(v, "verify")) {
                verify = 1;
            }
        }

        if (!verify) {
            ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                               "JWK Set \"%V\": key %ui skipped: its "
                               "\"key_ops\" lack \"verify\"", file, n);
            return NULL;
        }
    }

    for (t = ngx_http_ha_optout_jwk_types; t->kty; t++) {
        if (ngx_http_ha_optout_json_is(kty, t->kty)) {
            break;
        }
    }

    if (t->kty == NULL) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "JWK Set \"%V\": key %ui skipped: kty \"%s\" is "
                           "not supported", file, n, json_string_value(kty));
        return NULL;
    }

    if (t->crv && !ngx_http_ha_optout_json_is(crv, t->crv)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "JWK Set \"%V\": key %ui skipped: %s curve "
                           "\"%s\" is not supported (%s only)", file, n,
                           t->kty, crv ? json_string_value(crv) : "",
                           t->crv);
        return NULL;
    }

    if (alg && !ngx_http_ha_optout_json_is(alg, t->alg)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "JWK Set \"%V\": key %ui skipped: alg \"%s\" is "
                           "not supported for kty \"%s\" (%s only)", file, n,
                           json_string_value(alg), t->kty, t->alg);
        return NULL;
    }

    return t;
}


/* a used JWK's kid: present, printable, and no other key's */

static char *
ngx_http_ha_optout_jwk_kid(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_str_t *file, json_t *kid, ngx_uint_t n,
    ngx_http_ha_optout_jwk_type_t *t)
{
    u_char                    *p;
    size_t                     i;
    ngx_http_ha_optout_key_t  *other;

    if (kid == NULL || json_string_length(kid) == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": key %ui (%s) has no \"kid\": "
                           "every key of a set needs one", file, n, t->alg);
        return NGX_CONF_ERROR;
    }

    /* the kid reaches v1/whoami, logs and audit lines: printable only */

    p = (u_char *) json_string_value(kid);

    for (i = 0; i < json_string_length(kid); i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            break;
        }
    }

    if (i < json_string_length(kid)
        || json_string_length(kid) > NGX_HA_OPTOUT_KID_MAX)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": key %ui: the kid holds a control "
                           "byte or is longer than %d bytes", file, n,
                           NGX_HA_OPTOUT_KID_MAX);
        return NGX_CONF_ERROR;
    }

    other = keys->elts;

    for (i = 0; i < keys->nelts; i++) {
        if (other[i].kid.len == json_string_length(kid)
            && ngx_memcmp(other[i].kid.data, json_string_value(kid),
                          other[i].kid.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "JWK Set \"%V\": key %ui: duplicate kid "
                               "\"%s\"", file, n, json_string_value(kid));
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* an oct JWK: its HS256 secret, wiped with the pool */

static char *
ngx_http_ha_optout_jwk_secret(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    json_t *jwk, ngx_str_t *file, ngx_uint_t n)
{
    ngx_str_t  k;

    if (ngx_http_ha_optout_jwk_b64(cf, jwk, "k", &k) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": key %ui (kid \"%V\"): \"k\" "
                           "is missing or not base64url", file, n,
                           &key->kid);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ha_optout_wipe_add(cf, &k) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (k.len < NGX_HA_OPTOUT_HS256_MIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": key %ui (kid \"%V\"): the "
                           "HS256 secret is shorter than 32 bytes: make "
                           "one with \"openssl rand -hex 32\"", file,
                           n, &key->kid);
        return NGX_CONF_ERROR;
    }

    key->secret = k;

    return NGX_CONF_OK;
}


/* an RSA, EC or OKP JWK: its EVP_PKEY, freed with the pool */

static char *
ngx_http_ha_optout_jwk_pkey(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    json_t *jwk, ngx_str_t *file, ngx_uint_t n)
{
    EVP_PKEY  *pkey;

    switch (key->alg) {

    case NGX_HA_OPTOUT_ALG_RS256:
        pkey = ngx_http_ha_optout_jwk_rsa(cf, jwk, file, n);
        break;

    case NGX_HA_OPTOUT_ALG_ES256:
        pkey = ngx_http_ha_optout_jwk_ec(cf, jwk, file, n);
        break;

    default: /* NGX_HA_OPTOUT_ALG_EDDSA */
        pkey = ngx_http_ha_optout_jwk_okp(cf, jwk, file, n);
        break;
    }

    ERR_clear_error();

    if (pkey == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ha_optout_pkey_keep(cf, pkey) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    key->pkey = pkey;

    return NGX_CONF_OK;
}


/* a base64url member of a JWK, decoded into cf->pool (padding refused) */

static ngx_int_t
ngx_http_ha_optout_jwk_b64(ngx_conf_t *cf, json_t *jwk, const char *name,
    ngx_str_t *dst)
{
    u_char  *p;
    json_t  *v;

    v = json_object_get(jwk, name);

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NGX_DECLINED;
    }

    p = (u_char *) json_string_value(v);

    return ngx_http_ha_optout_b64url(cf->pool, p, p + json_string_length(v),
                                     dst);
}


static EVP_PKEY *
ngx_http_ha_optout_jwk_rsa(ngx_conf_t *cf, json_t *jwk, ngx_str_t *file,
    ngx_uint_t n)
{
    BIGNUM          *bn_n, *bn_e;
    EVP_PKEY        *pkey;
    ngx_str_t        mod, exp;
    const char      *err;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *ctx;
    OSSL_PARAM_BLD  *bld;

    if (ngx_http_ha_optout_jwk_b64(cf, jwk, "n", &mod) != NGX_OK
        || ngx_http_ha_optout_jwk_b64(cf, jwk, "e", &exp) != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": RSA key %ui: \"n\" or \"e\" is "
                           "missing or not base64url", file, n);
        return NULL;
    }

    pkey = NULL;
    params = NULL;
    ctx = NULL;
    err = "is not a valid RSA public key";

    bn_n = BN_bin2bn(mod.data, (int) mod.len, NULL);
    bn_e = BN_bin2bn(exp.data, (int) exp.len, NULL);
    bld = OSSL_PARAM_BLD_new();

    if (bn_n == NULL || bn_e == NULL || bld == NULL
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n)
        || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
    {
        goto done;
    }

    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

    if (params == NULL || ctx == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        pkey = NULL;
        goto done;
    }

    err = ngx_http_ha_optout_pkey_check(pkey, NGX_HA_OPTOUT_ALG_RS256);

    if (err != NULL) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }

done:

    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": RSA key %ui %s", file, n, err);
    }

    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);

    return pkey;
}


/* x and y are exactly 32 bytes each for P-256 (RFC 7518 6.2.1.2) */

static EVP_PKEY *
ngx_http_ha_optout_jwk_ec(ngx_conf_t *cf, json_t *jwk, ngx_str_t *file,
    ngx_uint_t n)
{
    u_char           point[65];
    EVP_PKEY        *pkey;
    ngx_str_t        x, y;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *ctx;
    OSSL_PARAM_BLD  *bld;

    if (ngx_http_ha_optout_jwk_b64(cf, jwk, "x", &x) != NGX_OK
        || ngx_http_ha_optout_jwk_b64(cf, jwk, "y", &y) != NGX_OK
        || x.len != 32 || y.len != 32)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": EC key %ui: \"x\" and \"y\" "
                           "must be 32 bytes each, base64url", file, n);
        return NULL;
    }

    /* the uncompressed point, SEC 1 2.3.3 */

    point[0] = 0x04;
    ngx_memcpy(point + 1, x.data, 32);
    ngx_memcpy(point + 33, y.data, 32);

    pkey = NULL;
    params = NULL;
    ctx = NULL;

    bld = OSSL_PARAM_BLD_new();

    if (bld == NULL
        || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                            "prime256v1", 0)
        || !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                             point, sizeof(point)))
    {
        goto done;
    }

    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);

    if (params == NULL || ctx == NULL
        || EVP_PKEY_fromdata_init(ctx) != 1
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
    {
        pkey = NULL;
        goto done;
    }

    /* on the curve and not the point at infinity */

    if (ngx_http_ha_optout_pkey_public_check(pkey) != NGX_OK) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }

done:

    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": EC key %ui is not a valid P-256 "
                           "public key", file, n);
    }

    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);

    return pkey;
}


static EVP_PKEY *
ngx_http_ha_optout_jwk_okp(ngx_conf_t *cf, json_t *jwk, ngx_str_t *file,
    ngx_uint_t n)
{
    EVP_PKEY   *pkey;
    ngx_str_t   x;

    pkey = NULL;

    if (ngx_http_ha_optout_jwk_b64(cf, jwk, "x", &x) == NGX_OK
        && x.len == 32)
    {
        pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x.data,
                                           x.len);
    }

    if (pkey != NULL && ngx_http_ha_optout_ed25519_weak(pkey)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": OKP key %ui is a small-order "
                           "Ed25519 point, which trivial signatures verify "
                           "for any token: not a usable key", file, n);
        EVP_PKEY_free(pkey);
        return NULL;
    }

    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "JWK Set \"%V\": OKP key %ui: \"x\" must be a "
                           "32-byte Ed25519 public key, base64url", file, n);
    }

    return pkey;
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
