
/*
 * ha-optoutctl: command line client for the ngx_ha_optout admin API.
 * What the CLI's files share: the exit codes, the connection to one nginx
 * (hoctl_conn_t: URL, credentials, TLS), an answer (hoctl_resp_t) and the
 * opt-out asked for (hoctl_flag_t); then the calls of http.c, jwt.c,
 * flag.c and the verb families, each under its file's name.  What a verb
 * is handed is verb.h; etcd and the fleet records are etcd.h.
 */

#ifndef _HOCTL_H_INCLUDED_
#define _HOCTL_H_INCLUDED_


#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <sys/types.h>
#include <jansson.h>
#include <curl/curl.h>
#include <yaml.h>


#define HOCTL_VERSION       "0.1.0"

/* exit codes, SPEC section 7 */
#define HOCTL_OK            0
#define HOCTL_REFUSED       1
#define HOCTL_USAGE         2
#define HOCTL_UNREACHABLE   3

#define HOCTL_ERRLEN        1024


/* Everything needed to talk to one nginx instance. */
typedef struct {
    const char     *name;           /* fleet instance name, or NULL */
    const char     *url;            /* admin location prefix */
    const char     *token;          /* static bearer token, or NULL */
    const char     *key;            /* key file to mint tokens with, or NULL */
    const char     *alg;            /* hs256 | es256 | eddsa */
    const char     *kid;
    const char     *aud;
    const char     *sub;
    const char     *scope;
    const char     *iss;            /* "iss" claim, or NULL */
    const char     *upstreams;      /* "app,db": ha_upstreams claim, or NULL */
    long            token_ttl;      /* seconds */
    const char     *cacert;
    const char     *cert;           /* TLS client certificate (PEM) */
    const char     *cert_key;       /* its private key, if not in cert */
    int             insecure;
    long            timeout;        /* seconds, whole request */
    int             verbose;
} hoctl_conn_t;


typedef struct {
    long            status;         /* HTTP status, 0 when unreachable */
    char           *body;
    size_t          len;
    char            etag[64];
    char            ctype[96];      /* Content-Type of the answer */
    char            local_ip[64];   /* the address this side connected from */
    char            error[HOCTL_ERRLEN];  /* filled when rc != HOCTL_OK */
} hoctl_resp_t;


/* The opt-out a set/run/fleet set asks for. */
typedef struct {
    const char     *upstream;
    int             no_failover;
    const char     *pin;
    const char     *pin_selector;
    int             no_replication;
    int             sticky;
    const char     *ttl;
    const char     *reason;
    const char     *if_match;
    int             dry_run;
    int             api_only;       /* clear: only the API layer is asked */
} hoctl_flag_t;


/* http.c */
void hoctl_http_init(void);
int hoctl_request(const hoctl_conn_t *c, const char *method,
    const char *path, const char *body, const char *if_match,
    hoctl_resp_t *r);
void hoctl_resp_free(hoctl_resp_t *r);
char *hoctl_upstream_path(const char *upstream);
int hoctl_fail(int rc, hoctl_resp_t *r);
json_t *hoctl_json_body(hoctl_resp_t *r);
void hoctl_print_raw(hoctl_resp_t *r);
int hoctl_send(const hoctl_conn_t *c, const char *method, const char *path,
    const char *body, const char *if_match, int raw, hoctl_resp_t *r);
int hoctl_get_json(const hoctl_conn_t *c, const char *path, int raw,
    json_t **j);
size_t hoctl_buf_append(char **buf, size_t *len, size_t max,
    const char *data, size_t n);
void hoctl_curl_tls(CURL *curl, const char *cacert, const char *cert,
    const char *key);

/* jwt.c */
char *hoctl_jwt_mint(const hoctl_conn_t *c, char *err, size_t errlen);
char *hoctl_jws_sign(const hoctl_conn_t *c, const char *typ,
    const char *payload, char *err, size_t errlen);

/* flag.c */
int hoctl_flag_check(const hoctl_flag_t *f, int need_ttl, char *err,
    size_t errlen);
char *hoctl_flag_body(const hoctl_flag_t *f);
char *hoctl_flag_summary(json_t *flag);
char *hoctl_time_left(json_t *flag, time_t now);
long hoctl_parse_duration(const char *s);
void hoctl_print_flags_table(json_t *flags, const char *prefix);
char *hoctl_escape(const char *s, int json);
const char *hoctl_safe(const char *s);
int hoctl_clear_outcome_ex(json_t *body, const char *upstream, int api_only,
    int removed, char **line);
int hoctl_clear_outcome(json_t *body, const char *upstream, int api_only,
    char **line);

/* run.c, fleet.c, audit.c */
void hoctl_run_sigchld(int signo);
long long hoctl_now_ms(void);
int hoctl_run_exit(int status);
void hoctl_run_signals(sigset_t *set, sigset_t *old);
pid_t hoctl_run_spawn(char **argv, const sigset_t *mask);
int hoctl_run_take_signal(const sigset_t *set, long long wait, pid_t pid,
    int *status);
int hoctl_run(const hoctl_conn_t *c, const hoctl_flag_t *f, char **argv);
int hoctl_fleet(const hoctl_conn_t *defaults, const char *file,
    const char *action, const hoctl_flag_t *f, int json);
int hoctl_audit_verify(char **files, int nfiles, const char *prev_hash,
    const char *state, int accept_gaps);

/* yaml_doc.c */
int hoctl_yaml_load(FILE *f, const char *file, const char *problem,
    yaml_document_t *doc, char *err, size_t errlen);

/* approvals.c */
int hoctl_approvals(const hoctl_conn_t *c, const char *action,
    const char *id, const char *upstream, int json);
void hoctl_print_approval_requested(json_t *body, const char *upstream);

/* main.c */
extern const char *hoctl_progname;
void hoctl_warn(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


#endif /* _HOCTL_H_INCLUDED_ */
