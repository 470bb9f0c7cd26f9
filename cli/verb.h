
/*
 * ha-optoutctl: what a verb is handed.  options.c turns the command line
 * into hoctl_args_t (the groups below say which verb takes which option),
 * main.c picks the verb from its table and calls its handler; each
 * handler lives in the file of its verb family.
 */

#ifndef _HOCTL_VERB_H_INCLUDED_
#define _HOCTL_VERB_H_INCLUDED_


#include "hoctl.h"
#include "etcd.h"


/* option groups: a verb accepts the groups it names */
#define G_CONN    0x0001    /* --url, --token, --timeout, TLS, --verbose */
#define G_MINT    0x0002    /* --key, --alg, --kid, --aud, --sub, --scope,
                               --iss, --upstreams */
#define G_UP      0x0004    /* --upstream */
#define G_FLAG    0x0008    /* --no-failover, --pin, ... --reason */
#define G_TTL     0x0010    /* --ttl */
#define G_IFM     0x0020    /* --if-match */
#define G_JSON    0x0040    /* --json */
#define G_FLEET   0x0080    /* --fleet */
#define G_AUDIT   0x0100    /* --prev-hash, --state */
#define G_LIMIT   0x0200    /* --limit */
#define G_CLEAR   0x0400    /* --api-only */
#define G_ETCD    0x0800    /* --etcd, --environment, --etcd-* */
#define G_AGENT   0x1000    /* --trust-key, --host */
#define G_WIN     0x2000    /* --window, --reason */
#define G_ID      0x4000    /* --id (approvals) */


typedef struct {
    hoctl_conn_t    conn;
    hoctl_flag_t    flag;
    hoctl_etcd_opts_t  etcd;
    const char     *fleet;
    const char     *prev_hash;
    const char     *state;          /* audit verify --state */
    const char     *window;         /* window end|skip --window */
    int             accept_gaps;    /* audit verify --accept-gaps */
    const char     *ttl;            /* as given, before it means anything */
    long            limit;
    int             url_given;
    int             json;
    int             dry_run;
    char          **args;           /* positional arguments */
    int             nargs;
    const char     *id;             /* approvals --id */
} hoctl_args_t;


typedef struct hoctl_verb_s  hoctl_verb_t;

struct hoctl_verb_s {
    const char     *name;
    unsigned        groups;
    int             posix;          /* stop at the first non-option */
    int           (*handler)(const hoctl_verb_t *v, hoctl_args_t *a);
    const char     *help;
};


/* options.c */
int hoctl_parse(const hoctl_verb_t *v, int argc, char **argv,
    hoctl_args_t *a);

/* main.c */
int hoctl_usage(const hoctl_verb_t *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* the verbs, each in the file of its family */
int hoctl_verb_token(const hoctl_verb_t *v, hoctl_args_t *a);     /* token.c */
int hoctl_verb_whoami(const hoctl_verb_t *v, hoctl_args_t *a);    /* token.c */
int hoctl_verb_status(const hoctl_verb_t *v, hoctl_args_t *a);    /* flags.c */
int hoctl_verb_set(const hoctl_verb_t *v, hoctl_args_t *a);       /* flags.c */
int hoctl_verb_clear(const hoctl_verb_t *v, hoctl_args_t *a);     /* flags.c */
int hoctl_verb_window(const hoctl_verb_t *v, hoctl_args_t *a);    /* window.c */
int hoctl_verb_run(const hoctl_verb_t *v, hoctl_args_t *a);       /* run.c */
int hoctl_verb_fleet(const hoctl_verb_t *v, hoctl_args_t *a);     /* fleet.c */
int hoctl_verb_audit(const hoctl_verb_t *v, hoctl_args_t *a);     /* audit.c */
int hoctl_verb_agent(const hoctl_verb_t *v, hoctl_args_t *a);     /* agent.c */
int hoctl_verb_approvals(const hoctl_verb_t *v, hoctl_args_t *a);
                                                               /* approvals.c */


#endif /* _HOCTL_VERB_H_INCLUDED_ */
