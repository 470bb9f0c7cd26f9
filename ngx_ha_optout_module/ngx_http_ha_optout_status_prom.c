
/*
 * ngx_ha_optout_module: the Prometheus view of the status endpoint, in
 * the text exposition format: the flags and layers of every upstream,
 * their servers' counters, the truth (servers, policy, since the flag),
 * the admin API's requests and refusals.
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_status.h"


/* the reason in ha_optout_flag_info, bytes */
#define NGX_HA_OPTOUT_PROM_REASON_LEN  128


typedef struct {
    ngx_uint_t                       method;
    ngx_str_t                        name;
} ngx_http_ha_optout_method_t;


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


/*
 * The one escaper of label values: backslash, double quote and newline as
 * the text format escapes them; any other control byte (a CR or an ESC a
 * reason may carry: reasons keep any UTF-8) becomes "?", as in flag_text(),
 * since the format has no escape for it and a raw CR splits the line for
 * some readers (SPEC 8: one record, one line).
 */

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
            *dst++ = (*src < 0x20 || *src == 0x7f) ? '?' : *src;
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


/* one sample of an upstream: name{upstream="..."} value */

static void
ngx_http_ha_optout_prom_upstream(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_srv_conf_t *hscf, char *name, uint64_t value)
{
    ngx_keyval_t  l;

    ngx_str_set(&l.key, "upstream");
    l.value = hscf->name;

    ngx_http_ha_optout_prom_sample(out, name, &l, 1, value);
}


/* the first labels of an upstream's flag: environment, upstream, layer */

static void
ngx_http_ha_optout_prom_flag_labels(ngx_keyval_t *l,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    ngx_str_set(&l[0].key, "environment");
    ngx_str_set(&l[1].key, "upstream");
    ngx_str_set(&l[2].key, "layer");
    l[0].value = hmcf->environment;
}


/* whether HA is suspended on each upstream, and by which layers */

static void
ngx_http_ha_optout_prom_active(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, time_t now)
{
    ngx_uint_t                         i, j;
    ngx_keyval_t                       l[3];
    ngx_http_ha_optout_srv_conf_t    **hscfp;

    hscfp = hmcf->upstreams.elts;

    /* ha_optout_active has the first two labels, layer_active all three */

    ngx_http_ha_optout_prom_flag_labels(l, hmcf);

    ngx_http_ha_optout_prom_family(out, "ha_optout_active", "gauge",
        "1 while an opt-out (any layer) suspends HA on the upstream");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        l[1].value = hscfp[i]->name;
        ngx_http_ha_optout_prom_sample(out, "ha_optout_active", l, 2,
                       ngx_http_ha_optout_acting(hscfp[i], now) ? 1 : 0);
    }

    /* every layer, so a fleet flag beneath an API flag shows too */

    ngx_http_ha_optout_prom_family(out, "ha_optout_layer_active", "gauge",
        "1 while a layer (api, fleet, window, config) holds a live flag");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        l[1].value = hscfp[i]->name;

        for (j = NGX_HA_OPTOUT_SRC_N; j-- > 0; /* void */) {
            l[2].value = ngx_http_ha_optout_layer_names[j];
            ngx_http_ha_optout_prom_sample(out, "ha_optout_layer_active", l,
                3, ngx_http_ha_optout_layer(hscfp[i], j, now) ? 1 : 0);
        }
    }
}


static void
ngx_http_ha_optout_prom_expiry(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, time_t now)
{
    ngx_uint_t                         i;
    ngx_http_ha_optout_flag_t         *flag;
    ngx_http_ha_optout_srv_conf_t    **hscfp;

    hscfp = hmcf->upstreams.elts;

    ngx_http_ha_optout_prom_family(out,
        "ha_optout_flag_expiry_timestamp_seconds", "gauge",
        "Unix time at which the acting opt-out reverts by itself");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        flag = ngx_http_ha_optout_acting(hscfp[i], now);

        if (flag && flag->expires_at) {
            ngx_http_ha_optout_prom_upstream(out, hscfp[i],
                                "ha_optout_flag_expiry_timestamp_seconds",
                                flag->expires_at);
        }
    }
}


/* what the module did and was asked: the counters of every upstream */

static void
ngx_http_ha_optout_prom_counters(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    ngx_uint_t                         i, j;
    ngx_keyval_t                       l[2];
    ngx_http_ha_optout_rec_t          *rec;
    ngx_http_ha_optout_srv_conf_t    **hscfp;

    hscfp = hmcf->upstreams.elts;

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
        ngx_http_ha_optout_prom_upstream(out, hscfp[i],
                                       "ha_optout_replication_bypassed_total",
                                       rec ? rec->replication_bypassed : 0);
    }

    ngx_str_set(&l[0].key, "upstream");
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
        ngx_http_ha_optout_prom_upstream(out, hscfp[i],
            "ha_optout_pending_approvals",
            ngx_http_ha_optout_approvals_count(&hscfp[i]->name, ngx_time()));
    }
}


static void
ngx_http_ha_optout_prom_upstreams(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, time_t now)
{
    ngx_http_ha_optout_prom_active(out, hmcf, now);
    ngx_http_ha_optout_prom_expiry(out, hmcf, now);
    ngx_http_ha_optout_prom_counters(out, hmcf);
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

    ngx_http_ha_optout_prom_flag_labels(l, hmcf);
    ngx_str_set(&l[3].key, "actor");
    ngx_str_set(&l[4].key, "reason");

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


/* the truth of every upstream, read once for all the families below */

static ngx_http_ha_optout_truth_t *
ngx_http_ha_optout_prom_truths(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, time_t now)
{
    ngx_uint_t                        i, n;
    ngx_http_ha_optout_truth_t       *t;
    ngx_http_ha_optout_srv_conf_t   **hscfp;

    n = hmcf->upstreams.nelts;
    hscfp = hmcf->upstreams.elts;

    t = ngx_pcalloc(r->pool, (n + 1) * sizeof(ngx_http_ha_optout_truth_t));
    if (t == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_ha_optout_status_truth(r, hmcf, hscfp[i], now, &t[i])
            != NGX_OK)
        {
            return NULL;
        }
    }

    return t;
}


/* a gauge per server of every upstream: its "pinned" or its "failed" */

static void
ngx_http_ha_optout_prom_peers(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_truth_t *t,
    char *name, char *help, ngx_uint_t pinned)
{
    ngx_uint_t                        i, j;
    ngx_keyval_t                      l[2];
    ngx_http_ha_optout_peer_view_t   *v;
    ngx_http_ha_optout_srv_conf_t   **hscfp;

    hscfp = hmcf->upstreams.elts;

    ngx_str_set(&l[0].key, "upstream");
    ngx_str_set(&l[1].key, "server");

    ngx_http_ha_optout_prom_family(out, name, "gauge", help);

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        l[0].value = hscfp[i]->name;
        v = t[i].peers->elts;

        for (j = 0; j < t[i].peers->nelts; j++) {
            l[1].value = v[j].address;
            ngx_http_ha_optout_prom_sample(out, name, l, 2,
                                           pinned ? v[j].pinned
                                                  : v[j].failed);
        }
    }
}


/* when the open or next policy window of each upstream starts or ends */

static void
ngx_http_ha_optout_prom_window(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_truth_t *t,
    ngx_uint_t end)
{
    char                             *name;
    ngx_uint_t                        i;
    ngx_http_ha_optout_srv_conf_t   **hscfp;

    hscfp = hmcf->upstreams.elts;

    if (end) {
        name = "ha_optout_next_window_end_timestamp_seconds";
        ngx_http_ha_optout_prom_family(out, name, "gauge",
            "Unix time at which the open or next policy window ends");

    } else {
        name = "ha_optout_next_window_start_timestamp_seconds";
        ngx_http_ha_optout_prom_family(out, name, "gauge",
            "Unix time at which the open or next policy window starts");
    }

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        if (t[i].wflag) {
            ngx_http_ha_optout_prom_upstream(out, hscfp[i], name,
                                             end ? t[i].wend : t[i].wstart);
        }
    }
}


/* what policy says of each upstream: protection, approvers, windows */

static void
ngx_http_ha_optout_prom_policy(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_truth_t *t)
{
    ngx_uint_t                        i;
    ngx_http_ha_optout_srv_conf_t   **hscfp;

    hscfp = hmcf->upstreams.elts;

    ngx_http_ha_optout_prom_family(out, "ha_optout_upstream_protected",
        "gauge", "1 when policy lets the API opt out only in windows");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        ngx_http_ha_optout_prom_upstream(out, hscfp[i],
                                         "ha_optout_upstream_protected",
                                         t[i].protect);
    }

    ngx_http_ha_optout_prom_family(out, "ha_optout_upstream_approvers",
        "gauge", "approvals by others that an API opt-out waits for "
        "(policy approvers)");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        ngx_http_ha_optout_prom_upstream(out, hscfp[i],
                                         "ha_optout_upstream_approvers",
                                         t[i].approvers);
    }

    ngx_http_ha_optout_prom_window(out, hmcf, t, 0);
    ngx_http_ha_optout_prom_window(out, hmcf, t, 1);
}


/*
 * The counters since the acting flag was set, and how HA comes back.  Each
 * family is printed whole (HELP, TYPE, then all its samples) before the
 * next begins: the text format wants a family's lines in one group, and
 * OpenMetrics parsers refuse interleaved families.
 */

static void
ngx_http_ha_optout_prom_since(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_truth_t *t)
{
    ngx_uint_t                        i, k;
    ngx_keyval_t                      l[2];
    ngx_http_ha_optout_srv_conf_t   **hscfp;

    static char  *since[][2] = {
        { "ha_optout_flag_failover_suppressed",
          "Failovers suppressed since the acting opt-out was set" },
        { "ha_optout_flag_pinned_requests",
          "Requests sent to the pin since the acting opt-out was set" },
        { "ha_optout_flag_replication_bypassed",
          "Mirrored requests bypassed since the acting opt-out was set" }
    };

    hscfp = hmcf->upstreams.elts;

    for (k = 0; k < 3; k++) {
        ngx_http_ha_optout_prom_family(out, since[k][0], "gauge",
                                       since[k][1]);

        for (i = 0; i < hmcf->upstreams.nelts; i++) {
            if (t[i].flag) {
                ngx_http_ha_optout_prom_upstream(out, hscfp[i], since[k][0],
                                                 k == 0 ? t[i].suppressed
                                                 : k == 1 ? t[i].pinned
                                                 : t[i].bypassed);
            }
        }
    }

    ngx_str_set(&l[0].key, "upstream");
    ngx_str_set(&l[1].key, "restore");

    ngx_http_ha_optout_prom_family(out, "ha_optout_flag_restore_info",
        "gauge", "How HA comes back on the upstream");

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        if (t[i].flag) {
            l[0].value = hscfp[i]->name;
            l[1].value = t[i].restore;
            ngx_http_ha_optout_prom_sample(out,
                                "ha_optout_flag_restore_info", l, 2, 1);
        }
    }
}


/* the servers' state, the policy, the counters since the flag, restore */

static ngx_int_t
ngx_http_ha_optout_prom_truth(ngx_http_request_t *r,
    ngx_http_ha_optout_out_t *out, ngx_http_ha_optout_main_conf_t *hmcf,
    time_t now)
{
    ngx_http_ha_optout_truth_t  *t;

    t = ngx_http_ha_optout_prom_truths(r, hmcf, now);
    if (t == NULL) {
        return NGX_ERROR;
    }

    ngx_http_ha_optout_prom_peers(out, hmcf, t, "ha_optout_server_failed",
        "1 while nginx skips the server: fails >= max_fails within "
        "fail_timeout", 0);

    ngx_http_ha_optout_prom_peers(out, hmcf, t, "ha_optout_server_pinned",
        "1 for the server the acting opt-out pins", 1);

    ngx_http_ha_optout_prom_policy(out, hmcf, t);
    ngx_http_ha_optout_prom_since(out, hmcf, t);

    return NGX_OK;
}


ngx_int_t
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
