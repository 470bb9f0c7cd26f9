
/*
 * ngx_ha_optout_module: the HTML view of the status endpoint, one page
 * for the person on call: a card per upstream, suspended ones first, that
 * counts down and refreshes itself (one inline script, allowed by a
 * per-response nonce, see status.c).
 */


#include "ngx_http_ha_optout_module.h"
#include "ngx_http_ha_optout_status.h"


#define NGX_HA_OPTOUT_REFRESH    "5"    /* seconds, HTML page */


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


/* the card's title, and for a suspended upstream its flag and restore */

static void
ngx_http_ha_optout_html_state(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_truth_t *t,
    time_t now)
{
    if (t->flag == NULL) {
        ngx_http_ha_optout_out_lit(out, "<section class=\"card normal\">"
                                   "<h2><span class=\"name\">");
        ngx_http_ha_optout_out_html(out, hscf->name.data, hscf->name.len);
        ngx_http_ha_optout_out_lit(out, "</span> <span class=\"badge\">"
                                   "HA normal</span></h2>");
        return;
    }

    ngx_http_ha_optout_out_lit(out, "<section class=\"card suspended\">"
                               "<h2><span class=\"name\">");
    ngx_http_ha_optout_out_html(out, hscf->name.data, hscf->name.len);
    ngx_http_ha_optout_out_lit(out, "</span> <span class=\"badge\">"
                               "HA SUSPENDED</span></h2>");
    ngx_http_ha_optout_html_flag(out, hscf, t->flag, now);

    ngx_http_ha_optout_out_lit(out, "<dl><dt>restore</dt>"
                               "<dd class=\"restore\"><code>");
    ngx_http_ha_optout_out_html(out, t->restore.data, t->restore.len);
    ngx_http_ha_optout_out_printf(out, 512, "</code></dd>"
        "<dt>since set</dt><dd class=\"since\">"
        "<b>%uA</b> failovers suppressed, <b>%uA</b> pinned requests, "
        "<b>%uA</b> replication bypassed</dd></dl>",
        t->suppressed, t->pinned, t->bypassed);
}


/* what policy says of the upstream: next window, protected, approval */

static void
ngx_http_ha_optout_html_policy(ngx_http_ha_optout_out_t *out,
    ngx_http_ha_optout_truth_t *t, time_t now)
{
    u_char   what[NGX_HA_OPTOUT_TEXT_LEN];
    u_char  *p, left[64];

    ngx_http_ha_optout_out_lit(out, "<dl class=\"policy\">"
                               "<dt>next window</dt><dd class=\"window\">");

    if (t->wflag) {
        if (t->wstart <= now) {
            ngx_http_ha_optout_out_lit(out, "open now, ");
        }

        ngx_http_ha_optout_html_time(out, t->wstart);
        ngx_http_ha_optout_out_lit(out, " &ndash; ");
        ngx_http_ha_optout_html_time(out, t->wend);
        ngx_http_ha_optout_out_lit(out, " <code>");
        ngx_http_ha_optout_out_html(out, what,
                                    ngx_http_ha_optout_flag_text(t->wflag,
                                                                 what));
        ngx_http_ha_optout_out_lit(out, "</code> ");
        ngx_http_ha_optout_out_html(out, t->wflag->reason,
                                    t->wflag->reason_len);

    } else {
        ngx_http_ha_optout_out_lit(out, "none scheduled");
    }

    ngx_http_ha_optout_out_lit(out, "</dd><dt>protected</dt>"
                               "<dd class=\"protected\">");
    if (t->protect) {
        ngx_http_ha_optout_out_lit(out, "yes: the API may opt out only "
                                   "inside a window");
    } else {
        ngx_http_ha_optout_out_lit(out, "no");
    }

    ngx_http_ha_optout_out_lit(out, "</dd><dt>approval</dt>"
                               "<dd class=\"approvers\">");
    if (t->approvers) {
        p = ngx_http_ha_optout_status_left(left, t->approval_ttl);
        ngx_http_ha_optout_out_printf(out, 256, "%ui other%s must approve "
            "an API opt-out, within %*s; windows need none",
            t->approvers, t->approvers == 1 ? "" : "s", (size_t) (p - left),
            left);
    } else {
        ngx_http_ha_optout_out_lit(out, "not needed");
    }

    ngx_http_ha_optout_out_lit(out, "</dd></dl>");
}


static ngx_int_t
ngx_http_ha_optout_html_card(ngx_http_request_t *r,
    ngx_http_ha_optout_out_t *out, ngx_http_ha_optout_srv_conf_t *hscf,
    time_t now)
{
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_truth_t       t;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (ngx_http_ha_optout_status_truth(r, hmcf, hscf, now, &t) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_ha_optout_html_state(out, hscf, &t, now);
    ngx_http_ha_optout_html_policy(out, &t, now);
    ngx_http_ha_optout_html_approvals(out, hscf, now);
    ngx_http_ha_optout_html_servers(out, t.peers);

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


ngx_int_t
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
