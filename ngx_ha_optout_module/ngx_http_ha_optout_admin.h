
/*
 * ngx_ha_optout_module: what the admin API's files share (private to
 * ngx_http_ha_optout_admin*.c): the route, the request's context, and the
 * steps one file of the API calls in another.
 *
 *   admin.c          the handler: route, body, If-Match, answers
 *   admin_auth.c     the bearer token, the scope asked, refusals audited
 *   admin_write.c    a flag write: the writer lock wait, parse and check
 *   admin_apply.c    a checked write applied: store, persist, audit
 *   admin_fleet.c    what the fleet agent's writes carry (v1/fleet)
 *   admin_windows.c  v1/windows/{upstream}/end|skip
 *   admin_read.c     GET: flags, fleet, audit, whoami
 */

#ifndef _NGX_HTTP_HA_OPTOUT_ADMIN_H_INCLUDED_
#define _NGX_HTTP_HA_OPTOUT_ADMIN_H_INCLUDED_


#include "ngx_http_ha_optout_module.h"

#include <jansson.h>


typedef enum {
    NGX_HA_OPTOUT_R_FLAGS = 0,
    NGX_HA_OPTOUT_R_FLAG,
    NGX_HA_OPTOUT_R_AUDIT,
    NGX_HA_OPTOUT_R_WHOAMI,
    NGX_HA_OPTOUT_R_FLEETS,             /* v1/fleet */
    NGX_HA_OPTOUT_R_FLEET,              /* v1/fleet/{upstream} */
    NGX_HA_OPTOUT_R_FLEET_DENIED,       /* v1/fleet/{upstream}/denied */
    NGX_HA_OPTOUT_R_WINDOW,             /* v1/windows/{upstream}/end|skip */
    NGX_HA_OPTOUT_R_APPROVALS           /* v1/approvals[/{id}]: approval.c */
} ngx_http_ha_optout_route_e;


typedef struct {
    /* first: the request ctx slot is shared with the upstream decision */
    ngx_http_ha_optout_decision_t    decision;

    ngx_http_ha_optout_claims_t      claims;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_uint_t                       route;
    ngx_str_t                        upstream;
    ngx_uint_t                       skip;      /* v1/windows/U/skip */
    ngx_int_t                        rc;        /* of a refusal sent */

    /* a write, decided once, then applied when the writer lock is had */
    u_char                          *body;
    size_t                           len;
    ngx_http_ha_optout_flag_t       *flag;
    ngx_http_ha_optout_flag_t       *before;
    ngx_msec_t                       wait_start;
    ngx_msec_t                       delay;
    ngx_uint_t                       action;
    unsigned                         prepared:1;
    unsigned                         approval:1; /* policy "approvers" */
    unsigned                         ttl_set:1;  /* for the approval */
    unsigned                         narrows:1;  /* approved flag's */
    time_t                           ttl;
    unsigned                         waiting:1; /* r->main->count taken */
    unsigned                         applied:1; /* a DELETE is in the zone */
    unsigned                         changed:1; /* it removed a flag */
    unsigned                         audited:1; /* its line is written */
    ngx_http_ha_optout_audit_line_t *line;

    /* the layer written: the API's, or the fleet agent's (v1/fleet) */
    ngx_uint_t                       layer;     /* SRC_API or SRC_FLEET */
} ngx_http_ha_optout_admin_ctx_t;


#define NGX_HA_OPTOUT_NO_ETAG  ((uint64_t) -1)


#define ngx_ha_optout_err(r, st, c, m)                                        \
    ngx_http_ha_optout_admin_errorf(r, st, c, m)

#define ngx_ha_optout_refuse(ctx, r, st, c, m)                                \
    ngx_http_ha_optout_admin_refuse(ctx,                                      \
        ngx_http_ha_optout_admin_errorf(r, st, c, m))

/* the same with a message of ngx_str_t */
#define ngx_ha_optout_refuse_str(ctx, r, st, c, m)                            \
    ngx_http_ha_optout_admin_refuse(ctx,                                      \
        ngx_http_ha_optout_admin_error(r, st, c, m))


/* admin.c */
ngx_int_t ngx_http_ha_optout_admin_refuse(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_int_t rc);
u_char *ngx_http_ha_optout_echo(u_char *p, u_char *last, u_char *s,
    size_t len);
ngx_table_elt_t *ngx_http_ha_optout_admin_header(ngx_http_request_t *r,
    char *key, char *value);
u_char *ngx_http_ha_optout_admin_path(ngx_http_request_t *r, u_char **last);
size_t ngx_http_ha_optout_admin_cut(u_char *s, size_t len, size_t max);

/* admin_auth.c */
ngx_int_t ngx_http_ha_optout_admin_whoami(ngx_http_request_t *r);
ngx_int_t ngx_http_ha_optout_admin_is_fleet(ngx_http_request_t *r);
ngx_uint_t ngx_http_ha_optout_admin_scope(ngx_http_request_t *r,
    ngx_uint_t write);
ngx_int_t ngx_http_ha_optout_admin_auth(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t scope);
ngx_uint_t ngx_http_ha_optout_admin_may(ngx_http_ha_optout_admin_ctx_t *ctx,
    u_char *name, size_t len);
void ngx_http_ha_optout_admin_actor(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_str_t *actor);
void ngx_http_ha_optout_admin_denied(ngx_http_request_t *r,
    ngx_str_t *message, ngx_str_t *request_id);

/* admin_write.c */
ngx_int_t ngx_http_ha_optout_admin_write(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);
ngx_int_t ngx_http_ha_optout_admin_wait(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
ngx_int_t ngx_http_ha_optout_admin_approvals(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);

/* admin_apply.c */
ngx_int_t ngx_http_ha_optout_admin_restore(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
ngx_int_t ngx_http_ha_optout_admin_suspend(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);

/* admin_fleet.c */
ngx_int_t ngx_http_ha_optout_admin_fleet_body(ngx_http_request_t *r,
    u_char **body, size_t *len, uint64_t *revision, ngx_str_t *actor,
    char **text);
void ngx_http_ha_optout_admin_via(ngx_http_ha_optout_flag_t *flag,
    ngx_str_t *sub);
ngx_int_t ngx_http_ha_optout_admin_fleet_denied(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);

/* admin_windows.c */
ngx_int_t ngx_http_ha_optout_admin_window(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);

/* admin_read.c */
ngx_int_t ngx_http_ha_optout_admin_get(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);


#endif /* _NGX_HTTP_HA_OPTOUT_ADMIN_H_INCLUDED_ */
