
/*
 * ngx_ha_optout_module: the upstream peer wrap (model: the keepalive
 * module).  Save the original hooks, wrap, delegate; act only while a flag
 * is set.  The request path reads top to bottom: init_peer -> get -> free.
 * The stream twin (ngx_stream_ha_optout_module.c) has its own copy of the
 * wrap over nginx's stream round-robin peers, a type of their own (see
 * there why); what touches no peer type, both call in peer.c.
 *
 * A little over 1,000 lines: one concern, the request path and its
 * choices (pin, failover off, sticky with its worker copies of the
 * bindings, backup held) read in one file in the order a request meets
 * them; splitting get from select would hide the one lock they share.
 */


#include "ngx_http_ha_optout_module.h"


/* nginx 1.27.3+: "resolve" servers change the peer list at run time */
#if (nginx_version >= 1027003 && NGX_HTTP_UPSTREAM_ZONE)
#define NGX_HA_OPTOUT_HTTP_CONFIG    1
#else
#define NGX_HA_OPTOUT_HTTP_CONFIG    0
#endif

/*
 * nginx 1.27.3+: peers are reference counted (round robin's get takes one,
 * its free drops one) and "resolve" servers may change the server list at
 * run time (peers->config counts the changes).
 */
#if (nginx_version >= 1027003 && NGX_HTTP_UPSTREAM_ZONE)
#define NGX_HA_OPTOUT_HTTP_REFS      1
#else
#define NGX_HA_OPTOUT_HTTP_REFS      0
#endif

/* nginx 1.29.6+: "drain" (down = 8) takes no new clients, keeps sessions */
#if (NGX_HTTP_UPSTREAM_STICKY)
#define NGX_HA_OPTOUT_HTTP_DRAINING  NGX_HTTP_UPSTREAM_DRAINING
#else
#define NGX_HA_OPTOUT_HTTP_DRAINING  0
#endif


typedef struct {
    ngx_http_request_t                *request;
    ngx_http_ha_optout_srv_conf_t     *hscf;
    ngx_http_ha_optout_decision_t     *decision;

    /* the free is round robin's, see init_peer */
    ngx_event_get_peer_pt              original_get_peer;
#if (NGX_HTTP_SSL)
    ngx_event_set_peer_session_pt      original_set_session;
    ngx_event_save_peer_session_pt     original_save_session;
#endif

    ngx_http_upstream_rr_peer_data_t  *rrp;
    ngx_http_upstream_rr_peers_t      *primary;
    ngx_http_upstream_rr_peer_t       *selected;   /* this request only */
    ngx_uint_t                         tries;      /* before we clamped */

    ngx_http_ha_optout_slot_t         *slot;       /* the cache's answer */

    /* round robin's data, in the same allocation (see init_peer) */
    ngx_http_upstream_rr_peer_data_t   rr;
} ngx_http_ha_optout_peer_data_t;


static ngx_int_t ngx_http_ha_optout_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_ha_optout_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static void ngx_http_ha_optout_wrap_request(ngx_http_request_t *r,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_decision_t *d,
    ngx_http_ha_optout_peer_data_t *bp);
static ngx_uint_t ngx_http_ha_optout_one_variable(ngx_conf_t *cf,
    ngx_str_t *value);
static ngx_int_t ngx_http_ha_optout_get_peer(ngx_peer_connection_t *pc,
    void *data);
static ngx_int_t ngx_http_ha_optout_get_sticky(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp);
static ngx_int_t ngx_http_ha_optout_sticky_key(
    ngx_http_ha_optout_peer_data_t *bp, ngx_str_t *key);
static ngx_int_t ngx_http_ha_optout_get_balanced(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, ngx_str_t *key, uint32_t hash);
static void ngx_http_ha_optout_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static ngx_uint_t ngx_http_ha_optout_would_retry(ngx_http_request_t *r);
static ngx_int_t ngx_http_ha_optout_select(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, u_char *name, size_t len,
    ngx_http_upstream_rr_peer_t *want);
static ngx_int_t ngx_http_ha_optout_select_slot(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, ngx_http_ha_optout_slot_t *slot);
static ngx_int_t ngx_http_ha_optout_slot_lock(
    ngx_http_ha_optout_peer_data_t *bp, ngx_http_ha_optout_cache_t *cache,
    ngx_http_upstream_rr_peers_t *list);
static void ngx_http_ha_optout_take(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, ngx_http_upstream_rr_peers_t *list,
    ngx_http_upstream_rr_peer_t *peer, ngx_uint_t i);
static ngx_int_t ngx_http_ha_optout_resolve(ngx_http_ha_optout_peer_data_t *bp,
    u_char *name, size_t len, ngx_http_upstream_rr_peers_t **listp,
    ngx_http_upstream_rr_peer_t **peerp, ngx_uint_t *ip);
static ngx_http_ha_optout_cache_t *ngx_http_ha_optout_cache_make(
    ngx_http_ha_optout_peer_data_t *bp);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_ha_optout_set_session(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_ha_optout_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif


/* called from the "ha_optout" directive inside upstream {} */

char *
ngx_http_ha_optout_wrap(ngx_conf_t *cf, ngx_http_ha_optout_srv_conf_t *hscf)
{
    ngx_http_upstream_srv_conf_t  *uscf = hscf->uscf;

    hscf->original_init_upstream = uscf->peer.init_upstream
                                   ? uscf->peer.init_upstream
                                   : ngx_http_upstream_init_round_robin;

    uscf->peer.init_upstream = ngx_http_ha_optout_init_upstream;

    return NGX_CONF_OK;
}


/* the late wrap of an enrolled upstream, see ngx_http_ha_optout_enroll() */

void
ngx_http_ha_optout_wrap_peer(ngx_http_ha_optout_srv_conf_t *hscf)
{
    hscf->original_init_peer = hscf->uscf->peer.init;
    hscf->uscf->peer.init = ngx_http_ha_optout_init_peer;
}


static ngx_int_t
ngx_http_ha_optout_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_ha_optout_srv_conf_t  *hscf;

    hscf = ngx_http_conf_upstream_srv_conf(us, ngx_http_ha_optout_module);

    if (hscf->original_init_upstream(cf, us) != NGX_OK) {
        return NGX_ERROR;
    }

    hscf->original_init_peer = us->peer.init;
    us->peer.init = ngx_http_ha_optout_init_peer;
    hscf->wrapped = 1;

    if (hscf->sticky_key) {
        hscf->sticky_var = ngx_http_ha_optout_one_variable(cf,
                                                &hscf->sticky_key->value);
    }

    return NGX_OK;
}


/*
 * sticky_key=$name is read as the variable itself, without the complex
 * value's copy into the request pool: its index + 1, or 0
 */

static ngx_uint_t
ngx_http_ha_optout_one_variable(ngx_conf_t *cf, ngx_str_t *value)
{
    size_t      i;
    ngx_int_t   index;
    ngx_str_t   name;

    if (value->len < 2 || value->data[0] != '$') {
        return 0;
    }

    name.data = value->data + 1;
    name.len = value->len - 1;

    for (i = 0; i < name.len; i++) {
        if (!((name.data[i] >= 'a' && name.data[i] <= 'z')
              || (name.data[i] >= 'A' && name.data[i] <= 'Z')
              || (name.data[i] >= '0' && name.data[i] <= '9')
              || name.data[i] == '_'))
        {
            return 0;
        }
    }

    index = ngx_http_get_variable_index(cf, &name);

    return (index == NGX_ERROR) ? 0 : (ngx_uint_t) index + 1;
}


/*
 * The request path's entry: the no-flag exit first (one atomic load),
 * then the decision and the wrap.  Longer than a screen and a half: the
 * order of those steps is what keeps the no-flag path at one load, and
 * it reads best in one place.
 */

static ngx_int_t
ngx_http_ha_optout_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    void                            *ctx;
    ngx_http_upstream_t             *u;
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_http_ha_optout_decision_t   *d;
    ngx_http_ha_optout_peer_data_t  *bp;

    hscf = ngx_http_conf_upstream_srv_conf(us, ngx_http_ha_optout_module);

    /*
     * the no-flag path: one atomic load (a decision another upstream's
     * $ha_optout_<name> left in the request needs no care here: the
     * header filter shows a decision only for the upstream that served)
     */

    if (ngx_http_ha_optout_sh->active == 0 && hscf->config_flag == NULL) {
        return hscf->original_init_peer(r, us);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_ha_optout_module);

    if (ctx && ((ngx_http_ha_optout_decision_t *) ctx)->hscf != hscf) {
        /*
         * another upstream's $ha_optout_<name> was read first (say by
         * proxy_set_header, before the balancer runs): its decision is not
         * this request's, which decide() must make anew
         */
        ngx_http_set_ctx(r, NULL, ngx_http_ha_optout_module);
        ctx = NULL;
    }

    d = ngx_http_ha_optout_decide(r, hscf);
    if (d == NULL) {
        return NGX_ERROR;
    }

    if (!d->active || !(d->pin || d->no_failover || d->sticky)) {
        return hscf->original_init_peer(r, us);
    }

    u = r->upstream;

    /*
     * one allocation for our data and round robin's: its init_peer takes
     * the peer data it finds (hash and others make their own, which then
     * is used instead)
     */

    bp = NULL;

    if (u->peer.data == NULL) {
        bp = ngx_palloc(r->pool, sizeof(ngx_http_ha_optout_peer_data_t));
        if (bp == NULL) {
            return NGX_ERROR;
        }

        u->peer.data = &bp->rr;
    }

    if (hscf->original_init_peer(r, us) != NGX_OK) {
        return NGX_ERROR;
    }

    /* only balancers that keep the round-robin data first */

    if (u->peer.free != ngx_http_upstream_free_round_robin_peer) {
        /* not acting here: no decision shown unless one was made before */
        if (ctx == NULL) {
            ngx_http_set_ctx(r, NULL, ngx_http_ha_optout_module);
        }

        return NGX_OK;
    }

    if (bp == NULL) {
        bp = ngx_palloc(r->pool, sizeof(ngx_http_ha_optout_peer_data_t));
        if (bp == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_http_ha_optout_wrap_request(r, hscf, d, bp);

    return NGX_OK;
}


/* the request's peer hooks wrapped: round robin's data behind ours */

static ngx_inline void
ngx_http_ha_optout_wrap_request(ngx_http_request_t *r,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_http_ha_optout_decision_t *d,
    ngx_http_ha_optout_peer_data_t *bp)
{
    ngx_http_upstream_t  *u = r->upstream;

    /* every field is set here: no zeroing on the request path */

    bp->selected = NULL;
    bp->slot = NULL;

    bp->request = r;
    bp->hscf = hscf;
    bp->decision = d;
    bp->rrp = u->peer.data;
    bp->primary = bp->rrp->peers;
    bp->original_get_peer = u->peer.get;
    bp->tries = u->peer.tries;

    u->peer.data = bp;
    u->peer.get = ngx_http_ha_optout_get_peer;
    u->peer.free = ngx_http_ha_optout_free_peer;
    u->peer.tries = 1;

#if (NGX_HTTP_SSL)
    bp->original_set_session = u->peer.set_session;
    bp->original_save_session = u->peer.save_session;
    u->peer.set_session = ngx_http_ha_optout_set_session;
    u->peer.save_session = ngx_http_ha_optout_save_session;
#endif
}


static ngx_int_t
ngx_http_ha_optout_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_ha_optout_peer_data_t  *bp = data;

    ngx_int_t                       rc;

    if (bp->decision->pin) {
        rc = ngx_http_ha_optout_select(pc, bp, bp->decision->pin_name.data,
                                       bp->decision->pin_name.len, NULL);

        if (rc == NGX_OK && bp->selected == NULL) {
            ngx_http_ha_optout_count_pinned(bp->hscf->rec, pc->name,
                                            bp->slot, bp->rrp->current);
        }

        bp->selected = bp->rrp->current;
        return rc;
    }

    if (bp->selected) {
        /*
         * a cached keepalive connection failed and nginx granted one more
         * try: reconnect to the same server, which is not a failover
         */
        return ngx_http_ha_optout_select(pc, bp, NULL, 0, bp->selected);
    }

    /*
     * the first get of the request, in the call that ran init_peer: a
     * sticky client's key and binding are looked up here, not kept
     */

    if (bp->decision->sticky) {
        return ngx_http_ha_optout_get_sticky(pc, bp);
    }

    return ngx_http_ha_optout_get_balanced(pc, bp, NULL, 0);
}


/*
 * A sticky client: back to its server, whatever its health, or balanced
 * and bound.  The worker's copy of the binding (sticky.c) answers while
 * the zone's change counter says it is the zone's; else, or when its
 * server cannot be taken from the copy, the zone's table under its mutex.
 */

static ngx_int_t
ngx_http_ha_optout_get_sticky(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp)
{
    size_t                            len;
    u_char                            server[NGX_HA_OPTOUT_NAME_LEN];
    uint32_t                          hash;
    ngx_int_t                         rc;
    ngx_str_t                         key;
    ngx_http_ha_optout_slot_t        *slot;
    ngx_http_ha_optout_srv_conf_t    *hscf;
    ngx_http_ha_optout_sticky_ref_t   ref;

    hscf = bp->hscf;

    if (ngx_http_ha_optout_sticky_key(bp, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    if (key.len == 0) {
        /* no key: balanced, without failover, not bound */
        bp->decision->sticky = 0;
        return ngx_http_ha_optout_get_balanced(pc, bp, NULL, 0);
    }

    /* the key is cut to what the zone's table keeps */

    if (key.len > NGX_HA_OPTOUT_STICKY_KEY) {
        key.len = NGX_HA_OPTOUT_STICKY_KEY;
    }

    hash = ngx_crc32_short(key.data, key.len);

    slot = ngx_http_ha_optout_wcache_find(hscf, bp->decision->ident, &key,
                                          hash);

    if (slot && ngx_http_ha_optout_select_slot(pc, bp, slot) == NGX_OK) {
        bp->selected = bp->rrp->current;
        return NGX_OK;
    }

    len = ngx_http_ha_optout_sticky_get_ref(hscf->rec, bp->decision->ident,
                                            &key, hash, server, &ref);
    if (len) {
        /* a known client: back to its server, whatever its health */

        rc = ngx_http_ha_optout_select(pc, bp, server, len, NULL);
        if (rc == NGX_OK) {
            bp->selected = bp->rrp->current;

            slot = (bp->slot && bp->slot->peer == bp->rrp->current)
                   ? bp->slot : NULL;

            ngx_http_ha_optout_wcache_keep(hscf, bp->decision->ident, &key,
                                           hash, &ref, slot);
            return NGX_OK;
        }

        /* the server left the configuration: balance and bind anew */
    }

    return ngx_http_ha_optout_get_balanced(pc, bp, &key, hash);
}


/*
 * The client key: $remote_addr unless sticky_key=; one variable is read
 * as it is, without a copy
 */

static ngx_int_t
ngx_http_ha_optout_sticky_key(ngx_http_ha_optout_peer_data_t *bp,
    ngx_str_t *key)
{
    ngx_http_variable_value_t      *vv;
    ngx_http_ha_optout_srv_conf_t  *hscf = bp->hscf;

    if (hscf->sticky_var) {
        vv = ngx_http_get_flushed_variable(bp->request, hscf->sticky_var - 1);

        if (vv == NULL || vv->not_found) {
            key->len = 0;
            key->data = NULL;

        } else {
            key->len = vv->len;
            key->data = vv->data;
        }

        return NGX_OK;
    }

    if (hscf->sticky_key) {
        return ngx_http_complex_value(bp->request, hscf->sticky_key, key);
    }

    *key = bp->request->connection->addr_text;

    return NGX_OK;
}


/*
 * Round robin's choice, kept to the primary servers while failover is
 * off; a sticky client is bound to it
 */

static ngx_inline ngx_int_t
ngx_http_ha_optout_get_balanced(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, ngx_str_t *key, uint32_t hash)
{
    ngx_int_t                         rc;
    ngx_http_ha_optout_sticky_ref_t   ref;

    rc = bp->original_get_peer(pc, bp->rrp);

    if (rc != NGX_OK) {
        return rc;
    }

    if (bp->decision->no_failover && bp->rrp->peers != bp->primary) {
        /* no new switch to backup servers while failover is off */

        ngx_http_ha_optout_held_backup(pc->log, bp->hscf,
                                       &bp->rrp->current->name);

        ngx_http_upstream_free_round_robin_peer(pc, bp->rrp, 0);
        pc->sockaddr = NULL;
        pc->tries = 0;

        return NGX_BUSY;
    }

    bp->selected = bp->rrp->current;

    if (bp->decision->sticky) {
        ngx_http_ha_optout_sticky_set_ref(bp->hscf->rec, bp->decision->ident,
                                          key, hash, pc->name, &ref);

        /* its server's slot is learnt by the next locked lookup */
        ngx_http_ha_optout_wcache_keep(bp->hscf, bp->decision->ident, key,
                                       hash, &ref, NULL);
    }

    return NGX_OK;
}


static void
ngx_http_ha_optout_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_ha_optout_peer_data_t  *bp = data;

    ngx_http_ha_optout_decision_t   *d = bp->decision;

    /* a stale cached keepalive connection is retried on the same server */

    if (bp->tries > 1 && !pc->cached
        && ((state & NGX_PEER_FAILED)
            || ngx_http_ha_optout_would_retry(bp->request)))
    {
        ngx_http_ha_optout_held_retry(pc->log, bp->hscf, pc->name, d->pin,
                                      d->no_failover);
    }

    /*
     * errors open no retry; with pin or failover off they do not eject the
     * server either, while sticky alone lets them count, so that new
     * clients avoid a failing server
     */

    if (d->pin || d->no_failover) {
        state &= ~NGX_PEER_FAILED;
    }

#if (NGX_HA_OPTOUT_HTTP_REFS)
    /* 1 when the get took its reference (t/compat_refs.t reads this) */
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "ha_optout: free peer %V refs:%ui", pc->name,
                   bp->rrp->current ? bp->rrp->current->refs : 0);
#endif

    ngx_http_upstream_free_round_robin_peer(pc, bp->rrp, state);

    pc->tries = 0;
}


/*
 * An answer that proxy_next_upstream would have retried (http_503 ...):
 * with one try nginx passes it on without reporting a failure, so tell
 * it from the status.
 */

static ngx_uint_t
ngx_http_ha_optout_would_retry(ngx_http_request_t *r)
{
    ngx_uint_t            mask;
    ngx_http_upstream_t  *u;

    u = r->upstream;

    if (u == NULL || u->conf == NULL) {
        return 0;
    }

    switch (u->headers_in.status_n) {
    case NGX_HTTP_INTERNAL_SERVER_ERROR:
        mask = NGX_HTTP_UPSTREAM_FT_HTTP_500;
        break;
    case NGX_HTTP_BAD_GATEWAY:
        mask = NGX_HTTP_UPSTREAM_FT_HTTP_502;
        break;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        mask = NGX_HTTP_UPSTREAM_FT_HTTP_503;
        break;
    case NGX_HTTP_GATEWAY_TIME_OUT:
        mask = NGX_HTTP_UPSTREAM_FT_HTTP_504;
        break;
    case NGX_HTTP_FORBIDDEN:
        mask = NGX_HTTP_UPSTREAM_FT_HTTP_403;
        break;
    case NGX_HTTP_NOT_FOUND:
        mask = NGX_HTTP_UPSTREAM_FT_HTTP_404;
        break;
    case NGX_HTTP_TOO_MANY_REQUESTS:
        mask = NGX_HTTP_UPSTREAM_FT_HTTP_429;
        break;
    default:
        return 0;
    }

    return (u->conf->next_upstream & mask) == mask;
}


/*
 * Chooses a server by hand: by name (the pin, or a sticky client's server)
 * or the one this request already used.  The pinned server is taken even
 * while ejected by max_fails or at max_conns; its fails/checked are not
 * touched, so a pin neither revives nor extends an ejection.  A "down"
 * server is never taken; a draining one ("drain", 1.29.6+) takes no pin
 * (new traffic) but keeps its sticky clients and this request's reconnect,
 * as nginx's own sticky does.  The peer is taken as round robin takes it:
 * conns, and in 1.27.3+ a reference that round robin's free drops; when a
 * "resolve" server changed the list since init_peer, nothing is picked.
 */

static ngx_int_t
ngx_http_ha_optout_select(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, u_char *name, size_t len,
    ngx_http_upstream_rr_peer_t *want)
{
    ngx_uint_t                      i, down;
    ngx_http_upstream_rr_peer_t    *peer;
    ngx_http_upstream_rr_peers_t   *list;

    pc->cached = 0;
    pc->connection = NULL;

    /* a pin is new traffic; a sticky client or a reconnect is not */
    down = (name && bp->decision->pin) ? (ngx_uint_t) -1
                                       : ~(ngx_uint_t)
                                         NGX_HA_OPTOUT_HTTP_DRAINING;

    if (want == NULL
        && ngx_http_ha_optout_resolve(bp, name, len, &list, &peer, &i)
           == NGX_OK)
    {
        /* the server by name without a walk: its list is locked */
        goto found;
    }

    for (list = bp->primary; list; list = (list == bp->primary)
                                          ? bp->primary->next : NULL)
    {
        ngx_http_upstream_rr_peers_wlock(list);

#if (NGX_HA_OPTOUT_HTTP_REFS)
        if (list->config && bp->rrp->config != *list->config) {
            ngx_http_upstream_rr_peers_unlock(list);

            ngx_log_error(NGX_LOG_WARN, pc->log, 0,
                          "ha_optout: servers of upstream \"%V\" changed "
                          "during the request, not picking one by hand",
                          &bp->hscf->name);

            pc->name = bp->primary->name;
            return NGX_BUSY;
        }
#endif

        for (peer = list->peer, i = 0; peer; peer = peer->next, i++) {

            if (want) {
                if (peer != want) {
                    continue;
                }

            } else if (!ngx_http_ha_optout_named(&peer->name, &peer->server,
                                                 name, len))
            {
                continue;
            }

        found:

            if (peer->down & down) {
                break;
            }

            ngx_http_ha_optout_take(pc, bp, list, peer, i);

            return NGX_OK;
        }

        ngx_http_upstream_rr_peers_unlock(list);
    }

    ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                  "ha_optout: pinned server \"%*s\" of upstream \"%V\" is "
                  "not usable", len, name, &bp->hscf->name);

    pc->name = bp->primary->name;

    return NGX_BUSY;
}


/*
 * The list a resolve-cache slot is in, write-locked as round robin locks
 * it: NGX_OK locked; unlocked, NGX_DECLINED when this request's list is
 * not the one the cache was made from, NGX_ABORT when the list itself
 * changed since (its peers may be gone)
 */

static ngx_int_t
ngx_http_ha_optout_slot_lock(ngx_http_ha_optout_peer_data_t *bp,
    ngx_http_ha_optout_cache_t *cache, ngx_http_upstream_rr_peers_t *list)
{
    ngx_http_upstream_rr_peers_wlock(list);

#if (NGX_HA_OPTOUT_HTTP_CONFIG)
    if (list->config
        && (*list->config != cache->config
            || bp->rrp->config != cache->config))
    {
        ngx_http_upstream_rr_peers_unlock(list);

        return (*list->config != cache->config) ? NGX_ABORT : NGX_DECLINED;
    }
#else
    (void) bp;
    (void) cache;
#endif

    return NGX_OK;
}


/*
 * A sticky client's server from the worker's copy of its binding: the
 * resolve cache's slot, taken as _select() takes a server by name; when
 * the slot is not current or its server is down (the walk would then try
 * the backup list by name), NGX_DECLINED and the caller asks the zone
 */

static ngx_int_t
ngx_http_ha_optout_select_slot(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, ngx_http_ha_optout_slot_t *slot)
{
    ngx_http_ha_optout_cache_t    *cache;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *list;

    cache = ngx_http_ha_optout_cache_get(bp->hscf);

    if (cache == NULL || cache->primary != bp->primary) {
        return NGX_DECLINED;
    }

    pc->cached = 0;
    pc->connection = NULL;

    list = slot->list;
    peer = slot->peer;

    if (ngx_http_ha_optout_slot_lock(bp, cache, list) != NGX_OK) {
        return NGX_DECLINED;
    }

    /* a sticky client is not new traffic: a draining server keeps it */

    if (peer->down & ~(ngx_uint_t) NGX_HA_OPTOUT_HTTP_DRAINING) {
        ngx_http_upstream_rr_peers_unlock(list);
        return NGX_DECLINED;
    }

    bp->slot = slot;

    ngx_http_ha_optout_take(pc, bp, list, peer, slot->index);

    return NGX_OK;
}


/* the server chosen, taken as round robin takes it; its list unlocked */

static ngx_inline void
ngx_http_ha_optout_take(ngx_peer_connection_t *pc,
    ngx_http_ha_optout_peer_data_t *bp, ngx_http_upstream_rr_peers_t *list,
    ngx_http_upstream_rr_peer_t *peer, ngx_uint_t i)
{
    ngx_http_ha_optout_tried(bp->rrp->tried, i);

    bp->rrp->peers = list;
    bp->rrp->current = peer;

    pc->sockaddr = peer->sockaddr;
    pc->socklen = peer->socklen;
    pc->name = &peer->name;

#if (NGX_HTTP_UPSTREAM_SID)
    /* what nginx's sticky learns the session's server from */
    pc->sid = &peer->sid;
#endif

    peer->conns++;

#if (NGX_HA_OPTOUT_HTTP_REFS)
    ngx_http_upstream_rr_peer_ref(list, peer);
#endif

    ngx_http_upstream_rr_peers_unlock(list);
}


/*
 * The resolve cache's answer for a server by name (a pin, a sticky
 * client's server): its list write-locked, as the walk in _select() would
 * hold it, so that the caller goes on as if the walk had found it; the
 * lock is held no longer than round robin's.  The cache is made once per
 * worker and peer list (a reload starts a new one with the new cycle's
 * srv conf, a new upstream zone gives a new list) and, in 1.27.3+, is
 * trusted only while the list's change counter is the one it was made at
 * and this request's round-robin data is of that same list.
 * NGX_DECLINED: not cached or no longer current; the caller walks.
 */

static ngx_int_t
ngx_http_ha_optout_resolve(ngx_http_ha_optout_peer_data_t *bp, u_char *name,
    size_t len, ngx_http_upstream_rr_peers_t **listp,
    ngx_http_upstream_rr_peer_t **peerp, ngx_uint_t *ip)
{
    ngx_int_t                      rc;
    ngx_http_ha_optout_slot_t     *slot;
    ngx_http_ha_optout_cache_t    *cache;
    ngx_http_upstream_rr_peers_t  *list;

    bp->slot = NULL;

    cache = bp->hscf->resolve_cache
            ? *(ngx_http_ha_optout_cache_t **) bp->hscf->resolve_cache : NULL;

    if (cache == NULL || cache->primary != bp->primary) {
        cache = ngx_http_ha_optout_cache_make(bp);
        if (cache == NULL) {
            return NGX_DECLINED;
        }
    }

    slot = ngx_http_ha_optout_cache_find(cache, name, len);
    if (slot == NULL) {
        return NGX_DECLINED;
    }

    list = slot->list;

    rc = ngx_http_ha_optout_slot_lock(bp, cache, list);

    if (rc != NGX_OK) {
        if (rc == NGX_ABORT) {
            /* the peers it points to may be gone: never read them again */
            ngx_http_ha_optout_cache_drop(bp->hscf);
            ngx_http_ha_optout_wcache_forget_peers(bp->hscf);
        }

        return NGX_DECLINED;
    }

    bp->slot = slot;

    *listp = list;
    *peerp = slot->peer;
    *ip = slot->index;

    return NGX_OK;
}


/* the cache of this request's upstream, made anew from its peer lists */

static ngx_http_ha_optout_cache_t *
ngx_http_ha_optout_cache_make(ngx_http_ha_optout_peer_data_t *bp)
{
    ngx_uint_t                     i, n, config;
    ngx_http_ha_optout_cache_t    *cache;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *list;

    list = bp->primary;

    /* the sticky copies' slots are of the cache this one replaces */
    ngx_http_ha_optout_wcache_forget_peers(bp->hscf);

    ngx_http_upstream_rr_peers_rlock(list);

    n = list->number + (list->next ? list->next->number : 0);
    config = 0;

#if (NGX_HA_OPTOUT_HTTP_CONFIG)
    if (list->config) {
        config = *list->config;
    }
#endif

    cache = ngx_http_ha_optout_cache_new(bp->hscf, list, config, n);

    if (cache == NULL) {
        ngx_http_upstream_rr_peers_unlock(list);
        return NULL;
    }

    /* walk order, primary then backup: the first peer of a name wins */

    for ( ;; ) {
        for (peer = list->peer, i = 0; peer; peer = peer->next, i++) {
            ngx_http_ha_optout_cache_add(cache, bp->hscf->rec, &peer->name,
                                         &peer->name, list, peer, i);
            ngx_http_ha_optout_cache_add(cache, bp->hscf->rec, &peer->server,
                                         &peer->name, list, peer, i);
        }

        ngx_http_upstream_rr_peers_unlock(list);

        if (list != bp->primary || list->next == NULL) {
            break;
        }

        list = list->next;

        ngx_http_upstream_rr_peers_rlock(list);
    }

    return cache;
}


#if (NGX_HTTP_SSL)

static ngx_int_t
ngx_http_ha_optout_set_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_ha_optout_peer_data_t  *bp = data;

    return bp->original_set_session(pc, bp->rrp);
}


static void
ngx_http_ha_optout_save_session(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_ha_optout_peer_data_t  *bp = data;

    bp->original_save_session(pc, bp->rrp);
}

#endif


/*
 * Finds a server of an upstream by its server-line text or its resolved
 * address.  NGX_OK: found and usable; NGX_DECLINED: unknown; NGX_BUSY: a
 * static "down" (or "drain") server.
 */

ngx_int_t
ngx_http_ha_optout_find_peer(ngx_http_upstream_srv_conf_t *uscf,
    u_char *name, size_t len, ngx_uint_t *down, ngx_uint_t *backup)
{
    ngx_uint_t                   i, j;
    ngx_http_upstream_server_t  *server;

    if (uscf->servers == NULL) {
        return NGX_DECLINED;
    }

#if (NGX_HA_OPTOUT_HTTP_REFS)

    /*
     * with a zone the live peers are in shared memory, and the addresses a
     * "resolve" server has now are only there: the configuration knows its
     * name alone
     */

    if (uscf->shm_zone) {
        ngx_int_t                      rc;
        ngx_http_upstream_rr_peer_t   *peer;
        ngx_http_upstream_rr_peers_t  *list;

        for (list = uscf->peer.data, j = 0; list; list = list->next, j++) {

            ngx_http_upstream_rr_peers_rlock(list);

            for (peer = list->peer; peer; peer = peer->next) {
                if (!(peer->host
                      && peer->name.len == len
                      && ngx_strncmp(peer->name.data, name, len) == 0))
                {
                    continue;
                }

                rc = ngx_http_ha_optout_peer_found(peer->down, j, down,
                                                   backup);

                ngx_http_upstream_rr_peers_unlock(list);

                return rc;
            }

            ngx_http_upstream_rr_peers_unlock(list);
        }
    }

#endif

    server = uscf->servers->elts;

    for (i = 0; i < uscf->servers->nelts; i++) {

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


/* a server of any upstream with ha_optout, http or stream */

ngx_int_t
ngx_http_ha_optout_upstream_peer(ngx_http_ha_optout_srv_conf_t *hscf,
    u_char *name, size_t len, ngx_uint_t *down, ngx_uint_t *backup)
{
    if (hscf->find_peer) {
        return hscf->find_peer(hscf->stream_conf, name, len, down, backup);
    }

    return ngx_http_ha_optout_find_peer(hscf->uscf, name, len, down, backup);
}


/*
 * Another module's server conf in the upstream {} being parsed, found by
 * module name (NULL when this nginx has no such module), to tell whether
 * one of its directives came before ours.  No symbol of it is referenced,
 * so the .so loads into an nginx built without it.
 */

void *
ngx_http_ha_optout_other_srv_conf(ngx_conf_t *cf, void **srv_conf,
    char *module)
{
    ngx_uint_t  m;

    for (m = 0; cf->cycle->modules[m]; m++) {
        if (ngx_strcmp(cf->cycle->modules[m]->name, module) == 0) {
            return srv_conf[cf->cycle->modules[m]->ctx_index];
        }
    }

    return NULL;
}
