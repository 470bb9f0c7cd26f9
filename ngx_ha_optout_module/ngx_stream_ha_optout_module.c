
/*
 * ngx_ha_optout_module, stream twin: the same opt-outs (failover off, pin,
 * sticky) for stream {} upstreams.  It shares the zone, the admin API,
 * audit, status and metrics with the http module: each stream upstream
 * with "ha_optout" is registered there as "stream:NAME", so it cannot
 * collide with an http upstream.  Load it after ngx_http_ha_optout_module
 * and ngx_stream_module.
 *
 * What does not touch a server type lives once on the http side and is
 * called from here: the flag lookup (store.c), the sticky table (store.c),
 * the resolve cache, the counters and the held-failover lines (peer.c),
 * the name match and tried bit (ngx_http_ha_optout_module.h).  The peer
 * wrap itself (init_peer -> get -> free, select, resolve, find_peer) is
 * twinned with balancer.c, as nginx twins its http and stream upstream
 * modules: ngx_stream_upstream_rr_peer_t is not the http peer type (sid,
 * ssl_session and the least_time fields move the later members), the
 * round-robin hooks and lock macros are per side, and the stream zone has
 * its own build flag, so one body over both would need casts or macros
 * where nginx's own code keeps two readable copies.
 *
 * Past 1,000 lines on purpose: it is the whole stream module (directive,
 * registration with the http side, the peer wrap, the servers for the
 * admin API and status), one file as each of nginx's stream modules is;
 * its peer wrap is read side by side with balancer.c's.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>

#include "ngx_http_ha_optout_module.h"


/* nginx 1.27.3+: peer references and "resolve" servers, as in http */
#if (nginx_version >= 1027003 && NGX_STREAM_UPSTREAM_ZONE)
#define NGX_HA_OPTOUT_STREAM_REFS  1
#else
#define NGX_HA_OPTOUT_STREAM_REFS  0
#endif


typedef struct {
    ngx_uint_t                          enabled;
    ngx_uint_t                          wrapped;
    ngx_str_t                           file;
    ngx_uint_t                          line;

    ngx_stream_upstream_srv_conf_t     *uscf;
    ngx_stream_upstream_init_pt         original_init_upstream;
    ngx_stream_upstream_init_peer_pt    original_init_peer;

    ngx_stream_complex_value_t         *sticky_key;

    ngx_http_ha_optout_srv_conf_t      *hscf;    /* as the http side sees it */

    /*
     * worker-local: init_peer's last decision, what
     * ngx_http_ha_optout_acting() answered for this zone generation and
     * this second (the worker's view of the flags changes only with the
     * generation, a flag's expiry only with the second), and the pin's
     * server in the resolve cache (NULL: not looked up yet; reset with
     * the decision and whenever the cache is made again or dropped)
     */
    ngx_atomic_uint_t                   generation;
    time_t                              now;      /* 0: no decision yet */
    ngx_http_ha_optout_flag_t          *flag;     /* NULL: none acts */
    ngx_http_ha_optout_slot_t          *pin_slot;
} ngx_stream_ha_optout_srv_conf_t;


typedef struct {
    ngx_array_t                         upstreams;  /* srv_conf_t * */
} ngx_stream_ha_optout_main_conf_t;


/*
 * A session's peer data: 64 bytes (144 before), which fit in what the
 * session pool's last block has left when the upstream is chosen.  Round
 * robin's data comes first and is handed to its init_peer, so that its
 * notify and SSL session hooks (least_conn's too) take this block as
 * their own and are not wrapped.  A balancer with data of its own (hash, random) has its
 * pointer and hooks in the union instead.  The pin is not kept: the get
 * that follows init_peer in the same call (the stream proxy connects right
 * after init_peer, and with one try never gets a peer again) reads it
 * from the worker's decision, scf->flag, before any other event could
 * change it.
 */
typedef struct {
    union {
        ngx_stream_upstream_rr_peer_data_t   rr;      /* own: round robin's */
        struct {
            ngx_stream_upstream_rr_peer_data_t  *rrp;
            ngx_event_notify_peer_pt             notify;
#if (NGX_STREAM_SSL)
            ngx_event_set_peer_session_pt        set_session;
            ngx_event_save_peer_session_pt       save_session;
#endif
        } other;
    } u;

    ngx_stream_ha_optout_srv_conf_t    *scf;
    ngx_event_get_peer_pt               original_get_peer;

    unsigned                            own:1;       /* u.rr */
    unsigned                            pin:1;
    unsigned                            no_failover:1;
    unsigned                            sticky:1;
    unsigned                            retry:1;     /* tries > 1 unwrapped */
    unsigned                            counted:1;   /* the pinned session */
} ngx_stream_ha_optout_peer_data_t;


/* a sticky session's: its key is read in get, and the flag's identity */
typedef struct {
    ngx_stream_ha_optout_peer_data_t    peer;
    ngx_stream_session_t               *session;
    uint64_t                            ident;
} ngx_stream_ha_optout_sticky_data_t;


/* nginx 1.27.3+: "resolve" servers change the peer list at run time */
#if (nginx_version >= 1027003 && NGX_STREAM_UPSTREAM_ZONE)
#define NGX_HA_OPTOUT_STREAM_CONFIG  1
#else
#define NGX_HA_OPTOUT_STREAM_CONFIG  0
#endif


static void *ngx_stream_ha_optout_create_main_conf(ngx_conf_t *cf);
static void *ngx_stream_ha_optout_create_srv_conf(ngx_conf_t *cf);
static ngx_int_t ngx_stream_ha_optout_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_stream_ha_optout_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_stream_ha_optout_register(ngx_cycle_t *cycle,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_stream_ha_optout_main_conf_t *smcf,
    ngx_stream_ha_optout_srv_conf_t *scf, ngx_uint_t held);
static void ngx_stream_ha_optout_zone_small(ngx_cycle_t *cycle,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_stream_ha_optout_main_conf_t *smcf, ngx_str_t *name, ngx_uint_t held);
static char *ngx_stream_ha_optout(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_stream_ha_optout_init_upstream(ngx_conf_t *cf,
    ngx_stream_upstream_srv_conf_t *us);
static ngx_int_t ngx_stream_ha_optout_init_peer(ngx_stream_session_t *s,
    ngx_stream_upstream_srv_conf_t *us);
static ngx_http_ha_optout_flag_t *ngx_stream_ha_optout_decide(
    ngx_stream_ha_optout_srv_conf_t *scf);
static void ngx_stream_ha_optout_wrap_session(ngx_stream_session_t *s,
    ngx_stream_ha_optout_srv_conf_t *scf, ngx_http_ha_optout_flag_t *flag,
    ngx_stream_ha_optout_peer_data_t *bp);
static ngx_stream_upstream_rr_peer_data_t *ngx_stream_ha_optout_rrp(
    ngx_stream_ha_optout_peer_data_t *bp);
static ngx_int_t ngx_stream_ha_optout_get_peer(ngx_peer_connection_t *pc,
    void *data);
static size_t ngx_stream_ha_optout_sticky_lookup(
    ngx_stream_ha_optout_sticky_data_t *sd, ngx_str_t *key, u_char *server);
static ngx_int_t ngx_stream_ha_optout_get_balanced(ngx_peer_connection_t *pc,
    ngx_stream_ha_optout_peer_data_t *bp,
    ngx_stream_upstream_rr_peer_data_t *rrp, ngx_str_t *key);
static void ngx_stream_ha_optout_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static void ngx_stream_ha_optout_notify(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t type);
static ngx_int_t ngx_stream_ha_optout_select(ngx_peer_connection_t *pc,
    ngx_stream_ha_optout_peer_data_t *bp,
    ngx_stream_upstream_rr_peer_data_t *rrp, u_char *name, size_t len,
    ngx_http_ha_optout_slot_t **slotp);
static void ngx_stream_ha_optout_take(ngx_peer_connection_t *pc,
    ngx_stream_upstream_rr_peer_data_t *rrp,
    ngx_stream_upstream_rr_peers_t *list, ngx_stream_upstream_rr_peer_t *peer,
    ngx_uint_t i);
static ngx_int_t ngx_stream_ha_optout_resolve(
    ngx_stream_ha_optout_peer_data_t *bp,
    ngx_stream_upstream_rr_peer_data_t *rrp, u_char *name, size_t len,
    ngx_http_ha_optout_slot_t **slotp);
static ngx_http_ha_optout_cache_t *ngx_stream_ha_optout_cache_make(
    ngx_stream_ha_optout_srv_conf_t *scf);
static ngx_int_t ngx_stream_ha_optout_find_peer(void *conf, u_char *name,
    size_t len, ngx_uint_t *down, ngx_uint_t *backup);
static ngx_int_t ngx_stream_ha_optout_peer_views(void *conf,
    ngx_array_t *views);
#if (NGX_STREAM_SSL)
static ngx_int_t ngx_stream_ha_optout_set_session(ngx_peer_connection_t *pc,
    void *data);
static void ngx_stream_ha_optout_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif


static ngx_command_t  ngx_stream_ha_optout_commands[] = {

    { ngx_string("ha_optout"),
      NGX_STREAM_UPS_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_stream_ha_optout,
      NGX_STREAM_SRV_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_stream_module_t  ngx_stream_ha_optout_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_stream_ha_optout_postconfiguration, /* postconfiguration */

    ngx_stream_ha_optout_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_stream_ha_optout_create_srv_conf,  /* create server configuration */
    NULL                                   /* merge server configuration */
};


ngx_module_t  ngx_stream_ha_optout_module = {
    NGX_MODULE_V1,
    &ngx_stream_ha_optout_module_ctx,      /* module context */
    ngx_stream_ha_optout_commands,         /* module directives */
    NGX_STREAM_MODULE,                     /* module type */
    NULL,                                  /* init master */
    ngx_stream_ha_optout_init_module,      /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_stream_ha_optout_create_main_conf(ngx_conf_t *cf)
{
    ngx_stream_ha_optout_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_ha_optout_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&smcf->upstreams, cf->pool, 4,
                       sizeof(ngx_stream_ha_optout_srv_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return smcf;
}


static void *
ngx_stream_ha_optout_create_srv_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_stream_ha_optout_srv_conf_t));
}


/*
 * "ha_optout [sticky_key=$var];" inside stream upstream {}
 *
 * Longer than a screen and a half: each refusal of the directive (place,
 * arguments, balancers it cannot wrap, name length) is a message of its
 * own, checked before the balancer is wrapped, as the http twin does.
 */

static char *
ngx_stream_ha_optout(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_ha_optout_srv_conf_t *scf = conf;

    ngx_str_t                            *value, v;
    ngx_stream_ha_optout_srv_conf_t     **slot;
    ngx_stream_ha_optout_main_conf_t     *smcf;
    ngx_stream_compile_complex_value_t    ccv;

    if (scf->enabled) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strncmp(value[1].data, "selector=", 9) == 0
            || ngx_strncmp(value[1].data, "pin_selector=", 13) == 0)
        {
            /* the http twin has it; name what stream has instead */
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\": selectors are "
                               "http only (a TCP connection has no request "
                               "header to select on); \"ha_optout\" in "
                               "stream takes only \"sticky_key=$var\" "
                               "(default $remote_addr), and a pin holds "
                               "every new connection", &value[1]);
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[1].data, "sticky_key=", 11) != 0
            || value[1].len == 11)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\": \"ha_optout\" "
                               "in stream takes only \"sticky_key=$var\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }

        v.data = value[1].data + 11;
        v.len = value[1].len - 11;

        scf->sticky_key = ngx_palloc(cf->pool,
                                     sizeof(ngx_stream_complex_value_t));
        if (scf->sticky_key == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_stream_compile_complex_value_t));
        ccv.cf = cf;
        ccv.value = &v;
        ccv.complex_value = scf->sticky_key;

        if (ngx_stream_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    scf->uscf = ngx_stream_conf_get_module_srv_conf(cf,
                                                    ngx_stream_upstream_module);

#if (nginx_version >= 1031000)
    {
    void  *ltcf;

    /*
     * least_time (1.31) keeps its own free: the wrap would step aside at
     * run time and a pin would be shown but not act; its server conf
     * starts with the mode, unset until the directive is seen
     */

    ltcf = ngx_http_ha_optout_other_srv_conf(cf,
                        ((ngx_stream_conf_ctx_t *) cf->ctx)->srv_conf,
                        "ngx_stream_upstream_least_time_module");

    if (ltcf && *(ngx_uint_t *) ltcf != NGX_CONF_UNSET_UINT) {
        return "does not work with \"least_time\": a pin could not act "
               "on it; use least_conn, hash or random";
    }
    }
#endif

    if (scf->uscf->host.len + sizeof("stream:") > NGX_HA_OPTOUT_NAME_LEN) {
        return "names an upstream too long for ha_optout";
    }

    scf->enabled = 1;
    scf->file = cf->conf_file->file.name;
    scf->line = cf->conf_file->line;
    scf->original_init_upstream = scf->uscf->peer.init_upstream
                                  ? scf->uscf->peer.init_upstream
                                  : ngx_stream_upstream_init_round_robin;
    scf->uscf->peer.init_upstream = ngx_stream_ha_optout_init_upstream;

    smcf = ngx_stream_conf_get_module_main_conf(cf,
                                                ngx_stream_ha_optout_module);

    slot = ngx_array_push(&smcf->upstreams);
    if (slot == NULL) {
        return NGX_CONF_ERROR;
    }

    *slot = scf;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_stream_ha_optout_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                         i;
    ngx_stream_ha_optout_srv_conf_t  **scfp;
    ngx_http_ha_optout_main_conf_t    *hmcf;
    ngx_stream_ha_optout_main_conf_t  *smcf;

    smcf = ngx_stream_conf_get_module_main_conf(cf,
                                                ngx_stream_ha_optout_module);
    scfp = smcf->upstreams.elts;

    if (smcf->upstreams.nelts == 0) {
        return NGX_OK;
    }

    /* "nginx -t" catches a missing zone when http {} came first */

    hmcf = ngx_http_cycle_get_module_main_conf(cf->cycle,
                                               ngx_http_ha_optout_module);

    if (cf->cycle->conf_ctx[ngx_http_module.index]
        && (hmcf == NULL || hmcf->shm_zone == NULL))
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "ha_optout: \"ha_optout\" in stream upstream \"%V\" "
                      "needs \"ha_optout_zone\" in http {} in %V:%ui",
                      &scfp[0]->uscf->host, &scfp[0]->file, scfp[0]->line);
        return NGX_ERROR;
    }

    for (i = 0; i < smcf->upstreams.nelts; i++) {
        if (!scfp[i]->wrapped) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "ha_optout: \"ha_optout\" in stream upstream "
                          "\"%V\" is overridden by a balancer directive "
                          "after it; put \"ha_optout\" after the balancer "
                          "in %V:%ui", &scfp[i]->uscf->host, &scfp[i]->file,
                          scfp[i]->line);
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * Both http {} and stream {} are parsed and the zone exists by now,
 * whatever their order in nginx.conf: register the stream upstreams with
 * the http side, which owns the zone and the admin API.
 */

static ngx_int_t
ngx_stream_ha_optout_init_module(ngx_cycle_t *cycle)
{
    ngx_int_t                          rc;
    ngx_uint_t                         i, held;
    ngx_stream_ha_optout_srv_conf_t  **scfp;
    ngx_http_ha_optout_main_conf_t    *hmcf;
    ngx_stream_ha_optout_main_conf_t  *smcf;

    smcf = ngx_stream_cycle_get_module_main_conf(cycle,
                                                 ngx_stream_ha_optout_module);

    if (smcf == NULL || smcf->upstreams.nelts == 0) {
        return NGX_OK;
    }

    hmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_ha_optout_module);

    /*
     * failing here would make a running master exit(1) on reload: the
     * stream upstreams then just stay highly available, said loudly
     */

    if (hmcf == NULL || hmcf->shm_zone == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "ha_optout: \"ha_optout\" in stream {} needs "
                      "\"ha_optout_zone\" in http {}; stream upstreams "
                      "ignore opt-outs");
        return NGX_OK;
    }

    scfp = smcf->upstreams.elts;
    held = 0;

    for (i = 0; i < smcf->upstreams.nelts; i++) {

        rc = ngx_stream_ha_optout_register(cycle, hmcf, smcf, scfp[i], held);

        if (rc == NGX_ERROR) {
            /* out of memory: the rest stay highly available */
            return NGX_OK;
        }

        if (rc == NGX_OK) {
            held++;
        }
    }

    return NGX_OK;
}


/*
 * One stream upstream registered as "stream:NAME" with its record in the
 * zone: NGX_OK, NGX_DECLINED (the zone has no room for it: said, and it
 * ignores opt-outs), NGX_ERROR (no memory)
 */

static ngx_int_t
ngx_stream_ha_optout_register(ngx_cycle_t *cycle,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_stream_ha_optout_main_conf_t *smcf,
    ngx_stream_ha_optout_srv_conf_t *scf, ngx_uint_t held)
{
    u_char                         *p;
    ngx_str_t                       name;
    ngx_uint_t                      j, k;
    ngx_stream_upstream_server_t   *server;
    ngx_http_ha_optout_srv_conf_t  *hscf, **slot;

    name.len = sizeof("stream:") - 1 + scf->uscf->host.len;
    name.data = ngx_pnalloc(cycle->pool, name.len);
    hscf = ngx_pcalloc(cycle->pool, sizeof(ngx_http_ha_optout_srv_conf_t));
    if (name.data == NULL || hscf == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(name.data, "stream:", sizeof("stream:") - 1);
    ngx_memcpy(p, scf->uscf->host.data, scf->uscf->host.len);

    hscf->enabled = 1;
    hscf->wrapped = 1;
    hscf->name = name;
    hscf->conf_file = scf->file;
    hscf->conf_line = scf->line;
    hscf->generation = (ngx_atomic_uint_t) -1;
    hscf->stream_conf = scf;
    hscf->find_peer = ngx_stream_ha_optout_find_peer;
    hscf->peer_views = ngx_stream_ha_optout_peer_views;

    hscf->rec = ngx_http_ha_optout_rec_attach(hmcf->shm_zone, &name);
    if (hscf->rec == NULL) {
        ngx_stream_ha_optout_zone_small(cycle, hmcf, smcf, &name, held);
        return NGX_DECLINED;
    }

    if (scf->uscf->servers) {
        server = scf->uscf->servers->elts;

        for (j = 0; j < scf->uscf->servers->nelts; j++) {
            for (k = 0; k < server[j].naddrs; k++) {
                ngx_http_ha_optout_rec_add_server(hscf->rec,
                                                  &server[j].addrs[k].name);
            }
        }
    }

    slot = ngx_array_push(&hmcf->upstreams);
    if (slot == NULL) {
        return NGX_ERROR;
    }

    *slot = hscf;
    scf->hscf = hscf;

    return NGX_OK;
}


/* the zone has no room for a stream upstream: what it takes, said */

static void
ngx_stream_ha_optout_zone_small(ngx_cycle_t *cycle,
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_stream_ha_optout_main_conf_t *smcf, ngx_str_t *name, ngx_uint_t held)
{
    size_t  need;

    need = ngx_http_ha_optout_zone_need(hmcf->shm_zone->shm.size,
                                        smcf->upstreams.nelts - held);

    ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                  "ha_optout: zone \"%V\" is too small for stream "
                  "upstream \"%V\", which ignores opt-outs: its "
                  "%uzk hold the http upstreams and %ui of the %ui "
                  "stream ones (an upstream takes %uzk); they need "
                  "at least \"ha_optout_zone %V %uzk;\", better "
                  "%uzk (room for tokens' jtis and audit lines)",
                  &hmcf->shm_zone->shm.name, name,
                  hmcf->shm_zone->shm.size / 1024, held,
                  smcf->upstreams.nelts,
                  ngx_http_ha_optout_rec_size() / 1024,
                  &hmcf->shm_zone->shm.name, need / 1024,
                  ngx_http_ha_optout_zone_advice(need) / 1024);
}


static ngx_int_t
ngx_stream_ha_optout_init_upstream(ngx_conf_t *cf,
    ngx_stream_upstream_srv_conf_t *us)
{
    ngx_stream_ha_optout_srv_conf_t  *scf;

    scf = ngx_stream_conf_upstream_srv_conf(us, ngx_stream_ha_optout_module);

    if (scf->original_init_upstream(cf, us) != NGX_OK) {
        return NGX_ERROR;
    }

    scf->original_init_peer = us->peer.init;
    us->peer.init = ngx_stream_ha_optout_init_peer;
    scf->wrapped = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_stream_ha_optout_init_peer(ngx_stream_session_t *s,
    ngx_stream_upstream_srv_conf_t *us)
{
    size_t                             size;
    ngx_stream_upstream_t             *u;
    ngx_http_ha_optout_flag_t         *flag;
    ngx_stream_ha_optout_srv_conf_t   *scf;
    ngx_stream_ha_optout_peer_data_t  *bp;

    scf = ngx_stream_conf_upstream_srv_conf(us, ngx_stream_ha_optout_module);

    /* the no-flag path: one atomic load */

    if (ngx_http_ha_optout_sh->active == 0 || scf->hscf == NULL) {
        return scf->original_init_peer(s, us);
    }

    flag = ngx_stream_ha_optout_decide(scf);

    if (flag == NULL) {
        return scf->original_init_peer(s, us);
    }

    u = s->upstream;

    size = (flag->sticky && flag->pin_len == 0)
           ? sizeof(ngx_stream_ha_optout_sticky_data_t)
           : sizeof(ngx_stream_ha_optout_peer_data_t);

    /*
     * one allocation for our data and round robin's: its init_peer takes
     * the peer data it finds (hash and others make their own, which then
     * is used instead)
     */

    bp = NULL;

    if (u->peer.data == NULL) {
        bp = ngx_palloc(s->connection->pool, size);
        if (bp == NULL) {
            return NGX_ERROR;
        }

        u->peer.data = &bp->u.rr;
    }

    if (scf->original_init_peer(s, us) != NGX_OK) {
        return NGX_ERROR;
    }

    if (u->peer.free != ngx_stream_upstream_free_round_robin_peer) {
        return NGX_OK;
    }

    if (bp == NULL) {
        bp = ngx_palloc(s->connection->pool, size);
        if (bp == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_stream_ha_optout_wrap_session(s, scf, flag, bp);

    return NGX_OK;
}


/*
 * The flag that acts on this upstream's sessions, or NULL: what
 * ngx_http_ha_optout_acting() answers, asked once per zone generation and
 * second instead of per session.  The generation is read before the
 * view is refreshed: a change in between leaves a decision that the next
 * session makes again.
 */

static ngx_inline ngx_http_ha_optout_flag_t *
ngx_stream_ha_optout_decide(ngx_stream_ha_optout_srv_conf_t *scf)
{
    time_t                      now;
    ngx_atomic_uint_t           generation;
    ngx_http_ha_optout_flag_t  *flag;

    now = ngx_time();
    generation = ngx_http_ha_optout_sh->generation;

    if (generation == scf->generation && now == scf->now) {
        return scf->flag;
    }

    flag = ngx_http_ha_optout_acting(scf->hscf, now);

    if (flag && !(flag->no_failover || flag->pin_len || flag->sticky)) {
        flag = NULL;
    }

    scf->generation = generation;
    scf->now = now;
    scf->flag = flag;
    scf->pin_slot = NULL;

    return flag;
}


/* the session's get and free wrapped, see ngx_stream_ha_optout_peer_data_t */

static ngx_inline void
ngx_stream_ha_optout_wrap_session(ngx_stream_session_t *s,
    ngx_stream_ha_optout_srv_conf_t *scf, ngx_http_ha_optout_flag_t *flag,
    ngx_stream_ha_optout_peer_data_t *bp)
{
    ngx_stream_upstream_t               *u = s->upstream;
    ngx_stream_ha_optout_sticky_data_t  *sd;

    /* every field is set here: no zeroing, no copy of the flag */

    bp->scf = scf;
    bp->original_get_peer = u->peer.get;

    bp->own = (u->peer.data == (void *) &bp->u.rr);
    bp->pin = (flag->pin_len != 0);
    bp->no_failover = flag->no_failover;
    bp->sticky = flag->sticky && !bp->pin;
    bp->retry = (u->peer.tries > 1);
    bp->counted = 0;

    if (bp->sticky) {
        sd = (ngx_stream_ha_optout_sticky_data_t *) bp;
        sd->session = s;
        sd->ident = ngx_http_ha_optout_flag_ident(flag);
    }

    if (!bp->own) {
        bp->u.other.rrp = u->peer.data;
        bp->u.other.notify = u->peer.notify;

        u->peer.data = bp;

        if (u->peer.notify) {
            u->peer.notify = ngx_stream_ha_optout_notify;
        }

#if (NGX_STREAM_SSL)
        bp->u.other.set_session = u->peer.set_session;
        bp->u.other.save_session = u->peer.save_session;
        u->peer.set_session = ngx_stream_ha_optout_set_session;
        u->peer.save_session = ngx_stream_ha_optout_save_session;
#endif
    }

    u->peer.get = ngx_stream_ha_optout_get_peer;
    u->peer.free = ngx_stream_ha_optout_free_peer;
    u->peer.tries = 1;
}


/* round robin's data: in our block, or the balancer's own */

static ngx_inline ngx_stream_upstream_rr_peer_data_t *
ngx_stream_ha_optout_rrp(ngx_stream_ha_optout_peer_data_t *bp)
{
    return bp->own ? &bp->u.rr : bp->u.other.rrp;
}


static ngx_int_t
ngx_stream_ha_optout_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_stream_ha_optout_peer_data_t  *bp = data;

    size_t                               len;
    u_char                               server[NGX_HA_OPTOUT_NAME_LEN];
    ngx_int_t                            rc;
    ngx_str_t                            key;
    ngx_http_ha_optout_flag_t           *flag;
    ngx_http_ha_optout_slot_t           *slot;
    ngx_stream_upstream_rr_peer_data_t  *rrp;

    rrp = ngx_stream_ha_optout_rrp(bp);

    if (bp->pin) {
        /* the decision of the init_peer just before, see peer_data_t */
        flag = bp->scf->flag;

        rc = ngx_stream_ha_optout_select(pc, bp, rrp, flag->pin,
                                         flag->pin_len, &slot);

        if (rc == NGX_OK && !bp->counted) {
            ngx_http_ha_optout_count_pinned(bp->scf->hscf->rec, pc->name,
                                            slot, rrp->current);
            bp->counted = 1;
        }

        return rc;
    }

    key.len = 0;

    len = bp->sticky
          ? ngx_stream_ha_optout_sticky_lookup(
                (ngx_stream_ha_optout_sticky_data_t *) bp, &key, server)
          : 0;

    if (len == (size_t) NGX_ERROR) {
        return NGX_ERROR;
    }

    if (len) {
        rc = ngx_stream_ha_optout_select(pc, bp, rrp, server, len, NULL);
        if (rc == NGX_OK) {
            return NGX_OK;
        }
    }

    return ngx_stream_ha_optout_get_balanced(pc, bp, rrp, &key);
}


/*
 * The client's key and its binding, here rather than in init_peer: the
 * one get of the session follows it in the same call.  As the http
 * twin's: the bound server's name length into server (0: not bound, or
 * no key, which then is balanced without failover), NGX_ERROR
 */

static ngx_inline size_t
ngx_stream_ha_optout_sticky_lookup(ngx_stream_ha_optout_sticky_data_t *sd,
    ngx_str_t *key, u_char *server)
{
    ngx_stream_session_t             *s = sd->session;
    ngx_stream_ha_optout_srv_conf_t  *scf = sd->peer.scf;

    if (scf->sticky_key) {
        if (ngx_stream_complex_value(s, scf->sticky_key, key) != NGX_OK) {
            return (size_t) NGX_ERROR;
        }

    } else {
        *key = s->connection->addr_text;
    }

    if (key->len == 0) {
        /* no key, nothing to keep: balanced, without failover */
        sd->peer.sticky = 0;
        return 0;
    }

    return ngx_http_ha_optout_sticky_bound(scf->hscf->rec, sd->ident, key,
                                           server);
}


/* round robin's choice, kept to the primary servers while failover is off */

static ngx_inline ngx_int_t
ngx_stream_ha_optout_get_balanced(ngx_peer_connection_t *pc,
    ngx_stream_ha_optout_peer_data_t *bp,
    ngx_stream_upstream_rr_peer_data_t *rrp, ngx_str_t *key)
{
    ngx_int_t  rc;

    rc = bp->original_get_peer(pc, bp->own ? (void *) bp : rrp);

    if (rc != NGX_OK) {
        return rc;
    }

    if (bp->no_failover && rrp->peers != bp->scf->uscf->peer.data) {
        ngx_http_ha_optout_held_backup(pc->log, bp->scf->hscf,
                                       &rrp->current->name);

        ngx_stream_upstream_free_round_robin_peer(pc, rrp, 0);
        pc->sockaddr = NULL;
        pc->tries = 0;

        return NGX_BUSY;
    }

    if (bp->sticky) {
        ngx_http_ha_optout_sticky_set(bp->scf->hscf->rec,
                                      ((ngx_stream_ha_optout_sticky_data_t *)
                                       bp)->ident, key, pc->name);
    }

    return NGX_OK;
}


static void
ngx_stream_ha_optout_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_stream_ha_optout_peer_data_t  *bp = data;

    ngx_stream_upstream_rr_peer_data_t  *rrp;

    rrp = ngx_stream_ha_optout_rrp(bp);

    if ((state & NGX_PEER_FAILED) && bp->retry && !pc->cached) {
        ngx_http_ha_optout_held_retry(pc->log, bp->scf->hscf, pc->name,
                                      bp->pin, bp->no_failover);
    }

    if (bp->pin || bp->no_failover) {
        state &= ~NGX_PEER_FAILED;
    }

#if (NGX_HA_OPTOUT_STREAM_REFS)
    /* 1 when the get took its reference (t/compat_refs.t reads this) */
    ngx_log_debug2(NGX_LOG_DEBUG_STREAM, pc->log, 0,
                   "ha_optout: free peer %V refs:%ui", pc->name,
                   rrp->current ? rrp->current->refs : 0);
#endif

    ngx_stream_upstream_free_round_robin_peer(pc, rrp, state);

    pc->tries = 0;
}


/* a balancer's own notify (its data is not ours): wrapped only if set */

static void
ngx_stream_ha_optout_notify(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t type)
{
    ngx_stream_ha_optout_peer_data_t  *bp = data;

    bp->u.other.notify(pc, bp->u.other.rrp, type);
}


/*
 * As ngx_http_ha_optout_select(): a server by name, *slotp (when given)
 * the resolve cache's slot that found it, else NULL.  Longer than a
 * screen and a half, as its http twin: the cache, the walk of both lists
 * and the take (lock, down, drain, tried bit, conns) read as one step
 * under one lock, the way round robin's get reads.
 */

static ngx_int_t
ngx_stream_ha_optout_select(ngx_peer_connection_t *pc,
    ngx_stream_ha_optout_peer_data_t *bp,
    ngx_stream_upstream_rr_peer_data_t *rrp, u_char *name, size_t len,
    ngx_http_ha_optout_slot_t **slotp)
{
    ngx_uint_t                       i;
    ngx_http_ha_optout_slot_t       *slot;
    ngx_stream_upstream_rr_peer_t   *peer;
    ngx_stream_upstream_rr_peers_t  *list, *primary;

    pc->cached = 0;
    pc->connection = NULL;

    if (ngx_stream_ha_optout_resolve(bp, rrp, name, len, &slot) == NGX_OK) {
        /* the server by name without a walk: its list is locked */

        list = slot->list;
        peer = slot->peer;

        if (!peer->down) {
            if (slotp) {
                *slotp = slot;
            }

            ngx_stream_ha_optout_take(pc, rrp, list, peer, slot->index);

            return NGX_OK;
        }

        /* down: the walk, which then tries the backup list, as before */

        ngx_stream_upstream_rr_peers_unlock(list);
    }

    if (slotp) {
        *slotp = NULL;
    }

    primary = bp->scf->uscf->peer.data;

    for (list = primary; list; list = (list == primary) ? primary->next
                                                        : NULL)
    {
        ngx_stream_upstream_rr_peers_wlock(list);

#if (NGX_HA_OPTOUT_STREAM_REFS)
        if (list->config && rrp->config != *list->config) {
            ngx_stream_upstream_rr_peers_unlock(list);

            ngx_log_error(NGX_LOG_WARN, pc->log, 0,
                          "ha_optout: servers of upstream \"%V\" changed "
                          "during the session, not picking one by hand",
                          &bp->scf->hscf->name);

            pc->name = primary->name;
            return NGX_BUSY;
        }
#endif

        for (peer = list->peer, i = 0; peer; peer = peer->next, i++) {

            if (!ngx_http_ha_optout_named(&peer->name, &peer->server,
                                          name, len))
            {
                continue;
            }

            if (peer->down) {
                break;
            }

            ngx_stream_ha_optout_take(pc, rrp, list, peer, i);

            return NGX_OK;
        }

        ngx_stream_upstream_rr_peers_unlock(list);
    }

    ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                  "ha_optout: server \"%*s\" of upstream \"%V\" is not "
                  "usable", len, name, &bp->scf->hscf->name);

    pc->name = primary->name;

    return NGX_BUSY;
}


/* the server chosen, taken as round robin takes it; its list unlocked */

static ngx_inline void
ngx_stream_ha_optout_take(ngx_peer_connection_t *pc,
    ngx_stream_upstream_rr_peer_data_t *rrp,
    ngx_stream_upstream_rr_peers_t *list, ngx_stream_upstream_rr_peer_t *peer,
    ngx_uint_t i)
{
    ngx_http_ha_optout_tried(rrp->tried, i);

    rrp->peers = list;
    rrp->current = peer;

    pc->sockaddr = peer->sockaddr;
    pc->socklen = peer->socklen;
    pc->name = &peer->name;

    peer->conns++;

#if (NGX_HA_OPTOUT_STREAM_REFS)
    /* round robin's free drops one */
    ngx_stream_upstream_rr_peer_ref(list, peer);
#endif

    ngx_stream_upstream_rr_peers_unlock(list);
}


/*
 * As ngx_http_ha_optout_resolve(), for stream peers (same cache code):
 * NGX_OK with the slot's list write-locked.  The pin's slot is looked up
 * once per decision (scf->pin_slot), a sticky binding's every time.
 */

static ngx_int_t
ngx_stream_ha_optout_resolve(ngx_stream_ha_optout_peer_data_t *bp,
    ngx_stream_upstream_rr_peer_data_t *rrp, u_char *name, size_t len,
    ngx_http_ha_optout_slot_t **slotp)
{
    ngx_http_ha_optout_slot_t        *slot;
    ngx_http_ha_optout_cache_t       *cache;
    ngx_stream_ha_optout_srv_conf_t  *scf;
    ngx_stream_upstream_rr_peers_t   *list;

    scf = bp->scf;

    slot = bp->pin ? scf->pin_slot : NULL;

    if (slot == NULL) {
        cache = ngx_http_ha_optout_cache_get(scf->hscf);

        if (cache == NULL || cache->primary != scf->uscf->peer.data) {
            cache = ngx_stream_ha_optout_cache_make(scf);
            if (cache == NULL) {
                return NGX_DECLINED;
            }
        }

        slot = ngx_http_ha_optout_cache_find(cache, name, len);
        if (slot == NULL) {
            return NGX_DECLINED;
        }

        if (bp->pin) {
            scf->pin_slot = slot;
        }
    }

    list = slot->list;

    ngx_stream_upstream_rr_peers_wlock(list);

#if (NGX_HA_OPTOUT_STREAM_CONFIG)
    cache = ngx_http_ha_optout_cache_get(scf->hscf);

    if (list->config
        && (*list->config != cache->config || rrp->config != cache->config))
    {
        ngx_stream_upstream_rr_peers_unlock(list);

        if (*list->config != cache->config) {
            ngx_http_ha_optout_cache_drop(scf->hscf);
            scf->pin_slot = NULL;
        }

        return NGX_DECLINED;
    }
#endif

    *slotp = slot;

    return NGX_OK;
}


/* the resolve cache made again from the peer lists; the pin's slot with it */

static ngx_http_ha_optout_cache_t *
ngx_stream_ha_optout_cache_make(ngx_stream_ha_optout_srv_conf_t *scf)
{
    ngx_uint_t                       i, n, config;
    ngx_http_ha_optout_cache_t      *cache;
    ngx_stream_upstream_rr_peer_t   *peer;
    ngx_stream_upstream_rr_peers_t  *list, *primary;

    scf->pin_slot = NULL;

    primary = scf->uscf->peer.data;
    list = primary;

    ngx_stream_upstream_rr_peers_rlock(list);

    n = list->number + (list->next ? list->next->number : 0);
    config = 0;

#if (NGX_HA_OPTOUT_STREAM_CONFIG)
    if (list->config) {
        config = *list->config;
    }
#endif

    cache = ngx_http_ha_optout_cache_new(scf->hscf, list, config, n);

    if (cache == NULL) {
        ngx_stream_upstream_rr_peers_unlock(list);
        return NULL;
    }

    for ( ;; ) {
        for (peer = list->peer, i = 0; peer; peer = peer->next, i++) {
            ngx_http_ha_optout_cache_add(cache, scf->hscf->rec,
                                         &peer->name, &peer->name, list,
                                         peer, i);
            ngx_http_ha_optout_cache_add(cache, scf->hscf->rec,
                                         &peer->server, &peer->name, list,
                                         peer, i);
        }

        ngx_stream_upstream_rr_peers_unlock(list);

        if (list != primary || list->next == NULL) {
            break;
        }

        list = list->next;

        ngx_stream_upstream_rr_peers_rlock(list);
    }

    return cache;
}


#if (NGX_STREAM_SSL)

/* a balancer's own SSL session hooks (its data is not ours) */

static ngx_int_t
ngx_stream_ha_optout_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_stream_ha_optout_peer_data_t  *bp = data;

    return bp->u.other.set_session(pc, bp->u.other.rrp);
}


static void
ngx_stream_ha_optout_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_stream_ha_optout_peer_data_t  *bp = data;

    bp->u.other.save_session(pc, bp->u.other.rrp);
}

#endif


static ngx_int_t
ngx_stream_ha_optout_find_peer(void *conf, u_char *name, size_t len,
    ngx_uint_t *down, ngx_uint_t *backup)
{
    ngx_stream_ha_optout_srv_conf_t *scf = conf;

    ngx_uint_t                     i, j;
    ngx_stream_upstream_server_t  *server;

    if (scf->uscf->servers == NULL) {
        return NGX_DECLINED;
    }

#if (NGX_HA_OPTOUT_STREAM_REFS)

    /* the current addresses of "resolve" servers: see the http twin */

    if (scf->uscf->shm_zone) {
        ngx_int_t                        rc;
        ngx_stream_upstream_rr_peer_t   *peer;
        ngx_stream_upstream_rr_peers_t  *list;

        for (list = scf->uscf->peer.data, j = 0; list; list = list->next, j++)
        {
            ngx_stream_upstream_rr_peers_rlock(list);

            for (peer = list->peer; peer; peer = peer->next) {
                if (!(peer->host
                      && peer->name.len == len
                      && ngx_strncmp(peer->name.data, name, len) == 0))
                {
                    continue;
                }

                rc = ngx_http_ha_optout_peer_found(peer->down, j, down,
                                                   backup);

                ngx_stream_upstream_rr_peers_unlock(list);

                return rc;
            }

            ngx_stream_upstream_rr_peers_unlock(list);
        }
    }

#endif

    server = scf->uscf->servers->elts;

    for (i = 0; i < scf->uscf->servers->nelts; i++) {
        for (j = 0; j < server[i].naddrs; j++) {
            if (ngx_http_ha_optout_named(&server[i].name,
                                         &server[i].addrs[j].name, name, len))
            {
                return ngx_http_ha_optout_peer_found(server[i].down,
                                                     server[i].backup,
                                                     down, backup);
            }
        }
    }

    return NGX_DECLINED;
}


/* the servers of a stream upstream for the status page */

static ngx_int_t
ngx_stream_ha_optout_peer_views(void *conf, ngx_array_t *views)
{
    ngx_stream_ha_optout_srv_conf_t *scf = conf;

    time_t                            now;
    ngx_uint_t                        backup;
    ngx_stream_upstream_rr_peer_t    *peer;
    ngx_stream_upstream_rr_peers_t   *list;
    ngx_http_ha_optout_peer_view_t   *v;

    now = ngx_time();

    for (list = scf->uscf->peer.data, backup = 0;
         list;
         list = list->next, backup = 1)
    {
        ngx_stream_upstream_rr_peers_rlock(list);

        for (peer = list->peer; peer; peer = peer->next) {

            v = ngx_array_push(views);
            if (v == NULL) {
                ngx_stream_upstream_rr_peers_unlock(list);
                return NGX_ERROR;
            }

            ngx_http_ha_optout_peer_view_set(v, peer, backup, now);
        }

        ngx_stream_upstream_rr_peers_unlock(list);
    }

    return NGX_OK;
}
