
/*
 * ngx_ha_optout_module: what the two halves of the two-person rule share,
 * the table and its rules (ngx_http_ha_optout_approval.c) and the API
 * (ngx_http_ha_optout_approval_api.c).  The rest of the module uses the
 * declarations in ngx_http_ha_optout_module.h.
 */


#ifndef _NGX_HTTP_HA_OPTOUT_APPROVAL_H_INCLUDED_
#define _NGX_HTTP_HA_OPTOUT_APPROVAL_H_INCLUDED_


#define NGX_HA_OPTOUT_APPROVAL_PUT    1
#define NGX_HA_OPTOUT_APPROVAL_PATCH  2

/* pending requests one subject may hold: a quarter of the table */
#define NGX_HA_OPTOUT_APPROVALS_PER_SUBJECT  8


ngx_http_ha_optout_approval_t *ngx_http_ha_optout_approval_find_locked(
    uint64_t id);
ngx_http_ha_optout_approval_t *ngx_http_ha_optout_approval_slot_locked(void);
ngx_uint_t ngx_http_ha_optout_approvals_by_locked(u_char *sub, size_t len,
    time_t now);
void ngx_http_ha_optout_approval_put_locked(ngx_http_ha_optout_approval_t *a);
void ngx_http_ha_optout_approval_drop_locked(uint64_t id);
uint64_t ngx_http_ha_optout_approval_new_id_locked(void);
uint64_t ngx_http_ha_optout_approval_parse_id(ngx_str_t *s);
size_t ngx_http_ha_optout_approval_subject(ngx_str_t *sub);
ngx_uint_t ngx_http_ha_optout_approval_same(u_char *a, size_t alen, u_char *b,
    size_t blen);
ngx_uint_t ngx_http_ha_optout_approval_allowed(
    ngx_http_ha_optout_claims_t *claims, u_char *upstream, size_t len);


#endif /* _NGX_HTTP_HA_OPTOUT_APPROVAL_H_INCLUDED_ */
