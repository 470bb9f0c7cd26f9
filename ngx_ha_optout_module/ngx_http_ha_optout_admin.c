
/*
 * ngx_ha_optout_module: the admin REST API below the ha_optout_admin
 * location (SPEC section 3).  Every answer is JSON; a rejected request
 * changes nothing and is counted.  This file is the handler: the route,
 * the request body, If-Match, and the answers (JSON, errors); the other
 * steps live in ngx_http_ha_optout_admin_*.c (ngx_http_ha_optout_admin.h
 * has the map).
 */


#include "ngx_http_ha_optout_admin.h"


static ngx_int_t ngx_http_ha_optout_admin_route(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_route_match(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t *allowed);
static ngx_int_t ngx_http_ha_optout_route_not_allowed(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_route_upstream(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_upstream_unknown(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *name);
static ngx_int_t ngx_http_ha_optout_admin_read_body(ngx_http_request_t *r);
static void ngx_http_ha_optout_admin_body(ngx_http_request_t *r);


ngx_int_t
ngx_http_ha_optout_admin_refuse(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_int_t rc)
{
    ctx->rc = rc;
    return NGX_DECLINED;
}


ngx_int_t
ngx_http_ha_optout_admin_errorf(ngx_http_request_t *r, ngx_uint_t status,
    char *code, char *text)
{
    ngx_str_t  message;

    message.data = (u_char *) text;
    message.len = ngx_strlen(text);

    return ngx_http_ha_optout_admin_error(r, status, code, &message);
}


ngx_int_t
ngx_http_ha_optout_admin_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_uint_t                       write, scope;
    ngx_http_ha_optout_admin_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_admin_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_ha_optout_module);

    write = r->method & (NGX_HTTP_PUT|NGX_HTTP_PATCH|NGX_HTTP_DELETE
                         |NGX_HTTP_POST);

    ctx->layer = NGX_HA_OPTOUT_SRC_API;

    if (ngx_http_ha_optout_admin_is_fleet(r)) {
        ctx->layer = NGX_HA_OPTOUT_SRC_FLEET;
        scope = write ? NGX_HA_OPTOUT_SCOPE_FLEET
                      : NGX_HA_OPTOUT_SCOPE_READ|NGX_HA_OPTOUT_SCOPE_FLEET;

    } else {
        scope = ngx_http_ha_optout_admin_scope(r, write);
    }

    /* both answer NGX_DECLINED once they have sent a refusal */

    rc = ngx_http_ha_optout_admin_auth(r, ctx, scope);
    if (rc == NGX_OK) {
        rc = ngx_http_ha_optout_admin_route(r, ctx);
    }

    if (rc == NGX_OK && ctx->route == NGX_HA_OPTOUT_R_APPROVALS) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_ha_optout_admin_approvals(r, ctx);
    }

    if (rc != NGX_OK) {
        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (ngx_http_discard_request_body(r) != NGX_OK) {
            r->keepalive = 0;
        }

        return ctx->rc;
    }

    if (!write) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_ha_optout_admin_get(r, ctx);
    }

    if (r->method == NGX_HTTP_DELETE) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_ha_optout_admin_write(r, ctx, NULL, 0);
    }

    return ngx_http_ha_optout_admin_read_body(r);
}


/*
 * PUT, PATCH, POST: the JSON body is read (admin_body() goes on), unless
 * it is too large or of unknown length
 */

static ngx_int_t
ngx_http_ha_optout_admin_read_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (r->headers_in.content_length_n > NGX_HA_OPTOUT_BODY_MAX) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_ha_optout_err(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "PayloadTooLarge",
                                 "request body is larger than 16 KiB");
    }

    if (r->headers_in.content_length_n < 0 && r->headers_in.chunked) {
        /*
         * nginx's own body limit is off in this location (its 413 would be
         * HTML), so a body of unknown length is not read at all
         */
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_ha_optout_err(r, NGX_HTTP_LENGTH_REQUIRED,
                                 "LengthRequired",
                                 "send the JSON body with a Content-Length "
                                 "(at most 16 KiB), not chunked");
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_ha_optout_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * The endpoint's path: the URI after the location's name and the slashes
 * that follow it
 */

u_char *
ngx_http_ha_optout_admin_path(ngx_http_request_t *r, u_char **last)
{
    u_char                    *p;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    *last = r->uri.data + r->uri.len;

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(p, clcf->name.data, clcf->name.len) == 0)
    {
        p += clcf->name.len;
    }

    while (p < *last && *p == '/') {
        p++;
    }

    return p;
}


/*
 * "v1/flags", "v1/flags/{upstream}", "v1/audit", "v1/whoami": the
 * endpoint, the methods it allows, and the upstream it names (one the
 * token may act on)
 */

static ngx_int_t
ngx_http_ha_optout_admin_route(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_uint_t  allowed;

    allowed = 0;

    if (ngx_http_ha_optout_route_match(r, ctx, &allowed) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (!(r->method & allowed)) {
        return ngx_http_ha_optout_route_not_allowed(r, ctx);
    }

    if (ctx->route != NGX_HA_OPTOUT_R_FLAG
        && ctx->route != NGX_HA_OPTOUT_R_FLEET
        && ctx->route != NGX_HA_OPTOUT_R_FLEET_DENIED
        && ctx->route != NGX_HA_OPTOUT_R_WINDOW)
    {
        return NGX_OK;
    }

    return ngx_http_ha_optout_route_upstream(r, ctx);
}


/* the path to ctx->route (and ctx->upstream, ctx->skip); 404 for none */

/*
 * Longer than a screen and a half: one branch per endpoint, in the order
 * they are tried.
 */

static ngx_int_t
ngx_http_ha_optout_route_match(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t *allowed)
{
    u_char  *p, *last;
    size_t   len;

    p = ngx_http_ha_optout_admin_path(r, &last);
    len = last - p;

#define ngx_ha_optout_path_is(s)                                              \
    (len == sizeof(s) - 1 && ngx_strncmp(p, s, sizeof(s) - 1) == 0)

    if (ngx_ha_optout_path_is("v1/flags")) {
        ctx->route = NGX_HA_OPTOUT_R_FLAGS;
        *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (len > sizeof("v1/flags/") - 1
               && ngx_strncmp(p, "v1/flags/", sizeof("v1/flags/") - 1) == 0)
    {
        ctx->route = NGX_HA_OPTOUT_R_FLAG;
        *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_PUT|NGX_HTTP_PATCH
                   |NGX_HTTP_DELETE;
        ctx->upstream.data = p + sizeof("v1/flags/") - 1;
        ctx->upstream.len = last - ctx->upstream.data;

    } else if (ngx_ha_optout_path_is("v1/fleet")) {
        ctx->route = NGX_HA_OPTOUT_R_FLEETS;
        *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (len > sizeof("v1/fleet/") - 1
               && ngx_strncmp(p, "v1/fleet/", sizeof("v1/fleet/") - 1) == 0)
    {
        ctx->upstream.data = p + sizeof("v1/fleet/") - 1;
        ctx->upstream.len = last - ctx->upstream.data;

        if (ctx->upstream.len > sizeof("/denied") - 1
            && ngx_strncmp(last - (sizeof("/denied") - 1), "/denied",
                           sizeof("/denied") - 1) == 0)
        {
            ctx->route = NGX_HA_OPTOUT_R_FLEET_DENIED;
            *allowed = NGX_HTTP_POST;
            ctx->upstream.len -= sizeof("/denied") - 1;

        } else {
            ctx->route = NGX_HA_OPTOUT_R_FLEET;
            *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_PUT
                       |NGX_HTTP_PATCH|NGX_HTTP_DELETE;
        }

    } else if (len > sizeof("v1/windows/") - 1
               && ngx_strncmp(p, "v1/windows/", sizeof("v1/windows/") - 1)
                  == 0
               && ((len > sizeof("v1/windows//end") - 1
                    && ngx_strncmp(last - 4, "/end", 4) == 0)
                   || (len > sizeof("v1/windows//skip") - 1
                       && ngx_strncmp(last - 5, "/skip", 5) == 0)))
    {
        ctx->route = NGX_HA_OPTOUT_R_WINDOW;
        *allowed = NGX_HTTP_POST;
        ctx->skip = (last[-1] == 'p');
        ctx->upstream.data = p + sizeof("v1/windows/") - 1;
        ctx->upstream.len = last - (ctx->skip ? 5 : 4) - ctx->upstream.data;

    } else if (ngx_ha_optout_path_is("v1/audit")) {
        ctx->route = NGX_HA_OPTOUT_R_AUDIT;
        *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (ngx_ha_optout_path_is("v1/whoami")) {
        ctx->route = NGX_HA_OPTOUT_R_WHOAMI;
        *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (ngx_ha_optout_path_is("v1/approvals")) {
        ctx->route = NGX_HA_OPTOUT_R_APPROVALS;
        *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (len > sizeof("v1/approvals/") - 1
               && ngx_strncmp(p, "v1/approvals/", sizeof("v1/approvals/") - 1)
                  == 0)
    {
        /* the approval's id travels in ctx->upstream */
        ctx->route = NGX_HA_OPTOUT_R_APPROVALS;
        *allowed = NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST|NGX_HTTP_DELETE;
        ctx->upstream.data = p + sizeof("v1/approvals/") - 1;
        ctx->upstream.len = last - ctx->upstream.data;

    } else {
        return ngx_ha_optout_refuse(ctx, r,
                                    NGX_HTTP_NOT_FOUND, "NotFound",
                                    "no such endpoint; see v1/flags, "
                                    "v1/flags/{upstream}, v1/fleet, "
                                    "v1/fleet/{upstream}, "
                                    "v1/windows/{upstream}/end|skip, "
                                    "v1/approvals, "
                                    "v1/audit, v1/whoami");
    }

#undef ngx_ha_optout_path_is

    return NGX_OK;
}


/* 405, with the Allow header of the endpoint */

static ngx_int_t
ngx_http_ha_optout_route_not_allowed(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    char  *allow;

    if (ctx->route == NGX_HA_OPTOUT_R_FLAG
        || ctx->route == NGX_HA_OPTOUT_R_FLEET)
    {
        allow = "GET, HEAD, PUT, PATCH, DELETE";

    } else if (ctx->route == NGX_HA_OPTOUT_R_FLEET_DENIED) {
        allow = "POST";

    } else if (ctx->route == NGX_HA_OPTOUT_R_WINDOW) {
        allow = "POST";

    } else if (ctx->route == NGX_HA_OPTOUT_R_APPROVALS
               && ctx->upstream.len)
    {
        allow = "GET, HEAD, POST, DELETE";

    } else {
        allow = "GET, HEAD";
    }

    if (ngx_http_ha_optout_admin_header(r, "Allow", allow) == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_ha_optout_refuse(ctx, r,
                                NGX_HTTP_NOT_ALLOWED, "MethodNotAllowed",
                                "method not allowed on this endpoint");
}


/* the upstream named: one of ours, and one the token's ha_upstreams allow */

static ngx_int_t
ngx_http_ha_optout_route_upstream(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    ctx->hscf = ngx_http_ha_optout_find_upstream(hmcf, &ctx->upstream);

    if (ctx->hscf == NULL) {
        return ngx_http_ha_optout_admin_refuse(ctx,
                   ngx_http_ha_optout_upstream_unknown(r, hmcf,
                                                       &ctx->upstream));
    }

    if (ngx_http_ha_optout_admin_may(ctx, ctx->upstream.data,
                                     ctx->upstream.len))
    {
        return NGX_OK;
    }

    ngx_http_ha_optout_auth_count("scope");

    return ngx_ha_optout_refuse(ctx, r,
                                NGX_HTTP_FORBIDDEN, "UpstreamNotAllowed",
                                "the token's ha_upstreams claim does not "
                                "include this upstream");
}


/*
 * 404 UnknownUpstream: the name as sent (escaped), and a near match: the
 * same name in another case, or the stream upstream of that name
 */

static ngx_int_t
ngx_http_ha_optout_upstream_unknown(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *name)
{
    u_char                          *p, *last;
    size_t                           n;
    ngx_str_t                        message, *near, *u;
    ngx_uint_t                       i;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    message.data = ngx_pnalloc(r->pool, 1024);
    if (message.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = message.data;
    last = p + 1024 - 8;

    p = ngx_cpymem(p, "no upstream with \"ha_optout\" is named \"",
                   sizeof("no upstream with \"ha_optout\" is named \"") - 1);
    p = ngx_http_ha_optout_echo(p, last, name->data, name->len);
    *p++ = '"';

    near = NULL;
    hscfp = hmcf->upstreams.elts;
    n = sizeof("stream:") - 1;

    for (i = 0; near == NULL && i < hmcf->upstreams.nelts; i++) {
        u = &hscfp[i]->name;

        if ((u->len == name->len
             && ngx_strncasecmp(u->data, name->data, name->len) == 0)
            || (u->len == name->len + n
                && ngx_strncmp(u->data, "stream:", n) == 0
                && ngx_strncasecmp(u->data + n, name->data, name->len) == 0))
        {
            near = u;
        }
    }

    if (near) {
        p = ngx_slprintf(p, last, "; did you mean \"%V\"?", near);

    } else {
        p = ngx_slprintf(p, last, "; GET v1/flags lists them");
    }

    message.len = p - message.data;

    return ngx_http_ha_optout_admin_error(r, NGX_HTTP_NOT_FOUND,
                                          "UnknownUpstream", &message);
}


static void
ngx_http_ha_optout_admin_body(ngx_http_request_t *r)
{
    u_char                          *body, *p;
    size_t                           len;
    ssize_t                          n;
    ngx_buf_t                       *b;
    ngx_chain_t                     *cl;
    ngx_http_ha_optout_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);

    if (r->request_body == NULL) {
        ngx_http_finalize_request(r,
                                  ngx_http_ha_optout_admin_write(r, ctx, NULL,
                                                                 0));
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    if (len > NGX_HA_OPTOUT_BODY_MAX) {
        ngx_http_finalize_request(r,
            ngx_ha_optout_err(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                              "PayloadTooLarge",
                              "request body is larger than 16 KiB"));
        return;
    }

    body = ngx_pnalloc(r->pool, len + 1);
    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
                return;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    ngx_http_finalize_request(r,
                              ngx_http_ha_optout_admin_write(r, ctx, body,
                                                             p - body));
}


ngx_str_t *
ngx_http_ha_optout_request_id(ngx_http_request_t *r)
{
    ngx_str_t                      *id;
    ngx_http_variable_value_t      *vv;
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);
    vv = ngx_http_get_indexed_variable(r, hlcf->request_id_index);

    id = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (id == NULL) {
        return NULL;
    }

    if (vv == NULL || vv->not_found) {
        ngx_str_set(id, "");
        return id;
    }

    id->data = vv->data;
    id->len = vv->len;

    return id;
}


ngx_int_t
ngx_http_ha_optout_if_match(ngx_http_request_t *r, uint64_t version)
{
    u_char           *p, *last;
    uint64_t          v;
    ngx_table_elt_t  *h;

    h = r->headers_in.if_match;

    if (h == NULL) {
        return NGX_OK;
    }

    p = h->value.data;
    last = p + h->value.len;

    if (h->value.len == 1 && *p == '*') {
        return NGX_OK;
    }

    if (last - p >= 2 && *p == 'W' && p[1] == '/') {
        p += 2;
    }

    if (last - p < 3 || *p != '"' || last[-1] != '"') {
        return NGX_DECLINED;
    }

    p++;
    last--;
    v = 0;

    for ( /* void */ ; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_DECLINED;
        }

        v = v * 10 + (*p - '0');
    }

    return (v == version) ? NGX_OK : NGX_DECLINED;
}


/* a name from the request, for a message: printable ASCII, cut at 64 */

u_char *
ngx_http_ha_optout_echo(u_char *p, u_char *last, u_char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len && i < NGX_HA_OPTOUT_NAME_LEN && p + 4 < last; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f) {
            *p++ = s[i];
        } else {
            p = ngx_sprintf(p, "\\x%02xd", (ngx_uint_t) s[i]);
        }
    }

    if (i < len && p + 3 < last) {
        p = ngx_cpymem(p, "...", 3);
    }

    return p;
}


/*
 * a header of the answer (the admin API's and the status page's): key is
 * a static string, value lives as long as the request; NULL: no memory
 */

ngx_table_elt_t *
ngx_http_ha_optout_header_out(ngx_http_request_t *r, char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return h;
}


/* ETag: "version", the flag's version as If-Match takes it back */

ngx_int_t
ngx_http_ha_optout_admin_etag(ngx_http_request_t *r, uint64_t version)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 2);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_ha_optout_header_out(r, "ETag", p,
                                      ngx_sprintf(p, "\"%uL\"", version) - p)
        == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a header of the answer, of static strings */

ngx_table_elt_t *
ngx_http_ha_optout_admin_header(ngx_http_request_t *r, char *key,
    char *value)
{
    return ngx_http_ha_optout_header_out(r, key, (u_char *) value,
                                         ngx_strlen(value));
}


/* the length of s cut to max at most, on a UTF-8 character boundary */

size_t
ngx_http_ha_optout_admin_cut(u_char *s, size_t len, size_t max)
{
    size_t  n;

    n = ngx_min(len, max);

    while (n < len && n > 0 && (s[n] & 0xc0) == 0x80) {
        n--;
    }

    return n;
}


ngx_int_t
ngx_http_ha_optout_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    char *code, ngx_str_t *message)
{
    json_t                          *json;
    uint64_t                         etag;
    ngx_str_t                       *request_id;
    ngx_table_elt_t                 *h;
    ngx_http_ha_optout_flag_t       *before;
    ngx_http_ha_optout_admin_ctx_t  *ctx;

    request_id = ngx_http_ha_optout_request_id(r);
    if (request_id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (status == NGX_HTTP_UNAUTHORIZED
        || (status == NGX_HTTP_FORBIDDEN
            && ngx_strcmp(code, "ForbiddenByPolicy") != 0))
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "WWW-Authenticate");

        if (status == NGX_HTTP_UNAUTHORIZED) {
            ngx_str_set(&h->value, "Bearer error=\"invalid_token\"");
        } else {
            ngx_str_set(&h->value, "Bearer error=\"insufficient_scope\"");
        }

        r->headers_out.www_authenticate = h;
    }

    /*
     * a refusal of an authenticated actor is an audit event; anonymous
     * noise (401) is counted and logged, but kept out of the audit trail
     */

    if (status == NGX_HTTP_FORBIDDEN
        && (r->method & (NGX_HTTP_PUT|NGX_HTTP_PATCH|NGX_HTTP_DELETE
                         |NGX_HTTP_POST)))
    {
        ngx_http_ha_optout_admin_denied(r, message, request_id);
    }

    json = json_pack("{s:{s:i,s:s,s:s%},s:s%}",
                     "error", "status", (int) status, "code", code,
                     "message", message->data, message->len,
                     "request_id", request_id->data, request_id->len);

    /*
     * a refused write still tells the version that is current, so that a
     * client answered 412 can retry with it
     */

    ctx = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);

    if ((r->method & (NGX_HTTP_PUT|NGX_HTTP_PATCH|NGX_HTTP_DELETE))
        && ctx && ctx->hscf && ctx->hscf->rec)
    {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        before = (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET)
                 ? &ctx->hscf->rec->fleet : &ctx->hscf->rec->api;
        etag = before->present ? before->version : 0;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        return ngx_http_ha_optout_admin_send(r, status, json, etag);
    }

    return ngx_http_ha_optout_admin_send(r, status, json,
                                         NGX_HA_OPTOUT_NO_ETAG);
}


/*
 * Longer than a screen and a half: the headers and body of an answer, built
 * as nginx's own handlers build them.
 */

ngx_int_t
ngx_http_ha_optout_admin_send(ngx_http_request_t *r, ngx_uint_t status,
    void *json, uint64_t etag)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_str_t     out;
    ngx_chain_t   cl;

    ngx_http_ha_optout_admin_count(r->method, status);

    if (ngx_http_ha_optout_json_out(r->pool, json, &out) != NGX_OK) {

        /* an answer jansson could not build is still a JSON answer */

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "ha_optout: an admin answer could not be built");

        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        etag = NGX_HA_OPTOUT_NO_ETAG;
        ngx_str_set(&out, "{\"error\":{\"status\":500,\"code\":"
                    "\"InternalError\",\"message\":\"the answer could "
                    "not be built\"}}\n");
    }

    /* If-Match is ours to judge (412 JSON), not the not_modified filter's */
    r->disable_not_modified = 1;

    if (etag != NGX_HA_OPTOUT_NO_ETAG
        && (r->method & (NGX_HTTP_PUT|NGX_HTTP_PATCH|NGX_HTTP_DELETE)
            || (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD) && etag)))
    {
        if (ngx_http_ha_optout_admin_etag(r, etag) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_ha_optout_admin_header(r, "Cache-Control", "no-store")
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = out.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_create_temp_buf(r->pool, 0);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = out.data;
    b->last = out.data + out.len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    cl.buf = b;
    cl.next = NULL;

    return ngx_http_output_filter(r, &cl);
}
