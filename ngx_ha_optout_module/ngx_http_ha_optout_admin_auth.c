
/*
 * ngx_ha_optout_module: who asks the admin API, and for what.  The scope
 * a request needs, the bearer token checked against it (the refusal tells
 * why, and how to mend it), the actor of the audit trail, and the audit of
 * a refused write ("denied", rate-limited per actor and upstream).
 */


#include "ngx_http_ha_optout_admin.h"


static ngx_int_t ngx_http_ha_optout_denied_upstream(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_str_t *upstream);
static ngx_int_t ngx_http_ha_optout_denied_slot(uint32_t key, time_t now,
    ngx_uint_t *suppressed, time_t *since);
static ngx_int_t ngx_http_ha_optout_denied_reason(ngx_http_request_t *r,
    ngx_str_t *message, ngx_uint_t suppressed, time_t since,
    ngx_str_t *reason);


/*
 * GET v1/whoami, which any valid token may ask: the path the router reads,
 * not "v1/whoami" at the end of any URI (a write to an upstream named
 * "edge/v1/whoami" needs ha:write like any other)
 */

ngx_int_t
ngx_http_ha_optout_admin_whoami(ngx_http_request_t *r)
{
    u_char  *p, *last;

    p = ngx_http_ha_optout_admin_path(r, &last);

    return (size_t) (last - p) == sizeof("v1/whoami") - 1
           && ngx_strncmp(p, "v1/whoami", sizeof("v1/whoami") - 1) == 0;
}


/* v1/fleet... is written by the fleet agent only (scope ha:fleet) */

ngx_int_t
ngx_http_ha_optout_admin_is_fleet(ngx_http_request_t *r)
{
    u_char  *p, *last;

    p = ngx_http_ha_optout_admin_path(r, &last);

    return (size_t) (last - p) >= sizeof("v1/fleet") - 1
           && ngx_strncmp(p, "v1/fleet", sizeof("v1/fleet") - 1) == 0
           && ((size_t) (last - p) == sizeof("v1/fleet") - 1
               || p[sizeof("v1/fleet") - 1] == '/');
}


/*
 * v1/approvals: POST approves (ha:approve); DELETE withdraws (the
 * requester, ha:write) or rejects (ha:approve).  Only the path the router
 * reads as v1/approvals[/{id}] counts: "v1/approvals" inside another path
 * (an upstream or window named so) needs that path's scope, not ha:approve.
 */

ngx_uint_t
ngx_http_ha_optout_admin_scope(ngx_http_request_t *r, ngx_uint_t write)
{
    u_char  *p, *last;
    size_t   len;

    p = ngx_http_ha_optout_admin_path(r, &last);
    len = last - p;

    if (len >= sizeof("v1/approvals") - 1
        && ngx_strncmp(p, "v1/approvals", sizeof("v1/approvals") - 1) == 0
        && (len == sizeof("v1/approvals") - 1
            || p[sizeof("v1/approvals") - 1] == '/'))
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
 * What a token that verified but was refused says about its iss or aud,
 * next to what this location wants: "the token's iss is "X"; this location
 * accepts only "Y" (ha_optout_admin_issuer)".  The token's text is escaped
 * (it reaches error_log too), and cut to 128 bytes.
 */

static u_char *
ngx_http_ha_optout_auth_claim_hint(ngx_http_request_t *r, ngx_str_t *token,
    const char *name, ngx_str_t *want, const char *directive, u_char *p,
    u_char *last)
{
    u_char   buf[128 * 4];
    size_t   len;
    json_t  *j, *v;
    char    *text;

    j = ngx_http_ha_optout_jwt_part(r, token, 1);
    v = json_object_get(j, name);

    p = ngx_slprintf(p, last, "bearer token rejected: %s: ", name[0] == 'i'
                     ? "issuer" : "audience");

    if (v == NULL || (json_is_string(v) && json_string_length(v) == 0)) {
        p = ngx_slprintf(p, last, "the token has no \"%s\" claim", name);

    } else {
        text = json_is_string(v)
               ? NULL : json_dumps(v, JSON_COMPACT|JSON_ENCODE_ANY);

        len = text ? ngx_strlen(text) : json_string_length(v);

        p = ngx_slprintf(p, last, "the token's \"%s\" is %s%*s%s", name,
                         text ? "" : "\"",
                         ngx_http_ha_optout_escape(buf, sizeof(buf),
                             text ? (u_char *) text
                                  : (u_char *) json_string_value(v),
                             ngx_min(len, 128)) - buf, buf,
                         text ? "" : "\"");
        free(text);
    }

    json_decref(j);

    return ngx_slprintf(p, last, "; this location accepts only \"%V\" (%s)",
                        want, directive);
}


/* an expired token: its exp and this server's clock, or that it has none */

static u_char *
ngx_http_ha_optout_auth_expired_hint(ngx_http_request_t *r, ngx_str_t *token,
    u_char *p, u_char *last)
{
    u_char   now[sizeof("2026-11-27T10:00:00Z")];
    u_char   exp[sizeof("2026-11-27T10:00:00Z")];
    json_t  *j, *v;

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

    return p;
}


/*
 * "bearer token rejected: REASON", and for some reasons what to do: an
 * expired token says its exp and the server's clock (a skewed clock is the
 * usual cause), a token without kid where several keys could verify it
 * says so instead of "unknown_kid", a malformed one what is wrong with it,
 * a wrong issuer or audience what the token says and what is wanted
 */

static u_char *
ngx_http_ha_optout_auth_hint(ngx_http_request_t *r,
    ngx_http_ha_optout_loc_conf_t *hlcf, ngx_str_t *token,
    ngx_http_ha_optout_claims_t *claims, const char *reason, u_char *p,
    u_char *last)
{
    u_char                    *q;
    json_t                    *j, *v;
    ngx_http_ha_optout_key_t  *key;

    if (ngx_strcmp(reason, "malformed") == 0 && claims->malformed) {
        return ngx_slprintf(p, last, "bearer token rejected: malformed: %s",
                            claims->malformed);
    }

    if (ngx_strcmp(reason, "issuer") == 0 && token->len) {
        return ngx_http_ha_optout_auth_claim_hint(r, token, "iss",
                                                  &hlcf->issuer,
                                                  "ha_optout_admin_issuer",
                                                  p, last);
    }

    if (ngx_strcmp(reason, "audience") == 0 && token->len) {
        return ngx_http_ha_optout_auth_claim_hint(r, token, "aud",
                                                  &hlcf->audience,
                                                  "ha_optout_admin_audience",
                                                  p, last);
    }

    if (ngx_strcmp(reason, "expired") == 0 && token->len) {
        q = ngx_http_ha_optout_auth_expired_hint(r, token, p, last);
        if (q != p) {
            return q;
        }
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


/*
 * Longer than a screen and a half: its two refusals (401, 403) and their
 * messages read together.
 */

ngx_int_t
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

    msg = ngx_pnalloc(r->pool, 1024);
    if (msg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    message.data = msg;
    message.len = ngx_http_ha_optout_auth_hint(r, hlcf, &token, &ctx->claims,
                                               reason, msg, msg + 1024)
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


/* the token's ha_upstreams claim allows this upstream (no claim: all) */

ngx_uint_t
ngx_http_ha_optout_admin_may(ngx_http_ha_optout_admin_ctx_t *ctx,
    u_char *name, size_t len)
{
    ngx_str_t   *u;
    ngx_uint_t   i;

    if (ctx->claims.upstreams == NULL) {
        return 1;
    }

    u = ctx->claims.upstreams->elts;

    for (i = 0; i < ctx->claims.upstreams->nelts; i++) {
        if (u[i].len == len && ngx_strncmp(u[i].data, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/* the token's sub, cut to NGX_HA_OPTOUT_ACTOR_LEN on a UTF-8 boundary */

void
ngx_http_ha_optout_admin_actor(ngx_http_ha_optout_admin_ctx_t *ctx,
    ngx_str_t *actor)
{
    actor->data = ctx->claims.sub.data;
    actor->len = ngx_http_ha_optout_admin_cut(ctx->claims.sub.data,
                                              ctx->claims.sub.len,
                                              NGX_HA_OPTOUT_ACTOR_LEN);
}


/* a refused write (401, 403) is audited as "denied" */

void
ngx_http_ha_optout_admin_denied(ngx_http_request_t *r, ngx_str_t *message,
    ngx_str_t *request_id)
{
    time_t                           since;
    uint32_t                         key;
    ngx_str_t                        upstream, actor, reason;
    ngx_uint_t                       suppressed;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_admin_ctx_t  *ctx;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);
    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (ngx_http_ha_optout_denied_upstream(r, ctx, &upstream) != NGX_OK) {
        return;
    }

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

    if (ngx_http_ha_optout_denied_slot(key, ngx_time(), &suppressed, &since)
        != NGX_OK)
    {
        return;
    }

    if (suppressed) {
        if (ngx_http_ha_optout_denied_reason(r, message, suppressed, since,
                                             &reason)
            != NGX_OK)
        {
            return;
        }

        message = &reason;
    }

    (void) ngx_http_ha_optout_audit(hmcf, r->connection->log,
                                    NGX_HA_OPTOUT_ACT_DENIED, &upstream,
                                    actor.len ? &actor : NULL,
                                    &r->connection->addr_text, message,
                                    NULL, NULL, request_id);
}


/* the upstream of a refused write, from the route or the URI: printable */

static ngx_int_t
ngx_http_ha_optout_denied_upstream(ngx_http_request_t *r,
    ngx_http_ha_optout_admin_ctx_t *ctx, ngx_str_t *upstream)
{
    u_char      *p, *last;
    ngx_uint_t   i;

    *upstream = ctx ? ctx->upstream : r->uri;

    if (ngx_http_ha_optout_approval_denied_upstream(r, upstream) == NGX_OK) {
        /* v1/approvals/{id}: the approval's upstream, not its id */

    } else if (upstream->len == 0) {
        /* refused before routing: the name is what follows v1/flags/ */
        last = r->uri.data + r->uri.len;
        p = ngx_strlcasestrn(r->uri.data, last, (u_char *) "v1/flags/",
                             sizeof("v1/flags/") - 2);
        upstream->data = p ? p + sizeof("v1/flags/") - 1 : last;
        upstream->len = last - upstream->data;
    }

    if (upstream->len > NGX_HA_OPTOUT_NAME_LEN) {
        upstream->len = NGX_HA_OPTOUT_NAME_LEN;
    }

    /* a name from the URI may be anything: keep it printable ASCII */

    p = ngx_pnalloc(r->pool, upstream->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < upstream->len; i++) {
        p[i] = (upstream->data[i] > 0x20 && upstream->data[i] < 0x7f)
               ? upstream->data[i] : '?';
    }

    upstream->data = p;

    return NGX_OK;
}


/*
 * The zone's slot of this actor and upstream: NGX_DECLINED when a line
 * was written for them less than NGX_HA_OPTOUT_DENIED_PERIOD ago (this
 * one is counted, not written), else how many were left out since when
 */

static ngx_int_t
ngx_http_ha_optout_denied_slot(uint32_t key, time_t now,
    ngx_uint_t *suppressed, time_t *since)
{
    ngx_uint_t                    i;
    ngx_http_ha_optout_denied_t  *d, *slot;

    *suppressed = 0;
    *since = 0;

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
        return NGX_DECLINED;
    }

    if (i < NGX_HA_OPTOUT_DENIED_SLOTS) {
        *suppressed = slot->suppressed;
        *since = slot->since;
    }

    slot->key = key;
    slot->since = now;
    slot->suppressed = 0;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return NGX_OK;
}


/* the message, and how many denials were not audited one by one */

static ngx_int_t
ngx_http_ha_optout_denied_reason(ngx_http_request_t *r, ngx_str_t *message,
    ngx_uint_t suppressed, time_t since, ngx_str_t *reason)
{
    u_char  *text, iso[sizeof("2026-11-27T10:00:00Z")];

    text = ngx_pnalloc(r->pool, message->len + 128);
    if (text == NULL) {
        return NGX_ERROR;
    }

    reason->data = text;
    reason->len = ngx_sprintf(text, "%V (and %ui more denials of this "
                              "actor on this upstream since %*s, not "
                              "audited one by one)", message, suppressed,
                              (size_t) (ngx_http_ha_optout_time_iso(iso,
                                                                 since)
                                        - iso), iso)
                  - text;

    return NGX_OK;
}
