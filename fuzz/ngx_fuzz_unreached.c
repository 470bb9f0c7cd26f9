
/*
 * fuzz_labels: the functions of nginx and of the module that
 * ngx_http_ha_optout_status*.c call on the request path, which the
 * escapers under test never reach.  Defined without nginx's headers (their
 * real signatures do not matter): each aborts when called.
 */


#include "fuzz.h"


#define FUZZ_UNREACHED(name)                                                  \
    void name(void) { fuzz_fail(#name "() called"); }

/* the request path: never reached from the escapers */
FUZZ_UNREACHED(ngx_http_arg)
FUZZ_UNREACHED(ngx_http_discard_request_body)
FUZZ_UNREACHED(ngx_http_output_filter)
FUZZ_UNREACHED(ngx_http_send_header)
FUZZ_UNREACHED(ngx_rwlock_rlock)
FUZZ_UNREACHED(ngx_rwlock_unlock)
FUZZ_UNREACHED(ngx_strlcasestrn)
FUZZ_UNREACHED(ngx_http_ha_optout_acting)
FUZZ_UNREACHED(ngx_http_ha_optout_layer)
FUZZ_UNREACHED(ngx_http_ha_optout_flag_text)
FUZZ_UNREACHED(ngx_http_ha_optout_flag_ident)
FUZZ_UNREACHED(ngx_http_ha_optout_policy_protected)
FUZZ_UNREACHED(ngx_http_ha_optout_policy_next_window)
FUZZ_UNREACHED(ngx_http_ha_optout_policy_approvers)
FUZZ_UNREACHED(ngx_http_ha_optout_approvals_count)
FUZZ_UNREACHED(ngx_http_ha_optout_approvals_json)
FUZZ_UNREACHED(ngx_http_ha_optout_header_out)
