
/*
 * ngx_ha_optout_module: a worker's copy of the sticky bindings it used.
 *
 * The zone's table (store.c) is the source of truth and is shared by the
 * workers; reading it takes the zone mutex and a walk of its rbtree.  A
 * worker keeps, per upstream, the bindings it looked up or made: the
 * client key, the flag it belongs to, its server (index in rec->servers[])
 * and the change counter of the key's hash bucket (rec->sticky_seq) as
 * the zone had it.  Every change of a binding in the zone (bind, rebind,
 * unbind, LRU eviction, the sweep after a flag change, a reload) bumps
 * that counter under the mutex, so a copy whose counter still holds is
 * the zone's binding now: it is used without the mutex.  On any doubt
 * (no copy, another flag, a counter that moved, a key too long to keep)
 * the caller takes the locked path.
 *
 * Uses of copies are batched into the zone's LRU order (one mutex for up
 * to NGX_HA_OPTOUT_STICKY_TOUCHES uses, or after 100 ms), so that an
 * eviction still gives way the least recently used binding.
 */


#include "ngx_http_ha_optout_module.h"


#define NGX_HA_OPTOUT_STICKY_CKEY     64      /* longer keys: not kept */
#define NGX_HA_OPTOUT_STICKY_TOUCHES  64
#define NGX_HA_OPTOUT_STICKY_PROBES   8
#define NGX_HA_OPTOUT_STICKY_SLOTS    32768   /* at most, a worker */


typedef struct {
    uint64_t                            ident;  /* the flag's */
    ngx_atomic_uint_t                   seq;    /* the bucket's, then */
    void                               *entry;  /* the zone's */
    uint32_t                            hash;
    u_char                              server; /* in rec->servers[] */
    u_char                              len;    /* 0: free */
    u_char                              key[NGX_HA_OPTOUT_STICKY_CKEY];
} ngx_http_ha_optout_wbind_t;


typedef struct {
    ngx_http_ha_optout_srv_conf_t      *hscf;
    ngx_uint_t                          mask;   /* slots - 1 */
    ngx_uint_t                          used;
    ngx_uint_t                          max;    /* slots at most */
    ngx_http_ha_optout_wbind_t         *slots;

    /* rec->servers[i] in the resolve cache; cleared when it is re-made */
    ngx_http_ha_optout_slot_t          *peer[NGX_HA_OPTOUT_MAX_SERVERS];

    ngx_uint_t                          ntouch;
    ngx_http_ha_optout_sticky_touch_t   touch[NGX_HA_OPTOUT_STICKY_TOUCHES];
    ngx_event_t                         flush;
} ngx_http_ha_optout_wcache_t;


static ngx_http_ha_optout_wcache_t *ngx_http_ha_optout_wcache(
    ngx_http_ha_optout_srv_conf_t *hscf);
static ngx_http_ha_optout_wbind_t *ngx_http_ha_optout_wcache_slot(
    ngx_http_ha_optout_wcache_t *wc, ngx_str_t *key, uint32_t hash);
static void ngx_http_ha_optout_wcache_grow(ngx_http_ha_optout_wcache_t *wc);
static void ngx_http_ha_optout_wcache_flush(ngx_http_ha_optout_wcache_t *wc);
static void ngx_http_ha_optout_wcache_flush_handler(ngx_event_t *ev);
static void ngx_http_ha_optout_wcache_cleanup(void *data);


/*
 * The kept binding of a key: the resolve cache's slot of its server, or
 * NULL (the caller takes the locked path).  A use is noted for the LRU.
 */

ngx_http_ha_optout_slot_t *
ngx_http_ha_optout_wcache_find(ngx_http_ha_optout_srv_conf_t *hscf,
    uint64_t ident, ngx_str_t *key, uint32_t hash)
{
    ngx_uint_t                          i, n;
    ngx_http_ha_optout_slot_t          *slot;
    ngx_http_ha_optout_wbind_t         *b;
    ngx_http_ha_optout_wcache_t        *wc;
    ngx_http_ha_optout_sticky_touch_t  *t;

    wc = hscf->sticky_cache;

    if (wc == NULL || key->len > NGX_HA_OPTOUT_STICKY_CKEY) {
        return NULL;
    }

    b = NULL;

    for (i = hash, n = 0; n < NGX_HA_OPTOUT_STICKY_PROBES; i++, n++) {
        b = &wc->slots[i & wc->mask];

        if (b->len == 0) {
            return NULL;
        }

        if (b->hash == hash && b->len == key->len
            && ngx_memcmp(b->key, key->data, key->len) == 0)
        {
            break;
        }
    }

    if (b == NULL || n == NGX_HA_OPTOUT_STICKY_PROBES) {
        return NULL;
    }

    /* the zone's binding now: same flag, no change since it was copied */

    if (b->ident != ident
        || b->seq != *ngx_http_ha_optout_sticky_seq(hscf->rec, hash))
    {
        return NULL;
    }

    slot = wc->peer[b->server];
    if (slot == NULL) {
        return NULL;
    }

    t = &wc->touch[wc->ntouch++];
    t->entry = b->entry;
    t->seq = b->seq;
    t->hash = hash;

    if (wc->ntouch == NGX_HA_OPTOUT_STICKY_TOUCHES) {
        ngx_http_ha_optout_wcache_flush(wc);

    } else if (!wc->flush.timer_set) {
        ngx_add_timer(&wc->flush, 100);
    }

    return slot;
}


/*
 * Keeps what the locked path found or made (ref), and, when the resolve
 * cache answered for its server, that slot.
 */

void
ngx_http_ha_optout_wcache_keep(ngx_http_ha_optout_srv_conf_t *hscf,
    uint64_t ident, ngx_str_t *key, uint32_t hash,
    ngx_http_ha_optout_sticky_ref_t *ref, ngx_http_ha_optout_slot_t *slot)
{
    ngx_http_ha_optout_wbind_t   *b;
    ngx_http_ha_optout_wcache_t  *wc;

    if (ref->entry == NULL || key->len > NGX_HA_OPTOUT_STICKY_CKEY
        || ref->server >= NGX_HA_OPTOUT_MAX_SERVERS)
    {
        return;
    }

    wc = ngx_http_ha_optout_wcache(hscf);
    if (wc == NULL) {
        return;
    }

    if (slot) {
        wc->peer[ref->server] = slot;
    }

    if (wc->used * 2 >= wc->mask + 1 && wc->mask + 1 < wc->max) {
        ngx_http_ha_optout_wcache_grow(wc);
    }

    b = ngx_http_ha_optout_wcache_slot(wc, key, hash);

    if (b->len == 0) {
        wc->used++;
    }

    b->ident = ident;
    b->seq = ref->seq;
    b->entry = ref->entry;
    b->hash = hash;
    b->server = (u_char) ref->server;
    b->len = (u_char) key->len;
    ngx_memcpy(b->key, key->data, key->len);
}


/* the resolve cache was re-made or dropped: its slots are gone */

void
ngx_http_ha_optout_wcache_forget_peers(ngx_http_ha_optout_srv_conf_t *hscf)
{
    ngx_http_ha_optout_wcache_t  *wc = hscf->sticky_cache;

    if (wc) {
        ngx_memzero(wc->peer, sizeof(wc->peer));
    }
}


/* the slot a key is kept in: its own, a free one, or the one it evicts */

static ngx_http_ha_optout_wbind_t *
ngx_http_ha_optout_wcache_slot(ngx_http_ha_optout_wcache_t *wc,
    ngx_str_t *key, uint32_t hash)
{
    ngx_uint_t                   i, n;
    ngx_http_ha_optout_wbind_t  *b;

    for (i = hash, n = 0; n < NGX_HA_OPTOUT_STICKY_PROBES; i++, n++) {
        b = &wc->slots[i & wc->mask];

        if (b->len == 0
            || (b->hash == hash && b->len == key->len
                && ngx_memcmp(b->key, key->data, key->len) == 0))
        {
            return b;
        }
    }

    /* no slot is ever freed, so a lookup never stops short of its key */

    return &wc->slots[hash & wc->mask];
}


static ngx_http_ha_optout_wcache_t *
ngx_http_ha_optout_wcache(ngx_http_ha_optout_srv_conf_t *hscf)
{
    ngx_uint_t                    max;
    ngx_pool_cleanup_t           *cln;
    ngx_http_ha_optout_wcache_t  *wc;

    if (hscf->sticky_cache) {
        return hscf->sticky_cache;
    }

    /* the cycle's pool outlives every request of this srv conf */

    cln = ngx_pool_cleanup_add(ngx_cycle->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    wc = ngx_calloc(sizeof(ngx_http_ha_optout_wcache_t), ngx_cycle->log);
    if (wc == NULL) {
        return NULL;
    }

    wc->slots = ngx_calloc(64 * sizeof(ngx_http_ha_optout_wbind_t),
                           ngx_cycle->log);
    if (wc->slots == NULL) {
        ngx_free(wc);
        return NULL;
    }

    /* twice the bindings the zone may hold, within a worker's bound */

    for (max = 64;
         max < 2 * ngx_http_ha_optout_sh->sticky_max
         && max < NGX_HA_OPTOUT_STICKY_SLOTS;
         max <<= 1)
    { /* void */ }

    wc->hscf = hscf;
    wc->mask = 63;
    wc->max = max;

    wc->flush.handler = ngx_http_ha_optout_wcache_flush_handler;
    wc->flush.data = wc;
    wc->flush.log = ngx_cycle->log;
    wc->flush.cancelable = 1;

    cln->handler = ngx_http_ha_optout_wcache_cleanup;
    cln->data = wc;

    hscf->sticky_cache = wc;

    return wc;
}


static void
ngx_http_ha_optout_wcache_grow(ngx_http_ha_optout_wcache_t *wc)
{
    ngx_str_t                    key;
    ngx_uint_t                   i, n;
    ngx_http_ha_optout_wbind_t  *old, *b;

    old = wc->slots;
    n = wc->mask + 1;

    wc->slots = ngx_calloc(2 * n * sizeof(ngx_http_ha_optout_wbind_t),
                           ngx_cycle->log);
    if (wc->slots == NULL) {
        wc->slots = old;
        wc->max = n;
        return;
    }

    wc->mask = 2 * n - 1;
    wc->used = 0;

    for (i = 0; i < n; i++) {
        if (old[i].len == 0) {
            continue;
        }

        key.len = old[i].len;
        key.data = old[i].key;

        b = ngx_http_ha_optout_wcache_slot(wc, &key, old[i].hash);
        if (b->len == 0) {
            wc->used++;
        }

        *b = old[i];
    }

    ngx_free(old);
}


static void
ngx_http_ha_optout_wcache_flush(ngx_http_ha_optout_wcache_t *wc)
{
    if (wc->flush.timer_set) {
        ngx_del_timer(&wc->flush);
    }

    if (wc->ntouch) {
        ngx_http_ha_optout_sticky_touch(wc->hscf->rec, wc->touch, wc->ntouch);
        wc->ntouch = 0;
    }
}


static void
ngx_http_ha_optout_wcache_flush_handler(ngx_event_t *ev)
{
    ngx_http_ha_optout_wcache_flush(ev->data);
}


static void
ngx_http_ha_optout_wcache_cleanup(void *data)
{
    ngx_http_ha_optout_wcache_t  *wc = data;

    if (wc->flush.timer_set) {
        ngx_del_timer(&wc->flush);
    }

    wc->hscf->sticky_cache = NULL;

    ngx_free(wc->slots);
    ngx_free(wc);
}
