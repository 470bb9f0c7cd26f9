
/*
 * ngx_ha_optout_module: switch high availability off on purpose, per
 * upstream, for a bounded time.  Shared types of the module's files (the
 * flag, the zone's record and shared context, the confs), constants, then
 * each file's entry points under a comment naming the file, and the small
 * steps both balancers inline on the request path (a server's name
 * matched, the tried bit, sticky_bound()).  A few files keep a header of
 * their own for what only they share: admin.h, approval.h, status.h,
 * token.h, yaml.h.
 */

#ifndef _NGX_HTTP_HA_OPTOUT_MODULE_H_INCLUDED_
#define _NGX_HTTP_HA_OPTOUT_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_ha_optout_token.h"


#define NGX_HA_OPTOUT_VERSION        "0.1.0"

#define NGX_HA_OPTOUT_NAME_LEN       64
#define NGX_HA_OPTOUT_PIN_LEN        128
#define NGX_HA_OPTOUT_SELECTOR_LEN   256
#define NGX_HA_OPTOUT_REASON_LEN     256
#define NGX_HA_OPTOUT_ACTOR_LEN      128
#define NGX_HA_OPTOUT_MAX_SERVERS    32
#define NGX_HA_OPTOUT_APPROVERS_MAX  4          /* approved_by of a flag */
#define NGX_HA_OPTOUT_APPROVALS_MAX  32         /* pending, per zone */
#define NGX_HA_OPTOUT_BODY_MAX       16384
#define NGX_HA_OPTOUT_STICKY_MAX     65536      /* entries per zone */
#define NGX_HA_OPTOUT_STICKY_KEY     255
#define NGX_HA_OPTOUT_STICKY_SEQS    64         /* change counters a rec */
#define NGX_HA_OPTOUT_TEXT_LEN                                              \
    (sizeof("failover=off; pin=; pin_selector=; replication=off; sticky=on; ")\
     + NGX_HA_OPTOUT_PIN_LEN + NGX_HA_OPTOUT_SELECTOR_LEN)

/* where a flag came from: also its layer, lowest precedence first */
#define NGX_HA_OPTOUT_SRC_CONFIG     0
#define NGX_HA_OPTOUT_SRC_WINDOW     1
#define NGX_HA_OPTOUT_SRC_FLEET      2      /* v1/fleet, from etcd */
#define NGX_HA_OPTOUT_SRC_API        3
#define NGX_HA_OPTOUT_SRC_N          4

#define NGX_HA_OPTOUT_VIA_LEN        64     /* the agent's host */

/* audit and metric actions */
typedef enum {
    NGX_HA_OPTOUT_ACT_SET = 0,
    NGX_HA_OPTOUT_ACT_UPDATE,
    NGX_HA_OPTOUT_ACT_CLEAR,
    NGX_HA_OPTOUT_ACT_EXPIRE,
    NGX_HA_OPTOUT_ACT_WINDOW_START,
    NGX_HA_OPTOUT_ACT_WINDOW_END,
    NGX_HA_OPTOUT_ACT_RESTORE,
    NGX_HA_OPTOUT_ACT_RESTORE_REJECTED,
    NGX_HA_OPTOUT_ACT_DENIED,
    NGX_HA_OPTOUT_ACT_WINDOW_SKIP,
    NGX_HA_OPTOUT_ACT_REQUEST,              /* the two-person rule */
    NGX_HA_OPTOUT_ACT_APPROVE,
    NGX_HA_OPTOUT_ACT_REJECT,
    NGX_HA_OPTOUT_ACT_APPROVAL_EXPIRED,
    NGX_HA_OPTOUT_ACT_N
} ngx_http_ha_optout_action_e;


/*
 * The one representation of a flag: in shared memory, in the worker-local
 * view, in config and in the state file.  Fixed size, so it can be copied
 * in and out of the zone under the mutex without pointers.
 */
typedef struct {
    unsigned                    present:1;
    unsigned                    no_failover:1;
    unsigned                    no_replication:1;
    unsigned                    sticky:1;
    unsigned                    source:3;       /* NGX_HA_OPTOUT_SRC_* */

    uint16_t                    pin_len;
    uint16_t                    selector_len;
    uint16_t                    reason_len;
    uint16_t                    actor_len;
    uint16_t                    via_len;        /* fleet: the agent */

    uint64_t                    version;
    uint64_t                    revision;       /* fleet: etcd revision */
    uint64_t                    put_version;    /* the PUT that set it */
    time_t                      set_at;
    time_t                      expires_at;     /* 0: no ttl */

    u_char                      pin[NGX_HA_OPTOUT_PIN_LEN];
    u_char                      selector[NGX_HA_OPTOUT_SELECTOR_LEN];
    u_char                      reason[NGX_HA_OPTOUT_REASON_LEN];
    u_char                      actor[NGX_HA_OPTOUT_ACTOR_LEN];
    u_char                      via[NGX_HA_OPTOUT_VIA_LEN];

    /* the subjects that approved it (policy "approvers") */
    uint16_t                    approvers;
    uint16_t                    approver_len[NGX_HA_OPTOUT_APPROVERS_MAX];
    u_char                      approver[NGX_HA_OPTOUT_APPROVERS_MAX]
                                        [NGX_HA_OPTOUT_ACTOR_LEN];
} ngx_http_ha_optout_flag_t;


/* a write waiting for its approvals, in the zone (approval.c) */
typedef struct {
    uint64_t                    id;             /* 0: a free slot */
    uint64_t                    base;           /* API flag version seen */
    unsigned                    method:2;       /* 1 PUT, 2 PATCH */
    unsigned                    match:1;        /* base must still hold */
    unsigned                    ttl_set:1;
    time_t                      ttl;
    time_t                      requested_at;
    time_t                      expires_at;
    ngx_uint_t                  needed;
    size_t                      upstream_len;
    u_char                      upstream[NGX_HA_OPTOUT_NAME_LEN];
    ngx_http_ha_optout_flag_t   flag;           /* actor: the requester */
} ngx_http_ha_optout_approval_t;


typedef struct {
    u_char                      name[NGX_HA_OPTOUT_NAME_LEN];
    size_t                      len;
    ngx_atomic_t                suppressed;
    ngx_atomic_t                pinned;
} ngx_http_ha_optout_server_stat_t;


/* the upstream's counters when a layer's flag was set (bump() notes it) */
typedef struct {
    uint64_t                    ident;          /* flag_ident(); 0: none */
    ngx_atomic_uint_t           suppressed;
    ngx_atomic_uint_t           pinned;
    ngx_atomic_uint_t           bypassed;
} ngx_http_ha_optout_since_t;


/* per-upstream record in the zone; never freed, so pointers stay valid */
typedef struct {
    ngx_queue_t                 queue;
    u_char                      name[NGX_HA_OPTOUT_NAME_LEN];
    size_t                      name_len;

    ngx_http_ha_optout_flag_t   api;
    ngx_http_ha_optout_flag_t   fleet;
    ngx_http_ha_optout_flag_t   window;

    ngx_atomic_t                failover_suppressed;
    ngx_atomic_t                pinned_requests;
    ngx_atomic_t                replication_bypassed;
    ngx_atomic_t                changes[NGX_HA_OPTOUT_ACT_N];

    ngx_uint_t                  nservers;
    ngx_http_ha_optout_server_stat_t  servers[NGX_HA_OPTOUT_MAX_SERVERS];

    ngx_atomic_t                sticky_entries;

    /* per layer but config's, by source - 1: window, fleet, api */
    ngx_http_ha_optout_since_t  since[NGX_HA_OPTOUT_SRC_N - 1];

    /*
     * the sticky bindings' change counters, by the key's hash: every
     * change of a binding (bind, rebind, unbind, eviction, sweep) and a
     * reload bump them under the zone mutex; a worker's copy of a binding
     * (sticky.c) is trusted without the mutex while its counter holds
     */
    ngx_atomic_uint_t           sticky_seq[NGX_HA_OPTOUT_STICKY_SEQS];
} ngx_http_ha_optout_rec_t;

#define ngx_http_ha_optout_sticky_seq(rec, hash)                              \
    (&(rec)->sticky_seq[(hash) & (NGX_HA_OPTOUT_STICKY_SEQS - 1)])


#define NGX_HA_OPTOUT_ADMIN_CODES    16
#define NGX_HA_OPTOUT_AUTH_REASONS   14
#define NGX_HA_OPTOUT_AUDIT_RING     128
#define NGX_HA_OPTOUT_AUDIT_LINE     4096
#define NGX_HA_OPTOUT_AUDIT_PENDING  512        /* lines waiting for disk */
#define NGX_HA_OPTOUT_DENIED_SLOTS   64
#define NGX_HA_OPTOUT_DENIED_PERIOD  60         /* s: one line per actor */
#define NGX_HA_OPTOUT_LOCK_WAIT      2000       /* ms a write waits */

typedef struct {
    ngx_uint_t                  method;         /* NGX_HTTP_GET ... */
    ngx_uint_t                  status;
    ngx_atomic_t                count;
} ngx_http_ha_optout_admin_stat_t;


/* an API change made and not yet audited: its writer may be killed */
typedef struct {
    ngx_pid_t                   pid;            /* 0: none */
    ngx_uint_t                  action;
    size_t                      upstream_len;
    u_char                      upstream[NGX_HA_OPTOUT_NAME_LEN];
    ngx_http_ha_optout_flag_t   before;
    ngx_http_ha_optout_flag_t   after;
} ngx_http_ha_optout_pending_t;


/*
 * An audit line waiting for the audit log, in the zone: its JSON object
 * (body), and once its write was attempted the chained line (see audit.c).
 */
typedef struct {
    ngx_queue_t                 queue;
    ngx_pid_t                   writing;        /* a write() was tried */
    off_t                       off;            /* where it went */
    size_t                      body_len;
    size_t                      line_len;       /* 0: not chained yet */
    u_char                      hash[65];
    u_char                      data[1];        /* body, then the line */
} ngx_http_ha_optout_audit_line_t;


/* repeated "denied" lines of one actor on one upstream are coalesced */
typedef struct {
    uint32_t                    key;
    time_t                      since;          /* the line written then */
    ngx_uint_t                  suppressed;     /* denials since */
} ngx_http_ha_optout_denied_t;

/* an occurrence of a policy window ended or skipped through the API */
#define NGX_HA_OPTOUT_WSKIPS         64

typedef struct {
    uint32_t                    fp;             /* the window, policy.c */
    time_t                      start;          /* of the occurrence */
    time_t                      end;            /* kept until then */
} ngx_http_ha_optout_wskip_t;


typedef struct {
    ngx_atomic_t                active;         /* api+window flags present */
    ngx_atomic_t                writer;         /* pid of the writer */
    ngx_atomic_t                generation;     /* bumped on every change */
    uint64_t                    version_seq;
    ngx_uint_t                  restored;       /* state file loaded once */
    ngx_queue_t                 upstreams;      /* ngx_http_ha_optout_rec_t */

    ngx_rbtree_t                replay;         /* jti cache */
    ngx_rbtree_node_t           replay_sentinel;
    ngx_queue_t                 replay_queue;   /* oldest first */
    ngx_uint_t                  replay_count;

    ngx_rbtree_t                sticky;         /* client key -> server */
    ngx_rbtree_node_t           sticky_sentinel;
    ngx_queue_t                 sticky_queue;   /* most recent first */
    ngx_uint_t                  sticky_count;
    ngx_uint_t                  sticky_max;     /* a quarter of the zone */
    ngx_atomic_t                sticky_evicted;
    ngx_atomic_uint_t           sticky_swept;   /* generation swept */

    u_char                      audit_hash[65]; /* last line's hash, hex */
    u_char                      audit_gap[65];  /* the state file's, cut */
    ngx_uint_t                  audit_next;     /* ring position */
    ngx_uint_t                  audit_count;
    u_char                     *audit_ring[NGX_HA_OPTOUT_AUDIT_RING];

    ngx_http_ha_optout_admin_stat_t  admin[NGX_HA_OPTOUT_ADMIN_CODES * 6];
    ngx_atomic_t                auth_failures[NGX_HA_OPTOUT_AUTH_REASONS];

    ngx_http_ha_optout_pending_t  pending;

    uint64_t                    state_seq;      /* last snapshot taken */
    uint64_t                    state_saved;    /* last snapshot renamed */
    u_char                      state_audit_hash[65];  /* in the file */

    /* what could not be persisted yet: worker 0's timer retries it */
    ngx_uint_t                  state_dirty;    /* changes not saved */
    ngx_uint_t                  state_failures; /* saves failed since */
    time_t                      retry_at;
    ngx_uint_t                  retry_delay;    /* s, doubles up to 8 */

    ngx_queue_t                 audit_pending;  /* audit_line_t, oldest first */
    ngx_uint_t                  audit_npending;
    ngx_uint_t                  audit_failures; /* flushes failed since */
    ngx_atomic_t                audit_lost;     /* lines given up (alerted) */
    ngx_uint_t                  audit_torn;     /* a cut line could not be
                                                   truncated: next one starts
                                                   on a line of its own */

    ngx_uint_t                  replay_max;     /* half the zone, at most */

    ngx_http_ha_optout_denied_t  denied[NGX_HA_OPTOUT_DENIED_SLOTS];

    ngx_uint_t                  nwskips;
    ngx_http_ha_optout_wskip_t  wskips[NGX_HA_OPTOUT_WSKIPS];

    /* NGX_HA_OPTOUT_APPROVALS_MAX slots, allocated on first use */
    ngx_http_ha_optout_approval_t  *approvals;
} ngx_http_ha_optout_shctx_t;


typedef struct {
    ngx_http_ha_optout_shctx_t *sh;
    ngx_slab_pool_t            *shpool;
    void                       *mcf;
} ngx_http_ha_optout_zone_ctx_t;


/* a server of an upstream as status shows it */
typedef struct {
    ngx_str_t                        address;   /* resolved */
    ngx_str_t                        server;    /* as in its server line */
    ngx_uint_t                       fails;
    ngx_uint_t                       max_fails;
    time_t                           fail_timeout;
    unsigned                         backup:1;
    unsigned                         down:1;
    unsigned                         pinned:1;
    unsigned                         failed:1;  /* nginx skips it now */
} ngx_http_ha_optout_peer_view_t;


/*
 * a round-robin peer as status shows it, for the http twin (status.c) and
 * the stream twin alike: ngx_http_upstream_rr_peer_t and
 * ngx_stream_upstream_rr_peer_t hold these fields by the same names (a
 * macro, not a function, for that reason); "failed" as their get_peer()
 * skips it; "pinned" is the caller's to set
 */
#define ngx_http_ha_optout_peer_view_set(v, peer, bk, now)                    \
    (v)->address = (peer)->name;                                              \
    (v)->server = (peer)->server;                                             \
    (v)->fails = (peer)->fails;                                               \
    (v)->max_fails = (peer)->max_fails;                                       \
    (v)->fail_timeout = (peer)->fail_timeout;                                 \
    (v)->backup = (bk);                                                       \
    (v)->down = (peer)->down ? 1 : 0;                                         \
    (v)->pinned = 0;                                                          \
    (v)->failed = (peer)->max_fails                                           \
                  && (peer)->fails >= (peer)->max_fails                       \
                  && (now) - (peer)->checked <= (peer)->fail_timeout


/* per upstream block (the upstream's srv_conf) */
typedef struct {
    ngx_uint_t                       enabled;   /* "ha_optout" seen */
    ngx_uint_t                       wrapped;   /* our init_upstream ran */
    ngx_str_t                        name;
    ngx_http_upstream_srv_conf_t    *uscf;
    ngx_str_t                        conf_file;
    ngx_uint_t                       conf_line;

    ngx_http_upstream_init_pt        original_init_upstream;
    ngx_http_upstream_init_peer_pt   original_init_peer;

    ngx_http_complex_value_t        *selector;
    ngx_http_complex_value_t        *sticky_key;

    ngx_http_ha_optout_flag_t       *config_flag;   /* ha_optout_flag */
    ngx_http_ha_optout_rec_t        *rec;           /* in the zone */

    /*
     * a stream {} upstream, registered by the stream module under the name
     * "stream:NAME": uscf is NULL, peers are found through find_peer
     */
    void                            *stream_conf;
    ngx_int_t                      (*find_peer)(void *conf, u_char *name,
                                       size_t len, ngx_uint_t *down,
                                       ngx_uint_t *backup);
    ngx_int_t                      (*peer_views)(void *conf,
                                       ngx_array_t *views);

    /* worker-local copy of the zone's layers, see _acting() */
    ngx_atomic_uint_t                generation;
    ngx_http_ha_optout_flag_t        api;
    ngx_http_ha_optout_flag_t        fleet;
    ngx_http_ha_optout_flag_t        window;

    /* their X-HA-Optout text, made once per change, by source */
    uint16_t                         text_len[NGX_HA_OPTOUT_SRC_N];
    u_char                           text[NGX_HA_OPTOUT_SRC_N]
                                         [NGX_HA_OPTOUT_TEXT_LEN];

    /* worker-local: servers by name, ngx_http_ha_optout_cache_t (balancer.c) */
    void                            *resolve_cache;

    /* worker-local: sticky bindings seen (sticky.c) */
    void                            *sticky_cache;

    /* sticky_key= is one variable: its index + 1 (0: not so) */
    ngx_uint_t                       sticky_var;
} ngx_http_ha_optout_srv_conf_t;


/* a name given in config that is resolved to an upstream later */
typedef struct {
    ngx_str_t                        name;
    ngx_str_t                        file;
    ngx_uint_t                       line;
    ngx_http_ha_optout_srv_conf_t  **target;
    ngx_http_ha_optout_flag_t       *flag;      /* ha_optout_flag only */
} ngx_http_ha_optout_ref_t;


typedef struct {
    ngx_shm_zone_t                  *shm_zone;
    ngx_str_t                        environment;
    ngx_str_t                        state_file;
    ngx_str_t                        policy_file;
    void                            *policy;
    ngx_open_file_t                 *audit_log;
    ngx_array_t                      upstreams;  /* srv_conf_t * */
    ngx_array_t                      refs;       /* ngx_http_ha_optout_ref_t */
    ngx_uint_t                       used;       /* any directive seen */
    ngx_uint_t                       config_flags;   /* ha_optout_flag */
    ngx_str_t                        used_file;
    ngx_uint_t                       used_line;
} ngx_http_ha_optout_main_conf_t;


typedef struct {
    ngx_flag_t                       header;
    ngx_http_ha_optout_srv_conf_t   *mirror_gate;
    ngx_uint_t                       admin;
    ngx_uint_t                       status;
    ngx_array_t                     *keys;      /* ngx_http_ha_optout_key_t */
    ngx_str_t                        audience;
    ngx_str_t                        issuer;
    time_t                           token_lifetime;
    ngx_flag_t                       replay;
    ngx_int_t                        request_id_index;
} ngx_http_ha_optout_loc_conf_t;


/* what a request decided about its upstream, memoised in the request ctx */
typedef struct {
    ngx_http_ha_optout_srv_conf_t   *hscf;
    ngx_str_t                        text;      /* header / variable */
    ngx_str_t                        pin_name;  /* when the pin applies */
    uint64_t                         ident;     /* of a sticky flag */
    unsigned                         active:1;  /* 0: HA as usual */
    unsigned                         pin:1;     /* pin applies here */
    unsigned                         no_failover:1;
    unsigned                         sticky:1;
} ngx_http_ha_optout_decision_t;


extern ngx_module_t  ngx_http_ha_optout_module;
extern ngx_http_ha_optout_shctx_t  *ngx_http_ha_optout_sh;
extern ngx_slab_pool_t             *ngx_http_ha_optout_shpool;


/* decide.c: what the request path asks */
ngx_int_t ngx_http_ha_optout_add_variable(ngx_conf_t *cf);
ngx_int_t ngx_http_ha_optout_request_hooks(ngx_conf_t *cf);
ngx_http_ha_optout_srv_conf_t *ngx_http_ha_optout_find_upstream(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *name);
ngx_http_ha_optout_decision_t *ngx_http_ha_optout_decide(
    ngx_http_request_t *r, ngx_http_ha_optout_srv_conf_t *hscf);

/* timer.c: the worker's periodic job */
void ngx_http_ha_optout_timer_start(ngx_cycle_t *cycle);

/* writer.c: the writer lock, persistence of changes */
ngx_int_t ngx_http_ha_optout_writer_trylock(void);
ngx_uint_t ngx_http_ha_optout_writer_held(void);
void ngx_http_ha_optout_writer_unlock(void);
void ngx_http_ha_optout_persist_retry(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t force);

/* store.c */
ngx_int_t ngx_http_ha_optout_zone_attach(ngx_shm_zone_t *shm_zone, void *data,
    ngx_uint_t *fresh);
ngx_int_t ngx_http_ha_optout_zone_records(ngx_shm_zone_t *shm_zone);
size_t ngx_http_ha_optout_rec_size(void);
size_t ngx_http_ha_optout_zone_need(size_t size, ngx_uint_t missing);
size_t ngx_http_ha_optout_zone_advice(size_t need);
ngx_http_ha_optout_rec_t *ngx_http_ha_optout_rec_attach(
    ngx_shm_zone_t *shm_zone, ngx_str_t *name);
void ngx_http_ha_optout_rec_add_server(ngx_http_ha_optout_rec_t *rec,
    ngx_str_t *name);
ngx_http_ha_optout_flag_t *ngx_http_ha_optout_acting(
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now);
ngx_http_ha_optout_flag_t *ngx_http_ha_optout_layer(
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_uint_t source, time_t now);
void ngx_http_ha_optout_refresh(ngx_http_ha_optout_srv_conf_t *hscf);
void ngx_http_ha_optout_set_text(ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_uint_t source, ngx_http_ha_optout_flag_t *flag);
void ngx_http_ha_optout_bump(void);
ngx_uint_t ngx_http_ha_optout_make_room_locked(void);
void ngx_http_ha_optout_count_server(ngx_http_ha_optout_rec_t *rec,
    ngx_str_t *server, ngx_uint_t pinned);
ngx_http_ha_optout_server_stat_t *ngx_http_ha_optout_server_stat(
    ngx_http_ha_optout_rec_t *rec, ngx_str_t *server);
size_t ngx_http_ha_optout_flag_text(ngx_http_ha_optout_flag_t *flag,
    u_char *buf);
ngx_int_t ngx_http_ha_optout_flag_live(ngx_http_ha_optout_flag_t *flag,
    time_t now);
ngx_int_t ngx_http_ha_optout_replay_check_locked(ngx_str_t *jti, time_t exp,
    time_t now);
u_char *ngx_http_ha_optout_zone_full_text_locked(u_char *p, u_char *last,
    ngx_shm_zone_t *shm_zone, time_t now, char *what);
size_t ngx_http_ha_optout_replay_export_locked(u_char *buf, size_t size,
    ngx_uint_t max, time_t now);
void ngx_http_ha_optout_admin_count(ngx_uint_t method, ngx_uint_t status);
uint64_t ngx_http_ha_optout_flag_ident(ngx_http_ha_optout_flag_t *flag);
size_t ngx_http_ha_optout_sticky_get(ngx_http_ha_optout_rec_t *rec,
    uint64_t ident, ngx_str_t *key, u_char *server);
void ngx_http_ha_optout_sticky_set(ngx_http_ha_optout_rec_t *rec,
    uint64_t ident, ngx_str_t *key, ngx_str_t *server);

/* a binding as the zone has it now: what a worker may keep of it */
typedef struct {
    void                       *entry;          /* NULL: none */
    ngx_atomic_uint_t           seq;            /* its change counter */
    ngx_uint_t                  server;         /* in rec->servers[] */
} ngx_http_ha_optout_sticky_ref_t;

/* a use of a kept binding, for the zone's LRU order */
typedef struct {
    void                       *entry;
    ngx_atomic_uint_t           seq;
    uint32_t                    hash;
} ngx_http_ha_optout_sticky_touch_t;

size_t ngx_http_ha_optout_sticky_get_ref(ngx_http_ha_optout_rec_t *rec,
    uint64_t ident, ngx_str_t *key, uint32_t hash, u_char *server,
    ngx_http_ha_optout_sticky_ref_t *ref);
void ngx_http_ha_optout_sticky_set_ref(ngx_http_ha_optout_rec_t *rec,
    uint64_t ident, ngx_str_t *key, uint32_t hash, ngx_str_t *server,
    ngx_http_ha_optout_sticky_ref_t *ref);
void ngx_http_ha_optout_sticky_touch(ngx_http_ha_optout_rec_t *rec,
    ngx_http_ha_optout_sticky_touch_t *touch, ngx_uint_t n);
void ngx_http_ha_optout_sticky_sweep(ngx_http_ha_optout_main_conf_t *hmcf);
void ngx_http_ha_optout_auth_count(const char *reason);
extern const char  *ngx_http_ha_optout_auth_reasons[];
extern const char  *ngx_http_ha_optout_actions[];

/*
 * peer.c: the resolve cache, shared by balancer.c and the stream twin.
 * Per worker and upstream, the servers
 * (http or stream round-robin peers) by name and by server-line text, made
 * once per peer list and re-made when the list changed, so that a pin or a
 * sticky binding finds its server in O(1) of the upstream's size.
 */
typedef struct {
    ngx_str_t                         *key;     /* a copy; NULL: empty */
    uint32_t                           hash;
    ngx_uint_t                         index;   /* in its list: tried bit */
    void                              *list;    /* rr_peers_t */
    void                              *peer;    /* rr_peer_t */
    ngx_http_ha_optout_server_stat_t  *stat;    /* NULL: no counter */
} ngx_http_ha_optout_slot_t;

typedef struct {
    void                              *primary; /* list it was made from */
    ngx_uint_t                         config;  /* *primary->config then */
    ngx_uint_t                         mask;    /* slots - 1 */
    ngx_uint_t                         used;
    ngx_http_ha_optout_slot_t         *last;    /* found last: the pin */
    void                              *names;   /* blocks of key copies */
    u_char                            *pos;     /* free in the newest */
    u_char                            *end;
    ngx_http_ha_optout_slot_t          slots[1];
} ngx_http_ha_optout_cache_t;

ngx_http_ha_optout_cache_t *ngx_http_ha_optout_cache_get(
    ngx_http_ha_optout_srv_conf_t *hscf);
ngx_http_ha_optout_cache_t *ngx_http_ha_optout_cache_new(
    ngx_http_ha_optout_srv_conf_t *hscf, void *primary, ngx_uint_t config,
    ngx_uint_t npeers);
void ngx_http_ha_optout_cache_add(ngx_http_ha_optout_cache_t *cache,
    ngx_http_ha_optout_rec_t *rec, ngx_str_t *key, ngx_str_t *name,
    void *list, void *peer, ngx_uint_t index);
ngx_http_ha_optout_slot_t *ngx_http_ha_optout_cache_find(
    ngx_http_ha_optout_cache_t *cache, u_char *name, size_t len);
void ngx_http_ha_optout_cache_drop(ngx_http_ha_optout_srv_conf_t *hscf);
void ngx_http_ha_optout_count_pinned(ngx_http_ha_optout_rec_t *rec,
    ngx_str_t *name, ngx_http_ha_optout_slot_t *slot, void *peer);
void ngx_http_ha_optout_held_retry(ngx_log_t *log,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *name, ngx_uint_t pin,
    ngx_uint_t no_failover);
void ngx_http_ha_optout_held_backup(ngx_log_t *log,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *name);

/* sticky.c: a worker's copy of the sticky bindings it used */
ngx_http_ha_optout_slot_t *ngx_http_ha_optout_wcache_find(
    ngx_http_ha_optout_srv_conf_t *hscf, uint64_t ident, ngx_str_t *key,
    uint32_t hash);
void ngx_http_ha_optout_wcache_keep(ngx_http_ha_optout_srv_conf_t *hscf,
    uint64_t ident, ngx_str_t *key, uint32_t hash,
    ngx_http_ha_optout_sticky_ref_t *ref, ngx_http_ha_optout_slot_t *slot);
void ngx_http_ha_optout_wcache_forget_peers(
    ngx_http_ha_optout_srv_conf_t *hscf);


/*
 * peer.c's steps both balancers inline on the request path: they read
 * strings and bits, never a round-robin peer (whose types differ)
 */

/* the name is one of a server's two (its address, its server-line text) */

static ngx_inline ngx_uint_t
ngx_http_ha_optout_named(ngx_str_t *a, ngx_str_t *b, u_char *name,
    size_t len)
{
    return (a->len == len && ngx_strncmp(a->data, name, len) == 0)
           || (b->len == len && ngx_strncmp(b->data, name, len) == 0);
}


/* the peer at index i of its list is tried, as round robin marks it */

static ngx_inline void
ngx_http_ha_optout_tried(uintptr_t *tried, ngx_uint_t i)
{
    ngx_uint_t  n;

    n = i / (8 * sizeof(uintptr_t));
    tried[n] |= (uintptr_t) 1 << i % (8 * sizeof(uintptr_t));
}


/*
 * The server a sticky client's key is bound to: its name's length into
 * server (0: not bound).  The key is cut to what the table keeps, which
 * sticky_set() then stores.
 */

static ngx_inline size_t
ngx_http_ha_optout_sticky_bound(ngx_http_ha_optout_rec_t *rec,
    uint64_t ident, ngx_str_t *key, u_char *server)
{
    if (key->len > NGX_HA_OPTOUT_STICKY_KEY) {
        key->len = NGX_HA_OPTOUT_STICKY_KEY;
    }

    return ngx_http_ha_optout_sticky_get(rec, ident, key, server);
}


/* find_peer's answer for the server it found: NGX_OK, or NGX_BUSY if down */

static ngx_inline ngx_int_t
ngx_http_ha_optout_peer_found(ngx_uint_t is_down, ngx_uint_t is_backup,
    ngx_uint_t *down, ngx_uint_t *backup)
{
    if (down) {
        *down = is_down;
    }

    if (backup) {
        *backup = is_backup;
    }

    return is_down ? NGX_BUSY : NGX_OK;
}


/* balancer.c */
char *ngx_http_ha_optout_wrap(ngx_conf_t *cf,
    ngx_http_ha_optout_srv_conf_t *hscf);
void ngx_http_ha_optout_wrap_peer(ngx_http_ha_optout_srv_conf_t *hscf);
ngx_int_t ngx_http_ha_optout_find_peer(ngx_http_upstream_srv_conf_t *uscf,
    u_char *name, size_t len, ngx_uint_t *down, ngx_uint_t *backup);
ngx_int_t ngx_http_ha_optout_upstream_peer(ngx_http_ha_optout_srv_conf_t *hscf,
    u_char *name, size_t len, ngx_uint_t *down, ngx_uint_t *backup);
void *ngx_http_ha_optout_other_srv_conf(ngx_conf_t *cf, void **srv_conf,
    char *module);

/* json.c */
ngx_int_t ngx_http_ha_optout_flag_parse(ngx_pool_t *pool, u_char *body,
    size_t len, ngx_uint_t patch, ngx_http_ha_optout_flag_t *flag,
    time_t *ttl, ngx_uint_t *ttl_set, ngx_str_t *code, ngx_str_t *message);
ngx_int_t ngx_http_ha_optout_parse_ttl(u_char *p, size_t len, time_t *ttl);
void *ngx_http_ha_optout_flag_json(ngx_http_ha_optout_flag_t *flag,
    ngx_str_t *upstream, ngx_str_t *environment);
ngx_int_t ngx_http_ha_optout_json_out(ngx_pool_t *pool, void *json,
    ngx_str_t *out);
u_char *ngx_http_ha_optout_time_iso(u_char *buf, time_t t);
ngx_int_t ngx_http_ha_optout_header_safe(u_char *p, size_t len);
size_t ngx_http_ha_optout_utf8_prefix(u_char *p, size_t len);
u_char *ngx_http_ha_optout_escape(u_char *dst, size_t size, u_char *src,
    size_t len);

/* admin.c */
ngx_int_t ngx_http_ha_optout_admin_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_ha_optout_admin_error(ngx_http_request_t *r,
    ngx_uint_t status, char *code, ngx_str_t *message);
ngx_int_t ngx_http_ha_optout_admin_errorf(ngx_http_request_t *r,
    ngx_uint_t status, char *code, char *text);
ngx_int_t ngx_http_ha_optout_admin_send(ngx_http_request_t *r,
    ngx_uint_t status, void *json, uint64_t etag);
ngx_table_elt_t *ngx_http_ha_optout_header_out(ngx_http_request_t *r,
    char *key, u_char *value, size_t len);
ngx_int_t ngx_http_ha_optout_admin_etag(ngx_http_request_t *r,
    uint64_t version);
ngx_int_t ngx_http_ha_optout_if_match(ngx_http_request_t *r,
    uint64_t version);
ngx_str_t *ngx_http_ha_optout_request_id(ngx_http_request_t *r);

/* approval.c (the table and its rules), approval_api.c (v1/approvals) */
ngx_int_t ngx_http_ha_optout_approval_request(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_http_ha_optout_srv_conf_t *hscf,
    ngx_http_ha_optout_flag_t *flag, ngx_uint_t ttl_set, time_t ttl,
    ngx_uint_t commit);
ngx_int_t ngx_http_ha_optout_approval_handler(ngx_http_request_t *r,
    ngx_http_ha_optout_claims_t *claims, ngx_str_t *id);
void ngx_http_ha_optout_approvals_tick(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);
void *ngx_http_ha_optout_approvals_json(ngx_str_t *upstream, time_t now);
ngx_uint_t ngx_http_ha_optout_approvals_count(ngx_str_t *upstream,
    time_t now);
void *ngx_http_ha_optout_approval_json(ngx_http_ha_optout_approval_t *a,
    ngx_str_t *environment);
ngx_int_t ngx_http_ha_optout_approval_denied_upstream(ngx_http_request_t *r,
    ngx_str_t *upstream);
ngx_uint_t ngx_http_ha_optout_approval_narrows(
    ngx_http_ha_optout_flag_t *flag, ngx_http_ha_optout_flag_t *cur,
    time_t now);
ngx_uint_t ngx_http_ha_optout_approvals_snapshot(
    ngx_http_ha_optout_approval_t *out);
ngx_int_t ngx_http_ha_optout_approval_restore(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_http_ha_optout_approval_t *a,
    time_t now, ngx_log_t *log, ngx_uint_t locked);

/* status.c */
ngx_int_t ngx_http_ha_optout_status_handler(ngx_http_request_t *r);

/* audit.c */
u_char *ngx_http_ha_optout_drop_cause(u_char *p, u_char *last,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *upstream,
    ngx_http_ha_optout_flag_t *flag, time_t now);
void ngx_http_ha_optout_audit_chain_init(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_shctx_t *sh, ngx_log_t *log);
void ngx_http_ha_optout_audit_gap_locked(ngx_http_ha_optout_main_conf_t *hmcf,
    u_char *expected, ngx_log_t *log);
ngx_int_t ngx_http_ha_optout_audit(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id);
ngx_int_t ngx_http_ha_optout_audit_cause(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_log_t *log, ngx_uint_t action,
    ngx_str_t *upstream, ngx_str_t *actor, ngx_str_t *client,
    ngx_str_t *reason, ngx_http_ha_optout_flag_t *before,
    ngx_http_ha_optout_flag_t *after, ngx_str_t *request_id,
    ngx_str_t *cause);
char *ngx_http_ha_optout_audit_build(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log, ngx_uint_t action, ngx_str_t *upstream,
    ngx_str_t *actor, ngx_str_t *client, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *before, ngx_http_ha_optout_flag_t *after,
    ngx_str_t *request_id);
ngx_http_ha_optout_audit_line_t *ngx_http_ha_optout_audit_enqueue_locked(
    char *body);
void ngx_http_ha_optout_audit_unqueue_locked(
    ngx_http_ha_optout_audit_line_t *line);
ngx_int_t ngx_http_ha_optout_audit_queued_locked(
    ngx_http_ha_optout_audit_line_t *line);
ngx_int_t ngx_http_ha_optout_audit_flush(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);
void ngx_http_ha_optout_audit_lost(ngx_log_t *log, char *body);
void ngx_http_ha_optout_audit_warn_line(ngx_log_t *log, ngx_uint_t action,
    ngx_str_t *upstream, ngx_str_t *actor, ngx_str_t *reason,
    ngx_http_ha_optout_flag_t *flag);
void ngx_http_ha_optout_audit_mode(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);

/* yaml.c: the libyaml helpers (the rest in ngx_http_ha_optout_yaml.h) */
ngx_fd_t ngx_http_ha_optout_open_regular(u_char *name, ngx_uint_t nofollow,
    ngx_file_info_t *fi, const char **why);

/* state.c: the state file */
ngx_int_t ngx_http_ha_optout_state_save(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);
ngx_int_t ngx_http_ha_optout_state_save_restore(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_log_t *log);
void ngx_http_ha_optout_state_restore(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);

/* policy.c: the policy file and its windows */
char *ngx_http_ha_optout_policy_load(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf);
ngx_int_t ngx_http_ha_optout_policy_resolve(ngx_conf_t *cf,
    ngx_http_ha_optout_main_conf_t *hmcf);
ngx_int_t ngx_http_ha_optout_policy_check(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *upstream,
    ngx_http_ha_optout_flag_t *flag, ngx_uint_t ttl_set, time_t ttl,
    ngx_str_t *message, ngx_pool_t *pool);
ngx_uint_t ngx_http_ha_optout_policy_approvers(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *upstream,
    time_t *approval_ttl);
void ngx_http_ha_optout_windows_tick(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_log_t *log);
ngx_int_t ngx_http_ha_optout_window_act(ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, ngx_str_t *window, ngx_uint_t skip,
    ngx_http_ha_optout_flag_t *occ, ngx_str_t *name, ngx_uint_t *status,
    char **code, ngx_str_t *message, ngx_pool_t *pool);
void ngx_http_ha_optout_window_unact(ngx_http_ha_optout_flag_t *occ);
ngx_uint_t ngx_http_ha_optout_policy_protected(
    ngx_http_ha_optout_main_conf_t *hmcf, ngx_str_t *upstream);
ngx_int_t ngx_http_ha_optout_policy_next_window(
    ngx_http_ha_optout_main_conf_t *hmcf,
    ngx_http_ha_optout_srv_conf_t *hscf, time_t now, time_t *start,
    time_t *end, ngx_http_ha_optout_flag_t **flag);


#endif /* _NGX_HTTP_HA_OPTOUT_MODULE_H_INCLUDED_ */
