
/*
 * Unit test support: see ngx_stubs.c.
 */

#ifndef _NGX_UNIT_STUBS_H_INCLUDED_
#define _NGX_UNIT_STUBS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* the last message given to ngx_conf_log_error() */
extern char  ngx_unit_conf_error[NGX_MAX_CONF_ERRSTR];


#endif /* _NGX_UNIT_STUBS_H_INCLUDED_ */
