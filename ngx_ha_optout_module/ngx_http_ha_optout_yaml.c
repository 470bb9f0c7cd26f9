
/*
 * ngx_ha_optout_module: policy and state files (libyaml).
 */


#include "ngx_http_ha_optout_module.h"

#include <yaml.h>


ngx_int_t
ngx_http_ha_optout_state_save(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    return NGX_OK;
}


void
ngx_http_ha_optout_state_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log)
{
    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    ngx_http_ha_optout_sh->restored = 1;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
}


char *
ngx_http_ha_optout_policy_load(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    return NGX_CONF_OK;
}
