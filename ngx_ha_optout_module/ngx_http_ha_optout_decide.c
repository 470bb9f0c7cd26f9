
/*
 * ngx_ha_optout_module: what the request path asks.  Which flag acts for
 * a request on an upstream (the decision, memoised in the request), the
 * $ha_optout_<upstream> variable, the X-HA-Optout header filter and the
 * mirror gate; and the lookup of an upstream's conf by name.
 */


#include "ngx_http_ha_optout_module.h"


static ngx_int_t ngx_http_ha_optout_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ha_optout_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ha_optout_gate_handler(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;

static ngx_str_t  ngx_http_ha_optout_header_name = ngx_string("X-HA-Optout");


/* preconfiguration: the $ha_optout_<upstream> prefix variable */

ngx_int_t
ngx_http_ha_optout_add_variable(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var;
    ngx_str_t             name = ngx_string("ha_optout_");

    var = ngx_http_add_variable(cf, &name,
                                NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX);
    if (var == NULL) {
        return NGX_ERROR;
    }

    var->get_handler = ngx_http_ha_optout_variable;

    return NGX_OK;
}


/* postconfiguration: the header filter and the mirror gate */

ngx_int_t
ngx_http_ha_optout_request_hooks(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ha_optout_header_filter;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ha_optout_gate_handler;

    return NGX_OK;
}


/*
 * A pin acts when it has no pin_selector or when the request's selector
 * matches it; NGX_ERROR: out of memory.
 */

static ngx_int_t
ngx_http_ha_optout_decide_pin(ngx_http_request_t *r,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_flag_t *flag,
    ngx_http_ha_optout_decision_t *d)
{
    u_char     *p;
    ngx_str_t   value;

    if (flag->selector_len == 0
        || (hscf->selector
            && ngx_http_complex_value(r, hscf->selector, &value) == NGX_OK
            && value.len == flag->selector_len
            && ngx_strncmp(value.data, flag->selector, value.len) == 0))
    {
        p = ngx_pnalloc(r->pool, flag->pin_len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, flag->pin, flag->pin_len);

        d->pin = 1;
        d->pin_name.data = p;
        d->pin_name.len = flag->pin_len;
    }

    return NGX_OK;
}


/* the decision of a request for an upstream, memoised in the request */

ngx_http_ha_optout_decision_t *
ngx_http_ha_optout_decide(ngx_http_request_t *r,
    ngx_http_ha_optout_srv_conf_t *hscf)
{
    ngx_http_ha_optout_flag_t      *flag;
    ngx_http_ha_optout_decision_t  *d;

    d = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);

    if (d && d->hscf == hscf) {
        return d;
    }

    if (d == NULL) {
        d = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_decision_t));
        if (d == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, d, ngx_http_ha_optout_module);

    } else {
        /* another upstream's variable: answer without memoising */
        d = ngx_pcalloc(r->pool, sizeof(ngx_http_ha_optout_decision_t));
        if (d == NULL) {
            return NULL;
        }
    }

    d->hscf = hscf;

    flag = ngx_http_ha_optout_acting(hscf, ngx_time());
    if (flag == NULL) {
        return d;
    }

    /*
     * what the request needs is copied: the worker's view may be refreshed
     * while the request runs
     */

    d->active = 1;
    d->no_failover = flag->no_failover;

    d->text.len = hscf->text_len[flag->source];
    d->text.data = ngx_pnalloc(r->pool, d->text.len);
    if (d->text.data == NULL) {
        return NULL;
    }

    ngx_memcpy(d->text.data, hscf->text[flag->source], d->text.len);

    if (flag->pin_len
        && ngx_http_ha_optout_decide_pin(r, hscf, flag, d) != NGX_OK)
    {
        return NULL;
    }

    if (flag->sticky) {
        d->ident = ngx_http_ha_optout_flag_ident(flag);
    }

    d->sticky = flag->sticky && !d->pin;

    return d;
}


ngx_http_ha_optout_srv_conf_t *
ngx_http_ha_optout_find_upstream(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_str_t *name)
{
    ngx_uint_t                       i;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    hscfp = hmcf->upstreams.elts;

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        if (hscfp[i]->name.len == name->len
            && ngx_strncmp(hscfp[i]->name.data, name->data, name->len) == 0)
        {
            return hscfp[i];
        }
    }

    return NULL;
}


/*
 * $ha_optout_<upstream>: characters of the upstream name that cannot
 * stand in a variable name ("-", ".") are written as "_".
 */

static ngx_int_t
ngx_http_ha_optout_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *name = (ngx_str_t *) data;

    u_char                           c;
    size_t                           len;
    ngx_uint_t                       i, k;
    ngx_http_ha_optout_srv_conf_t  **hscfp, *hscf;
    ngx_http_ha_optout_decision_t   *d;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_get_module_main_conf(r, ngx_http_ha_optout_module);

    if (hmcf->config_flags == 0
        && (ngx_http_ha_optout_sh == NULL
            || ngx_http_ha_optout_sh->active == 0))
    {
        /* no flag anywhere: empty, without looking the name up */
        v->valid = 1;
        v->no_cacheable = 1;
        v->not_found = 0;
        v->len = 0;
        v->data = (u_char *) "";
        return NGX_OK;
    }

    hscfp = hmcf->upstreams.elts;
    len = name->len - (sizeof("ha_optout_") - 1);
    hscf = NULL;

    for (i = 0; i < hmcf->upstreams.nelts && hscf == NULL; i++) {
        if (hscfp[i]->name.len != len) {
            continue;
        }

        for (k = 0; k < len; k++) {
            c = hscfp[i]->name.data[k];
            c = (c == '-' || c == '.') ? '_' : ngx_tolower(c);

            if (c != ngx_tolower(name->data[sizeof("ha_optout_") - 1 + k])) {
                break;
            }
        }

        if (k == len) {
            hscf = hscfp[i];
        }
    }

    if (hscf == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->len = 0;
    v->data = (u_char *) "";

    if (ngx_http_ha_optout_sh->active == 0 && hscf->config_flag == NULL) {
        return NGX_OK;
    }

    d = ngx_http_ha_optout_decide(r, hscf);
    if (d == NULL) {
        return NGX_ERROR;
    }

    if (d->active) {
        v->len = d->text.len;
        v->data = d->text.data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_header_filter(ngx_http_request_t *r)
{
    ngx_table_elt_t                *h;
    ngx_http_ha_optout_loc_conf_t  *hlcf;
    ngx_http_ha_optout_decision_t  *d;
    ngx_http_upstream_srv_conf_t   *uscf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    if (!hlcf->header || r != r->main || hlcf->admin || hlcf->status) {
        return ngx_http_next_header_filter(r);
    }

    d = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);

    if (d == NULL || !d->active) {
        return ngx_http_next_header_filter(r);
    }

    /*
     * the header describes the upstream the request was proxied to: a
     * decision that $ha_optout_<name> made for another one (an upstream
     * without ha_optout served, or none did) is not this response's
     */

    uscf = r->upstream ? r->upstream->upstream : NULL;

    if (uscf == NULL || uscf->srv_conf == NULL
        || ngx_http_conf_upstream_srv_conf(uscf, ngx_http_ha_optout_module)
           != d->hscf)
    {
        return ngx_http_next_header_filter(r);
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = ngx_http_ha_optout_header_name;
    h->value = d->text;

    return ngx_http_next_header_filter(r);
}


/* replication=false: the mirror target answers 204 instead of sending */

static ngx_int_t
ngx_http_ha_optout_gate_handler(ngx_http_request_t *r)
{
    ngx_http_ha_optout_flag_t      *flag;
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_ha_optout_module);

    if (hlcf->mirror_gate == NULL
        || (ngx_http_ha_optout_sh->active == 0
            && hlcf->mirror_gate->config_flag == NULL))
    {
        return NGX_DECLINED;
    }

    flag = ngx_http_ha_optout_acting(hlcf->mirror_gate, ngx_time());

    if (flag == NULL || !flag->no_replication) {
        return NGX_DECLINED;
    }

    (void) ngx_atomic_fetch_add(&hlcf->mirror_gate->rec->replication_bypassed,
                                1);

    /* nginx finalizes it as a bodyless 204, subrequest or not */

    return NGX_HTTP_NO_CONTENT;
}
