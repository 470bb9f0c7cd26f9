
/*
 * ngx_ha_optout_module: the admin REST API below the ha_optout_admin
 * location (SPEC section 3).  Every answer is JSON; a rejected request
 * changes nothing and is counted.
 */


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
    time_t                           ttl;
    unsigned                         waiting:1; /* r->main->count taken */
    unsigned                         applied:1; /* a DELETE is in the zone */
    unsigned                         changed:1; /* it removed a flag */
    unsigned                         audited:1; /* its line is written */
    ngx_http_ha_optout_audit_line_t *line;

    /* the layer written: the API's, or the fleet agent's (v1/fleet) */
    ngx_uint_t                       layer;     /* SRC_API or SRC_FLEET */
} ngx_http_ha_optout_admin_ctx_t;


static ngx_int_t ngx_http_ha_optout_admin_route(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_admin_auth(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t scope);
static void ngx_http_ha_optout_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_ha_optout_admin_write(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);
static ngx_int_t ngx_http_ha_optout_admin_prepare(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);
static ngx_int_t ngx_http_ha_optout_admin_decide_locked(
    ngx_http_request_t *r, ngx_http_ha_optout_admin_ctx_t *ctx,
    char **ecode, char **text);
static ngx_int_t ngx_http_ha_optout_admin_restore(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_admin_restored(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t persisted);
static ngx_int_t ngx_http_ha_optout_admin_suspend(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_admin_approvals(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static ngx_int_t ngx_http_ha_optout_admin_wait(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static void ngx_http_ha_optout_admin_retry(ngx_http_request_t *r);
static void ngx_http_ha_optout_admin_actor(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_str_t *actor);
static ngx_int_t ngx_http_ha_optout_admin_window(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len);
static ngx_int_t ngx_http_ha_optout_admin_get(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx);
static u_char *ngx_http_ha_optout_echo(u_char *p, u_char *last, u_char *s,
    size_t len);
static ngx_int_t ngx_http_ha_optout_upstream_unknown(ngx_http_request_t *r,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *name);


static ngx_int_t
ngx_http_ha_optout_admin_whoami(ngx_http_request_t *r)
{
    return r->uri.len >= sizeof("v1/whoami") - 1
           && ngx_strncmp(r->uri.data + r->uri.len - (sizeof("v1/whoami") - 1),
                          "v1/whoami", sizeof("v1/whoami") - 1) == 0;
}


/* v1/fleet... is written by the fleet agent only (scope ha:fleet) */

static ngx_int_t
ngx_http_ha_optout_admin_is_fleet(ngx_http_request_t *r)
{
    u_char                    *p, *last;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    last = r->uri.data + r->uri.len;

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(p, clcf->name.data, clcf->name.len) == 0)
    {
        p += clcf->name.len;
    }

    while (p < last && *p == '/') {
        p++;
    }

    return (size_t) (last - p) >= sizeof("v1/fleet") - 1
           && ngx_strncmp(p, "v1/fleet", sizeof("v1/fleet") - 1) == 0
           && ((size_t) (last - p) == sizeof("v1/fleet") - 1
               || p[sizeof("v1/fleet") - 1] == '/');
}


/*
 * v1/approvals: POST approves (ha:approve); DELETE withdraws (the
 * requester, ha:write) or rejects (ha:approve)
 */

static ngx_uint_t
ngx_http_ha_optout_admin_scope(ngx_http_request_t *r, ngx_uint_t write)
{
    if (ngx_strlcasestrn(r->uri.data, r->uri.data + r->uri.len,
                         (u_char *) "v1/approvals",
                         sizeof("v1/approvals") - 2)
        != NULL)
    {
        if (r->method == NGX_HTTP_POST) {
            return NGX_HA_OPTOUT_SCOPE_APPROVE;
        }

        if (r->method == NGX_HTTP_DELETE) {
            return NGX_HA_OPTOUT_SCOPE_WRITE|NGX_HA_OPTOUT_SCOPE_APPROVE;
        }
    }

    return write ? NGX_HA_OPTOUT_SCOPE_WRITE : NGX_HA_OPTOUT_SCOPE_READ;
}


static ngx_int_t
ngx_http_ha_optout_admin_refuse(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_int_t rc)
{
    ctx->rc = rc;
    return NGX_DECLINED;
}


#define NGX_HA_OPTOUT_NO_ETAG  ((uint64_t) -1)


#define ngx_ha_optout_err(r, st, c, m)                                        \
    ngx_http_ha_optout_admin_errorf(r, st, c, m)

#define ngx_ha_optout_refuse(ctx, r, st, c, m)                                \
    ngx_http_ha_optout_admin_refuse(ctx,                                      \
        ngx_http_ha_optout_admin_errorf(r, st, c, m))

static ngx_int_t
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


/* "v1/flags", "v1/flags/{upstream}", "v1/audit", "v1/whoami" */

static ngx_int_t
ngx_http_ha_optout_admin_route(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    u_char                          *p, *last;
    size_t                           len;
    ngx_uint_t                       allowed;
    ngx_table_elt_t                 *h;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    p = r->uri.data;
    last = r->uri.data + r->uri.len;

    if (r->uri.len >= clcf->name.len
        && ngx_strncmp(p, clcf->name.data, clcf->name.len) == 0)
    {
        p += clcf->name.len;
    }

    while (p < last && *p == '/') {
        p++;
    }

    len = last - p;

#define ngx_ha_optout_path_is(s)                                              \
    (len == sizeof(s) - 1 && ngx_strncmp(p, s, sizeof(s) - 1) == 0)

    if (ngx_ha_optout_path_is("v1/flags")) {
        ctx->route = NGX_HA_OPTOUT_R_FLAGS;
        allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (len > sizeof("v1/flags/") - 1
               && ngx_strncmp(p, "v1/flags/", sizeof("v1/flags/") - 1) == 0)
    {
        ctx->route = NGX_HA_OPTOUT_R_FLAG;
        allowed = NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_PUT|NGX_HTTP_PATCH
                  |NGX_HTTP_DELETE;
        ctx->upstream.data = p + sizeof("v1/flags/") - 1;
        ctx->upstream.len = last - ctx->upstream.data;

    } else if (ngx_ha_optout_path_is("v1/fleet")) {
        ctx->route = NGX_HA_OPTOUT_R_FLEETS;
        allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

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
            allowed = NGX_HTTP_POST;
            ctx->upstream.len -= sizeof("/denied") - 1;

        } else {
            ctx->route = NGX_HA_OPTOUT_R_FLEET;
            allowed = NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_PUT
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
        allowed = NGX_HTTP_POST;
        ctx->skip = (last[-1] == 'p');
        ctx->upstream.data = p + sizeof("v1/windows/") - 1;
        ctx->upstream.len = last - (ctx->skip ? 5 : 4) - ctx->upstream.data;

    } else if (ngx_ha_optout_path_is("v1/audit")) {
        ctx->route = NGX_HA_OPTOUT_R_AUDIT;
        allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (ngx_ha_optout_path_is("v1/whoami")) {
        ctx->route = NGX_HA_OPTOUT_R_WHOAMI;
        allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (ngx_ha_optout_path_is("v1/approvals")) {
        ctx->route = NGX_HA_OPTOUT_R_APPROVALS;
        allowed = NGX_HTTP_GET|NGX_HTTP_HEAD;

    } else if (len > sizeof("v1/approvals/") - 1
               && ngx_strncmp(p, "v1/approvals/", sizeof("v1/approvals/") - 1)
                  == 0)
    {
        /* the approval's id travels in ctx->upstream */
        ctx->route = NGX_HA_OPTOUT_R_APPROVALS;
        allowed = NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST|NGX_HTTP_DELETE;
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

    if (!(r->method & allowed)) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");

        if (ctx->route == NGX_HA_OPTOUT_R_FLAG
            || ctx->route == NGX_HA_OPTOUT_R_FLEET)
        {
            ngx_str_set(&h->value, "GET, HEAD, PUT, PATCH, DELETE");

        } else if (ctx->route == NGX_HA_OPTOUT_R_FLEET_DENIED) {
            ngx_str_set(&h->value, "POST");

        } else if (ctx->route == NGX_HA_OPTOUT_R_WINDOW) {
            ngx_str_set(&h->value, "POST");

        } else if (ctx->route == NGX_HA_OPTOUT_R_APPROVALS
                   && ctx->upstream.len)
        {
            ngx_str_set(&h->value, "GET, HEAD, POST, DELETE");

        } else {
            ngx_str_set(&h->value, "GET, HEAD");
        }

        return ngx_ha_optout_refuse(ctx, r,
                                    NGX_HTTP_NOT_ALLOWED, "MethodNotAllowed",
                                    "method not allowed on this endpoint");
    }

    if (ctx->route != NGX_HA_OPTOUT_R_FLAG
        && ctx->route != NGX_HA_OPTOUT_R_FLEET
        && ctx->route != NGX_HA_OPTOUT_R_FLEET_DENIED
        && ctx->route != NGX_HA_OPTOUT_R_WINDOW)
    {
        return NGX_OK;
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    ctx->hscf = ngx_http_ha_optout_find_upstream(hmcf, &ctx->upstream);

    if (ctx->hscf == NULL) {
        return ngx_http_ha_optout_admin_refuse(ctx,
                   ngx_http_ha_optout_upstream_unknown(r, hmcf,
                                                       &ctx->upstream));
    }

    if (ctx->claims.upstreams) {
        ngx_uint_t   i;
        ngx_str_t   *u = ctx->claims.upstreams->elts;

        for (i = 0; i < ctx->claims.upstreams->nelts; i++) {
            if (u[i].len == ctx->upstream.len
                && ngx_strncmp(u[i].data, ctx->upstream.data, u[i].len) == 0)
            {
                return NGX_OK;
            }
        }

        ngx_http_ha_optout_auth_count("scope");

        return ngx_ha_optout_refuse(ctx, r,
                                    NGX_HTTP_FORBIDDEN, "UpstreamNotAllowed",
                                    "the token's ha_upstreams claim does not "
                                    "include this upstream");
    }

    return NGX_OK;
}


/* one part of a JWT, decoded and parsed, for a hint only (not trusted) */

static json_t *
ngx_http_ha_optout_jwt_part(ngx_http_request_t *r, ngx_str_t *token,
    ngx_uint_t n)
{
    u_char     *p, *last, *start;
    ngx_str_t   src, dst;

    p = token->data;
    last = p + token->len;

    for (start = p; n && p < last; p++) {
        if (*p == '.') {
            n--;
            start = p + 1;
        }
    }

    if (n) {
        return NULL;
    }

    p = ngx_strlchr(start, last, '.');
    src.data = start;
    src.len = (p ? p : last) - start;

    if (src.len == 0 || src.len > 8192) {
        return NULL;
    }

    dst.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(src.len));
    if (dst.data == NULL
        || ngx_decode_base64url(&dst, &src) != NGX_OK)
    {
        return NULL;
    }

    return json_loadb((char *) dst.data, dst.len, 0, NULL);
}


/*
 * "bearer token rejected: REASON", and for some reasons what to do: an
 * expired token says its exp and the server's clock (a skewed clock is the
 * usual cause), a token without kid where several keys could verify it
 * says so instead of "unknown_kid"
 */

static u_char *
ngx_http_ha_optout_auth_hint(ngx_http_request_t *r,
    ngx_http_ha_optout_loc_conf_t *hlcf, ngx_str_t *token,
    const char *reason, u_char *p, u_char *last)
{
    u_char                     now[sizeof("2026-11-27T10:00:00Z")];
    u_char                     exp[sizeof("2026-11-27T10:00:00Z")];
    json_t                    *j, *v;
    ngx_http_ha_optout_key_t  *key;

    if (ngx_strcmp(reason, "expired") == 0 && token->len) {
        j = ngx_http_ha_optout_jwt_part(r, token, 1);
        v = json_object_get(j, "exp");

        if (json_is_integer(v) && json_integer_value(v) > 0) {
            *ngx_http_ha_optout_time_iso(now, ngx_time()) = '\0';
            *ngx_http_ha_optout_time_iso(exp,
                                    (time_t) json_integer_value(v)) = '\0';
            p = ngx_slprintf(p, last, "bearer token rejected: expired: its "
                             "exp %L is %s, this server's time is %T (%s); "
                             "mint a new token, or fix the clock that is "
                             "wrong", (int64_t) json_integer_value(v), exp,
                             ngx_time(), now);
            json_decref(j);
            return p;
        }

        if (j && v == NULL) {
            json_decref(j);
            return ngx_slprintf(p, last, "bearer token rejected: expired: "
                                "the token has no \"exp\" claim, which "
                                "every token needs (mint it with one)");
        }

        json_decref(j);
    }

    key = (hlcf->keys && hlcf->keys->nelts) ? hlcf->keys->elts : NULL;

    if (ngx_strcmp(reason, "unknown_kid") == 0 && token->len && key
        && (hlcf->keys->nelts > 1 || key[0].jwk))
    {
        j = ngx_http_ha_optout_jwt_part(r, token, 0);
        v = json_object_get(j, "kid");
        json_decref(j);

        if (j && v == NULL && hlcf->keys->nelts == 1) {
            return ngx_slprintf(p, last, "bearer token rejected: "
                                "missing_kid: the token has no \"kid\" "
                                "header and the key is of a JWK Set, whose "
                                "keys are selected by kid; give the kid of "
                                "the key (\"%V\")", &key[0].kid);
        }

        if (j && v == NULL) {
            return ngx_slprintf(p, last, "bearer token rejected: "
                                "missing_kid: the token has no \"kid\" "
                                "header and this location has %ui keys; "
                                "give the kid= of one (ha-optoutctl --kid)",
                                hlcf->keys->nelts);
        }
    }

    return ngx_slprintf(p, last, "bearer token rejected: %s", reason);
}


static ngx_int_t
ngx_http_ha_optout_admin_auth(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t scope)
{
    u_char                         *msg, subbuf[256];
    ngx_str_t                       token, message, sub;
    ngx_int_t                       rc;
    const char                     *reason;
    ngx_table_elt_t                *auth;
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);
    auth = r->headers_in.authorization;
    reason = "missing";
    ngx_str_null(&token);

    if (auth == NULL || auth->value.len <= sizeof("Bearer ") - 1
        || ngx_strncasecmp(auth->value.data, (u_char *) "Bearer ",
                           sizeof("Bearer ") - 1) != 0)
    {
        goto invalid;
    }

    token.data = auth->value.data + sizeof("Bearer ") - 1;
    token.len = auth->value.len - (sizeof("Bearer ") - 1);

    while (token.len && token.data[0] == ' ') {
        token.data++;
        token.len--;
    }

    rc = ngx_http_ha_optout_token_verify(r->pool, hlcf->keys, &token,
                                         &hlcf->audience, &hlcf->issuer,
                                         hlcf->token_lifetime, ngx_time(),
                                         &ctx->claims, &reason);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        goto invalid;
    }

    /* any valid token may ask who it is */

    if ((ctx->claims.scopes & scope) || ngx_http_ha_optout_admin_whoami(r)) {
        return NGX_OK;
    }

    ngx_http_ha_optout_auth_count("scope");

    msg = ngx_pnalloc(r->pool, 128);
    if (msg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    message.data = msg;
    message.len = ngx_sprintf(msg, "the token's scope lacks \"%s\"",
                              (scope & NGX_HA_OPTOUT_SCOPE_FLEET)
                              ? "ha:fleet"
                              : (scope & NGX_HA_OPTOUT_SCOPE_APPROVE)
                              ? "ha:approve"
                              : scope == NGX_HA_OPTOUT_SCOPE_WRITE
                              ? "ha:write" : "ha:read")
                  - msg;

    return ngx_http_ha_optout_admin_refuse(ctx,
               ngx_http_ha_optout_admin_error(r, NGX_HTTP_FORBIDDEN,
                                              "InsufficientScope",
                                              &message));

invalid:

    ngx_http_ha_optout_auth_count(reason);

    msg = ngx_pnalloc(r->pool, 512);
    if (msg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    message.data = msg;
    message.len = ngx_http_ha_optout_auth_hint(r, hlcf, &token, reason, msg,
                                               msg + 512)
                  - msg;

    /*
     * the reason in error_log too (info: a 401 is anyone's to cause); the
     * kid and sub are known when the signature verified, and sub is the
     * token's text: escaped, so that it cannot forge a line
     */

    sub.data = subbuf;
    sub.len = ngx_http_ha_optout_escape(subbuf, sizeof(subbuf),
                                        ctx->claims.sub.data,
                                        ctx->claims.sub.len)
              - subbuf;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "ha_optout: %V (kid \"%V\", sub \"%V\")", &message,
                  &ctx->claims.kid, &sub);

    return ngx_http_ha_optout_admin_refuse(ctx,
               ngx_http_ha_optout_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                              "InvalidToken", &message));
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


/*
 * A fleet write (the agent's PUT or PATCH) carries the record's etcd
 * "revision", its signed "actor" and the agent's host ("via") beside the
 * flag fields: they are taken out here, and the rest is parsed as any
 * flag.  The token's subject is the "via" that is stored: it is the one
 * that is authenticated.
 */

static ngx_int_t
ngx_http_ha_optout_admin_fleet_body(ngx_http_request_t *r, u_char **body,
    size_t *len, uint64_t *revision, ngx_str_t *actor, char **text)
{
    char          *out;
    json_t        *j, *v;
    json_int_t     n;
    json_error_t   e;

    j = json_loadb((char *) *body, *len, JSON_REJECT_DUPLICATES, &e);

    if (!json_is_object(j)) {
        json_decref(j);
        return NGX_DECLINED;        /* the flag parser says what is wrong */
    }

    v = json_object_get(j, "revision");

    if (v != NULL) {
        n = json_is_integer(v) ? json_integer_value(v) : 0;

        if (n <= 0) {
            json_decref(j);
            *text = "revision must be a positive integer: the etcd revision "
                    "of the fleet record";
            return NGX_ERROR;
        }

        *revision = (uint64_t) n;
        json_object_del(j, "revision");

    } else if (r->method == NGX_HTTP_PUT) {
        json_decref(j);
        *text = "a fleet flag needs \"revision\", the etcd revision of its "
                "record";
        return NGX_ERROR;
    }

    v = json_object_get(j, "actor");

    if (v != NULL) {
        if (!json_is_string(v) || json_string_length(v) == 0
            || json_string_length(v) > NGX_HA_OPTOUT_ACTOR_LEN)
        {
            json_decref(j);
            *text = "actor must be a string of 1..128 bytes: the record's "
                    "signed actor";
            return NGX_ERROR;
        }

        actor->len = json_string_length(v);
        actor->data = ngx_pnalloc(r->pool, actor->len);
        if (actor->data == NULL) {
            json_decref(j);
            return NGX_ABORT;
        }

        ngx_memcpy(actor->data, json_string_value(v), actor->len);
        json_object_del(j, "actor");

    } else if (r->method == NGX_HTTP_PUT) {
        json_decref(j);
        *text = "a fleet flag needs \"actor\", the record's signed actor";
        return NGX_ERROR;
    }

    v = json_object_get(j, "via");

    if (v != NULL) {
        if (!json_is_string(v)) {
            json_decref(j);
            *text = "via must be a string: the agent's host";
            return NGX_ERROR;
        }

        json_object_del(j, "via");
    }

    out = json_dumps(j, JSON_COMPACT);
    json_decref(j);

    if (out == NULL) {
        return NGX_ABORT;
    }

    *len = ngx_strlen(out);
    *body = ngx_pnalloc(r->pool, *len + 1);
    if (*body == NULL) {
        free(out);
        return NGX_ABORT;
    }

    ngx_memcpy(*body, out, *len + 1);
    free(out);

    return NGX_OK;
}


static void
ngx_http_ha_optout_admin_via(ngx_http_ha_optout_flag_t *flag, ngx_str_t *sub)
{
    flag->via_len = ngx_min(sub->len, NGX_HA_OPTOUT_VIA_LEN);

    while (flag->via_len < sub->len && flag->via_len > 0
           && (sub->data[flag->via_len] & 0xc0) == 0x80)
    {
        flag->via_len--;
    }

    ngx_memcpy(flag->via, sub->data, flag->via_len);
}


/*
 * POST v1/fleet/{upstream}/denied: the agent refused a record (its
 * signature does not verify): nothing changes, the refusal is audited.
 */

static ngx_int_t
ngx_http_ha_optout_admin_fleet_denied(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    u_char                          *p;
    json_t                          *j, *v;
    ngx_str_t                        reason, *request_id;
    json_int_t                       n;
    json_error_t                     e;
    ngx_http_ha_optout_flag_t       *stub;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    j = body ? json_loadb((char *) body, len, JSON_REJECT_DUPLICATES, &e)
             : NULL;

    v = json_object_get(j, "revision");
    n = json_is_integer(v) ? json_integer_value(v) : -1;

    if (!json_is_object(j) || n < 0) {
        json_decref(j);
        return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidJSON",
                                 "the body must be {\"revision\": N, "
                                 "\"reason\": \"...\"}");
    }

    stub = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_flag_t));
    p = ngx_pnalloc(r->pool, NGX_HA_OPTOUT_REASON_LEN + 32);
    if (stub == NULL || p == NULL) {
        json_decref(j);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    stub->source = NGX_HA_OPTOUT_SRC_FLEET;
    stub->revision = (uint64_t) n;
    ngx_http_ha_optout_admin_via(stub, &ctx->claims.sub);

    v = json_object_get(j, "reason");
    reason.len = json_is_string(v) ? json_string_length(v) : 0;
    reason.len = ngx_min(reason.len, NGX_HA_OPTOUT_REASON_LEN);

    while (reason.len > 0 && reason.len < json_string_length(v)
           && (json_string_value(v)[reason.len] & 0xc0) == 0x80)
    {
        reason.len--;
    }

    reason.data = p;
    p = ngx_cpymem(p, "fleet record refused: ",
                   sizeof("fleet record refused: ") - 1);
    p = ngx_cpymem(p, reason.len ? json_string_value(v) : "-",
                   reason.len ? reason.len : 1);
    reason.len = p - reason.data;
    json_decref(j);

    request_id = ngx_http_ha_optout_request_id(r);
    if (request_id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    (void) ngx_atomic_fetch_add(
               &ctx->hscf->rec->changes[NGX_HA_OPTOUT_ACT_DENIED], 1);

    ngx_http_ha_optout_audit(hmcf, r->connection->log,
                             NGX_HA_OPTOUT_ACT_DENIED, &ctx->hscf->name,
                             &ctx->claims.sub, &r->connection->addr_text,
                             &reason, stub, NULL, request_id);

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK,
               json_pack("{s:b,s:s%,s:I}", "denied", 1, "upstream",
                         ctx->hscf->name.data, ctx->hscf->name.len,
                         "revision", (json_int_t) n),
               NGX_HA_OPTOUT_NO_ETAG);
}


/*
 * PUT, PATCH and DELETE.  Everything is checked before the zone is
 * touched; the replay cache and If-Match are checked last, under the
 * zone's lock, so that a request rejected for any reason burns nothing.
 *
 * A change that suspends HA (PUT, PATCH) needs the writer lock, from its
 * change to its state file and audit line, and is refused (503) when it
 * cannot have it within NGX_HA_OPTOUT_LOCK_WAIT, or cannot be saved or
 * audited: nothing of it acts then.  It is published to the workers (the
 * zone's generation) only once both are written.  A restore (DELETE) takes
 * effect in the zone at once, lock or not, and its audit line is queued in
 * the same critical section; it is saved now if the lock can be had within
 * the wait, else by worker 0's timer, and answered 200 either way, with
 * "persisted": false when it is not on disk yet (SPEC section 8).
 *
 * Waiting never blocks the event loop: the request sleeps on a timer of
 * its connection, as limit_req's delay does.
 */

static ngx_int_t
ngx_http_ha_optout_admin_write(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    ngx_int_t                        rc;
    ngx_table_elt_t                 *h;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    if (ctx->route == NGX_HA_OPTOUT_R_FLEET_DENIED) {
        return ngx_http_ha_optout_admin_fleet_denied(r, ctx, body, len);
    }

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (ctx->route == NGX_HA_OPTOUT_R_WINDOW) {
        if (ngx_http_ha_optout_writer_trylock() == NGX_OK) {
            rc = ngx_http_ha_optout_admin_window(r, ctx, body, len);
            ngx_http_ha_optout_writer_unlock();
            return rc;
        }

        if (!ctx->waiting) {
            ctx->wait_start = ngx_current_msec;
        }

        if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
            ctx->body = body;
            ctx->len = len;
            return ngx_http_ha_optout_admin_wait(r, ctx);
        }

        return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "WriterBusy", "another write of flags has "
                                 "been in progress for too long (a slow or "
                                 "stuck state file or audit log, see "
                                 "error_log); nothing was changed, retry "
                                 "later");
    }

    if (!ctx->prepared) {
        if (!ctx->waiting) {
            ctx->wait_start = ngx_current_msec;
        }

        /*
         * a fresh zone: the state file comes back first (its flags, which
         * a PATCH or DELETE acts on, and its spent jtis, before one is
         * checked).  Its reader holds the writer lock: the write waits for
         * it as for any writer, then goes on (a suspension reads the file
         * below, with the lock, if need be)
         */
        if (!ngx_http_ha_optout_sh->restored) {
            if (ngx_http_ha_optout_writer_trylock() == NGX_OK) {
                ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
                ngx_http_ha_optout_writer_unlock();

            } else if (ngx_current_msec - ctx->wait_start
                       < NGX_HA_OPTOUT_LOCK_WAIT)
            {
                ctx->body = body;
                ctx->len = len;
                return ngx_http_ha_optout_admin_wait(r, ctx);
            }
        }

        /* an answer sent (a refusal, a dry run) leaves ctx->flag NULL */
        rc = ngx_http_ha_optout_admin_prepare(r, ctx, body, len);
        if (rc != NGX_OK || ctx->flag == NULL) {
            return rc;
        }

        ctx->prepared = 1;

        if (!ctx->waiting) {
            ctx->wait_start = ngx_current_msec;
        }
    }

    if (r->method == NGX_HTTP_DELETE) {
        return ngx_http_ha_optout_admin_restore(r, ctx);
    }

    if (ngx_http_ha_optout_writer_trylock() == NGX_OK) {
        if (!ngx_http_ha_optout_sh->restored) {
            ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
        }

        rc = ctx->approval
             ? ngx_http_ha_optout_approval_request(r, &ctx->claims,
                                                   ctx->hscf, ctx->flag,
                                                   ctx->ttl_set, ctx->ttl, 1)
             : ngx_http_ha_optout_admin_suspend(r, ctx);
        ngx_http_ha_optout_writer_unlock();
        return rc;
    }

    if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
        return ngx_http_ha_optout_admin_wait(r, ctx);
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "ha_optout: write on \"%V\" refused: another write of "
                  "flags (process %P) has held the writer lock for more "
                  "than %M ms", &ctx->hscf->name,
                  (ngx_pid_t) ngx_http_ha_optout_sh->writer,
                  (ngx_msec_t) NGX_HA_OPTOUT_LOCK_WAIT);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    ngx_str_set(&h->value, "2");

    return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE, "WriterBusy",
                             "another write of flags has been in progress "
                             "for too long (a slow or stuck state file or "
                             "audit log, see error_log); nothing was "
                             "changed, retry later");
}


/* a name from the request, for a message: printable ASCII, cut at 64 */

static u_char *
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


/* 409 PinConflict for a pin that names no server: which ones there are */

static ngx_int_t
ngx_http_ha_optout_pin_unknown(ngx_http_request_t *r,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag)
{
    u_char                    *p, *last;
    ngx_str_t                  message;
    ngx_uint_t                 i, n;
    ngx_http_ha_optout_rec_t  *rec;

    message.data = ngx_pnalloc(r->pool, 2048);
    if (message.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = message.data;
    last = p + 2048 - 64;
    rec = hscf->rec;

    p = ngx_cpymem(p, "pin \"", 5);
    p = ngx_http_ha_optout_echo(p, last, flag->pin, flag->pin_len);
    p = ngx_slprintf(p, last, "\" names no server of upstream \"%V\"; its "
                     "servers:", &hscf->name);

    for (i = 0, n = 0; rec && i < rec->nservers && p < last; i++) {
        if (rec->servers[i].len) {
            p = ngx_slprintf(p, last, "%s %*s", n++ ? "," : "",
                             rec->servers[i].len, rec->servers[i].name);
        }
    }

    if (n == 0) {
        p = ngx_slprintf(p, last, " (none known)");
    }

    message.len = p - message.data;

    return ngx_http_ha_optout_admin_error(r, NGX_HTTP_CONFLICT, "PinConflict",
                                          &message);
}


static ngx_int_t
ngx_http_ha_optout_admin_wait(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_event_t  *wev;

    if (!ctx->waiting) {
        /* the request lives on past this handler: finalized by the retry */
        ctx->waiting = 1;
        r->main->count++;
    }

    ctx->delay = ctx->delay ? ngx_min(ctx->delay * 2, 50) : 5;

    if (!r->discard_body) {
        r->read_event_handler = ngx_http_test_reading;
    }

    r->write_event_handler = ngx_http_ha_optout_admin_retry;

    wev = r->connection->write;
    wev->delayed = 1;
    ngx_add_timer(wev, ctx->delay);

    return NGX_DONE;
}


/*
 * v1/approvals (approval.c): NGX_BUSY is the writer lock busy; the request
 * waits for it on its timer as a flag write does, then 503 WriterBusy
 */

static ngx_int_t
ngx_http_ha_optout_admin_approvals(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    if (!ctx->waiting) {
        ctx->wait_start = ngx_current_msec;
    }

    rc = ngx_http_ha_optout_approval_handler(r, &ctx->claims,
                                             &ctx->upstream);
    if (rc != NGX_BUSY) {
        return rc;
    }

    if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
        return ngx_http_ha_optout_admin_wait(r, ctx);
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    ngx_str_set(&h->value, "2");

    return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE, "WriterBusy",
                             "another write holds the writer lock; retry "
                             "in a moment");
}


static void
ngx_http_ha_optout_admin_retry(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_event_t                     *wev;
    ngx_http_ha_optout_admin_ctx_t  *ctx;

    wev = r->connection->write;

    if (wev->delayed) {
        /* the socket became writable: not our timer yet */
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    if (!r->discard_body) {
        r->read_event_handler = ngx_http_block_reading;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);

    rc = (ctx->route == NGX_HA_OPTOUT_R_APPROVALS)
         ? ngx_http_ha_optout_admin_approvals(r, ctx)
         : ngx_http_ha_optout_admin_write(r, ctx, ctx->body, ctx->len);

    if (rc == NGX_DONE) {
        return;                         /* waits again */
    }

    ngx_http_finalize_request(r, rc);
}


/* the token's sub, cut to NGX_HA_OPTOUT_ACTOR_LEN on a UTF-8 boundary */

static void
ngx_http_ha_optout_admin_actor(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_str_t *actor)
{
    size_t  len;

    len = ngx_min(ctx->claims.sub.len, NGX_HA_OPTOUT_ACTOR_LEN);

    while (len < ctx->claims.sub.len && len > 0
           && (ctx->claims.sub.data[len] & 0xc0) == 0x80)
    {
        len--;
    }

    actor->data = ctx->claims.sub.data;
    actor->len = len;
}


static ngx_int_t
ngx_http_ha_optout_admin_prepare(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    time_t                           now, ttl;
    ngx_str_t                        code, message;
    ngx_str_t                        dry, factor;
    ngx_int_t                        rc;
    char                            *text;
    uint64_t                         revision;
    ngx_uint_t                       ttl_set, down, fleet;
    json_t                          *json;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t       *flag, *before, *layer;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_loc_conf_t   *hlcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    /*
     * the audit trail names who did it: a token without "sub" may read,
     * not write (its kid names a key, which many people may hold)
     */
    if (ctx->claims.sub.len == 0) {
        ngx_http_ha_optout_auth_count("malformed");
        return ngx_ha_optout_err(r, NGX_HTTP_UNAUTHORIZED, "InvalidToken",
                                 "bearer token rejected: a write needs a "
                                 "sub claim, the actor of the audit trail");
    }

    ctx->body = body;
    ctx->len = len;

    hscf = ctx->hscf;
    rec = hscf->rec;
    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    now = ngx_time();

    flag = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_flag_t));
    before = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_flag_t));
    if (flag == NULL || before == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ttl = 0;
    ttl_set = 0;

    /* the API layer, or the fleet layer (v1/fleet: the same code path) */
    fleet = (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET);
    layer = fleet ? &rec->fleet : &rec->api;
    revision = 0;
    factor.len = 0;
    factor.data = NULL;

    if (r->method == NGX_HTTP_PATCH) {
        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        *flag = *layer;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        if (!ngx_http_ha_optout_flag_live(flag, now)) {
            return ngx_ha_optout_err(r, NGX_HTTP_CONFLICT, "NoFlag",
                                     fleet ? "there is no fleet flag to "
                                             "change on this upstream; use "
                                             "PUT"
                                           : "there is no API flag to change "
                                             "on this upstream; use PUT");
        }

        revision = flag->revision;
    }

    if (r->method != NGX_HTTP_DELETE) {

        if (body == NULL || len == 0) {
            return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidJSON",
                                     "a JSON body is required");
        }

        if (fleet) {
            text = NULL;
            rc = ngx_http_ha_optout_admin_fleet_body(r, &body, &len,
                                                     &revision, &factor,
                                                     &text);
            if (rc == NGX_ABORT) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (rc == NGX_ERROR) {
                return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST,
                                         "InvalidField", text);
            }
        }

        if (ngx_http_ha_optout_flag_parse(r->pool, body, len,
                                          r->method == NGX_HTTP_PATCH, flag,
                                          &ttl, &ttl_set, &code, &message)
            != NGX_OK)
        {
            if (message.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* code is a static literal, so it is terminated */
            return ngx_http_ha_optout_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                                  (char *) code.data,
                                                  &message);
        }

        if (flag->pin_len) {
            rc = ngx_http_ha_optout_upstream_peer(hscf, flag->pin,
                                              flag->pin_len, &down, NULL);
            if (rc == NGX_BUSY) {
                return ngx_ha_optout_err(r, NGX_HTTP_CONFLICT, "PinConflict",
                                         "the pinned server is marked "
                                         "\"down\" in the upstream and "
                                         "cannot be pinned");
            }

            if (rc != NGX_OK) {
                return ngx_http_ha_optout_pin_unknown(r, hscf, flag);
            }
        }

        if (flag->selector_len && hscf->stream_conf) {
            /* stream's "ha_optout" has no selector= to point to */
            return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidField",
                                     "pin_selector is http only: a stream "
                                     "upstream has no request header to "
                                     "select on (\"ha_optout\" in stream "
                                     "takes only sticky_key=$var); send "
                                     "\"pin\" alone to hold every new "
                                     "connection on that server, or "
                                     "\"sticky\": true to keep each client "
                                     "on its server");
        }

        if (flag->selector_len && hscf->selector == NULL) {
            return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidField",
                                     "pin_selector needs \"ha_optout "
                                     "selector=$var\" in the upstream");
        }

        if (ngx_http_ha_optout_policy_check(hmcf, &hscf->name, flag, ttl_set,
                                            ttl, &message, r->pool)
            != NGX_OK)
        {
            if (message.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            return ngx_http_ha_optout_admin_error(r, NGX_HTTP_FORBIDDEN,
                                                  "ForbiddenByPolicy",
                                                  &message);
        }

        flag->present = 1;
        flag->source = ctx->layer;

        if (fleet) {
            /* the record's signed actor, by way of the agent */
            if (factor.len == 0) {
                factor.data = flag->actor;      /* a PATCH keeps it */
                factor.len = flag->actor_len;
            }

            flag->revision = revision;
            ngx_http_ha_optout_admin_via(flag, &ctx->claims.sub);

        } else {
            factor = ctx->claims.sub;
        }

        flag->actor_len = ngx_min(factor.len, NGX_HA_OPTOUT_ACTOR_LEN);

        /* a long sub is cut on a UTF-8 character boundary */
        while (flag->actor_len < factor.len
               && flag->actor_len > 0
               && (factor.data[flag->actor_len] & 0xc0) == 0x80)
        {
            flag->actor_len--;
        }

        ngx_memmove(flag->actor, factor.data, flag->actor_len);

        if (r->method == NGX_HTTP_PUT) {
            flag->set_at = now;
        }

        if (ttl_set) {
            flag->expires_at = ttl ? now + ttl : 0;
        }

        /*
         * policy "approvers": a write that suspends HA waits (202); not a
         * fleet write: the agents only mirror a record signed in etcd, and
         * each nginx holding it for its own approvals would split the fleet
         */

        rc = fleet ? NGX_DECLINED
                   : ngx_http_ha_optout_approval_request(r, &ctx->claims,
                                                         hscf, flag, ttl_set,
                                                         ttl, 0);
        if (rc == NGX_AGAIN) {
            /* requested below, with the writer lock */
            ctx->approval = 1;
            ctx->ttl_set = ttl_set ? 1 : 0;
            ctx->ttl = ttl;

        } else if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    dry.len = 0;

    if (r->args.len
        && ngx_http_arg(r, (u_char *) "dry_run", 7, &dry) == NGX_OK
        && dry.len == 1 && dry.data[0] == '1')
    {
        flag->version = layer->version;

        json = (r->method == NGX_HTTP_DELETE)
               ? json_null()
               : ngx_http_ha_optout_flag_json(flag, &hscf->name,
                                              &hmcf->environment);

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                                             layer->version);
    }

    if (hlcf->replay) {
        if (ctx->claims.jti.len == 0) {
            ngx_http_ha_optout_auth_count("replay");
            return ngx_ha_optout_err(r, NGX_HTTP_UNAUTHORIZED, "InvalidToken",
                                     "bearer token rejected: a write needs "
                                     "a jti claim");
        }
    }

    ctx->flag = flag;
    ctx->before = before;

    return NGX_OK;
}


/* the layer this request writes, in the zone */

static ngx_http_ha_optout_flag_t *
ngx_http_ha_optout_admin_layer(ngx_http_ha_optout_admin_ctx_t *ctx)
{
    return (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET) ? &ctx->hscf->rec->fleet
                                                   : &ctx->hscf->rec->api;
}


/*
 * With the zone's mutex held: If-Match, a PATCH built on a version that is
 * no longer current, and the replay cache (last, so a request refused for
 * any other reason burns no jti).  0 or the status of a refusal.
 */

static ngx_int_t
ngx_http_ha_optout_admin_decide_locked(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, char **ecode, char **text)
{
    ngx_int_t                       rc;
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    *ctx->before = *ngx_http_ha_optout_admin_layer(ctx);

    if (ngx_http_ha_optout_if_match(r, ctx->before->present
                                       ? ctx->before->version : 0)
        != NGX_OK)
    {
        *ecode = "PreconditionFailed";
        *text = "If-Match does not match the current version of the flag";
        return NGX_HTTP_PRECONDITION_FAILED;
    }

    if (r->method == NGX_HTTP_PATCH
        && (!ctx->before->present
            || ctx->before->version != ctx->flag->version))
    {
        *ecode = "Conflict";
        *text = "the flag changed while this PATCH was processed; retry";
        return NGX_HTTP_CONFLICT;
    }

    if (!hlcf->replay) {
        return 0;
    }

    rc = ngx_http_ha_optout_replay_check_locked(&ctx->claims.jti,
                                                ctx->claims.exp, ngx_time());

    if (rc == NGX_DECLINED) {
        *ecode = "InvalidToken";
        *text = "bearer token rejected: replayed jti";
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (rc == NGX_BUSY && r->method != NGX_HTTP_DELETE) {
        /* restoring HA (DELETE) is never refused for want of room */
        u_char                          *p, *last;
        ngx_http_ha_optout_main_conf_t  *hmcf;

        hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

        *ecode = "ZoneFull";
        *text = "the replay cache is full; try again when older tokens "
                "expire";

        p = ngx_pnalloc(r->pool, 512);
        if (p != NULL) {
            last = ngx_http_ha_optout_zone_full_text_locked(p, p + 511,
                                                          hmcf->shm_zone,
                                                          ngx_time(), NULL);
            *last = '\0';
            *text = (char *) p;
        }

        return NGX_HTTP_INSUFFICIENT_STORAGE;
    }

    return 0;
}


static ngx_int_t
ngx_http_ha_optout_admin_refused(ngx_http_request_t *r, ngx_int_t status,
    char *ecode, char *text)
{
    if (status == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_ha_optout_auth_count("replay");
    }

    return ngx_ha_optout_err(r, status, ecode, text);
}


/* DELETE */

static ngx_int_t
ngx_http_ha_optout_admin_restore(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    char                            *s, *ecode, *text;
    uint64_t                         dirty;
    ngx_str_t                        actor, client, reason, *request_id;
    ngx_int_t                        status, locked, saved, audited;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_shctx_t      *sh;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    rec = ctx->hscf->rec;
    sh = ngx_http_ha_optout_sh;

    if (!ctx->applied) {
        request_id = ngx_http_ha_optout_request_id(r);
        if (request_id == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_ha_optout_admin_actor(ctx, &actor);
        client = r->connection->addr_text;
        s = NULL;
        ecode = NULL;
        text = NULL;

        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

        status = ngx_http_ha_optout_admin_decide_locked(r, ctx, &ecode,
                                                        &text);
        if (status) {
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
            return ngx_http_ha_optout_admin_refused(r, status, ecode, text);
        }

        ctx->applied = 1;
        ctx->changed = ctx->before->present;

        if (ctx->changed) {
            /*
             * queued in the order of the changes: in this section, and
             * made first, so that a kill leaves both or neither
             */

            reason.data = ctx->before->reason;
            reason.len = ctx->before->reason_len;

            s = ngx_http_ha_optout_audit_build(hmcf, r->connection->log,
                                               NGX_HA_OPTOUT_ACT_CLEAR,
                                               &ctx->hscf->name, &actor,
                                               &client, &reason, ctx->before,
                                               NULL, request_id);
            if (s) {
                ctx->line = ngx_http_ha_optout_audit_enqueue_locked(s);
            }

            ngx_memzero(ngx_http_ha_optout_admin_layer(ctx),
                        sizeof(ngx_http_ha_optout_flag_t));
            (void) ngx_atomic_fetch_add(
                       &rec->changes[NGX_HA_OPTOUT_ACT_CLEAR], 1);
            ngx_http_ha_optout_bump();
            sh->state_dirty++;
        }

        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        if (ctx->changed) {
            ngx_http_ha_optout_audit_warn_line(r->connection->log,
                                               NGX_HA_OPTOUT_ACT_CLEAR,
                                               &ctx->hscf->name, &actor,
                                               &reason, ctx->before);
            if (s && ctx->line == NULL) {
                ngx_http_ha_optout_audit_lost(r->connection->log, s);
            }
        }

        if (s) {
            free(s);
        }

        if (!ctx->changed) {
            /* nothing to restore, nothing to save */
            return ngx_http_ha_optout_admin_restored(r, ctx, 1);
        }
    }

    locked = (ngx_http_ha_optout_writer_trylock() == NGX_OK);

    if (!locked) {
        if (ngx_current_msec - ctx->wait_start < NGX_HA_OPTOUT_LOCK_WAIT) {
            return ngx_http_ha_optout_admin_wait(r, ctx);
        }

        return ngx_http_ha_optout_admin_restored(r, ctx, 0);
    }

    (void) ngx_http_ha_optout_audit_flush(hmcf, r->connection->log);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    audited = ctx->line == NULL
              ? 0 : !ngx_http_ha_optout_audit_queued_locked(ctx->line);
    dirty = sh->state_dirty;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    saved = (ngx_http_ha_optout_state_save_restore(hmcf, r->connection->log)
             == NGX_OK);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (saved) {
        sh->state_dirty -= ngx_min(dirty, sh->state_dirty);

    } else {
        sh->state_failures++;
    }

    if (!saved || !audited) {
        /* the timer tries again in a second */
        sh->retry_delay = 1;
        sh->retry_at = ngx_time() + 1;
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ngx_http_ha_optout_writer_unlock();

    ctx->audited = audited;

    return ngx_http_ha_optout_admin_restored(r, ctx, saved && audited);
}


/*
 * HA is restored in the zone: the answer is the flag that acts now (null,
 * or the window or config flag the API flag hid); when the restore is not
 * on disk yet, {"acting": ..., "persisted": false}.
 */

static ngx_int_t
ngx_http_ha_optout_admin_restored(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_uint_t persisted)
{
    json_t                          *json;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    json = ngx_http_ha_optout_flag_json(
               ngx_http_ha_optout_acting(ctx->hscf, ngx_time()),
               &ctx->hscf->name, &hmcf->environment);

    if (persisted) {
        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json, 0);
    }

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "ha_optout: HA on \"%V\" is restored in memory, but %s; "
                  "worker 0 retries until it is written",
                  &ctx->hscf->name,
                  ctx->waiting && !ctx->audited && ngx_current_msec
                      - ctx->wait_start >= NGX_HA_OPTOUT_LOCK_WAIT
                  ? "another write holds the writer lock, so the state file "
                    "and the audit line are not written yet"
                  : "its state file or audit line could not be written");

    json = json_pack("{s:o,s:b}", "acting", json ? json : json_null(),
                     "persisted", 0);

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json, 0);
}


/* a suspension that failed to persist is undone, unless replaced since */

static void
ngx_http_ha_optout_admin_undo(ngx_http_ha_optout_admin_ctx_t *ctx)
{
    ngx_http_ha_optout_rec_t   *rec;
    ngx_http_ha_optout_flag_t  *layer;

    rec = ctx->hscf->rec;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    layer = ngx_http_ha_optout_admin_layer(ctx);

    if (layer->present && layer->version == ctx->flag->version) {
        *layer = *ctx->before;
        (void) ngx_atomic_fetch_add(&rec->changes[ctx->action], -1);
    }

    ngx_http_ha_optout_audit_unqueue_locked(ctx->line);
    ctx->line = NULL;

    ngx_http_ha_optout_sh->pending.pid = 0;

    /* in case another change published it meanwhile */
    ngx_http_ha_optout_bump();

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
}


/* PUT and PATCH, with the writer lock held */

static ngx_int_t
ngx_http_ha_optout_admin_suspend(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    char                            *s, *ecode, *text;
    u_char                          *p;
    ngx_str_t                        actor, client, reason, *request_id;
    ngx_int_t                        status;
    ngx_uint_t                       queued;
    json_t                          *json;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t       *flag, *before;
    ngx_http_ha_optout_shctx_t      *sh;
    ngx_http_ha_optout_pending_t    *pending;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    hscf = ctx->hscf;
    rec = hscf->rec;
    sh = ngx_http_ha_optout_sh;
    flag = ctx->flag;
    before = ctx->before;

    /*
     * what waits for the audit log goes first; if it cannot be written,
     * neither could this change's line: refused before anything acts
     */
    if (ngx_http_ha_optout_audit_flush(hmcf, r->connection->log) != NGX_OK) {
        return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "AuditNotWritten",
                                 "the audit log cannot be written (see "
                                 "error_log); a change that suspends HA is "
                                 "refused until it can, nothing was "
                                 "changed");
    }

    request_id = ngx_http_ha_optout_request_id(r);
    if (request_id == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actor.data = flag->actor;
    actor.len = flag->actor_len;
    client = r->connection->addr_text;
    reason.data = flag->reason;
    reason.len = flag->reason_len;
    ecode = NULL;
    text = NULL;
    s = NULL;

    ctx->action = (r->method == NGX_HTTP_PATCH) ? NGX_HA_OPTOUT_ACT_UPDATE
                                                : NGX_HA_OPTOUT_ACT_SET;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    /*
     * the agent applies each revision once; one it sends again (after a
     * restart, a reconnect) changes nothing and writes no audit line
     */
    if (ctx->layer == NGX_HA_OPTOUT_SRC_FLEET && r->method == NGX_HTTP_PUT
        && ngx_http_ha_optout_flag_live(&rec->fleet, ngx_time())
        && rec->fleet.revision == flag->revision)
    {
        *before = rec->fleet;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        json = ngx_http_ha_optout_flag_json(before, &hscf->name,
                                            &hmcf->environment);

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                                             before->version);
    }

    status = ngx_http_ha_optout_admin_decide_locked(r, ctx, &ecode, &text);

    if (status == 0) {
        /*
         * the line is made first: what follows takes no time, so a writer
         * killed in this section leaves the change with its line, or
         * neither
         */
        flag->version = ++sh->version_seq;

        s = ngx_http_ha_optout_audit_build(hmcf, r->connection->log,
                                           ctx->action, &hscf->name, &actor,
                                           &client, &reason,
                                           before->present ? before : NULL,
                                           flag, request_id);

        ctx->line = s ? ngx_http_ha_optout_audit_enqueue_locked(s) : NULL;

        if (ctx->line == NULL) {
            status = NGX_HTTP_INSUFFICIENT_STORAGE;
            ecode = "ZoneFull";
            text = "no room in the zone for the audit line of this change; "
                   "nothing was changed";

            p = (s != NULL) ? ngx_pnalloc(r->pool, 512) : NULL;

            if (p != NULL
                && sh->audit_npending >= NGX_HA_OPTOUT_AUDIT_PENDING)
            {
                /* the log is stuck: a larger zone would not help */
                *ngx_slprintf(p, p + 511, "%s: %ui audit lines wait for "
                              "the audit log already, the most the zone "
                              "keeps; error_log says why they cannot be "
                              "written (a full disk, a FIFO nobody reads)",
                              text, sh->audit_npending) = '\0';
                text = (char *) p;

            } else if (p != NULL) {
                *ngx_http_ha_optout_zone_full_text_locked(
                    ngx_slprintf(p, p + 511, "nothing was changed: "),
                    p + 511, hmcf->shm_zone, ngx_time(),
                    "the audit line of this change") = '\0';
                text = (char *) p;
            }

        } else {
            /*
             * staged: in the zone for the state file, not yet published to
             * the workers (no generation bump) until it is saved and
             * audited; a killed writer's change is finished by the next one
             */
            *ngx_http_ha_optout_admin_layer(ctx) = *flag;
            (void) ngx_atomic_fetch_add(&rec->changes[ctx->action], 1);

            pending = &sh->pending;
            pending->action = ctx->action;
            pending->upstream_len = hscf->name.len;
            ngx_memcpy(pending->upstream, hscf->name.data, hscf->name.len);
            pending->before = *before;
            pending->after = *flag;
            pending->pid = ngx_pid;
        }
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (s) {
        free(s);
    }

    if (status) {
        return ngx_http_ha_optout_admin_refused(r, status, ecode, text);
    }

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        ngx_http_ha_optout_admin_undo(ctx);

        return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "StateNotPersisted",
                                 "the state file could not be written; "
                                 "nothing was changed; see error_log: "
                                 "its directory must be writable by the "
                                 "worker user");
    }

    (void) ngx_http_ha_optout_audit_flush(hmcf, r->connection->log);

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    queued = ngx_http_ha_optout_audit_queued_locked(ctx->line);
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (queued) {
        ngx_http_ha_optout_admin_undo(ctx);

        /* the state file holds the change: it must not come back */
        if (ngx_http_ha_optout_state_save_restore(hmcf, r->connection->log)
            != NGX_OK)
        {
            ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
            sh->state_dirty++;
            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        }

        return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "AuditNotWritten",
                                 "the audit line of this change could not "
                                 "be written (see error_log); nothing was "
                                 "changed");
    }

    /* saved and audited: it acts now */

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
    ngx_http_ha_optout_bump();
    sh->pending.pid = 0;
    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ctx->line = NULL;

    ngx_http_ha_optout_audit_warn_line(r->connection->log, ctx->action,
                                       &hscf->name, &actor, &reason, flag);

    json = ngx_http_ha_optout_flag_json(flag, &hscf->name,
                                        &hmcf->environment);

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                                         flag->version);
}


/*
 * POST v1/windows/{upstream}/end or .../skip, body {"reason": "...",
 * "window": NAME}: the open occurrence of a policy window ends now, or the
 * next one does not open.  Audited as window_end / window_skip with the
 * token's actor and the reason given; kept in the state file.
 */

static ngx_int_t
ngx_http_ha_optout_admin_window(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, u_char *body, size_t len)
{
    u_char                           s[sizeof("2026-11-27T10:00:00Z")];
    u_char                           e[sizeof("2026-11-27T10:00:00Z")];
    char                            *code;
    size_t                           i;
    time_t                           now;
    json_t                          *root, *v, *out;
    ngx_int_t                        rc;
    ngx_str_t                        window, name, message, reason, actor;
    ngx_str_t                        client, *request_id;
    ngx_uint_t                       status, action, ended;
    json_error_t                     jerr;
    const char                      *key;
    ngx_http_ha_optout_rec_t        *rec;
    ngx_http_ha_optout_flag_t        occ;
    ngx_http_ha_optout_loc_conf_t   *hlcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    rec = ctx->hscf->rec;
    now = ngx_time();

    if (body == NULL || len == 0) {
        return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidJSON",
                                 "a JSON body is required: "
                                 "{\"reason\": \"...\"}, and \"window\" "
                                 "to name one");
    }

    root = json_loadb((char *) body, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidJSON",
                                 "body must be a JSON object");
    }

    ngx_str_null(&window);
    ngx_str_null(&reason);

    json_object_foreach(root, key, v) {
        if (ngx_strcmp(key, "reason") == 0 && json_is_string(v)) {
            reason.data = (u_char *) json_string_value(v);
            reason.len = json_string_length(v);

        } else if (ngx_strcmp(key, "window") == 0 && json_is_string(v)) {
            window.data = (u_char *) json_string_value(v);
            window.len = json_string_length(v);

        } else if (ngx_strcmp(key, "reason") == 0
                   || ngx_strcmp(key, "window") == 0)
        {
            json_decref(root);
            return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidField",
                                     "reason and window must be strings");

        } else {
            json_decref(root);
            return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "UnknownField",
                                     "unknown field; a window takes "
                                     "\"reason\" and \"window\"");
        }
    }

    for (i = 0; i < reason.len; i++) {
        if (reason.data[i] < 0x20 || reason.data[i] == 0x7f) {
            break;
        }
    }

    if (reason.len == 0 || reason.len > NGX_HA_OPTOUT_REASON_LEN
        || i < reason.len)
    {
        json_decref(root);
        return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidReason",
                                 "reason is required (1..256 bytes, no "
                                 "control bytes)");
    }

    /* the strings live in root, which lives until the answer is made */

    if (hlcf->replay) {
        if (ctx->claims.jti.len == 0) {
            json_decref(root);
            ngx_http_ha_optout_auth_count("replay");
            return ngx_ha_optout_err(r, NGX_HTTP_UNAUTHORIZED, "InvalidToken",
                                     "bearer token rejected: a write needs "
                                     "a jti claim");
        }

        if (!ngx_http_ha_optout_sh->restored) {
            ngx_http_ha_optout_state_restore(hmcf, r->connection->log);
        }

        ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);
        rc = ngx_http_ha_optout_replay_check_locked(&ctx->claims.jti,
                                                    ctx->claims.exp, now);
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

        if (rc == NGX_DECLINED) {
            json_decref(root);
            ngx_http_ha_optout_auth_count("replay");
            return ngx_ha_optout_err(r, NGX_HTTP_UNAUTHORIZED, "InvalidToken",
                                     "bearer token rejected: replayed jti");
        }
    }

    rc = ngx_http_ha_optout_window_act(hmcf, ctx->hscf, &window, ctx->skip,
                                       &occ, &name, &status, &code, &message,
                                       r->pool);
    if (rc == NGX_ERROR) {
        json_decref(root);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        json_decref(root);

        /* a 403 is audited as "denied" by admin_error() */
        return ngx_http_ha_optout_admin_error(r, status, code, &message);
    }

    if (ngx_http_ha_optout_state_save(hmcf, r->connection->log) != NGX_OK) {
        ngx_http_ha_optout_window_unact(&occ);
        json_decref(root);
        return ngx_ha_optout_err(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "StateNotPersisted",
                                 "the state file could not be written; "
                                 "nothing was changed");
    }

    action = ctx->skip ? NGX_HA_OPTOUT_ACT_WINDOW_SKIP
                       : NGX_HA_OPTOUT_ACT_WINDOW_END;

    /* the window layer closes now, not at the timer's next tick */

    ended = 0;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    if (!ctx->skip && rec->window.present
        && rec->window.set_at == occ.set_at
        && rec->window.expires_at == occ.expires_at)
    {
        occ = rec->window;
        ngx_memzero(&rec->window, sizeof(ngx_http_ha_optout_flag_t));
        ngx_http_ha_optout_bump();
        ended = 1;
    }

    (void) ngx_atomic_fetch_add(&rec->changes[action], 1);

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    actor = ctx->claims.sub;
    client = r->connection->addr_text;
    request_id = ngx_http_ha_optout_request_id(r);

    ngx_http_ha_optout_audit(hmcf, r->connection->log, action,
                             &ctx->hscf->name, &actor, &client, &reason,
                             &occ, NULL, request_id);

    /* another window that is open now takes over (audited by policy) */
    ngx_http_ha_optout_windows_tick(hmcf, r->connection->log);

    out = json_pack("{s:s%,s:s,s:s%,s:s%,s:s%,s:b,s:s%,s:s%,s:o}",
                    "upstream", ctx->hscf->name.data, ctx->hscf->name.len,
                    "action", ctx->skip ? "skip" : "end",
                    "window", name.data, name.len,
                    "start", s, ngx_http_ha_optout_time_iso(s, occ.set_at) - s,
                    "end", e,
                    ngx_http_ha_optout_time_iso(e, occ.expires_at) - e,
                    "was_acting", (int) ended,
                    "actor", ctx->claims.sub.data, ctx->claims.sub.len,
                    "reason", reason.data, reason.len,
                    "flag", ngx_http_ha_optout_flag_json(
                                ngx_http_ha_optout_acting(ctx->hscf, now),
                                &ctx->hscf->name, &hmcf->environment));

    json_decref(root);

    return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, out,
                                         NGX_HA_OPTOUT_NO_ETAG);
}


static json_t *
ngx_http_ha_optout_audit_json(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    u_char      *line, **lines;
    size_t       len;
    ngx_str_t    value, *u;
    ngx_int_t    limit;
    ngx_uint_t   i, k, n, pos;
    json_t      *arr, *entry, *up;

    limit = 50;

    if (r->args.len
        && ngx_http_arg(r, (u_char *) "limit", 5, &value) == NGX_OK)
    {
        limit = ngx_atoi(value.data, value.len);
        if (limit <= 0) {
            return NULL;
        }
    }

    lines = ngx_pcalloc(r->pool, NGX_HA_OPTOUT_AUDIT_RING * sizeof(u_char *));
    arr = json_array();
    if (lines == NULL || arr == NULL) {
        return NULL;
    }

    /* copied under the lock, parsed outside it */

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    n = ngx_min(ngx_http_ha_optout_sh->audit_count, NGX_HA_OPTOUT_AUDIT_RING);

    for (i = 0; i < n; i++) {
        pos = (ngx_http_ha_optout_sh->audit_next + NGX_HA_OPTOUT_AUDIT_RING
               - 1 - i) % NGX_HA_OPTOUT_AUDIT_RING;
        line = ngx_http_ha_optout_sh->audit_ring[pos];

        if (line == NULL) {
            break;
        }

        len = ngx_strlen(line) + 1;
        lines[i] = ngx_pnalloc(r->pool, len);
        if (lines[i] == NULL) {
            break;
        }

        ngx_memcpy(lines[i], line, len);
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    for (i = 0, k = 0; i < n && lines[i] && k < (ngx_uint_t) limit; i++) {

        entry = json_loads((char *) lines[i], 0, NULL);
        if (entry == NULL) {
            continue;
        }

        if (ctx->claims.upstreams) {
            /* a token limited to some upstreams sees only their entries */
            up = json_object_get(entry, "upstream");
            u = ctx->claims.upstreams->elts;

            for (pos = 0; pos < ctx->claims.upstreams->nelts; pos++) {
                if (json_is_string(up)
                    && json_string_length(up) == u[pos].len
                    && ngx_strncmp(json_string_value(up), u[pos].data,
                                   u[pos].len) == 0)
                {
                    break;
                }
            }

            if (pos == ctx->claims.upstreams->nelts) {
                json_decref(entry);
                continue;
            }
        }

        json_array_append_new(arr, entry);
        k++;
    }

    return arr;
}


static ngx_int_t
ngx_http_ha_optout_admin_get(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx)
{
    time_t                           now;
    json_t                          *json, *scopes, *ups;
    ngx_str_t                       *s;
    ngx_uint_t                       i;
    ngx_http_ha_optout_srv_conf_t  **hscfp;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);
    now = ngx_time();

    switch (ctx->route) {

    case NGX_HA_OPTOUT_R_FLEET:
        json = ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_layer(ctx->hscf,
                                            NGX_HA_OPTOUT_SRC_FLEET, now),
                   &ctx->hscf->name, &hmcf->environment);

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                   ngx_http_ha_optout_flag_live(&ctx->hscf->fleet, now)
                   ? ctx->hscf->fleet.version : 0);

    case NGX_HA_OPTOUT_R_FLAG:
        ngx_http_ha_optout_refresh(ctx->hscf);
        json = ngx_http_ha_optout_flag_json(
                   ngx_http_ha_optout_acting(ctx->hscf, now),
                   &ctx->hscf->name, &hmcf->environment);

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json,
                   ngx_http_ha_optout_flag_live(&ctx->hscf->api, now)
                   ? ctx->hscf->api.version : 0);

    case NGX_HA_OPTOUT_R_FLEETS:
    case NGX_HA_OPTOUT_R_FLAGS:
        json = json_object();
        hscfp = hmcf->upstreams.elts;

        for (i = 0; json && i < hmcf->upstreams.nelts; i++) {
            if (ctx->claims.upstreams) {
                /* a token limited to some upstreams sees only those */
                ngx_uint_t  k;

                s = ctx->claims.upstreams->elts;

                for (k = 0; k < ctx->claims.upstreams->nelts; k++) {
                    if (s[k].len == hscfp[i]->name.len
                        && ngx_strncmp(s[k].data, hscfp[i]->name.data,
                                       s[k].len) == 0)
                    {
                        break;
                    }
                }

                if (k == ctx->claims.upstreams->nelts) {
                    continue;
                }
            }

            json_object_setn_new(json, (char *) hscfp[i]->name.data,
                                 hscfp[i]->name.len,
                                 ngx_http_ha_optout_flag_json(
                                     ctx->route == NGX_HA_OPTOUT_R_FLEETS
                                     ? ngx_http_ha_optout_layer(hscfp[i],
                                           NGX_HA_OPTOUT_SRC_FLEET, now)
                                     : ngx_http_ha_optout_acting(hscfp[i],
                                                                 now),
                                     &hscfp[i]->name, &hmcf->environment));
        }

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json, 0);

    case NGX_HA_OPTOUT_R_AUDIT:
        json = ngx_http_ha_optout_audit_json(r, ctx);
        if (json == NULL) {
            return ngx_ha_optout_err(r, NGX_HTTP_BAD_REQUEST, "InvalidField",
                                     "limit must be a positive integer");
        }

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK,
                                             json_pack("{s:o}", "entries",
                                                       json), 0);

    default: /* NGX_HA_OPTOUT_R_WHOAMI */
        scopes = json_array();

        if (scopes && (ctx->claims.scopes & NGX_HA_OPTOUT_SCOPE_READ)) {
            json_array_append_new(scopes, json_string("ha:read"));
        }

        if (scopes && (ctx->claims.scopes & NGX_HA_OPTOUT_SCOPE_WRITE)) {
            json_array_append_new(scopes, json_string("ha:write"));
        }

        if (scopes && (ctx->claims.scopes & NGX_HA_OPTOUT_SCOPE_APPROVE)) {
            json_array_append_new(scopes, json_string("ha:approve"));
        }

        if (ctx->claims.upstreams) {
            ups = json_array();
            s = ctx->claims.upstreams->elts;

            for (i = 0; ups && i < ctx->claims.upstreams->nelts; i++) {
                json_array_append_new(ups, json_stringn((char *) s[i].data,
                                                        s[i].len));
            }

        } else {
            ups = json_null();
        }

        {
            u_char  exp[sizeof("2026-11-27T10:00:00Z")];

            json = json_pack("{s:s%,s:o,s:o,s:I,s:s%,s:o}",
                             "sub", ctx->claims.sub.data, ctx->claims.sub.len,
                             "scopes", scopes,
                             "kid", ctx->claims.kid.len
                                    ? json_stringn(
                                          (char *) ctx->claims.kid.data,
                                          ctx->claims.kid.len)
                                    : json_null(),
                             "exp", (json_int_t) ctx->claims.exp,
                             "expires_at", exp,
                             ngx_http_ha_optout_time_iso(exp,
                                                         ctx->claims.exp)
                             - exp,
                             "ha_upstreams", ups);
        }

        return ngx_http_ha_optout_admin_send(r, NGX_HTTP_OK, json, 0);
    }
}


/* a refused write (401, 403) is audited as "denied" */

static void
ngx_http_ha_optout_admin_denied(ngx_http_request_t *r, ngx_str_t *message,
    ngx_str_t *request_id)
{
    u_char                          *p, *last;
    time_t                           now, since;
    uint32_t                         key;
    ngx_str_t                        upstream, actor, reason;
    ngx_uint_t                       i, suppressed;
    ngx_http_ha_optout_denied_t     *d, *slot;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_admin_ctx_t  *ctx;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    upstream = ctx ? ctx->upstream : r->uri;

    if (upstream.len == 0) {
        /* refused before routing: the name is what follows v1/flags/ */
        last = r->uri.data + r->uri.len;
        p = ngx_strlcasestrn(r->uri.data, last, (u_char *) "v1/flags/",
                             sizeof("v1/flags/") - 2);
        upstream.data = p ? p + sizeof("v1/flags/") - 1 : last;
        upstream.len = last - upstream.data;
    }

    if (upstream.len > NGX_HA_OPTOUT_NAME_LEN) {
        upstream.len = NGX_HA_OPTOUT_NAME_LEN;
    }

    /* a name from the URI may be anything: keep it printable ASCII */

    p = ngx_pnalloc(r->pool, upstream.len);
    if (p == NULL) {
        return;
    }

    for (i = 0; i < upstream.len; i++) {
        p[i] = (upstream.data[i] > 0x20 && upstream.data[i] < 0x7f)
               ? upstream.data[i] : '?';
    }

    upstream.data = p;

    hscf = ngx_http_ha_optout_find_upstream(hmcf, &upstream);
    if (hscf && hscf->rec) {
        (void) ngx_atomic_fetch_add(
                   &hscf->rec->changes[NGX_HA_OPTOUT_ACT_DENIED], 1);
    }

    actor.len = 0;
    actor.data = NULL;

    if (ctx) {
        ngx_http_ha_optout_admin_actor(ctx, &actor);
    }

    /*
     * any token may be refused as often as its holder likes: one line per
     * actor and upstream (all unknown upstreams count as one) per
     * NGX_HA_OPTOUT_DENIED_PERIOD, which tells how many were left out
     */

    key = ngx_crc32_short(actor.data ? actor.data : (u_char *) "", actor.len);
    key ^= hscf ? ngx_crc32_short(hscf->name.data, hscf->name.len) * 31 : 7;
    now = ngx_time();
    suppressed = 0;
    since = 0;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    d = ngx_http_ha_optout_sh->denied;
    slot = &d[0];

    for (i = 0; i < NGX_HA_OPTOUT_DENIED_SLOTS; i++) {
        if (d[i].since && d[i].key == key) {
            slot = &d[i];
            break;
        }

        if (d[i].since < slot->since) {
            slot = &d[i];               /* empty, or the oldest */
        }
    }

    if (i < NGX_HA_OPTOUT_DENIED_SLOTS
        && now - slot->since < NGX_HA_OPTOUT_DENIED_PERIOD)
    {
        slot->suppressed++;
        ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
        return;
    }

    if (i < NGX_HA_OPTOUT_DENIED_SLOTS) {
        suppressed = slot->suppressed;
        since = slot->since;
    }

    slot->key = key;
    slot->since = now;
    slot->suppressed = 0;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    if (suppressed) {
        u_char  *text, iso[sizeof("2026-11-27T10:00:00Z")];

        text = ngx_pnalloc(r->pool, message->len + 128);
        if (text == NULL) {
            return;
        }

        reason.data = text;
        reason.len = ngx_sprintf(text, "%V (and %ui more denials of this "
                                 "actor on this upstream since %*s, not "
                                 "audited one by one)", message, suppressed,
                                 (size_t) (ngx_http_ha_optout_time_iso(iso,
                                                                    since)
                                           - iso), iso)
                     - text;
        message = &reason;
    }

    (void) ngx_http_ha_optout_audit(hmcf, r->connection->log,
                                    NGX_HA_OPTOUT_ACT_DENIED, &upstream,
                                    actor.len ? &actor : NULL,
                                    &r->connection->addr_text, message,
                                    NULL, NULL, request_id);
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


ngx_int_t
ngx_http_ha_optout_admin_send(ngx_http_request_t *r, ngx_uint_t status,
    void *json, uint64_t etag)
{
    u_char           *p;
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_str_t         out;
    ngx_chain_t       cl;
    ngx_table_elt_t  *h;

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
        h = ngx_list_push(&r->headers_out.headers);
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 2);
        if (h == NULL || p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "ETag");
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "\"%uL\"", etag) - p;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-store");

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
