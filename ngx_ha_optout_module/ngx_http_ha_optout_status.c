
/*
 * ngx_ha_optout_module: the status endpoint (JSON, Prometheus, HTML).
 */


#include "ngx_http_ha_optout_module.h"

#include <jansson.h>


ngx_int_t
ngx_http_ha_optout_status_handler(ngx_http_request_t *r)
{
    return NGX_HTTP_NOT_IMPLEMENTED;
}
