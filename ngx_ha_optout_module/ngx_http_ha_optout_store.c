
/*
 * ngx_ha_optout_module: the flag store in shared memory.
 *
 * The zone holds one record per upstream with "ha_optout" (its API and
 * window layers and its counters), the replay cache, the audit ring and
 * the admin counters.  Workers keep a local copy of the layers and
 * refresh it only when the zone's generation moves, so the request path
 * with no flag set is one atomic load.
 *
 * The model: it calls nothing above it (no audit log, state file, writer
 * lock or balancer; the zone's init in module.c adds the audit chain).
 * Over 1,000 lines: the records, the worker's view, the replay cache and
 * the sticky table share one zone, one mutex and one room-making policy.
 */


#include "ngx_http_ha_optout_module.h"


ngx_http_ha_optout_shctx_t  *ngx_http_ha_optout_sh;
ngx_slab_pool_t             *ngx_http_ha_optout_shpool;


const char  *ngx_http_ha_optout_actions[] = {
    "set", "update", "clear", "expire", "window_start", "window_end",
    "restore", "restore_rejected", "denied", "window_skip",
    "request", "approve", "reject", "approval_expired"
};


const char  *ngx_http_ha_optout_auth_reasons[] = {
    "missing", "malformed", "algorithm", "unknown_kid", "signature",
    "expired", "not_yet_valid", "lifetime", "audience", "replay",
    "scope", "issuer", "type", NULL
};


/*
 * An entry of the replay cache (owner NULL, data the jti) or of the sticky
 * table (owner the upstream record, data the client key).  Ordered by a
 * hash of the data, then owner, then data.
 */
typedef struct {
    ngx_rbtree_node_t   node;
    ngx_queue_t         queue;
    void               *owner;
    uint64_t            value;      /* replay: expiry; sticky: flag ident */
    u_char              server;     /* sticky: index in rec->servers[] */
    u_char              len;
    u_char              data[1];
} ngx_http_ha_optout_entry_t;


static void ngx_http_ha_optout_sticky_drop(ngx_http_ha_optout_entry_t *e);
static void ngx_http_ha_optout_sticky_drop_servers(
    ngx_http_ha_optout_rec_t *rec, uint64_t gone);
static void ngx_http_ha_optout_zone_too_small(ngx_shm_zone_t *shm_zone,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_uint_t i);
static void ngx_http_ha_optout_zone_little_room(ngx_shm_zone_t *shm_zone,
    ngx_http_ha_optout_main_conf_t *hmcf);


static ngx_http_ha_optout_rec_t *
ngx_http_ha_optout_rec_get(ngx_http_ha_optout_shctx_t *sh,
    ngx_slab_pool_t *shpool, ngx_str_t *name)
{
    ngx_queue_t               *q;
    ngx_http_ha_optout_rec_t  *rec;

    for (q = ngx_queue_head(&sh->upstreams);
         q != ngx_queue_sentinel(&sh->upstreams);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_ha_optout_rec_t, queue);

        if (rec->name_len == name->len
            && ngx_strncmp(rec->name, name->data, name->len) == 0)
        {
            return rec;
        }
    }

    rec = ngx_slab_calloc_locked(shpool, sizeof(ngx_http_ha_optout_rec_t));
    if (rec == NULL) {
        return NULL;
    }

    ngx_memcpy(rec->name, name->data, name->len);
    rec->name_len = name->len;
    ngx_queue_insert_tail(&sh->upstreams, &rec->queue);

    return rec;
}


void
ngx_http_ha_optout_rec_add_server(ngx_http_ha_optout_rec_t *rec,
    ngx_str_t *name)
{
    ngx_uint_t                         k;
    ngx_http_ha_optout_server_stat_t  *st;

    if (ngx_http_ha_optout_server_stat(rec, name) != NULL) {
        return;
    }

    if (name->len == 0 || name->len >= NGX_HA_OPTOUT_NAME_LEN) {
        return;
    }

    /* a slot freed by a server that left the configuration, or a new one */

    for (k = 0; k < rec->nservers; k++) {
        if (rec->servers[k].len == 0) {
            break;
        }
    }

    if (k == rec->nservers) {
        if (rec->nservers == NGX_HA_OPTOUT_MAX_SERVERS) {
            return;
        }

        rec->nservers++;
    }

    st = &rec->servers[k];
    ngx_memcpy(st->name, name->data, name->len);
    st->len = name->len;
}


static void
ngx_http_ha_optout_rec_servers(ngx_http_ha_optout_rec_t *rec,
    ngx_http_upstream_srv_conf_t *uscf)
{
    uint64_t                           gone;
    ngx_uint_t                         i, j, k, found;
    ngx_http_upstream_server_t        *server;
    ngx_http_ha_optout_server_stat_t  *st;

    if (uscf == NULL || uscf->servers == NULL) {
        return;
    }

    server = uscf->servers->elts;

    /*
     * reloads may change the servers: one that left the configuration
     * frees its slot, so that the slots do not run out
     */

    gone = 0;

    for (k = 0; k < rec->nservers; k++) {
        st = &rec->servers[k];
        found = (st->len == 0);

        for (i = 0; !found && i < uscf->servers->nelts; i++) {
            for (j = 0; !found && j < server[i].naddrs; j++) {
                found = server[i].addrs[j].name.len == st->len
                        && ngx_strncmp(server[i].addrs[j].name.data,
                                       st->name, st->len) == 0;
            }
        }

        if (!found) {
            ngx_memzero(st, sizeof(ngx_http_ha_optout_server_stat_t));
            gone |= (uint64_t) 1 << k;
        }
    }

    /*
     * its sticky clients are balanced anew: their bindings go before a
     * new server takes the slot and, with it, those clients
     */

    if (gone && rec->sticky_entries) {
        ngx_http_ha_optout_sticky_drop_servers(rec, gone);
    }

    for (i = 0; i < uscf->servers->nelts; i++) {
        for (j = 0; j < server[i].naddrs; j++) {
            ngx_http_ha_optout_rec_add_server(rec, &server[i].addrs[j].name);
        }
    }

    /* a server slot may name another server now: workers forget bindings */

    for (k = 0; k < NGX_HA_OPTOUT_STICKY_SEQS; k++) {
        rec->sticky_seq[k]++;
    }
}


/* a record for an upstream registered after the zone was set up */

ngx_http_ha_optout_rec_t *
ngx_http_ha_optout_rec_attach(ngx_shm_zone_t *shm_zone, ngx_str_t *name)
{
    ngx_http_ha_optout_rec_t       *rec;
    ngx_http_ha_optout_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (ctx->sh == NULL) {
        return NULL;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);
    rec = ngx_http_ha_optout_rec_get(ctx->sh, ctx->shpool, name);
    ctx->sh->generation++;
    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return rec;
}


static ngx_int_t
ngx_http_ha_optout_entry_cmp(ngx_http_ha_optout_entry_t *e, void *owner,
    u_char *data, size_t len)
{
    if (e->owner != owner) {
        return ((uintptr_t) owner < (uintptr_t) e->owner) ? -1 : 1;
    }

    return ngx_memn2cmp(data, e->data, len, e->len);
}


static void
ngx_http_ha_optout_entry_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_http_ha_optout_entry_t   *e;

    e = (ngx_http_ha_optout_entry_t *) node;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            p = ngx_http_ha_optout_entry_cmp((ngx_http_ha_optout_entry_t *)
                                             temp, e->owner, e->data, e->len)
                < 0 ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_http_ha_optout_entry_t *
ngx_http_ha_optout_entry_find(ngx_rbtree_t *tree, uint32_t hash, void *owner,
    u_char *data, size_t len)
{
    ngx_int_t           rc;
    ngx_rbtree_node_t  *node, *sentinel;

    node = tree->root;
    sentinel = tree->sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        rc = ngx_http_ha_optout_entry_cmp((ngx_http_ha_optout_entry_t *) node,
                                          owner, data, len);
        if (rc == 0) {
            return (ngx_http_ha_optout_entry_t *) node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static ngx_http_ha_optout_entry_t *
ngx_http_ha_optout_entry_alloc(void *owner, u_char *data, size_t len,
    uint32_t hash)
{
    ngx_http_ha_optout_entry_t  *e;

    e = ngx_slab_alloc_locked(ngx_http_ha_optout_shpool,
                              offsetof(ngx_http_ha_optout_entry_t, data)
                              + len);
    if (e == NULL) {
        return NULL;
    }

    e->node.key = hash;
    e->owner = owner;
    e->len = (u_char) len;
    ngx_memcpy(e->data, data, len);

    return e;
}


static ngx_uint_t
ngx_http_ha_optout_make_room_for_record(ngx_log_t *log)
{
    ngx_queue_t                 *q;
    ngx_http_ha_optout_entry_t  *e;
    ngx_http_ha_optout_shctx_t  *sh;

    static ngx_uint_t            evicted;

    if (ngx_http_ha_optout_make_room_locked()) {
        return 1;
    }

    sh = ngx_http_ha_optout_sh;

    if (ngx_queue_empty(&sh->replay_queue)) {
        return 0;
    }

    q = ngx_queue_head(&sh->replay_queue);
    e = ngx_queue_data(q, ngx_http_ha_optout_entry_t, queue);

    ngx_queue_remove(q);
    ngx_rbtree_delete(&sh->replay, &e->node);
    ngx_slab_free_locked(ngx_http_ha_optout_shpool, e);
    sh->replay_count--;

    if (evicted++ % 64 == 0) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "ha_optout: the zone is full: spent jtis closest to "
                      "their expiry are forgotten to make room for upstream "
                      "records (a larger ha_optout_zone avoids this)");
    }

    return 1;
}


/*
 * What an upstream record takes of the zone: whole slab pages (it is larger
 * than half a page), each with its page descriptor.
 */

size_t
ngx_http_ha_optout_rec_size(void)
{
    return ngx_align(sizeof(ngx_http_ha_optout_rec_t), ngx_pagesize)
           / ngx_pagesize * (ngx_pagesize + sizeof(ngx_slab_page_t));
}


/*
 * The size a zone of "size" bytes must have for "missing" more records than
 * it has room for: one page more for the alignment of the pages, rounded up
 * to a page.
 */

size_t
ngx_http_ha_optout_zone_need(size_t size, ngx_uint_t missing)
{
    size_t  need;

    need = size + missing * ngx_http_ha_optout_rec_size()
           + ngx_pagesize + sizeof(ngx_slab_page_t);

    return ngx_align(need, ngx_pagesize);
}


/*
 * A size to suggest: the records, and as much again for the replay cache
 * (a jti per write until its token expires, half the zone at most), the
 * audit ring and sticky bindings; rounded up to 64k.
 */

size_t
ngx_http_ha_optout_zone_advice(size_t need)
{
    return ngx_align(2 * need, 64 * 1024);
}


/*
 * The zone's init (module.c) in two steps: the zone's context is attached
 * (a reload's, the one the master made, or a new one: *fresh), then the
 * records of the configuration's upstreams are found or made.  Between
 * the two, a fresh zone gets the audit chain of the log nginx wrote.
 */

ngx_int_t
ngx_http_ha_optout_zone_attach(ngx_shm_zone_t *shm_zone, void *data,
    ngx_uint_t *fresh)
{
    ngx_http_ha_optout_zone_ctx_t  *octx = data;

    ngx_http_ha_optout_shctx_t     *sh;
    ngx_http_ha_optout_zone_ctx_t  *ctx;

    ctx = shm_zone->data;
    *fresh = 0;

    if (octx) {
        /* reload with the same zone: flags, counters and replay survive */
        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;

    } else {
        ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

        if (shm_zone->shm.exists) {
            ctx->sh = ctx->shpool->data;

        } else {
            sh = ngx_slab_calloc(ctx->shpool,
                                 sizeof(ngx_http_ha_optout_shctx_t));
            if (sh == NULL) {
                return NGX_ERROR;
            }

            ngx_queue_init(&sh->upstreams);
            ngx_queue_init(&sh->replay_queue);
            ngx_rbtree_init(&sh->replay, &sh->replay_sentinel,
                            ngx_http_ha_optout_entry_insert);
            ngx_queue_init(&sh->sticky_queue);
            ngx_rbtree_init(&sh->sticky, &sh->sticky_sentinel,
                            ngx_http_ha_optout_entry_insert);
            ngx_memset(sh->audit_hash, '0', 64);
            ngx_queue_init(&sh->audit_pending);
            ngx_memset(sh->state_audit_hash, '0', 64);
            sh->audit_gap[0] = '\0';

            ctx->sh = sh;
            ctx->shpool->data = sh;
            ctx->shpool->log_nomem = 0;
            ctx->shpool->log_ctx = (u_char *) " in ha_optout zone";

            *fresh = 1;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_ha_optout_zone_records(ngx_shm_zone_t *shm_zone)
{
    ngx_uint_t                        i;
    ngx_http_ha_optout_rec_t         *rec;
    ngx_http_ha_optout_shctx_t       *sh;
    ngx_http_ha_optout_zone_ctx_t    *ctx;
    ngx_http_ha_optout_srv_conf_t   **hscfp;
    ngx_http_ha_optout_main_conf_t   *hmcf;

    ctx = shm_zone->data;
    hmcf = ctx->mcf;
    sh = ctx->sh;
    hscfp = hmcf->upstreams.elts;

    /*
     * workers set these in init_process; a single-process nginx never runs
     * it again after a reload, so the new zone is published here too
     */
    ngx_http_ha_optout_sh = ctx->sh;
    ngx_http_ha_optout_shpool = ctx->shpool;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (sh->audit_pending.next == NULL) {
        ngx_queue_init(&sh->audit_pending);
    }

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        rec = ngx_http_ha_optout_rec_get(sh, ctx->shpool, &hscfp[i]->name);

        /*
         * a reload that adds upstreams needs room that nginx -t could not
         * check: sticky bindings and ring lines give way, then, as a last
         * resort, the replay entries closest to their expiry
         */
        while (rec == NULL && ngx_http_ha_optout_make_room_for_record(
                                  shm_zone->shm.log))
        {
            rec = ngx_http_ha_optout_rec_get(sh, ctx->shpool,
                                             &hscfp[i]->name);
        }

        if (rec == NULL) {
            ngx_shmtx_unlock(&ctx->shpool->mutex);
            ngx_http_ha_optout_zone_too_small(shm_zone, hmcf, i);
            return NGX_ERROR;
        }

        ngx_http_ha_optout_rec_servers(rec, hscfp[i]->uscf);
        hscfp[i]->rec = rec;
    }

    /*
     * records that leave (almost) nothing for writes: nginx starts, and
     * each write would answer 507; say so now, with the size it needs
     */
    if (ctx->shpool->pfree * ngx_pagesize < 16 * 1024) {
        ngx_http_ha_optout_zone_little_room(shm_zone, hmcf);
    }

    /* sticky bindings may use a quarter of the zone, at most */
    sh->sticky_max = ngx_min(NGX_HA_OPTOUT_STICKY_MAX,
                             shm_zone->shm.size / 4 / 128);

    /* and spent jtis half of it (an entry takes a 128-byte slab chunk) */
    sh->replay_max = shm_zone->shm.size / 2 / 128;

    /* a new configuration may have config flags: workers refresh */
    sh->generation++;

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return NGX_OK;
}


/* the zone holds the records of the first i upstreams only */

static void
ngx_http_ha_optout_zone_too_small(ngx_shm_zone_t *shm_zone,
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_uint_t i)
{
    size_t  need;

    need = ngx_http_ha_optout_zone_need(shm_zone->shm.size,
                                        hmcf->upstreams.nelts - i);

    ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                  "ha_optout: zone \"%V\" is too small for %ui upstreams: "
                  "its %uzk hold %ui (an upstream takes %uzk); %ui need at "
                  "least \"ha_optout_zone %V %uzk;\", better %uzk (room for "
                  "tokens' jtis and audit lines)", &shm_zone->shm.name,
                  hmcf->upstreams.nelts, shm_zone->shm.size / 1024, i,
                  ngx_http_ha_optout_rec_size() / 1024, hmcf->upstreams.nelts,
                  &shm_zone->shm.name, need / 1024,
                  ngx_http_ha_optout_zone_advice(need) / 1024);
}


static void
ngx_http_ha_optout_zone_little_room(ngx_shm_zone_t *shm_zone,
    ngx_http_ha_optout_main_conf_t *hmcf)
{
    size_t                          used;
    ngx_http_ha_optout_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    used = shm_zone->shm.size - ctx->shpool->pfree * ngx_pagesize;

    ngx_log_error(NGX_LOG_WARN, shm_zone->shm.log, 0,
                  "ha_optout: zone \"%V\" (%uzk) has %uzk left after "
                  "the records of its %ui upstreams (%uzk each): too "
                  "little for writes (each keeps its jti until its "
                  "token expires, and an audit line); give it "
                  "\"ha_optout_zone %V %uzk;\"", &shm_zone->shm.name,
                  shm_zone->shm.size / 1024,
                  ctx->shpool->pfree * ngx_pagesize / 1024,
                  hmcf->upstreams.nelts,
                  ngx_http_ha_optout_rec_size() / 1024,
                  &shm_zone->shm.name,
                  ngx_http_ha_optout_zone_advice(used) / 1024);
}


/* called with the zone mutex held, after a layer changed */

/*
 * A layer's flag that is new (a PUT, a window's occurrence, not a PATCH:
 * flag_ident() as for sticky bindings) notes the counters it starts from,
 * for "since the flag was set" on the status page.
 */

static void
ngx_http_ha_optout_since(ngx_http_ha_optout_rec_t *rec,
    ngx_http_ha_optout_since_t *since, ngx_http_ha_optout_flag_t *flag)
{
    uint64_t  ident;

    ident = flag->present ? ngx_http_ha_optout_flag_ident(flag) : 0;

    if (ident == since->ident) {
        return;
    }

    since->ident = ident;
    since->suppressed = rec->failover_suppressed;
    since->pinned = rec->pinned_requests;
    since->bypassed = rec->replication_bypassed;
}


void
ngx_http_ha_optout_bump(void)
{
    ngx_uint_t                 active;
    ngx_queue_t               *q;
    ngx_http_ha_optout_rec_t  *rec;

    active = 0;

    for (q = ngx_queue_head(&ngx_http_ha_optout_sh->upstreams);
         q != ngx_queue_sentinel(&ngx_http_ha_optout_sh->upstreams);
         q = ngx_queue_next(q))
    {
        rec = ngx_queue_data(q, ngx_http_ha_optout_rec_t, queue);
        active += rec->api.present + rec->fleet.present
                  + rec->window.present;

        ngx_http_ha_optout_since(rec, &rec->since[NGX_HA_OPTOUT_SRC_API - 1],
                                 &rec->api);
        ngx_http_ha_optout_since(rec,
                                 &rec->since[NGX_HA_OPTOUT_SRC_FLEET - 1],
                                 &rec->fleet);
        ngx_http_ha_optout_since(rec,
                                 &rec->since[NGX_HA_OPTOUT_SRC_WINDOW - 1],
                                 &rec->window);
    }

    ngx_http_ha_optout_sh->active = active;
    ngx_memory_barrier();
    ngx_http_ha_optout_sh->generation++;
}


void
ngx_http_ha_optout_refresh(ngx_http_ha_optout_srv_conf_t *hscf)
{
    ngx_atomic_uint_t  gen;

    gen = ngx_http_ha_optout_sh->generation;

    if (gen == hscf->generation) {
        return;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    hscf->api = hscf->rec->api;
    hscf->fleet = hscf->rec->fleet;
    hscf->window = hscf->rec->window;
    hscf->generation = ngx_http_ha_optout_sh->generation;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ngx_http_ha_optout_set_text(hscf, NGX_HA_OPTOUT_SRC_API, &hscf->api);
    ngx_http_ha_optout_set_text(hscf, NGX_HA_OPTOUT_SRC_FLEET, &hscf->fleet);
    ngx_http_ha_optout_set_text(hscf, NGX_HA_OPTOUT_SRC_WINDOW,
                                &hscf->window);
}


/* the header text of a layer, made once per change instead of per request */

void
ngx_http_ha_optout_set_text(ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_uint_t source, ngx_http_ha_optout_flag_t *flag)
{
    hscf->text_len[source] =
        (uint16_t) (flag->present
                    ? ngx_http_ha_optout_flag_text(flag, hscf->text[source])
                    : 0);
}


ngx_int_t
ngx_http_ha_optout_flag_live(ngx_http_ha_optout_flag_t *flag, time_t now)
{
    return flag && flag->present
           && (flag->expires_at == 0 || now < flag->expires_at);
}


/* one layer as the worker sees it, or NULL when empty or expired */

ngx_http_ha_optout_flag_t *
ngx_http_ha_optout_layer(ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_uint_t source, time_t now)
{
    ngx_http_ha_optout_flag_t  *flag;

    switch (source) {

    case NGX_HA_OPTOUT_SRC_API:
        ngx_http_ha_optout_refresh(hscf);
        flag = &hscf->api;
        break;

    case NGX_HA_OPTOUT_SRC_FLEET:
        ngx_http_ha_optout_refresh(hscf);
        flag = &hscf->fleet;
        break;

    case NGX_HA_OPTOUT_SRC_WINDOW:
        ngx_http_ha_optout_refresh(hscf);
        flag = &hscf->window;
        break;

    default:
        flag = hscf->config_flag;
    }

    return ngx_http_ha_optout_flag_live(flag, now) ? flag : NULL;
}


/*
 * precedence: an API flag wins over a fleet flag, a fleet flag over a
 * window, a window over config
 */

ngx_http_ha_optout_flag_t *
ngx_http_ha_optout_acting(ngx_http_ha_optout_srv_conf_t *hscf, time_t now)
{
    ngx_http_ha_optout_refresh(hscf);

    if (ngx_http_ha_optout_flag_live(&hscf->api, now)) {
        return &hscf->api;
    }

    if (ngx_http_ha_optout_flag_live(&hscf->fleet, now)) {
        return &hscf->fleet;
    }

    if (ngx_http_ha_optout_flag_live(&hscf->window, now)) {
        return &hscf->window;
    }

    if (ngx_http_ha_optout_flag_live(hscf->config_flag, now)) {
        return hscf->config_flag;
    }

    return NULL;
}


ngx_http_ha_optout_server_stat_t *
ngx_http_ha_optout_server_stat(ngx_http_ha_optout_rec_t *rec,
    ngx_str_t *server)
{
    ngx_uint_t                         i;
    ngx_http_ha_optout_server_stat_t  *st;

    for (i = 0; i < rec->nservers; i++) {
        st = &rec->servers[i];

        if (st->len == server->len
            && ngx_strncmp(st->name, server->data, server->len) == 0)
        {
            return st;
        }
    }

    return NULL;
}


void
ngx_http_ha_optout_count_server(ngx_http_ha_optout_rec_t *rec,
    ngx_str_t *server, ngx_uint_t pinned)
{
    ngx_http_ha_optout_server_stat_t  *st;

    if (pinned) {
        (void) ngx_atomic_fetch_add(&rec->pinned_requests, 1);

    } else {
        (void) ngx_atomic_fetch_add(&rec->failover_suppressed, 1);
    }

    st = server ? ngx_http_ha_optout_server_stat(rec, server) : NULL;

    if (st) {
        (void) ngx_atomic_fetch_add(pinned ? &st->pinned : &st->suppressed,
                                    1);
    }
}


/*
 * A field copied into header text: any byte that is not printable ASCII,
 * and ';' and '=' (which would forge a field of their own), becomes '?'.
 * The fields are refused at every entry already; this keeps a field added
 * later, or a bug, from ever splitting a header (SPEC 8).
 */

static u_char *
ngx_http_ha_optout_text_cpy(u_char *dst, u_char *src, size_t len)
{
    while (len--) {
        *dst++ = (*src >= 0x20 && *src <= 0x7e && *src != ';'
                  && *src != '=')
                 ? *src : '?';
        src++;
    }

    return dst;
}


/* the short text of the X-HA-Optout header and $ha_optout_<upstream> */

size_t
ngx_http_ha_optout_flag_text(ngx_http_ha_optout_flag_t *flag, u_char *buf)
{
    u_char  *p;

    p = buf;

    if (flag->no_failover) {
        p = ngx_cpymem(p, "failover=off; ", sizeof("failover=off; ") - 1);
    }

    if (flag->pin_len) {
        p = ngx_cpymem(p, "pin=", sizeof("pin=") - 1);
        p = ngx_http_ha_optout_text_cpy(p, flag->pin, flag->pin_len);
        *p++ = ';'; *p++ = ' ';
    }

    if (flag->selector_len) {
        p = ngx_cpymem(p, "pin_selector=", sizeof("pin_selector=") - 1);
        p = ngx_http_ha_optout_text_cpy(p, flag->selector,
                                        flag->selector_len);
        *p++ = ';'; *p++ = ' ';
    }

    if (flag->no_replication) {
        p = ngx_cpymem(p, "replication=off; ",
                       sizeof("replication=off; ") - 1);
    }

    if (flag->sticky) {
        p = ngx_cpymem(p, "sticky=on; ", sizeof("sticky=on; ") - 1);
    }

    return (p > buf) ? (size_t) (p - buf - 2) : 0;
}


/*
 * Remembers a write's jti until its token expires.  NGX_OK: first use;
 * NGX_DECLINED: a replay; NGX_BUSY: the cache is full of live entries.
 */

/* called with the zone mutex held: the write that uses it is decided there */

ngx_int_t
ngx_http_ha_optout_replay_check_locked(ngx_str_t *jti, time_t exp, time_t now)
{
    uint32_t                     hash;
    ngx_queue_t                 *q;
    ngx_http_ha_optout_entry_t  *e, *e2;
    ngx_http_ha_optout_shctx_t  *sh;

    if (jti->len == 0 || jti->len > 255) {
        return NGX_DECLINED;
    }

    sh = ngx_http_ha_optout_sh;
    hash = ngx_crc32_short(jti->data, jti->len);

    /* drop what has expired, oldest first */

    while (!ngx_queue_empty(&sh->replay_queue)) {
        q = ngx_queue_head(&sh->replay_queue);
        e = ngx_queue_data(q, ngx_http_ha_optout_entry_t, queue);

        if ((time_t) e->value + NGX_HA_OPTOUT_LEEWAY > now) {
            break;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&sh->replay, &e->node);
        ngx_slab_free_locked(ngx_http_ha_optout_shpool, e);
        sh->replay_count--;
    }

    if (ngx_http_ha_optout_entry_find(&sh->replay, hash, NULL, jti->data,
                                      jti->len))
    {
        return NGX_DECLINED;
    }

    /* half the zone at most: the other half is for records and audit */

    if (sh->replay_max && sh->replay_count >= sh->replay_max) {
        return NGX_BUSY;
    }

    e = ngx_http_ha_optout_entry_alloc(NULL, jti->data, jti->len, hash);

    while (e == NULL && ngx_http_ha_optout_make_room_locked()) {
        e = ngx_http_ha_optout_entry_alloc(NULL, jti->data, jti->len, hash);
    }

    if (e == NULL) {
        return NGX_BUSY;
    }

    e->value = (uint64_t) exp;
    ngx_rbtree_insert(&sh->replay, &e->node);

    /* keep the queue ordered by expiry: tokens mostly come in order */

    for (q = ngx_queue_last(&sh->replay_queue);
         q != ngx_queue_sentinel(&sh->replay_queue);
         q = ngx_queue_prev(q))
    {
        e2 = ngx_queue_data(q, ngx_http_ha_optout_entry_t, queue);

        if (e2->value <= (uint64_t) exp) {
            break;
        }
    }

    ngx_queue_insert_after(q, &e->queue);
    sh->replay_count++;

    return NGX_OK;
}


/*
 * Why the zone refused a write's jti (NGX_BUSY above) or its audit line
 * ("what" says which), and how large the zone must be, as the text of a
 * 507 ZoneFull: p .. last, returns the end.
 */

u_char *
ngx_http_ha_optout_zone_full_text_locked(u_char *p, u_char *last,
    ngx_shm_zone_t *shm_zone, time_t now, char *what)
{
    size_t                       size;
    time_t                       left;
    ngx_http_ha_optout_entry_t  *e;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;
    size = shm_zone->shm.size;

    left = 0;

    if (!ngx_queue_empty(&sh->replay_queue)) {
        e = ngx_queue_data(ngx_queue_head(&sh->replay_queue),
                           ngx_http_ha_optout_entry_t, queue);
        left = (time_t) e->value + NGX_HA_OPTOUT_LEEWAY - now;
        left = ngx_max(left, 1);
    }

    if (what == NULL && sh->replay_max && sh->replay_count >= sh->replay_max)
    {
        p = ngx_slprintf(p, last, "the replay cache is full: zone \"%V\" "
                         "(%uzk) keeps the jti of each write until its "
                         "token expires (+%ds), %ui at most (half the zone, "
                         "128 bytes each), and holds %ui; ",
                         &shm_zone->shm.name, size / 1024,
                         NGX_HA_OPTOUT_LEEWAY, sh->replay_max,
                         sh->replay_count);

    } else {
        p = ngx_slprintf(p, last, "zone \"%V\" (%uzk) has no room left for "
                         "%s: it holds %ui jtis of unexpired tokens (a "
                         "write's is kept until its token expires), the "
                         "upstreams' records (%uzk each) and %ui audit "
                         "lines waiting for the log; ",
                         &shm_zone->shm.name, size / 1024,
                         what ? what : "the jti of this write",
                         sh->replay_count,
                         ngx_http_ha_optout_rec_size() / 1024,
                         sh->audit_npending);
    }

    if (left) {
        p = ngx_slprintf(p, last, "the oldest is forgotten in %Ts: try "
                         "again then, ", left);
    }

    return ngx_slprintf(p, last, "%sor give the zone room for more writes "
                        "per token lifetime: \"ha_optout_zone %V %uzk;\" "
                        "keeps about twice as many (256 bytes of zone per "
                        "write)", left ? "" : "try again later, ",
                        &shm_zone->shm.name,
                        ngx_align(2 * size, 64 * 1024) / 1024);
}


/*
 * The live jtis for the state file, those that expire last first, at most
 * max of them: records of the expiry (a time_t), the length (one byte)
 * and the jti, written while they fit in size bytes.  Returns the bytes
 * all of them need.
 */

size_t
ngx_http_ha_optout_replay_export_locked(u_char *buf, size_t size,
    ngx_uint_t max, time_t now)
{
    size_t                       n, need;
    time_t                       exp;
    ngx_uint_t                   i;
    ngx_queue_t                 *q;
    ngx_http_ha_optout_entry_t  *e;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;
    n = 0;
    i = 0;

    for (q = ngx_queue_last(&sh->replay_queue);
         q != ngx_queue_sentinel(&sh->replay_queue) && i < max;
         q = ngx_queue_prev(q))
    {
        e = ngx_queue_data(q, ngx_http_ha_optout_entry_t, queue);
        exp = (time_t) e->value;

        if (exp + NGX_HA_OPTOUT_LEEWAY <= now) {
            break;
        }

        need = sizeof(time_t) + 1 + e->len;

        if (n + need <= size) {
            ngx_memcpy(buf + n, &exp, sizeof(time_t));
            buf[n + sizeof(time_t)] = e->len;
            ngx_memcpy(buf + n + sizeof(time_t) + 1, e->data, e->len);
        }

        n += need;
        i++;
    }

    return n;
}


/*
 * The zone is full: what may give way to a replay entry (security) or an
 * audit line does, least valuable first: the least recently used sticky
 * binding, then the oldest line of the audit ring (the audit log file has
 * it).  Returns 0 when nothing is left to free.
 */

ngx_uint_t
ngx_http_ha_optout_make_room_locked(void)
{
    ngx_uint_t                   i, pos;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    if (!ngx_queue_empty(&sh->sticky_queue)) {
        ngx_http_ha_optout_sticky_drop(
            ngx_queue_data(ngx_queue_last(&sh->sticky_queue),
                           ngx_http_ha_optout_entry_t, queue));
        (void) ngx_atomic_fetch_add(&sh->sticky_evicted, 1);
        return 1;
    }

    /* the oldest ring line sits at or after the next write position */

    for (i = 0; i < NGX_HA_OPTOUT_AUDIT_RING; i++) {
        pos = (sh->audit_next + i) % NGX_HA_OPTOUT_AUDIT_RING;

        if (sh->audit_ring[pos]) {
            ngx_slab_free_locked(ngx_http_ha_optout_shpool,
                                 sh->audit_ring[pos]);
            sh->audit_ring[pos] = NULL;
            return 1;
        }
    }

    return 0;
}


/*
 * Which flag a sticky binding belongs to: a new flag (PUT) starts afresh,
 * while a PATCH (a heartbeat) keeps set_at and so the bindings.  set_at
 * is in seconds: two PUTs within one second are told apart by the version
 * of the PUT (put_version, kept by a PATCH; 0 in a flag restored from the
 * state file or a window's, which set_at tells apart).  A config flag is
 * parsed anew by every reload: it is known by its content.
 */

uint64_t
ngx_http_ha_optout_flag_ident(ngx_http_ha_optout_flag_t *flag)
{
    uint64_t  t;

    t = (flag->source == NGX_HA_OPTOUT_SRC_CONFIG)
        ? ngx_crc32_short(flag->reason, flag->reason_len)
          ^ ngx_crc32_short(flag->pin, flag->pin_len)
        : (uint64_t) flag->set_at ^ (flag->put_version << 34);

    return (t << 3) | flag->source;
}


static void
ngx_http_ha_optout_sticky_drop(ngx_http_ha_optout_entry_t *e)
{
    ngx_http_ha_optout_rec_t  *rec = e->owner;

    /* a worker's copy of the binding is no longer to be trusted */
    (*ngx_http_ha_optout_sticky_seq(rec, e->node.key))++;

    ngx_queue_remove(&e->queue);
    ngx_rbtree_delete(&ngx_http_ha_optout_sh->sticky, &e->node);
    ngx_slab_free_locked(ngx_http_ha_optout_shpool, e);

    ngx_http_ha_optout_sh->sticky_count--;
    rec->sticky_entries--;
}


/* the bindings of an upstream to servers that left it (bits of slots) */

static void
ngx_http_ha_optout_sticky_drop_servers(ngx_http_ha_optout_rec_t *rec,
    uint64_t gone)
{
    ngx_queue_t                 *q, *next;
    ngx_http_ha_optout_entry_t  *e;
    ngx_http_ha_optout_shctx_t  *sh;

    sh = ngx_http_ha_optout_sh;

    for (q = ngx_queue_head(&sh->sticky_queue);
         q != ngx_queue_sentinel(&sh->sticky_queue);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_http_ha_optout_entry_t, queue);

        if (e->owner == rec && e->server < 64
            && (gone & ((uint64_t) 1 << e->server)))
        {
            ngx_http_ha_optout_sticky_drop(e);
        }
    }
}


/* the server a client key is bound to: its length (0: none) into server */

size_t
ngx_http_ha_optout_sticky_get(ngx_http_ha_optout_rec_t *rec, uint64_t ident,
    ngx_str_t *key, u_char *server)
{
    ngx_http_ha_optout_sticky_ref_t  ref;

    return ngx_http_ha_optout_sticky_get_ref(rec, ident, key,
                                             ngx_crc32_short(key->data,
                                                             key->len),
                                             server, &ref);
}


/*
 * The same, with what a worker may keep of the binding (ref: the entry
 * and its change counter, read under the mutex, so that they agree)
 */

size_t
ngx_http_ha_optout_sticky_get_ref(ngx_http_ha_optout_rec_t *rec,
    uint64_t ident, ngx_str_t *key, uint32_t hash, u_char *server,
    ngx_http_ha_optout_sticky_ref_t *ref)
{
    size_t                       len;
    ngx_http_ha_optout_entry_t  *e;

    len = 0;
    ref->entry = NULL;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    e = ngx_http_ha_optout_entry_find(&ngx_http_ha_optout_sh->sticky, hash,
                                      rec, key->data, key->len);
    if (e && e->value != ident) {
        ngx_http_ha_optout_sticky_drop(e);
        e = NULL;
    }

    if (e && e->server < rec->nservers) {
        ngx_queue_remove(&e->queue);
        ngx_queue_insert_head(&ngx_http_ha_optout_sh->sticky_queue,
                              &e->queue);

        len = rec->servers[e->server].len;
        ngx_memcpy(server, rec->servers[e->server].name, len);

        if (len) {
            ref->entry = e;
            ref->seq = *ngx_http_ha_optout_sticky_seq(rec, hash);
            ref->server = e->server;
        }
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    return len;
}


/* binds a client key to a server; the least recently used gives way */

void
ngx_http_ha_optout_sticky_set(ngx_http_ha_optout_rec_t *rec, uint64_t ident,
    ngx_str_t *key, ngx_str_t *server)
{
    ngx_http_ha_optout_sticky_ref_t  ref;

    ngx_http_ha_optout_sticky_set_ref(rec, ident, key,
                                      ngx_crc32_short(key->data, key->len),
                                      server, &ref);
}


void
ngx_http_ha_optout_sticky_set_ref(ngx_http_ha_optout_rec_t *rec,
    uint64_t ident, ngx_str_t *key, uint32_t hash, ngx_str_t *server,
    ngx_http_ha_optout_sticky_ref_t *ref)
{
    ngx_queue_t                       *q;
    ngx_http_ha_optout_entry_t        *e;
    ngx_http_ha_optout_shctx_t        *sh;
    ngx_http_ha_optout_server_stat_t  *st;

    ref->entry = NULL;

    st = ngx_http_ha_optout_server_stat(rec, server);
    if (st == NULL) {
        return;
    }

    sh = ngx_http_ha_optout_sh;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    e = ngx_http_ha_optout_entry_find(&sh->sticky, hash, rec, key->data,
                                      key->len);

    if (e == NULL) {

        for ( ;; ) {
            if (sh->sticky_count < sh->sticky_max) {
                e = ngx_http_ha_optout_entry_alloc(rec, key->data, key->len,
                                                   hash);
                if (e) {
                    break;
                }
            }

            if (ngx_queue_empty(&sh->sticky_queue)) {
                ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
                return;
            }

            q = ngx_queue_last(&sh->sticky_queue);
            ngx_http_ha_optout_sticky_drop(
                ngx_queue_data(q, ngx_http_ha_optout_entry_t, queue));
            (void) ngx_atomic_fetch_add(&sh->sticky_evicted, 1);
        }

        ngx_rbtree_insert(&sh->sticky, &e->node);
        sh->sticky_count++;
        rec->sticky_entries++;

        /*
         * a new binding changes no other: a worker's copy of an earlier
         * binding of this key went stale when that one was dropped
         */

    } else {
        ngx_queue_remove(&e->queue);

        if (e->value != ident || e->server != (u_char) (st - rec->servers)) {
            /* a rebinding: the workers' copies of it are stale */
            (*ngx_http_ha_optout_sticky_seq(rec, hash))++;
        }
    }

    e->value = ident;
    e->server = (u_char) (st - rec->servers);
    ngx_queue_insert_head(&sh->sticky_queue, &e->queue);

    ref->entry = e;
    ref->seq = *ngx_http_ha_optout_sticky_seq(rec, hash);
    ref->server = e->server;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
}


/*
 * Bindings that workers used from their copies (sticky.c), moved to the
 * front of the LRU order as a locked lookup moves them; one whose change
 * counter moved since may be gone, and is left alone
 */

void
ngx_http_ha_optout_sticky_touch(ngx_http_ha_optout_rec_t *rec,
    ngx_http_ha_optout_sticky_touch_t *touch, ngx_uint_t n)
{
    ngx_uint_t                   i;
    ngx_http_ha_optout_entry_t  *e;

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    for (i = 0; i < n; i++) {
        if (*ngx_http_ha_optout_sticky_seq(rec, touch[i].hash)
            != touch[i].seq)
        {
            continue;
        }

        e = touch[i].entry;

        ngx_queue_remove(&e->queue);
        ngx_queue_insert_head(&ngx_http_ha_optout_sh->sticky_queue,
                              &e->queue);
    }

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);
}


/*
 * Bindings go when their flag goes: after any change, drop the entries
 * whose upstream's acting flag is no longer the sticky flag they belong to.
 * Run by the worker-0 timer; cheap when nothing changed.
 */

void
ngx_http_ha_optout_sticky_sweep(ngx_http_ha_optout_main_conf_t *hmcf)
{
    time_t                           now;
    uint64_t                        *ident;
    ngx_uint_t                       i;
    ngx_queue_t                     *q, *next;
    ngx_atomic_uint_t                gen;
    ngx_http_ha_optout_entry_t      *e;
    ngx_http_ha_optout_flag_t       *flag;
    ngx_http_ha_optout_shctx_t      *sh;
    ngx_http_ha_optout_srv_conf_t  **hscfp;

    sh = ngx_http_ha_optout_sh;
    gen = sh->generation;

    if (sh->sticky_swept == gen || sh->sticky_count == 0) {
        sh->sticky_swept = gen;
        return;
    }

    now = ngx_time();
    hscfp = hmcf->upstreams.elts;

    ident = ngx_alloc(hmcf->upstreams.nelts * sizeof(uint64_t),
                      ngx_cycle->log);
    if (ident == NULL) {
        return;
    }

    for (i = 0; i < hmcf->upstreams.nelts; i++) {
        flag = ngx_http_ha_optout_acting(hscfp[i], now);
        ident[i] = (flag && flag->sticky)
                   ? ngx_http_ha_optout_flag_ident(flag) : (uint64_t) -1;
    }

    ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

    for (q = ngx_queue_head(&sh->sticky_queue);
         q != ngx_queue_sentinel(&sh->sticky_queue);
         q = next)
    {
        next = ngx_queue_next(q);
        e = ngx_queue_data(q, ngx_http_ha_optout_entry_t, queue);

        for (i = 0; i < hmcf->upstreams.nelts; i++) {
            if (hscfp[i]->rec == e->owner) {
                break;
            }
        }

        if (i == hmcf->upstreams.nelts || ident[i] != e->value) {
            ngx_http_ha_optout_sticky_drop(e);
        }
    }

    sh->sticky_swept = gen;

    ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

    ngx_free(ident);
}


void
ngx_http_ha_optout_admin_count(ngx_uint_t method, ngx_uint_t status)
{
    ngx_uint_t                        i;
    ngx_http_ha_optout_admin_stat_t  *st;

    st = ngx_http_ha_optout_sh->admin;

    for (i = 0; i < NGX_HA_OPTOUT_ADMIN_CODES * 6; i++) {

        if (st[i].method == method && st[i].status == status) {
            (void) ngx_atomic_fetch_add(&st[i].count, 1);
            return;
        }

        if (st[i].method == 0) {
            ngx_shmtx_lock(&ngx_http_ha_optout_shpool->mutex);

            if (st[i].method == 0) {
                st[i].status = status;
                ngx_memory_barrier();
                st[i].method = method;
            }

            ngx_shmtx_unlock(&ngx_http_ha_optout_shpool->mutex);

            if (st[i].method == method && st[i].status == status) {
                (void) ngx_atomic_fetch_add(&st[i].count, 1);
                return;
            }
        }
    }
}


void
ngx_http_ha_optout_auth_count(const char *reason)
{
    ngx_uint_t  i;

    for (i = 0; ngx_http_ha_optout_auth_reasons[i]; i++) {
        if (ngx_strcmp(ngx_http_ha_optout_auth_reasons[i], reason) == 0) {
            (void) ngx_atomic_fetch_add(&ngx_http_ha_optout_sh
                                        ->auth_failures[i], 1);
            return;
        }
    }
}
