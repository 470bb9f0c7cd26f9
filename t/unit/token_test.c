
/*
 * Unit test of ngx_http_ha_optout_token.c: tokens are minted here with
 * OpenSSL from keys generated at run time, written to 0600 files and
 * loaded through ngx_http_ha_optout_key_load() as nginx -t would.
 * Output is TAP; the exit status is non-zero when anything failed.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "ngx_http_ha_optout_token.h"
#include "ngx_stubs.h"
#include "tap.h"


#define T_NOW        1790000000
#define T_LIFETIME   3600
#define T_SECRET     "0123456789abcdef0123456789abcdef-unit"


typedef struct {
    const char  *alg;          /* the "alg" header value; NULL: omitted */
    const char  *kid;          /* NULL: omitted */
    ngx_uint_t   sign_alg;     /* how to sign; 0: empty signature */
    EVP_PKEY    *pkey;         /* ES256 / EdDSA private key */
    const u_char *secret;      /* HS256 secret */
    size_t       secret_len;
} t_signer_t;


static ngx_pool_t  *t_pool;
static char         t_dir[] = "/tmp/ha_optout_unit.XXXXXX";

static EVP_PKEY    *t_ec, *t_ed, *t_ec384, *t_rsa, *t_rsa1024;
static char        *t_ec_pem;
static ngx_array_t *t_keys, *t_one_key;
static ngx_str_t    t_audience = ngx_string("edge-eu-1");
static ngx_str_t    t_no_audience = ngx_null_string;
static ngx_str_t   *t_issuer;

static ngx_http_ha_optout_claims_t  t_claims;


static void *
xmalloc(size_t size)
{
    void  *p;

    p = malloc(size);
    if (p == NULL) {
        printf("Bail out! out of memory\n");
        exit(2);
    }

    return p;
}


static void
b64url(const u_char *in, size_t len, char *out)
{
    int   n, i, j;

    n = EVP_EncodeBlock((u_char *) out, in, (int) len);

    for (i = 0, j = 0; i < n; i++) {
        if (out[i] == '=') {
            continue;
        }

        out[j++] = (out[i] == '+') ? '-' : (out[i] == '/') ? '_' : out[i];
    }

    out[j] = '\0';
}


static size_t
sign(t_signer_t *s, const char *data, u_char *sig)
{
    size_t         len;
    EVP_MD_CTX    *ctx;
    ECDSA_SIG     *es;
    const BIGNUM  *r, *ss;
    const u_char  *p;
    u_char         der[128];
    unsigned int   mlen;

    switch (s->sign_alg) {

    case NGX_HA_OPTOUT_ALG_HS256:
        HMAC(EVP_sha256(), s->secret, (int) s->secret_len,
             (const u_char *) data, strlen(data), sig, &mlen);
        return mlen;

    case NGX_HA_OPTOUT_ALG_ES256:
        ctx = EVP_MD_CTX_new();
        len = sizeof(der);
        EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s->pkey);
        EVP_DigestSign(ctx, der, &len, (const u_char *) data, strlen(data));
        EVP_MD_CTX_free(ctx);

        p = der;
        es = d2i_ECDSA_SIG(NULL, &p, (long) len);
        ECDSA_SIG_get0(es, &r, &ss);
        BN_bn2binpad(r, sig, 32);
        BN_bn2binpad(ss, sig + 32, 32);
        ECDSA_SIG_free(es);
        return 64;

    case NGX_HA_OPTOUT_ALG_RS256:
        ctx = EVP_MD_CTX_new();
        len = 1024;
        EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s->pkey);
        EVP_DigestSign(ctx, sig, &len, (const u_char *) data, strlen(data));
        EVP_MD_CTX_free(ctx);
        return len;

    case NGX_HA_OPTOUT_ALG_EDDSA:
        ctx = EVP_MD_CTX_new();
        len = 64;
        EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->pkey);
        EVP_DigestSign(ctx, sig, &len, (const u_char *) data, strlen(data));
        EVP_MD_CTX_free(ctx);
        return len;

    default:
        return 0;
    }
}


/* returns a malloc()ed compact JWS */

static char *
mint_raw(const char *header, const char *claims, t_signer_t *s)
{
    char    *tok, *p;
    u_char   sig[1024];
    size_t   n, siglen;

    n = (strlen(header) + strlen(claims)) * 2 + 1600;
    tok = xmalloc(n);

    b64url((const u_char *) header, strlen(header), tok);
    p = tok + strlen(tok);
    *p++ = '.';
    b64url((const u_char *) claims, strlen(claims), p);

    siglen = sign(s, tok, sig);

    p = tok + strlen(tok);
    *p++ = '.';
    b64url(sig, siglen, p);

    return tok;
}


static char *
mint(t_signer_t *s, const char *claims)
{
    char  header[256];

    if (s->alg == NULL) {
        snprintf(header, sizeof(header), "{\"kid\":\"%s\"}", s->kid);

    } else if (s->kid == NULL) {
        snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}",
                 s->alg);

    } else {
        snprintf(header, sizeof(header),
                 "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
                 s->alg, s->kid);
    }

    return mint_raw(header, claims, s);
}


static ngx_int_t
verify_in(ngx_array_t *keys, ngx_str_t *aud, const char *token,
    const char **reason)
{
    ngx_str_t  t;

    t.data = (u_char *) token;
    t.len = strlen(token);

    *reason = NULL;

    return ngx_http_ha_optout_token_verify(t_pool, keys, &t, aud, t_issuer,
                                           T_LIFETIME, T_NOW, &t_claims,
                                           reason);
}


/* verifies and frees the token; returns the reason, "" when accepted */

static const char *
check_aud(ngx_array_t *keys, ngx_str_t *aud, char *token)
{
    ngx_int_t    rc;
    const char  *reason;

    rc = verify_in(keys, aud, token, &reason);
    free(token);

    if (rc == NGX_OK) {
        return "";
    }

    if (rc != NGX_DECLINED || reason == NULL) {
        return "(bad return)";
    }

    return reason;
}


static const char *
check(char *token)
{
    return check_aud(t_keys, &t_no_audience, token);
}


static void
is_reason(const char *got, const char *want, const char *name)
{
    ok(strcmp(got, want) == 0, name);

    if (strcmp(got, want) != 0) {
        printf("#   got \"%s\", want \"%s\"\n", got, want);
    }
}


static char *
claims_json(const char *extra)
{
    static char  buf[1024];

    snprintf(buf, sizeof(buf),
             "{\"sub\":\"alice\",\"jti\":\"j-1\",\"iat\":%d,\"exp\":%d,"
             "\"scope\":\"ha:read ha:write\"%s%s}",
             T_NOW - 10, T_NOW + 300, *extra ? "," : "", extra);

    return buf;
}


static int
str_is(ngx_str_t *s, const char *v)
{
    return s->len == strlen(v) && memcmp(s->data, v, s->len) == 0;
}


static char *
write_file(const char *name, const void *data, size_t len, mode_t mode)
{
    int     fd;
    char   *path;
    size_t  n;

    n = strlen(t_dir) + strlen(name) + 2;
    path = xmalloc(n);
    snprintf(path, n, "%s/%s", t_dir, name);

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd == -1 || write(fd, data, len) != (ssize_t) len) {
        perror(path);
        exit(2);
    }

    close(fd);
    chmod(path, mode);

    return path;
}


static char *
pem_of(EVP_PKEY *pkey)
{
    BIO   *bio;
    char  *p, *pem;
    long   n;

    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, pkey);
    n = BIO_get_mem_data(bio, &p);
    pem = xmalloc(n + 1);
    memcpy(pem, p, n);
    pem[n] = '\0';
    BIO_free(bio);

    return pem;
}


/* returns NULL on success, else the recorded error message */

static const char *
load(ngx_http_ha_optout_key_t *key, ngx_uint_t alg, const char *kid,
    char *path)
{
    char        *rv;
    ngx_conf_t   cf;

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = t_pool;

    ngx_memzero(key, sizeof(ngx_http_ha_optout_key_t));
    key->alg = alg;
    key->kid.data = (u_char *) kid;
    key->kid.len = strlen(kid);
    key->file.data = (u_char *) path;
    key->file.len = strlen(path);

    ngx_unit_conf_error[0] = '\0';

    rv = ngx_http_ha_optout_key_load(&cf, key);

    if (rv == NGX_CONF_OK) {
        return NULL;
    }

    if (rv != NGX_CONF_ERROR) {
        return rv;
    }

    return ngx_unit_conf_error[0] ? ngx_unit_conf_error : "(no message)";
}


static void
test_key_load(void)
{
    char                      *path;
    const char                *err;
    EVP_PKEY                  *pkey;
    ngx_http_ha_optout_key_t   key;

    path = write_file("weak.key", "0123456789abcdef0123456789abcde\n", 32,
                      0600);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err && strstr(err, "is shorter than 32 bytes")
       && strstr(err, path), "a 31-byte HS256 secret is refused at load");
    free(path);

    path = write_file("exact.key", "0123456789abcdef0123456789abcdef\n",
                      33, 0600);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err == NULL && key.secret.len == 32,
       "a 32-byte secret loads and its trailing newline is stripped");
    free(path);

    path = write_file("crlf.key", "0123456789abcdef0123456789abcdef\r\n",
                      34, 0600);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err && strstr(err, "is not text: byte 33 is a carriage return")
       && strstr(err, "hex or base64"),
       "a secret ending in CRLF is refused, saying how to store it");
    free(path);

    path = write_file("two-newlines.key",
                      "0123456789abcdef0123456789abcdef\n\n", 34, 0600);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err && strstr(err, "a second newline"),
       "only one trailing newline is ignored: a second one is refused");
    free(path);

    {
        u_char  raw[40];
        int     i;

        /* raw random bytes that end in a newline byte: cut silently before */
        for (i = 0; i < 40; i++) {
            raw[i] = (u_char) (i * 37 + 129);
        }
        raw[39] = '\n';

        path = write_file("binary.key", raw, sizeof(raw), 0600);
        err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
        ok(err && strstr(err, "is not text: byte 1 is not ASCII")
           && strstr(err, "openssl rand -hex 32"),
           "a binary secret is refused with how to store it as text");
        free(path);

        memcpy(raw, "0123456789abcdef0123456789abcdef", 32);
        raw[10] = '\0';
        path = write_file("nul.key", raw, 33, 0600);
        err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
        ok(err && strstr(err, "byte 11 is a control byte"),
           "a NUL byte inside the secret is refused");
        free(path);
    }

    path = write_file("open.key", T_SECRET, sizeof(T_SECRET) - 1, 0644);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err && strstr(err, "is accessible by group or others (chmod 600)"),
       "a key file readable by others (0644) is refused");
    free(path);

    path = write_file("group.key", T_SECRET, sizeof(T_SECRET) - 1, 0620);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err && strstr(err, "accessible by group"),
       "a key file writable by the group (0620) is refused");
    free(path);

    path = write_file("ec.pub.pem", t_ec_pem, strlen(t_ec_pem), 0644);
    err = load(&key, NGX_HA_OPTOUT_ALG_ES256, "k", path);
    ok(err == NULL, "a world-readable public key file (0644) loads");
    free(path);

    path = write_file("ec-gw.pub.pem", t_ec_pem, strlen(t_ec_pem), 0664);
    err = load(&key, NGX_HA_OPTOUT_ALG_ES256, "k", path);
    ok(err && strstr(err, "is writable by group or others (chmod 644)"),
       "a public key file the group may write (0664) is refused");
    free(path);

    {
        char   *fifo;
        size_t  n;

        n = strlen(t_dir) + sizeof("/key.fifo");
        fifo = xmalloc(n);
        snprintf(fifo, n, "%s/key.fifo", t_dir);

        if (mkfifo(fifo, 0600) == 0) {
            alarm(10);  /* the old open() blocked here for ever */
            err = load(&key, NGX_HA_OPTOUT_ALG_ES256, "k", fifo);
            alarm(0);
            ok(err && strstr(err, "is not a regular file"),
               "a FIFO as key file is refused at once, not waited on");
            unlink(fifo);

        } else {
            ok(0, "mkfifo for the FIFO case");
        }

        free(fifo);
    }

    path = write_file("pem-as-secret.key", t_ec_pem, strlen(t_ec_pem), 0600);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err && strstr(err, "is a PEM key"),
       "a PEM public key given as an HS256 secret is refused");
    free(path);

    path = pem_of(t_ec384);
    {
        char  *p384 = path;

        path = write_file("p384.pem", p384, strlen(p384), 0600);
        free(p384);
    }
    err = load(&key, NGX_HA_OPTOUT_ALG_ES256, "k", path);
    ok(err && strstr(err, "is not a P-256 EC public key"),
       "a P-384 key is refused for es256");
    free(path);

    path = pem_of(t_ed);
    {
        char  *ed = path;

        path = write_file("ed-for-es.pem", ed, strlen(ed), 0600);
        free(ed);
    }
    err = load(&key, NGX_HA_OPTOUT_ALG_ES256, "k", path);
    ok(err && strstr(err, "is an Ed25519 public key, not a P-256 EC one: "
                          "give it as eddsa"),
       "an Ed25519 key is refused for es256");
    free(path);

    path = write_file("ec-for-ed.pem", t_ec_pem, strlen(t_ec_pem), 0600);
    err = load(&key, NGX_HA_OPTOUT_ALG_EDDSA, "k", path);
    ok(err && strstr(err, "is not an Ed25519 public key"),
       "a P-256 key is refused for eddsa");
    free(path);

    path = write_file("junk.pem", "hello\n", 6, 0600);
    err = load(&key, NGX_HA_OPTOUT_ALG_ES256, "k", path);
    ok(err && strstr(err, "holds no PEM public key"),
       "a file without a PEM public key is refused");
    free(path);

    pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    {
        BIO   *bio;
        char  *p;
        long   n;

        bio = BIO_new(BIO_s_mem());
        PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL);
        n = BIO_get_mem_data(bio, &p);
        path = write_file("private.pem", p, n, 0600);
        BIO_free(bio);
    }
    EVP_PKEY_free(pkey);
    err = load(&key, NGX_HA_OPTOUT_ALG_ES256, "k", path);
    ok(err && strstr(err, "is a private key: give nginx its public half"),
       "a private key PEM is refused for es256, with the way out");
    free(path);

    path = xmalloc(strlen(t_dir) + sizeof("/missing.key"));
    snprintf(path, strlen(t_dir) + sizeof("/missing.key"), "%s/missing.key",
             t_dir);
    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", path);
    ok(err && strstr(err, "open()") && strstr(err, "missing.key"),
       "a missing key file is refused with its name");
    free(path);

    err = load(&key, NGX_HA_OPTOUT_ALG_HS256, "k", t_dir);
    ok(err && strstr(err, "is not a regular file"),
       "a directory is refused as a key file");
}


static void
setup_keys(void)
{
    char                      *path, *pem;
    const char                *err;
    ngx_http_ha_optout_key_t  *key;

    t_ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    t_ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    t_ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    t_rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 2048);
    t_rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 1024);

    if (t_ec == NULL || t_ed == NULL || t_ec384 == NULL || t_rsa == NULL
        || t_rsa1024 == NULL)
    {
        printf("Bail out! key generation failed\n");
        exit(2);
    }

    t_ec_pem = pem_of(t_ec);

    t_keys = ngx_array_create(t_pool, 1, sizeof(ngx_http_ha_optout_key_t));
    t_one_key = ngx_array_create(t_pool, 1,
                                 sizeof(ngx_http_ha_optout_key_t));

    path = write_file("ops.key", T_SECRET "\n", sizeof(T_SECRET), 0600);
    key = ngx_array_push(t_keys);
    err = load(key, NGX_HA_OPTOUT_ALG_HS256, "ops", path);
    ok(err == NULL && key->secret.len == sizeof(T_SECRET) - 1,
       "an HS256 secret file with mode 0600 loads");

    key = ngx_array_push(t_one_key);
    err = load(key, NGX_HA_OPTOUT_ALG_HS256, "", path);
    ok(err == NULL, "a key without kid loads");
    free(path);

    path = write_file("ci.pub.pem", t_ec_pem, strlen(t_ec_pem), 0600);
    key = ngx_array_push(t_keys);
    err = load(key, NGX_HA_OPTOUT_ALG_ES256, "ci", path);
    ok(err == NULL && key->pkey != NULL, "a P-256 public key PEM loads");
    free(path);

    pem = pem_of(t_ed);
    path = write_file("ed.pub.pem", pem, strlen(pem), 0600);
    key = ngx_array_push(t_keys);
    err = load(key, NGX_HA_OPTOUT_ALG_EDDSA, "ed", path);
    ok(err == NULL && key->pkey != NULL, "an Ed25519 public key PEM loads");
    free(path);
    free(pem);

    if (t_failed) {
        printf("Bail out! keys did not load: %s\n", ngx_unit_conf_error);
        exit(2);
    }
}


static void
test_algorithms(void)
{
    char        *tok, *p;
    ngx_int_t    rc;
    const char  *reason;
    t_signer_t   hs = { "HS256", "ops", NGX_HA_OPTOUT_ALG_HS256, NULL,
                        (u_char *) T_SECRET, sizeof(T_SECRET) - 1 };
    t_signer_t   es = { "ES256", "ci", NGX_HA_OPTOUT_ALG_ES256, NULL,
                        NULL, 0 };
    t_signer_t   ed = { "EdDSA", "ed", NGX_HA_OPTOUT_ALG_EDDSA, NULL,
                        NULL, 0 };
    t_signer_t   s;

    es.pkey = t_ec;
    ed.pkey = t_ed;

    tok = mint(&hs, claims_json("\"ha_upstreams\":[\"app\",\"db\"]"));
    rc = verify_in(t_keys, &t_no_audience, tok, &reason);
    free(tok);
    ok(rc == NGX_OK, "a valid HS256 token is accepted");
    ok(str_is(&t_claims.sub, "alice") && t_claims.sub.data[5] == '\0',
       "sub becomes the actor (NUL-terminated pool copy)");
    ok(str_is(&t_claims.jti, "j-1"), "jti is returned");
    ok(str_is(&t_claims.kid, "ops"), "the verifying key's kid is returned");
    ok(t_claims.exp == T_NOW + 300 && t_claims.iat == T_NOW - 10
       && t_claims.nbf == 0, "exp, iat and nbf are returned");
    ok(t_claims.scopes == (NGX_HA_OPTOUT_SCOPE_READ
                           | NGX_HA_OPTOUT_SCOPE_WRITE)
       && str_is(&t_claims.scope, "ha:read ha:write"),
       "scope \"ha:read ha:write\" grants both");
    ok(t_claims.upstreams && t_claims.upstreams->nelts == 2
       && str_is(&((ngx_str_t *) t_claims.upstreams->elts)[0], "app")
       && str_is(&((ngx_str_t *) t_claims.upstreams->elts)[1], "db"),
       "ha_upstreams limits the token to app and db");

    is_reason(check(mint(&es, claims_json(""))), "",
              "a valid ES256 token (raw r||s) is accepted");
    ok(str_is(&t_claims.kid, "ci") && t_claims.upstreams == NULL,
       "without ha_upstreams the token is not limited");

    is_reason(check(mint(&ed, claims_json(""))), "",
              "a valid EdDSA token is accepted");

    s = hs;
    s.kid = NULL;
    is_reason(check_aud(t_one_key, &t_no_audience,
                        mint(&s, claims_json(""))), "",
              "without kid the only configured key is used");
    is_reason(check(mint(&s, claims_json(""))), "unknown_kid",
              "without kid and several keys the token is refused");

    s = hs;
    s.kid = "nobody";
    is_reason(check(mint(&s, claims_json(""))), "unknown_kid",
              "a kid that names no key is refused");
    is_reason(check_aud(t_one_key, &t_no_audience,
                        mint(&s, claims_json(""))), "unknown_kid",
              "a kid does not match a key configured without kid");

    s = hs;
    s.alg = "none";
    s.sign_alg = 0;
    is_reason(check(mint(&s, claims_json(""))), "algorithm",
              "alg none is refused");
    s.kid = NULL;
    is_reason(check_aud(t_one_key, &t_no_audience,
                        mint(&s, claims_json(""))), "algorithm",
              "alg none is refused even with a single key");
    s.alg = "NONE";
    is_reason(check(mint(&s, claims_json(""))), "algorithm",
              "alg NONE is refused");

    s = hs;
    s.alg = NULL;
    is_reason(check(mint(&s, claims_json(""))), "algorithm",
              "a header without alg is refused");

    s = hs;
    s.alg = "hs256";
    is_reason(check(mint(&s, claims_json(""))), "algorithm",
              "alg names are case-sensitive");

    s = hs;
    s.alg = "HS512";
    is_reason(check(mint(&s, claims_json(""))), "algorithm",
              "an unsupported alg is refused");

    /* HMAC keyed with the public PEM: the classic algorithm confusion */
    s = hs;
    s.kid = "ci";
    s.secret = (u_char *) t_ec_pem;
    s.secret_len = strlen(t_ec_pem);
    is_reason(check(mint(&s, claims_json(""))), "algorithm",
              "an HS256 token for an ES256 key (alg confusion) is refused");

    s = ed;
    s.kid = "ci";
    is_reason(check(mint(&s, claims_json(""))), "algorithm",
              "an EdDSA token for an ES256 key is refused");

    s = es;
    s.alg = "EdDSA";
    s.kid = "ed";
    is_reason(check(mint(&s, claims_json(""))), "signature",
              "an ES256 signature under an EdDSA header does not verify");

    s = hs;
    s.secret = (u_char *) "another secret of more than thirty-two bytes";
    s.secret_len = strlen((char *) s.secret);
    is_reason(check(mint(&s, claims_json(""))), "signature",
              "an HS256 token with another secret is refused");

    tok = mint(&es, claims_json(""));
    p = strrchr(tok, '.') + 5;
    *p = (*p == 'A') ? 'B' : 'A';
    is_reason(check(tok), "signature",
              "a flipped ES256 signature byte is refused");

    tok = mint(&ed, claims_json(""));
    p = strrchr(tok, '.') + 5;
    *p = (*p == 'A') ? 'B' : 'A';
    is_reason(check(tok), "signature",
              "a flipped EdDSA signature byte is refused");

    tok = mint(&es, claims_json(""));
    tok[strlen(tok) - 4] = '\0';
    is_reason(check(tok), "signature",
              "an ES256 signature of the wrong length is refused");

    tok = mint(&hs, claims_json(""));
    p = strrchr(tok, '.') + 1;
    *p = '\0';
    is_reason(check(tok), "signature", "an empty signature is refused");

    /* the DER form OpenSSL produces is not the JWS form */
    {
        char        buf[2048], der64[256];
        u_char      der[128];
        size_t      len;
        EVP_MD_CTX *ctx;

        tok = mint(&es, claims_json(""));
        *strrchr(tok, '.') = '\0';

        ctx = EVP_MD_CTX_new();
        len = sizeof(der);
        EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, t_ec);
        EVP_DigestSign(ctx, der, &len, (u_char *) tok, strlen(tok));
        EVP_MD_CTX_free(ctx);
        b64url(der, len, der64);

        snprintf(buf, sizeof(buf), "%s.%s", tok, der64);
        free(tok);
        is_reason(check(strdup(buf)), "signature",
                  "a DER-encoded ES256 signature is refused");
    }

    /* the signature covers the payload */
    {
        char  buf[2048], body[512];

        tok = mint(&hs, claims_json(""));
        p = strchr(tok, '.');
        *p = '\0';
        b64url((u_char *) claims_json("\"ha_upstreams\":[\"*\"]"),
               strlen(claims_json("\"ha_upstreams\":[\"*\"]")), body);
        snprintf(buf, sizeof(buf), "%s.%s.%s", tok, body,
                 strchr(p + 1, '.') + 1);
        free(tok);
        is_reason(check(strdup(buf)), "signature",
                  "a payload changed after signing is refused");
    }
}


static void
test_claims(void)
{
    char         buf[512];
    t_signer_t   hs = { "HS256", "ops", NGX_HA_OPTOUT_ALG_HS256, NULL,
                        (u_char *) T_SECRET, sizeof(T_SECRET) - 1 };

#define CLAIMS(...)                                                          \
    (snprintf(buf, sizeof(buf), __VA_ARGS__), mint(&hs, buf))

    is_reason(check(CLAIMS("{\"sub\":\"a\",\"exp\":%d}", T_NOW - 61)),
              "expired", "a token expired 61 s ago is refused");
    is_reason(check(CLAIMS("{\"sub\":\"a\",\"exp\":%d}", T_NOW - 60)),
              "expired", "exp + 60 s leeway == now is expired");
    is_reason(check(CLAIMS("{\"sub\":\"a\",\"exp\":%d}", T_NOW - 59)),
              "", "a token expired 59 s ago is within the leeway");
    is_reason(check(CLAIMS("{\"sub\":\"a\",\"exp\":%d.75}", T_NOW + 100)),
              "", "a fractional exp is accepted");
    is_reason(check(CLAIMS("{\"sub\":\"a\"}")), "expired",
              "a token without exp is refused as expired");
    is_reason(check(CLAIMS("{\"exp\":\"%d\"}", T_NOW + 100)), "malformed",
              "a string exp is malformed");
    is_reason(check(CLAIMS("{\"exp\":1e300}")), "malformed",
              "an absurd exp is malformed");
    is_reason(check(CLAIMS("{\"exp\":-5}")), "malformed",
              "a negative exp is malformed");

    is_reason(check(CLAIMS("{\"exp\":%d,\"nbf\":%d}", T_NOW + 300,
                           T_NOW + 120)),
              "not_yet_valid", "nbf two minutes ahead is refused");
    is_reason(check(CLAIMS("{\"exp\":%d,\"nbf\":%d}", T_NOW + 300,
                           T_NOW + 30)),
              "", "nbf 30 s ahead is within the leeway");
    is_reason(check(CLAIMS("{\"exp\":%d,\"iat\":%d}", T_NOW + 300,
                           T_NOW + 120)),
              "not_yet_valid", "iat two minutes ahead is refused");
    is_reason(check(CLAIMS("{\"exp\":%d,\"nbf\":true}", T_NOW + 300)),
              "malformed", "a boolean nbf is malformed");

    is_reason(check(CLAIMS("{\"exp\":%d,\"iat\":%d}", T_NOW + 3700,
                           T_NOW - 10)),
              "lifetime", "a token living longer than the limit is refused");
    is_reason(check(CLAIMS("{\"exp\":%d,\"iat\":%d}", T_NOW + 3590,
                           T_NOW - 10)),
              "", "a token living exactly the limit is accepted");
    is_reason(check(CLAIMS("{\"exp\":%d}", T_NOW + 3601)),
              "lifetime", "without iat, exp - now counts as the lifetime");
    is_reason(check(CLAIMS("{\"exp\":%d}", T_NOW + 3600)),
              "", "without iat, exp one hour ahead is accepted");
    is_reason(check(CLAIMS("{\"exp\":%d,\"iat\":%d}", T_NOW - 61,
                           T_NOW + 120)),
              "expired", "expiry is reported before a future iat");

    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d,\"aud\":\"edge-eu-1\"}",
                               T_NOW + 60)),
              "", "aud equal to the configured audience is accepted");
    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d,\"aud\":[\"x\",\"edge-eu-1\"]}",
                               T_NOW + 60)),
              "", "an aud array holding the audience is accepted");
    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d,\"aud\":\"edge-eu-2\"}",
                               T_NOW + 60)),
              "audience", "aud naming another audience is refused");
    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d,\"aud\":\"edge-eu-1x\"}",
                               T_NOW + 60)),
              "audience", "an aud with the audience as prefix is refused");
    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d,\"aud\":[\"x\",\"y\"]}",
                               T_NOW + 60)),
              "audience", "an aud array without the audience is refused");
    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d,\"aud\":[]}", T_NOW + 60)),
              "audience", "an empty aud array is refused");
    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d}", T_NOW + 60)),
              "audience", "a missing aud is refused when audience is set");
    is_reason(check(CLAIMS("{\"exp\":%d,\"aud\":\"other\"}", T_NOW + 60)),
              "", "aud is not checked when no audience is configured");
    is_reason(check(CLAIMS("{\"exp\":%d,\"aud\":[1]}", T_NOW + 60)),
              "malformed", "an aud array of numbers is malformed");
    is_reason(check_aud(t_keys, &t_audience,
                        CLAIMS("{\"exp\":%d,\"aud\":\"edge-eu-1\"}",
                               T_NOW - 100)),
              "expired", "time claims are checked before the audience");

    is_reason(check(CLAIMS("{\"exp\":%d,\"scope\":\"ha:read\"}",
                           T_NOW + 60)), "", "scope ha:read parses");
    ok(t_claims.scopes == NGX_HA_OPTOUT_SCOPE_READ, "ha:read grants read");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scope\":\"ha:write\"}",
                           T_NOW + 60)), "", "scope ha:write parses");
    ok(t_claims.scopes == NGX_HA_OPTOUT_SCOPE_WRITE,
       "ha:write alone does not grant read");
    is_reason(check(CLAIMS("{\"exp\":%d,"
                           "\"scope\":\"openid  ha:write ha:read \"}",
                           T_NOW + 60)), "", "scope with extras parses");
    ok(t_claims.scopes == (NGX_HA_OPTOUT_SCOPE_READ
                           | NGX_HA_OPTOUT_SCOPE_WRITE)
       && str_is(&t_claims.scope, "openid  ha:write ha:read "),
       "scopes among others and extra spaces are found, raw scope kept");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scope\":\"ha:readx ha:writ\"}",
                           T_NOW + 60)), "", "near-miss scopes parse");
    ok(t_claims.scopes == 0, "near-miss scopes grant nothing");
    is_reason(check(CLAIMS("{\"exp\":%d}", T_NOW + 60)), "",
              "a token without scope or sub is valid");
    ok(t_claims.scopes == 0 && t_claims.sub.len == 0
       && t_claims.sub.data != NULL && t_claims.jti.len == 0,
       "without scope nothing is granted; sub and jti are empty");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scope\":[\"ha:read\"]}",
                           T_NOW + 60)), "malformed",
              "a scope array is malformed");
    is_reason(check(CLAIMS("{\"exp\":%d,\"sub\":7}", T_NOW + 60)),
              "malformed", "a numeric sub is malformed");
    is_reason(check(CLAIMS("{\"exp\":%d,\"jti\":null}", T_NOW + 60)),
              "malformed", "a null jti is malformed");

    is_reason(check(CLAIMS("{\"exp\":%d,\"ha_upstreams\":[]}", T_NOW + 60)),
              "", "an empty ha_upstreams parses");
    ok(t_claims.upstreams != NULL && t_claims.upstreams->nelts == 0,
       "an empty ha_upstreams allows no upstream");
    is_reason(check(CLAIMS("{\"exp\":%d,\"ha_upstreams\":[\"a\",\"b\","
                           "\"c\",\"d\",\"e\"]}", T_NOW + 60)),
              "", "five ha_upstreams parse");
    ok(t_claims.upstreams != NULL && t_claims.upstreams->nelts == 5
       && str_is(&((ngx_str_t *) t_claims.upstreams->elts)[4], "e"),
       "all five upstreams are kept");
    is_reason(check(CLAIMS("{\"exp\":%d,\"ha_upstreams\":\"app\"}",
                           T_NOW + 60)),
              "malformed", "ha_upstreams as a string is malformed");
    is_reason(check(CLAIMS("{\"exp\":%d,\"ha_upstreams\":[\"app\",1]}",
                           T_NOW + 60)),
              "malformed", "ha_upstreams with a number is malformed");

    is_reason(check(CLAIMS("{\"exp\":%d,\"sub\":\"a\",\"sub\":\"root\"}",
                           T_NOW + 60)),
              "malformed", "duplicate claims are refused");
    is_reason(check(CLAIMS("[{\"exp\":%d}]", T_NOW + 60)),
              "malformed", "a claims array is refused");
    is_reason(check(CLAIMS("{\"exp\":%d} x", T_NOW + 60)),
              "malformed", "trailing garbage after the claims is refused");
    is_reason(check(CLAIMS("{\"exp\":%d,\"sub\":\"a\\u0000b\"}",
                           T_NOW + 60)),
              "malformed", "a NUL inside a claim string is refused");

#undef CLAIMS
}


static void
test_structure(void)
{
    char        *tok, *p, buf[2048];
    t_signer_t   hs = { "HS256", "ops", NGX_HA_OPTOUT_ALG_HS256, NULL,
                        (u_char *) T_SECRET, sizeof(T_SECRET) - 1 };

    is_reason(check(strdup("")), "malformed", "an empty token is refused");
    is_reason(check(strdup("abc")), "malformed", "one part is refused");
    is_reason(check(strdup("abc.def")), "malformed",
              "two parts are refused");
    is_reason(check(strdup("a$b.c.d")), "malformed",
              "a non-base64url character is refused");
    is_reason(check(strdup("a+b/.c.d")), "malformed",
              "plain base64 characters are refused");
    is_reason(check(strdup("abcde.abcd.abcd")), "malformed",
              "a base64url part of impossible length is refused");

    tok = mint(&hs, claims_json(""));
    snprintf(buf, sizeof(buf), "%s.x", tok);
    free(tok);
    is_reason(check(strdup(buf)), "malformed", "four parts are refused");

    tok = mint(&hs, claims_json(""));
    snprintf(buf, sizeof(buf), "%s=", tok);
    free(tok);
    is_reason(check(strdup(buf)), "malformed",
              "base64 padding in the signature is refused");

    tok = mint(&hs, claims_json(""));
    p = strchr(tok, '.');
    snprintf(buf, sizeof(buf), "%.*s=%s", (int) (p - tok), tok, p);
    free(tok);
    is_reason(check(strdup(buf)), "malformed",
              "base64 padding in the header is refused");

    is_reason(check(mint_raw("{\"alg\":\"HS256\",\"alg\":\"none\","
                             "\"kid\":\"ops\"}", claims_json(""), &hs)),
              "malformed", "a header with duplicate alg is refused");
    is_reason(check(mint_raw("{\"alg\":\"HS256\",\"kid\":1}",
                             claims_json(""), &hs)),
              "malformed", "a numeric kid is refused");
    is_reason(check(mint_raw("{\"alg\":\"HS256\",\"kid\":\"ops\","
                             "\"crit\":[\"exp\"]}", claims_json(""), &hs)),
              "malformed", "a header with crit is refused");
    is_reason(check(mint_raw("[\"HS256\"]", claims_json(""), &hs)),
              "malformed", "a header array is refused");
    is_reason(check(mint_raw("{\"alg\":1,\"kid\":\"ops\"}",
                             claims_json(""), &hs)),
              "algorithm", "a numeric alg is refused");
    is_reason(check(mint_raw("{\"alg\":\"HS256\",\"kid\":\"ops\"}",
                             "not json", &hs)),
              "malformed", "a signed payload that is not JSON is refused");

    tok = xmalloc(9000);
    memset(tok, 'A', 8999);
    tok[8999] = '\0';
    tok[10] = '.';
    tok[20] = '.';
    is_reason(check(tok), "malformed", "an oversized token is refused");
}


/* ------------------------------------------------ RS256, JWK Sets, claims */


static void
b64url_bn(EVP_PKEY *pkey, const char *name, int pad, char *out)
{
    int      n;
    u_char   buf[1024];
    BIGNUM  *bn;

    bn = NULL;
    EVP_PKEY_get_bn_param(pkey, name, &bn);
    n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
    BN_free(bn);
    b64url(buf, n, out);
}


/* the public JWK of "pkey" as an identity provider publishes it */

static char *
jwk_of(EVP_PKEY *pkey, const char *kid, const char *extra)
{
    char    a[1400], b[200], *out;
    u_char  raw[32];
    size_t  len;

    out = xmalloc(4096);

    if (EVP_PKEY_is_a(pkey, "RSA")) {
        b64url_bn(pkey, OSSL_PKEY_PARAM_RSA_N, 0, a);
        b64url_bn(pkey, OSSL_PKEY_PARAM_RSA_E, 0, b);
        snprintf(out, 4096, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\","
                 "\"e\":\"%s\"%s%s}", kid, a, b, *extra ? "," : "", extra);

    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        b64url_bn(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32, a);
        b64url_bn(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b);
        snprintf(out, 4096, "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\","
                 "\"x\":\"%s\",\"y\":\"%s\"%s%s}", kid, a, b,
                 *extra ? "," : "", extra);

    } else {
        len = sizeof(raw);
        EVP_PKEY_get_raw_public_key(pkey, raw, &len);
        b64url(raw, len, a);
        snprintf(out, 4096, "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                 "\"kid\":\"%s\",\"x\":\"%s\"%s%s}", kid, a,
                 *extra ? "," : "", extra);
    }

    return out;
}


static char *
jwk_oct(const char *kid, const char *secret, const char *extra)
{
    char   k[256], *out;

    b64url((const u_char *) secret, strlen(secret), k);
    out = xmalloc(1024);
    snprintf(out, 1024, "{\"kty\":\"oct\",\"kid\":\"%s\",\"k\":\"%s\"%s%s}",
             kid, k, *extra ? "," : "", extra);

    return out;
}


/* NULL on success (the keys in *keys), else the recorded error message */

static const char *
jwks_parse(const char *json, ngx_array_t **keys, ngx_uint_t *secret)
{
    char        *rv;
    ngx_str_t    file = ngx_string("/etc/nginx/idp.jwks");
    ngx_str_t    data;
    ngx_conf_t   cf;
    ngx_uint_t   dummy;

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = t_pool;

    *keys = ngx_array_create(t_pool, 4, sizeof(ngx_http_ha_optout_key_t));
    secret = secret ? secret : &dummy;
    *secret = 0;

    data.data = (u_char *) json;
    data.len = strlen(json);

    ngx_unit_conf_error[0] = '\0';

    rv = ngx_http_ha_optout_jwks_parse(&cf, *keys, &file, &data, secret);

    return (rv == NGX_CONF_OK) ? NULL
           : ngx_unit_conf_error[0] ? ngx_unit_conf_error : "(no message)";
}


static const char *
jwks_file(const char *name, const char *json, mode_t mode)
{
    char        *path, *rv;
    ngx_str_t    file;
    ngx_conf_t   cf;
    ngx_array_t *keys;

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.pool = t_pool;

    path = write_file(name, json, strlen(json), mode);
    file.data = (u_char *) path;
    file.len = strlen(path);

    keys = ngx_array_create(t_pool, 4, sizeof(ngx_http_ha_optout_key_t));
    ngx_unit_conf_error[0] = '\0';

    rv = ngx_http_ha_optout_jwks_load(&cf, keys, &file);
    free(path);

    return (rv == NGX_CONF_OK) ? NULL
           : ngx_unit_conf_error[0] ? ngx_unit_conf_error : "(no message)";
}


static char *
set_of(const char *a, const char *b, const char *c, const char *d)
{
    char  *out;

    out = xmalloc(16384);
    snprintf(out, 16384, "{\"keys\":[%s%s%s%s%s%s%s]}", a,
             b ? "," : "", b ? b : "", c ? "," : "", c ? c : "",
             d ? "," : "", d ? d : "");

    return out;
}


static char *
write_pem(const char *name, EVP_PKEY *pkey, mode_t mode)
{
    char  *pem, *path;

    pem = pem_of(pkey);
    path = write_file(name, pem, strlen(pem), mode);
    free(pem);

    return path;
}


static void
test_rs256(void)
{
    char                      *path, *tok, *p;
    const char                *err;
    ngx_array_t               *keys;
    ngx_http_ha_optout_key_t  *key;
    t_signer_t                 rs = { "RS256", "idp", NGX_HA_OPTOUT_ALG_RS256,
                                      NULL, NULL, 0 };
    t_signer_t                 s;

    rs.pkey = t_rsa;

    keys = ngx_array_create(t_pool, 2, sizeof(ngx_http_ha_optout_key_t));
    key = ngx_array_push(keys);

    path = write_pem("rsa.pub.pem", t_rsa, 0644);
    err = load(key, NGX_HA_OPTOUT_ALG_RS256, "idp", path);
    ok(err == NULL && key->pkey != NULL,
       "a 2048-bit RSA public key PEM (0644) loads for rs256");

    is_reason(check_aud(keys, &t_no_audience, mint(&rs, claims_json(""))),
              "", "a valid RS256 token is accepted");
    ok(str_is(&t_claims.kid, "idp"), "the RS256 key's kid is returned");

    tok = mint(&rs, claims_json(""));
    p = strrchr(tok, '.') + 9;
    *p = (*p == 'A') ? 'B' : 'A';
    is_reason(check_aud(keys, &t_no_audience, tok), "signature",
              "a flipped RS256 signature byte is refused");

    tok = mint(&rs, claims_json(""));
    tok[strlen(tok) - 6] = '\0';
    is_reason(check_aud(keys, &t_no_audience, tok), "signature",
              "an RS256 signature shorter than the modulus is refused");

    /* alg confusion: HMAC keyed with the RSA public key PEM */
    s.alg = "HS256";
    s.kid = "idp";
    s.sign_alg = NGX_HA_OPTOUT_ALG_HS256;
    s.pkey = NULL;
    p = pem_of(t_rsa);
    s.secret = (u_char *) p;
    s.secret_len = strlen(p);
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "algorithm",
              "an HS256 token keyed with the RSA public PEM is refused");
    free(p);

    s = rs;
    s.alg = "RS512";
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "algorithm", "RS512 is not RS256");

    s = rs;
    s.alg = "PS256";
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "algorithm", "PS256 is not RS256");

    s = rs;
    s.pkey = t_rsa1024;
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "signature", "an RS256 token from another RSA key is refused");
    free(path);

    key = ngx_array_push(keys);

    path = write_pem("rsa1024.pub.pem", t_rsa1024, 0644);
    err = load(key, NGX_HA_OPTOUT_ALG_RS256, "weak", path);
    ok(err && strstr(err, "less than 2048 bits") && strstr(err, path),
       "a 1024-bit RSA key is refused for rs256, naming the file");
    free(path);

    path = write_pem("ec-for-rs.pem", t_ec, 0644);
    err = load(key, NGX_HA_OPTOUT_ALG_RS256, "x", path);
    ok(err && strstr(err, "is not an RSA public key"),
       "a P-256 key is refused for rs256");
    free(path);

    path = write_pem("rsa-for-es.pem", t_rsa, 0644);
    err = load(key, NGX_HA_OPTOUT_ALG_ES256, "x", path);
    ok(err && strstr(err, "is an RSA public key, not a P-256 EC one: "
                          "give it as rs256"),
       "an RSA key is refused for es256");
    free(path);
}


static void
test_jwks(void)
{
    char                      *rsa, *ec, *ed, *oct, *set, *tok, *pem, *p;
    char                       buf[4096];
    const char                *err;
    ngx_uint_t                 secret;
    ngx_array_t               *keys;
    ngx_http_ha_optout_key_t  *k;
    t_signer_t                 rs = { "RS256", "r1", NGX_HA_OPTOUT_ALG_RS256,
                                      NULL, NULL, 0 };
    t_signer_t                 es = { "ES256", "e1", NGX_HA_OPTOUT_ALG_ES256,
                                      NULL, NULL, 0 };
    t_signer_t                 ed25519 = { "EdDSA", "d1",
                                           NGX_HA_OPTOUT_ALG_EDDSA, NULL,
                                           NULL, 0 };
    t_signer_t                 hs = { "HS256", "h1", NGX_HA_OPTOUT_ALG_HS256,
                                      NULL, (u_char *) T_SECRET,
                                      sizeof(T_SECRET) - 1 };
    t_signer_t                 s;

    rs.pkey = t_rsa;
    es.pkey = t_ec;
    ed25519.pkey = t_ed;

    rsa = jwk_of(t_rsa, "r1", "\"use\":\"sig\",\"alg\":\"RS256\"");
    ec = jwk_of(t_ec, "e1", "\"use\":\"sig\"");
    ed = jwk_of(t_ed, "d1", "");
    oct = jwk_oct("h1", T_SECRET, "\"alg\":\"HS256\"");

    /* Keycloak publishes an RSA-OAEP encryption key beside its signing key */
    {
        char  *enc, *p384, *rs512, *other;

        enc = jwk_of(t_rsa1024, "enc-1", "\"use\":\"enc\","
                     "\"alg\":\"RSA-OAEP\"");
        p384 = jwk_of(t_ec, "p384", "\"use\":\"sig\"");
        p = strstr(p384, "P-256");
        memcpy(p, "P-384", 5);
        rs512 = jwk_of(t_rsa, "rs512", "\"alg\":\"RS512\"");
        other = strdup("{\"kty\":\"PQC\",\"kid\":\"future\",\"x\":\"AA\"}");

        snprintf(buf, sizeof(buf), "%s,%s,%s", enc, p384, rs512);
        set = set_of(rsa, ec, buf, other);
        err = jwks_parse(set, &keys, &secret);
        ok(err == NULL && keys->nelts == 2 && secret == 0,
           "a set with sig keys and enc/P-384/RS512/unknown keys loads the "
           "2 usable ones");
        free(set);

        set = set_of(enc, p384, rs512, other);
        err = jwks_parse(set, &keys, NULL);
        ok(err && strstr(err, "holds no usable signing key"),
           "a set with no usable key is refused");
        free(set);

        free(enc);
        free(p384);
        free(rs512);
        free(other);
    }

    set = set_of(rsa, ec, ed, oct);
    err = jwks_parse(set, &keys, &secret);
    ok(err == NULL && keys->nelts == 4 && secret == 1,
       "RSA, EC P-256, OKP Ed25519 and oct keys load; oct marks it secret");
    free(set);

    k = keys->elts;
    ok(k[0].alg == NGX_HA_OPTOUT_ALG_RS256 && str_is(&k[0].kid, "r1")
       && k[1].alg == NGX_HA_OPTOUT_ALG_ES256
       && k[2].alg == NGX_HA_OPTOUT_ALG_EDDSA
       && k[3].alg == NGX_HA_OPTOUT_ALG_HS256
       && k[3].secret.len == sizeof(T_SECRET) - 1,
       "each key gets the alg of its kty and its kid");

    is_reason(check_aud(keys, &t_no_audience, mint(&rs, claims_json(""))),
              "", "RS256 token verified by the set's RSA key");
    is_reason(check_aud(keys, &t_no_audience, mint(&es, claims_json(""))),
              "", "ES256 token verified by the set's EC key");
    is_reason(check_aud(keys, &t_no_audience,
                        mint(&ed25519, claims_json(""))),
              "", "EdDSA token verified by the set's OKP key");
    is_reason(check_aud(keys, &t_no_audience, mint(&hs, claims_json(""))),
              "", "HS256 token verified by the set's oct key");

    s = rs;
    s.kid = "h1";
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "algorithm", "an RS256 token naming the oct key is refused");

    pem = pem_of(t_rsa);
    s = hs;
    s.kid = "r1";
    s.secret = (u_char *) pem;
    s.secret_len = strlen(pem);
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "algorithm",
              "an HS256 token keyed with the RSA key's PEM is refused");
    free(pem);

    s = es;
    s.kid = "enc-1";
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "unknown_kid", "a kid of no key of the set is refused");

    s = rs;
    s.kid = NULL;
    is_reason(check_aud(keys, &t_no_audience, mint(&s, claims_json(""))),
              "unknown_kid", "a token without kid is refused by a set");

    /* errors that refuse the whole set */

    set = set_of("{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}", NULL,
                 NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "key 1 (RS256) has no \"kid\""),
       "a usable key without kid is refused");
    free(set);

    tok = jwk_of(t_ec, "r1", "");
    set = set_of(rsa, tok, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "duplicate kid \"r1\""),
       "two keys with one kid are refused");
    free(set);
    free(tok);

    err = jwks_parse("{\"issuer\":\"https://idp\",\"jwks_uri\":\"https://"
                     "idp/certs\"}", &keys, NULL);
    ok(err && strstr(err, "discovery document"),
       "a discovery document is refused with a hint to its jwks_uri");

    err = jwks_parse(ec, &keys, NULL);
    ok(err && strstr(err, "single JWK"),
       "a bare JWK is refused with a hint to wrap it");

    err = jwks_parse("{\"keys\":[", &keys, NULL);
    ok(err && strstr(err, "is not JSON") && strstr(err, "line 1"),
       "a truncated set is refused with its position");

    err = jwks_parse("{\"keys\":{}}", &keys, NULL);
    ok(err && strstr(err, "no \"keys\" array"), "keys must be an array");

    err = jwks_parse("{\"keys\":[1]}", &keys, NULL);
    ok(err && strstr(err, "key 1 is not a JSON object"),
       "a key that is not an object is refused");

    tok = jwk_of(t_ec, "e\\r\\n[emerg] forged", "");
    set = set_of(tok, NULL, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "the kid holds a control byte"),
       "a kid with CR LF (a forged log line) is refused");
    free(set);
    free(tok);

    err = jwks_parse("{\"keys\":[{\"kty\":\"RSA\",\"kid\":7}]}", &keys, NULL);
    ok(err && strstr(err, "wrong type"), "a numeric kid is refused");

    err = jwks_parse("{\"keys\":[{\"kty\":\"oct\",\"kid\":\"a\",\"k\":\"a\","
                     "\"k\":\"b\"}]}", &keys, NULL);
    ok(err && strstr(err, "is not JSON"), "duplicate members are refused");

    tok = jwk_of(t_rsa1024, "weak", "");
    set = set_of(tok, NULL, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "key 1 is an RSA key of less than 2048 bits"),
       "a 1024-bit RSA key in a set is refused");
    free(set);
    free(tok);

    tok = jwk_of(t_rsa, "r1", "");
    p = strstr(tok, "\"e\":\"") + 5;
    memcpy(p, "AQ==", 4);   /* padded base64 */
    set = set_of(tok, NULL, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "not base64url"), "a padded \"e\" is refused");
    free(set);
    free(tok);

    tok = jwk_of(t_rsa, "r1", "");
    p = strstr(tok, "\"e\":\"") + 5;
    memcpy(p, "AQ\"", 3);   /* e = 1 */
    memset(p + 3, ' ', strlen(p + 3) - 1);
    set = set_of(tok, NULL, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "not a valid RSA public key"),
       "an RSA key with exponent 1 fails OpenSSL's public key check");
    free(set);
    free(tok);

    tok = jwk_of(t_ec, "e1", "");
    p = strstr(tok, "\"y\":\"") + 5;
    p[3] = (p[3] == 'A') ? 'B' : 'A';
    set = set_of(tok, NULL, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "not a valid P-256 public key"),
       "an EC point off the curve is refused");
    free(set);
    free(tok);

    err = jwks_parse("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":"
                     "\"e\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}", &keys, NULL);
    ok(err && strstr(err, "must be 32 bytes each"),
       "short EC coordinates are refused");

    err = jwks_parse("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":"
                     "\"d\",\"x\":\"AAAA\"}]}", &keys, NULL);
    ok(err && strstr(err, "32-byte Ed25519"),
       "a short Ed25519 key is refused");

    tok = jwk_oct("h2", "short secret", "");
    set = set_of(tok, NULL, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err && strstr(err, "shorter than 32 bytes"),
       "an oct key under 32 bytes is refused");
    free(set);
    free(tok);

    tok = jwk_of(t_ec, "e2", "\"key_ops\":[\"sign\"]");
    set = set_of(rsa, tok, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err == NULL && keys->nelts == 1,
       "a key whose key_ops lack verify is skipped");
    free(set);
    free(tok);

    tok = jwk_oct("h3", T_SECRET, "\"alg\":\"HS512\"");
    set = set_of(rsa, tok, NULL, NULL);
    err = jwks_parse(set, &keys, &secret);
    ok(err == NULL && keys->nelts == 1 && secret == 1,
       "an HS512 oct key is skipped, but still makes the set secret");
    free(set);
    free(tok);

    /* file modes: public sets may be world-readable, secrets may not */

    set = set_of(rsa, ec, ed, NULL);
    err = jwks_file("public.jwks", set, 0644);
    ok(err == NULL, "a public JWK Set with mode 0644 loads");
    err = jwks_file("public-gw.jwks", set, 0664);
    ok(err && strstr(err, "writable by group or others"),
       "a JWK Set the group may write is refused");
    free(set);

    set = set_of(rsa, oct, NULL, NULL);
    err = jwks_file("oct-open.jwks", set, 0644);
    ok(err && strstr(err, "holds secret key material")
       && strstr(err, "chmod 600"),
       "a JWK Set with an oct key readable by others is refused");
    err = jwks_file("oct.jwks", set, 0600);
    ok(err == NULL, "a JWK Set with an oct key and mode 0600 loads");
    free(set);

    tok = jwk_of(t_ec, "e9", "\"d\":\"c2VjcmV0\"");
    set = set_of(tok, NULL, NULL, NULL);
    err = jwks_file("private-open.jwks", set, 0640);
    ok(err && strstr(err, "holds secret key material"),
       "a JWK Set with a private \"d\" readable by the group is refused");
    free(set);
    free(tok);

    free(rsa);
    free(ec);
    free(ed);
    free(oct);
}


static void
test_typ_iss_scp(void)
{
    char        buf[1024];
    ngx_str_t   iss = ngx_string("https://idp.example/realms/ops");
    t_signer_t  hs = { "HS256", "ops", NGX_HA_OPTOUT_ALG_HS256, NULL,
                       (u_char *) T_SECRET, sizeof(T_SECRET) - 1 };

#define TYP(t)                                                               \
    mint_raw("{\"alg\":\"HS256\",\"kid\":\"ops\",\"typ\":" t "}",           \
             claims_json(""), &hs)

    is_reason(check(TYP("\"JWT\"")), "", "typ JWT is accepted");
    is_reason(check(TYP("\"jwt\"")), "", "typ is case-insensitive");
    is_reason(check(TYP("\"at+jwt\"")), "",
              "typ at+jwt (RFC 9068) is accepted");
    is_reason(check(TYP("\"application/at+JWT\"")), "",
              "typ application/at+jwt is accepted");
    is_reason(check(TYP("\"application/jwt\"")), "",
              "typ application/jwt is accepted");
    is_reason(check(mint_raw("{\"alg\":\"HS256\",\"kid\":\"ops\"}",
                             claims_json(""), &hs)), "",
              "a header without typ is accepted");
    is_reason(check(TYP("\"JOSE\"")), "type", "typ JOSE is refused");
    is_reason(check(TYP("\"logout+jwt\"")), "type",
              "typ logout+jwt is refused");
    is_reason(check(TYP("\"at+jwtx\"")), "type",
              "a typ with at+jwt as prefix is refused");
    is_reason(check(TYP("\"application/\"")), "type",
              "typ application/ is refused");
    is_reason(check(TYP("1")), "type", "a numeric typ is refused");

#undef TYP

#define CLAIMS(...)                                                          \
    (snprintf(buf, sizeof(buf), __VA_ARGS__), mint(&hs, buf))

    t_issuer = &iss;

    is_reason(check(CLAIMS("{\"exp\":%d,\"iss\":\"%s\"}", T_NOW + 60,
                           "https://idp.example/realms/ops")),
              "", "iss equal to the issuer is accepted");
    ok(str_is(&t_claims.iss, "https://idp.example/realms/ops"),
       "iss is returned");
    is_reason(check(CLAIMS("{\"exp\":%d,\"iss\":\"%s\"}", T_NOW + 60,
                           "https://idp.example/realms/dev")),
              "issuer", "another iss is refused");
    is_reason(check(CLAIMS("{\"exp\":%d,\"iss\":\"%s\"}", T_NOW + 60,
                           "https://idp.example/realms/ops/")),
              "issuer", "an iss with a trailing slash is another issuer");
    is_reason(check(CLAIMS("{\"exp\":%d}", T_NOW + 60)),
              "issuer", "a missing iss is refused when issuer is set");
    is_reason(check(CLAIMS("{\"exp\":%d,\"iss\":[\"%s\"]}", T_NOW + 60,
                           "https://idp.example/realms/ops")),
              "malformed", "an iss array is malformed");
    is_reason(check(CLAIMS("{\"exp\":%d,\"iss\":\"%s\"}", T_NOW - 100,
                           "https://idp.example/realms/dev")),
              "expired", "an expired token is reported as expired first");

    t_issuer = NULL;

    is_reason(check(CLAIMS("{\"exp\":%d,\"iss\":\"anyone\"}", T_NOW + 60)),
              "", "iss is not checked when no issuer is configured");

    is_reason(check(CLAIMS("{\"exp\":%d,\"scp\":[\"ha:read\",\"ha:write\"]}",
                           T_NOW + 60)), "", "an scp array parses");
    ok(t_claims.scopes == (NGX_HA_OPTOUT_SCOPE_READ
                           | NGX_HA_OPTOUT_SCOPE_WRITE)
       && str_is(&t_claims.scope, "ha:read ha:write"),
       "scp array (Okta) grants both, joined as scope text");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scp\":\"openid ha:write\"}",
                           T_NOW + 60)), "", "an scp string parses");
    ok(t_claims.scopes == NGX_HA_OPTOUT_SCOPE_WRITE,
       "scp string (Azure AD) is space separated");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scp\":[\"ha:read ha:write\"]}",
                           T_NOW + 60)), "", "an odd scp element parses");
    ok(t_claims.scopes == 0,
       "one scp array element is one scope: it is not split");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scope\":\"ha:read\","
                           "\"scp\":[\"ha:write\"]}", T_NOW + 60)),
              "", "scope and scp together parse");
    ok(t_claims.scopes == (NGX_HA_OPTOUT_SCOPE_READ
                           | NGX_HA_OPTOUT_SCOPE_WRITE)
       && str_is(&t_claims.scope, "ha:read ha:write"),
       "scope and scp both count");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scp\":7}", T_NOW + 60)),
              "malformed", "a numeric scp is malformed");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scp\":[\"ha:read\",7]}",
                           T_NOW + 60)),
              "malformed", "an scp array with a number is malformed");
    is_reason(check(CLAIMS("{\"exp\":%d,\"scp\":[]}", T_NOW + 60)),
              "", "an empty scp array parses");
    ok(t_claims.scopes == 0 && t_claims.scope.len == 0,
       "an empty scp array grants nothing");

#undef CLAIMS
}


/*
 * Found in review: a JWK Set of one key took tokens without kid (the
 * provider's next rotation would refuse them all at once), and an Ed25519
 * key of small order (OpenSSL checks none) verified a trivial signature,
 * R = the identity and S = 0, for any token.
 */

static void
test_jwks_review(void)
{
    char                      *jwk, *set, *tok, *p, *path;
    char                       hdr[64], x[64], name[32];
    u_char                     sig[64];
    const char                *err;
    ngx_uint_t                 i;
    EVP_PKEY                  *weak;
    ngx_array_t               *keys;
    ngx_http_ha_optout_key_t   key;
    t_signer_t                 rs = { "RS256", "r1", NGX_HA_OPTOUT_ALG_RS256,
                                      NULL, NULL, 0 };

    /* y = 1 (the identity), y = 0, y = 1 with x's sign bit, order 8 */
    static const u_char  small[][32] = {
        { 1 },
        { 0 },
        { 1, [31] = 0x80 },
        { 0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b,
          0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39,
          0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a },
        { 0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f }
    };

    rs.pkey = t_rsa;

    jwk = jwk_of(t_rsa, "r1", "\"use\":\"sig\",\"alg\":\"RS256\"");
    set = set_of(jwk, NULL, NULL, NULL);
    err = jwks_parse(set, &keys, NULL);
    ok(err == NULL && keys->nelts == 1, "a JWK Set of one RSA key loads");

    is_reason(check_aud(keys, &t_no_audience, mint(&rs, claims_json(""))),
              "", "a token with the kid of the set's only key verifies");

    rs.kid = NULL;
    is_reason(check_aud(keys, &t_no_audience, mint(&rs, claims_json(""))),
              "unknown_kid",
              "a token without kid is refused by a set of one key too");
    free(set);
    free(jwk);

    for (i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
        b64url(small[i], 32, x);
        set = xmalloc(512);
        snprintf(set, 512, "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                 "\"kid\":\"w\",\"use\":\"sig\",\"x\":\"%s\"}]}", x);
        err = jwks_parse(set, &keys, NULL);
        ok(err && strstr(err, "OKP key 1 is a small-order Ed25519 point"),
           "a small-order Ed25519 JWK is refused");

        if (err == NULL) {
            /* what it let through: R = the identity, S = 0, any claims */
            memset(sig, 0, sizeof(sig));
            sig[0] = 1;
            snprintf(hdr, sizeof(hdr), "{\"alg\":\"EdDSA\",\"kid\":\"w\"}");
            tok = xmalloc(4096);
            b64url((u_char *) hdr, strlen(hdr), tok);
            p = tok + strlen(tok);
            *p++ = '.';
            b64url((u_char *) claims_json(""), strlen(claims_json("")), p);
            p = tok + strlen(tok);
            *p++ = '.';
            b64url(sig, sizeof(sig), p);
            printf("#   a forged token was: %s\n",
                   check_aud(keys, &t_no_audience, tok));
        }

        free(set);

        weak = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, small[i],
                                           32);
        if (weak == NULL) {
            ok(0, "OpenSSL takes the small-order point as a raw key");
            continue;
        }

        snprintf(name, sizeof(name), "weak%u.pub.pem", (unsigned) i);
        path = write_pem(name, weak, 0644);
        err = load(&key, NGX_HA_OPTOUT_ALG_EDDSA, "w", path);
        ok(err && strstr(err, "is a small-order Ed25519 point"),
           "a small-order Ed25519 public key PEM is refused");
        free(path);
        EVP_PKEY_free(weak);
    }

    /* a real key's encoding is not refused */

    jwk = jwk_of(t_ed, "d1", "");
    set = set_of(jwk, NULL, NULL, NULL);
    ok(jwks_parse(set, &keys, NULL) == NULL,
       "an Ed25519 JWK of a generated key loads");
    free(set);
    free(jwk);
}


int
main(void)
{
    u_char  a[4] = "abcd", b[4] = "abce";

    setvbuf(stdout, NULL, _IOLBF, 0);

    t_pool = ngx_create_pool(NGX_DEFAULT_POOL_SIZE, NULL);

    if (mkdtemp(t_dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }

    setup_keys();
    test_key_load();
    test_algorithms();
    test_claims();
    test_structure();
    test_rs256();
    test_jwks();
    test_jwks_review();
    test_typ_iss_scp();

    ok(ngx_http_ha_optout_memeq_ct(a, a, 4) == 0
       && ngx_http_ha_optout_memeq_ct(a, b, 4) != 0
       && ngx_http_ha_optout_memeq_ct(a, b, 3) == 0,
       "memeq_ct compares exactly n bytes");

    /* runs the pool cleanups: EVP_PKEY_free and the secret wipe */
    ngx_destroy_pool(t_pool);

    EVP_PKEY_free(t_ec);
    EVP_PKEY_free(t_ed);
    EVP_PKEY_free(t_ec384);
    EVP_PKEY_free(t_rsa);
    EVP_PKEY_free(t_rsa1024);
    free(t_ec_pem);

    {
        char  cmd[sizeof(t_dir) + 16];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
        if (system(cmd) != 0) {
            printf("# could not remove %s\n", t_dir);
        }
    }

    printf("1..%d\n", t_tests);

    if (t_failed) {
        printf("# FAILED %d of %d unit tests\n", t_failed, t_tests);
        return 1;
    }

    printf("# all %d unit tests passed\n", t_tests);

    return 0;
}
