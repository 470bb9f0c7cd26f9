
/*
 * ha-optoutctl: one request to the admin API, and the one place that turns
 * an answer into "ok", "refused" or "unreachable".
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>
#include <curl/curl.h>

#include "hoctl.h"


static size_t hoctl_http_body(char *data, size_t size, size_t n, void *arg);
static size_t hoctl_http_header(char *data, size_t size, size_t n,
    void *arg);
static void hoctl_http_error(hoctl_resp_t *r);
static void hoctl_http_tls_error(const hoctl_conn_t *c, hoctl_resp_t *r);
static int hoctl_http_not_api(const hoctl_conn_t *c, const char *method,
    const char *url, hoctl_resp_t *r);


void
hoctl_http_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}


/*
 * The upstream name goes into the path escaped: a name is an nginx upstream
 * name, but nothing stops an operator from mistyping "app/../x".
 */
char *
hoctl_upstream_path(const char *upstream)
{
    char  *esc, *path;
    size_t len;

    esc = curl_easy_escape(NULL, upstream, 0);
    if (esc == NULL) {
        return NULL;
    }

    len = sizeof("v1/flags/") + strlen(esc);
    path = malloc(len);
    if (path != NULL) {
        snprintf(path, len, "v1/flags/%s", esc);
    }

    curl_free(esc);
    return path;
}


/* a fresh token per request: each write needs its own jti */
static char *
hoctl_request_token(const hoctl_conn_t *c, hoctl_resp_t *r)
{
    if (c->token != NULL) {
        return strdup(c->token);
    }

    if (c->key != NULL) {
        return hoctl_jwt_mint(c, r->error, sizeof(r->error));
    }

    snprintf(r->error, sizeof(r->error), "no credentials: give --token "
             "or --key, or set HA_OPTOUT_TOKEN or HA_OPTOUT_KEY");
    return NULL;
}


/* Authorization (the token is wiped here), Accept, and the body's own */
static struct curl_slist *
hoctl_request_headers(char *token, const char *body, const char *if_match)
{
    char                *hdr;
    struct curl_slist   *headers;

    hdr = token ? malloc(strlen(token) + sizeof("Authorization: Bearer "))
                : NULL;
    if (hdr == NULL) {
        fprintf(stderr, "%s: out of memory\n", hoctl_progname);
        exit(HOCTL_USAGE);
    }

    sprintf(hdr, "Authorization: Bearer %s", token);
    memset(token, 0, strlen(token));
    free(token);

    headers = NULL;
    headers = curl_slist_append(headers, hdr);
    headers = curl_slist_append(headers, "Accept: application/json");
    if (body != NULL) {
        headers = curl_slist_append(headers,
                                    "Content-Type: application/json");

        /* the body is small: no 100-continue round trip */
        headers = curl_slist_append(headers, "Expect:");
    }

    if (if_match != NULL) {
        char  im[96];

        snprintf(im, sizeof(im), "If-Match: \"%s\"", if_match);
        headers = curl_slist_append(headers, im);
    }

    memset(hdr, 0, strlen(hdr));
    free(hdr);

    return headers;
}


static void
hoctl_request_setup(CURL *curl, const hoctl_conn_t *c, const char *method,
    const char *url, struct curl_slist *headers, const char *body,
    hoctl_resp_t *r, char *cerr)
{
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "ha-optoutctl/" HOCTL_VERSION);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT,
                     c->timeout < 5 ? c->timeout : 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, c->timeout);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, hoctl_http_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, hoctl_http_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");

    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    }

    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(body));
    }

    hoctl_curl_tls(curl, c->cacert, c->cert, c->cert_key);

    if (c->insecure) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}


/* the transfer's result: ok, refused (and why), unreachable, or usage */
static int
hoctl_request_outcome(const hoctl_conn_t *c, CURL *curl, CURLcode cc,
    const char *cerr, const char *method, const char *url, hoctl_resp_t *r)
{
    char  *ip;

    if (cc == CURLE_SSL_CERTPROBLEM) {
        /* our own certificate or key: a local mistake, as a bad --key */
        snprintf(r->error, sizeof(r->error), "cannot use the client "
                 "certificate (--cert %s%s%s): %s", c->cert,
                 c->cert_key ? ", --cert-key " : "",
                 c->cert_key ? c->cert_key : "",
                 cerr[0] ? cerr : curl_easy_strerror(cc));
        return HOCTL_USAGE;
    }

    if (cc == CURLE_PEER_FAILED_VERIFICATION) {
        snprintf(r->error, sizeof(r->error), "cannot reach %s: the server's "
                 "certificate is not trusted (%s); give its CA with "
                 "--cacert or HA_OPTOUT_CACERT", c->url,
                 cerr[0] ? cerr : curl_easy_strerror(cc));
        return HOCTL_UNREACHABLE;
    }

    if (cc != CURLE_OK) {
        snprintf(r->error, sizeof(r->error), "cannot reach %s: %s",
                 c->url, cerr[0] ? cerr : curl_easy_strerror(cc));
        return (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL)
               ? HOCTL_USAGE : HOCTL_UNREACHABLE;
    }

    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);

    ip = NULL;
    if (curl_easy_getinfo(curl, CURLINFO_LOCAL_IP, &ip) == CURLE_OK
        && ip != NULL)
    {
        snprintf(r->local_ip, sizeof(r->local_ip), "%s", ip);
    }

    if (hoctl_http_not_api(c, method, url, r)) {
        /* not the API's answer, whatever its status: say what it was */
        return HOCTL_REFUSED;
    }

    if (r->status >= 200 && r->status < 300) {
        return HOCTL_OK;
    }

    hoctl_http_error(r);
    hoctl_http_tls_error(c, r);

    return HOCTL_REFUSED;
}


int
hoctl_request(const hoctl_conn_t *c, const char *method, const char *path,
    const char *body, const char *if_match, hoctl_resp_t *r)
{
    int                 rc;
    char               *url, *token;
    size_t              len;
    CURL               *curl;
    CURLcode            cc;
    struct curl_slist  *headers;
    char                cerr[CURL_ERROR_SIZE];

    memset(r, 0, sizeof(hoctl_resp_t));

    if (c->url == NULL || c->url[0] == '\0') {
        snprintf(r->error, sizeof(r->error), "no --url given and "
                 "HA_OPTOUT_URL is not set: give the admin location's "
                 "prefix, e.g. --url http://127.0.0.1:8080/ha-optout/");
        return HOCTL_USAGE;
    }

    token = hoctl_request_token(c, r);
    if (token == NULL) {
        return HOCTL_USAGE;
    }

    len = strlen(c->url) + 1 + strlen(path) + 1;
    url = malloc(len);
    if (url == NULL) {
        fprintf(stderr, "%s: out of memory\n", hoctl_progname);
        exit(HOCTL_USAGE);
    }

    /* the API lives below the admin prefix: "URL/" + "v1/..." */
    snprintf(url, len, "%s%s%s", c->url,
             c->url[strlen(c->url) - 1] == '/' ? "" : "/", path);

    headers = hoctl_request_headers(token, body, if_match);

    curl = curl_easy_init();
    if (curl == NULL || headers == NULL) {
        fprintf(stderr, "%s: cannot initialise libcurl\n", hoctl_progname);
        exit(HOCTL_USAGE);
    }

    cerr[0] = '\0';

    hoctl_request_setup(curl, c, method, url, headers, body, r, cerr);

    cc = curl_easy_perform(curl);

    rc = hoctl_request_outcome(c, curl, cc, cerr, method, url, r);

    if (c->verbose) {
        fprintf(stderr, "%s: %s %s -> %ld\n", hoctl_progname, method, url,
                r->status);
    }

    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    free(url);

    return rc;
}


void
hoctl_resp_free(hoctl_resp_t *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}


static size_t
hoctl_http_body(char *data, size_t size, size_t n, void *arg)
{
    hoctl_resp_t  *r = arg;

    /* the API answers small JSON documents; refuse to buffer a flood */
    return hoctl_buf_append(&r->body, &r->len, 16 * 1024 * 1024, data,
                            size * n);
}


/*
 * A curl write callback's step, for the admin API and etcd alike: data
 * appended to *buf, kept NUL-terminated; 0 (curl stops) past max bytes.
 */
size_t
hoctl_buf_append(char **buf, size_t *len, size_t max, const char *data,
    size_t n)
{
    char  *p;

    if (*len + n > max) {
        return 0;
    }

    p = realloc(*buf, *len + n + 1);
    if (p == NULL) {
        return 0;
    }

    memcpy(p + *len, data, n);
    *buf = p;
    *len += n;
    (*buf)[*len] = '\0';

    return n;
}


/* the TLS files of a request, for the admin API and etcd alike */
void
hoctl_curl_tls(CURL *curl, const char *cacert, const char *cert,
    const char *key)
{
    if (cacert != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, cacert);
    }

    if (cert != NULL) {
        curl_easy_setopt(curl, CURLOPT_SSLCERT, cert);
        curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
    }

    if (key != NULL) {
        curl_easy_setopt(curl, CURLOPT_SSLKEY, key);
        curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
    }
}


static size_t
hoctl_http_header(char *data, size_t size, size_t n, void *arg)
{
    hoctl_resp_t  *r = arg;
    char          *v, *e;
    size_t         len;

    len = size * n;

    /* a redirect's headers come first: only the last answer's count */
    if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
        r->ctype[0] = '\0';
        r->etag[0] = '\0';
    }

    if (len > 13 && strncasecmp(data, "Content-Type:", 13) == 0) {
        v = data + 13;
        e = data + len;

        while (v < e && (*v == ' ' || *v == '\t')) {
            v++;
        }

        while (e > v && isspace((unsigned char) e[-1])) {
            e--;
        }

        if ((size_t) (e - v) >= sizeof(r->ctype)) {
            e = v + sizeof(r->ctype) - 1;
        }

        memcpy(r->ctype, v, e - v);
        r->ctype[e - v] = '\0';
    }

    if (len > 5 && strncasecmp(data, "ETag:", 5) == 0) {
        v = data + 5;
        e = data + len;

        while (v < e && (*v == ' ' || *v == '\t')) {
            v++;
        }

        while (e > v && isspace((unsigned char) e[-1])) {
            e--;
        }

        if (e - v > 0 && (size_t) (e - v) < sizeof(r->etag)) {
            memcpy(r->etag, v, e - v);
            r->etag[e - v] = '\0';
        }
    }

    return len;
}


/* the first bytes of the body into head (size bytes with the "\0"), not
 * cut inside a UTF-8 sequence; their count */
static size_t
hoctl_http_body_head(const hoctl_resp_t *r, char *head, size_t size)
{
    size_t  n;

    n = 0;

    if (r->body != NULL) {
        n = r->len < size - 1 ? r->len : size - 1;

        /* not inside a UTF-8 sequence */
        while (n > 0 && n < r->len
               && ((unsigned char) r->body[n] & 0xc0) == 0x80)
        {
            n--;
        }

        memcpy(head, r->body, n);
    }

    head[n] = '\0';

    return n;
}


/* scheme://host:port of url into origin (size bytes with the "\0") */
static void
hoctl_http_origin(const char *url, char *origin, size_t size)
{
    size_t       o;
    const char  *p, *q;

    p = strstr(url, "://");
    p = p ? p + 3 : url;
    q = strchr(p, '/');
    o = q ? (size_t) (q - url) : strlen(url);
    if (o >= size) {
        o = size - 1;
    }
    memcpy(origin, url, o);
    origin[o] = '\0';
}


/*
 * The admin API answers everything, errors too, as application/json (SPEC
 * section 3).  Anything else came from something that is not the API: a
 * proxied application, a static file, another location, or nginx's own
 * error page (a 403 of allow/deny, a 404 of no such file).  Say what was
 * reached, escaped, and where the admin location is to be found.  The TLS
 * pages of nginx (400 with 495-497 inside) are left to
 * hoctl_http_tls_error().  Returns 1 when r->error was filled.
 */
static int
hoctl_http_not_api(const hoctl_conn_t *c, const char *method,
    const char *url, hoctl_resp_t *r)
{
    int      nginx_page;
    char     head[65], origin[256], *s;
    size_t   n;

    if (strncasecmp(r->ctype, "application/json", 16) == 0
        && (r->ctype[16] == '\0' || r->ctype[16] == ';'))
    {
        return 0;
    }

    if (r->status == 400 && r->body != NULL
        && (strstr(r->body, "SSL certificate") != NULL
            || strstr(r->body, "The plain HTTP request was sent to HTTPS")
               != NULL))
    {
        return 0;
    }

    /* nginx's own error page: "<hr><center>nginx</center>" (or nginx/1.x) */
    nginx_page = r->body != NULL && r->status >= 400
                 && strstr(r->body, "<center>nginx") != NULL;

    if (nginx_page && r->status == 403) {
        snprintf(r->error, sizeof(r->error), "403 ForbiddenByNginx: %s "
                 "was refused by nginx's access rules (allow/deny or "
                 "satisfy in that location or its server), before any "
                 "token was looked at: this is not a token problem (the "
                 "API refuses a token with a JSON 401 or 403); allow this "
                 "host%s%s%s in the admin location (\"allow ADDRESS;\" "
                 "before \"deny all;\") or run %s from a host it allows; "
                 "nginx's error_log says \"access forbidden by rule\"",
                 hoctl_safe(c->url),
                 r->local_ip[0] ? " (it connected from " : "",
                 r->local_ip, r->local_ip[0] ? ")" : "", hoctl_progname);
        return 1;
    }

    /* the first bytes of the body, escaped: enough to recognise it */

    n = hoctl_http_body_head(r, head, sizeof(head));

    /* scheme://host:port of --url, for the suggestion */

    hoctl_http_origin(c->url, origin, sizeof(origin));

    s = hoctl_escape(head, 0);

    snprintf(r->error, sizeof(r->error), "%ld NotTheAdminAPI: %s %s "
             "answered %ld with %s%s%s, not the admin API's JSON, %s%s%s%s: "
             "--url reached something else (%s); it must "
             "be the prefix of the location that holds \"ha_optout_admin\", "
             "e.g. --url %s/ha-optout/ for \"location /ha-optout/ { "
             "ha_optout_admin; ... }\"",
             r->status, method, hoctl_safe(url), r->status,
             r->ctype[0] ? "Content-Type \"" : "no Content-Type",
             r->ctype[0] ? hoctl_safe(r->ctype) : "",
             r->ctype[0] ? "\"" : "",
             r->len ? "beginning \"" : "and an empty body",
             r->len ? (s ? s : "") : "",
             r->len > n ? "..." : "", r->len ? "\"" : "",
             nginx_page ? "an error page of nginx itself: no location "
                          "with \"ha_optout_admin\" there"
                        : "a proxied application, a static file or "
                          "another location",
             hoctl_safe(origin));

    free(s);

    return 1;
}


/*
 * nginx answers a TLS client certificate problem with its own 400 page
 * (codes 495, 496, 497 inside): say what it means and what to give.
 */
static void
hoctl_http_tls_error(const hoctl_conn_t *c, hoctl_resp_t *r)
{
    if (r->status != 400 || r->body == NULL) {
        return;
    }

    if (strstr(r->body, "No required SSL certificate was sent") != NULL) {
        snprintf(r->error, sizeof(r->error), "400 ClientCertificateRequired: "
                 "%s asks for a TLS client certificate (ssl_verify_client); "
                 "give --cert FILE and --cert-key FILE, or HA_OPTOUT_CERT "
                 "and HA_OPTOUT_CERT_KEY", c->url);

    } else if (strstr(r->body, "The SSL certificate error") != NULL) {
        snprintf(r->error, sizeof(r->error), "400 ClientCertificateRejected: "
                 "%s did not accept the client certificate %s (not issued "
                 "by its ssl_client_certificate CA, expired or revoked; "
                 "nginx's error_log says which)", c->url,
                 c->cert ? c->cert : "");

    } else if (strstr(r->body, "The plain HTTP request was sent to HTTPS")
               != NULL)
    {
        snprintf(r->error, sizeof(r->error), "400 PlainHTTPToHTTPS: %s is "
                 "a TLS port: use https://", c->url);
    }
}


/*
 * SPEC section 3: {"error": {"status", "code", "message"}, "request_id"}.
 * Something else (a proxy's HTML page, a wrong --url) is reported by status.
 */
static void
hoctl_http_error(hoctl_resp_t *r)
{
    json_t      *root, *err, *rid;
    const char  *code, *msg;

    root = r->body ? json_loads(r->body, 0, NULL) : NULL;
    err = root ? json_object_get(root, "error") : NULL;

    if (json_is_object(err)) {
        code = json_string_value(json_object_get(err, "code"));
        msg = json_string_value(json_object_get(err, "message"));
        rid = json_object_get(root, "request_id");

        /* the server's words, never its control bytes */
        snprintf(r->error, sizeof(r->error), "%ld %s: %s%s%s%s", r->status,
                 code ? hoctl_safe(code) : "Error",
                 msg ? hoctl_safe(msg) : "(no message)",
                 json_is_string(rid) ? " (request_id " : "",
                 json_is_string(rid) ? hoctl_safe(json_string_value(rid))
                                     : "",
                 json_is_string(rid) ? ")" : "");

    } else {
        snprintf(r->error, sizeof(r->error), "%ld %s: the server did not "
                 "answer with an API error (is --url the admin location?)",
                 r->status, r->status == 404 ? "NotFound" : "HTTPError");
    }

    json_decref(root);
}


int
hoctl_fail(int rc, hoctl_resp_t *r)
{
    if (rc == HOCTL_USAGE) {
        hoctl_warn("%s", r->error);
    } else {
        fprintf(stderr, "error: %s\n", r->error);
    }

    hoctl_resp_free(r);
    return rc;
}


json_t *
hoctl_json_body(hoctl_resp_t *r)
{
    json_t        *j;
    json_error_t   e;

    j = json_loads(r->body ? r->body : "", JSON_DECODE_ANY, &e);
    if (j == NULL) {
        fprintf(stderr, "error: %ld: the answer is not JSON: %s\n",
                r->status, hoctl_safe(e.text));
    }

    return j;
}


/* the answer's JSON, the same values, nothing a terminal would act on */

void
hoctl_print_raw(hoctl_resp_t *r)
{
    char  *s;

    if (r->body != NULL) {
        s = hoctl_escape(r->body, 1);
        fputs(s ? s : "", stdout);
        if (s == NULL || s[0] == '\0' || s[strlen(s) - 1] != '\n') {
            fputc('\n', stdout);
        }
        free(s);
    }
}


/*
 * A request whose answer a verb prints.  Answers the request's failure
 * (said on stderr), or OK: with raw (--json) the answer was printed as
 * it came and r is freed, else r is the caller's to read and free.
 */
int
hoctl_send(const hoctl_conn_t *c, const char *method, const char *path,
    const char *body, const char *if_match, int raw, hoctl_resp_t *r)
{
    int  rc;

    rc = hoctl_request(c, method, path, body, if_match, r);
    if (rc != HOCTL_OK) {
        return hoctl_fail(rc, r);
    }

    if (raw) {
        hoctl_print_raw(r);
        hoctl_resp_free(r);
    }

    return HOCTL_OK;
}


/*
 * GET path for a verb that prints the answer: with raw (--json) it is
 * printed as it came and *j is NULL; else *j is its JSON.  Answers the
 * exit code: the request's failure (said), REFUSED when it is not JSON.
 */
int
hoctl_get_json(const hoctl_conn_t *c, const char *path, int raw, json_t **j)
{
    int            rc;
    hoctl_resp_t   r;

    *j = NULL;

    rc = hoctl_send(c, "GET", path, NULL, NULL, raw, &r);
    if (rc != HOCTL_OK || raw) {
        return rc;
    }

    *j = hoctl_json_body(&r);
    hoctl_resp_free(&r);

    return *j ? HOCTL_OK : HOCTL_REFUSED;
}
