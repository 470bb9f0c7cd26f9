
/*
 * ha-optoutctl: verbs, options, help, and the simple verbs (token, status,
 * set, clear, whoami, audit list).  run, fleet and audit verify have files
 * of their own.
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <signal.h>
#include <getopt.h>
#include <unistd.h>
#include <pwd.h>
#include <openssl/crypto.h>

#include <curl/curl.h>

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


static int hoctl_verb_token(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_status(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_set(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_clear(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_run(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_fleet(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_whoami(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_window(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_audit(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_agent(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_verb_approvals(const hoctl_verb_t *v, hoctl_args_t *a);
static int hoctl_usage(const hoctl_verb_t *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


#define HOCTL_CREDS_HELP                                                     \
    "credentials (one of; never printed):\n"                                 \
    "  --token JWT          a bearer token (single-use for writes)\n"        \
    "  --key FILE           mint a fresh token per request with this key\n"  \
    "  HA_OPTOUT_TOKEN, HA_OPTOUT_KEY   the same from the environment\n"     \
    "minting (with --key):\n"                                                \
    "  --alg hs256|es256|eddsa|rs256  default hs256; others: private PEM\n"\
    "  --kid K  --aud A         key id, audience (HA_OPTOUT_KID, _AUD)\n"   \
    "  --iss ISS                issuer claim (HA_OPTOUT_ISS)\n"             \
    "  --upstreams app,db       limit the token to these upstreams\n"       \
    "  --sub NAME               default: your login name\n"                  \
    "  --scope S                default \"ha:read ha:write\" (approvals\n"  \
    "                           approve|reject: and ha:approve)\n"          \
    "  --token-ttl D            lifetime of minted tokens, default 5m\n"     \
    "connection:\n"                                                          \
    "  --url URL            admin location prefix (HA_OPTOUT_URL), e.g.\n"  \
    "                       http://127.0.0.1:8080/ha-optout/\n"              \
    "  --timeout SECONDS    default 10;  --insecure (no server check)\n"    \
    "  --cacert FILE        CA bundle for an https URL (HA_OPTOUT_CACERT)\n"\
    "  --cert FILE          TLS client certificate, PEM (HA_OPTOUT_CERT)\n" \
    "  --cert-key FILE      its private key, unless in --cert\n"            \
    "                       (HA_OPTOUT_CERT_KEY)\n"                          \
    "  --verbose            log each request (method, url, status)\n"

#define HOCTL_FLAG_HELP                                                      \
    "what to suspend (at least one):\n"                                      \
    "  --no-failover        no retry on another server, no ejection\n"       \
    "  --pin ADDR           send requests to this server only\n"             \
    "  --pin-selector V     pin only requests whose selector equals V\n"     \
    "  --no-replication     mirror gates answer 204\n"                       \
    "  --sticky             keep clients on their server\n"                  \
    "  --ttl D              Ns|Nm|Nh, auto-revert (required)\n"              \
    "  --reason TEXT        why (required, 1..256 bytes)\n"

#define HOCTL_ETCD_HELP                                                      \
    "the fleet in etcd (instead of --url; SPEC section 11):\n"              \
    "  --etcd URL[,URL...]  etcd members (HA_OPTOUT_ETCD)\n"                \
    "  --environment ENV    records under PREFIX/ENV/\n"                    \
    "                       (HA_OPTOUT_ENVIRONMENT)\n"                      \
    "  --etcd-prefix P      default /ha-optout\n"                           \
    "  --etcd-user U  --etcd-password-file FILE   etcd authentication\n"    \
    "  --etcd-cacert FILE  --etcd-cert FILE  --etcd-key FILE   TLS\n"      \
    "  records are signed with --key (--alg, --kid; --sub is the actor)\n"

#define HOCTL_EXIT_HELP                                                      \
    "exit: 0 ok, 1 request refused, 2 usage, 3 unreachable\n"


static const hoctl_verb_t  hoctl_verbs[] = {

    { "token", G_MINT | G_TTL, 0, hoctl_verb_token,
      "usage: ha-optoutctl token --key FILE\n"
      "           [--alg hs256|es256|eddsa|rs256] [--sub NAME] [--scope S]\n"
      "           [--ttl 5m] [--aud A] [--kid K] [--iss ISS]\n"
      "           [--upstreams app,db]\n"
      "\n"
      "Mints a signed JWT and prints it to stdout (the only verb that\n"
      "prints a token).  --ttl is the token's lifetime (default 5m);\n"
      "--scope defaults to \"ha:read ha:write\", --sub to your login name.\n"
      "--upstreams puts an ha_upstreams claim in the token: it may touch\n"
      "only those upstreams.  The key comes from --key or HA_OPTOUT_KEY;\n"
      "for es256, eddsa and rs256 it is the PRIVATE key PEM.\n\n" HOCTL_EXIT_HELP },

    { "status", G_CONN | G_MINT | G_UP | G_JSON | G_ETCD, 0, hoctl_verb_status,
      "usage: ha-optoutctl status --url URL [--upstream NAME] [--json]\n"
      "\n"
      "Shows every upstream with ha_optout (GET v1/flags): state, what is\n"
      "suspended, by whom, time left and why.  --json prints the API's\n"
      "JSON as it came.  With --etcd: the fleet's records in etcd.\n\n"
      HOCTL_CREDS_HELP "\n" HOCTL_ETCD_HELP "\n" HOCTL_EXIT_HELP },

    { "set", G_CONN | G_MINT | G_UP | G_FLAG | G_TTL | G_IFM | G_JSON
             | G_ETCD, 0,
      hoctl_verb_set,
      "usage: ha-optoutctl set --url URL --upstream NAME [--no-failover]\n"
      "           [--pin ADDR] [--pin-selector V] [--no-replication]\n"
      "           [--sticky] --ttl 30m --reason TEXT\n"
      "           [--if-match VERSION] [--dry-run] [--json]\n"
      "\n"
      "Sets (replaces) the opt-out of one upstream (PUT v1/flags/NAME).\n"
      "--dry-run asks the server what it would store, changing nothing.\n"
      "With --etcd: writes the signed record for every nginx of ENV, on\n"
      "a lease of the TTL (--if-match REV: only if the record is still at\n"
      "that revision; 0: only if there is none).\n\n"
      HOCTL_FLAG_HELP "\n" HOCTL_CREDS_HELP "\n" HOCTL_ETCD_HELP "\n"
      HOCTL_EXIT_HELP },

    { "clear", G_CONN | G_MINT | G_UP | G_IFM | G_JSON | G_CLEAR
               | G_ETCD, 0,
      hoctl_verb_clear,
      "usage: ha-optoutctl clear --url URL --upstream NAME\n"
      "           [--if-match VERSION] [--api-only] [--json]\n"
      "\n"
      "Removes the API flag of one upstream (DELETE v1/flags/NAME) and\n"
      "says whether HA is really back: a policy window or an\n"
      "ha_optout_flag line may still suspend it, and is then named (layer,\n"
      "what, until when).  --api-only: removing the API flag is all that\n"
      "is asked; exit 0 even if another layer still acts.  With --etcd:\n"
      "deletes the fleet record, and every agent restores HA.\n\n"
      HOCTL_CREDS_HELP "\n" HOCTL_ETCD_HELP "\n"
      "exit: 0 HA restored (or --api-only and the API flag is gone),\n"
      "      1 refused, or HA still suspended by another layer,\n"
      "      2 usage, 3 unreachable\n" },

    { "run", G_CONN | G_MINT | G_UP | G_FLAG | G_TTL | G_IFM | G_ETCD, 1,
      hoctl_verb_run,
      "usage: ha-optoutctl run --url URL --upstream NAME [flags as set]\n"
      "           --ttl 10m --reason TEXT -- COMMAND [ARGS...]\n"
      "\n"
      "Sets the flag, runs COMMAND, renews the flag's TTL every third of\n"
      "the TTL while COMMAND runs, and clears the flag however COMMAND\n"
      "ends.  SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed to COMMAND;\n"
      "the flag is cleared once it has exited.  Exits with COMMAND's\n"
      "status (128+N if a signal N ended it); 1 or 3 if the flag could\n"
      "not be set (COMMAND is then not run).  If ha-optoutctl itself is\n"
      "killed, the flag lapses within one TTL.  Writes need a fresh token\n"
      "each: use --key (a static --token works only with replay off).\n"
      "With --etcd: the record lives on a lease kept alive (and re-signed\n"
      "with a new expires_at) every third of the TTL, revoked at the end;\n"
      "killed, the lease expires and HA comes back on every nginx.\n\n"
      HOCTL_FLAG_HELP "\n" HOCTL_CREDS_HELP "\n" HOCTL_ETCD_HELP },

    { "fleet", G_CONN | G_MINT | G_UP | G_FLAG | G_TTL | G_JSON | G_FLEET
      | G_CLEAR | G_ETCD | G_IFM, 0, hoctl_verb_fleet,
      "usage: ha-optoutctl fleet --fleet FILE.yaml set --upstream NAME\n"
      "           [flags as set] --ttl 30m --reason TEXT\n"
      "       ha-optoutctl fleet --fleet FILE.yaml clear --upstream NAME\n"
      "       ha-optoutctl fleet --fleet FILE.yaml status [--upstream NAME]"
      " [--json]\n"
      "       ha-optoutctl fleet --etcd URL --environment ENV status "
      "[--json]\n"
      "\n"
      "With --etcd: every flag of ENV and, per agent, converged, pending\n"
      "or refused, and agents gone silent (exit 0 only when converged:\n"
      "at least one agent reports, none is silent, every agent applied\n"
      "every flag; --upstream NAME: that flag, which must exist).\n"
      "\n"
      "Applies to every instance in FILE.yaml in parallel and prints one\n"
      "line per instance:\n"
      "  instances:\n"
      "    - {name: eu1, url: http://10.0.0.1:8080/ha-optout/,\n"
      "       key: /etc/ha-optout/ops.key, kid: ops, alg: hs256}\n"
      "    - {name: eu2, url: https://eu2.example/ha-optout/,"
      " token: eyJ...}\n"
      "Per instance: name, url (required), token, key, alg, kid, aud, sub,\n"
      "scope; missing ones come from the command line or environment.\n"
      "A relative key path is relative to FILE.yaml.\n"
      "clear names what still acts on an instance (state \"suspended\")\n"
      "unless --api-only.\n"
      "exit: 0 every instance converged, 1 some refused or suspended,\n"
      "      3 some unreachable and none refused, 2 usage\n\n"
      HOCTL_FLAG_HELP "\n" HOCTL_CREDS_HELP },

    { "window", G_CONN | G_MINT | G_UP | G_WIN | G_JSON, 0,
      hoctl_verb_window,
      "usage: ha-optoutctl window end|skip --url URL --upstream NAME\n"
      "           [--window NAME|N] --reason TEXT [--json]\n"
      "\n"
      "end: the policy window open now on the upstream ends now (POST\n"
      "v1/windows/NAME/end); skip: its next occurrence does not open\n"
      "(.../skip).  --window names the window (its \"name:\" in the\n"
      "policy, or its position among the upstream's windows, 1, 2, ...);\n"
      "without it: the window that acts now (end), the next to open\n"
      "(skip).  Audited as window_end / window_skip with your name and\n"
      "the reason; kept across restarts.  A window with \"endable: false\"\n"
      "is refused (403).\n\n" HOCTL_CREDS_HELP "\n" HOCTL_EXIT_HELP },

    { "whoami", G_CONN | G_MINT | G_JSON, 0, hoctl_verb_whoami,
      "usage: ha-optoutctl whoami --url URL [--json]\n"
      "\n"
      "Shows what nginx makes of your credentials (GET v1/whoami):\n"
      "subject, scopes, expiry.\n\n" HOCTL_CREDS_HELP "\n" HOCTL_EXIT_HELP },

    { "audit", G_CONN | G_MINT | G_JSON | G_AUDIT | G_LIMIT, 0,
      hoctl_verb_audit,
      "usage: ha-optoutctl audit verify [--prev-hash HEX] [--state STATE]\n"
      "                                [--accept-gaps] FILE...\n"
      "       ha-optoutctl audit list --url URL [--limit N] [--json]\n"
      "\n"
      "verify checks the SHA-256 hash chain of an audit log (JSONL) and\n"
      "prints \"ok: N lines\" (exit 0) or names the first broken line\n"
      "(\"line K: ...\", exit 1).  Several FILEs are one chain: rotated\n"
      "logs, oldest first (audit.jsonl.1 audit.jsonl).  The first line\n"
      "must have a prev_hash of 64 zeros, unless --prev-hash gives the\n"
      "hash the file continues from.  --state STATE (the state file)\n"
      "also checks that the last line nginx saved there is in the log: a\n"
      "log whose last lines were removed fails.  A \"chain_gap\" line\n"
      "(nginx found, at a start, that the log had been cut while it was\n"
      "stopped) fails too, unless --accept-gaps.  An unreadable FILE or\n"
      "STATE exits 2.\n"
      "list prints the newest entries nginx keeps in memory, one JSON\n"
      "object per line (GET v1/audit?limit=N).\n\n" HOCTL_EXIT_HELP },

    { "agent", G_CONN | G_MINT | G_ETCD | G_AGENT, 0, hoctl_verb_agent,
      "usage: ha-optoutctl agent --etcd URL[,URL...] --environment ENV\n"
      "           --url LOCAL_ADMIN_URL --key FILE --trust-key FILE...\n"
      "           [--host NAME] [--config FILE]\n"
      "\n"
      "Runs beside one nginx and keeps its fleet layer (v1/fleet) equal\n"
      "to the signed records in etcd: reconciles at start and after each\n"
      "reconnect, then watches.  A record whose signature does not verify\n"
      "against a --trust-key (repeatable: a public PEM, or an hs256\n"
      "secret) is refused and audited by nginx as denied.  Reports under\n"
      "PREFIX/ENV/agents/HOST (HOST: --host, default the host name, also\n"
      "the token subject and the flags' \"via\").  --key mints tokens with\n"
      "scope \"ha:fleet ha:read\" for the local nginx.  Stops on SIGTERM.\n"
      "--config FILE (YAML: etcd, environment, url, key, alg, kid,\n"
      "trust-key, host, etcd-prefix, etcd-user, etcd-password-file,\n"
      "etcd-cacert, etcd-cert, etcd-key) fills in what the command line\n"
      "leaves out.\n"
      "\n" HOCTL_CREDS_HELP "\n" HOCTL_ETCD_HELP },
    { "approvals", G_CONN | G_MINT | G_UP | G_JSON | G_ID, 0,
      hoctl_verb_approvals,
      "usage: ha-optoutctl approvals list --url URL [--upstream NAME]"
      " [--json]\n"
      "       ha-optoutctl approvals approve --url URL --id ID [--json]\n"
      "       ha-optoutctl approvals reject --url URL --id ID [--json]\n"
      "\n"
      "The two-person rule (policy \"approvers: N\"): a set on such an\n"
      "upstream waits for N others to approve it.  list shows what waits\n"
      "(GET v1/approvals, ha:read); approve adds your subject (POST\n"
      "v1/approvals/ID, needs ha:approve, which a token minted with\n"
      "--key and no --scope has here; not your own\n"
      "request, once per subject); with the last approval the flag is\n"
      "applied.  reject withdraws your own request, or rejects another's\n"
      "with ha:approve (DELETE v1/approvals/ID).\n\n"
      HOCTL_CREDS_HELP "\n" HOCTL_EXIT_HELP },
};

#define HOCTL_NVERBS  (sizeof(hoctl_verbs) / sizeof(hoctl_verbs[0]))


const char  *hoctl_progname = "ha-optoutctl";


static void
hoctl_main_help(FILE *out)
{
    fprintf(out,
        "usage: ha-optoutctl VERB [OPTIONS]\n"
        "\n"
        "Switch high availability off on purpose, per upstream, for a\n"
        "bounded time, through the ngx_ha_optout admin API.\n"
        "\n"
        "verbs:\n"
        "  token         mint a signed token and print it\n"
        "  status        show which upstreams have HA suspended\n"
        "  set           suspend HA on an upstream for a TTL\n"
        "  clear         restore HA on an upstream now\n"
        "  run           suspend HA while a command runs\n"
        "  fleet         set, clear or show across many nginx instances\n"
        "  agent         apply the fleet's flags in etcd to one nginx\n"
        "  window        end a policy window now, or skip its next one\n"
        "  whoami        show what nginx makes of your credentials\n"
        "  audit verify  check an audit log's hash chain\n"
        "  audit list    show the newest audit entries\n"
        "  approvals     list, approve or reject writes that wait for\n"
        "                approval (policy \"approvers\")\n"
        "\n"
        "'ha-optoutctl VERB --help' tells more.\n"
        HOCTL_EXIT_HELP);
}


void
hoctl_warn(const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "%s: ", hoctl_progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}


static int
hoctl_usage(const hoctl_verb_t *v, const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "%s: ", hoctl_progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (v != NULL) {
        fprintf(stderr, "\nTry '%s %s --help'.\n", hoctl_progname, v->name);
    } else {
        fprintf(stderr, "\nTry '%s --help'.\n", hoctl_progname);
    }

    return HOCTL_USAGE;
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


static int
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


static int
hoctl_fail(int rc, hoctl_resp_t *r)
{
    if (rc == HOCTL_USAGE) {
        hoctl_warn("%s", r->error);
    } else {
        fprintf(stderr, "error: %s\n", r->error);
    }

    hoctl_resp_free(r);
    return rc;
}


static json_t *
hoctl_json_body(hoctl_resp_t *r)
{
    json_t        *j;
    json_error_t   e;

    j = json_loads(r->body ? r->body : "", JSON_DECODE_ANY, &e);
    if (j == NULL) {
        fprintf(stderr, "error: %ld: the answer is not JSON: %s\n",
                r->status, hoctl_safe(e.text));
    }

    return j;
}


/* the answer's JSON, the same values, nothing a terminal would act on */

static void
hoctl_print_raw(hoctl_resp_t *r)
{
    char  *s;

    if (r->body != NULL) {
        s = hoctl_escape(r->body, 1);
        fputs(s ? s : "", stdout);
        if (s == NULL || s[0] == '\0' || s[strlen(s) - 1] != '\n') {
            fputc('\n', stdout);
        }
        free(s);
    }
}


static int
hoctl_verb_token(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char  *jwt, err[HOCTL_ERRLEN];

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (a->conn.key == NULL) {
        return hoctl_usage(v, "--key FILE (or HA_OPTOUT_KEY) is required");
    }

    if (a->ttl != NULL) {
        a->conn.token_ttl = hoctl_parse_duration(a->ttl);
        if (a->conn.token_ttl <= 0) {
            return hoctl_usage(v, "--ttl must be Ns, Nm or Nh: e.g. 90s, "
                               "30m, 24h");
        }
    }

    jwt = hoctl_jwt_mint(&a->conn, err, sizeof(err));
    if (jwt == NULL) {
        hoctl_warn("%s", err);
        return HOCTL_USAGE;
    }

    printf("%s\n", jwt);
    OPENSSL_cleanse(jwt, strlen(jwt));
    free(jwt);

    return HOCTL_OK;
}


static int
hoctl_verb_status(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    char          *path;
    json_t        *j, *wrap;
    hoctl_resp_t   r;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_status(&a->etcd, a->flag.upstream, a->json);
    }

    path = a->flag.upstream ? hoctl_upstream_path(a->flag.upstream)
                            : strdup("v1/flags");

    rc = hoctl_request(&a->conn, "GET", path, NULL, NULL, &r);
    free(path);

    if (rc != HOCTL_OK) {
        return hoctl_fail(rc, &r);
    }

    if (a->json) {
        hoctl_print_raw(&r);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    j = hoctl_json_body(&r);
    hoctl_resp_free(&r);

    if (j == NULL) {
        return HOCTL_REFUSED;
    }

    if (a->flag.upstream != NULL) {
        wrap = json_object();
        json_object_set(wrap, a->flag.upstream, j);
        hoctl_print_flags_table(wrap, "");
        json_decref(wrap);

    } else if (json_is_object(j)) {
        hoctl_print_flags_table(j, "");

    } else {
        fprintf(stderr, "error: v1/flags did not answer an object\n");
        json_decref(j);
        return HOCTL_REFUSED;
    }

    json_decref(j);
    return HOCTL_OK;
}


static int
hoctl_verb_set(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    char          *path, *body, *what, err[HOCTL_ERRLEN];
    size_t         len;
    json_t        *j;
    const char    *exp;
    hoctl_resp_t   r;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (hoctl_flag_check(&a->flag, 0, err, sizeof(err)) != 0) {
        return hoctl_usage(v, "%s", err);
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_set(&a->conn, &a->etcd, &a->flag, a->json);
    }

    path = hoctl_upstream_path(a->flag.upstream);
    if (a->flag.dry_run) {
        len = strlen(path) + sizeof("?dry_run=1");
        path = realloc(path, len);
        strcat(path, "?dry_run=1");
    }

    body = hoctl_flag_body(&a->flag);

    rc = hoctl_request(&a->conn, "PUT", path, body, a->flag.if_match, &r);
    free(path);
    free(body);

    if (rc != HOCTL_OK) {
        return hoctl_fail(rc, &r);
    }

    if (a->json) {
        hoctl_print_raw(&r);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    j = hoctl_json_body(&r);
    if (j == NULL) {
        hoctl_resp_free(&r);
        return HOCTL_REFUSED;
    }

    if (json_object_get(j, "approval") != NULL) {
        /* 202: the policy wants approvers; nothing acts yet */
        hoctl_print_approval_requested(j, a->flag.upstream);
        json_decref(j);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    what = hoctl_flag_summary(j);
    exp = json_string_value(json_object_get(j, "expires_at"));

    printf("%s: %s %s until %s (etag %s)\n", hoctl_safe(a->flag.upstream),
           a->flag.dry_run ? "dry run, would set" : "HA suspended:", what,
           exp ? hoctl_safe(exp) : "cleared",
           r.etag[0] ? hoctl_safe(r.etag) : "-");

    free(what);
    json_decref(j);
    hoctl_resp_free(&r);

    return HOCTL_OK;
}


static int
hoctl_verb_window(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc, skip;
    char          *esc, *path, *body;
    json_t        *j, *req;
    size_t         len;
    hoctl_resp_t   r;

    if (a->nargs != 1 || (strcmp(a->args[0], "end") != 0
                          && strcmp(a->args[0], "skip") != 0))
    {
        return hoctl_usage(v, "give end or skip");
    }

    skip = (a->args[0][0] == 's');

    if (a->flag.upstream == NULL) {
        return hoctl_usage(v, "--upstream is required");
    }

    if (a->flag.reason == NULL || a->flag.reason[0] == '\0') {
        return hoctl_usage(v, "--reason is required");
    }

    req = json_pack("{s:s}", "reason", a->flag.reason);
    if (req == NULL
        || (a->window
            && json_object_set_new(req, "window", json_string(a->window))
               != 0))
    {
        json_decref(req);
        return hoctl_usage(v, "--reason and --window must be UTF-8");
    }

    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    esc = curl_easy_escape(NULL, a->flag.upstream, 0);
    if (body == NULL || esc == NULL) {
        free(body);
        curl_free(esc);
        return HOCTL_USAGE;
    }

    len = sizeof("v1/windows//skip") + strlen(esc);
    path = malloc(len);
    if (path == NULL) {
        free(body);
        curl_free(esc);
        return HOCTL_USAGE;
    }

    snprintf(path, len, "v1/windows/%s/%s", esc, skip ? "skip" : "end");
    curl_free(esc);

    rc = hoctl_request(&a->conn, "POST", path, body, NULL, &r);
    free(path);
    free(body);

    if (rc != HOCTL_OK) {
        return hoctl_fail(rc, &r);
    }

    if (a->json) {
        hoctl_print_raw(&r);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    j = json_loads(r.body ? r.body : "", 0, NULL);
    hoctl_resp_free(&r);

    printf("%s: window %s %s: %s .. %s\n", hoctl_safe(a->flag.upstream),
           hoctl_safe(json_string_value(json_object_get(j, "window"))
                      ? json_string_value(json_object_get(j, "window"))
                      : "?"),
           skip ? "skipped" : "ended",
           hoctl_safe(json_string_value(json_object_get(j, "start"))
                      ? json_string_value(json_object_get(j, "start"))
                      : "?"),
           hoctl_safe(json_string_value(json_object_get(j, "end"))
                      ? json_string_value(json_object_get(j, "end"))
                      : "?"));
    json_decref(j);

    return HOCTL_OK;
}


static int
hoctl_verb_clear(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc, still, removed;
    char          *path, *line;
    json_t        *j;
    hoctl_resp_t   r;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (a->flag.upstream == NULL) {
        return hoctl_usage(v, "--upstream is required");
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_clear(&a->conn, &a->etcd, &a->flag, a->json);
    }

    path = hoctl_upstream_path(a->flag.upstream);

    /*
     * was there an API flag?  It wins over the other layers, so the flag
     * that acts says it; the DELETE's answer is the same either way
     */
    removed = 1;

    if (hoctl_request(&a->conn, "GET", path, NULL, NULL, &r) == HOCTL_OK) {
        j = json_loads(r.body ? r.body : "", JSON_DECODE_ANY, NULL);

        if (j != NULL
            && (json_is_null(j)
                || (json_is_object(j)
                    && json_is_string(json_object_get(j, "source"))
                    && strcmp(json_string_value(
                                  json_object_get(j, "source")), "api")
                       != 0)))
        {
            removed = 0;
        }

        json_decref(j);
    }

    hoctl_resp_free(&r);

    rc = hoctl_request(&a->conn, "DELETE", path, NULL, a->flag.if_match, &r);

    if (rc != HOCTL_OK) {
        free(path);
        return hoctl_fail(rc, &r);
    }

    if (a->json) {
        hoctl_print_raw(&r);
    }

    /*
     * The answer is the flag that acts now: a window or an ha_optout_flag
     * line may still suspend HA, and "HA restored" would then be a lie.
     */

    j = json_loads(r.body ? r.body : "", JSON_DECODE_ANY, NULL);
    hoctl_resp_free(&r);

    still = hoctl_clear_outcome_ex(j, a->flag.upstream, a->flag.api_only,
                                   removed, &line);
    json_decref(j);

    if (still < 0) {
        rc = hoctl_request(&a->conn, "GET", path, NULL, NULL, &r);

        if (rc == HOCTL_OK) {
            j = json_loads(r.body ? r.body : "", JSON_DECODE_ANY, NULL);
            still = hoctl_clear_outcome_ex(j, a->flag.upstream,
                                           a->flag.api_only, removed, &line);
            json_decref(j);

        } else {
            fprintf(stderr, "error: %s\n", r.error);
        }

        hoctl_resp_free(&r);
    }

    free(path);

    if (still < 0) {
        fprintf(stderr, "%s: API flag removed; whether HA is back cannot be "
                "told (the answer does not say what acts now)\n",
                hoctl_safe(a->flag.upstream));
        return HOCTL_REFUSED;
    }

    if (line != NULL) {
        fprintf(a->json ? stderr : stdout, "%s\n", line);
        free(line);
    }

    return still ? HOCTL_REFUSED : HOCTL_OK;
}


static int
hoctl_verb_run(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char  err[HOCTL_ERRLEN];

    if (hoctl_flag_check(&a->flag, 1, err, sizeof(err)) != 0) {
        return hoctl_usage(v, "%s", err);
    }

    if (a->flag.dry_run) {
        return hoctl_usage(v, "--dry-run does not apply to 'run'");
    }

    if (a->nargs == 0) {
        return hoctl_usage(v, "no COMMAND given after --");
    }

    if (a->etcd.etcd != NULL) {
        return hoctl_etcd_run(&a->conn, &a->etcd, &a->flag, a->args);
    }

    if (a->conn.url == NULL) {
        return hoctl_usage(v, "--url is required (or HA_OPTOUT_URL), e.g. "
                           "--url http://127.0.0.1:8080/ha-optout/");
    }

    return hoctl_run(&a->conn, &a->flag, a->args);
}


static int
hoctl_verb_fleet(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char        err[HOCTL_ERRLEN];
    const char *action;

    if (a->etcd.etcd != NULL) {
        if (a->fleet != NULL) {
            return hoctl_usage(v, "give --fleet FILE.yaml or --etcd, not "
                               "both");
        }

        if (a->nargs != 1) {
            return hoctl_usage(v, "give one of set, clear, status");
        }

        if (strcmp(a->args[0], "status") == 0) {
            return hoctl_etcd_fleet_status(&a->etcd, a->flag.upstream,
                                           a->json);
        }

        if (strcmp(a->args[0], "set") == 0) {
            if (hoctl_flag_check(&a->flag, 0, err, sizeof(err)) != 0) {
                return hoctl_usage(v, "%s", err);
            }
            return hoctl_etcd_set(&a->conn, &a->etcd, &a->flag, a->json);
        }

        if (strcmp(a->args[0], "clear") == 0) {
            if (a->flag.upstream == NULL) {
                return hoctl_usage(v, "--upstream is required");
            }
            return hoctl_etcd_clear(&a->conn, &a->etcd, &a->flag, a->json);
        }

        return hoctl_usage(v, "unknown fleet action \"%s\" (set, clear, "
                           "status)", a->args[0]);
    }

    if (a->fleet == NULL) {
        return hoctl_usage(v, "--fleet FILE.yaml is required");
    }

    if (a->url_given) {
        return hoctl_usage(v, "--url does not apply to 'fleet': the urls "
                           "come from the fleet file");
    }

    if (a->nargs != 1) {
        return hoctl_usage(v, "give one of set, clear, status");
    }

    action = a->args[0];

    if (strcmp(action, "set") == 0) {
        if (hoctl_flag_check(&a->flag, 0, err, sizeof(err)) != 0) {
            return hoctl_usage(v, "%s", err);
        }

    } else if (strcmp(action, "clear") == 0) {
        if (a->flag.upstream == NULL) {
            return hoctl_usage(v, "--upstream is required");
        }

    } else if (strcmp(action, "status") != 0) {
        return hoctl_usage(v, "unknown fleet action \"%s\" (set, clear, "
                           "status)", action);
    }

    return hoctl_fleet(&a->conn, a->fleet, action, &a->flag, a->json);
}


static int
hoctl_verb_approvals(const hoctl_verb_t *v, hoctl_args_t *a)
{
    const char  *action;

    if (a->nargs > 1) {
        return hoctl_usage(v, "unexpected argument \"%s\": give the "
                           "approval's id as --id %s", a->args[1],
                           a->args[1]);
    }

    if (a->nargs != 1) {
        return hoctl_usage(v, "give one of list, approve, reject");
    }

    action = a->args[0];

    if (strcmp(action, "list") != 0 && strcmp(action, "approve") != 0
        && strcmp(action, "reject") != 0)
    {
        return hoctl_usage(v, "unknown approvals action \"%s\" (list, "
                           "approve, reject)", action);
    }

    if (strcmp(action, "list") != 0 && a->id == NULL) {
        return hoctl_usage(v, "--id ID is required");
    }

    return hoctl_approvals(&a->conn, action, a->id, a->flag.upstream,
                           a->json);
}


static void
hoctl_print_scalar(const char *name, json_t *val)
{
    size_t   i;
    json_t  *e;

    printf("%-10s ", hoctl_safe(name));

    if (json_is_string(val)) {
        printf("%s\n", hoctl_safe(json_string_value(val)));

    } else if (json_is_array(val)) {
        json_array_foreach(val, i, e) {
            printf("%s%s", i ? " " : "",
                   json_is_string(e) ? hoctl_safe(json_string_value(e))
                                     : "?");
        }
        printf("\n");

    } else {
        char  *s = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
        char  *t = hoctl_escape(s, 1);

        printf("%s\n", t ? t : "?");
        free(t);
        free(s);
    }
}


static int
hoctl_verb_whoami(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    json_t        *j, *val;
    const char    *name;
    hoctl_resp_t   r;

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    rc = hoctl_request(&a->conn, "GET", "v1/whoami", NULL, NULL, &r);
    if (rc != HOCTL_OK) {
        return hoctl_fail(rc, &r);
    }

    if (a->json) {
        hoctl_print_raw(&r);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    j = hoctl_json_body(&r);
    hoctl_resp_free(&r);

    if (j == NULL) {
        return HOCTL_REFUSED;
    }

    json_object_foreach(j, name, val) {
        hoctl_print_scalar(name, val);
    }

    json_decref(j);
    return HOCTL_OK;
}


static int
hoctl_audit_list(const hoctl_verb_t *v, hoctl_args_t *a)
{
    int            rc;
    char           path[64], *line, *safe;
    size_t         i;
    json_t        *j, *list, *e;
    hoctl_resp_t   r;

    if (a->nargs != 1) {
        return hoctl_usage(v, "'audit list' takes no FILE");
    }

    snprintf(path, sizeof(path), "v1/audit?limit=%ld", a->limit);

    rc = hoctl_request(&a->conn, "GET", path, NULL, NULL, &r);
    if (rc != HOCTL_OK) {
        return hoctl_fail(rc, &r);
    }

    if (a->json) {
        hoctl_print_raw(&r);
        hoctl_resp_free(&r);
        return HOCTL_OK;
    }

    j = hoctl_json_body(&r);
    hoctl_resp_free(&r);

    if (j == NULL) {
        return HOCTL_REFUSED;
    }

    /* an array of entries, or an object holding one */
    list = j;
    if (json_is_object(j)) {
        list = json_object_get(j, "entries");
        if (!json_is_array(list)) {
            list = json_object_get(j, "audit");
        }
    }

    if (!json_is_array(list)) {
        line = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        safe = hoctl_escape(line, 1);
        printf("%s\n", safe ? safe : "");
        free(safe);
        free(line);
        json_decref(j);
        return HOCTL_OK;
    }

    /* one entry per line, as the log holds them, nothing raw */

    json_array_foreach(list, i, e) {
        line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER
                             | JSON_ENCODE_ANY);
        safe = hoctl_escape(line, 1);
        printf("%s\n", safe ? safe : "");
        free(safe);
        free(line);
    }

    json_decref(j);
    return HOCTL_OK;
}


static int
hoctl_verb_audit(const hoctl_verb_t *v, hoctl_args_t *a)
{
    if (a->nargs == 0) {
        return hoctl_usage(v, "give 'audit verify FILE' or 'audit list'");
    }

    if (strcmp(a->args[0], "verify") == 0) {
        if (a->nargs < 2) {
            return hoctl_usage(v, "'audit verify' takes a FILE (several: "
                               "rotated logs, oldest first)");
        }

        return hoctl_audit_verify(a->args + 1, a->nargs - 1, a->prev_hash,
                                  a->state, a->accept_gaps);
    }

    if (strcmp(a->args[0], "list") == 0) {
        return hoctl_audit_list(v, a);
    }

    return hoctl_usage(v, "unknown audit action \"%s\" (verify, list)",
                       a->args[0]);
}


static int
hoctl_verb_agent(const hoctl_verb_t *v, hoctl_args_t *a)
{
    char  err[HOCTL_ERRLEN];

    if (a->nargs != 0) {
        return hoctl_usage(v, "unexpected argument \"%s\"", a->args[0]);
    }

    if (a->etcd.config != NULL
        && hoctl_agent_config(a->etcd.config, &a->conn, &a->etcd, err,
                              sizeof(err))
           != 0)
    {
        hoctl_warn("%s", err);
        return HOCTL_USAGE;
    }

    if (a->etcd.etcd == NULL || a->etcd.environment == NULL) {
        return hoctl_usage(v, "--etcd URL and --environment ENV are "
                           "required");
    }

    return hoctl_agent(&a->conn, &a->etcd);
}


int
main(int argc, char **argv)
{
    int                  rc;
    size_t               i;
    hoctl_args_t         a;
    const hoctl_verb_t  *v;

    if (argc < 2) {
        hoctl_main_help(stderr);
        return HOCTL_USAGE;
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "help") == 0)
    {
        if (argc > 2 && strcmp(argv[1], "help") == 0) {
            for (i = 0; i < HOCTL_NVERBS; i++) {
                if (strcmp(argv[2], hoctl_verbs[i].name) == 0) {
                    fputs(hoctl_verbs[i].help, stdout);
                    return HOCTL_OK;
                }
            }
        }

        hoctl_main_help(stdout);
        return HOCTL_OK;
    }

    if (strcmp(argv[1], "--version") == 0) {
        printf("ha-optoutctl %s\n", HOCTL_VERSION);
        return HOCTL_OK;
    }

    v = NULL;
    for (i = 0; i < HOCTL_NVERBS; i++) {
        if (strcmp(argv[1], hoctl_verbs[i].name) == 0) {
            v = &hoctl_verbs[i];
            break;
        }
    }

    if (v == NULL) {
        fprintf(stderr, "%s: unknown verb \"%s\"\n\n", hoctl_progname,
                argv[1]);
        hoctl_main_help(stderr);
        return HOCTL_USAGE;
    }

    /* a vanished peer must not kill us between set and clear */
    signal(SIGPIPE, SIG_IGN);

    hoctl_http_init();

    rc = hoctl_parse(v, argc - 1, argv + 1, &a);
    if (rc != HOCTL_OK) {
        return rc;
    }

    return v->handler(v, &a);
}
