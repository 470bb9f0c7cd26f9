
/*
 * ngx_ha_optout_module: the status endpoint, "ha_optout_status".
 *
 * One handler, three views of the same state: JSON (the contract, SPEC
 * section 6, status_json.c), the Prometheus text exposition format
 * (status_prom.c) and a single HTML page for the person on call
 * (status_html.c).  Everything is read at request time from the zone and
 * the upstreams' peers, so a change shows in the next scrape.
 *
 * This file: the handler and its format negotiation, what each view reads
 * of an upstream (its servers and "the truth"), the body they write into,
 * and the response (headers, errors).
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_status.h"

#include <jansson.h>


#define NGX_HA_OPTOUT_FMT_JSON   0
#define NGX_HA_OPTOUT_FMT_PROM   1
#define NGX_HA_OPTOUT_FMT_HTML   2


static ngx_int_t ngx_http_ha_optout_status_format(ngx_http_request_t *r,
    ngx_uint_t *format);
static ngx_array_t *ngx_http_ha_optout_status_peers(ngx_pool_t *pool,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag);
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


ngx_str_t  ngx_http_ha_optout_layer_names[] = {
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

                ngx_http_ha_optout_peer_view_set(v, peer, backup, now);
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

u_char *
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


void
ngx_http_ha_optout_out_commit(ngx_http_ha_optout_out_t *out, u_char *p)
{
    out->size += p - out->buf->last;
    out->buf->last = p;
}


void
ngx_http_ha_optout_out_raw(ngx_http_ha_optout_out_t *out, u_char *data,
    size_t len)
{
    u_char  *p;

    p = ngx_http_ha_optout_out_reserve(out, len);
    if (p) {
        ngx_http_ha_optout_out_commit(out, ngx_cpymem(p, data, len));
    }
}


/* "max" bounds what fmt can print: numbers and literals only, no text */

void
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


/* ----------------------------------------------------------- the truth */

/*
 * the counters since the acting flag was set: the upstream's, less what
 * they were when its layer took that flag (rec->since[])
 */

static void
ngx_http_ha_optout_truth_since(ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_http_ha_optout_truth_t *t)
{
    ngx_http_ha_optout_rec_t    *rec;
    ngx_http_ha_optout_since_t  *since;

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
}


/* how HA comes back: what lifts the acting flag, by its layer */

static ngx_int_t
ngx_http_ha_optout_truth_restore(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_http_ha_optout_truth_t *t)
{
    u_char  *p;

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


/*
 * What one upstream's card, JSON object and metrics say beyond the flag:
 * its servers, the policy's protection, approvers and next window, the
 * counters since the acting flag was set, and how HA comes back.
 */

ngx_int_t
ngx_http_ha_optout_status_truth(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_srv_conf_t *hscf,
    time_t now, ngx_http_ha_optout_truth_t *t)
{
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

    ngx_http_ha_optout_truth_since(hscf, t);

    return ngx_http_ha_optout_truth_restore(r, hmcf, hscf, t);
}


/* -------------------------------------------------------------- response */

static ngx_int_t
ngx_http_ha_optout_status_header(ngx_http_request_t *r, char *key,
    u_char *value, size_t len)
{
    if (ngx_http_ha_optout_header_out(r, key, value, len) == NULL) {
        return NGX_ERROR;
    }

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
