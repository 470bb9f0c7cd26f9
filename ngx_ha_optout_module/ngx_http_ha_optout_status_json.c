
/*
 * ngx_ha_optout_module: the JSON view of the status endpoint, the
 * contract (SPEC section 6): one object per upstream, its flag and
 * layers, servers, policy and counters.
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_status.h"

#include <jansson.h>


/* ------------------------------------------------------------------ JSON */

/* the upstream's servers as status shows them (status_peers) */

static json_t *
ngx_http_ha_optout_status_servers(ngx_array_t *peers)
{
    json_t                          *servers, *s;
    ngx_uint_t                       i;
    ngx_http_ha_optout_peer_view_t  *v;

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

    return servers;
}


/* the open or next policy window, or null */

static json_t *
ngx_http_ha_optout_status_window(ngx_http_ha_optout_truth_t *t, time_t now)
{
    u_char  ws[sizeof("2026-11-27T10:00:00Z")];
    u_char  we[sizeof("2026-11-27T10:00:00Z")];
    u_char  what[NGX_HA_OPTOUT_TEXT_LEN];

    if (t->wflag == NULL) {
        return json_null();
    }

    return json_pack("{s:s%,s:s%,s:b,s:s%,s:s%}",
                     "start", ws,
                     ngx_http_ha_optout_time_iso(ws, t->wstart) - ws,
                     "end", we,
                     ngx_http_ha_optout_time_iso(we, t->wend) - we,
                     "open", (int) (t->wstart <= now),
                     "what", what,
                     ngx_http_ha_optout_flag_text(t->wflag, what),
                     "reason", t->wflag->reason,
                     (size_t) t->wflag->reason_len);
}


/* the counters since the acting flag was set, or null */

static json_t *
ngx_http_ha_optout_status_since(ngx_http_ha_optout_truth_t *t)
{
    if (t->flag == NULL) {
        return json_null();
    }

    return json_pack("{s:I,s:I,s:I}",
                     "failover_suppressed", (json_int_t) t->suppressed,
                     "pinned_requests", (json_int_t) t->pinned,
                     "replication_bypassed", (json_int_t) t->bypassed);
}


/* the flag of each layer, acting or not */

static json_t *
ngx_http_ha_optout_status_layers(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now)
{
    return json_pack("{s:o,s:o,s:o,s:o}",
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
                   &hscf->name, &hmcf->environment));
}


static json_t *
ngx_http_ha_optout_status_upstream(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now)
{
    json_t                      *servers, *up, *nw, *sf;
    ngx_http_ha_optout_rec_t    *rec;
    ngx_http_ha_optout_truth_t   t;

    if (ngx_http_ha_optout_status_truth(r, hmcf, hscf, now, &t) != NGX_OK) {
        return NULL;
    }

    servers = ngx_http_ha_optout_status_servers(t.peers);
    if (servers == NULL) {
        return NULL;
    }

    rec = hscf->rec;

    nw = ngx_http_ha_optout_status_window(&t, now);
    sf = ngx_http_ha_optout_status_since(&t);

    up = json_pack("{s:o,s:o,s:o,s:I,s:I,s:I,s:I}",
        "flag", ngx_http_ha_optout_flag_json(t.flag, &hscf->name,
                                             &hmcf->environment),
        "layers", ngx_http_ha_optout_status_layers(hmcf, hscf, now),
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


ngx_int_t
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
