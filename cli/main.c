
/*
 * ha-optoutctl: the verbs (a table: name, option groups, handler, help),
 * the help texts, and main(), which picks the verb and hands it its
 * parsed command line.  Options are options.c; each verb's handler is in
 * the file of its family (verb.h says which).
 */

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <signal.h>

#include "verb.h"


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
      "leaves out.  SIGHUP reads --config and the --trust-key files\n"
      "again (keys refused: the ones before are kept) and keeps running;\n"
      "other changed settings wait for a restart.\n"
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


int
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
