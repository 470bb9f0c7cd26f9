
/*
 * ha-optoutctl set|clear|status|run --etcd: the writer side of the fleet
 * (SPEC section 11), the signed record, and "fleet status --etcd".
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
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "etcd.h"


#define HOCTL_RECORD_TYP     "ha-optout-fleet+jws"
#define HOCTL_AGENT_SILENT   10        /* seconds without a report */


struct hoctl_trust_s {
    int             n;
    char            unsafe[HOCTL_ERRLEN];   /* then nothing is trusted */
    struct {
        int             alg;        /* 0 HS256, 1 ES256, 2 EdDSA */
        EVP_PKEY       *pkey;
        unsigned char  *secret;
        size_t          len;
    } key[HOCTL_ETCD_MAX_TRUST];
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


hoctl_trust_t *
hoctl_trust_load(const char *const *files, int n, char *err, size_t errlen)
{
    int             i;
    BIO            *bio;
    FILE           *f;
    size_t          len;
    EVP_PKEY       *pkey;
    hoctl_trust_t  *t;
    unsigned char   buf[65536];
    char            why[320];

    t = calloc(1, sizeof(hoctl_trust_t));

    for (i = 0; i < n; i++) {
        f = fopen(files[i], "rb");
        if (f == NULL) {
            snprintf(err, errlen, "cannot read --trust-key \"%s\": %s",
                     files[i], strerror(errno));
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
                     "and the agent restarted", files[i], why);
        }

        fclose(f);

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
                t->key[t->n].alg = 1;
            } else if (EVP_PKEY_is_a(pkey, "ED25519")) {
                t->key[t->n].alg = 2;
            } else {
                snprintf(err, errlen, "--trust-key \"%s\": only P-256 "
                         "(es256) and Ed25519 (eddsa) keys, or an hs256 "
                         "secret", files[i]);
                EVP_PKEY_free(pkey);
                return NULL;
            }
            t->key[t->n].pkey = pkey;

        } else {
            if (strstr((char *) buf, "-----BEGIN") != NULL) {
                snprintf(err, errlen, "--trust-key \"%s\": a PEM that "
                         "OpenSSL cannot read", files[i]);
                return NULL;
            }

            if (len > 0 && buf[len - 1] == '\n') {
                len--;
            }

            if (len < 32) {
                snprintf(err, errlen, "--trust-key \"%s\": an hs256 "
                         "secret needs 32 bytes or more", files[i]);
                return NULL;
            }

            t->key[t->n].alg = 0;
            t->key[t->n].secret = malloc(len);
            memcpy(t->key[t->n].secret, buf, len);
            t->key[t->n].len = len;
        }

        OPENSSL_cleanse(buf, sizeof(buf));
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


/*
 * Answers the signed payload when the signature verifies against one of
 * the trusted keys, else NULL and why.
 */
json_t *
hoctl_record_verify(const char *value, const hoctl_trust_t *t, char *err,
    size_t errlen)
{
    int             i, alg;
    char           *hdr_json, *pl_json;
    size_t          hlen, plen, siglen;
    json_t         *v, *h, *pl;
    const char     *jws, *d1, *d2, *a, *typ;
    unsigned char  *sig;

    if (t->unsafe[0] != '\0') {
        snprintf(err, errlen, "%s", t->unsafe);
        return NULL;
    }

    v = json_loads(value, 0, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        snprintf(err, errlen, "the record is not a JSON object");
        return NULL;
    }

    jws = json_string_value(json_object_get(v, "signature"));
    if (jws == NULL) {
        json_decref(v);
        snprintf(err, errlen, "the record is not signed");
        return NULL;
    }

    d1 = strchr(jws, '.');
    d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (d1 == NULL || d2 == NULL || strchr(d2 + 1, '.') != NULL) {
        json_decref(v);
        snprintf(err, errlen, "the signature is not a compact JWS");
        return NULL;
    }

    hdr_json = (char *) hoctl_unb64url(jws, d1 - jws, &hlen);
    pl_json = (char *) hoctl_unb64url(d1 + 1, d2 - d1 - 1, &plen);
    sig = hoctl_unb64url(d2 + 1, strlen(d2 + 1), &siglen);

    h = hdr_json ? json_loads(hdr_json, 0, NULL) : NULL;
    pl = pl_json ? json_loads(pl_json, 0, NULL) : NULL;
    a = json_string_value(json_object_get(h, "alg"));
    typ = json_string_value(json_object_get(h, "typ"));

    alg = -1;
    if (a != NULL && strcmp(a, "HS256") == 0) {
        alg = 0;
    } else if (a != NULL && strcmp(a, "ES256") == 0) {
        alg = 1;
    } else if (a != NULL && strcmp(a, "EdDSA") == 0) {
        alg = 2;
    }

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
        for (i = 0; i < t->n; i++) {
            if (t->key[i].alg == alg
                && hoctl_verify_one(t, i, jws, d2 - jws, sig, siglen))
            {
                break;
            }
        }

        if (i == t->n) {
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


static char *
hoctl_flag_key(hoctl_etcd_t *e, const char *upstream)
{
    char    *k;
    size_t   len;

    len = strlen(e->prefix) + sizeof("flags/") + strlen(upstream);
    k = malloc(len);
    snprintf(k, len, "%sflags/%s", e->prefix, upstream);

    return k;
}


static void
hoctl_kv_b64(json_t *obj, const char *name, const char *s)
{
    char  *b;

    b = hoctl_b64(s, strlen(s));
    json_object_set_new(obj, name, json_string(b));
    free(b);
}


/*
 * One txn on key: compare (if_match: NULL none, "0" absent, N its
 * mod_revision), then put value on lease, or delete (value NULL).
 * Answers OK with *revision, REFUSED when the compare failed (and *current
 * is the key's mod_revision now), or the failure.
 */
static int
hoctl_etcd_write(hoctl_etcd_t *e, const char *key, const char *if_match,
    const char *value, int64_t lease, int64_t *revision, int64_t *current,
    int64_t *deleted, int64_t *deleted_lease, char *err, size_t errlen)
{
    int       rc;
    char     *end;
    json_t   *req, *cmp, *op, *resp, *r, *kvs;
    int64_t   want;

    req = json_object();
    cmp = json_array();

    if (if_match != NULL) {
        want = strtoll(if_match, &end, 10);
        if (*end != '\0' || want < 0) {
            json_decref(req);
            json_decref(cmp);
            snprintf(err, errlen, "--if-match takes a revision (0: only "
                     "if there is no record)");
            return HOCTL_USAGE;
        }

        op = json_object();
        hoctl_kv_b64(op, "key", key);
        json_object_set_new(op, "result", json_string("EQUAL"));

        if (want == 0) {
            json_object_set_new(op, "target", json_string("CREATE"));
            json_object_set_new(op, "create_revision", json_string("0"));
        } else {
            json_object_set_new(op, "target", json_string("MOD"));
            json_object_set_new(op, "mod_revision", hoctl_json_str_int(want));
        }

        json_array_append_new(cmp, op);
    }

    json_object_set_new(req, "compare", cmp);

    op = json_object();
    hoctl_kv_b64(op, "key", key);

    if (value != NULL) {
        hoctl_kv_b64(op, "value", value);
        if (lease != 0) {
            json_object_set_new(op, "lease", hoctl_json_str_int(lease));
        }
        json_object_set_new(op, "prev_kv", json_true());
        json_object_set_new(req, "success",
                            json_pack("[{s:o}]", "request_put", op));

    } else {
        /* the deleted record's lease, to end it too (no copy on it) */
        json_object_set_new(op, "prev_kv", json_true());
        json_object_set_new(req, "success",
                            json_pack("[{s:o}]", "request_delete_range", op));
    }

    op = json_object();
    hoctl_kv_b64(op, "key", key);
    json_object_set_new(req, "failure",
                        json_pack("[{s:o}]", "request_range", op));

    rc = hoctl_etcd_call(e, "/v3/kv/txn", req, &resp, err, errlen);
    if (rc != HOCTL_OK) {
        return rc;
    }

    *revision = hoctl_json_int(json_object_get(json_object_get(resp,
                                                   "header"), "revision"));
    r = json_array_get(json_object_get(resp, "responses"), 0);

    if (!json_is_true(json_object_get(resp, "succeeded"))) {
        kvs = json_object_get(json_object_get(r, "response_range"), "kvs");
        *current = hoctl_json_int(json_object_get(json_array_get(kvs, 0),
                                                  "mod_revision"));
        json_decref(resp);
        if (*current) {
            snprintf(err, errlen, "412 PreconditionFailed: the fleet record "
                     "is at revision %" PRId64 ", not %s", *current,
                     if_match);
        } else {
            snprintf(err, errlen, "412 PreconditionFailed: there is no "
                     "fleet record (revision %s was asked for)", if_match);
        }
        return HOCTL_REFUSED;
    }

    if (deleted != NULL) {
        *deleted = hoctl_json_int(json_object_get(
                       json_object_get(r, "response_delete_range"),
                       "deleted"));
    }

    /* the lease of the record deleted or replaced */
    if (deleted_lease != NULL) {
        *deleted_lease = value != NULL
            ? hoctl_json_int(json_object_get(json_object_get(
                  json_object_get(r, "response_put"), "prev_kv"), "lease"))
            : hoctl_json_int(json_object_get(json_array_get(
                  json_object_get(json_object_get(r,
                      "response_delete_range"), "prev_kvs"), 0), "lease"));
    }

    json_decref(resp);
    return HOCTL_OK;
}


static int
hoctl_etcd_fail(int rc, const char *err)
{
    if (rc == HOCTL_USAGE) {
        hoctl_warn("%s", err);
    } else {
        fprintf(stderr, "error: %s\n", err);
    }

    return rc;
}


static long
hoctl_fleet_ttl(const hoctl_flag_t *f, char *err, size_t errlen)
{
    long  ttl;

    ttl = hoctl_parse_duration(f->ttl);
    if (ttl <= 0) {
        snprintf(err, errlen, "a fleet flag lives on an etcd lease: "
                 "--ttl must be Ns, Nm or Nh (not none)");
        return -1;
    }

    return ttl;
}


/*
 * Grants a lease of the TTL, signs the record and writes it: the start of
 * set and run.  On failure the lease is revoked again.
 */
static int
hoctl_etcd_put_record(hoctl_etcd_t *e, const hoctl_conn_t *c,
    const hoctl_etcd_opts_t *o, const hoctl_flag_t *f, long ttl,
    int64_t *lease, int64_t *revision, json_t **record, char *err,
    size_t errlen)
{
    int       rc;
    char     *key, *value, buf[32], e2[HOCTL_ERRLEN];
    time_t    now;
    int64_t   current, old;

    now = time(NULL);
    *record = hoctl_record_new(c, f, o->environment, now, ttl);
    hoctl_iso_time(now + ttl, buf, sizeof(buf));
    json_object_set_new(*record, "expires_at", json_string(buf));

    /* a key that cannot sign is a usage error, before etcd is asked */
    value = hoctl_record_sign(c, *record, err, errlen);
    if (value == NULL) {
        json_decref(*record);
        *record = NULL;
        return HOCTL_USAGE;
    }

    free(value);

    rc = hoctl_etcd_lease_grant(e, ttl, lease, err, errlen);
    if (rc != HOCTL_OK) {
        json_decref(*record);
        *record = NULL;
        return rc;
    }

    /*
     * the lease is signed too: agents apply the record only on that lease,
     * so a copy put back into etcd after its writer's lease is gone (or on
     * a lease of its own) is refused
     */
    json_object_set_new(*record, "lease", hoctl_json_str_int(*lease));

    value = hoctl_record_sign(c, *record, err, errlen);
    if (value == NULL) {
        hoctl_etcd_lease_revoke(e, *lease, e2, sizeof(e2));
        json_decref(*record);
        *record = NULL;
        return HOCTL_USAGE;
    }

    key = hoctl_flag_key(e, f->upstream);
    old = 0;
    rc = hoctl_etcd_write(e, key, f->if_match, value, *lease, revision,
                          &current, NULL, &old, err, errlen);
    free(key);
    free(value);

    /* the record replaced: its lease ends, so no copy lives on it */
    if (rc == HOCTL_OK && old != 0 && old != *lease) {
        hoctl_etcd_lease_revoke(e, old, e2, sizeof(e2));
    }

    if (rc != HOCTL_OK) {
        hoctl_etcd_lease_revoke(e, *lease, e2, sizeof(e2));
        json_decref(*record);
        *record = NULL;
    }

    return rc;
}


int
hoctl_etcd_set(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, int json)
{
    int            rc;
    long           ttl;
    char          *what, *s, err[HOCTL_ERRLEN];
    json_t        *record;
    int64_t        lease, revision;
    hoctl_etcd_t   e;

    ttl = hoctl_fleet_ttl(f, err, sizeof(err));
    if (ttl < 0) {
        return hoctl_etcd_fail(HOCTL_USAGE, err);
    }

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    if (f->dry_run) {
        record = hoctl_record_new(c, f, o->environment, time(NULL), ttl);
        s = hoctl_record_sign(c, record, err, sizeof(err));
        json_decref(record);
        hoctl_etcd_free(&e);

        if (s == NULL) {
            return hoctl_etcd_fail(HOCTL_USAGE, err);
        }

        printf("%s\n", s);
        free(s);
        return HOCTL_OK;
    }

    rc = hoctl_etcd_put_record(&e, c, o, f, ttl, &lease, &revision, &record,
                               err, sizeof(err));
    hoctl_etcd_free(&e);

    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    if (json) {
        json_object_set_new(record, "revision", json_integer(revision));
        json_object_set_new(record, "lease", hoctl_json_str_int(lease));
        s = json_dumps(record, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);

    } else {
        what = hoctl_flag_summary(record);
        printf("%s: HA suspended on the fleet %s: %s until %s "
               "(revision %" PRId64 ")\n", f->upstream, o->environment, what,
               json_string_value(json_object_get(record, "expires_at")),
               revision);
        free(what);
    }

    json_decref(record);
    return HOCTL_OK;
}


int
hoctl_etcd_clear(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, int json)
{
    int            rc;
    char          *key, err[HOCTL_ERRLEN], e2[HOCTL_ERRLEN];
    int64_t        revision, current, deleted, lease;
    hoctl_etcd_t   e;

    (void) c;

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    key = hoctl_flag_key(&e, f->upstream);
    deleted = 0;
    lease = 0;
    rc = hoctl_etcd_write(&e, key, f->if_match, NULL, 0, &revision, &current,
                          &deleted, &lease, err, sizeof(err));
    free(key);

    /*
     * the record's lease goes too: while it lives, a copy of the record
     * put back on it would still be on "the lease its writer signed"
     */
    if (rc == HOCTL_OK && lease != 0
        && hoctl_etcd_lease_revoke(&e, lease, e2, sizeof(e2)) != HOCTL_OK)
    {
        hoctl_warn("%s: the record is deleted, but its lease could not be "
                   "revoked (%s): it ends by itself", f->upstream, e2);
    }

    hoctl_etcd_free(&e);

    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    if (json) {
        printf("{\"upstream\":\"%s\",\"environment\":\"%s\","
               "\"deleted\":%" PRId64 ",\"revision\":%" PRId64 "}\n",
               f->upstream, o->environment, deleted, revision);

    } else {
        printf("%s: HA restored on the fleet %s%s (revision %" PRId64 ")\n",
               f->upstream, o->environment,
               deleted ? "" : " (there was no fleet flag)", revision);
    }

    return HOCTL_OK;
}


/* {upstream: record + revision, lease} of every flag; NULL on failure */
static json_t *
hoctl_etcd_flags(hoctl_etcd_t *e, int64_t *revision, int *rc, char *err,
    size_t errlen)
{
    char     *key, *k, *v;
    size_t    i, plen, len;
    json_t   *kvs, *kv, *flags, *rec;

    key = hoctl_flag_key(e, "");
    plen = strlen(key);

    *rc = hoctl_etcd_range(e, key, 1, &kvs, revision, err, errlen);
    free(key);

    if (*rc != HOCTL_OK) {
        return NULL;
    }

    flags = json_object();

    json_array_foreach(kvs, i, kv) {
        k = hoctl_kv_key(kv);
        v = hoctl_kv_value(kv, &len);

        rec = v ? hoctl_record_peek(v) : NULL;
        if (rec == NULL) {
            rec = json_pack("{s:s}", "error", "not a JSON record");
        }

        json_object_set_new(rec, "revision", json_integer(
                                hoctl_json_int(json_object_get(kv,
                                                   "mod_revision"))));
        json_object_del(rec, "signature");

        if (k != NULL && strlen(k) > plen) {
            json_object_set_new(flags, k + plen, rec);
        } else {
            json_decref(rec);
        }

        free(k);
        free(v);
    }

    json_decref(kvs);
    return flags;
}


static void
hoctl_etcd_flags_table(json_t *flags)
{
    int          w;
    char        *what, *left;
    time_t       now;
    json_t      *rec;
    const char  *name, *actor, *reason;

    w = (int) sizeof("UPSTREAM") - 1;
    json_object_foreach(flags, name, rec) {
        if ((int) strlen(name) > w) {
            w = (int) strlen(name);
        }
    }

    now = time(NULL);

    printf("%-*s  %-8s  %-32s  %-12s  %-9s  %s\n", w, "UPSTREAM",
           "REVISION", "SUSPENDED", "ACTOR", "LEFT", "REASON");

    json_object_foreach(flags, name, rec) {
        what = hoctl_flag_summary(rec);
        left = hoctl_time_left(rec, now);
        actor = json_string_value(json_object_get(rec, "actor"));
        reason = json_string_value(json_object_get(rec, "reason"));

        /* what etcd holds, signed or not: no control byte reaches the tty */
        printf("%-*s  %-8" PRId64 "  %-32s  %-12s  %-9s  %s\n", w,
               hoctl_safe(name),
               hoctl_json_int(json_object_get(rec, "revision")),
               hoctl_safe(what ? what : "-"),
               hoctl_safe(actor ? actor : "-"), left,
               hoctl_safe(reason ? reason : "-"));

        free(what);
        free(left);
    }
}


int
hoctl_etcd_status(const hoctl_etcd_opts_t *o, const char *upstream,
    int json)
{
    int            rc;
    char          *s, err[HOCTL_ERRLEN];
    json_t        *flags, *one, *out;
    int64_t        revision;
    hoctl_etcd_t   e;

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    flags = hoctl_etcd_flags(&e, &revision, &rc, err, sizeof(err));
    hoctl_etcd_free(&e);

    if (flags == NULL) {
        return hoctl_etcd_fail(rc, err);
    }

    if (upstream != NULL) {
        one = json_object();
        json_object_set(one, upstream,
                        json_object_get(flags, upstream)
                        ? json_object_get(flags, upstream) : json_null());
        json_decref(flags);
        flags = one;
    }

    if (json) {
        out = json_pack("{s:s, s:I, s:o}", "environment", o->environment,
                        "revision", (json_int_t) revision, "flags", flags);
        s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(out);
        return HOCTL_OK;
    }

    printf("fleet %s at etcd revision %" PRId64 "\n", o->environment,
           revision);
    hoctl_etcd_flags_table(flags);
    json_decref(flags);

    return HOCTL_OK;
}


/*
 * fleet status: every flag, and per agent whether it applied (converged),
 * not yet (pending) or refused each one; agents whose report is old or
 * gone (their member key outlives the report's lease) are silent.
 */
int
hoctl_etcd_fleet_status(const hoctl_etcd_opts_t *o, const char *upstream,
    int json)
{
    int            rc, all, silent, reachable;
    char          *key, *k, *v, *s, err[HOCTL_ERRLEN], when[64];
    char          *members;
    size_t         i, plen, len;
    time_t         now, seen;
    json_t        *flags, *kvs, *kv, *agents, *rep, *a, *st, *mine, *rec;
    json_t        *out, *ups, *one, *msgs;
    int            missing;
    int64_t        revision, frev;
    const char    *host, *up, *res, *name;
    hoctl_etcd_t   e;

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    flags = hoctl_etcd_flags(&e, &revision, &rc, err, sizeof(err));
    if (flags == NULL) {
        hoctl_etcd_free(&e);
        return hoctl_etcd_fail(rc, err);
    }

    /* --upstream: that flag only, and it must be there */
    missing = 0;

    if (upstream != NULL) {
        rec = json_object_get(flags, upstream);
        one = json_object();

        if (rec != NULL) {
            json_object_set(one, upstream, rec);
        } else {
            missing = 1;
        }

        json_decref(flags);
        flags = one;
    }

    agents = json_object();
    now = time(NULL);

    /* the members: every agent that ever reported, without a lease */
    len = strlen(e.prefix) + sizeof("members/");
    key = malloc(len);
    snprintf(key, len, "%smembers/", e.prefix);
    plen = strlen(key);
    rc = hoctl_etcd_range(&e, key, 1, &kvs, NULL, err, sizeof(err));
    members = key;              /* for the hint on silent agents */

    if (rc == HOCTL_OK) {
        json_array_foreach(kvs, i, kv) {
            k = hoctl_kv_key(kv);
            if (k != NULL && strlen(k) > plen) {
                json_object_set_new(agents, k + plen, json_pack(
                    "{s:b, s:n, s:n, s:o}", "silent", 1, "seen_at",
                    "nginx_reachable", "upstreams", json_object()));
            }
            free(k);
        }
        json_decref(kvs);
    }

    len = strlen(e.prefix) + sizeof("agents/");
    key = malloc(len);
    snprintf(key, len, "%sagents/", e.prefix);
    plen = strlen(key);
    if (rc == HOCTL_OK) {
        rc = hoctl_etcd_range(&e, key, 1, &kvs, NULL, err, sizeof(err));
    }
    free(key);
    hoctl_etcd_free(&e);

    if (rc != HOCTL_OK) {
        free(members);
        json_decref(flags);
        json_decref(agents);
        return hoctl_etcd_fail(rc, err);
    }

    json_array_foreach(kvs, i, kv) {
        k = hoctl_kv_key(kv);
        v = hoctl_kv_value(kv, &len);
        rep = v ? json_loads(v, 0, NULL) : NULL;

        if (k != NULL && strlen(k) > plen && json_is_object(rep)) {
            seen = hoctl_parse_iso(json_string_value(
                                       json_object_get(rep, "seen_at")));
            a = json_object();
            json_object_set_new(a, "silent",
                                json_boolean(now - seen
                                             > HOCTL_AGENT_SILENT));
            json_object_set(a, "seen_at", json_object_get(rep, "seen_at"));
            json_object_set(a, "nginx_reachable",
                            json_object_get(rep, "nginx_reachable"));
            json_object_set(a, "applied_revision",
                            json_object_get(rep, "applied_revision"));
            json_object_set_new(a, "upstreams", json_object());
            json_object_set(a, "report", rep);
            json_object_set_new(agents, k + plen, a);
        }

        json_decref(rep);
        free(k);
        free(v);
    }

    json_decref(kvs);

    /* per agent, per flag (and per upstream it still holds) */
    all = !missing && json_object_size(agents) > 0;

    json_object_foreach(agents, host, a) {
        silent = json_is_true(json_object_get(a, "silent"));
        reachable = !json_is_false(json_object_get(a, "nginx_reachable"));
        rep = json_object_get(a, "report");
        mine = json_object_get(rep, "upstreams");
        ups = json_object_get(a, "upstreams");
        msgs = json_object();
        json_object_set_new(a, "messages", msgs);

        if (silent) {
            all = 0;
        }

        json_object_foreach(flags, up, rec) {
            frev = hoctl_json_int(json_object_get(rec, "revision"));
            st = json_object_get(mine, up);
            res = json_string_value(json_object_get(st, "result"));

            if (!silent && res != NULL && reachable
                && hoctl_json_int(json_object_get(st, "revision")) == frev)
            {
                if (strcmp(res, "applied") == 0) {
                    json_object_set_new(ups, up, json_string("converged"));
                    continue;
                }

                if (strcmp(res, "refused") == 0) {
                    json_object_set_new(ups, up, json_string("refused"));
                    if (json_is_string(json_object_get(st, "message"))) {
                        json_object_set(msgs, up,
                                        json_object_get(st, "message"));
                    }
                    all = 0;
                    continue;
                }
            }

            json_object_set_new(ups, up, json_string("pending"));
            all = 0;
        }

        /* a flag cleared in etcd that this agent still holds */
        json_object_foreach(mine, up, st) {
            res = json_string_value(json_object_get(st, "result"));
            if (upstream != NULL && strcmp(up, upstream) != 0) {
                continue;
            }
            if (json_object_get(flags, up) == NULL && res != NULL
                && strcmp(res, "applied") == 0)
            {
                json_object_set_new(ups, up, json_string("pending"));
                all = 0;
            }
        }

        json_object_del(a, "report");
    }

    if (json) {
        out = json_pack("{s:s, s:I, s:b, s:o, s:o}", "environment",
                        o->environment, "revision", (json_int_t) revision,
                        "converged", all, "flags", flags, "agents", agents);
        s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(out);
        free(members);
        return all ? HOCTL_OK : HOCTL_REFUSED;
    }

    printf("fleet %s at etcd revision %" PRId64 ": %s%s%s%s%s\n",
           o->environment, revision, all ? "converged" : "NOT converged",
           json_object_size(agents) ? "" : " (no agent reports)",
           missing ? " (no fleet flag on " : "", missing ? upstream : "",
           missing ? ")" : "");
    hoctl_etcd_flags_table(flags);
    printf("\n%-24s  %-6s  %-6s  %-20s  %s\n", "AGENT", "STATE", "NGINX",
           "SEEN", "FLAGS");

    json_object_foreach(agents, host, a) {
        s = NULL;
        name = json_string_value(json_object_get(a, "seen_at"));
        snprintf(when, sizeof(when), "%s", name ? name : "-");

        printf("%-24s  %-6s  %-6s  %-20s ", hoctl_safe(host),
               json_is_true(json_object_get(a, "silent")) ? "SILENT" : "up",
               json_is_false(json_object_get(a, "nginx_reachable"))
               ? "DOWN" : json_is_true(json_object_get(a, "nginx_reachable"))
               ? "ok" : "-", hoctl_safe(when));

        ups = json_object_get(a, "upstreams");
        if (json_object_size(ups) == 0) {
            printf(" -");
        }
        json_object_foreach(ups, up, st) {
            printf(" %s=%s", hoctl_safe(up),
                   hoctl_safe(json_string_value(st) ? json_string_value(st)
                                                    : "?"));
        }
        printf("\n");
    }

    /* why: what the agents said, and what to do about a silent one */
    json_object_foreach(agents, host, a) {
        json_object_foreach(json_object_get(a, "messages"), up, st) {
            printf("%s: %s refused: %s\n", hoctl_safe(host), hoctl_safe(up),
                   hoctl_safe(json_string_value(st) ? json_string_value(st)
                                                    : "?"));
        }

        if (json_is_true(json_object_get(a, "silent"))) {
            printf("%s: silent (no report for %ds): is its agent running and"
                   " reaching etcd? a host that left the fleet: etcdctl del"
                   " %s%s\n", hoctl_safe(host), HOCTL_AGENT_SILENT,
                   members, hoctl_safe(host));
        }
    }

    free(members);
    json_decref(flags);
    json_decref(agents);

    return all ? HOCTL_OK : HOCTL_REFUSED;
}


/* ---------------------------------------------------------------- run */

static const int  hoctl_erun_forwarded[] = { SIGINT, SIGTERM, SIGHUP,
                                              SIGQUIT };


static void
hoctl_erun_sigchld(int signo)
{
    (void) signo;
}


static long long
hoctl_erun_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/*
 * A heartbeat: keep the lease, then re-sign the record with a fresh
 * expires_at, unless another writer replaced it meanwhile.
 */
static int
hoctl_erun_heartbeat(hoctl_etcd_t *e, const hoctl_conn_t *c,
    const hoctl_flag_t *f, json_t *record, long ttl, int64_t lease,
    int64_t *revision, int *lost)
{
    int       rc;
    long      left;
    char     *key, *value, buf[32], rev[32], err[HOCTL_ERRLEN];
    int64_t   nrev, current;

    rc = hoctl_etcd_lease_keepalive(e, lease, &left, err, sizeof(err));
    if (rc != HOCTL_OK) {
        hoctl_warn("%s: cannot renew the lease: %s", f->upstream, err);
        return rc;
    }

    if (left <= 0) {
        hoctl_warn("%s: the lease has expired: HA is back on the fleet",
                   f->upstream);
        *lost = 1;
        return HOCTL_REFUSED;
    }

    hoctl_iso_time(time(NULL) + ttl, buf, sizeof(buf));
    json_object_set_new(record, "expires_at", json_string(buf));

    value = hoctl_record_sign(c, record, err, sizeof(err));
    if (value == NULL) {
        hoctl_warn("%s: %s", f->upstream, err);
        return HOCTL_USAGE;
    }

    snprintf(rev, sizeof(rev), "%" PRId64, *revision);
    key = hoctl_flag_key(e, f->upstream);
    rc = hoctl_etcd_write(e, key, rev, value, lease, &nrev, &current, NULL,
                          NULL, err, sizeof(err));
    free(key);
    free(value);

    if (rc == HOCTL_OK) {
        *revision = nrev;

    } else if (rc == HOCTL_REFUSED) {
        hoctl_warn("%s: the fleet record was replaced or cleared by "
                   "someone else (%s): no longer renewing it", f->upstream,
                   err);
        *lost = 1;

    } else {
        hoctl_warn("%s: cannot renew the record: %s", f->upstream, err);
    }

    return rc;
}


int
hoctl_etcd_run(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, char **argv)
{
    int                rc, sig, status, lost, i;
    long               ttl, interval;
    char              *what, err[HOCTL_ERRLEN];
    pid_t              pid;
    size_t             n;
    json_t            *record;
    int64_t            lease, revision;
    sigset_t           set, old;
    siginfo_t          info;
    long long          next, now, wait;
    hoctl_etcd_t       e;
    struct timespec    ts;
    struct sigaction   sa;

    ttl = hoctl_fleet_ttl(f, err, sizeof(err));
    if (ttl < 0) {
        return hoctl_etcd_fail(HOCTL_USAGE, err);
    }

    interval = ttl * 1000 / 3;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = hoctl_erun_sigchld;
    sigaction(SIGCHLD, &sa, NULL);

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (n = 0; n < sizeof(hoctl_erun_forwarded) / sizeof(int); n++) {
        sigaddset(&set, hoctl_erun_forwarded[n]);
    }
    sigprocmask(SIG_BLOCK, &set, &old);

    rc = hoctl_etcd_init(&e, o, err, sizeof(err));
    if (rc != HOCTL_OK) {
        return hoctl_etcd_fail(rc, err);
    }

    /* a heartbeat that hangs must not outlive the lease it renews */
    e.timeout = interval / 1000 > 2 ? interval / 1000 : 2;

    rc = hoctl_etcd_put_record(&e, c, o, f, ttl, &lease, &revision, &record,
                               err, sizeof(err));
    if (rc != HOCTL_OK) {
        hoctl_etcd_fail(rc, err);
        hoctl_warn("%s: fleet flag not set, \"%s\" not run", f->upstream,
                   argv[0]);
        hoctl_etcd_free(&e);
        return rc;
    }

    what = hoctl_flag_summary(record);
    hoctl_warn("%s: HA suspended on the fleet %s (%s), revision %" PRId64
               ", lease of %lds renewed every %ld.%03lds, running \"%s\"",
               f->upstream, o->environment, what, revision, ttl,
               interval / 1000, interval % 1000, argv[0]);
    free(what);

    fflush(stdout);
    fflush(stderr);

    pid = fork();
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[0], argv);
        i = errno;
        fprintf(stderr, "%s: cannot run \"%s\": %s\n", hoctl_progname,
                argv[0], strerror(i));
        _exit(i == ENOENT ? 127 : 126);
    }

    status = 0;
    lost = 0;

    if (pid < 0) {
        hoctl_warn("fork: %s", strerror(errno));
        status = -1;
        goto done;
    }

    next = hoctl_erun_now_ms() + interval;

    for ( ;; ) {
        now = hoctl_erun_now_ms();

        if (now >= next) {
            if (lost) {
                next = now + 3600 * 1000LL;

            } else if (hoctl_erun_heartbeat(&e, c, f, record, ttl, lease,
                                            &revision, &lost)
                       == HOCTL_OK)
            {
                next = now + interval;

            } else {
                next = now + (interval < 1000 ? interval : 1000);
            }

            continue;
        }

        wait = next - now;
        ts.tv_sec = wait / 1000;
        ts.tv_nsec = (wait % 1000) * 1000000;

        sig = sigtimedwait(&set, &info, &ts);

        if (sig == -1) {
            continue;
        }

        if (sig == SIGCHLD) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                break;
            }
            continue;
        }

        if (info.si_code != SI_KERNEL) {
            kill(pid, sig);
        }
    }

done:

    /* revoking the lease deletes the record (if it is still ours) */
    for (i = 0; i < 3; i++) {
        if (i > 0) {
            sleep(1);
        }

        rc = hoctl_etcd_lease_revoke(&e, lease, err, sizeof(err));
        if (rc == HOCTL_OK) {
            hoctl_warn("%s: HA restored on the fleet %s", f->upstream,
                       o->environment);
            break;
        }

        hoctl_warn("%s: cannot revoke the lease: %s", f->upstream, err);
    }

    if (rc != HOCTL_OK) {
        hoctl_warn("%s: the fleet flag lapses with its lease, within %lds",
                   f->upstream, ttl);
    }

    json_decref(record);
    hoctl_etcd_free(&e);

    if (status == -1) {
        return HOCTL_REFUSED;
    }

    if (WIFEXITED(status)) {
        return WEXITSTATUS(status);
    }

    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }

    return HOCTL_REFUSED;
}
