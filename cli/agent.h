
/*
 * ha-optoutctl agent: its state (one entry per upstream, the connection to
 * etcd and to its nginx), shared by agent.c (etcd: reconcile, watch,
 * report, the loop) and agent_nginx.c (what it asks of its nginx).
 */

#ifndef _HOCTL_AGENT_H_INCLUDED_
#define _HOCTL_AGENT_H_INCLUDED_


#include "etcd.h"


#define HOCTL_AGENT_MAX        256
#define HOCTL_AGENT_REPORT_TTL 10       /* seconds, the report's lease */
#define HOCTL_AGENT_REPORT_MS  2000
#define HOCTL_AGENT_CHECK_MS   1000
#define HOCTL_AGENT_RETIRED    8        /* ended leases kept per upstream */


typedef enum {
    HOCTL_UP_ABSENT = 0,        /* no key, or expired: HA on */
    HOCTL_UP_DESIRED,           /* a verified record to apply */
    HOCTL_UP_REFUSED            /* a record that does not verify */
} hoctl_up_state_e;


typedef struct {
    char            name[128];
    int             state;
    int64_t         revision;       /* mod_revision of the key, or 0 */
    json_t         *record;         /* the verified payload */
    time_t          expires_at;
    int64_t         applied;        /* revision held by nginx, 0: none */
    int64_t         failed;         /* revision nginx refused */
    int64_t         denied;         /* revision whose denial was sent */
    int             dirty;
    long long       retry_at;       /* ms: nginx failed, not before */
    const char     *result;         /* applied, refused, removed, error */
    char            message[HOCTL_ERRLEN + 16];
    char            held_by[128];   /* "via" of nginx's flag, if not ours */
    int64_t         retired[HOCTL_AGENT_RETIRED];   /* cleared, replaced */
    int             nretired;
} hoctl_agent_up_t;


typedef struct {
    hoctl_conn_t        local;
    const hoctl_conn_t       *conn;     /* the settings it started with */
    const hoctl_etcd_opts_t  *opts;
    hoctl_conn_t        cli_conn;       /* the command line's, for SIGHUP */
    hoctl_etcd_opts_t   cli_opts;
    hoctl_etcd_t        etcd;
    hoctl_trust_t      *trust;
    int                 ntrust;
    const char         *host;
    char               *flags_key;
    size_t              flags_len;
    hoctl_agent_up_t    ups[HOCTL_AGENT_MAX];
    int                 nups;
    int64_t             revision;   /* processed up to */
    int                 connected;
    int                 nginx_ok;
    int                 reported_dirty;
    int64_t             lease;
    int                 member_written;
    int                 watch_member;   /* the member the watch is on */
} hoctl_agent_t;


/* agent.c */
void hoctl_agent_log(hoctl_agent_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
hoctl_agent_up_t *hoctl_agent_up(hoctl_agent_t *a, const char *name,
    int create);

/* agent_nginx.c */
void hoctl_agent_apply(hoctl_agent_t *a);
void hoctl_agent_check_local(hoctl_agent_t *a);


#endif /* _HOCTL_AGENT_H_INCLUDED_ */
