
/*
 * Fuzzing support for the targets that compile the policy and state file
 * parsers (fuzz_policy, fuzz_state: ngx_http_ha_optout_policy.c and
 * ngx_http_ha_optout_state.c, with ngx_http_ha_optout_yaml.c): the rest
 * of the module and of nginx that those files refer to.  The parsers under test reach none of the zone, audit
 * or upstream functions; those abort if they are ever called, so a harness
 * that strays into them is noticed.
 *
 * ngx_strncasecmp(), ngx_pstrdup() and ngx_hex_dump() are copied verbatim
 * from nginx
 * 1.22.1 src/core/ngx_string.c (Copyright (C) Igor Sysoev, Copyright (C)
 * Nginx, Inc.; 2-clause BSD license).
 */


#include "ngx_http_ha_optout_module.h"
#include "fuzz.h"


static ngx_time_t           fuzz_time = { FUZZ_NOW, 0, 0 };

volatile ngx_time_t        *ngx_cached_time = &fuzz_time;
volatile ngx_cycle_t       *ngx_cycle;
ngx_pid_t                   ngx_pid = 4242;
ngx_module_t                ngx_core_module;

ngx_http_ha_optout_shctx_t  *ngx_http_ha_optout_sh;
ngx_slab_pool_t             *ngx_http_ha_optout_shpool;


void *
ngx_alloc(size_t size, ngx_log_t *log)
{
    return malloc(size);
}


void ngx_cdecl
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
}


void
ngx_shmtx_lock(ngx_shmtx_t *mtx)
{
    fuzz_fail("ngx_shmtx_lock() called");
}


void
ngx_shmtx_unlock(ngx_shmtx_t *mtx)
{
    fuzz_fail("ngx_shmtx_unlock() called");
}


void
ngx_http_ha_optout_bump(void)
{
    fuzz_fail("ngx_http_ha_optout_bump() called");
}


ngx_int_t
ngx_http_ha_optout_audit(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id)
{
    fuzz_fail("ngx_http_ha_optout_audit() called");
    return NGX_ERROR;
}


ngx_int_t
ngx_http_ha_optout_audit_cause(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id, ngx_str_t *cause)
{
    fuzz_fail("ngx_http_ha_optout_audit_cause() called");
    return NGX_ERROR;
}


u_char *
ngx_http_ha_optout_drop_cause(u_char *p, u_char *last,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *upstream,
    ngx_http_ha_optout_flag_t *flag, time_t now)
{
    fuzz_fail("ngx_http_ha_optout_drop_cause() called");
    return p;
}


void
ngx_http_ha_optout_audit_gap_locked(ngx_http_ha_optout_main_conf_t *hmcf,
    u_char *expected, ngx_log_t *log)
{
    fuzz_fail("ngx_http_ha_optout_audit_gap_locked() called");
}


ngx_http_ha_optout_srv_conf_t *
ngx_http_ha_optout_find_upstream(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_str_t *name)
{
    return NULL;
}


/* the harnesses declare no upstream: nothing resolves */

ngx_int_t
ngx_http_ha_optout_upstream_peer(ngx_http_ha_optout_srv_conf_t *hscf,
    u_char *name, size_t len, ngx_uint_t *down, ngx_uint_t *backup)
{
    return NGX_DECLINED;
}


/* the replay cache is in the zone: the loader never reaches it */

ngx_int_t
ngx_http_ha_optout_replay_check_locked(ngx_str_t *jti, time_t exp,
    time_t now)
{
    fuzz_fail("ngx_http_ha_optout_replay_check_locked() called");
    return NGX_ERROR;
}


size_t
ngx_http_ha_optout_replay_export_locked(u_char *buf, size_t size,
    ngx_uint_t max, time_t now)
{
    fuzz_fail("ngx_http_ha_optout_replay_export_locked() called");
    return 0;
}


/* from nginx 1.22.1 src/core/ngx_string.c */


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    static u_char  hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }

    return dst;
}



u_char *
ngx_pstrdup(ngx_pool_t *pool, ngx_str_t *src)
{
    u_char  *dst;

    dst = ngx_pnalloc(pool, src->len);
    if (dst == NULL) {
        return NULL;
    }

    ngx_memcpy(dst, src->data, src->len);

    return dst;
}



ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    ngx_uint_t  c1, c2;

    while (n) {
        c1 = (ngx_uint_t) *s1++;
        c2 = (ngx_uint_t) *s2++;

        c1 = (c1 >= 'A' && c1 <= 'Z') ? (c1 | 0x20) : c1;
        c2 = (c2 >= 'A' && c2 <= 'Z') ? (c2 | 0x20) : c2;

        if (c1 == c2) {

            if (c1) {
                n--;
                continue;
            }

            return 0;
        }

        return c1 - c2;
    }

    return 0;
}


/* pending approvals are in the zone (approval.c): the parsers never go there */

ngx_uint_t
ngx_http_ha_optout_approvals_snapshot(ngx_http_ha_optout_approval_t *out)
{
    fuzz_fail("ngx_http_ha_optout_approvals_snapshot() called");
    return 0;
}


ngx_int_t
ngx_http_ha_optout_approval_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_approval_t *a, time_t now, ngx_log_t *log,
    ngx_uint_t locked)
{
    fuzz_fail("ngx_http_ha_optout_approval_restore() called");
    return NGX_ERROR;
}
