
/*
 * ha-optoutctl: the options, as a table (name, group), and the parse of
 * a verb's command line into hoctl_args_t, the environment filling in
 * what the command line left out.
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <getopt.h>
#include <unistd.h>
#include <pwd.h>

#include "verb.h"


enum {
    O_URL = 256, O_TOKEN, O_KEY, O_ALG, O_KID, O_AUD, O_SUB, O_SCOPE,
    O_TOKEN_TTL, O_TIMEOUT, O_CACERT, O_CERT, O_CERT_KEY, O_INSECURE,
    O_VERBOSE, O_JSON,
    O_UPSTREAM, O_NO_FAILOVER, O_PIN, O_PIN_SELECTOR, O_NO_REPLICATION,
    O_STICKY, O_TTL, O_REASON, O_IF_MATCH, O_DRY_RUN, O_FLEET, O_PREV_HASH,
    O_STATE, O_ACCEPT_GAPS, O_LIMIT, O_API_ONLY, O_ETCD, O_ENVIRONMENT,
    O_ETCD_PREFIX,
    O_ETCD_USER, O_ETCD_PASSWORD_FILE, O_ETCD_CACERT, O_ETCD_CERT,
    O_ETCD_KEY, O_TRUST_KEY, O_HOST, O_CONFIG, O_HELP, O_ISS, O_UPSTREAMS,
    O_WINDOW, O_ID
};


typedef struct {
    struct option   opt;
    unsigned        group;
} hoctl_option_t;


static const hoctl_option_t  hoctl_options[] = {
    { { "url",            required_argument, NULL, O_URL },         G_CONN },
    { { "token",          required_argument, NULL, O_TOKEN },       G_CONN },
    { { "timeout",        required_argument, NULL, O_TIMEOUT },     G_CONN },
    { { "cacert",         required_argument, NULL, O_CACERT },      G_CONN },
    { { "cert",           required_argument, NULL, O_CERT },        G_CONN },
    { { "cert-key",       required_argument, NULL, O_CERT_KEY },    G_CONN },
    { { "insecure",       no_argument,       NULL, O_INSECURE },    G_CONN },
    { { "verbose",        no_argument,       NULL, O_VERBOSE },     G_CONN },
    { { "key",            required_argument, NULL, O_KEY },         G_MINT },
    { { "alg",            required_argument, NULL, O_ALG },         G_MINT },
    { { "kid",            required_argument, NULL, O_KID },         G_MINT },
    { { "aud",            required_argument, NULL, O_AUD },         G_MINT },
    { { "sub",            required_argument, NULL, O_SUB },         G_MINT },
    { { "scope",          required_argument, NULL, O_SCOPE },       G_MINT },
    { { "token-ttl",      required_argument, NULL, O_TOKEN_TTL },   G_MINT },
    { { "iss",            required_argument, NULL, O_ISS },         G_MINT },
    { { "upstreams",      required_argument, NULL, O_UPSTREAMS },   G_MINT },
    { { "upstream",       required_argument, NULL, O_UPSTREAM },    G_UP },
    { { "no-failover",    no_argument,       NULL, O_NO_FAILOVER }, G_FLAG },
    { { "pin",            required_argument, NULL, O_PIN },         G_FLAG },
    { { "pin-selector",   required_argument, NULL, O_PIN_SELECTOR },G_FLAG },
    { { "no-replication", no_argument,       NULL, O_NO_REPLICATION },
      G_FLAG },
    { { "sticky",         no_argument,       NULL, O_STICKY },      G_FLAG },
    { { "reason",         required_argument, NULL, O_REASON },
      G_FLAG | G_WIN },
    { { "window",         required_argument, NULL, O_WINDOW },      G_WIN },
    { { "dry-run",        no_argument,       NULL, O_DRY_RUN },     G_FLAG },
    { { "ttl",            required_argument, NULL, O_TTL },         G_TTL },
    { { "if-match",       required_argument, NULL, O_IF_MATCH },    G_IFM },
    { { "json",           no_argument,       NULL, O_JSON },        G_JSON },
    { { "fleet",          required_argument, NULL, O_FLEET },       G_FLEET },
    { { "prev-hash",      required_argument, NULL, O_PREV_HASH },   G_AUDIT },
    { { "state",          required_argument, NULL, O_STATE },       G_AUDIT },
    { { "accept-gaps",    no_argument,       NULL, O_ACCEPT_GAPS }, G_AUDIT },
    { { "limit",          required_argument, NULL, O_LIMIT },       G_LIMIT },
    { { "api-only",       no_argument,       NULL, O_API_ONLY },    G_CLEAR },
    { { "etcd",           required_argument, NULL, O_ETCD },        G_ETCD },
    { { "environment",    required_argument, NULL, O_ENVIRONMENT }, G_ETCD },
    { { "etcd-prefix",    required_argument, NULL, O_ETCD_PREFIX }, G_ETCD },
    { { "etcd-user",      required_argument, NULL, O_ETCD_USER },   G_ETCD },
    { { "etcd-password-file", required_argument, NULL,
        O_ETCD_PASSWORD_FILE },                                     G_ETCD },
    { { "etcd-cacert",    required_argument, NULL, O_ETCD_CACERT }, G_ETCD },
    { { "etcd-cert",      required_argument, NULL, O_ETCD_CERT },   G_ETCD },
    { { "etcd-key",       required_argument, NULL, O_ETCD_KEY },    G_ETCD },
    { { "trust-key",      required_argument, NULL, O_TRUST_KEY },   G_AGENT },
    { { "host",           required_argument, NULL, O_HOST },        G_AGENT },
    { { "config",         required_argument, NULL, O_CONFIG },      G_AGENT },
    { { "id",             required_argument, NULL, O_ID },          G_ID },
    { { "help",           no_argument,       NULL, O_HELP },        0 },
};

#define HOCTL_NOPTS  (sizeof(hoctl_options) / sizeof(hoctl_options[0]))


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


int
hoctl_parse(const hoctl_verb_t *v, int argc, char **argv, hoctl_args_t *a)
{
    int             c, i, n;
    long            t;
    char           *end, optstring[8];
    const char     *s;
    struct option   longopts[HOCTL_NOPTS + 1];
    hoctl_conn_t   *cn;

    memset(a, 0, sizeof(hoctl_args_t));
    cn = &a->conn;
    cn->timeout = 10;
    cn->token_ttl = 300;
    a->limit = 20;

    for (n = 0; n < (int) HOCTL_NOPTS; n++) {
        longopts[n] = hoctl_options[n].opt;
    }
    memset(&longopts[n], 0, sizeof(struct option));

    /* run keeps everything after COMMAND for COMMAND */
    snprintf(optstring, sizeof(optstring), "%s:hv", v->posix ? "+" : "");

    opterr = 0;
    optind = 1;

    while ((c = getopt_long(argc, argv, optstring, longopts, &i)) != -1) {

        if (c == '?' || c == ':') {
            if (optopt != 0 && optopt < 256) {
                return hoctl_usage(v, "unknown option -%c", optopt);
            }
            return hoctl_usage(v, "unknown option or missing value: %s",
                               argv[optind - 1]);
        }

        if (c == 'h' || c == O_HELP) {
            fputs(v->help, stdout);
            exit(HOCTL_OK);
        }

        if (c == 'v') {
            c = O_VERBOSE;
        }

        for (n = 0; n < (int) HOCTL_NOPTS; n++) {
            if (hoctl_options[n].opt.val == c) {
                break;
            }
        }

        if (n < (int) HOCTL_NOPTS && hoctl_options[n].group != 0
            && !(hoctl_options[n].group & v->groups))
        {
            return hoctl_usage(v, "--%s does not apply to '%s'",
                               hoctl_options[n].opt.name, v->name);
        }

        switch (c) {
        case O_URL:            cn->url = optarg; a->url_given = 1; break;
        case O_TOKEN:          cn->token = optarg; break;
        case O_KEY:            cn->key = optarg; break;
        case O_ALG:            cn->alg = optarg; break;
        case O_KID:            cn->kid = optarg; break;
        case O_AUD:            cn->aud = optarg; break;
        case O_SUB:            cn->sub = optarg; break;
        case O_SCOPE:          cn->scope = optarg; break;
        case O_ISS:            cn->iss = optarg; break;
        case O_UPSTREAMS:      cn->upstreams = optarg; break;
        case O_CACERT:         cn->cacert = optarg; break;
        case O_CERT:           cn->cert = optarg; break;
        case O_CERT_KEY:       cn->cert_key = optarg; break;
        case O_INSECURE:       cn->insecure = 1; break;
        case O_VERBOSE:        cn->verbose = 1; break;
        case O_JSON:           a->json = 1; break;
        case O_UPSTREAM:       a->flag.upstream = optarg; break;
        case O_NO_FAILOVER:    a->flag.no_failover = 1; break;
        case O_PIN:            a->flag.pin = optarg; break;
        case O_PIN_SELECTOR:   a->flag.pin_selector = optarg; break;
        case O_NO_REPLICATION: a->flag.no_replication = 1; break;
        case O_STICKY:         a->flag.sticky = 1; break;
        case O_TTL:            a->ttl = optarg; break;
        case O_REASON:         a->flag.reason = optarg; break;
        case O_IF_MATCH:       a->flag.if_match = optarg; break;
        case O_DRY_RUN:        a->flag.dry_run = 1; break;
        case O_FLEET:          a->fleet = optarg; break;
        case O_PREV_HASH:      a->prev_hash = optarg; break;
        case O_API_ONLY:       a->flag.api_only = 1; break;
        case O_STATE:          a->state = optarg; break;
        case O_ACCEPT_GAPS:    a->accept_gaps = 1; break;
        case O_ETCD:           a->etcd.etcd = optarg; break;
        case O_ENVIRONMENT:    a->etcd.environment = optarg; break;
        case O_ETCD_PREFIX:    a->etcd.prefix = optarg; break;
        case O_ETCD_USER:      a->etcd.user = optarg; break;
        case O_ETCD_PASSWORD_FILE: a->etcd.password_file = optarg; break;
        case O_ETCD_CACERT:    a->etcd.cacert = optarg; break;
        case O_ETCD_CERT:      a->etcd.cert = optarg; break;
        case O_ETCD_KEY:       a->etcd.key = optarg; break;
        case O_HOST:           a->etcd.host = optarg; break;
        case O_CONFIG:         a->etcd.config = optarg; break;

        case O_TRUST_KEY:
            if (a->etcd.ntrust == HOCTL_ETCD_MAX_TRUST) {
                return hoctl_usage(v, "at most %d --trust-key",
                                   HOCTL_ETCD_MAX_TRUST);
            }
            a->etcd.trust[a->etcd.ntrust++] = optarg;
            break;
        case O_WINDOW:         a->window = optarg; break;

        case O_TOKEN_TTL:
            cn->token_ttl = hoctl_parse_duration(optarg);
            if (cn->token_ttl <= 0) {
                return hoctl_usage(v, "--token-ttl must be Ns, Nm or Nh: "
                                   "e.g. 90s, 5m, 1h");
            }
            break;

        case O_TIMEOUT:
            t = strtol(optarg, &end, 10);
            if (*end != '\0' || t <= 0 || t > 3600) {
                return hoctl_usage(v, "--timeout must be 1..3600 seconds");
            }
            cn->timeout = t;
            break;

        case O_ID:
            a->id = optarg;
            break;

        case O_LIMIT:
            t = strtol(optarg, &end, 10);
            if (*end != '\0' || t <= 0 || t > 100000) {
                return hoctl_usage(v, "--limit must be a positive number");
            }
            a->limit = t;
            break;

        default:
            return hoctl_usage(v, "unexpected option");
        }
    }

    a->args = argv + optind;
    a->nargs = argc - optind;

    /* the environment fills in what the command line left out */
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

    if (cn->cacert == NULL) {
        cn->cacert = hoctl_getenv("HA_OPTOUT_CACERT");
    }

    if (cn->cert == NULL) {
        cn->cert = hoctl_getenv("HA_OPTOUT_CERT");
    }

    if (cn->cert_key == NULL) {
        cn->cert_key = hoctl_getenv("HA_OPTOUT_CERT_KEY");
    }

    if (cn->cert_key != NULL && cn->cert == NULL) {
        return hoctl_usage(v, "--cert-key needs --cert (the certificate "
                           "it belongs to)");
    }

    if (cn->alg == NULL) {
        cn->alg = getenv("HA_OPTOUT_ALG");
    }

    if (cn->kid == NULL) {
        cn->kid = getenv("HA_OPTOUT_KID");
    }

    if (cn->aud == NULL) {
        cn->aud = getenv("HA_OPTOUT_AUD");
    }

    if (cn->iss == NULL) {
        cn->iss = getenv("HA_OPTOUT_ISS");
    }

    if (cn->sub == NULL) {
        cn->sub = hoctl_login_name();
    }

    if (cn->scope == NULL) {
        /* approvals approve|reject are what ha:approve is for */
        cn->scope = (strcmp(v->name, "approvals") == 0 && a->nargs > 0
                     && strcmp(a->args[0], "list") != 0)
                    ? "ha:read ha:write ha:approve" : "ha:read ha:write";
    }

    a->flag.ttl = a->ttl;

    if (a->etcd.etcd == NULL) {
        a->etcd.etcd = hoctl_getenv("HA_OPTOUT_ETCD");
    }

    if (a->etcd.environment == NULL) {
        a->etcd.environment = hoctl_getenv("HA_OPTOUT_ENVIRONMENT");
    }

    a->etcd.timeout = cn->timeout;
    a->etcd.verbose = cn->verbose;

    if (a->etcd.etcd != NULL && a->url_given && v->handler
        != hoctl_verb_agent)
    {
        return hoctl_usage(v, "give --url (one nginx) or --etcd (the "
                           "fleet), not both");
    }

    return HOCTL_OK;
}
