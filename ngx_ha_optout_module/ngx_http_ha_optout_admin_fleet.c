
/*
 * ngx_ha_optout_module: the fleet agent's side of the admin API
 * (v1/fleet, scope ha:fleet): the fields a fleet write carries beside the
 * flag (the etcd revision, the signed actor, the agent's host), and the
 * audit of a record the agent refused (v1/fleet/{upstream}/denied).
 */


#include "ngx_http_ha_optout_admin.h"


/*
 * A fleet write (the agent's PUT or PATCH) carries the record's etcd
 * "revision", its signed "actor" and the agent's host ("via") beside the
 * flag fields: they are taken out here, and the rest is parsed as any
 * flag.  The token's subject is the "via" that is stored: it is the one
 * that is authenticated.
 *
 * Longer than a screen and a half: one block per fleet field (revision,
 * actor, via).
 */

ngx_int_t
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


void
ngx_http_ha_optout_admin_via(ngx_http_ha_optout_flag_t *flag, ngx_str_t *sub)
{
    flag->via_len = ngx_http_ha_optout_admin_cut(sub->data, sub->len,
                                                 NGX_HA_OPTOUT_VIA_LEN);
    ngx_memcpy(flag->via, sub->data, flag->via_len);
}


/*
 * POST v1/fleet/{upstream}/denied: the agent refused a record (its
 * signature does not verify): nothing changes, the refusal is audited.
 */

ngx_int_t
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
    reason.len = json_is_string(v)
                 ? ngx_http_ha_optout_admin_cut(
                       (u_char *) json_string_value(v),
                       json_string_length(v), NGX_HA_OPTOUT_REASON_LEN)
                 : 0;

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
