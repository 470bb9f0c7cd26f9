
/*
 * ngx_ha_optout_module: the libyaml helpers (ngx_http_ha_optout_yaml.c)
 * that the state file (state.c) and the policy file (policy.c) share.
 */


#ifndef _NGX_HTTP_HA_OPTOUT_YAML_H_INCLUDED_
#define _NGX_HTTP_HA_OPTOUT_YAML_H_INCLUDED_


#include "ngx_http_ha_optout_module.h"

#include <yaml.h>


/* a loaded YAML document and where its first error is */
typedef struct {
    yaml_document_t                  doc;
    ngx_str_t                       *file;
    ngx_pool_t                      *pool;
    ngx_uint_t                       line;      /* 1-based */
    ngx_uint_t                       column;
    ngx_uint_t                       nofollow;  /* the state directory */
    u_char                           err[NGX_MAX_ERROR_STR];
    size_t                           err_len;
} ngx_http_ha_optout_yaml_t;


/* where the emitter writes (emit_write) */
typedef struct {
    ngx_fd_t     fd;
    ngx_err_t    err;
} ngx_http_ha_optout_out_t;


/* reading */
ngx_int_t ngx_http_ha_optout_yaml_load(ngx_http_ha_optout_yaml_t *y,
    ngx_str_t *file, ngx_log_t *log);
ngx_int_t ngx_cdecl ngx_http_ha_optout_yfail(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *fmt, ...);
yaml_node_t *ngx_http_ha_optout_ynode(ngx_http_ha_optout_yaml_t *y, int id);
ngx_uint_t ngx_http_ha_optout_yis_null(yaml_node_t *node);
ngx_int_t ngx_http_ha_optout_yscalar(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *what, ngx_str_t *value);
ngx_int_t ngx_http_ha_optout_ymapping(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *what);
ngx_int_t ngx_http_ha_optout_ycopy(ngx_http_ha_optout_yaml_t *y,
    ngx_str_t *s);
ngx_uint_t ngx_http_ha_optout_ykey_is(yaml_node_t *key, const char *name);
ngx_int_t ngx_http_ha_optout_ybool(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *what, ngx_uint_t *value);
ngx_int_t ngx_http_ha_optout_ystr(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *what, u_char *dst, uint16_t *len,
    size_t min, size_t max);
ngx_int_t ngx_http_ha_optout_yuint(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *what, uint64_t *value);
ngx_int_t ngx_http_ha_optout_digits(u_char *p, ngx_uint_t n);
ngx_int_t ngx_http_ha_optout_ytime(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *what, ngx_uint_t nullable, time_t *value);
ngx_int_t ngx_http_ha_optout_yttl(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *node, const char *what, time_t *value);
ngx_int_t ngx_http_ha_optout_yflag_field(ngx_http_ha_optout_yaml_t *y,
    yaml_node_t *k, yaml_node_t *val, ngx_http_ha_optout_flag_t *f);

/* writing */
int ngx_http_ha_optout_emit_write(void *data, unsigned char *buffer,
    size_t size);
ngx_int_t ngx_http_ha_optout_emit(yaml_emitter_t *e, yaml_event_t *ev,
    int ok);
ngx_int_t ngx_http_ha_optout_emit_scalar(yaml_emitter_t *e, u_char *value,
    size_t len, yaml_scalar_style_t style);
ngx_int_t ngx_http_ha_optout_emit_key(yaml_emitter_t *e, const char *key);
ngx_int_t ngx_http_ha_optout_emit_mapping(yaml_emitter_t *e,
    const char *key);
ngx_int_t ngx_http_ha_optout_emit_end(yaml_emitter_t *e);
ngx_int_t ngx_http_ha_optout_emit_str(yaml_emitter_t *e, const char *key,
    u_char *v, size_t len);
ngx_int_t ngx_http_ha_optout_emit_plain(yaml_emitter_t *e, const char *key,
    u_char *v, size_t len);
ngx_int_t ngx_http_ha_optout_emit_bool(yaml_emitter_t *e, const char *key,
    ngx_uint_t v);
ngx_int_t ngx_http_ha_optout_emit_uint(yaml_emitter_t *e, const char *key,
    uint64_t v);
ngx_int_t ngx_http_ha_optout_emit_time(yaml_emitter_t *e, const char *key,
    time_t t);


#endif /* _NGX_HTTP_HA_OPTOUT_YAML_H_INCLUDED_ */
