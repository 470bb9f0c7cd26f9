
/*
 * ha-optoutctl: the fleet's signed record (SPEC section 11): made, signed
 * (a compact JWS), verified against the trusted keys, and the ISO times it
 * carries.  The verbs that write records are fleet_etcd.c; the agent
 * that applies them is agent.c.
 *
 * A record is the JSON the agents apply, stored under
 * <prefix>/<env>/flags/<upstream> on a lease of the flag's TTL:
 *
 *   {"upstream": "app", "environment": "prod", "failover": false, ...,
 *    "ttl": "30s", "reason": "...", "actor": "alice", "set_at": "...",
 *    "expires_at": "...", "signature": "<compact JWS>"}
 *
 * The JWS payload is the record itself without "signature"; agents trust
 * only what the payload says, so editing the visible fields changes
 * nothing and a record without a valid signature is refused.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "etcd.h"


#define HOCTL_RECORD_TYP     "ha-optout-fleet+jws"


typedef struct {
    int             alg;        /* 0 HS256, 1 ES256, 2 EdDSA */
    EVP_PKEY       *pkey;
    unsigned char  *secret;
    size_t          len;
} hoctl_trust_key_t;


struct hoctl_trust_s {
    int                 n;
    char                unsafe[HOCTL_ERRLEN];   /* then nothing is trusted */
    hoctl_trust_key_t   key[HOCTL_ETCD_MAX_TRUST];
};


void
hoctl_iso_time(time_t t, char *buf, size_t size)
{
    struct tm  tm;

    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}


time_t
hoctl_parse_iso(const char *s)
{
    char       *end;
    struct tm   tm;

    if (s == NULL) {
        return 0;
    }

    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == NULL || (*end != 'Z' && *end != '\0')) {
        return 0;
    }

    return timegm(&tm);
}


/* base64url without padding, as in a JWS */
static unsigned char *
hoctl_unb64url(const char *in, size_t inlen, size_t *len)
{
    char           *s;
    size_t          i, l;
    unsigned char  *out;

    l = inlen;
    s = malloc(l + 4);

    for (i = 0; i < l; i++) {
        if (in[i] == '-') {
            s[i] = '+';
        } else if (in[i] == '_') {
            s[i] = '/';
        } else if (in[i] == '+' || in[i] == '/' || in[i] == '=') {
            free(s);
            return NULL;
        } else {
            s[i] = in[i];
        }
    }

    while (l % 4 != 0) {
        s[l++] = '=';
    }
    s[l] = '\0';

    out = hoctl_unb64(s, len);
    free(s);

    return out;
}


json_t *
hoctl_record_new(const hoctl_conn_t *c, const hoctl_flag_t *f,
    const char *environment, time_t set_at, long ttl)
{
    char     buf[32], ttls[32];
    json_t  *r;

    r = json_object();
    json_object_set_new(r, "upstream", json_string(f->upstream));
    json_object_set_new(r, "environment", json_string(environment));

    if (f->no_failover) {
        json_object_set_new(r, "failover", json_false());
    }
    if (f->pin != NULL) {
        json_object_set_new(r, "pin", json_string(f->pin));
    }
    if (f->pin_selector != NULL) {
        json_object_set_new(r, "pin_selector", json_string(f->pin_selector));
    }
    if (f->no_replication) {
        json_object_set_new(r, "replication", json_false());
    }
    if (f->sticky) {
        json_object_set_new(r, "sticky", json_true());
    }

    snprintf(ttls, sizeof(ttls), "%lds", ttl);
    json_object_set_new(r, "ttl", json_string(ttls));
    json_object_set_new(r, "reason", json_string(f->reason));
    json_object_set_new(r, "actor", json_string(c->sub ? c->sub : ""));

    hoctl_iso_time(set_at, buf, sizeof(buf));
    json_object_set_new(r, "set_at", json_string(buf));

    return r;
}


/* sets expires_at, signs, and answers the value to store */
char *
hoctl_record_sign(const hoctl_conn_t *c, json_t *record, char *err,
    size_t errlen)
{
    char    *payload, *jws, *value;
    json_t  *v;

    json_object_del(record, "signature");

    payload = json_dumps(record, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (payload == NULL) {
        snprintf(err, errlen, "cannot encode the record (is --reason "
                 "UTF-8?)");
        return NULL;
    }

    jws = hoctl_jws_sign(c, HOCTL_RECORD_TYP, payload, err, errlen);
    free(payload);

    if (jws == NULL) {
        return NULL;
    }

    v = json_deep_copy(record);
    json_object_set_new(v, "signature", json_string(jws));
    free(jws);

    value = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);

    return value;
}


/*
 * Who may change a --trust-key decides what the agent applies: the file
 * (a symlink is followed), the directory it is in and the directory of
 * the link must not be writable by anyone but root or this user, and an
 * hs256 secret must not be readable by others (it signs as well).
 */
static int
hoctl_trust_unsafe_dir(const char *path, char *why, size_t len)
{
    char         buf[PATH_MAX], *dir;
    struct stat  st;

    snprintf(buf, sizeof(buf), "%s", path);
    dir = dirname(buf);

    if (stat(dir, &st) == 0
        && (((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
            || (st.st_uid != 0 && st.st_uid != geteuid())))
    {
        snprintf(why, len, "its directory \"%.200s\" can be changed by other "
                 "users", dir);
        return 1;
    }

    return 0;
}


static int
hoctl_trust_unsafe(const char *file, FILE *f, int secret, char *why,
    size_t len)
{
    char         real[PATH_MAX];
    struct stat  st;

    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, len, "not a regular file");
        return 1;
    }

    if (st.st_mode & (S_IWGRP|S_IWOTH)) {
        snprintf(why, len, "it is writable by %s (chmod go-w)",
                 (st.st_mode & S_IWOTH) ? "everyone" : "its group");
        return 1;
    }

    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        snprintf(why, len, "it belongs to uid %u, neither root nor this "
                 "user", (unsigned) st.st_uid);
        return 1;
    }

    if (secret && (st.st_mode & S_IROTH)) {
        snprintf(why, len, "an hs256 secret readable by everyone signs "
                 "records too (chmod o-r)");
        return 1;
    }

    if (hoctl_trust_unsafe_dir(file, why, len)) {
        return 1;
    }

    return realpath(file, real) != NULL
           && hoctl_trust_unsafe_dir(real, why, len);
}


/* one --trust-key: a P-256 or Ed25519 key PEM, or an hs256 secret */
static int
hoctl_trust_key(hoctl_trust_key_t *k, const char *file, unsigned char *buf,
    size_t len, char *err, size_t errlen)
{
    BIO       *bio;
    EVP_PKEY  *pkey;

    bio = BIO_new_mem_buf(buf, (int) len);
    pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (pkey == NULL) {
        bio = BIO_new_mem_buf(buf, (int) len);
        pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }

    if (pkey != NULL) {
        if (EVP_PKEY_is_a(pkey, "EC")) {
            k->alg = 1;
        } else if (EVP_PKEY_is_a(pkey, "ED25519")) {
            k->alg = 2;
        } else {
            snprintf(err, errlen, "--trust-key \"%s\": only P-256 "
                     "(es256) and Ed25519 (eddsa) keys, or an hs256 "
                     "secret", file);
            EVP_PKEY_free(pkey);
            return HOCTL_USAGE;
        }
        k->pkey = pkey;

    } else {
        if (strstr((char *) buf, "-----BEGIN") != NULL) {
            snprintf(err, errlen, "--trust-key \"%s\": a PEM that "
                     "OpenSSL cannot read", file);
            return HOCTL_USAGE;
        }

        if (len > 0 && buf[len - 1] == '\n') {
            len--;
        }

        if (len < 32) {
            snprintf(err, errlen, "--trust-key \"%s\": an hs256 "
                     "secret needs 32 bytes or more", file);
            return HOCTL_USAGE;
        }

        k->alg = 0;
        k->secret = malloc(len);
        memcpy(k->secret, buf, len);
        k->len = len;
    }

    return HOCTL_OK;
}


/*
 * The keys of FILES; on an error none: the keys read so far are wiped and
 * freed (hoctl_trust_free), and so is the buffer each file is read into.
 */
hoctl_trust_t *
hoctl_trust_load(const char *const *files, int n, char *err, size_t errlen)
{
    int             i, rc;
    FILE           *f;
    size_t          len;
    hoctl_trust_t  *t;
    unsigned char   buf[65536];
    char            why[320];

    if (n > HOCTL_ETCD_MAX_TRUST) {
        snprintf(err, errlen, "at most %d --trust-key", HOCTL_ETCD_MAX_TRUST);
        return NULL;
    }

    t = calloc(1, sizeof(hoctl_trust_t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    for (i = 0; i < n; i++) {
        f = fopen(files[i], "rb");
        if (f == NULL) {
            snprintf(err, errlen, "cannot read --trust-key \"%s\": %s",
                     files[i], strerror(errno));
            hoctl_trust_free(t);
            return NULL;
        }

        len = fread(buf, 1, sizeof(buf) - 1, f);
        buf[len] = '\0';

        if (t->unsafe[0] == '\0'
            && hoctl_trust_unsafe(files[i], f,
                                  strstr((char *) buf, "-----BEGIN") == NULL,
                                  why, sizeof(why)))
        {
            snprintf(t->unsafe, sizeof(t->unsafe), "--trust-key \"%.150s\" is "
                     "not safe: %.250s; no record is trusted until it is fixed "
                     "and the agent reloaded (SIGHUP) or restarted", files[i],
                     why);
        }

        fclose(f);

        rc = hoctl_trust_key(&t->key[t->n], files[i], buf, len, err, errlen);
        OPENSSL_cleanse(buf, sizeof(buf));

        if (rc != HOCTL_OK) {
            hoctl_trust_free(t);
            return NULL;
        }

        t->n++;
    }

    return t;
}


const char *
hoctl_trust_unsafe_text(const hoctl_trust_t *t)
{
    return t->unsafe[0] ? t->unsafe : NULL;
}


void
hoctl_trust_free(hoctl_trust_t *t)
{
    int  i;

    if (t == NULL) {
        return;
    }

    for (i = 0; i < t->n; i++) {
        EVP_PKEY_free(t->key[i].pkey);

        if (t->key[i].secret != NULL) {
            OPENSSL_cleanse(t->key[i].secret, t->key[i].len);
            free(t->key[i].secret);
        }
    }

    free(t);
}


static int
hoctl_verify_one(const hoctl_trust_t *t, int i, const char *input,
    size_t inlen, const unsigned char *sig, size_t siglen)
{
    int              ok;
    size_t           maclen;
    BIGNUM          *r, *s;
    ECDSA_SIG       *ec;
    EVP_MD_CTX      *md;
    unsigned char    mac[EVP_MAX_MD_SIZE], *der, *p;
    int              derlen;

    if (t->key[i].alg == 0) {
        if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, t->key[i].secret,
                      t->key[i].len, (const unsigned char *) input, inlen,
                      mac, sizeof(mac), &maclen)
            == NULL)
        {
            return 0;
        }

        return siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
    }

    der = NULL;
    derlen = 0;

    if (t->key[i].alg == 1) {
        if (siglen != 64) {
            return 0;
        }

        ec = ECDSA_SIG_new();
        r = BN_bin2bn(sig, 32, NULL);
        s = BN_bin2bn(sig + 32, 32, NULL);
        ECDSA_SIG_set0(ec, r, s);
        derlen = i2d_ECDSA_SIG(ec, NULL);
        der = malloc(derlen > 0 ? derlen : 1);
        p = der;
        derlen = i2d_ECDSA_SIG(ec, &p);
        ECDSA_SIG_free(ec);
    }

    md = EVP_MD_CTX_new();
    ok = md != NULL
         && EVP_DigestVerifyInit(md, NULL,
                                 t->key[i].alg == 1 ? EVP_sha256() : NULL,
                                 NULL, t->key[i].pkey) == 1
         && EVP_DigestVerify(md, der ? der : sig,
                             der ? (size_t) derlen : siglen,
                             (const unsigned char *) input, inlen) == 1;

    EVP_MD_CTX_free(md);
    free(der);

    return ok;
}


/* the record without verifying: for people reading status */
json_t *
hoctl_record_peek(const char *value)
{
    json_t  *v;

    v = json_loads(value, 0, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return NULL;
    }

    return v;
}


/* the record's compact JWS "signature": *v the record, *d1 and *d2 its
 * dots; NULL and why when it has none */
static const char *
hoctl_record_jws(const char *value, json_t **v, const char **d1,
    const char **d2, char *err, size_t errlen)
{
    const char  *jws;

    *v = json_loads(value, 0, NULL);
    if (!json_is_object(*v)) {
        json_decref(*v);
        snprintf(err, errlen, "the record is not a JSON object");
        return NULL;
    }

    jws = json_string_value(json_object_get(*v, "signature"));
    if (jws == NULL) {
        json_decref(*v);
        snprintf(err, errlen, "the record is not signed");
        return NULL;
    }

    *d1 = strchr(jws, '.');
    *d2 = *d1 ? strchr(*d1 + 1, '.') : NULL;
    if (*d1 == NULL || *d2 == NULL || strchr(*d2 + 1, '.') != NULL) {
        json_decref(*v);
        snprintf(err, errlen, "the signature is not a compact JWS");
        return NULL;
    }

    return jws;
}


/* a record's JWS "alg" as a key's alg: -1 not accepted */
static int
hoctl_record_alg(const char *a)
{
    int  alg;

    alg = -1;
    if (a != NULL && strcmp(a, "HS256") == 0) {
        alg = 0;
    } else if (a != NULL && strcmp(a, "ES256") == 0) {
        alg = 1;
    } else if (a != NULL && strcmp(a, "EdDSA") == 0) {
        alg = 2;
    }

    return alg;
}


/* the signature verifies against one of the trusted keys of its alg */
static int
hoctl_record_trusted(const hoctl_trust_t *t, int alg, const char *input,
    size_t inlen, const unsigned char *sig, size_t siglen)
{
    int  i;

    for (i = 0; i < t->n; i++) {
        if (t->key[i].alg == alg
            && hoctl_verify_one(t, i, input, inlen, sig, siglen))
        {
            break;
        }
    }

    return i != t->n;
}


/*
 * Answers the signed payload when the signature verifies against one of
 * the trusted keys, else NULL and why.
 */
json_t *
hoctl_record_verify(const char *value, const hoctl_trust_t *t, char *err,
    size_t errlen)
{
    int             alg;
    char           *hdr_json, *pl_json;
    size_t          hlen, plen, siglen;
    json_t         *v, *h, *pl;
    const char     *jws, *d1, *d2, *a, *typ;
    unsigned char  *sig;

    if (t->unsafe[0] != '\0') {
        snprintf(err, errlen, "%s", t->unsafe);
        return NULL;
    }

    jws = hoctl_record_jws(value, &v, &d1, &d2, err, errlen);
    if (jws == NULL) {
        return NULL;
    }

    hdr_json = (char *) hoctl_unb64url(jws, d1 - jws, &hlen);
    pl_json = (char *) hoctl_unb64url(d1 + 1, d2 - d1 - 1, &plen);
    sig = hoctl_unb64url(d2 + 1, strlen(d2 + 1), &siglen);

    h = hdr_json ? json_loads(hdr_json, 0, NULL) : NULL;
    pl = pl_json ? json_loads(pl_json, 0, NULL) : NULL;
    a = json_string_value(json_object_get(h, "alg"));
    typ = json_string_value(json_object_get(h, "typ"));

    alg = hoctl_record_alg(a);

    err[0] = '\0';

    if (sig == NULL || !json_is_object(h) || !json_is_object(pl)) {
        snprintf(err, errlen, "the signature does not decode");

    } else if (alg < 0) {
        snprintf(err, errlen, "signature algorithm \"%s\" is not accepted",
                 a ? a : "(none)");

    } else if (typ == NULL || strcmp(typ, HOCTL_RECORD_TYP) != 0) {
        snprintf(err, errlen, "the signature is not over a fleet record "
                 "(typ \"%s\")", typ ? typ : "");

    } else {
        if (!hoctl_record_trusted(t, alg, jws, d2 - jws, sig, siglen)) {
            snprintf(err, errlen, "the signature does not verify against "
                     "any --trust-key");
        }
    }

    free(hdr_json);
    free(pl_json);
    free(sig);
    json_decref(h);
    json_decref(v);

    if (err[0] != '\0') {
        json_decref(pl);
        return NULL;
    }

    return pl;
}
