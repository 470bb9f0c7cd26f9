
/*
 * ha-optoutctl: a small client of etcd's v3 JSON gateway (grpc-gateway):
 * range, txn, leases, a streaming watch, user/password authentication and
 * TLS.  Keys and values travel base64 encoded, 64-bit integers as strings.
 * Each request goes to the member that answered last, then to the others.
 *
 * Over 1,000 lines since its long calls became named steps: one client of
 * one protocol, whose range, lease and watch calls share the static member
 * rotation, authentication, TLS setup and hints below; the watch (the last
 * 200 lines) is the part to move out if the file grows further.
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "etcd.h"


typedef struct {
    char           *body;
    size_t          len;
} hoctl_etcd_buf_t;


static size_t hoctl_etcd_body(char *data, size_t size, size_t n, void *arg);
static size_t hoctl_etcd_watch_body(char *data, size_t size, size_t n,
    void *arg);
static int hoctl_etcd_authenticate(hoctl_etcd_t *e, char *err,
    size_t errlen);
static int hoctl_etcd_post(hoctl_etcd_t *e, int member, const char *path,
    const char *body, long *status, hoctl_etcd_buf_t *out, char *err,
    size_t errlen);
static void hoctl_etcd_setup(hoctl_etcd_t *e, CURL *curl);


char *
hoctl_b64(const void *in, size_t len)
{
    char  *out;

    out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL) {
        return NULL;
    }

    EVP_EncodeBlock((unsigned char *) out, in, (int) len);
    return out;
}


unsigned char *
hoctl_unb64(const char *in, size_t *len)
{
    int             n;
    size_t          l, pad;
    unsigned char  *out;

    l = strlen(in);
    if (l % 4 != 0) {
        return NULL;
    }

    out = malloc(l / 4 * 3 + 1);
    if (out == NULL) {
        return NULL;
    }

    n = EVP_DecodeBlock(out, (const unsigned char *) in, (int) l);
    if (n < 0) {
        free(out);
        return NULL;
    }

    pad = 0;
    if (l >= 1 && in[l - 1] == '=') {
        pad++;
    }
    if (l >= 2 && in[l - 2] == '=') {
        pad++;
    }

    *len = (size_t) n - pad;
    out[*len] = '\0';

    return out;
}


/* the gateway sends int64 as strings and leaves out zero values */
int64_t
hoctl_json_int(json_t *v)
{
    if (json_is_integer(v)) {
        return (int64_t) json_integer_value(v);
    }

    if (json_is_string(v)) {
        return (int64_t) strtoll(json_string_value(v), NULL, 10);
    }

    return 0;
}


json_t *
hoctl_json_str_int(int64_t n)
{
    char  buf[32];

    snprintf(buf, sizeof(buf), "%" PRId64, n);
    return json_string(buf);
}


char *
hoctl_kv_key(json_t *kv)
{
    size_t       len;
    const char  *k;

    k = json_string_value(json_object_get(kv, "key"));
    return k ? (char *) hoctl_unb64(k, &len) : NULL;
}


char *
hoctl_kv_value(json_t *kv, size_t *len)
{
    const char  *v;

    v = json_string_value(json_object_get(kv, "value"));
    if (v == NULL) {
        *len = 0;
        return strdup("");
    }

    return (char *) hoctl_unb64(v, len);
}


/*
 * The end of a prefix range: the prefix with its last byte plus one (its
 * trailing 0xff bytes dropped first).  An empty (or NULL) prefix, or one
 * of 0xff bytes only, covers every key from it on: "", which stands for
 * etcd's range_end "\0" and hoctl_range_end_b64() sends as that byte.
 */
char *
hoctl_range_end(const char *prefix)
{
    char    *end;
    size_t   len;

    end = strdup(prefix != NULL ? prefix : "");
    if (end == NULL) {
        return NULL;
    }

    len = strlen(end);

    while (len > 0) {
        if ((unsigned char) end[len - 1] < 0xff) {
            end[len - 1]++;
            return end;
        }
        end[--len] = '\0';
    }

    return end;
}


/* range_end as the JSON gateway takes it: "" is the one byte "\0" */
char *
hoctl_range_end_b64(const char *end)
{
    return hoctl_b64(end, end[0] != '\0' ? strlen(end) : 1);
}


/* --etcd URL[,URL...]: the members, each http(s), without a trailing "/" */
static int
hoctl_etcd_urls(hoctl_etcd_t *e, const char *etcd, char *err, size_t errlen)
{
    char    *list, *tok, *save;
    size_t   len;

    list = strdup(etcd);

    for (tok = strtok_r(list, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save))
    {
        if (e->nurls == HOCTL_ETCD_MAX_URLS) {
            snprintf(err, errlen, "--etcd: at most %d members",
                     HOCTL_ETCD_MAX_URLS);
            free(list);
            return HOCTL_USAGE;
        }

        if (strncmp(tok, "http://", 7) != 0
            && strncmp(tok, "https://", 8) != 0)
        {
            snprintf(err, errlen, "--etcd: \"%s\" is not an http:// or "
                     "https:// URL", tok);
            free(list);
            return HOCTL_USAGE;
        }

        len = strlen(tok);
        while (len > 0 && tok[len - 1] == '/') {
            tok[--len] = '\0';
        }

        e->urls[e->nurls++] = strdup(tok);
    }

    free(list);

    if (e->nurls == 0) {
        snprintf(err, errlen, "--etcd names no member");
        return HOCTL_USAGE;
    }

    return HOCTL_OK;
}


/* the first line of --etcd-password-file, without its "\n" or "\r\n" */
static int
hoctl_etcd_password(hoctl_etcd_t *e, const char *file, char *err,
    size_t errlen)
{
    FILE    *f;
    char    *p, buf[1024];
    size_t   n;

    f = fopen(file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read --etcd-password-file "
                 "\"%s\": %m", file);
        return HOCTL_USAGE;
    }

    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';

    p = strchr(buf, '\n');
    if (p != NULL) {
        *p = '\0';

        /* a file written on Windows: its "\r" is no part of the password */
        if (p > buf && p[-1] == '\r') {
            p[-1] = '\0';
        }
    }

    e->password = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));

    return HOCTL_OK;
}


int
hoctl_etcd_init(hoctl_etcd_t *e, const hoctl_etcd_opts_t *o, char *err,
    size_t errlen)
{
    size_t       len;
    const char  *prefix;

    memset(e, 0, sizeof(hoctl_etcd_t));

    if (o->etcd == NULL || o->etcd[0] == '\0') {
        snprintf(err, errlen, "--etcd URL[,URL...] is required");
        return HOCTL_USAGE;
    }

    if (o->environment == NULL || o->environment[0] == '\0'
        || strchr(o->environment, '/') != NULL)
    {
        snprintf(err, errlen, "--environment ENV is required (a name "
                 "without \"/\")");
        return HOCTL_USAGE;
    }

    if (hoctl_etcd_urls(e, o->etcd, err, errlen) != HOCTL_OK) {
        return HOCTL_USAGE;
    }

    if (o->user != NULL) {
        if (o->password_file == NULL) {
            snprintf(err, errlen, "--etcd-user needs --etcd-password-file");
            return HOCTL_USAGE;
        }

        if (hoctl_etcd_password(e, o->password_file, err, errlen)
            != HOCTL_OK)
        {
            return HOCTL_USAGE;
        }
        e->user = o->user;
    }

    e->cacert = o->cacert;
    e->cert = o->cert;
    e->key = o->key;
    e->timeout = o->timeout > 0 ? o->timeout : 5;
    e->verbose = o->verbose;

    prefix = o->prefix ? o->prefix : HOCTL_ETCD_PREFIX;
    len = strlen(prefix) + strlen(o->environment) + 3;
    e->prefix = malloc(len);
    snprintf(e->prefix, len, "%s/%s/", prefix, o->environment);

    return HOCTL_OK;
}


void
hoctl_etcd_free(hoctl_etcd_t *e)
{
    int  i;

    for (i = 0; i < e->nurls; i++) {
        free(e->urls[i]);
    }

    if (e->password != NULL) {
        OPENSSL_cleanse(e->password, strlen(e->password));
        free(e->password);
    }

    free(e->auth);
    free(e->prefix);
    memset(e, 0, sizeof(hoctl_etcd_t));
}


static void
hoctl_etcd_setup(hoctl_etcd_t *e, CURL *curl)
{
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "ha-optoutctl/" HOCTL_VERSION);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 1500L);

    hoctl_curl_tls(curl, e->cacert, e->cert, e->key);
}


static struct curl_slist *
hoctl_etcd_headers(hoctl_etcd_t *e)
{
    char               *h;
    size_t              len;
    struct curl_slist  *headers;

    headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");

    if (e->auth != NULL) {
        len = strlen(e->auth) + sizeof("Authorization: ");
        h = malloc(len);
        snprintf(h, len, "Authorization: %s", e->auth);
        headers = curl_slist_append(headers, h);
        OPENSSL_cleanse(h, len);
        free(h);
    }

    return headers;
}


/*
 * What to do about a refusal or a failed connection, for an operator who
 * only has the error in front of them ("" when there is nothing to add).
 */
static const char *
hoctl_etcd_hint(hoctl_etcd_t *e, int member, CURLcode cc, const char *msg)
{
    int  https;

    https = strncmp(e->urls[member], "https://", 8) == 0;

    if (msg != NULL) {
        if (strstr(msg, "user name is empty") != NULL && e->user == NULL) {
            return " (etcd has authentication on: give --etcd-user and"
                   " --etcd-password-file)";
        }

        if (strstr(msg, "permission denied") != NULL) {
            return " (the etcd user's roles do not grant this key: the role"
                   " needs readwrite on the prefix, docs/fleet.md)";
        }

        return "";
    }

    if (cc == CURLE_PEER_FAILED_VERIFICATION
        || (https && cc == CURLE_SSL_CACERT_BADFILE))
    {
        return e->cacert ? " (is --etcd-cacert the CA that signed etcd's"
                           " certificate?)"
                         : " (give the CA that signed etcd's certificate:"
                           " --etcd-cacert FILE)";
    }

    if (https && e->cert == NULL
        && (cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR
            || cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_GOT_NOTHING))
    {
        return " (does etcd require a client certificate? --etcd-cert,"
               " --etcd-key)";
    }

    if (!https && cc == CURLE_GOT_NOTHING) {
        return " (does this member speak https?)";
    }

    return "";
}


/* one POST to one member: HOCTL_OK with any HTTP status, or UNREACHABLE */
static int
hoctl_etcd_post(hoctl_etcd_t *e, int member, const char *path,
    const char *body, long *status, hoctl_etcd_buf_t *out, char *err,
    size_t errlen)
{
    int                 rc;
    char               *url, cerr[CURL_ERROR_SIZE];
    size_t              len;
    CURL               *curl;
    CURLcode            cc;
    struct curl_slist  *headers;

    len = strlen(e->urls[member]) + strlen(path) + 1;
    url = malloc(len);
    snprintf(url, len, "%s%s", e->urls[member], path);

    curl = curl_easy_init();
    headers = hoctl_etcd_headers(e);
    cerr[0] = '\0';

    hoctl_etcd_setup(e, curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, e->timeout);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, hoctl_etcd_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);

    cc = curl_easy_perform(curl);

    if (cc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
        rc = HOCTL_OK;

    } else {
        snprintf(err, errlen, "etcd %s: %s%s", e->urls[member],
                 cerr[0] ? cerr : curl_easy_strerror(cc),
                 hoctl_etcd_hint(e, member, cc, NULL));
        rc = (cc == CURLE_SSL_CERTPROBLEM || cc == CURLE_URL_MALFORMAT)
             ? HOCTL_USAGE : HOCTL_UNREACHABLE;
    }

    if (e->verbose) {
        fprintf(stderr, "%s: POST %s -> %ld\n", hoctl_progname, url,
                rc == HOCTL_OK ? *status : 0L);
    }

    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    free(url);

    return rc;
}


static int
hoctl_etcd_authenticate(hoctl_etcd_t *e, char *err, size_t errlen)
{
    int                rc, i, m;
    long               status;
    char              *body;
    json_t            *j;
    hoctl_etcd_buf_t   out;
    const char        *tok;

    free(e->auth);
    e->auth = NULL;

    j = json_pack("{s:s, s:s}", "name", e->user, "password", e->password);
    body = json_dumps(j, JSON_COMPACT);
    json_decref(j);

    rc = HOCTL_UNREACHABLE;

    for (i = 0; i < e->nurls; i++) {
        m = (e->cur + i) % e->nurls;
        memset(&out, 0, sizeof(out));
        status = 0;

        rc = hoctl_etcd_post(e, m, "/v3/auth/authenticate", body, &status,
                             &out, err, errlen);
        if (rc != HOCTL_OK) {
            free(out.body);
            continue;
        }

        e->cur = m;

        j = out.body ? json_loads(out.body, 0, NULL) : NULL;
        tok = json_string_value(json_object_get(j, "token"));

        if (status == 200 && tok != NULL) {
            e->auth = strdup(tok);
            json_decref(j);
            free(out.body);
            rc = HOCTL_OK;
            break;
        }

        snprintf(err, errlen, "etcd refused user \"%s\": %s", e->user,
                 json_string_value(json_object_get(j, "error"))
                 ? json_string_value(json_object_get(j, "error"))
                 : "authentication failed");
        json_decref(j);
        free(out.body);
        rc = HOCTL_REFUSED;
        break;
    }

    OPENSSL_cleanse(body, strlen(body));
    free(body);

    return rc;
}


/*
 * The message of an answer that is not a 200: the gateway's "error" or
 * "message", else the first line of the body, printable, which *j then
 * holds; body is changed.
 */
static const char *
hoctl_etcd_message(json_t **j, char *body)
{
    char        *p;
    const char  *msg;

    msg = json_string_value(json_object_get(*j, "error"));
    if (msg == NULL) {
        msg = json_string_value(json_object_get(*j, "message"));
    }

    /* not the gateway's JSON: its first line, printable */
    if (msg == NULL && *j == NULL && body != NULL) {
        for (p = body; *p; p++) {
            if (*p == '\n') {
                *p = '\0';
                break;
            }
            if ((unsigned char) *p < 0x20) {
                *p = '?';
            }
        }

        if (strlen(body) > 200) {
            body[200] = '\0';
        }

        *j = json_pack("{s:s}", "error", body);
        msg = json_string_value(json_object_get(*j, "error"));
    }

    return msg;
}


/* a member without a leader, or stopping: ask another */
static int
hoctl_etcd_busy(const char *msg)
{
    return msg != NULL
           && (strstr(msg, "no leader") != NULL
               || strstr(msg, "leader changed") != NULL
               || strstr(msg, "stopped") != NULL
               || strstr(msg, "timed out") != NULL);
}


/* the answer of a user's token etcd no longer takes: authenticate again */
static int
hoctl_etcd_auth_expired(hoctl_etcd_t *e, const char *msg)
{
    return msg != NULL && e->user != NULL
           && (strstr(msg, "auth token") != NULL
               || strstr(msg, "user name is empty") != NULL);
}


/*
 * POST body to path on member m: *j is its decoded answer and, unless that
 * is a 200 object, *msg what it says.
 */
static int
hoctl_etcd_ask(hoctl_etcd_t *e, int m, const char *path, const char *body,
    long *status, json_t **j, const char **msg, char *err, size_t errlen)
{
    int                rc;
    hoctl_etcd_buf_t   out;

    memset(&out, 0, sizeof(out));
    *status = 0;

    rc = hoctl_etcd_post(e, m, path, body, status, &out, err, errlen);
    if (rc != HOCTL_OK) {
        free(out.body);
        return rc;
    }

    *j = out.body ? json_loads(out.body, 0, NULL) : NULL;
    *msg = NULL;

    if (!(*status == 200 && json_is_object(*j))) {
        *msg = hoctl_etcd_message(j, out.body);
    }

    free(out.body);
    return HOCTL_OK;
}


/*
 * POST req (consumed) to path on the first member that answers; *resp is
 * the decoded answer of a 200.  A gateway error answers REFUSED with its
 * message; an expired auth token is renewed once.
 */
int
hoctl_etcd_call(hoctl_etcd_t *e, const char *path, json_t *req,
    json_t **resp, char *err, size_t errlen)
{
    int          rc, i, m, again;
    long         status;
    char        *body;
    json_t      *j;
    const char  *msg;

    *resp = NULL;
    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    if (e->user != NULL && e->auth == NULL) {
        rc = hoctl_etcd_authenticate(e, err, errlen);
        if (rc != HOCTL_OK) {
            free(body);
            return rc;
        }
    }

    again = 0;

retry:

    rc = HOCTL_UNREACHABLE;

    for (i = 0; i < e->nurls; i++) {
        m = (e->cur + i) % e->nurls;
        rc = hoctl_etcd_ask(e, m, path, body, &status, &j, &msg, err,
                            errlen);
        if (rc == HOCTL_UNREACHABLE) {
            continue;
        }

        if (rc != HOCTL_OK) {
            break;
        }

        if (status == 200 && json_is_object(j)) {
            e->cur = m;
            *resp = j;
            rc = HOCTL_OK;
            break;
        }

        /* a member without a leader, or stopping: ask another */
        if (hoctl_etcd_busy(msg)) {
            snprintf(err, errlen, "etcd %s: %s", e->urls[m], msg);
            json_decref(j);
            rc = HOCTL_UNREACHABLE;
            continue;
        }

        if (!again && hoctl_etcd_auth_expired(e, msg)) {
            json_decref(j);
            again = 1;
            rc = hoctl_etcd_authenticate(e, err, errlen);
            if (rc != HOCTL_OK) {
                break;
            }
            goto retry;
        }

        snprintf(err, errlen, "etcd %s%s: %ld %s%s", e->urls[m], path,
                 status, msg ? msg : "(no message)",
                 hoctl_etcd_hint(e, m, CURLE_OK, msg ? msg : ""));
        json_decref(j);
        e->cur = m;
        rc = HOCTL_REFUSED;
        break;
    }

    free(body);
    return rc;
}


/*
 * In pages of 16 keys at one revision: values may be up to etcd's request
 * size (1.5 MB by default), and a prefix anyone with write access filled
 * must not make one answer larger than we take (64 MB).
 */
#define HOCTL_ETCD_PAGE  16


/* the request for one page from key "from" (a prefix's up to end) */
static json_t *
hoctl_etcd_range_req(const char *from, size_t fromlen, int prefix,
    const char *end, int64_t rev)
{
    char    *k;
    json_t  *req;

    req = json_object();
    k = hoctl_b64(from, fromlen);
    json_object_set_new(req, "key", json_string(k));
    free(k);

    if (prefix) {
        k = hoctl_range_end_b64(end);
        json_object_set_new(req, "range_end", json_string(k));
        free(k);
        json_object_set_new(req, "limit",
                            json_integer(HOCTL_ETCD_PAGE));
    }

    if (rev != 0) {
        json_object_set_new(req, "revision", hoctl_json_str_int(rev));
    }

    return req;
}


/* the next page starts just after the last key of this one: key + "\0" */
static char *
hoctl_etcd_range_next(json_t *list, size_t *fromlen)
{
    char    *k, *from;
    size_t   klen;
    json_t  *kv;

    kv = json_array_get(list, json_array_size(list) - 1);
    k = (char *) hoctl_unb64(json_string_value(json_object_get(kv,
                                     "key")) ?: "", &klen);
    *fromlen = k ? klen : 0;
    from = malloc(*fromlen + 2);
    memcpy(from, k ? k : "", *fromlen);
    from[(*fromlen)++] = '\0';
    from[*fromlen] = '\0';
    free(k);

    return from;
}

int
hoctl_etcd_range(hoctl_etcd_t *e, const char *key, int prefix, json_t **kvs,
    int64_t *revision, char *err, size_t errlen)
{
    int         rc, more;
    char       *end, *from;
    size_t      i, fromlen;
    json_t     *req, *resp, *list, *all, *kv;
    int64_t     rev;

    all = json_array();
    fromlen = strlen(key);
    from = malloc(fromlen + 2);
    memcpy(from, key, fromlen + 1);
    end = prefix ? hoctl_range_end(key) : NULL;
    rev = 0;

    do {
        req = hoctl_etcd_range_req(from, fromlen, prefix, end, rev);

        rc = hoctl_etcd_call(e, "/v3/kv/range", req, &resp, err, errlen);
        if (rc != HOCTL_OK) {
            free(from);
            free(end);
            json_decref(all);
            return rc;
        }

        if (rev == 0) {
            rev = hoctl_json_int(json_object_get(
                      json_object_get(resp, "header"), "revision"));
        }

        list = json_object_get(resp, "kvs");
        more = prefix && json_is_true(json_object_get(resp, "more"))
               && json_array_size(list) > 0;

        json_array_foreach(list, i, kv) {
            json_array_append(all, kv);
        }

        if (more) {
            /* the next page starts just after the last key: key + "\0" */
            free(from);
            from = hoctl_etcd_range_next(list, &fromlen);
        }

        json_decref(resp);

    } while (more);

    free(from);
    free(end);

    if (revision != NULL) {
        *revision = rev;
    }

    *kvs = all;
    return HOCTL_OK;
}


int
hoctl_etcd_lease_grant(hoctl_etcd_t *e, long ttl, int64_t *id, char *err,
    size_t errlen)
{
    int      rc;
    json_t  *resp;

    rc = hoctl_etcd_call(e, "/v3/lease/grant",
                         json_pack("{s:I}", "TTL", (json_int_t) ttl), &resp,
                         err, errlen);
    if (rc != HOCTL_OK) {
        return rc;
    }

    *id = hoctl_json_int(json_object_get(resp, "ID"));
    json_decref(resp);

    if (*id == 0) {
        snprintf(err, errlen, "etcd granted no lease");
        return HOCTL_REFUSED;
    }

    return HOCTL_OK;
}


/* *ttl is what is left of the lease: 0 when it is gone */
int
hoctl_etcd_lease_keepalive(hoctl_etcd_t *e, int64_t id, long *ttl,
    char *err, size_t errlen)
{
    int      rc;
    json_t  *req, *resp;

    req = json_object();
    json_object_set_new(req, "ID", hoctl_json_str_int(id));

    rc = hoctl_etcd_call(e, "/v3/lease/keepalive", req, &resp, err, errlen);
    if (rc != HOCTL_OK) {
        return rc;
    }

    *ttl = (long) hoctl_json_int(json_object_get(
                      json_object_get(resp, "result"), "TTL"));
    json_decref(resp);

    return HOCTL_OK;
}


int
hoctl_etcd_lease_revoke(hoctl_etcd_t *e, int64_t id, char *err,
    size_t errlen)
{
    int      rc;
    json_t  *req, *resp;

    req = json_object();
    json_object_set_new(req, "ID", hoctl_json_str_int(id));

    rc = hoctl_etcd_call(e, "/v3/lease/revoke", req, &resp, err, errlen);
    if (rc == HOCTL_OK) {
        json_decref(resp);

    } else if (rc == HOCTL_REFUSED && strstr(err, "not found") != NULL) {
        rc = HOCTL_OK;          /* expired already: the same outcome */
    }

    return rc;
}


static size_t
hoctl_etcd_body(char *data, size_t size, size_t n, void *arg)
{
    hoctl_etcd_buf_t  *b = arg;

    return hoctl_buf_append(&b->body, &b->len, 64 * 1024 * 1024, data,
                            size * n);
}


/*
 * The watch answers one JSON object per line, {"result": {...}} or
 * {"error": {...}}; each whole line goes to the handler.
 */
static size_t
hoctl_etcd_watch_body(char *data, size_t size, size_t n, void *arg)
{
    hoctl_etcd_watch_t  *w = arg;
    char                *nl, *p;
    size_t               len, line;
    json_t              *j, *res;

    len = size * n;

    if (w->len + len + 1 > w->size) {
        if (w->len + len > 64 * 1024 * 1024) {
            return 0;
        }

        w->size = (w->len + len + 1) * 2;
        p = realloc(w->buf, w->size);
        if (p == NULL) {
            return 0;
        }
        w->buf = p;
    }

    memcpy(w->buf + w->len, data, len);
    w->len += len;
    w->buf[w->len] = '\0';

    while ((nl = memchr(w->buf, '\n', w->len)) != NULL) {
        *nl = '\0';
        line = nl - w->buf + 1;

        j = json_loads(w->buf, 0, NULL);
        res = json_object_get(j, "result");

        if (json_is_object(res)) {
            if (json_is_true(json_object_get(res, "created"))) {
                w->created = 1;
            }

            if (json_is_true(json_object_get(res, "canceled"))) {
                w->done = 1;
            }

            w->handler(w->ctx, res);

        } else {
            w->done = 1;
        }

        json_decref(j);

        memmove(w->buf, w->buf + line, w->len - line);
        w->len -= line;
        w->buf[w->len] = '\0';
    }

    return len;
}


int
hoctl_etcd_watch_start(hoctl_etcd_t *e, hoctl_etcd_watch_t *w,
    const char *key, int64_t start_revision, char *err, size_t errlen)
{
    char    *k, *end;
    size_t   len;
    json_t  *req, *cr;

    /* an auth token for the stream, and a member that answers */
    if (e->user != NULL && e->auth == NULL) {
        int rc = hoctl_etcd_authenticate(e, err, errlen);
        if (rc != HOCTL_OK) {
            return rc;
        }
    }

    w->multi = curl_multi_init();
    w->curl = curl_easy_init();
    w->headers = hoctl_etcd_headers(e);
    w->len = 0;
    w->done = 0;
    w->created = 0;

    cr = json_object();
    k = hoctl_b64(key, strlen(key));
    json_object_set_new(cr, "key", json_string(k));
    free(k);
    end = hoctl_range_end(key);
    k = hoctl_range_end_b64(end);
    json_object_set_new(cr, "range_end", json_string(k));
    free(k);
    free(end);
    json_object_set_new(cr, "start_revision",
                        hoctl_json_str_int(start_revision));
    json_object_set_new(cr, "progress_notify", json_true());

    req = json_pack("{s:o}", "create_request", cr);
    w->body = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    len = strlen(e->urls[e->cur]) + sizeof("/v3/watch");
    w->url = malloc(len);
    snprintf(w->url, len, "%s/v3/watch", e->urls[e->cur]);

    hoctl_etcd_setup(e, w->curl);
    curl_easy_setopt(w->curl, CURLOPT_URL, w->url);
    curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, w->headers);
    curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, w->body);
    curl_easy_setopt(w->curl, CURLOPT_POSTFIELDSIZE, (long) strlen(w->body));
    curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, hoctl_etcd_watch_body);
    curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPIDLE, 2L);
    curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPINTVL, 1L);

    curl_multi_add_handle(w->multi, w->curl);

    if (e->verbose) {
        fprintf(stderr, "%s: WATCH %s from revision %" PRId64 "\n",
                hoctl_progname, w->url, start_revision);
    }

    return HOCTL_OK;
}


/* runs the stream for up to timeout_ms; -1 once it has ended */
int
hoctl_etcd_watch_poll(hoctl_etcd_watch_t *w, int timeout_ms)
{
    int       running, left;
    CURLMsg  *m;

    if (w->done) {
        return -1;
    }

    curl_multi_perform(w->multi, &running);

    if (running) {
        curl_multi_poll(w->multi, NULL, 0, timeout_ms, NULL);
        curl_multi_perform(w->multi, &running);
    }

    while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
        if (m->msg == CURLMSG_DONE) {
            w->done = 1;
        }
    }

    if (!running) {
        w->done = 1;
    }

    return w->done ? -1 : 0;
}


void
hoctl_etcd_watch_stop(hoctl_etcd_watch_t *w)
{
    if (w->multi != NULL) {
        curl_multi_remove_handle(w->multi, w->curl);
        curl_easy_cleanup(w->curl);
        curl_multi_cleanup(w->multi);
    }

    curl_slist_free_all(w->headers);
    free(w->url);
    free(w->body);
    free(w->buf);

    w->multi = NULL;
    w->curl = NULL;
    w->headers = NULL;
    w->url = NULL;
    w->body = NULL;
    w->buf = NULL;
    w->len = 0;
    w->size = 0;
    w->done = 1;
}
