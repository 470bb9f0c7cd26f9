
/*
 * ngx_ha_optout_module: what the status files share (status.c, the
 * handler, and its three views: status_json.c, status_prom.c,
 * status_html.c): the response body being written, what status says of
 * one upstream ("the truth"), and the entry point of each view.
 */


#ifndef _NGX_HTTP_HA_OPTOUT_STATUS_H_INCLUDED_
#define _NGX_HTTP_HA_OPTOUT_STATUS_H_INCLUDED_


#include "ngx_http_ha_optout_module.h"


/* the response body, written into a chain of pool buffers */
typedef struct {
    ngx_pool_t                      *pool;
    ngx_chain_t                     *first;
    ngx_chain_t                    **last;
    ngx_buf_t                       *buf;
    off_t                            size;
    ngx_uint_t                       error;
} ngx_http_ha_optout_out_t;


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


#define ngx_http_ha_optout_out_lit(out, s)                                    \
    ngx_http_ha_optout_out_raw(out, (u_char *) s, sizeof(s) - 1)


extern ngx_str_t  ngx_http_ha_optout_layer_names[];


/* the body: status.c */
u_char *ngx_http_ha_optout_out_reserve(ngx_http_ha_optout_out_t *out,
    size_t n);
void ngx_http_ha_optout_out_commit(ngx_http_ha_optout_out_t *out, u_char *p);
void ngx_http_ha_optout_out_raw(ngx_http_ha_optout_out_t *out, u_char *data,
    size_t len);
void ngx_http_ha_optout_out_printf(ngx_http_ha_optout_out_t *out, size_t max,
    const char *fmt, ...);

/* the truth of one upstream: status.c */
ngx_int_t ngx_http_ha_optout_status_truth(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now,
    ngx_http_ha_optout_truth_t *t);

/* the views */
ngx_int_t ngx_http_ha_optout_status_json(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out);
ngx_int_t ngx_http_ha_optout_status_prometheus(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out);
ngx_int_t ngx_http_ha_optout_status_html(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_out_t *out,
    ngx_str_t *nonce);


#endif /* _NGX_HTTP_HA_OPTOUT_STATUS_H_INCLUDED_ */
