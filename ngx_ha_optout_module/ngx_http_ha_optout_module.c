
/*
 * ngx_ha_optout_module: directives, configuration structures (create,
 * merge), pre- and postconfiguration, the enrolment of upstreams named by
 * ha_optout_flag / ha_optout_mirror_gate, and the wiring of the module's
 * hooks (init_module, init_process, exit_process).  What the request path
 * asks is in decide.c, the worker's periodic job in timer.c.
 *
 * Over 1,000 lines: the directive handlers of one module belong together
 * (nginx's own modules keep them in one file), and each is short.
 */


#include "ngx_http_ha_optout_module.h"


/*
 * keepalive.  Up to 1.29.6 its directive wraps the balancer on the spot:
 * written before "ha_optout" it would end up inside our wrap.  Since
 * 1.29.7 it is on by default (max_cached starts unset, -1) and wraps every
 * upstream from its init_main_conf, after all init_upstream: it is the
 * outermost wrap wherever its directive is, and an upstream we enroll must
 * be wrapped before that (ngx_http_ha_optout_enroll_module).
 */
#if (nginx_version >= 1029007)
#define NGX_HA_OPTOUT_KEEPALIVE_LATE  1
#else
#define NGX_HA_OPTOUT_KEEPALIVE_LATE  0
extern ngx_module_t  ngx_http_upstream_keepalive_module;
#endif


static void *ngx_http_ha_optout_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ha_optout_create_srv_conf(ngx_conf_t *cf);
static void *ngx_http_ha_optout_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ha_optout_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ha_optout_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_ha_optout_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_ha_optout_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_ha_optout_init_process(ngx_cycle_t *cycle);
static char *ngx_http_ha_optout_enroll_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void ngx_http_ha_optout_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_ha_optout_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ha_optout_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static char *ngx_http_ha_optout(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ha_optout_params(ngx_conf_t *cf,
    ngx_http_ha_optout_srv_conf_t *hscf);
static ngx_int_t ngx_http_ha_optout_wrap_order(ngx_conf_t *cf);
static char *ngx_http_ha_optout_flag(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ha_optout_flag_param(
    ngx_http_ha_optout_flag_t *flag, ngx_str_t *param, ngx_uint_t *optout);
static ngx_int_t ngx_http_ha_optout_flag_check(ngx_conf_t *cf,
    ngx_http_ha_optout_flag_t *flag, ngx_uint_t optout);
static void ngx_http_ha_optout_flag_config(ngx_http_ha_optout_flag_t *flag);
static char *ngx_http_ha_optout_mirror_gate(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ha_optout_admin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ha_optout_admin_key_kids(ngx_conf_t *cf,
    ngx_array_t *keys);
static char *ngx_http_ha_optout_admin_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ha_optout_key_alg(ngx_conf_t *cf,
    ngx_http_ha_optout_key_t *key, ngx_str_t *name);
static ngx_int_t ngx_http_ha_optout_key_kid(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_http_ha_optout_key_t *key, ngx_str_t *param);
static char *ngx_http_ha_optout_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ha_optout_audit_log(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ha_optout_policy(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ha_optout_main_path(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_ha_optout_commands[] = {

    { ngx_string("ha_optout_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_ha_optout_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_optout_environment"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_main_conf_t, environment),
      NULL },

    { ngx_string("ha_optout_state_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ha_optout_main_path,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_main_conf_t, state_file),
      NULL },

    { ngx_string("ha_optout_policy"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ha_optout_policy,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_main_conf_t, policy_file),
      NULL },

    { ngx_string("ha_optout_audit_log"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ha_optout_audit_log,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_optout_flag"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ha_optout_flag,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_optout"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_ha_optout,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_optout_header"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_loc_conf_t, header),
      NULL },

    { ngx_string("ha_optout_mirror_gate"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ha_optout_mirror_gate,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_optout_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ha_optout_admin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_optout_admin_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE23,
      ngx_http_ha_optout_admin_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("ha_optout_admin_audience"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_loc_conf_t, audience),
      NULL },

    { ngx_string("ha_optout_admin_issuer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_loc_conf_t, issuer),
      NULL },

    { ngx_string("ha_optout_admin_token_lifetime"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_loc_conf_t, token_lifetime),
      NULL },

    { ngx_string("ha_optout_admin_replay"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ha_optout_loc_conf_t, replay),
      NULL },

    { ngx_string("ha_optout_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ha_optout_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_ha_optout_module_ctx = {
    ngx_http_ha_optout_preconfiguration,   /* preconfiguration */
    ngx_http_ha_optout_postconfiguration,  /* postconfiguration */

    ngx_http_ha_optout_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_http_ha_optout_create_srv_conf,    /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ha_optout_create_loc_conf,    /* create location configuration */
    ngx_http_ha_optout_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_ha_optout_module = {
    NGX_MODULE_V1,
    &ngx_http_ha_optout_module_ctx,        /* module context */
    ngx_http_ha_optout_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_ha_optout_init_module,        /* init module */
    ngx_http_ha_optout_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ha_optout_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The second module of the .so, placed before keepalive by
 * ngx_module_order (see config): its init_main_conf runs after the
 * upstream module's (every init_upstream done, balancers set up) and
 * before keepalive's, which wraps every upstream since 1.29.7.  That is
 * where upstreams named by ha_optout_flag or ha_optout_mirror_gate without
 * an "ha_optout" line of their own are enrolled.
 */

static ngx_http_module_t  ngx_http_ha_optout_enroll_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    ngx_http_ha_optout_enroll_init_main_conf, /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_ha_optout_enroll_module = {
    NGX_MODULE_V1,
    &ngx_http_ha_optout_enroll_module_ctx, /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_ha_optout_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ha_optout_main_conf_t));
    if (hmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *     hmcf->shm_zone = NULL;
     *     hmcf->state_file = { 0, NULL };
     *     hmcf->audit_log = NULL;
     */

    if (ngx_array_init(&hmcf->upstreams, cf->pool, 4,
                       sizeof(ngx_http_ha_optout_srv_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&hmcf->refs, cf->pool, 4,
                       sizeof(ngx_http_ha_optout_ref_t))
        != NGX_OK)
    {
        return NULL;
    }

    return hmcf;
}


static void *
ngx_http_ha_optout_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_ha_optout_srv_conf_t  *hscf;

    hscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ha_optout_srv_conf_t));
    if (hscf == NULL) {
        return NULL;
    }

    hscf->generation = (ngx_atomic_uint_t) -1;

    return hscf;
}


static void *
ngx_http_ha_optout_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ha_optout_loc_conf_t  *hlcf;

    hlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ha_optout_loc_conf_t));
    if (hlcf == NULL) {
        return NULL;
    }

    hlcf->header = NGX_CONF_UNSET;
    hlcf->keys = NGX_CONF_UNSET_PTR;
    hlcf->token_lifetime = NGX_CONF_UNSET;
    hlcf->replay = NGX_CONF_UNSET;
    hlcf->request_id_index = NGX_ERROR;

    return hlcf;
}


static char *
ngx_http_ha_optout_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ha_optout_loc_conf_t *prev = parent;
    ngx_http_ha_optout_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_value(conf->header, prev->header, 0);
    ngx_conf_merge_ptr_value(conf->keys, prev->keys, NULL);
    ngx_conf_merge_str_value(conf->audience, prev->audience, "");
    ngx_conf_merge_str_value(conf->issuer, prev->issuer, "");
    ngx_conf_merge_sec_value(conf->token_lifetime, prev->token_lifetime,
                             3600);
    ngx_conf_merge_value(conf->replay, prev->replay, 1);

    if (conf->admin && conf->keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ha_optout_admin\" requires at least one "
                           "\"ha_optout_admin_key\"");
        return NGX_CONF_ERROR;
    }

    if (conf->admin) {
        /*
         * the API limits bodies to 16 KiB itself and answers 413 in JSON;
         * nginx's client_max_body_size would answer it in HTML first
         */
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->client_max_body_size = 0;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ha_optout_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_ha_optout_add_variable(cf);
}


static void
ngx_http_ha_optout_mark_used(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    if (!hmcf->used) {
        hmcf->used = 1;
        hmcf->used_file = cf->conf_file->file.name;
        hmcf->used_line = cf->conf_file->line;
    }
}


/* keepalive must not have wrapped the upstream to be enrolled already */

static ngx_int_t
ngx_http_ha_optout_enroll_order(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *uscf, ngx_http_ha_optout_ref_t *ref)
{
#if (NGX_HA_OPTOUT_KEEPALIVE_LATE)
    ngx_uint_t   m;

    /*
     * ngx_module_order applies to dynamic modules only: linked in
     * statically we come after keepalive, which has wrapped already
     */

    for (m = 0; cf->cycle->modules[m]; m++) {
        if (cf->cycle->modules[m] == &ngx_http_ha_optout_enroll_module) {
            break;
        }

        if (ngx_strcmp(cf->cycle->modules[m]->name,
                       "ngx_http_upstream_keepalive_module")
            == 0)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: upstream \"%V\" cannot be enrolled "
                          "by a module linked in after keepalive: give it "
                          "an \"ha_optout\" line, or build ha_optout as a "
                          "dynamic module, in %V:%ui", &ref->name,
                          &ref->file, ref->line);
            return NGX_ERROR;
        }
    }

#else
    void        *kcf;

    kcf = ngx_http_conf_upstream_srv_conf(uscf,
                                          ngx_http_upstream_keepalive_module);

    if (kcf && *(ngx_uint_t *) kcf != 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: upstream \"%V\" uses \"keepalive\": give "
                      "it an \"ha_optout\" line before \"keepalive\", a flag "
                      "could not act on it otherwise, in %V:%ui", &ref->name,
                      &ref->file, ref->line);
        return NGX_ERROR;
    }
#endif

    return NGX_OK;
}


/*
 * An upstream named by ha_optout_flag or ha_optout_mirror_gate without an
 * "ha_optout" line of its own is enrolled as if it had one.  Its balancer
 * is already set up by now, so the wrap goes around it from outside: that
 * works for every stock balancer.  Up to 1.29.6 a "keepalive" directive has
 * wrapped it already and we would sit outside keepalive (the flag would be
 * shown, and not acted on), hence the refusal; since 1.29.7 keepalive
 * wraps after us (see ngx_http_ha_optout_enroll_module).
 */

static ngx_int_t
ngx_http_ha_optout_enroll(ngx_conf_t *cf, ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_upstream_srv_conf_t *uscf, ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_http_ha_optout_ref_t *ref)
{
    ngx_http_ha_optout_srv_conf_t  **slot;

    if (ngx_http_ha_optout_enroll_order(cf, uscf, ref) != NGX_OK) {
        return NGX_ERROR;
    }

    if (uscf->host.len >= NGX_HA_OPTOUT_NAME_LEN || uscf->peer.init == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: upstream \"%V\" cannot be enrolled; give "
                      "it an \"ha_optout\" line in %V:%ui", &ref->name,
                      &ref->file, ref->line);
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                  "ha_optout: upstream \"%V\" has no \"ha_optout\" line; "
                  "enrolled as if it had one at its end in %V:%ui",
                  &ref->name, &ref->file, ref->line);

    hscf->enabled = 1;
    hscf->wrapped = 1;
    hscf->uscf = uscf;
    hscf->name = uscf->host;
    hscf->conf_file = ref->file;
    hscf->conf_line = ref->line;

    ngx_http_ha_optout_wrap_peer(hscf);

    slot = ngx_array_push(&hmcf->upstreams);
    if (slot == NULL) {
        return NGX_ERROR;
    }

    *slot = hscf;

    return NGX_OK;
}


static ngx_int_t ngx_http_ha_optout_ref_flag(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_upstream_srv_conf_t *uscf,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_ref_t *ref);


/* resolves the upstream names of ha_optout_flag and ha_optout_mirror_gate */
static ngx_int_t
ngx_http_ha_optout_resolve_refs(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    ngx_uint_t                       i, j, found;
    ngx_http_ha_optout_ref_t        *ref;
    ngx_http_upstream_srv_conf_t   **uscfp;
    ngx_http_upstream_main_conf_t   *umcf;
    ngx_http_ha_optout_srv_conf_t   *hscf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    uscfp = umcf->upstreams.elts;
    ref = hmcf->refs.elts;

    for (i = 0; i < hmcf->refs.nelts; i++) {

        found = 0;

        for (j = 0; j < umcf->upstreams.nelts; j++) {
            if (!(uscfp[j]->flags & NGX_HTTP_UPSTREAM_CREATE)
                || uscfp[j]->host.len != ref[i].name.len
                || ngx_strncmp(uscfp[j]->host.data, ref[i].name.data,
                               ref[i].name.len) != 0)
            {
                continue;
            }

            found = 1;

            hscf = ngx_http_conf_upstream_srv_conf(uscfp[j],
                                                   ngx_http_ha_optout_module);
            if (!hscf->enabled
                && ngx_http_ha_optout_enroll(cf, hmcf, uscfp[j], hscf,
                                             &ref[i])
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (ref[i].flag
                && ngx_http_ha_optout_ref_flag(cf, hmcf, uscfp[j], hscf,
                                               &ref[i])
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (ref[i].target) {
                *ref[i].target = hscf;
            }

            break;
        }

        if (!found) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: unknown upstream \"%V\" in %V:%ui",
                          &ref[i].name, &ref[i].file, ref[i].line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* the flag of an ha_optout_flag line becomes its upstream's config flag */

static ngx_int_t
ngx_http_ha_optout_ref_flag(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_upstream_srv_conf_t *uscf,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_ref_t *ref)
{
    if (hscf->config_flag) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: duplicate \"ha_optout_flag\" for upstream "
                      "\"%V\" in %V:%ui", &ref->name, &ref->file, ref->line);
        return NGX_ERROR;
    }

    if (ref->flag->pin_len
        && ngx_http_ha_optout_find_peer(uscf, ref->flag->pin,
                                        ref->flag->pin_len, NULL, NULL)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: pin \"%*s\" is not a usable server of "
                      "upstream \"%V\" in %V:%ui",
                      (size_t) ref->flag->pin_len, ref->flag->pin,
                      &ref->name, &ref->file, ref->line);
        return NGX_ERROR;
    }

    if (ref->flag->selector_len && hscf->selector == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: pin_selector needs \"ha_optout selector=\" "
                      "in upstream \"%V\" in %V:%ui",
                      &ref->name, &ref->file, ref->line);
        return NGX_ERROR;
    }

    hscf->config_flag = ref->flag;
    hmcf->config_flags++;
    ngx_http_ha_optout_set_text(hscf, NGX_HA_OPTOUT_SRC_CONFIG,
                                hscf->config_flag);

    return NGX_OK;
}


static char *
ngx_http_ha_optout_enroll_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ha_optout_module);

    /* without a zone postconfiguration refuses the configuration */

    if (!hmcf->used || hmcf->shm_zone == NULL) {
        return NGX_CONF_OK;
    }

    if (ngx_http_ha_optout_resolve_refs(cf, hmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ha_optout_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_http_ha_optout_srv_conf_t  **hscfp;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ha_optout_module);

    if (hmcf->environment.data == NULL) {
        ngx_str_set(&hmcf->environment, "default");
    }

    if (!hmcf->used) {
        return NGX_OK;
    }

    if (hmcf->shm_zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: \"ha_optout_zone\" is required by the "
                      "ha_optout directive in %V:%ui",
                      &hmcf->used_file, hmcf->used_line);
        return NGX_ERROR;
    }

    hscfp = hmcf->upstreams.elts;

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        if (!hscfp[i]->wrapped) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: \"ha_optout\" in upstream \"%V\" is "
                          "overridden by a balancer directive after it; "
                          "put \"ha_optout\" after the balancer and before "
                          "\"keepalive\" in %V:%ui", &hscfp[i]->name,
                          &hscfp[i]->conf_file, hscfp[i]->conf_line);
            return NGX_ERROR;
        }
    }

    /* the refs were resolved by ngx_http_ha_optout_enroll_init_main_conf */

    if (ngx_http_ha_optout_policy_resolve(cf, hmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_ha_optout_request_hooks(cf);
}


static char *
ngx_http_ha_optout_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ha_optout_main_conf_t *hmcf = conf;

    ssize_t                         size;
    ngx_str_t                      *value;
    ngx_http_ha_optout_zone_ctx_t  *ctx;

    if (hmcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (64 * 1024)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\" (at least 64k)",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_ha_optout_zone_ctx_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    ctx->mcf = hmcf;

    hmcf->shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                           &ngx_http_ha_optout_module);
    if (hmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (hmcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &value[1]);
        return NGX_CONF_ERROR;
    }

    hmcf->shm_zone->init = ngx_http_ha_optout_init_zone;
    hmcf->shm_zone->data = ctx;

    return NGX_CONF_OK;
}


/*
 * The store attaches the zone and makes its records; a fresh zone
 * continues the chain of the audit log nginx wrote, before the records
 * are made (the store knows nothing of the audit log).
 */

static ngx_int_t
ngx_http_ha_optout_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_uint_t                      fresh;
    ngx_http_ha_optout_zone_ctx_t  *ctx;

    if (ngx_http_ha_optout_zone_attach(shm_zone, data, &fresh) != NGX_OK) {
        return NGX_ERROR;
    }

    if (fresh) {
        ctx = shm_zone->data;
        ngx_http_ha_optout_audit_chain_init(ctx->mcf, ctx->sh,
                                            shm_zone->shm.log);
    }

    return ngx_http_ha_optout_zone_records(shm_zone);
}


static char *
ngx_http_ha_optout_main_path(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t  *field, *value;

    field = (ngx_str_t *) ((u_char *) conf + cmd->offset);

    if (field->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    *field = value[1];

    if (ngx_conf_full_name(cf->cycle, field, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ha_optout_audit_log(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ha_optout_main_conf_t *hmcf = conf;

    ngx_str_t  *value;

    if (hmcf->audit_log) {
        return "is duplicate";
    }

    value = cf->args->elts;

    hmcf->audit_log = ngx_conf_open_file(cf->cycle, &value[1]);
    if (hmcf->audit_log == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ha_optout_policy(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ha_optout_main_conf_t *hmcf = conf;

    char  *rv;

    rv = ngx_http_ha_optout_main_path(cf, cmd, (u_char *) hmcf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    return ngx_http_ha_optout_policy_load(cf, hmcf);
}


/*
 * "ha_optout [selector=$var] [sticky_key=$var];" in upstream {}: its
 * parameters, the order of the balancer wraps, then the upstream joins the
 * module's list and is wrapped.
 */

static char *
ngx_http_ha_optout(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ha_optout_srv_conf_t *hscf = conf;

    ngx_http_upstream_srv_conf_t     *uscf;
    ngx_http_ha_optout_main_conf_t   *hmcf;
    ngx_http_ha_optout_srv_conf_t   **slot;

    if (hscf->enabled) {
        return "is duplicate";
    }

    if (ngx_http_ha_optout_params(cf, hscf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (ngx_http_ha_optout_wrap_order(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (uscf->host.len >= NGX_HA_OPTOUT_NAME_LEN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "upstream name \"%V\" is too long for ha_optout",
                           &uscf->host);
        return NGX_CONF_ERROR;
    }

    hscf->enabled = 1;
    hscf->uscf = uscf;
    hscf->name = uscf->host;
    hscf->conf_file = cf->conf_file->file.name;
    hscf->conf_line = cf->conf_file->line;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ha_optout_module);
    ngx_http_ha_optout_mark_used(cf, hmcf);

    slot = ngx_array_push(&hmcf->upstreams);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = hscf;

    return ngx_http_ha_optout_wrap(cf, hscf);
}


/* selector= and sticky_key=: each a complex value with a variable in it */

static ngx_int_t
ngx_http_ha_optout_params(ngx_conf_t *cf, ngx_http_ha_optout_srv_conf_t *hscf)
{
    ngx_str_t                          *value, v;
    ngx_uint_t                          i;
    ngx_http_complex_value_t          **cvp;
    ngx_http_compile_complex_value_t    ccv;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "selector=", 9) == 0) {
            cvp = &hscf->selector;
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;

        } else if (ngx_strncmp(value[i].data, "sticky_key=", 11) == 0) {
            cvp = &hscf->sticky_key;
            v.data = value[i].data + 11;
            v.len = value[i].len - 11;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_ERROR;
        }

        if (v.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty value in \"%V\"", &value[i]);
            return NGX_ERROR;
        }

        /* a constant would put every request in one bucket: a typo */

        if (ngx_strlchr(v.data, v.data + v.len, '$') == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is a constant: it takes a variable, "
                               "e.g. \"%*s=$%V\"", &value[i],
                               (size_t) (v.data - value[i].data - 1),
                               value[i].data, &v);
            return NGX_ERROR;
        }

        *cvp = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
        if (*cvp == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &v;
        ccv.complex_value = *cvp;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * The wraps of other modules that must not come before "ha_optout" in the
 * upstream {} being parsed.
 */

static ngx_int_t
ngx_http_ha_optout_wrap_order(ngx_conf_t *cf)
{
#if !(NGX_HA_OPTOUT_KEEPALIVE_LATE) || (nginx_version >= 1029006)
    void  *ocf;
#endif

#if !(NGX_HA_OPTOUT_KEEPALIVE_LATE)

    /*
     * "keepalive" before "ha_optout" would end up inside our wrap, where
     * the round-robin data is out of reach and no flag could act.  The
     * keepalive module's server conf starts with max_cached, which only
     * its directive sets (to at least 1).  Since 1.29.7 keepalive wraps
     * last whatever the order: nothing to check.
     */

    ocf = ngx_http_conf_get_module_srv_conf(cf,
                                            ngx_http_upstream_keepalive_module);
    if (ocf && *(ngx_uint_t *) ocf != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ha_optout\" must come before \"keepalive\" "
                           "(after the balancer directive)");
        return NGX_ERROR;
    }

#endif

#if (nginx_version >= 1029006)

    /*
     * nginx's "sticky" (1.29.6+) wraps the balancer as keepalive did: before
     * "ha_optout" it would sit inside our wrap, which would then step aside
     * at run time (a pin shown, not acting).  Its server conf starts with
     * the saved init_upstream, set by its directive only.
     */

    ocf = ngx_http_ha_optout_other_srv_conf(cf,
                             ((ngx_http_conf_ctx_t *) cf->ctx)->srv_conf,
                             "ngx_http_upstream_sticky_module");
    if (ocf && *(void **) ocf != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ha_optout\" must come before \"sticky\" "
                           "(after the balancer directive)");
        return NGX_ERROR;
    }

#endif

#if (nginx_version >= 1031000)

    /*
     * least_time (1.31) keeps its own free, so the wrap would step aside at
     * run time; after "ha_optout" it replaces it (refused in
     * postconfiguration).  Its server conf starts with the mode, unset
     * until its directive is seen.
     */

    ocf = ngx_http_ha_optout_other_srv_conf(cf,
                             ((ngx_http_conf_ctx_t *) cf->ctx)->srv_conf,
                             "ngx_http_upstream_least_time_module");
    if (ocf && *(ngx_uint_t *) ocf != NGX_CONF_UNSET_UINT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ha_optout\" does not work with \"least_time\": "
                           "a pin could not act on it; use least_conn, hash "
                           "or random");
        return NGX_ERROR;
    }

#endif

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_conf_copy(u_char *dst, uint16_t *len, size_t max,
    ngx_str_t *src)
{
    if (src->len == 0 || src->len > max) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst, src->data, src->len);
    *len = (uint16_t) src->len;

    return NGX_OK;
}


static ngx_http_ha_optout_ref_t *
ngx_http_ha_optout_add_ref(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_http_ha_optout_ref_t        *ref;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ha_optout_module);
    ngx_http_ha_optout_mark_used(cf, hmcf);

    ref = ngx_array_push(&hmcf->refs);
    if (ref == NULL) {
        return NULL;
    }

    ngx_memzero(ref, sizeof(ngx_http_ha_optout_ref_t));
    ref->name = *name;
    ref->file = cf->conf_file->file.name;
    ref->line = cf->conf_file->line;

    return ref;
}


static char *
ngx_http_ha_optout_flag(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                  *value;
    ngx_uint_t                  i, optout;
    ngx_http_ha_optout_ref_t   *ref;
    ngx_http_ha_optout_flag_t  *flag;

    value = cf->args->elts;

    flag = ngx_pcalloc(cf->pool, sizeof(ngx_http_ha_optout_flag_t));
    if (flag == NULL) {
        return NGX_CONF_ERROR;
    }

    optout = 0;

    for (i = 2; i < cf->args->nelts; i++) {
        if (ngx_http_ha_optout_flag_param(flag, &value[i], &optout)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_ha_optout_flag_check(cf, flag, optout) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_http_ha_optout_flag_config(flag);

    ref = ngx_http_ha_optout_add_ref(cf, &value[1]);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    ref->flag = flag;

    return NGX_CONF_OK;
}


/* one "name=value" of ha_optout_flag; NGX_ERROR: an invalid parameter */

static ngx_int_t
ngx_http_ha_optout_flag_param(ngx_http_ha_optout_flag_t *flag,
    ngx_str_t *param, ngx_uint_t *optout)
{
    ngx_str_t  v;

    v.data = (u_char *) ngx_strlchr(param->data,
                                    param->data + param->len, '=');
    if (v.data == NULL) {
        return NGX_ERROR;
    }

    v.data++;
    v.len = param->data + param->len - v.data;

#define ngx_ha_optout_is(s)                                                   \
    (ngx_strncmp(param->data, s "=", sizeof(s)) == 0)

    if (ngx_ha_optout_is("failover")) {
        if (v.len == 3 && ngx_strncmp(v.data, "off", 3) == 0) {
            flag->no_failover = 1;
            *optout = 1;
        } else if (!(v.len == 2 && ngx_strncmp(v.data, "on", 2) == 0)) {
            return NGX_ERROR;
        }

    } else if (ngx_ha_optout_is("replication")) {
        if (v.len == 3 && ngx_strncmp(v.data, "off", 3) == 0) {
            flag->no_replication = 1;
            *optout = 1;
        } else if (!(v.len == 2 && ngx_strncmp(v.data, "on", 2) == 0)) {
            return NGX_ERROR;
        }

    } else if (ngx_ha_optout_is("sticky")) {
        if (v.len == 2 && ngx_strncmp(v.data, "on", 2) == 0) {
            flag->sticky = 1;
            *optout = 1;
        } else if (!(v.len == 3 && ngx_strncmp(v.data, "off", 3) == 0)) {
            return NGX_ERROR;
        }

    } else if (ngx_ha_optout_is("pin")) {
        if (ngx_http_ha_optout_conf_copy(flag->pin, &flag->pin_len,
                                         NGX_HA_OPTOUT_PIN_LEN - 1, &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
        *optout = 1;

    } else if (ngx_ha_optout_is("pin_selector")) {
        if (ngx_http_ha_optout_conf_copy(flag->selector,
                                         &flag->selector_len,
                                         NGX_HA_OPTOUT_SELECTOR_LEN - 1, &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_ha_optout_is("reason")) {
        if (ngx_http_ha_optout_conf_copy(flag->reason, &flag->reason_len,
                                         NGX_HA_OPTOUT_REASON_LEN, &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        return NGX_ERROR;
    }

#undef ngx_ha_optout_is

    return NGX_OK;
}


static ngx_int_t
ngx_http_ha_optout_flag_check(ngx_conf_t *cf, ngx_http_ha_optout_flag_t *flag,
    ngx_uint_t optout)
{
    /* what reaches X-HA-Optout and $ha_optout_* is printable ASCII */

    if (ngx_http_ha_optout_header_safe(flag->pin, flag->pin_len) != NGX_OK
        || ngx_http_ha_optout_header_safe(flag->selector, flag->selector_len)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ha_optout_flag\": \"pin=\" and "
                           "\"pin_selector=\" must be printable ASCII (they "
                           "reach the X-HA-Optout header): no control bytes, "
                           "no non-ASCII");
        return NGX_ERROR;
    }

    if (!optout) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"ha_optout_flag\" must opt out of something: "
                           "failover=off, pin=, replication=off or sticky=on");
        return NGX_ERROR;
    }

    if (flag->selector_len && flag->pin_len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"pin_selector=\" requires \"pin=\"");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* what a flag of nginx.conf is when the directive does not say */

static void
ngx_http_ha_optout_flag_config(ngx_http_ha_optout_flag_t *flag)
{
    ngx_str_t  v;

    if (flag->reason_len == 0) {
        ngx_str_set(&v, "declared in nginx.conf");
        (void) ngx_http_ha_optout_conf_copy(flag->reason, &flag->reason_len,
                                            NGX_HA_OPTOUT_REASON_LEN, &v);
    }

    ngx_str_set(&v, "config");
    (void) ngx_http_ha_optout_conf_copy(flag->actor, &flag->actor_len,
                                        NGX_HA_OPTOUT_ACTOR_LEN, &v);

    flag->present = 1;
    flag->source = NGX_HA_OPTOUT_SRC_CONFIG;
    flag->set_at = ngx_time();
}


static char *
ngx_http_ha_optout_mirror_gate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ha_optout_loc_conf_t *hlcf = conf;

    ngx_str_t                 *value;
    ngx_http_ha_optout_ref_t  *ref;

    if (hlcf->mirror_gate) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ref = ngx_http_ha_optout_add_ref(cf, &value[1]);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    /* a placeholder until postconfiguration resolves the name */
    hlcf->mirror_gate = (ngx_http_ha_optout_srv_conf_t *) -1;
    ref->target = &hlcf->mirror_gate;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ha_optout_location(ngx_conf_t *cf, ngx_http_handler_pt handler,
    ngx_http_ha_optout_loc_conf_t *hlcf)
{
    ngx_str_t                        name = ngx_string("request_id");
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_ha_optout_main_conf_t  *hmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = handler;

    hlcf->request_id_index = ngx_http_get_variable_index(cf, &name);
    if (hlcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    hmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_ha_optout_module);
    ngx_http_ha_optout_mark_used(cf, hmcf);

    return NGX_OK;
}


static char *
ngx_http_ha_optout_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ha_optout_loc_conf_t *hlcf = conf;

    if (hlcf->admin || hlcf->status) {
        return "is duplicate";
    }

    hlcf->admin = 1;

    if (ngx_http_ha_optout_location(cf, ngx_http_ha_optout_admin_handler,
                                    hlcf)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ha_optout_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ha_optout_loc_conf_t *hlcf = conf;

    if (hlcf->admin || hlcf->status) {
        return "is duplicate";
    }

    hlcf->status = 1;

    if (ngx_http_ha_optout_location(cf, ngx_http_ha_optout_status_handler,
                                    hlcf)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ha_optout_admin_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ha_optout_loc_conf_t *hlcf = conf;

    ngx_str_t                 *value;
    ngx_http_ha_optout_key_t  *key;

    value = cf->args->elts;

    if (hlcf->keys == NGX_CONF_UNSET_PTR) {
        hlcf->keys = ngx_array_create(cf->pool, 2,
                                      sizeof(ngx_http_ha_optout_key_t));
        if (hlcf->keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    /* a JWK Set adds its own keys, each with the kid of its JWK */

    if (ngx_strcasecmp(value[1].data, (u_char *) "jwks") == 0) {
        if (cf->args->nelts == 4) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": the kid of each key is in the JWK "
                               "Set", &value[3]);
            return NGX_CONF_ERROR;
        }

        if (ngx_conf_full_name(cf->cycle, &value[2], 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_ha_optout_jwks_load(cf, hlcf->keys, &value[2])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        return ngx_http_ha_optout_admin_key_kids(cf, hlcf->keys);
    }

    key = ngx_array_push(hlcf->keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(key, sizeof(ngx_http_ha_optout_key_t));

    if (ngx_http_ha_optout_key_alg(cf, key, &value[1]) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    key->file = value[2];

    if (ngx_conf_full_name(cf->cycle, &key->file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 4
        && ngx_http_ha_optout_key_kid(cf, hlcf->keys, key, &value[3])
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ha_optout_key_load(cf, key) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_ha_optout_admin_key_kids(cf, hlcf->keys);
}


static ngx_int_t
ngx_http_ha_optout_key_alg(ngx_conf_t *cf, ngx_http_ha_optout_key_t *key,
    ngx_str_t *name)
{
    if (ngx_strcasecmp(name->data, (u_char *) "hs256") == 0) {
        key->alg = NGX_HA_OPTOUT_ALG_HS256;

    } else if (ngx_strcasecmp(name->data, (u_char *) "es256") == 0) {
        key->alg = NGX_HA_OPTOUT_ALG_ES256;

    } else if (ngx_strcasecmp(name->data, (u_char *) "eddsa") == 0) {
        key->alg = NGX_HA_OPTOUT_ALG_EDDSA;

    } else if (ngx_strcasecmp(name->data, (u_char *) "rs256") == 0) {
        key->alg = NGX_HA_OPTOUT_ALG_RS256;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown algorithm \"%V\" "
                           "(hs256, es256, eddsa, rs256 or jwks)", name);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* "kid=ID", unique among the location's keys (key is the last of them) */

static ngx_int_t
ngx_http_ha_optout_key_kid(ngx_conf_t *cf, ngx_array_t *keys,
    ngx_http_ha_optout_key_t *key, ngx_str_t *param)
{
    ngx_uint_t                 i;
    ngx_http_ha_optout_key_t  *k;

    if (ngx_strncmp(param->data, "kid=", 4) != 0 || param->len == 4) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", param);
        return NGX_ERROR;
    }

    key->kid.data = param->data + 4;
    key->kid.len = param->len - 4;

    k = keys->elts;

    for (i = 0; i + 1 < keys->nelts; i++) {
        if (k[i].kid.len == key->kid.len
            && ngx_strncmp(k[i].kid.data, key->kid.data, key->kid.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate kid \"%V\"", &key->kid);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A token without kid selects a key only when it is the location's one
 * key: beside others, a key without kid= could never verify anything
 */

static char *
ngx_http_ha_optout_admin_key_kids(ngx_conf_t *cf, ngx_array_t *keys)
{
    ngx_uint_t                 i;
    ngx_http_ha_optout_key_t  *k;

    if (keys->nelts < 2) {
        return NGX_CONF_OK;
    }

    k = keys->elts;

    for (i = 0; i < keys->nelts; i++) {
        if (k[i].kid.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the key \"%V\" has no kid= and this "
                               "location has %ui keys: no token could "
                               "select it; give it kid= (and the signers "
                               "that kid)", &k[i].file, keys->nelts);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ha_optout_init_process(ngx_cycle_t *cycle)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;
    ngx_http_ha_optout_zone_ctx_t   *ctx;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ha_optout_module);

    if (hmcf == NULL || hmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    ctx = hmcf->shm_zone->data;
    ngx_http_ha_optout_sh = ctx->sh;
    ngx_http_ha_optout_shpool = ctx->shpool;

    if (ngx_process != NGX_PROCESS_SINGLE
        && !(ngx_process == NGX_PROCESS_WORKER && ngx_worker == 0))
    {
        return NGX_OK;
    }

    ngx_http_ha_optout_timer_start(cycle);

    return NGX_OK;
}


/*
 * A worker that exits while the zone owes the state file a restore (a
 * DELETE or an expiry answered "persisted": false) tries the save once
 * more, atomic then in place: the zone goes away with the last worker, and
 * the state file would bring the suspension back at the next start.  Any
 * worker may do it, whoever gets the writer lock; the others find nothing
 * owed any more.
 */

static void
ngx_http_ha_optout_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ha_optout_module);

    if (hmcf == NULL || hmcf->shm_zone == NULL || hmcf->state_file.len == 0
        || ngx_http_ha_optout_sh == NULL
        || ngx_http_ha_optout_sh->state_dirty == 0
        || ngx_http_ha_optout_writer_trylock() != NGX_OK)
    {
        return;
    }

    ngx_http_ha_optout_persist_retry(hmcf, cycle->log, 1);

    if (ngx_http_ha_optout_sh->state_dirty) {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "ha_optout: nginx stops with a restore of HA that "
                      "state file \"%V\" does not hold: the API flag it "
                      "cleared (its upstream is named in the \"restored in "
                      "memory\" alert above) will act again at the next "
                      "start; make the file and its directory writable by "
                      "the worker user, or delete the flag again after the "
                      "start", &hmcf->state_file);
    }

    ngx_http_ha_optout_writer_unlock();
}


/* the master opened the audit log 0644 (nginx's default): 0640 */

static ngx_int_t
ngx_http_ha_optout_init_module(ngx_cycle_t *cycle)
{
    ngx_http_ha_optout_main_conf_t  *hmcf;

    hmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ha_optout_module);
    if (hmcf) {
        ngx_http_ha_optout_audit_mode(hmcf, cycle->log);
    }

    return NGX_OK;
}
