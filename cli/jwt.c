
/*
 * ha-optoutctl: minting JWT access tokens (RFC 7519) with OpenSSL 3:
 * HS256 from a shared secret file, ES256, EdDSA and RS256 from a private
 * key PEM.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "hoctl.h"


#define HOCTL_KEY_MAX  (64 * 1024)


static char *hoctl_b64url(const unsigned char *in, size_t len);
static char *hoctl_jws_join(const char *key, int alg, char *hdr, char *pl,
    char *err, size_t errlen);
static unsigned char *hoctl_read_key(const char *file, size_t *len,
    char *err, size_t errlen);
static int hoctl_sign_hs256(const char *file, const char *input,
    unsigned char *sig, size_t *siglen, char *err, size_t errlen);
static int hoctl_sign_pkey(const char *file, int alg, const char *input,
    unsigned char *sig, size_t *siglen, char *err, size_t errlen);
static json_t *hoctl_upstreams(const char *list);


/* indexes of algs[] */
#define HOCTL_HS256  0
#define HOCTL_ES256  1
#define HOCTL_EDDSA  2
#define HOCTL_RS256  3


/* --alg NAME as an index of algs[], -1 unknown; hs256 by default */
static int
hoctl_jwt_alg(const char *name)
{
    if (name == NULL || strcasecmp(name, "hs256") == 0) {
        return HOCTL_HS256;
    } else if (strcasecmp(name, "es256") == 0) {
        return HOCTL_ES256;
    } else if (strcasecmp(name, "eddsa") == 0
               || strcasecmp(name, "ed25519") == 0)
    {
        return HOCTL_EDDSA;
    } else if (strcasecmp(name, "rs256") == 0) {
        return HOCTL_RS256;
    }

    return -1;
}


/* the token's claims; ups (consumed) is its ha_upstreams or NULL */
static json_t *
hoctl_jwt_claims(const hoctl_conn_t *c, time_t now, const char *jti,
    json_t *ups)
{
    json_t  *cl;

    cl = json_object();
    json_object_set_new(cl, "sub", json_string(c->sub ? c->sub : ""));
    json_object_set_new(cl, "scope",
                        json_string(c->scope ? c->scope : "ha:read ha:write"));
    json_object_set_new(cl, "iat", json_integer(now));
    json_object_set_new(cl, "exp", json_integer(now + c->token_ttl));
    json_object_set_new(cl, "jti", json_string(jti));
    if (c->aud != NULL) {
        json_object_set_new(cl, "aud", json_string(c->aud));
    }
    if (c->iss != NULL) {
        json_object_set_new(cl, "iss", json_string(c->iss));
    }
    if (ups != NULL) {
        json_object_set_new(cl, "ha_upstreams", ups);
    }

    return cl;
}


char *
hoctl_jwt_mint(const hoctl_conn_t *c, char *err, size_t errlen)
{
    int             alg;
    char           *hdr_json, *clm_json, *hdr, *clm;
    char            jti[33];
    size_t          len;
    time_t          now;
    json_t         *h, *cl;
    json_t         *ups;
    unsigned char   rnd[16];
    static const char  *algs[] = { "HS256", "ES256", "EdDSA", "RS256" };

    alg = hoctl_jwt_alg(c->alg);
    if (alg < 0) {
        snprintf(err, errlen, "unknown --alg \"%s\" (hs256, es256, eddsa, "
                 "rs256)", c->alg);
        return NULL;
    }

    ups = NULL;

    if (c->upstreams != NULL) {
        ups = hoctl_upstreams(c->upstreams);
        if (ups == NULL) {
            snprintf(err, errlen, "--upstreams \"%s\": a comma separated "
                     "list of upstream names, e.g. app,db", c->upstreams);
            return NULL;
        }
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        snprintf(err, errlen, "no randomness for the token id");
        return NULL;
    }

    for (len = 0; len < sizeof(rnd); len++) {
        sprintf(jti + 2 * len, "%02x", rnd[len]);
    }

    now = time(NULL);

    h = json_object();
    json_object_set_new(h, "alg", json_string(algs[alg]));
    json_object_set_new(h, "typ", json_string("JWT"));
    if (c->kid != NULL) {
        json_object_set_new(h, "kid", json_string(c->kid));
    }

    cl = hoctl_jwt_claims(c, now, jti, ups);

    hdr_json = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    clm_json = json_dumps(cl, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    json_decref(cl);

    if (hdr_json == NULL || clm_json == NULL) {
        snprintf(err, errlen, "cannot encode the token (is --sub UTF-8?)");
        free(hdr_json);
        free(clm_json);
        return NULL;
    }

    hdr = hoctl_b64url((unsigned char *) hdr_json, strlen(hdr_json));
    clm = hoctl_b64url((unsigned char *) clm_json, strlen(clm_json));
    free(hdr_json);
    free(clm_json);

    return hoctl_jws_join(c->key, alg, hdr, clm, err, errlen);
}


/* "app,db" -> ["app", "db"]; NULL for an empty name */
static json_t *
hoctl_upstreams(const char *list)
{
    json_t      *a;
    const char  *p, *end;

    a = json_array();

    for (p = list; ; p = end + 1) {
        end = strchr(p, ',');
        if (end == NULL) {
            end = p + strlen(p);
        }

        if (end == p) {
            json_decref(a);
            return NULL;
        }

        json_array_append_new(a, json_stringn(p, end - p));

        if (*end == '\0') {
            break;
        }
    }

    return a;
}


static char *
hoctl_b64url(const unsigned char *in, size_t len)
{
    char        *out, *p;
    size_t       i;
    unsigned     v;
    static const char  tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    out = malloc(len / 3 * 4 + 5);
    if (out == NULL) {
        fprintf(stderr, "%s: out of memory\n", hoctl_progname);
        exit(HOCTL_USAGE);
    }

    p = out;

    for (i = 0; i + 2 < len; i += 3) {
        v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];
        *p++ = tab[v >> 18 & 63];
        *p++ = tab[v >> 12 & 63];
        *p++ = tab[v >> 6 & 63];
        *p++ = tab[v & 63];
    }

    /* no padding (RFC 7515 section 2) */
    if (len - i == 1) {
        v = in[i] << 16;
        *p++ = tab[v >> 18 & 63];
        *p++ = tab[v >> 12 & 63];

    } else if (len - i == 2) {
        v = in[i] << 16 | in[i + 1] << 8;
        *p++ = tab[v >> 18 & 63];
        *p++ = tab[v >> 12 & 63];
        *p++ = tab[v >> 6 & 63];
    }

    *p = '\0';

    return out;
}


static unsigned char *
hoctl_read_key(const char *file, size_t *len, char *err, size_t errlen)
{
    FILE           *f;
    size_t          n;
    unsigned char  *buf;

    f = fopen(file, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read key file \"%s\": %m", file);
        return NULL;
    }

    buf = malloc(HOCTL_KEY_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    n = fread(buf, 1, HOCTL_KEY_MAX + 1, f);
    fclose(f);

    if (n > HOCTL_KEY_MAX) {
        OPENSSL_cleanse(buf, n);
        free(buf);
        snprintf(err, errlen, "key file \"%s\" is larger than 64 KiB", file);
        return NULL;
    }

    *len = n;
    return buf;
}


static int
hoctl_sign_hs256(const char *file, const char *input, unsigned char *sig,
    size_t *siglen, char *err, size_t errlen)
{
    size_t          klen, outlen;
    unsigned char  *key;

    key = hoctl_read_key(file, &klen, err, errlen);
    if (key == NULL) {
        return -1;
    }

    /* the module reads the file the same way (SPEC section 9) */
    if (klen > 0 && key[klen - 1] == '\n') {
        klen--;
    }

    if (klen == 0) {
        free(key);
        snprintf(err, errlen, "key file \"%s\" is empty", file);
        return -1;
    }

    /* a private key given without --alg: hs256 is only the default */
    if (klen > 11 && memcmp(key, "-----BEGIN ", 11) == 0) {
        OPENSSL_cleanse(key, klen);
        free(key);
        snprintf(err, errlen, "key file \"%s\" is a PEM key, not an HS256 "
                 "secret: give --alg eddsa, es256 or rs256 (the default "
                 "hs256 wants a shared secret)", file);
        return -1;
    }

    for (outlen = 0; outlen < klen; outlen++) {
        if (key[outlen] < 0x20 || key[outlen] >= 0x7f) {
            OPENSSL_cleanse(key, klen);
            free(key);
            snprintf(err, errlen, "HS256 secret in \"%s\" is not text (byte "
                     "%zu): store a binary secret hex or base64 encoded "
                     "(openssl rand -hex 32)", file, outlen + 1);
            return -1;
        }
    }

    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, klen,
                  (const unsigned char *) input, strlen(input),
                  sig, *siglen, &outlen)
        == NULL)
    {
        OPENSSL_cleanse(key, klen);
        free(key);
        snprintf(err, errlen, "HMAC-SHA256 failed");
        return -1;
    }

    OPENSSL_cleanse(key, klen);
    free(key);

    *siglen = outlen;
    return 0;
}


/* the private key in file, checked to be of the kind alg signs with */
static EVP_PKEY *
hoctl_sign_key_load(const char *file, int alg, char *err, size_t errlen)
{
    char             group[32];
    BIO             *bio;
    size_t           klen;
    EVP_PKEY        *pkey;
    unsigned char   *key;

    static const char  *names[] = { "hs256", "es256", "eddsa", "rs256" };

    key = hoctl_read_key(file, &klen, err, errlen);
    if (key == NULL) {
        return NULL;
    }

    bio = BIO_new_mem_buf(key, (int) klen);
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    OPENSSL_cleanse(key, klen);
    free(key);

    if (pkey == NULL) {
        snprintf(err, errlen, "key file \"%s\" is not a private key PEM "
                 "(%s needs the private key to sign)", file, names[alg]);
        return NULL;
    }

    if (alg == HOCTL_RS256) {
        if (!EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_get_bits(pkey) < 2048
            || EVP_PKEY_get_size(pkey) > 1024)
        {
            EVP_PKEY_free(pkey);
            snprintf(err, errlen, "key file \"%s\" is not an RSA key of "
                     "2048 to 8192 bits (rs256)", file);
            return NULL;
        }

    } else if (alg == HOCTL_ES256) {
        group[0] = '\0';
        if (!EVP_PKEY_is_a(pkey, "EC")
            || !EVP_PKEY_get_utf8_string_param(pkey, "group", group,
                                               sizeof(group), NULL)
            || (strcmp(group, "prime256v1") != 0
                && strcmp(group, "P-256") != 0))
        {
            EVP_PKEY_free(pkey);
            snprintf(err, errlen, "key file \"%s\" is not a P-256 key "
                     "(es256)", file);
            return NULL;
        }

    } else if (!EVP_PKEY_is_a(pkey, "ED25519")) {
        EVP_PKEY_free(pkey);
        snprintf(err, errlen, "key file \"%s\" is not an Ed25519 key (eddsa)",
                 file);
        return NULL;
    }

    return pkey;
}


/*
 * ES256: the JWS signature is the raw r || s, each 32 bytes big-endian
 * (RFC 7518 section 3.4), not the DER that OpenSSL produces.
 */
static int
hoctl_sign_pkey(const char *file, int alg, const char *input,
    unsigned char *sig, size_t *siglen, char *err, size_t errlen)
{
    int              rc, es256;
    size_t           derlen;
    EVP_PKEY        *pkey;
    ECDSA_SIG       *ecsig;
    EVP_MD_CTX      *md;
    const BIGNUM    *r, *s;
    unsigned char    der[160];
    const unsigned char  *p;

    es256 = (alg == HOCTL_ES256);

    pkey = hoctl_sign_key_load(file, alg, err, errlen);
    if (pkey == NULL) {
        return -1;
    }

    rc = -1;
    md = EVP_MD_CTX_new();
    derlen = sizeof(der);

    if (md == NULL
        || EVP_DigestSignInit(md, NULL,
                              alg == HOCTL_EDDSA ? NULL : EVP_sha256(),
                              NULL, pkey) != 1
        || EVP_DigestSign(md, es256 ? der : sig, es256 ? &derlen : siglen,
                          (const unsigned char *) input, strlen(input)) != 1)
    {
        snprintf(err, errlen, "signing with \"%s\" failed", file);
        goto done;
    }

    if (es256) {
        p = der;
        ecsig = d2i_ECDSA_SIG(NULL, &p, (long) derlen);
        if (ecsig == NULL) {
            snprintf(err, errlen, "bad ECDSA signature from OpenSSL");
            goto done;
        }

        ECDSA_SIG_get0(ecsig, &r, &s);
        BN_bn2binpad(r, sig, 32);
        BN_bn2binpad(s, sig + 32, 32);
        ECDSA_SIG_free(ecsig);
        *siglen = 64;
    }

    rc = 0;

done:

    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);

    return rc;
}


/*
 * A compact JWS (RFC 7515) over any JSON payload with the same keys as a
 * token: the fleet's signed records (etcd.h).
 */
char *
hoctl_jws_sign(const hoctl_conn_t *c, const char *typ, const char *payload,
    char *err, size_t errlen)
{
    int             alg;
    char           *hdr_json, *hdr, *pl;
    json_t         *h;
    static const char  *algs[] = { "HS256", "ES256", "EdDSA" };

    if (c->key == NULL) {
        snprintf(err, errlen, "a fleet record is signed: give --key FILE "
                 "(or HA_OPTOUT_KEY)");
        return NULL;
    }

    if (c->alg == NULL || strcasecmp(c->alg, "hs256") == 0) {
        alg = HOCTL_HS256;
    } else if (strcasecmp(c->alg, "es256") == 0) {
        alg = HOCTL_ES256;
    } else if (strcasecmp(c->alg, "eddsa") == 0
               || strcasecmp(c->alg, "ed25519") == 0)
    {
        alg = HOCTL_EDDSA;
    } else {
        snprintf(err, errlen, "a fleet record is signed with hs256, es256 "
                 "or eddsa, not \"%s\"", c->alg);
        return NULL;
    }

    h = json_object();
    json_object_set_new(h, "alg", json_string(algs[alg]));
    json_object_set_new(h, "typ", json_string(typ));
    if (c->kid != NULL) {
        json_object_set_new(h, "kid", json_string(c->kid));
    }

    hdr_json = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);

    if (hdr_json == NULL) {
        snprintf(err, errlen, "cannot encode the JWS header");
        return NULL;
    }

    hdr = hoctl_b64url((unsigned char *) hdr_json, strlen(hdr_json));
    pl = hoctl_b64url((const unsigned char *) payload, strlen(payload));
    free(hdr_json);

    return hoctl_jws_join(c->key, alg, hdr, pl, err, errlen);
}


/*
 * The compact serialization of a token and of a record alike: "H.P" (both
 * base64url, freed here) signed with the key, "H.P.S"; NULL on failure.
 */
static char *
hoctl_jws_join(const char *key, int alg, char *hdr, char *pl, char *err,
    size_t errlen)
{
    int             rc;
    char           *input, *sig64, *jws;
    size_t          len, siglen;
    unsigned char   sig[1024];

    len = strlen(hdr) + 1 + strlen(pl) + 1;
    input = malloc(len);
    snprintf(input, len, "%s.%s", hdr, pl);
    free(hdr);
    free(pl);

    siglen = sizeof(sig);

    if (alg == HOCTL_HS256) {
        rc = hoctl_sign_hs256(key, input, sig, &siglen, err, errlen);
    } else {
        rc = hoctl_sign_pkey(key, alg, input, sig, &siglen, err, errlen);
    }

    if (rc != 0) {
        free(input);
        return NULL;
    }

    sig64 = hoctl_b64url(sig, siglen);
    OPENSSL_cleanse(sig, sizeof(sig));

    len = strlen(input) + 1 + strlen(sig64) + 1;
    jws = malloc(len);
    snprintf(jws, len, "%s.%s", input, sig64);

    free(input);
    free(sig64);

    return jws;
}
