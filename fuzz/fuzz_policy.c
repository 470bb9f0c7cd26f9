
/*
 * fuzz_policy: ngx_http_ha_optout_policy_load() (ngx_http_ha_optout_policy.c),
 * the policy file as "ha_optout_policy FILE;" reads it at nginx -t, with a
 * stand-in ngx_conf_t.
 *
 * Checked for every input: a refused policy gives one error that names
 * "policy FILE:LINE:COLUMN"; an accepted one keeps its invariants: allow
 * masks of the four opt-outs, max_ttl within 366 days, windows that name
 * an upstream and a reason, opt out of something, one-off windows with
 * start < end, weekly ones inside the week and at most a day long; and
 * ngx_http_ha_optout_window_open() finds each window open exactly inside
 * [start, end) of an occurrence that contains now.
 */


#include "ngx_http_ha_optout_policy.c"
#include "fuzz_yaml.h"
#include "ngx_stubs.h"


static void
check_window(ngx_http_ha_optout_window_t *w)
{
    time_t      now, start, end;
    ngx_uint_t  i, open;

    static const time_t  probes[] = {
        0, 1, 3599, 86399, 86400, 6 * 86400 + 86399, 7 * 86400 - 1
    };

    fuzz_assert(w->upstream.len > 0
                && !(w->upstream.len == 1 && w->upstream.data[0] == '*'),
                "a window without one upstream");
    fuzz_assert(w->flag.source == NGX_HA_OPTOUT_SRC_WINDOW,
                "window flag source %u", w->flag.source);
    fuzz_check_flag(&w->flag);

    if (w->weekly) {
        fuzz_assert(w->offset >= 0 && w->offset < NGX_HA_OPTOUT_WEEK,
                    "weekly offset %lld", (long long) w->offset);
        fuzz_assert(w->length > 0 && w->length <= 86400,
                    "weekly length %lld", (long long) w->length);
    } else {
        fuzz_assert(w->start > 0 && w->start < w->end,
                    "one-off window %lld..%lld", (long long) w->start,
                    (long long) w->end);
    }

    /* around the window's edges and through one week from FUZZ_NOW */

    for (i = 0; i < sizeof(probes) / sizeof(probes[0]) * 3; i++) {
        now = (i < 7) ? FUZZ_NOW + probes[i]
              : (i < 14) ? (w->weekly ? FUZZ_NOW - FUZZ_NOW % 86400
                                        + probes[i - 7]
                                      : w->start - 1 + (time_t) (i - 7))
              : (w->weekly ? FUZZ_NOW + w->offset + probes[i - 14] % 3600
                           : w->end - 3 + (time_t) (i - 14));

        start = end = -1;
        open = ngx_http_ha_optout_window_open(w, now, &start, &end);

        if (open) {
            fuzz_assert(start <= now && now < end,
                        "window open at %lld outside [%lld, %lld)",
                        (long long) now, (long long) start, (long long) end);
            fuzz_assert(!w->weekly || end - start == w->length,
                        "weekly occurrence of the wrong length");
        } else if (!w->weekly) {
            fuzz_assert(now < w->start || now >= w->end,
                        "one-off window closed at %lld inside it",
                        (long long) now);
        }
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    atexit(fuzz_file_cleanup);
    return 0;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char                             *rv, want[128];
    ngx_str_t                        *file;
    ngx_uint_t                        i;
    ngx_conf_t                        cf;
    ngx_pool_t                       *pool;
    ngx_conf_file_t                   conf_file;
    ngx_http_ha_optout_window_t      *w;
    ngx_http_ha_optout_policy_t      *pol;
    ngx_http_ha_optout_policy_ups_t  *u;
    ngx_http_ha_optout_main_conf_t    hmcf;

    if (size > 64 * 1024) {
        return 0;
    }

    pool = ngx_create_pool(4096, NULL);
    file = fuzz_file(data, size);

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    ngx_memzero(&conf_file, sizeof(ngx_conf_file_t));
    ngx_memzero(&hmcf, sizeof(ngx_http_ha_optout_main_conf_t));

    ngx_str_set(&conf_file.file.name, "/etc/nginx/nginx.conf");
    conf_file.line = 12;
    cf.conf_file = &conf_file;
    cf.pool = pool;
    hmcf.policy_file = *file;

    ngx_unit_conf_error[0] = '\0';

    rv = ngx_http_ha_optout_policy_load(&cf, &hmcf);

    if (rv != NGX_CONF_OK) {
        snprintf(want, sizeof(want), "policy %s:", (char *) file->data);

        fuzz_assert(strncmp(ngx_unit_conf_error, want, strlen(want)) == 0,
                    "a refused policy without \"policy FILE:\": \"%s\"",
                    ngx_unit_conf_error);
        fuzz_assert(strlen(ngx_unit_conf_error) > strlen(want) + 4,
                    "a refused policy without line:column or message: "
                    "\"%s\"", ngx_unit_conf_error);

        ngx_destroy_pool(pool);
        return 0;
    }

    pol = hmcf.policy;
    fuzz_assert(pol != NULL, "an accepted policy that is not kept");

    u = pol->upstreams.elts;

    for (i = 0; i < pol->upstreams.nelts; i++) {
        fuzz_assert(u[i].name.len > 0, "an upstream without a name");
        fuzz_assert(u[i].allow == -1
                    || (u[i].allow & ~NGX_HA_OPTOUT_ALLOW_ALL) == 0,
                    "allow mask %lx", (long) u[i].allow);
        fuzz_assert(u[i].max_ttl == -1
                    || (u[i].max_ttl > 0 && u[i].max_ttl <= 366 * 86400),
                    "max_ttl %lld", (long long) u[i].max_ttl);
        fuzz_assert(u[i].ttl_none >= -1 && u[i].ttl_none <= 1, "ttl_none");
        fuzz_assert(u[i].protect >= -1 && u[i].protect <= 1, "protected");
        fuzz_touch(u[i].name.data, u[i].name.len);
    }

    w = pol->windows.elts;

    for (i = 0; i < pol->windows.nelts; i++) {
        check_window(&w[i]);
    }

    ngx_destroy_pool(pool);

    return 0;
}
