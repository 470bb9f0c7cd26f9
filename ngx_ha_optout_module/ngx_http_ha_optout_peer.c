
/*
 * ngx_ha_optout_module: what the http balancer and its stream twin share
 * about an upstream's servers, none of it touching nginx's round-robin
 * peer types (ngx_http_upstream_rr_peer_t and ngx_stream_upstream_rr_peer_t
 * differ in layout: sid, ssl_session and the least_time fields sit at
 * other offsets, and each side has its own zone build flag): the resolve
 * cache (a server by name in O(1)), a pinned request's counters and the
 * lines of a failover held back; the steps both inline on the request
 * path (a name's match, the tried bit, the sticky lookup) are static
 * inline in ngx_http_ha_optout_module.h.  The
 * walks over the peer lists stay twinned in balancer.c and the stream
 * module, as nginx's own http and stream upstream modules are.
 */


#include "ngx_http_ha_optout_module.h"


static void ngx_http_ha_optout_cache_free(ngx_http_ha_optout_cache_t *cache);
static void ngx_http_ha_optout_cache_cleanup(void *data);
static ngx_str_t *ngx_http_ha_optout_cache_name(
    ngx_http_ha_optout_cache_t *cache, ngx_str_t *key);


/* the key copies of a cache come in blocks of this size (or one name) */
#define NGX_HA_OPTOUT_CACHE_NAMES  8192


/*
 * The table itself, for http and stream alike: open addressing, at most
 * half full, in memory of its own (ngx_alloc) that a re-made cache frees
 * and the cycle's pool frees at the end.  The names it is keyed by are
 * copied into that memory too: a lookup reads nothing of the peers, which
 * a "resolve" server may free at any time in another worker (1.27.3+); a
 * peer is read only once its list is locked and its change counter is
 * the cache's.
 */

ngx_http_ha_optout_cache_t *
ngx_http_ha_optout_cache_get(ngx_http_ha_optout_srv_conf_t *hscf)
{
    return hscf->resolve_cache
           ? *(ngx_http_ha_optout_cache_t **) hscf->resolve_cache : NULL;
}


ngx_http_ha_optout_cache_t *
ngx_http_ha_optout_cache_new(ngx_http_ha_optout_srv_conf_t *hscf,
    void *primary, ngx_uint_t config, ngx_uint_t npeers)
{
    size_t                       size;
    ngx_uint_t                   n;
    ngx_pool_cleanup_t          *cln;
    ngx_http_ha_optout_cache_t  *cache, **holder;

    holder = hscf->resolve_cache;

    if (holder == NULL) {
        /* the cycle's pool outlives every request of this srv conf */

        cln = ngx_pool_cleanup_add(ngx_cycle->pool, sizeof(void *));
        if (cln == NULL) {
            return NULL;
        }

        holder = cln->data;
        *holder = NULL;

        cln->handler = ngx_http_ha_optout_cache_cleanup;
        hscf->resolve_cache = holder;
    }

    ngx_http_ha_optout_cache_drop(hscf);

    /* two names a peer (address, server text), at most half full */

    for (n = 8; n < 4 * npeers; n <<= 1) { /* void */ }

    size = sizeof(ngx_http_ha_optout_cache_t)
           + (n - 1) * sizeof(ngx_http_ha_optout_slot_t);

    cache = ngx_alloc(size, ngx_cycle->log);
    if (cache == NULL) {
        return NULL;
    }

    ngx_memzero(cache, size);

    cache->primary = primary;
    cache->config = config;
    cache->mask = n - 1;

    *holder = cache;

    return cache;
}


void
ngx_http_ha_optout_cache_drop(ngx_http_ha_optout_srv_conf_t *hscf)
{
    ngx_http_ha_optout_cache_t  **holder;

    holder = hscf->resolve_cache;

    if (holder && *holder) {
        ngx_http_ha_optout_cache_free(*holder);
        *holder = NULL;
    }
}


static void
ngx_http_ha_optout_cache_free(ngx_http_ha_optout_cache_t *cache)
{
    void  **block, **next;

    for (block = cache->names; block; block = next) {
        next = *block;
        ngx_free(block);
    }

    ngx_free(cache);
}


static void
ngx_http_ha_optout_cache_cleanup(void *data)
{
    ngx_http_ha_optout_cache_t  **holder = data;

    if (*holder) {
        ngx_http_ha_optout_cache_free(*holder);
        *holder = NULL;
    }
}


/* a copy of a key, in the cache's blocks; NULL: out of memory */

static ngx_str_t *
ngx_http_ha_optout_cache_name(ngx_http_ha_optout_cache_t *cache,
    ngx_str_t *key)
{
    size_t      size, n;
    void      **block;
    ngx_str_t  *copy;

    size = ngx_align(sizeof(ngx_str_t) + key->len, sizeof(void *));

    if ((size_t) (cache->end - cache->pos) < size) {
        n = ngx_max(sizeof(void *) + size, NGX_HA_OPTOUT_CACHE_NAMES);

        block = ngx_alloc(n, ngx_cycle->log);
        if (block == NULL) {
            return NULL;
        }

        *block = cache->names;
        cache->names = block;
        cache->pos = (u_char *) (block + 1);
        cache->end = (u_char *) block + n;
    }

    copy = (ngx_str_t *) cache->pos;
    cache->pos += size;

    copy->len = key->len;
    copy->data = (u_char *) (copy + 1);
    ngx_memcpy(copy->data, key->data, key->len);

    return copy;
}


/*
 * Names are short ("10.0.0.1:8080", "backend-3.example:80"): hashed and
 * compared a word at a time, the last word overlapping the one before it,
 * without a call
 */

static ngx_inline uint64_t
ngx_http_ha_optout_name_word(u_char *p, size_t len, size_t i)
{
    uint64_t  w;

    if (len < 8) {
        w = 0;

        while (len--) {
            w = (w << 8) | p[len];
        }

        return w;
    }

    ngx_memcpy(&w, p + (i + 8 <= len ? i : len - 8), 8);

    return w;
}


static ngx_inline uint32_t
ngx_http_ha_optout_name_hash(u_char *p, size_t len)
{
    size_t    i;
    uint64_t  h;

    h = len * 0x9e3779b97f4a7c15ULL;

    if (len >= 8 && len <= 16) {
        /* most addresses: "10.0.0.1:8080" is two overlapping words */

        h = (h ^ ngx_http_ha_optout_name_word(p, len, 0))
            * 0x9e3779b97f4a7c15ULL;
        h = (h ^ (h >> 29) ^ ngx_http_ha_optout_name_word(p, len, 8))
            * 0x9e3779b97f4a7c15ULL;

        return (uint32_t) (h ^ (h >> 32));
    }

    i = 0;

    do {
        h = (h ^ ngx_http_ha_optout_name_word(p, len, i))
            * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
        i += 8;
    } while (i < len);

    return (uint32_t) (h ^ (h >> 32));
}


static ngx_inline ngx_uint_t
ngx_http_ha_optout_name_eq(u_char *a, u_char *b, size_t len)
{
    uint64_t  x0, x1, y0, y1;

    if (len >= 8 && len <= 16) {
        ngx_memcpy(&x0, a, 8);
        ngx_memcpy(&y0, b, 8);
        ngx_memcpy(&x1, a + len - 8, 8);
        ngx_memcpy(&y1, b + len - 8, 8);

        return x0 == y0 && x1 == y1;
    }

    return ngx_memcmp(a, b, len) == 0;
}


/* key: a name of the peer; name: its address, which the counters use */

void
ngx_http_ha_optout_cache_add(ngx_http_ha_optout_cache_t *cache,
    ngx_http_ha_optout_rec_t *rec, ngx_str_t *key, ngx_str_t *name,
    void *list, void *peer, ngx_uint_t index)
{
    uint32_t                    hash;
    ngx_uint_t                  k;
    ngx_http_ha_optout_slot_t  *slot;

    if (key->len == 0 || 2 * (cache->used + 1) > cache->mask + 1) {
        /* a list longer than its count said: not cached, walked */
        return;
    }

    hash = ngx_http_ha_optout_name_hash(key->data, key->len);

    for (k = hash & cache->mask; /* void */; k = (k + 1) & cache->mask) {
        slot = &cache->slots[k];

        if (slot->key == NULL) {
            break;
        }

        if (slot->hash == hash && slot->key->len == key->len
            && ngx_http_ha_optout_name_eq(slot->key->data, key->data,
                                          key->len))
        {
            return;
        }
    }

    slot->key = ngx_http_ha_optout_cache_name(cache, key);
    if (slot->key == NULL) {
        /* not cached: walked */
        return;
    }

    slot->hash = hash;
    slot->index = index;
    slot->list = list;
    slot->peer = peer;
    slot->stat = rec ? ngx_http_ha_optout_server_stat(rec, name) : NULL;

    cache->used++;
}


ngx_http_ha_optout_slot_t *
ngx_http_ha_optout_cache_find(ngx_http_ha_optout_cache_t *cache,
    u_char *name, size_t len)
{
    uint32_t                    hash;
    ngx_uint_t                  k;
    ngx_http_ha_optout_slot_t  *slot;

    /* a pin asks for the same name request after request */

    slot = cache->last;

    if (slot && slot->key->len == len
        && ngx_http_ha_optout_name_eq(slot->key->data, name, len))
    {
        return slot;
    }

    hash = ngx_http_ha_optout_name_hash(name, len);

    for (k = hash & cache->mask; /* void */; k = (k + 1) & cache->mask) {
        slot = &cache->slots[k];

        if (slot->key == NULL) {
            return NULL;
        }

        if (slot->hash == hash && slot->key->len == len
            && ngx_http_ha_optout_name_eq(slot->key->data, name, len))
        {
            cache->last = slot;
            return slot;
        }
    }
}


/*
 * A pinned request's counters: the server's without a search by name when
 * the cache chose the peer (and its counter still names it: a reload may
 * give the zone's slot to another server).  A server that had no counter
 * (beyond NGX_HA_OPTOUT_MAX_SERVERS) counts in the upstream's total only,
 * as a search would have found none.
 */

void
ngx_http_ha_optout_count_pinned(ngx_http_ha_optout_rec_t *rec,
    ngx_str_t *name, ngx_http_ha_optout_slot_t *slot, void *peer)
{
    ngx_http_ha_optout_server_stat_t  *st;

    if (slot == NULL || slot->peer != peer) {
        ngx_http_ha_optout_count_server(rec, name, 1);
        return;
    }

    st = slot->stat;

    if (st && !(st->len == name->len
                && ngx_http_ha_optout_name_eq(st->name, name->data,
                                              name->len)))
    {
        ngx_http_ha_optout_count_server(rec, name, 1);
        return;
    }

    /* as ngx_http_ha_optout_count_server() counts a pinned request */

    (void) ngx_atomic_fetch_add(&rec->pinned_requests, 1);

    if (st) {
        (void) ngx_atomic_fetch_add(&st->pinned, 1);
    }
}


/*
 * A failover a pin, failover off or sticky held back (a failed server
 * that nginx would have retried elsewhere): said, and counted on the
 * server
 */

void
ngx_http_ha_optout_held_retry(ngx_log_t *log,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *name, ngx_uint_t pin,
    ngx_uint_t no_failover)
{
    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "ha_optout: upstream \"%V\" would have failed over "
                  "from %V (%s)", &hscf->name, name,
                  pin ? "pinned" : no_failover ? "failover off"
                                               : "sticky");

    ngx_http_ha_optout_count_server(hscf->rec, name, 0);
}


/* round robin's switch to a backup server, refused while failover is off */

void
ngx_http_ha_optout_held_backup(ngx_log_t *log,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *name)
{
    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "ha_optout: upstream \"%V\" would have failed over to "
                  "backup %V (failover off)", &hscf->name, name);

    ngx_http_ha_optout_count_server(hscf->rec, name, 0);
}
