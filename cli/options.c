
/*
 * ha-optoutctl: the options, as a table (name, the group of verbs it
 * applies to, the field of hoctl_args_t it sets), and the parse of a
 * verb's command line into hoctl_args_t, the environment filling in what
 * the command line left out.
 */

#define _GNU_SOURCE
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <getopt.h>
#include <unistd.h>
#include <pwd.h>

#include "verb.h"


/*
 * An option sets one field of hoctl_args_t: a string (the argument as
 * given), a switch (1), or, with a setter, whatever that checks and
 * stores.
 */

typedef int (*hoctl_opt_set_pt)(const hoctl_verb_t *v, hoctl_args_t *a,
    size_t off, const char *arg);

typedef struct {
    const char        *name;
    int                has_arg;
    unsigned           group;       /* 0: every verb */
    hoctl_opt_set_pt   set;         /* NULL: the field at off */
    size_t             off;         /* the field in hoctl_args_t */
} hoctl_option_t;


static int hoctl_opt_url(const hoctl_verb_t *v, hoctl_args_t *a, size_t off,
    const char *arg);
static int hoctl_opt_trust_key(const hoctl_verb_t *v, hoctl_args_t *a,
    size_t off, const char *arg);
static int hoctl_opt_token_ttl(const hoctl_verb_t *v, hoctl_args_t *a,
    size_t off, const char *arg);
static int hoctl_opt_timeout(const hoctl_verb_t *v, hoctl_args_t *a,
    size_t off, const char *arg);
static int hoctl_opt_limit(const hoctl_verb_t *v, hoctl_args_t *a,
    size_t off, const char *arg);


#define A(field)    offsetof(hoctl_args_t, field)
#define STR(name, field, group)                                              \
    { name, required_argument, group, NULL, A(field) }
#define ON(name, field, group)                                               \
    { name, no_argument, group, NULL, A(field) }
#define SET(name, setter, group)                                             \
    { name, required_argument, group, setter, 0 }


static const hoctl_option_t  hoctl_options[] = {
    SET("url",                hoctl_opt_url,           G_CONN),
    STR("token",              conn.token,              G_CONN),
    SET("timeout",            hoctl_opt_timeout,       G_CONN),
    STR("cacert",             conn.cacert,             G_CONN),
    STR("cert",               conn.cert,               G_CONN),
    STR("cert-key",           conn.cert_key,           G_CONN),
    ON("insecure",            conn.insecure,           G_CONN),
    ON("verbose",             conn.verbose,            G_CONN),
    STR("key",                conn.key,                G_MINT),
    STR("alg",                conn.alg,                G_MINT),
    STR("kid",                conn.kid,                G_MINT),
    STR("aud",                conn.aud,                G_MINT),
    STR("sub",                conn.sub,                G_MINT),
    STR("scope",              conn.scope,              G_MINT),
    SET("token-ttl",          hoctl_opt_token_ttl,     G_MINT),
    STR("iss",                conn.iss,                G_MINT),
    STR("upstreams",          conn.upstreams,          G_MINT),
    STR("upstream",           flag.upstream,           G_UP),
    ON("no-failover",         flag.no_failover,        G_FLAG),
    STR("pin",                flag.pin,                G_FLAG),
    STR("pin-selector",       flag.pin_selector,       G_FLAG),
    ON("no-replication",      flag.no_replication,     G_FLAG),
    ON("sticky",              flag.sticky,             G_FLAG),
    STR("reason",             flag.reason,             G_FLAG | G_WIN),
    STR("window",             window,                  G_WIN),
    ON("dry-run",             flag.dry_run,            G_FLAG),
    STR("ttl",                ttl,                     G_TTL),
    STR("if-match",           flag.if_match,           G_IFM),
    ON("json",                json,                    G_JSON),
    STR("fleet",              fleet,                   G_FLEET),
    STR("prev-hash",          prev_hash,               G_AUDIT),
    STR("state",              state,                   G_AUDIT),
    ON("accept-gaps",         accept_gaps,             G_AUDIT),
    SET("limit",              hoctl_opt_limit,         G_LIMIT),
    ON("api-only",            flag.api_only,           G_CLEAR),
    STR("etcd",               etcd.etcd,               G_ETCD),
    STR("environment",        etcd.environment,        G_ETCD),
    STR("etcd-prefix",        etcd.prefix,             G_ETCD),
    STR("etcd-user",          etcd.user,               G_ETCD),
    STR("etcd-password-file", etcd.password_file,      G_ETCD),
    STR("etcd-cacert",        etcd.cacert,             G_ETCD),
    STR("etcd-cert",          etcd.cert,               G_ETCD),
    STR("etcd-key",           etcd.key,                G_ETCD),
    SET("trust-key",          hoctl_opt_trust_key,     G_AGENT),
    STR("host",               etcd.host,               G_AGENT),
    STR("config",             etcd.config,             G_AGENT),
    STR("id",                 id,                      G_ID),
    { "help", no_argument, 0, NULL, 0 },    /* hoctl_parse takes it */
};

#undef A
#undef STR
#undef ON
#undef SET

#define HOCTL_NOPTS  (sizeof(hoctl_options) / sizeof(hoctl_options[0]))

/* getopt_long answers an option as its index in the table plus this */
#define HOCTL_OPT_BASE     256
#define HOCTL_OPT_VERBOSE  7                    /* -v */
#define HOCTL_OPT_HELP     (HOCTL_NOPTS - 1)    /* --help, -h */


static int
hoctl_opt_url(const hoctl_verb_t *v, hoctl_args_t *a, size_t off,
    const char *arg)
{
    (void) v;
    (void) off;

    a->conn.url = arg;
    a->url_given = 1;

    return HOCTL_OK;
}


static int
hoctl_opt_trust_key(const hoctl_verb_t *v, hoctl_args_t *a, size_t off,
    const char *arg)
{
    (void) off;

    if (a->etcd.ntrust == HOCTL_ETCD_MAX_TRUST) {
        return hoctl_usage(v, "at most %d --trust-key", HOCTL_ETCD_MAX_TRUST);
    }

    a->etcd.trust[a->etcd.ntrust++] = arg;

    return HOCTL_OK;
}


static int
hoctl_opt_token_ttl(const hoctl_verb_t *v, hoctl_args_t *a, size_t off,
    const char *arg)
{
    (void) off;

    a->conn.token_ttl = hoctl_parse_duration(arg);
    if (a->conn.token_ttl <= 0) {
        return hoctl_usage(v, "--token-ttl must be Ns, Nm or Nh: "
                           "e.g. 90s, 5m, 1h");
    }

    return HOCTL_OK;
}


/* a whole number 1..max into *n; -1 (and *n unchanged) otherwise */
static int
hoctl_opt_number(const char *arg, long max, long *n)
{
    long   t;
    char  *end;

    t = strtol(arg, &end, 10);
    if (*end != '\0' || t <= 0 || t > max) {
        return -1;
    }

    *n = t;

    return 0;
}


static int
hoctl_opt_timeout(const hoctl_verb_t *v, hoctl_args_t *a, size_t off,
    const char *arg)
{
    (void) off;

    if (hoctl_opt_number(arg, 3600, &a->conn.timeout) != 0) {
        return hoctl_usage(v, "--timeout must be 1..3600 seconds");
    }

    return HOCTL_OK;
}


static int
hoctl_opt_limit(const hoctl_verb_t *v, hoctl_args_t *a, size_t off,
    const char *arg)
{
    (void) off;

    if (hoctl_opt_number(arg, 100000, &a->limit) != 0) {
        return hoctl_usage(v, "--limit must be a positive number");
    }

    return HOCTL_OK;
}


/* an environment variable, set and not empty, or NULL */
static const char *
hoctl_getenv(const char *name)
{
    const char  *s;

    s = getenv(name);

    return (s != NULL && s[0] != '\0') ? s : NULL;
}


static const char *
hoctl_login_name(void)
{
    const char     *s;
    struct passwd  *pw;

    s = getlogin();
    if (s != NULL && s[0] != '\0') {
        return s;
    }

    s = getenv("USER");
    if (s != NULL && s[0] != '\0') {
        return s;
    }

    pw = getpwuid(geteuid());
    return pw ? pw->pw_name : "unknown";
}


/* one option getopt_long found: its group must apply, then its setter */
static int
hoctl_parse_option(const hoctl_verb_t *v, int c, char **argv,
    hoctl_args_t *a)
{
    const hoctl_option_t  *o;

    if (c == '?' || c == ':') {
        if (optopt != 0 && optopt < 256) {
            return hoctl_usage(v, "unknown option -%c", optopt);
        }
        return hoctl_usage(v, "unknown option or missing value: %s",
                           argv[optind - 1]);
    }

    if (c == 'v') {
        c = HOCTL_OPT_BASE + HOCTL_OPT_VERBOSE;
    }

    if (c < HOCTL_OPT_BASE || c >= HOCTL_OPT_BASE + (int) HOCTL_NOPTS) {
        return hoctl_usage(v, "unexpected option");
    }

    o = &hoctl_options[c - HOCTL_OPT_BASE];

    if (o->group != 0 && !(o->group & v->groups)) {
        return hoctl_usage(v, "--%s does not apply to '%s'", o->name,
                           v->name);
    }

    if (o->set != NULL) {
        return o->set(v, a, o->off, optarg);
    }

    if (o->has_arg) {
        *(const char **) ((char *) a + o->off) = optarg;

    } else {
        *(int *) ((char *) a + o->off) = 1;
    }

    return HOCTL_OK;
}


/* a connection setting the environment gives when the command line did not */
typedef struct {
    size_t        off;          /* in hoctl_conn_t */
    const char   *name;
    int           nonempty;     /* "" counts as not set */
} hoctl_env_t;


static const hoctl_env_t  hoctl_env_tls[] = {
    { offsetof(hoctl_conn_t, cacert),   "HA_OPTOUT_CACERT",   1 },
    { offsetof(hoctl_conn_t, cert),     "HA_OPTOUT_CERT",     1 },
    { offsetof(hoctl_conn_t, cert_key), "HA_OPTOUT_CERT_KEY", 1 },
};

static const hoctl_env_t  hoctl_env_mint[] = {
    { offsetof(hoctl_conn_t, alg),      "HA_OPTOUT_ALG",      0 },
    { offsetof(hoctl_conn_t, kid),      "HA_OPTOUT_KID",      0 },
    { offsetof(hoctl_conn_t, aud),      "HA_OPTOUT_AUD",      0 },
    { offsetof(hoctl_conn_t, iss),      "HA_OPTOUT_ISS",      0 },
};


static void
hoctl_parse_env_fill(hoctl_conn_t *cn, const hoctl_env_t *env, size_t n)
{
    size_t        i;
    const char  **field;

    for (i = 0; i < n; i++) {
        field = (const char **) ((char *) cn + env[i].off);

        if (*field == NULL) {
            *field = env[i].nonempty ? hoctl_getenv(env[i].name)
                                     : getenv(env[i].name);
        }
    }
}


/* the connection: the environment fills in what the command line left out */
static int
hoctl_parse_env_conn(const hoctl_verb_t *v, hoctl_conn_t *cn)
{
    const char  *s;

    if (cn->url == NULL) {
        cn->url = getenv("HA_OPTOUT_URL");
    }

    if (cn->token != NULL && cn->key != NULL) {
        return hoctl_usage(v, "give --token or --key, not both");
    }

    if (cn->token == NULL && cn->key == NULL) {
        s = getenv("HA_OPTOUT_TOKEN");
        if (s != NULL && s[0] != '\0') {
            cn->token = s;
        } else {
            s = getenv("HA_OPTOUT_KEY");
            cn->key = (s != NULL && s[0] != '\0') ? s : NULL;
        }
    }

    hoctl_parse_env_fill(cn, hoctl_env_tls,
                         sizeof(hoctl_env_tls) / sizeof(hoctl_env_tls[0]));

    if (cn->cert_key != NULL && cn->cert == NULL) {
        return hoctl_usage(v, "--cert-key needs --cert (the certificate "
                           "it belongs to)");
    }

    return HOCTL_OK;
}


/* what a minted token says, from the environment or the defaults */
static void
hoctl_parse_env_mint(const hoctl_verb_t *v, hoctl_args_t *a)
{
    hoctl_conn_t  *cn;

    cn = &a->conn;

    hoctl_parse_env_fill(cn, hoctl_env_mint,
                         sizeof(hoctl_env_mint) / sizeof(hoctl_env_mint[0]));

    if (cn->sub == NULL) {
        cn->sub = hoctl_login_name();
    }

    if (cn->scope == NULL) {
        /* approvals approve|reject are what ha:approve is for */
        cn->scope = (strcmp(v->name, "approvals") == 0 && a->nargs > 0
                     && strcmp(a->args[0], "list") != 0)
                    ? "ha:read ha:write ha:approve" : "ha:read ha:write";
    }
}


static int
hoctl_parse_env_etcd(const hoctl_verb_t *v, hoctl_args_t *a)
{
    if (a->etcd.etcd == NULL) {
        a->etcd.etcd = hoctl_getenv("HA_OPTOUT_ETCD");
    }

    if (a->etcd.environment == NULL) {
        a->etcd.environment = hoctl_getenv("HA_OPTOUT_ENVIRONMENT");
    }

    a->etcd.timeout = a->conn.timeout;
    a->etcd.verbose = a->conn.verbose;

    if (a->etcd.etcd != NULL && a->url_given && v->handler
        != hoctl_verb_agent)
    {
        return hoctl_usage(v, "give --url (one nginx) or --etcd (the "
                           "fleet), not both");
    }

    return HOCTL_OK;
}


int
hoctl_parse(const hoctl_verb_t *v, int argc, char **argv, hoctl_args_t *a)
{
    int             c, i, n, rc;
    char            optstring[8];
    struct option   longopts[HOCTL_NOPTS + 1];

    memset(a, 0, sizeof(hoctl_args_t));
    a->conn.timeout = 10;
    a->conn.token_ttl = 300;
    a->limit = 20;

    for (n = 0; n < (int) HOCTL_NOPTS; n++) {
        longopts[n].name = hoctl_options[n].name;
        longopts[n].has_arg = hoctl_options[n].has_arg;
        longopts[n].flag = NULL;
        longopts[n].val = HOCTL_OPT_BASE + n;
    }
    memset(&longopts[n], 0, sizeof(struct option));

    /* run keeps everything after COMMAND for COMMAND */
    snprintf(optstring, sizeof(optstring), "%s:hv", v->posix ? "+" : "");

    opterr = 0;
    optind = 1;

    while ((c = getopt_long(argc, argv, optstring, longopts, &i)) != -1) {

        if (c == 'h' || c == HOCTL_OPT_BASE + HOCTL_OPT_HELP) {
            fputs(v->help, stdout);
            exit(HOCTL_OK);
        }

        rc = hoctl_parse_option(v, c, argv, a);
        if (rc != HOCTL_OK) {
            return rc;
        }
    }

    a->args = argv + optind;
    a->nargs = argc - optind;

    rc = hoctl_parse_env_conn(v, &a->conn);
    if (rc != HOCTL_OK) {
        return rc;
    }

    hoctl_parse_env_mint(v, a);

    a->flag.ttl = a->ttl;

    return hoctl_parse_env_etcd(v, a);
}
