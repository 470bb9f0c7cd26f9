
/*
 * Fuzzing support for fuzz_labels, which compiles
 * ngx_http_ha_optout_status*.c themselves: the nginx and module functions
 * those files refer to.  The escapers under test need only the buffer functions
 * and ngx_escape_html(); everything of the request path aborts if called.
 *
 * ngx_escape_html() is copied verbatim from nginx 1.22.1
 * src/core/ngx_string.c and ngx_create_temp_buf() from src/core/ngx_buf.c
 * (Copyright (C) Igor Sysoev, Copyright (C) Nginx, Inc.; 2-clause BSD
 * license).
 */


#include "ngx_http_ha_optout_module.h"
#include "fuzz.h"


ngx_module_t  ngx_http_ha_optout_module;

const char  *ngx_http_ha_optout_actions[] = { "set", NULL };
const char  *ngx_http_ha_optout_auth_reasons[] = { "missing", NULL };


ngx_chain_t *
ngx_alloc_chain_link(ngx_pool_t *pool)
{
    return ngx_palloc(pool, sizeof(ngx_chain_t));
}


/* the request path's functions: ngx_fuzz_unreached.c */


/* from nginx 1.22.1 src/core/ngx_buf.c */


ngx_buf_t *
ngx_create_temp_buf(ngx_pool_t *pool, size_t size)
{
    ngx_buf_t *b;

    b = ngx_calloc_buf(pool);
    if (b == NULL) {
        return NULL;
    }

    b->start = ngx_palloc(pool, size);
    if (b->start == NULL) {
        return NULL;
    }

    /*
     * set by ngx_calloc_buf():
     *
     *     b->file_pos = 0;
     *     b->file_last = 0;
     *     b->file = NULL;
     *     b->shadow = NULL;
     *     b->tag = 0;
     *     and flags
     */

    b->pos = b->start;
    b->last = b->start;
    b->end = b->last + size;
    b->temporary = 1;

    return b;
}


/* from nginx 1.22.1 src/core/ngx_string.c */


uintptr_t
ngx_escape_html(u_char *dst, u_char *src, size_t size)
{
    u_char      ch;
    ngx_uint_t  len;

    if (dst == NULL) {

        len = 0;

        while (size) {
            switch (*src++) {

            case '<':
                len += sizeof("&lt;") - 2;
                break;

            case '>':
                len += sizeof("&gt;") - 2;
                break;

            case '&':
                len += sizeof("&amp;") - 2;
                break;

            case '"':
                len += sizeof("&quot;") - 2;
                break;

            default:
                break;
            }
            size--;
        }

        return (uintptr_t) len;
    }

    while (size) {
        ch = *src++;

        switch (ch) {

        case '<':
            *dst++ = '&'; *dst++ = 'l'; *dst++ = 't'; *dst++ = ';';
            break;

        case '>':
            *dst++ = '&'; *dst++ = 'g'; *dst++ = 't'; *dst++ = ';';
            break;

        case '&':
            *dst++ = '&'; *dst++ = 'a'; *dst++ = 'm'; *dst++ = 'p';
            *dst++ = ';';
            break;

        case '"':
            *dst++ = '&'; *dst++ = 'q'; *dst++ = 'u'; *dst++ = 'o';
            *dst++ = 't'; *dst++ = ';';
            break;

        default:
            *dst++ = ch;
            break;
        }
        size--;
    }

    return (uintptr_t) dst;
}
