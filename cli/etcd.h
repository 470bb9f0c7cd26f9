
/*
 * ha-optoutctl: a small client of etcd's v3 JSON gateway (SPEC section 11),
 * the fleet's signed records, and the verbs built on them.
 */

#ifndef _HOCTL_ETCD_H_INCLUDED_
#define _HOCTL_ETCD_H_INCLUDED_


#include <stdint.h>
#include <curl/curl.h>
#include <jansson.h>

#include "hoctl.h"


#define HOCTL_ETCD_MAX_URLS    16
#define HOCTL_ETCD_MAX_TRUST   16
#define HOCTL_ETCD_PREFIX      "/ha-optout"


/* what the command line says about etcd */
typedef struct {
    const char     *etcd;           /* URL[,URL...] */
    const char     *environment;
    const char     *prefix;
    const char     *user;
    const char     *password_file;
    const char     *cacert;
    const char     *cert;
    const char     *key;
    const char     *trust[HOCTL_ETCD_MAX_TRUST];
    int             ntrust;
    const char     *host;
    const char     *config;         /* agent: YAML file */
    long            timeout;
    int             verbose;
} hoctl_etcd_opts_t;


typedef struct {
    char           *urls[HOCTL_ETCD_MAX_URLS];
    int             nurls;
    int             cur;            /* the member that answered last */
    const char     *user;
    char           *password;
    char           *auth;           /* simple token from authenticate */
    const char     *cacert;
    const char     *cert;
    const char     *key;
    long            timeout;        /* seconds per request */
    int             verbose;
    char           *prefix;         /* "<prefix>/<environment>/" */
} hoctl_etcd_t;


/* one streaming watch, driven by hoctl_etcd_watch_poll() */
typedef struct {
    CURLM          *multi;
    CURL           *curl;
    struct curl_slist  *headers;
    char           *url;
    char           *body;
    char           *buf;
    size_t          len;
    size_t          size;
    int             done;
    int             created;
    void          (*handler)(void *ctx, json_t *result);
    void           *ctx;
} hoctl_etcd_watch_t;


typedef struct {
    const char     *key;            /* without the "<prefix>/<env>/" */
    json_t         *value;          /* the record, parsed */
} hoctl_record_t;


/* etcd.c */
int hoctl_etcd_init(hoctl_etcd_t *e, const hoctl_etcd_opts_t *o,
    char *err, size_t errlen);
void hoctl_etcd_free(hoctl_etcd_t *e);
int hoctl_etcd_call(hoctl_etcd_t *e, const char *path, json_t *req,
    json_t **resp, char *err, size_t errlen);
int hoctl_etcd_range(hoctl_etcd_t *e, const char *key, int prefix,
    json_t **kvs, int64_t *revision, char *err, size_t errlen);
int hoctl_etcd_lease_grant(hoctl_etcd_t *e, long ttl, int64_t *id,
    char *err, size_t errlen);
int hoctl_etcd_lease_keepalive(hoctl_etcd_t *e, int64_t id, long *ttl,
    char *err, size_t errlen);
int hoctl_etcd_lease_revoke(hoctl_etcd_t *e, int64_t id, char *err,
    size_t errlen);
int hoctl_etcd_watch_start(hoctl_etcd_t *e, hoctl_etcd_watch_t *w,
    const char *key, int64_t start_revision, char *err, size_t errlen);
int hoctl_etcd_watch_poll(hoctl_etcd_watch_t *w, int timeout_ms);
void hoctl_etcd_watch_stop(hoctl_etcd_watch_t *w);

char *hoctl_b64(const void *in, size_t len);
unsigned char *hoctl_unb64(const char *in, size_t *len);
int64_t hoctl_json_int(json_t *v);
json_t *hoctl_json_str_int(int64_t n);
char *hoctl_kv_key(json_t *kv);
char *hoctl_kv_value(json_t *kv, size_t *len);
char *hoctl_range_end(const char *prefix);
char *hoctl_range_end_b64(const char *end);

/* record.c */
char *hoctl_record_sign(const hoctl_conn_t *c, json_t *record, char *err,
    size_t errlen);
typedef struct hoctl_trust_s  hoctl_trust_t;
hoctl_trust_t *hoctl_trust_load(const char *const *files, int n, char *err,
    size_t errlen);
void hoctl_trust_free(hoctl_trust_t *t);
const char *hoctl_trust_unsafe_text(const hoctl_trust_t *t);
json_t *hoctl_record_verify(const char *value, const hoctl_trust_t *trust,
    char *err, size_t errlen);
json_t *hoctl_record_peek(const char *value);
json_t *hoctl_record_new(const hoctl_conn_t *c, const hoctl_flag_t *f,
    const char *environment, time_t set_at, long ttl);
void hoctl_iso_time(time_t t, char *buf, size_t size);
time_t hoctl_parse_iso(const char *s);

/* fleet_etcd.c */
char *hoctl_flag_key(hoctl_etcd_t *e, const char *upstream);
int hoctl_etcd_fail(int rc, const char *err);
int hoctl_etcd_set(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, int json);
int hoctl_etcd_clear(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, int json);
int hoctl_etcd_run(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_flag_t *f, char **argv);

/* fleet_status.c */
int hoctl_etcd_status(const hoctl_etcd_opts_t *o, const char *upstream,
    int json);
int hoctl_etcd_fleet_status(const hoctl_etcd_opts_t *o, const char *upstream,
    int json);

/* agent.c */
int hoctl_agent(const hoctl_conn_t *c, const hoctl_etcd_opts_t *o,
    const hoctl_conn_t *cli_c, const hoctl_etcd_opts_t *cli_o);

/* agent_config.c */
int hoctl_agent_config(const char *file, hoctl_conn_t *c,
    hoctl_etcd_opts_t *o, char *err, size_t errlen);
void hoctl_agent_config_changed(const hoctl_conn_t *c0,
    const hoctl_etcd_opts_t *o0, const hoctl_conn_t *c1,
    const hoctl_etcd_opts_t *o1, char *buf, size_t len);


#endif /* _HOCTL_ETCD_H_INCLUDED_ */
