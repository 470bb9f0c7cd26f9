/*
 * bench/sizes.c: zone bytes of the module's shared structures, from the
 * header, rounded the way ngx_slab_alloc rounds (powers of two from 8 up to
 * half a page, whole pages above).  Built by bench/run.sh against the
 * module's build tree; prints "name sizeof slab_bytes" lines.
 */

#include "ngx_http_ha_optout_module.h"


/* a copy of the private struct in ngx_http_ha_optout_store.c */
typedef struct {
    ngx_rbtree_node_t   node;
    ngx_queue_t         queue;
    time_t              expires;
    u_char              len;
    u_char              jti[1];
} bench_replay_t;


static size_t
slab_bytes(size_t size, size_t page)
{
    size_t  s;

    if (size > page / 2) {
        return (size + page - 1) / page * page;
    }

    for (s = 8; s < size; s <<= 1) { /* void */ }

    return s;
}


int
main(int argc, char **argv)
{
    size_t  page = 4096, jti = 32;

    if (argc > 1) {
        page = (size_t) atoi(argv[1]);
    }

#define P(name, sz)                                                          \
    printf("%s %zu %zu\n", name, (size_t) (sz), slab_bytes(sz, page))

    P("flag", sizeof(ngx_http_ha_optout_flag_t));
    P("server_stat", sizeof(ngx_http_ha_optout_server_stat_t));
    P("upstream_rec", sizeof(ngx_http_ha_optout_rec_t));
    P("shctx", sizeof(ngx_http_ha_optout_shctx_t));
    P("replay_entry_jti32", sizeof(bench_replay_t) + jti);
    P("replay_entry_jti255", sizeof(bench_replay_t) + 255);
    P("worker_srv_conf", sizeof(ngx_http_ha_optout_srv_conf_t));
    P("decision", sizeof(ngx_http_ha_optout_decision_t));

    return 0;
}
