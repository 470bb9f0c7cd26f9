
/*
 * ngx_ha_optout_module: the status endpoint, "ha_optout_status".
 *
 * One handler, three views of the same state: JSON (the contract, SPEC
 * section 6), the Prometheus text exposition format and a single HTML page
 * for the person on call.  Everything is read at request time from the
 * zone and the upstreams' peers, so a change shows in the next scrape.
 */


#include "ngx_http_ha_optout_module.h"

#include <jansson.h>


#define NGX_HA_OPTOUT_FMT_JSON   0
#define NGX_HA_OPTOUT_FMT_PROM   1
#define NGX_HA_OPTOUT_FMT_HTML   2

#define NGX_HA_OPTOUT_REFRESH    "5"    /* seconds, HTML page */

/* the reason in ha_optout_flag_info, bytes */
#define NGX_HA_OPTOUT_PROM_REASON_LEN  128


/* the response body, written into a chain of pool buffers */
typedef struct {
    ngx_pool_t                      *pool;
    ngx_chain_t                     *first;
    ngx_chain_t                    **last;
    ngx_buf_t                       *buf;
    off_t                            size;
    ngx_uint_t                       error;
} ngx_http_ha_optout_out_t;


typedef struct {
    ngx_uint_t                       method;
    ngx_str_t                        name;
} ngx_http_ha_optout_method_t;


/* what the status page says of one upstream, read once per request */
typedef struct {
    ngx_http_ha_optout_flag_t       *flag;      /* acting, or NULL */
    ngx_array_t                     *peers;     /* peer_view_t */
    ngx_uint_t                       protect;
    ngx_uint_t                       approvers; /* policy "approvers" */
    time_t                           approval_ttl;
    ngx_http_ha_optout_flag_t       *wflag;     /* next window, or NULL */
    time_t                           wstart;
    time_t                           wend;
    ngx_atomic_uint_t                suppressed;    /* since flag was set */
    ngx_atomic_uint_t                pinned;
    ngx_atomic_uint_t                bypassed;
    ngx_str_t                        restore;
} ngx_http_ha_optout_truth_t;


static ngx_int_t ngx_http_ha_optout_status_format(ngx_http_request_t *r,
    ngx_uint_t *format);
static ngx_array_t *ngx_http_ha_optout_status_peers(ngx_pool_t *pool,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag);
static ngx_int_t ngx_http_ha_optout_status_truth(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now,
    ngx_http_ha_optout_truth_t *t);
static ngx_int_t ngx_http_ha_optout_status_json(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out);
static ngx_int_t ngx_http_ha_optout_status_prometheus(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out);
static ngx_int_t ngx_http_ha_optout_status_html(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out,
    ngx_str_t *nonce);
static ngx_int_t ngx_http_ha_optout_status_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_uint_t format, ngx_http_ha_optout_out_t *out,
    ngx_str_t *nonce);
static ngx_int_t ngx_http_ha_optout_status_error(ngx_http_request_t *r,
    ngx_uint_t status, char *code, char *message);


static ngx_str_t  ngx_http_ha_optout_status_types[] = {
    ngx_string("application/json"),
    ngx_string("text/plain; version=0.0.4; charset=utf-8"),
    ngx_string("text/html; charset=utf-8")
};


static ngx_http_ha_optout_method_t  ngx_http_ha_optout_methods[] = {
    { NGX_HTTP_GET, ngx_string("GET") },
    { NGX_HTTP_HEAD, ngx_string("HEAD") },
    { NGX_HTTP_POST, ngx_string("POST") },
    { NGX_HTTP_PUT, ngx_string("PUT") },
    { NGX_HTTP_DELETE, ngx_string("DELETE") },
    { NGX_HTTP_PATCH, ngx_string("PATCH") },
    { NGX_HTTP_OPTIONS, ngx_string("OPTIONS") },
    { NGX_HTTP_MKCOL, ngx_string("MKCOL") },
    { NGX_HTTP_COPY, ngx_string("COPY") },
    { NGX_HTTP_MOVE, ngx_string("MOVE") },
    { NGX_HTTP_PROPFIND, ngx_string("PROPFIND") },
    { NGX_HTTP_PROPPATCH, ngx_string("PROPPATCH") },
    { NGX_HTTP_LOCK, ngx_string("LOCK") },
    { NGX_HTTP_UNLOCK, ngx_string("UNLOCK") },
    { NGX_HTTP_TRACE, ngx_string("TRACE") },
    { NGX_HTTP_CONNECT, ngx_string("CONNECT") },
    { 0, ngx_string("OTHER") }
};


static ngx_str_t  ngx_http_ha_optout_layer_names[] = {
    ngx_string("config"),
    ngx_string("window"),
    ngx_string("fleet"),
    ngx_string("api")
};


ngx_int_t
ngx_http_ha_optout_status_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                        nonce;
    ngx_uint_t                       format;
    ngx_http_ha_optout_out_t         out;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_ha_optout_status_error(r, NGX_HTTP_NOT_ALLOWED,
                                               "MethodNotAllowed",
                                               "status answers GET and HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_ha_optout_status_format(r, &format) != NGX_OK) {
        return ngx_http_ha_optout_status_error(r, NGX_HTTP_BAD_REQUEST,
                                               "InvalidFormat",
                                               "format must be json, "
                                               "prometheus or html");
    }

    if (ngx_http_ha_optout_sh == NULL) {
        return ngx_http_ha_optout_status_error(r,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "NoZone", "ha_optout_zone is not set");
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    ngx_memzero(&out, sizeof(ngx_http_ha_optout_out_t));
    out.pool = r->pool;
    out.last = &out.first;

    ngx_str_null(&nonce);

    switch (format) {

    case NGX_HA_OPTOUT_FMT_PROM:
        rc = ngx_http_ha_optout_status_prometheus(r, hmcf, &out);
        break;

    case NGX_HA_OPTOUT_FMT_HTML:
        rc = ngx_http_ha_optout_status_html(r, hmcf, &out, &nonce);
        break;

    default:
        rc = ngx_http_ha_optout_status_json(r, hmcf, &out);
    }

    if (rc != NGX_OK || out.error) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_ha_optout_status_send(r, NGX_HTTP_OK, format, &out,
                                          &nonce);
}


/*
 * ?format= wins; else the Accept header: a Prometheus scraper asks for
 * text/plain (or OpenMetrics) and never for text/html; a browser lists
 * text/html first; anything else, curl's "*" included, gets JSON.
 */

static ngx_int_t
ngx_http_ha_optout_status_format(ngx_http_request_t *r, ngx_uint_t *format)
{
    u_char     *html, *json, *plain, *last;
    ngx_str_t   arg;

    *format = NGX_HA_OPTOUT_FMT_JSON;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {

        if (arg.len == 4 && ngx_strncasecmp(arg.data, (u_char *) "json", 4)
                            == 0)
        {
            return NGX_OK;
        }

        if (arg.len == 10
            && ngx_strncasecmp(arg.data, (u_char *) "prometheus", 10) == 0)
        {
            *format = NGX_HA_OPTOUT_FMT_PROM;
            return NGX_OK;
        }

        if (arg.len == 4 && ngx_strncasecmp(arg.data, (u_char *) "html", 4)
                            == 0)
        {
            *format = NGX_HA_OPTOUT_FMT_HTML;
            return NGX_OK;
        }

        return NGX_ERROR;
    }

#if (NGX_HTTP_GZIP || NGX_HTTP_HEADERS)

    if (r->headers_in.accept == NULL) {
        return NGX_OK;
    }

    arg = r->headers_in.accept->value;
    last = arg.data + arg.len;

    html = ngx_strlcasestrn(arg.data, last, (u_char *) "text/html", 9 - 1);
    json = ngx_strlcasestrn(arg.data, last, (u_char *) "application/json",
                            16 - 1);
    plain = ngx_strlcasestrn(arg.data, last, (u_char *) "text/plain", 10 - 1);

    if (plain == NULL) {
        plain = ngx_strlcasestrn(arg.data, last,
                                 (u_char *) "application/openmetrics-text",
                                 28 - 1);
    }

    if (html == NULL && plain) {
        *format = NGX_HA_OPTOUT_FMT_PROM;

    } else if (html && (json == NULL || html < json)) {
        *format = NGX_HA_OPTOUT_FMT_HTML;
    }

#endif

    return NGX_OK;
}


/*
 * The round-robin peers every supported balancer builds on; with "zone"
 * they live in shared memory and another worker may be updating them.
 */

static ngx_array_t *
ngx_http_ha_optout_status_peers(ngx_pool_t *pool,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag)
{
    time_t                           now;
    ngx_uint_t                       i, backup;
    ngx_array_t                     *views;
    ngx_http_upstream_rr_peer_t     *peer;
    ngx_http_upstream_rr_peers_t    *peers, *list;
    ngx_http_ha_optout_peer_view_t  *v;

    now = ngx_time();

    views = ngx_array_create(pool, 4, sizeof(ngx_http_ha_optout_peer_view_t));
    if (views == NULL) {
        return NULL;
    }

    if (hscf->peer_views) {
        /* a stream upstream: its module knows its peers */
        if (hscf->peer_views(hscf->stream_conf, views) != NGX_OK) {
            return NULL;
        }

    } else {
        peers = hscf->uscf ? hscf->uscf->peer.data : NULL;

        for (list = peers, backup = 0; list; list = list->next, backup = 1) {

            ngx_http_upstream_rr_peers_rlock(list);

            for (peer = list->peer; peer; peer = peer->next) {

                v = ngx_array_push(views);
                if (v == NULL) {
                    ngx_http_upstream_rr_peers_unlock(list);
                    return NULL;
                }

                v->address = peer->name;
                v->server = peer->server;
                v->fails = peer->fails;
                v->max_fails = peer->max_fails;
                v->fail_timeout = peer->fail_timeout;
                v->backup = backup;
                v->down = peer->down ? 1 : 0;

                /* as ngx_http_upstream_get_peer() skips it */
                v->failed = peer->max_fails
                            && peer->fails >= peer->max_fails
                            && now - peer->checked <= peer->fail_timeout;
            }

            ngx_http_upstream_rr_peers_unlock(list);
        }
    }

    v = views->elts;

    for (i = 0; i < views->nelts; i++) {
        v[i].pinned = flag && flag->pin_len
                      && ((v[i].address.len == flag->pin_len
                           && ngx_strncmp(v[i].address.data, flag->pin,
                                          flag->pin_len) == 0)
                          || (v[i].server.len == flag->pin_len
                              && ngx_strncmp(v[i].server.data, flag->pin,
                                             flag->pin_len) == 0));
    }

    return views;
}


/* ---------------------------------------------------------------- output */

static u_char *
ngx_http_ha_optout_out_reserve(ngx_http_ha_optout_out_t *out, size_t n)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (out->error) {
        return NULL;
    }

    if (out->buf && (size_t) (out->buf->end - out->buf->last) >= n) {
        return out->buf->last;
    }

    b = ngx_create_temp_buf(out->pool, ngx_max(n, 8192));
    cl = ngx_alloc_chain_link(out->pool);

    if (b == NULL || cl == NULL) {
        out->error = 1;
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;
    *out->last = cl;
    out->last = &cl->next;
    out->buf = b;

    return b->last;
}


static void
ngx_http_ha_optout_out_commit(ngx_http_ha_optout_out_t *out, u_char *p)
{
    out->size += p - out->buf->last;
    out->buf->last = p;
}


static void
ngx_http_ha_optout_out_raw(ngx_http_ha_optout_out_t *out, u_char *data,
    size_t len)
{
    u_char  *p;

    p = ngx_http_ha_optout_out_reserve(out, len);
    if (p) {
        ngx_http_ha_optout_out_commit(out, ngx_cpymem(p, data, len));
    }
}


#define ngx_http_ha_optout_out_lit(out, s)                                    \
    ngx_http_ha_optout_out_raw(out, (u_char *) s, sizeof(s) - 1)


/* "max" bounds what fmt can print: numbers and literals only, no text */

static void
ngx_http_ha_optout_out_printf(ngx_http_ha_optout_out_t *out, size_t max,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    p = ngx_http_ha_optout_out_reserve(out, max);
    if (p == NULL) {
        return;
    }

    va_start(args, fmt);
    p = ngx_vslprintf(p, p + max, fmt, args);
    va_end(args);

    ngx_http_ha_optout_out_commit(out, p);
}


/*
 * every value that reaches the HTML page goes through here: HTML escaped,
 * and control bytes (a newline too) shown as \n, \r, \t or \xHH, so that
 * a value stays on its line of the page's source
 */

static void
ngx_http_ha_optout_out_html(ngx_http_ha_optout_out_t *out, u_char *data,
    size_t len)
{
    u_char  *p, *last, *run;
    size_t   n;

    last = data + len;

    while (data < last) {

        for (run = data; run < last && *run >= 0x20 && *run != 0x7f; run++) {
            /* void */
        }

        if (run > data) {
            n = run - data;
            p = ngx_http_ha_optout_out_reserve(out,
                                       n + ngx_escape_html(NULL, data, n));
            if (p == NULL) {
                return;
            }

            ngx_http_ha_optout_out_commit(out,
                                 (u_char *) ngx_escape_html(p, data, n));
            data = run;
            continue;
        }

        p = ngx_http_ha_optout_out_reserve(out, 4);
        if (p == NULL) {
            return;
        }

        ngx_http_ha_optout_out_commit(out,
                     ngx_http_ha_optout_escape(p, 4, data, 1));
        data++;
    }
}


/* ----------------------------------------------------------- the truth */

/*
 * What one upstream's card, JSON object and metrics say beyond the flag:
 * its servers, the policy's protection, approvers and next window, the
 * counters since
 * the acting flag was set, and how HA comes back.
 */

static ngx_int_t
ngx_http_ha_optout_status_truth(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_srv_conf_t *hscf,
    time_t now, ngx_http_ha_optout_truth_t *t)
{
    u_char                      *p;
    ngx_http_ha_optout_rec_t    *rec;
    ngx_http_ha_optout_since_t  *since;

    ngx_memzero(t, sizeof(ngx_http_ha_optout_truth_t));

    t->flag = ngx_http_ha_optout_acting(hscf, now);

    t->peers = ngx_http_ha_optout_status_peers(r->pool, hscf, t->flag);
    if (t->peers == NULL) {
        return NGX_ERROR;
    }

    t->protect = ngx_http_ha_optout_policy_protected(hmcf, &hscf->name);
    t->approvers = ngx_http_ha_optout_policy_approvers(hmcf, &hscf->name,
                                                       &t->approval_ttl);

    if (ngx_http_ha_optout_policy_next_window(hmcf, hscf, now, &t->wstart,
                                              &t->wend, &t->wflag)
        != NGX_OK)
    {
        t->wflag = NULL;
    }

    if (t->flag == NULL) {
        return NGX_OK;
    }

    rec = hscf->rec;

    if (rec) {
        t->suppressed = rec->failover_suppressed;
        t->pinned = rec->pinned_requests;
        t->bypassed = rec->replication_bypassed;

        /* a config flag acts since nginx started: the lifetime counters */

        if (t->flag->source != NGX_HA_OPTOUT_SRC_CONFIG) {
            since = &rec->since[t->flag->source - 1];

            if (since->ident == ngx_http_ha_optout_flag_ident(t->flag)) {
                t->suppressed -= ngx_min(t->suppressed, since->suppressed);
                t->pinned -= ngx_min(t->pinned, since->pinned);
                t->bypassed -= ngx_min(t->bypassed, since->bypassed);
            }
        }
    }

    p = ngx_pnalloc(r->pool, 2 * NGX_HA_OPTOUT_NAME_LEN
                             + hmcf->environment.len + 160);
    if (p == NULL) {
        return NGX_ERROR;
    }

    t->restore.data = p;

    switch (t->flag->source) {

    case NGX_HA_OPTOUT_SRC_API:
        p = ngx_sprintf(p, "DELETE v1/flags/%V "
                        "(ha-optoutctl clear --upstream %V)",
                        &hscf->name, &hscf->name);
        break;

    case NGX_HA_OPTOUT_SRC_FLEET:
        p = ngx_sprintf(p, "clear it in etcd: ha-optoutctl clear --etcd URLS "
                        "--environment %s%V --upstream %V (the agents then "
                        "DELETE v1/fleet/%V)",
                        hmcf->environment.len ? "" : "ENV",
                        &hmcf->environment, &hscf->name, &hscf->name);
        break;

    case NGX_HA_OPTOUT_SRC_WINDOW:
        p = ngx_cpymem(p, "ends with its window at ",
                       sizeof("ends with its window at ") - 1);
        p = ngx_http_ha_optout_time_iso(p, t->flag->expires_at);
        break;

    default:
        p = ngx_sprintf(p, "remove its ha_optout_flag line from nginx.conf "
                        "and reload");
    }

    t->restore.len = p - t->restore.data;

    return NGX_OK;
}


/* ------------------------------------------------------------------ JSON */

static json_t *
ngx_http_ha_optout_status_upstream(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now)
{
    u_char                           ws[sizeof("2026-11-27T10:00:00Z")];
    u_char                           we[sizeof("2026-11-27T10:00:00Z")];
    u_char                           what[NGX_HA_OPTOUT_TEXT_LEN];
    json_t                          *servers, *s, *up, *nw, *sf;
    ngx_uint_t                       i;
    ngx_array_t                     *peers;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t       *flag;
    ngx_http_ha_optout_truth_t       t;
    ngx_http_ha_optout_peer_view_t  *v;

    if (ngx_http_ha_optout_status_truth(r, hmcf, hscf, now, &t) != NGX_OK) {
        return NULL;
    }

    flag = t.flag;
    peers = t.peers;

    servers = json_array();
    if (servers == NULL) {
        return NULL;
    }

    v = peers->elts;

    for (i = 0; i < peers->nelts; i++) {
        s = json_pack("{s:s%,s:b,s:b,s:b,s:I,s:I,s:I,s:b}",
                      "address", v[i].address.data, v[i].address.len,
                      "backup", (int) v[i].backup,
                      "down", (int) v[i].down,
                      "failed", (int) v[i].failed,
                      "fails", (json_int_t) v[i].fails,
                      "max_fails", (json_int_t) v[i].max_fails,
                      "fail_timeout", (json_int_t) v[i].fail_timeout,
                      "pinned", (int) v[i].pinned);

        if (json_array_append_new(servers, s) != 0) {
            json_decref(servers);
            return NULL;
        }
    }

    rec = hscf->rec;

    nw = json_null();

    if (t.wflag) {
        nw = json_pack("{s:s%,s:s%,s:b,s:s%,s:s%}",
                       "start", ws,
                       ngx_http_ha_optout_time_iso(ws, t.wstart) - ws,
                       "end", we,
                       ngx_http_ha_optout_time_iso(we, t.wend) - we,
                       "open", (int) (t.wstart <= now),
                       "what", what,
                       ngx_http_ha_optout_flag_text(t.wflag, what),
                       "reason", t.wflag->reason,
                       (size_t) t.wflag->reason_len);
    }

    sf = json_null();

    if (flag) {
        sf = json_pack("{s:I,s:I,s:I}",
                       "failover_suppressed", (json_int_t) t.suppressed,
                       "pinned_requests", (json_int_t) t.pinned,
                       "replication_bypassed", (json_int_t) t.bypassed);
    }

    up = json_pack("{s:o,s:{s:o,s:o,s:o,s:o},s:o,s:I,s:I,s:I,s:I}",
        "flag", ngx_http_ha_optout_flag_json(flag, &hscf->name,
                                             &hmcf->environment),
        "layers",
        "api", ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_layer(hscf, NGX_HA_OPTOUT_SRC_API, now),
                   &hscf->name, &hmcf->environment),
        "fleet", ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_layer(hscf, NGX_HA_OPTOUT_SRC_FLEET,
                                            now),
                   &hscf->name, &hmcf->environment),
        "window", ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_layer(hscf, NGX_HA_OPTOUT_SRC_WINDOW,
                                            now),
                   &hscf->name, &hmcf->environment),
        "config", ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_layer(hscf, NGX_HA_OPTOUT_SRC_CONFIG,
                                            now),
                   &hscf->name, &hmcf->environment),
        "servers", servers,
        "failover_suppressed",
        (json_int_t) (rec ? rec->failover_suppressed : 0),
        "pinned_requests", (json_int_t) (rec ? rec->pinned_requests : 0),
        "replication_bypassed",
        (json_int_t) (rec ? rec->replication_bypassed : 0),
        "sticky_entries", (json_int_t) (rec ? rec->sticky_entries : 0));

    if (up == NULL
        || json_object_set_new(up, "protected", json_boolean(t.protect)) != 0
        || json_object_set_new(up, "approvers",
                               json_integer((json_int_t) t.approvers))
           != 0
        || json_object_set_new(up, "next_window", nw) != 0
        || json_object_set_new(up, "since_flag", sf) != 0
        || json_object_set_new(up, "restore", t.restore.len
                                ? json_stringn((char *) t.restore.data,
                                               t.restore.len)
                                : json_null())
           != 0
        || json_object_set_new(up, "pending_approvals",
               ngx_http_ha_optout_approvals_json(&hscf->name, now))
           != 0)
    {
        json_decref(up);
        return NULL;
    }

    return up;
}


static ngx_int_t
ngx_http_ha_optout_status_json(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out)
{
    u_char                          now[sizeof("2026-11-27T10:00:00Z")];
    json_t                          *root, *upstreams, *up;
    time_t                           t;
    ngx_str_t                        text;
    ngx_uint_t                       i;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    t = ngx_time();

    upstreams = json_object();
    if (upstreams == NULL) {
        return NGX_ERROR;
    }

    hscfp = hmcf->upstreams.elts;

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        up = ngx_http_ha_optout_status_upstream(r, hmcf, hscfp[i], t);

        if (up == NULL
            || json_object_setn_new(upstreams,
                                    (const char *) hscfp[i]->name.data,
                                    hscfp[i]->name.len, up)
               != 0)
        {
            json_decref(upstreams);
            return NGX_ERROR;
        }
    }

    root = json_pack("{s:s%,s:s,s:s,s:s%,s:o,s:{s:I,s:I,s:I}}",
                     "environment", hmcf->environment.data,
                     hmcf->environment.len,
                     "nginx_version", NGINX_VERSION,
                     "module_version", NGX_HA_OPTOUT_VERSION,
                     "generated_at", now,
                     ngx_http_ha_optout_time_iso(now, t) - now,
                     "upstreams", upstreams,
                     "sticky",
                     "entries",
                     (json_int_t) ngx_http_ha_optout_sh->sticky_count,
                     "capacity",
                     (json_int_t) ngx_http_ha_optout_sh->sticky_max,
                     "evicted",
                     (json_int_t) ngx_http_ha_optout_sh->sticky_evicted);

    if (ngx_http_ha_optout_json_out(r->pool, root, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_ha_optout_out_raw(out, text.data, text.len);

    return NGX_OK;
}


/* ------------------------------------------------------------ Prometheus */

/* the one escaper of label values: backslash, double quote, newline */

static u_char *
ngx_http_ha_optout_prom_escape(u_char *dst, u_char *src, size_t len)
{
    while (len--) {

        switch (*src) {

        case '\\':
        case '"':
            *dst++ = '\\';
            *dst++ = *src;
            break;

        case '\n':
            *dst++ = '\\';
            *dst++ = 'n';
            break;

        default:
            *dst++ = *src;
        }

        src++;
    }

    return dst;
}


static void
ngx_http_ha_optout_prom_family(ngx_http_ha_optout_out_t *out, char *name,
    char *type, char *help)
{
    ngx_http_ha_optout_out_printf(out, 2 * ngx_strlen(name) + ngx_strlen(type)
                                       + ngx_strlen(help) + 32,
                                  "# HELP %s %s\n# TYPE %s %s\n",
                                  name, help, name, type);
}


/* name{labels[0]="...",...} value; labels are key/value pairs */

static void
ngx_http_ha_optout_prom_sample(ngx_http_ha_optout_out_t *out, char *name,
    ngx_keyval_t *labels, ngx_uint_t n, uint64_t value)
{
    u_char      *p;
    size_t       len;
    ngx_uint_t   i;

    len = ngx_strlen(name) + sizeof("{} \n") + NGX_INT64_LEN;

    for (i = 0; i < n; i++) {
        len += labels[i].key.len + sizeof("=\"\",") + 2 * labels[i].value.len;
    }

    p = ngx_http_ha_optout_out_reserve(out, len);
    if (p == NULL) {
        return;
    }

    p = ngx_sprintf(p, "%s", name);

    for (i = 0; i < n; i++) {
        *p++ = i ? ',' : '{';
        p = ngx_cpymem(p, labels[i].key.data, labels[i].key.len);
        *p++ = '=';
        *p++ = '"';
        p = ngx_http_ha_optout_prom_escape(p, labels[i].value.data,
                                           labels[i].value.len);
        *p++ = '"';
    }

    if (n) {
        *p++ = '}';
    }

    p = ngx_sprintf(p, " %uL\n", value);

    ngx_http_ha_optout_out_commit(out, p);
}


/* one per-server counter of every upstream: the field at "offset" */

static void
ngx_http_ha_optout_prom_servers(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, char *name, size_t offset)
{
    ngx_uint_t                         i, j;
    ngx_keyval_t                       l[2];
    ngx_http_ha_optout_rec_t          *rec;
    ngx_http_ha_optout_srv_conf_t    **hscfp;
    ngx_http_ha_optout_server_stat_t  *st;

    hscfp = hmcf->upstreams.elts;

    ngx_str_set(&l[0].key, "upstream");
    ngx_str_set(&l[1].key, "server");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        rec = hscfp[i]->rec;
        l[0].value = hscfp[i]->name;

        for (j = 0; rec && j < rec->nservers; j++) {
            st = &rec->servers[j];

            if (st->len == 0) {
                continue;       /* a free slot */
            }

            l[1].value.data = st->name;
            l[1].value.len = st->len;
            ngx_http_ha_optout_prom_sample(out, name, l, 2,
                                 *(ngx_atomic_t *) ((u_char *) st + offset));
        }
    }
}


static void
ngx_http_ha_optout_prom_upstreams(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, time_t now)
{
    ngx_uint_t                         i, j;
    ngx_keyval_t                       l[2], k[3];
    ngx_http_ha_optout_rec_t          *rec;
    ngx_http_ha_optout_flag_t         *flag;
    ngx_http_ha_optout_srv_conf_t    **hscfp;

    hscfp = hmcf->upstreams.elts;

    ngx_str_set(&l[0].key, "environment");
    ngx_str_set(&l[1].key, "upstream");
    l[0].value = hmcf->environment;

    ngx_http_ha_optout_prom_family(out, "ha_optout_active", "gauge",
        "1 while an opt-out (any layer) suspends HA on the upstream");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        l[1].value = hscfp[i]->name;
        ngx_http_ha_optout_prom_sample(out, "ha_optout_active", l, 2,
                       ngx_http_ha_optout_acting(hscfp[i], now) ? 1 : 0);
    }

    /* every layer, so a fleet flag beneath an API flag shows too */

    ngx_str_set(&k[0].key, "environment");
    ngx_str_set(&k[1].key, "upstream");
    ngx_str_set(&k[2].key, "layer");
    k[0].value = hmcf->environment;

    ngx_http_ha_optout_prom_family(out, "ha_optout_layer_active", "gauge",
        "1 while a layer (api, fleet, window, config) holds a live flag");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        k[1].value = hscfp[i]->name;

        for (j = NGX_HA_OPTOUT_SRC_N; j-- > 0; /* void */) {
            k[2].value = ngx_http_ha_optout_layer_names[j];
            ngx_http_ha_optout_prom_sample(out, "ha_optout_layer_active", k,
                3, ngx_http_ha_optout_layer(hscfp[i], j, now) ? 1 : 0);
        }
    }

    ngx_str_set(&l[0].key, "upstream");
    ngx_str_set(&l[1].key, "server");

    ngx_http_ha_optout_prom_family(out,
        "ha_optout_flag_expiry_timestamp_seconds", "gauge",
        "Unix time at which the acting opt-out reverts by itself");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        flag = ngx_http_ha_optout_acting(hscfp[i], now);

        if (flag && flag->expires_at) {
            l[0].value = hscfp[i]->name;
            ngx_http_ha_optout_prom_sample(out,
                                "ha_optout_flag_expiry_timestamp_seconds",
                                l, 1, flag->expires_at);
        }
    }

    ngx_http_ha_optout_prom_family(out, "ha_optout_failover_suppressed_total",
        "counter", "Failovers that would have happened but were suppressed");
    ngx_http_ha_optout_prom_servers(out, hmcf,
        "ha_optout_failover_suppressed_total",
        offsetof(ngx_http_ha_optout_server_stat_t, suppressed));

    ngx_http_ha_optout_prom_family(out, "ha_optout_pinned_requests_total",
        "counter", "Requests sent to a pinned server");
    ngx_http_ha_optout_prom_servers(out, hmcf,
        "ha_optout_pinned_requests_total",
        offsetof(ngx_http_ha_optout_server_stat_t, pinned));

    ngx_http_ha_optout_prom_family(out,
        "ha_optout_replication_bypassed_total", "counter",
        "Mirrored requests answered 204 instead of being replicated");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        rec = hscfp[i]->rec;
        l[0].value = hscfp[i]->name;
        ngx_http_ha_optout_prom_sample(out,
                                       "ha_optout_replication_bypassed_total",
                                       l, 1,
                                       rec ? rec->replication_bypassed : 0);
    }

    ngx_str_set(&l[1].key, "action");

    ngx_http_ha_optout_prom_family(out, "ha_optout_changes_total", "counter",
        "Opt-out changes by action (set, clear, expire, ...)");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        rec = hscfp[i]->rec;
        l[0].value = hscfp[i]->name;

        for (j = 0; rec && j < NGX_HA_OPTOUT_ACT_N; j++) {
            l[1].value.data = (u_char *) ngx_http_ha_optout_actions[j];
            l[1].value.len = ngx_strlen(ngx_http_ha_optout_actions[j]);
            ngx_http_ha_optout_prom_sample(out, "ha_optout_changes_total",
                                           l, 2, rec->changes[j]);
        }
    }

    ngx_http_ha_optout_prom_family(out, "ha_optout_pending_approvals",
        "gauge", "Writes waiting for approval (policy \"approvers\")");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        l[0].value = hscfp[i]->name;
        ngx_http_ha_optout_prom_sample(out, "ha_optout_pending_approvals",
            l, 1, ngx_http_ha_optout_approvals_count(&hscfp[i]->name,
                                                     ngx_time()));
    }
}


static ngx_str_t *
ngx_http_ha_optout_method_name(ngx_uint_t method)
{
    ngx_http_ha_optout_method_t  *m;

    for (m = ngx_http_ha_optout_methods; m->method; m++) {
        if (m->method == method) {
            break;
        }
    }

    return &m->name;
}


static void
ngx_http_ha_optout_prom_admin(ngx_http_ha_optout_out_t *out)
{
    u_char                            code[NGX_INT_T_LEN];
    ngx_uint_t                        i, method, status;
    ngx_keyval_t                      l[2];
    ngx_http_ha_optout_admin_stat_t  *st;

    st = ngx_http_ha_optout_sh->admin;

    ngx_str_set(&l[0].key, "method");
    ngx_str_set(&l[1].key, "code");

    ngx_http_ha_optout_prom_family(out, "ha_optout_admin_requests_total",
        "counter", "Admin API requests by method and response status");

    for (i = 0; i < NGX_HA_OPTOUT_ADMIN_CODES * 6; i++) {

        /* a slot's status is written before its method (see store.c) */
        method = st[i].method;
        ngx_memory_barrier();
        status = st[i].status;

        if (method == 0) {
            break;
        }

        l[0].value = *ngx_http_ha_optout_method_name(method);
        l[1].value.data = code;
        l[1].value.len = ngx_sprintf(code, "%ui", status) - code;

        ngx_http_ha_optout_prom_sample(out, "ha_optout_admin_requests_total",
                                       l, 2, st[i].count);
    }

    ngx_str_set(&l[0].key, "reason");

    ngx_http_ha_optout_prom_family(out, "ha_optout_auth_failures_total",
        "counter", "Admin API requests refused by token checks, by reason");

    for (i = 0;
         i < NGX_HA_OPTOUT_AUTH_REASONS && ngx_http_ha_optout_auth_reasons[i];
         i++)
    {
        l[0].value.data = (u_char *) ngx_http_ha_optout_auth_reasons[i];
        l[0].value.len = ngx_strlen(ngx_http_ha_optout_auth_reasons[i]);

        ngx_http_ha_optout_prom_sample(out, "ha_optout_auth_failures_total",
                                       l, 1,
                                       ngx_http_ha_optout_sh
                                       ->auth_failures[i]);
    }
}


/*
 * The length of the longest prefix of s, at most max bytes, that is whole
 * UTF-8 characters: a label value must be valid UTF-8, so a cut never
 * splits a character, and an invalid sequence (overlong, a surrogate,
 * above U+10FFFF) ends the value.
 */

static size_t
ngx_http_ha_optout_prom_utf8_cut(u_char *s, size_t len, size_t max)
{
    u_char    c;
    size_t    i, k, n;
    uint32_t  u, min;

    if (len > max) {
        len = max;
    }

    for (i = 0; i < len; i += n + 1) {
        c = s[i];

        if (c < 0x80) {
            n = 0;
            continue;
        }

        if (c >= 0xc2 && c <= 0xdf) {
            n = 1; u = c & 0x1f; min = 0x80;

        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2; u = c & 0x0f; min = 0x800;

        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3; u = c & 0x07; min = 0x10000;

        } else {
            break;
        }

        if (len - i - 1 < n) {
            break;                      /* cut here, or incomplete */
        }

        for (k = 1; k <= n && (s[i + k] & 0xc0) == 0x80; k++) {
            u = (u << 6) | (s[i + k] & 0x3f);
        }

        if (k <= n || u < min || u > 0x10ffff
            || (u >= 0xd800 && u <= 0xdfff))
        {
            break;
        }
    }

    return i;
}


/*
 * Who holds each suspended upstream and why, for alert annotations: one
 * series per acting flag, value 1.  The labels are few per upstream (a
 * new series when the flag is replaced), the reason is cut to
 * NGX_HA_OPTOUT_PROM_REASON_LEN bytes; the whole of it is in the JSON.
 */

static void
ngx_http_ha_optout_prom_info(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, time_t now)
{
    ngx_uint_t                         i;
    ngx_keyval_t                       l[5];
    ngx_http_ha_optout_flag_t         *flag;
    ngx_http_ha_optout_srv_conf_t    **hscfp;

    hscfp = hmcf->upstreams.elts;

    ngx_str_set(&l[0].key, "environment");
    ngx_str_set(&l[1].key, "upstream");
    ngx_str_set(&l[2].key, "layer");
    ngx_str_set(&l[3].key, "actor");
    ngx_str_set(&l[4].key, "reason");
    l[0].value = hmcf->environment;

    ngx_http_ha_optout_prom_family(out, "ha_optout_flag_info", "gauge",
        "The acting opt-out: its layer, actor and reason (cut to 128 bytes)");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        flag = ngx_http_ha_optout_acting(hscfp[i], now);

        if (flag == NULL) {
            continue;
        }

        l[1].value = hscfp[i]->name;
        l[2].value = ngx_http_ha_optout_layer_names[flag->source];

        l[3].value.data = flag->actor;
        l[3].value.len = ngx_http_ha_optout_prom_utf8_cut(flag->actor,
                                 flag->actor_len, NGX_HA_OPTOUT_ACTOR_LEN);

        l[4].value.data = flag->reason;
        l[4].value.len = ngx_http_ha_optout_prom_utf8_cut(flag->reason,
                                 flag->reason_len,
                                 NGX_HA_OPTOUT_PROM_REASON_LEN);

        ngx_http_ha_optout_prom_sample(out, "ha_optout_flag_info", l, 5, 1);
    }
}


/* the servers' state, the policy, the counters since the flag, restore */

static ngx_int_t
ngx_http_ha_optout_prom_truth(ngx_http_request_t *r,
    ngx_http_ha_optout_out_t *out, ngx_http_ha_optout_main_conf_t *hmcf,
    time_t now)
{
    ngx_uint_t                        i, j, n;
    ngx_keyval_t                      l[2];
    ngx_http_ha_optout_truth_t       *t;
    ngx_http_ha_optout_peer_view_t   *v;
    ngx_http_ha_optout_srv_conf_t   **hscfp;

    n = hmcf->upstreams.nelts;
    hscfp = hmcf->upstreams.elts;

    t = ngx_pcalloc(r->pool, (n + 1) * sizeof(ngx_http_ha_optout_truth_t));
    if (t == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_ha_optout_status_truth(r, hmcf, hscfp[i], now, &t[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_str_set(&l[0].key, "upstream");
    ngx_str_set(&l[1].key, "server");

    ngx_http_ha_optout_prom_family(out, "ha_optout_server_failed", "gauge",
        "1 while nginx skips the server: fails >= max_fails within "
        "fail_timeout");

    for (i = 0; i < n; i++) {
        l[0].value = hscfp[i]->name;
        v = t[i].peers->elts;

        for (j = 0; j < t[i].peers->nelts; j++) {
            l[1].value = v[j].address;
            ngx_http_ha_optout_prom_sample(out, "ha_optout_server_failed",
                                           l, 2, v[j].failed);
        }
    }

    ngx_http_ha_optout_prom_family(out, "ha_optout_server_pinned", "gauge",
        "1 for the server the acting opt-out pins");

    for (i = 0; i < n; i++) {
        l[0].value = hscfp[i]->name;
        v = t[i].peers->elts;

        for (j = 0; j < t[i].peers->nelts; j++) {
            l[1].value = v[j].address;
            ngx_http_ha_optout_prom_sample(out, "ha_optout_server_pinned",
                                           l, 2, v[j].pinned);
        }
    }

    ngx_http_ha_optout_prom_family(out, "ha_optout_upstream_protected",
        "gauge", "1 when policy lets the API opt out only in windows");

    for (i = 0; i < n; i++) {
        l[0].value = hscfp[i]->name;
        ngx_http_ha_optout_prom_sample(out, "ha_optout_upstream_protected",
                                       l, 1, t[i].protect);
    }

    ngx_http_ha_optout_prom_family(out, "ha_optout_upstream_approvers",
        "gauge", "approvals by others that an API opt-out waits for "
        "(policy approvers)");

    for (i = 0; i < n; i++) {
        l[0].value = hscfp[i]->name;
        ngx_http_ha_optout_prom_sample(out, "ha_optout_upstream_approvers",
                                       l, 1, t[i].approvers);
    }

    ngx_http_ha_optout_prom_family(out,
        "ha_optout_next_window_start_timestamp_seconds", "gauge",
        "Unix time at which the open or next policy window starts");

    for (i = 0; i < n; i++) {
        if (t[i].wflag) {
            l[0].value = hscfp[i]->name;
            ngx_http_ha_optout_prom_sample(out,
                "ha_optout_next_window_start_timestamp_seconds", l, 1,
                t[i].wstart);
        }
    }

    ngx_http_ha_optout_prom_family(out,
        "ha_optout_next_window_end_timestamp_seconds", "gauge",
        "Unix time at which the open or next policy window ends");

    for (i = 0; i < n; i++) {
        if (t[i].wflag) {
            l[0].value = hscfp[i]->name;
            ngx_http_ha_optout_prom_sample(out,
                "ha_optout_next_window_end_timestamp_seconds", l, 1,
                t[i].wend);
        }
    }

    ngx_http_ha_optout_prom_family(out,
        "ha_optout_flag_failover_suppressed", "gauge",
        "Failovers suppressed since the acting opt-out was set");
    ngx_http_ha_optout_prom_family(out,
        "ha_optout_flag_pinned_requests", "gauge",
        "Requests sent to the pin since the acting opt-out was set");
    ngx_http_ha_optout_prom_family(out,
        "ha_optout_flag_replication_bypassed", "gauge",
        "Mirrored requests bypassed since the acting opt-out was set");

    for (i = 0; i < n; i++) {
        if (t[i].flag) {
            l[0].value = hscfp[i]->name;
            ngx_http_ha_optout_prom_sample(out,
                "ha_optout_flag_failover_suppressed", l, 1, t[i].suppressed);
            ngx_http_ha_optout_prom_sample(out,
                "ha_optout_flag_pinned_requests", l, 1, t[i].pinned);
            ngx_http_ha_optout_prom_sample(out,
                "ha_optout_flag_replication_bypassed", l, 1, t[i].bypassed);
        }
    }

    ngx_str_set(&l[1].key, "restore");

    ngx_http_ha_optout_prom_family(out, "ha_optout_flag_restore_info",
        "gauge", "How HA comes back on the upstream");

    for (i = 0; i < n; i++) {
        if (t[i].flag) {
            l[0].value = hscfp[i]->name;
            l[1].value = t[i].restore;
            ngx_http_ha_optout_prom_sample(out,
                                "ha_optout_flag_restore_info", l, 2, 1);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_status_prometheus(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out)
{
    ngx_http_ha_optout_prom_upstreams(out, hmcf, ngx_time());
    ngx_http_ha_optout_prom_info(out, hmcf, ngx_time());

    if (ngx_http_ha_optout_prom_truth(r, out, hmcf, ngx_time()) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_ha_optout_prom_admin(out);

    return NGX_OK;
}


/* ------------------------------------------------------------------ HTML */

static u_char *
ngx_http_ha_optout_status_left(u_char *p, time_t left)
{
    if (left >= 86400) {
        return ngx_sprintf(p, "%T d %02T h %02T m %02T s", left / 86400,
                           left % 86400 / 3600, left % 3600 / 60, left % 60);
    }

    if (left >= 3600) {
        return ngx_sprintf(p, "%T h %02T m %02T s", left / 3600,
                           left % 3600 / 60, left % 60);
    }

    if (left >= 60) {
        return ngx_sprintf(p, "%T m %02T s", left / 60, left % 60);
    }

    return ngx_sprintf(p, "%T s", left);
}


static void
ngx_http_ha_optout_html_time(ngx_http_ha_optout_out_t *out, time_t t)
{
    u_char  buf[sizeof("2026-11-27T10:00:00Z")];

    ngx_http_ha_optout_out_lit(out, "<time>");
    ngx_http_ha_optout_out_html(out, buf,
                                ngx_http_ha_optout_time_iso(buf, t) - buf);
    ngx_http_ha_optout_out_lit(out, "</time>");
}


static void
ngx_http_ha_optout_html_what(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_flag_t *flag)
{
    ngx_http_ha_optout_out_lit(out, "<ul class=\"what\">");

    if (flag->no_failover) {
        ngx_http_ha_optout_out_lit(out, "<li>failover <b>OFF</b>: errors "
                                   "reach clients, no retry, no switch to "
                                   "backup</li>");
    }

    if (flag->pin_len) {
        ngx_http_ha_optout_out_lit(out, "<li><b>PINNED</b> to <code>");
        ngx_http_ha_optout_out_html(out, flag->pin, flag->pin_len);
        ngx_http_ha_optout_out_lit(out, "</code>");

        if (flag->selector_len) {
            ngx_http_ha_optout_out_lit(out, " for requests whose selector "
                                       "is <code>");
            ngx_http_ha_optout_out_html(out, flag->selector,
                                        flag->selector_len);
            ngx_http_ha_optout_out_lit(out, "</code> (others balanced)");

        } else {
            ngx_http_ha_optout_out_lit(out, " (all requests)");
        }

        ngx_http_ha_optout_out_lit(out, "</li>");
    }

    if (flag->no_replication) {
        ngx_http_ha_optout_out_lit(out, "<li>replication <b>OFF</b>: "
                                   "mirrored copies are not sent</li>");
    }

    if (flag->sticky) {
        ngx_http_ha_optout_out_lit(out, "<li><b>STICKY</b>: clients stay on "
                                   "their first server</li>");
    }

    ngx_http_ha_optout_out_lit(out, "</ul>");
}


static void
ngx_http_ha_optout_html_flag(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag,
    time_t now)
{
    u_char      buf[64];
    ngx_uint_t  src;

    ngx_http_ha_optout_html_what(out, flag);

    ngx_http_ha_optout_out_lit(out, "<dl><dt>by</dt><dd class=\"actor\">");
    ngx_http_ha_optout_out_html(out, flag->actor, flag->actor_len);
    ngx_http_ha_optout_out_lit(out, "</dd><dt>why</dt><dd class=\"reason\">");
    ngx_http_ha_optout_out_html(out, flag->reason, flag->reason_len);
    ngx_http_ha_optout_out_lit(out, "</dd><dt>layer</dt><dd class=\"layer\">");
    ngx_http_ha_optout_out_html(out,
                              ngx_http_ha_optout_layer_names[flag->source].data,
                              ngx_http_ha_optout_layer_names[flag->source].len);

    /* what a DELETE of the acting layer would reveal */
    for (src = flag->source; src-- > 0; /* void */) {
        if (ngx_http_ha_optout_layer(hscf, src, now)) {
            ngx_http_ha_optout_out_lit(out, " <small>(a ");
            ngx_http_ha_optout_out_html(out,
                                  ngx_http_ha_optout_layer_names[src].data,
                                  ngx_http_ha_optout_layer_names[src].len);
            ngx_http_ha_optout_out_lit(out, " flag lies beneath)</small>");
            break;
        }
    }

    if (flag->set_at) {
        ngx_http_ha_optout_out_lit(out, "</dd><dt>since</dt><dd>");
        ngx_http_ha_optout_html_time(out, flag->set_at);
    }

    ngx_http_ha_optout_out_lit(out, "</dd><dt>time left</dt><dd>");

    if (flag->expires_at) {
        ngx_http_ha_optout_out_printf(out, 64, "<span class=\"left\" "
                                      "data-expires=\"%T\">",
                                      flag->expires_at);
        ngx_http_ha_optout_out_raw(out, buf,
                                   ngx_http_ha_optout_status_left(buf,
                                       ngx_max(flag->expires_at - now, 0))
                                   - buf);
        ngx_http_ha_optout_out_lit(out, "</span> <small>until ");
        ngx_http_ha_optout_html_time(out, flag->expires_at);
        ngx_http_ha_optout_out_lit(out, "</small>");

    } else {
        ngx_http_ha_optout_out_lit(out, "<span class=\"left none\">no TTL"
                                   "</span> <small>(lives while its "
                                   "config line or policy does)</small>");
    }

    ngx_http_ha_optout_out_lit(out, "</dd></dl>");
}


static void
ngx_http_ha_optout_html_servers(ngx_http_ha_optout_out_t *out,
    ngx_array_t *peers)
{
    ngx_uint_t                       i;
    ngx_http_ha_optout_peer_view_t  *v;

    ngx_http_ha_optout_out_lit(out, "<table class=\"servers\"><thead><tr>"
                               "<th>server</th><th>role</th><th>state</th>"
                               "<th>fails / max_fails</th>"
                               "<th>fail_timeout</th></tr></thead><tbody>");

    v = peers->elts;

    for (i = 0; i < peers->nelts; i++) {
        if (v[i].pinned) {
            ngx_http_ha_optout_out_lit(out, "<tr class=\"pinned\"><td>");
        } else {
            ngx_http_ha_optout_out_lit(out, "<tr><td>");
        }

        ngx_http_ha_optout_out_html(out, v[i].address.data,
                                    v[i].address.len);

        if (v[i].pinned) {
            ngx_http_ha_optout_out_lit(out, " <b class=\"pin\">pinned</b>");
        }

        if (v[i].backup) {
            ngx_http_ha_optout_out_lit(out, "</td><td>backup</td>");
        } else {
            ngx_http_ha_optout_out_lit(out, "</td><td>primary</td>");
        }

        if (v[i].down) {
            ngx_http_ha_optout_out_lit(out, "<td class=\"down\">down</td>");

        } else if (v[i].failed) {
            ngx_http_ha_optout_out_lit(out, "<td class=\"failed\">failed "
                                       "<small>(nginx skips it)</small>"
                                       "</td>");
        } else {
            ngx_http_ha_optout_out_lit(out, "<td>up</td>");
        }

        ngx_http_ha_optout_out_printf(out, 64, "<td>%ui / %ui</td>"
                                      "<td>%T s</td></tr>",
                                      v[i].fails, v[i].max_fails,
                                      v[i].fail_timeout);
    }

    ngx_http_ha_optout_out_lit(out, "</tbody></table>");
}


/* pending approvals of the upstream (policy "approvers") */

static void
ngx_http_ha_optout_html_approvals(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now)
{
    u_char                         *p, left[64];
    ngx_uint_t                      i, k, n;
    ngx_http_ha_optout_approval_t  *snap, *a;

    if (ngx_http_ha_optout_approvals_count(&hscf->name, now) == 0) {
        return;
    }

    snap = ngx_alloc(NGX_HA_OPTOUT_APPROVALS_MAX
                     * sizeof(ngx_http_ha_optout_approval_t),
                     ngx_cycle->log);
    if (snap == NULL) {
        return;
    }

    n = ngx_http_ha_optout_approvals_snapshot(snap);

    for (i = 0; i < n; i++) {
        a = &snap[i];

        if (a->expires_at <= now || a->upstream_len != hscf->name.len
            || ngx_strncmp(a->upstream, hscf->name.data, a->upstream_len)
               != 0)
        {
            continue;
        }

        ngx_http_ha_optout_out_printf(out, 128,
            "<p class=\"approval\">Pending approval <code>%016xL</code> "
            "requested by <b>", a->id);
        ngx_http_ha_optout_out_html(out, a->flag.actor, a->flag.actor_len);
        ngx_http_ha_optout_out_lit(out, "</b>: ");
        ngx_http_ha_optout_html_what(out, &a->flag);
        ngx_http_ha_optout_out_lit(out, ", reason \"");
        ngx_http_ha_optout_out_html(out, a->flag.reason, a->flag.reason_len);
        ngx_http_ha_optout_out_printf(out, 64, "\"; %ui of %ui approvals",
                                      (ngx_uint_t) a->flag.approvers,
                                      a->needed);

        for (k = 0; k < a->flag.approvers; k++) {
            if (k) {
                ngx_http_ha_optout_out_lit(out, ", ");
            } else {
                ngx_http_ha_optout_out_lit(out, " (");
            }

            ngx_http_ha_optout_out_html(out, a->flag.approver[k],
                                        a->flag.approver_len[k]);
        }

        if (a->flag.approvers) {
            ngx_http_ha_optout_out_lit(out, ")");
        }

        p = ngx_http_ha_optout_status_left(left, a->expires_at - now);
        ngx_http_ha_optout_out_lit(out, ", expires in ");
        ngx_http_ha_optout_out_raw(out, left, p - left);
        ngx_http_ha_optout_out_lit(out, "</p>");
    }

    ngx_free(snap);
}


static ngx_int_t
ngx_http_ha_optout_html_card(ngx_http_request_t *r,
    ngx_http_ha_optout_out_t *out, ngx_http_ha_optout_srv_conf_t *hscf,
    time_t now)
{
    u_char                       what[NGX_HA_OPTOUT_TEXT_LEN];
    u_char                      *p, left[64];
    ngx_array_t                 *peers;
    ngx_http_ha_optout_rec_t    *rec;
    ngx_http_ha_optout_flag_t   *flag;
    ngx_http_ha_optout_truth_t   t;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (ngx_http_ha_optout_status_truth(r, hmcf, hscf, now, &t) != NGX_OK) {
        return NGX_ERROR;
    }

    flag = t.flag;
    peers = t.peers;

    if (flag) {
        ngx_http_ha_optout_out_lit(out, "<section class=\"card suspended\">"
                                   "<h2><span class=\"name\">");
        ngx_http_ha_optout_out_html(out, hscf->name.data, hscf->name.len);
        ngx_http_ha_optout_out_lit(out, "</span> <span class=\"badge\">"
                                   "HA SUSPENDED</span></h2>");
        ngx_http_ha_optout_html_flag(out, hscf, flag, now);

        ngx_http_ha_optout_out_lit(out, "<dl><dt>restore</dt>"
                                   "<dd class=\"restore\"><code>");
        ngx_http_ha_optout_out_html(out, t.restore.data, t.restore.len);
        ngx_http_ha_optout_out_printf(out, 512, "</code></dd>"
            "<dt>since set</dt><dd class=\"since\">"
            "<b>%uA</b> failovers suppressed, <b>%uA</b> pinned requests, "
            "<b>%uA</b> replication bypassed</dd></dl>",
            t.suppressed, t.pinned, t.bypassed);

    } else {
        ngx_http_ha_optout_out_lit(out, "<section class=\"card normal\">"
                                   "<h2><span class=\"name\">");
        ngx_http_ha_optout_out_html(out, hscf->name.data, hscf->name.len);
        ngx_http_ha_optout_out_lit(out, "</span> <span class=\"badge\">"
                                   "HA normal</span></h2>");
    }

    ngx_http_ha_optout_out_lit(out, "<dl class=\"policy\">"
                               "<dt>next window</dt><dd class=\"window\">");

    if (t.wflag) {
        if (t.wstart <= now) {
            ngx_http_ha_optout_out_lit(out, "open now, ");
        }

        ngx_http_ha_optout_html_time(out, t.wstart);
        ngx_http_ha_optout_out_lit(out, " &ndash; ");
        ngx_http_ha_optout_html_time(out, t.wend);
        ngx_http_ha_optout_out_lit(out, " <code>");
        ngx_http_ha_optout_out_html(out, what,
                                    ngx_http_ha_optout_flag_text(t.wflag,
                                                                 what));
        ngx_http_ha_optout_out_lit(out, "</code> ");
        ngx_http_ha_optout_out_html(out, t.wflag->reason,
                                    t.wflag->reason_len);

    } else {
        ngx_http_ha_optout_out_lit(out, "none scheduled");
    }

    ngx_http_ha_optout_out_lit(out, "</dd><dt>protected</dt>"
                               "<dd class=\"protected\">");
    if (t.protect) {
        ngx_http_ha_optout_out_lit(out, "yes: the API may opt out only "
                                   "inside a window");
    } else {
        ngx_http_ha_optout_out_lit(out, "no");
    }

    ngx_http_ha_optout_out_lit(out, "</dd><dt>approval</dt>"
                               "<dd class=\"approvers\">");
    if (t.approvers) {
        p = ngx_http_ha_optout_status_left(left, t.approval_ttl);
        ngx_http_ha_optout_out_printf(out, 256, "%ui other%s must approve "
            "an API opt-out, within %*s; windows need none",
            t.approvers, t.approvers == 1 ? "" : "s", (size_t) (p - left),
            left);
    } else {
        ngx_http_ha_optout_out_lit(out, "not needed");
    }

    ngx_http_ha_optout_out_lit(out, "</dd></dl>");

    ngx_http_ha_optout_html_approvals(out, hscf, now);
    ngx_http_ha_optout_html_servers(out, peers);

    rec = hscf->rec;

    ngx_http_ha_optout_out_printf(out, 512,
        "<p class=\"counters\">"
        "<span><b>%uA</b> failovers suppressed</span>"
        "<span><b>%uA</b> pinned requests</span>"
        "<span><b>%uA</b> replication bypassed</span>"
        "<span><b>%uA</b> sticky entries</span></p></section>",
        rec ? rec->failover_suppressed : 0,
        rec ? rec->pinned_requests : 0,
        rec ? rec->replication_bypassed : 0,
        rec ? rec->sticky_entries : 0);

    return NGX_OK;
}


static const char  ngx_http_ha_optout_html_head[] =
"<!DOCTYPE html>\n"
"<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
"<meta name=\"robots\" content=\"noindex\">\n"
"<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>\n"
"<title>HA opt-out status</title>\n"
"<style>\n"
"body{font:15px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;"
"margin:0;background:#f4f5f7;color:#1d2330}\n"
"main{max-width:1100px;margin:0 auto;padding:16px}\n"
"header h1{font-size:20px;margin:0 0 4px}\n"
".meta{color:#5b6372;margin:0 0 12px;font-size:13px}\n"
".summary{font-size:22px;font-weight:700;padding:12px 16px;"
"border-radius:6px;margin-bottom:16px}\n"
".summary.bad{background:#c62828;color:#fff}\n"
".summary.ok{background:#2e7d32;color:#fff}\n"
".stale{background:#ffb300;color:#000;padding:8px 16px;border-radius:6px;"
"margin-bottom:12px;display:none}\n"
".card{background:#fff;border-radius:6px;padding:12px 16px;"
"margin-bottom:14px;box-shadow:0 1px 2px rgba(0,0,0,.12);"
"border-left:8px solid #2e7d32}\n"
".card.suspended{border-left-color:#c62828;background:#fff5f5}\n"
".card h2{margin:0 0 8px;font-size:20px}\n"
".badge{font-size:14px;padding:2px 10px;border-radius:12px;"
"vertical-align:middle;background:#2e7d32;color:#fff}\n"
".suspended .badge{background:#c62828;font-size:16px}\n"
".what{margin:4px 0 8px;padding-left:20px;font-size:16px}\n"
"dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;"
"margin:0 0 8px}\n"
"dt{color:#5b6372}dd{margin:0}\n"
".left{font-weight:700;font-size:18px;font-variant-numeric:tabular-nums}\n"
".left.soon{color:#c62828}\n"
"table{border-collapse:collapse;font-size:13px;margin:6px 0}\n"
"th,td{text-align:left;padding:2px 14px 2px 0}\n"
"th{color:#5b6372;font-weight:400}\n"
"tr.pinned td{font-weight:700}.pin{color:#c62828}.down{color:#c62828}\n"
".counters{margin:6px 0 0;font-size:13px;color:#5b6372}\n"
".counters span{margin-right:18px}.counters b{color:#1d2330}\n"
"code{background:#eceff3;padding:0 4px;border-radius:3px}\n"
"footer{font-size:12px;color:#5b6372}\n"
"</style></head>\n";


/* counts down every "time left" and swaps in a fresh page every few s */

static const char  ngx_http_ha_optout_html_script[] =
"(function () {\n"
"  var skew = 0, failed = 0;\n"
"  function sync() {\n"
"    var m = document.getElementById('status');\n"
"    skew = Number(m.getAttribute('data-now')) * 1000 - Date.now();\n"
"    document.title = m.getAttribute('data-title');\n"
"  }\n"
"  function fmt(s) {\n"
"    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),\n"
"        m = Math.floor(s % 3600 / 60), x = s % 60;\n"
"    function p(n) { return (n < 10 ? '0' : '') + n; }\n"
"    if (d) return d + ' d ' + p(h) + ' h ' + p(m) + ' m ' + p(x) + ' s';\n"
"    if (h) return h + ' h ' + p(m) + ' m ' + p(x) + ' s';\n"
"    if (m) return m + ' m ' + p(x) + ' s';\n"
"    return x + ' s';\n"
"  }\n"
"  function tick() {\n"
"    var now = Date.now() + skew;\n"
"    var l = document.querySelectorAll('.left[data-expires]');\n"
"    for (var i = 0; i < l.length; i++) {\n"
"      var s = Math.floor(Number(l[i].getAttribute('data-expires'))\n"
"                         - now / 1000);\n"
"      l[i].textContent = s > 0 ? fmt(s) : 'expired, HA returning';\n"
"      l[i].className = s < 300 ? 'left soon' : 'left';\n"
"    }\n"
"  }\n"
"  function refresh() {\n"
"    var u = location.pathname + '?format=html';\n"
"    fetch(u, {cache: 'no-store', headers: {Accept: 'text/html'}})\n"
"      .then(function (r) {\n"
"        if (!r.ok) throw new Error('HTTP ' + r.status);\n"
"        return r.text();\n"
"      })\n"
"      .then(function (t) {\n"
"        var d = new DOMParser().parseFromString(t, 'text/html');\n"
"        var n = d.getElementById('status');\n"
"        if (!n) throw new Error('no status in answer');\n"
"        document.getElementById('status').replaceWith(\n"
"          document.importNode(n, true));\n"
"        failed = 0; sync(); tick();\n"
"      })\n"
"      .catch(function (e) {\n"
"        var s = document.getElementById('stale');\n"
"        failed++;\n"
"        s.textContent = 'STALE: this page could not refresh (' + e.message\n"
"          + '); what you see may be out of date.';\n"
"        s.style.display = 'block';\n"
"      });\n"
"  }\n"
"  sync(); tick();\n"
"  setInterval(tick, 1000);\n"
"  setInterval(refresh, " NGX_HA_OPTOUT_REFRESH "000);\n"
"})();\n";


static void
ngx_http_ha_optout_html_header(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_uint_t suspended,
    ngx_uint_t total, time_t now)
{
    ngx_http_ha_optout_out_printf(out, 128, "<main id=\"status\" "
                                  "data-now=\"%T\" data-title=\"", now);

    if (suspended) {
        ngx_http_ha_optout_out_printf(out, 64, "(%ui) HA SUSPENDED - ",
                                      suspended);
    }

    ngx_http_ha_optout_out_html(out, hmcf->environment.data,
                                hmcf->environment.len);
    ngx_http_ha_optout_out_lit(out, " - HA opt-out status\">"
                               "<header><h1>HA opt-out status: ");
    ngx_http_ha_optout_out_html(out, hmcf->environment.data,
                                hmcf->environment.len);
    ngx_http_ha_optout_out_lit(out, "</h1><p class=\"meta\">nginx "
                               NGINX_VERSION " &middot; ha_optout "
                               NGX_HA_OPTOUT_VERSION " &middot; "
                               "generated ");
    ngx_http_ha_optout_html_time(out, now);
    ngx_http_ha_optout_out_lit(out, " &middot; refreshes every "
                               NGX_HA_OPTOUT_REFRESH " s</p>");

    if (suspended) {
        ngx_http_ha_optout_out_printf(out, 128, "<div class=\"summary bad\">"
                                      "HA SUSPENDED on %ui of %ui "
                                      "upstream%s</div>", suspended, total,
                                      total == 1 ? "" : "s");
    } else {
        ngx_http_ha_optout_out_printf(out, 128, "<div class=\"summary ok\">"
                                      "HA normal on all %ui upstream%s"
                                      "</div>", total,
                                      total == 1 ? "" : "s");
    }

    ngx_http_ha_optout_out_lit(out, "</header>");
}


static ngx_int_t
ngx_http_ha_optout_status_html(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out,
    ngx_str_t *nonce)
{
    time_t                           now;
    uint32_t                         rnd[2];
    ngx_uint_t                       i, pass, suspended;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    now = ngx_time();
    hscfp = hmcf->upstreams.elts;

    /* the page's one inline script is allowed by a per-response nonce */
    nonce->data = ngx_pnalloc(r->pool, 16);
    if (nonce->data == NULL) {
        return NGX_ERROR;
    }

    rnd[0] = (uint32_t) ngx_random();
    rnd[1] = (uint32_t) ngx_random() ^ (uint32_t) ngx_pid;
    nonce->len = ngx_hex_dump(nonce->data, (u_char *) rnd, 8) - nonce->data;

    suspended = 0;

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        if (ngx_http_ha_optout_acting(hscfp[i], now)) {
            suspended++;
        }
    }

    ngx_http_ha_optout_out_lit(out, ngx_http_ha_optout_html_head);
    ngx_http_ha_optout_out_lit(out, "<body><div class=\"stale\" id=\"stale\" "
                               "role=\"alert\"></div>");
    ngx_http_ha_optout_html_header(out, hmcf, suspended,
                                   hmcf->upstreams.nelts, now);

    /* suspended upstreams first: that is what the reader came for */

    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < hmcf->upstreams.nelts; i++) {
            if ((ngx_http_ha_optout_acting(hscfp[i], now) != NULL)
                != (pass == 0))
            {
                continue;
            }

            if (ngx_http_ha_optout_html_card(r, out, hscfp[i], now)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    ngx_http_ha_optout_out_lit(out, "<footer>Also as <a href=\"?format=json"
                               "\">JSON</a> and <a href=\"?format=prometheus"
                               "\">Prometheus metrics</a>.</footer></main>");

    ngx_http_ha_optout_out_printf(out, 64, "<script nonce=\"%V\">\n", nonce);

    ngx_http_ha_optout_out_lit(out, ngx_http_ha_optout_html_script);
    ngx_http_ha_optout_out_lit(out, "</script></body></html>\n");

    return NGX_OK;
}


/* -------------------------------------------------------------- response */

static ngx_int_t
ngx_http_ha_optout_status_header(ngx_http_request_t *r, char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_status_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_uint_t format, ngx_http_ha_optout_out_t *out, ngx_str_t *nonce)
{
    u_char     *csp;
    size_t      len;
    ngx_int_t   rc;

    if (ngx_http_ha_optout_status_header(r, "Cache-Control",
                                         (u_char *) "no-store", 8)
           != NGX_OK
        || ngx_http_ha_optout_status_header(r, "Vary", (u_char *) "Accept",
                                            6)
           != NGX_OK
        || ngx_http_ha_optout_status_header(r, "X-Content-Type-Options",
                                            (u_char *) "nosniff", 7)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (nonce->len) {
        /* nothing but this page's own style and script, and its refresh */
        len = sizeof("default-src 'none'; style-src 'unsafe-inline'; "
                     "script-src 'nonce-'; connect-src 'self'; "
                     "base-uri 'none'; form-action 'none'; "
                     "frame-ancestors 'none'") - 1 + nonce->len;

        csp = ngx_pnalloc(r->pool, len);
        if (csp == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(csp, "default-src 'none'; style-src 'unsafe-inline'; "
                    "script-src 'nonce-%V'; connect-src 'self'; "
                    "base-uri 'none'; form-action 'none'; "
                    "frame-ancestors 'none'", nonce);

        if (ngx_http_ha_optout_status_header(r, "Content-Security-Policy",
                                             csp, len)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = out->size;
    r->headers_out.content_type = ngx_http_ha_optout_status_types[format];
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->method == NGX_HTTP_HEAD || out->first == NULL) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out->buf->last_buf = (r == r->main) ? 1 : 0;
    out->buf->last_in_chain = 1;

    return ngx_http_output_filter(r, out->first);
}


static ngx_int_t
ngx_http_ha_optout_status_error(ngx_http_request_t *r, ngx_uint_t status,
    char *code, char *message)
{
    json_t                     *json;
    ngx_str_t                   text, nonce;
    ngx_http_ha_optout_out_t    out;

    if (status == NGX_HTTP_NOT_ALLOWED
        && ngx_http_ha_optout_status_header(r, "Allow",
                                            (u_char *) "GET, HEAD", 9)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    json = json_pack("{s:{s:i,s:s,s:s}}", "error", "status", (int) status,
                     "code", code, "message", message);

    if (ngx_http_ha_optout_json_out(r->pool, json, &text) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&out, sizeof(ngx_http_ha_optout_out_t));
    out.pool = r->pool;
    out.last = &out.first;

    ngx_http_ha_optout_out_raw(&out, text.data, text.len);

    if (out.error) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_null(&nonce);

    return ngx_http_ha_optout_status_send(r, status, NGX_HA_OPTOUT_FMT_JSON,
                                          &out, &nonce);
}
