#!/usr/bin/env bash
#
# make demo: a local nginx with ngx_http_ha_optout_module, a degraded
# backend to hold on to, and a tour of the admin API, printed ready to paste.
#
#   demo/run.sh            start, print the tour, wait; Ctrl-C stops it all
#   demo/run.sh --check    start, run the tour unattended, stop; exit 0/1
#   demo/run.sh --keep     keep the demo directory after stopping
#
# Needs: make deps && make (build/ngx_http_ha_optout_module.so and
# build/ha-optoutctl), Debian's /usr/sbin/nginx (or HA_OPTOUT_NGINX and
# HA_OPTOUT_MODULE, HA_OPTOUT_STREAM_MODULE for an nginx.org build), curl, perl.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NGINX=${HA_OPTOUT_NGINX:-/usr/sbin/nginx}
MODULE=${HA_OPTOUT_MODULE:-$ROOT/build/ngx_http_ha_optout_module.so}
STREAM_MODULE=${HA_OPTOUT_STREAM_MODULE:-$ROOT/build/ngx_stream_ha_optout_module.so}
CTL=$ROOT/build/ha-optoutctl

# Debian builds the stream core as a module (--with-stream=dynamic), to load
# before the twin; nginx.org's --with-stream compiles it in: nothing to load.
# HA_OPTOUT_STREAM_CORE overrides ("" loads none), as in the test harness.
if [ -z "${HA_OPTOUT_STREAM_CORE+set}" ]; then
    HA_OPTOUT_STREAM_CORE=
    V=$("$NGINX" -V 2>&1 || true)
    case $V in
    *--with-stream=dynamic*)
        MODDIR=$(printf '%s\n' "$V" | tr ' ' '\n' \
                 | sed -n 's/^--modules-path=//p')
        HA_OPTOUT_STREAM_CORE=${MODDIR:-/usr/lib/nginx/modules}/ngx_stream_module.so ;;
    esac
fi
if [ -n "$HA_OPTOUT_STREAM_CORE" ]; then
    STREAM_CORE_LINE="load_module $HA_OPTOUT_STREAM_CORE;"
else
    STREAM_CORE_LINE="# stream is compiled into $NGINX"
fi
TEMPLATE=$ROOT/demo/nginx.conf.in
PORT_DIR=/tmp/ha-optout-test-ports     # shared with t/lib/HaOptout/Test.pm

MODE=interactive
KEEP=${HA_OPTOUT_DEMO_KEEP:-0}

for arg in "$@"; do
    case $arg in
    --check) MODE=check ;;
    --keep)  KEEP=1 ;;
    -h|--help)
        sed -n '3,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 0 ;;
    *)  echo "demo/run.sh: unknown option \"$arg\" (--check, --keep)" >&2
        exit 2 ;;
    esac
done

die() { echo "demo: $*" >&2; exit 1; }

for f in "$NGINX" "$MODULE" "$STREAM_MODULE" "$CTL"; do
    [ -x "$f" ] || [ -f "$f" ] || die "$f is missing: run 'make deps && make'"
done
command -v curl >/dev/null || die "curl is missing: run 'make deps'"
command -v perl >/dev/null || die "perl is missing: run 'make deps'"


# ------------------------------------------------------------- ports

# Interactive: the friendly ports of the README when they are free, else
# any free ones.  --check: always free ones, claimed in the same lock
# directory as the test harness so that "make test" in parallel does not
# hand them to another test.

pick_ports() {
    perl -MIO::Socket::INET -MFcntl=O_CREAT,O_EXCL,O_WRONLY -e '
        my ($mode, $owner, $dir, @want) = @ARGV;
        my %taken;
        sub free { IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                       LocalPort => $_[0], Listen => 1, ReuseAddr => 1) }
        sub any {
            for (1 .. 200) {
                my $s = free(0) or next;
                my $p = $s->sockport; close $s;
                next if $taken{$p};
                if ($mode eq "check") {
                    mkdir $dir, 0777;
                    sysopen(my $fh, "$dir/$p", O_CREAT|O_EXCL|O_WRONLY)
                        or next;
                    print $fh "$owner\n"; close $fh;
                }
                return $p;
            }
            die "no free port\n";
        }
        for my $p (@want) {
            my $s = ($mode ne "check" && !$taken{$p}) ? free($p) : undef;
            if ($s) { close $s } else { $p = any() }
            $taken{$p} = 1;
            print "$p\n";
        }' "$MODE" "$$" "$PORT_DIR" 8080 9001 9002 9003 9009 8306 9101 9102
}

PORTS=($(pick_ports)) || die "cannot find free ports on 127.0.0.1"
[ ${#PORTS[@]} -eq 8 ] || die "cannot find free ports on 127.0.0.1"
PORT_FRONT=${PORTS[0]} PORT_B1=${PORTS[1]} PORT_B2=${PORTS[2]}
PORT_B3=${PORTS[3]} PORT_SHADOW=${PORTS[4]}
PORT_DB=${PORTS[5]} PORT_DB1=${PORTS[6]} PORT_DB2=${PORTS[7]}
B1=127.0.0.1:$PORT_B1
DB2=127.0.0.1:$PORT_DB2


# ------------------------------------------------------------- the directory

DIR=$(mktemp -d /tmp/ha-optout-demo.XXXXXX)
chmod 0755 "$DIR"                       # workers (nobody) must traverse it
mkdir -p "$DIR/state" "$DIR/tmp"
if [ "$(id -u)" = 0 ]; then
    chown nobody "$DIR/state"           # the state file is written by workers
fi

KEY=$DIR/ha-optout.key
(umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$KEY")
chmod 0600 "$KEY"                       # 64 hex digits: a 32-byte secret

sed -e "s|@@DIR@@|$DIR|g" -e "s|@@MODULE@@|$MODULE|g" \
    -e "s|@@PORT_FRONT@@|$PORT_FRONT|g" -e "s|@@PORT_B1@@|$PORT_B1|g" \
    -e "s|@@PORT_B2@@|$PORT_B2|g" -e "s|@@PORT_B3@@|$PORT_B3|g" \
    -e "s|@@PORT_SHADOW@@|$PORT_SHADOW|g" -e "s|@@PORT_DB@@|$PORT_DB|g" \
    -e "s|@@PORT_DB1@@|$PORT_DB1|g" -e "s|@@PORT_DB2@@|$PORT_DB2|g" \
    -e "s|@@STREAM_MODULE@@|$STREAM_MODULE|g" \
    -e "s|@@STREAM_CORE@@|$STREAM_CORE_LINE|g" \
    "$TEMPLATE" > "$DIR/nginx.conf"

NGINX_CMD=("$NGINX" -p "$DIR/" -c "$DIR/nginx.conf" -e "$DIR/error.log")
URL=http://127.0.0.1:$PORT_FRONT
ADMIN=$URL/ha-optout/
MASTER=


# ------------------------------------------------------------- start, stop

STOPPED=0

stop() {
    local rc=$? i

    [ $STOPPED = 1 ] && return
    STOPPED=1
    trap - INT TERM EXIT
    set +e

    if [ -n "$MASTER" ] && kill -0 "$MASTER" 2>/dev/null; then
        kill -QUIT "$MASTER" 2>/dev/null || true     # graceful: nginx -s quit
        for i in $(seq 50); do
            kill -0 "$MASTER" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$MASTER" 2>/dev/null || true
    fi

    if [ "$MODE" = check ]; then
        for p in "${PORTS[@]}"; do rm -f "$PORT_DIR/$p"; done
    fi

    if [ "$KEEP" = 1 ] || { [ "$MODE" = check ] && [ "$rc" != 0 ]; }; then
        echo "demo: nginx stopped; directory kept: $DIR" >&2
    else
        rm -rf "$DIR"
        [ "$MODE" = check ] || echo "demo: nginx stopped, $DIR removed" >&2
    fi

    exit "$rc"
}

trap stop EXIT
if [ "$MODE" = check ]; then
    trap 'exit 130' INT
    trap 'exit 143' TERM
else
    trap 'echo; exit 0' INT TERM        # Ctrl-C is how the demo ends
fi

if ! out=$("${NGINX_CMD[@]}" 2>&1); then
    echo "$out" >&2
    tail -n 20 "$DIR/error.log" >&2 2>/dev/null || true
    die "nginx did not start (config: $DIR/nginx.conf)"
fi

for i in $(seq 100); do
    MASTER=$(cat "$DIR/nginx.pid" 2>/dev/null || true)
    [ -n "$MASTER" ] && curl -s -o /dev/null "$URL/" && break
    sleep 0.1
done
curl -s -o /dev/null "$URL/" || die "nginx does not answer on $URL"

TOKEN=$("$CTL" token --key "$KEY" --kid demo --sub demo \
        --scope "ha:read ha:write" --ttl 1h) || die "cannot mint a token"

(umask 077; cat > "$DIR/env") <<EOF
export URL=$URL
export KEY=$KEY
export TOKEN=$TOKEN
export PATH=$ROOT/build:\$PATH
EOF


# ------------------------------------------------------------- --check

FAILED=0
ok()   { echo "ok   - $*"; }
bad()  { echo "FAIL - $*"; FAILED=1; }
expect() {                      # expect NAME CONDITION-COMMAND...
    local name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; return 1; fi
}

# GET / a few times: "CODE BODY X-HA-Optout" per line
traffic() {
    local i
    for i in 1 2 3 4 5 6; do
        curl -s -D "$DIR/h" "$@" "$URL/tour/$i" | tr -d '\n' > "$DIR/b"
        printf '%s %s [%s]\n' \
            "$(sed -n '1s/^HTTP[^ ]* \([0-9]*\).*/\1/p' "$DIR/h")" \
            "$(cat "$DIR/b")" \
            "$(sed -n 's/^X-HA-Optout: *//Ip' "$DIR/h" | tr -d '\r')"
    done
}

all_lines() {                   # all_lines REGEX < lines
    local n=0 line
    while IFS= read -r line; do
        [[ $line =~ $1 ]] || return 1
        n=$((n + 1))
    done
    [ $n -gt 0 ]
}

ctl() { "$CTL" "$@" > "$DIR/ctl.out" 2>&1 || { cat "$DIR/ctl.out"; return 1; }; }

http_code() { curl -s -o "$DIR/out" -w '%{http_code}' "$@"; }

json_has() {                    # json_has FILE PERL-EXPR-ON-$j
    perl -MJSON::PP -e '
        local $/; open my $fh, "<", $ARGV[0] or exit 1;
        my $j = eval { JSON::PP->new->decode(<$fh>) } or exit 1;
        exit(eval($ARGV[1]) ? 0 : 1)' "$1" "$2"
}

shadow_hits() { wc -l < "$DIR/shadow.log"; }

# the shadow's count once copies in flight have landed (same for 0.3 s,
# at most 5 s): a loaded machine delivers late, a guessed sleep flakes
shadow_settled() {
    local n m i
    n=$(shadow_hits)
    for i in $(seq 50); do
        sleep 0.3
        m=$(shadow_hits)
        [ "$m" = "$n" ] && break
        n=$m
    done
    echo "$n"
}

eventually() {                  # eventually COMMAND...: true within 5 s
    local i
    for i in $(seq 50); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}
db() { timeout 3 bash -c "cat < /dev/tcp/127.0.0.1/$PORT_DB"; }
export -f db; export PORT_DB

run_check() {
    local t code before

    echo "demo --check: nginx on $URL, directory $DIR"

    # 1. HA as usual: backend-1 is degraded, clients never see it
    t=$(traffic)
    expect "HA hides the degraded backend-1: every request answers 200 from backend-2 or -3" \
        all_lines '^200 backend-[23] \[\]$' <<< "$t" || echo "$t"

    # 2. pin the degraded node (curl, the printed $TOKEN)
    code=$(http_code -X PUT "$ADMIN"v1/flags/app \
           -H "Authorization: Bearer $TOKEN" \
           -d "{\"pin\":\"$B1\",\"ttl\":\"10m\",\"reason\":\"demo: hold degraded backend-1\"}")
    expect "PUT v1/flags/app pins backend-1 (200)" [ "$code" = 200 ]
    expect "the stored flag names the pin and the actor" \
        json_has "$DIR/out" "\$j->{pin} eq '$B1' && \$j->{actor} eq 'demo'"

    t=$(traffic)
    expect "pinned: every request goes to the degraded backend-1 (503) with X-HA-Optout: pin=$B1" \
        all_lines "^503 backend-1 \\(degraded\\) \\[pin=$B1\\]\$" <<< "$t" \
        || echo "$t"

    # 3. the status endpoint shows it, in all three formats
    code=$(http_code "$URL/ha-status")
    expect "/ha-status (JSON) answers 200 (got $code)" [ "$code" = 200 ]
    expect "/ha-status shows app's acting flag with the pin" \
        json_has "$DIR/out" \
        "\$j->{upstreams}{app}{flag}{pin} eq '$B1' && \$j->{environment} eq 'demo'"
    code=$(http_code "$URL/ha-status?format=prometheus")
    expect "/ha-status?format=prometheus says ha_optout_active 1 for app" \
        grep -Eq '^ha_optout_active\{[^}]*upstream="app"[^}]*\} 1$' "$DIR/out"
    code=$(http_code "$URL/ha-status?format=html")
    expect "/ha-status?format=html answers an HTML page naming app" \
        grep -q 'app' "$DIR/out"

    # 4. ha-optoutctl sees the same
    expect "ha-optoutctl status lists app as ACTIVE" \
        bash -c '"$0" status --url "$1" --key "$2" --kid demo | grep -Eq "^app +ACTIVE"' \
        "$CTL" "$ADMIN" "$KEY"

    # 5. restore (curl DELETE)
    code=$(http_code -X DELETE "$ADMIN"v1/flags/app \
           -H "Authorization: Bearer $TOKEN")
    expect "DELETE v1/flags/app restores HA (200, answers null)" \
        bash -c '[ "$0" = 200 ] && grep -qx null "$1"' "$code" "$DIR/out"

    t=$(traffic)
    expect "restored: every request answers 200 from backend-2 or -3, no header" \
        all_lines '^200 backend-[23] \[\]$' <<< "$t" || echo "$t"

    # 6. pin only one forensic case, with ha-optoutctl (fresh token per write)
    expect "ha-optoutctl set --pin --pin-selector succeeds" \
        ctl set --url "$ADMIN" --key "$KEY" --kid demo --sub demo \
        --upstream app --pin "$B1" --pin-selector INC-42 --ttl 10m \
        --reason "demo: INC-42 only"
    t=$(traffic -H "X-Forensic-Case: INC-42")
    expect "requests of case INC-42 are pinned to backend-1" \
        all_lines "^503 backend-1 \\(degraded\\) \\[pin=$B1; pin_selector=INC-42\\]\$" \
        <<< "$t" || echo "$t"
    t=$(traffic)
    expect "other requests are still balanced over backend-2 and -3" \
        all_lines '^200 backend-[23] \[pin=.*\]$' <<< "$t" || echo "$t"

    # 7. replication off: the mirror to the shadow is bypassed
    expect "ha-optoutctl set --no-replication succeeds" \
        ctl set --url "$ADMIN" --key "$KEY" --kid demo --sub demo \
        --upstream app --no-replication --ttl 10m \
        --reason "demo: schema migration"
    before=$(shadow_settled)
    traffic > /dev/null
    expect "while replication=false the shadow receives no copies" \
        [ "$(shadow_settled)" = "$before" ]

    expect "ha-optoutctl clear succeeds" \
        ctl clear --url "$ADMIN" --key "$KEY" --kid demo --sub demo \
        --upstream app
    traffic > /dev/null
    expect "after clear the shadow receives copies again" \
        eventually bash -c '[ "$(wc -l < "$0")" -gt "$1" ]' \
        "$DIR/shadow.log" "$before"

    # 8. the stream twin: hold "database" connections on db-2
    expect "without a flag TCP clients are balanced over db-1 and db-2" \
        bash -c '[ "$(for i in 1 2 3 4; do db; done | sort -u | wc -l)" = 2 ]'
    expect "ha-optoutctl set --pin on stream:db succeeds" \
        ctl set --url "$ADMIN" --key "$KEY" --kid demo --sub demo \
        --upstream stream:db --pin "$DB2" --ttl 10m --reason "demo: hold db"
    expect "pinned: every TCP client lands on db-2" \
        bash -c '[ "$(for i in 1 2 3 4; do db; done | sort -u)" = db-2 ]'
    expect "ha-optoutctl clear stream:db succeeds" \
        ctl clear --url "$ADMIN" --key "$KEY" --kid demo --sub demo \
        --upstream stream:db

    # 9. the audit log holds the tour, and its hash chain verifies
    expect "audit log has set and clear entries" \
        bash -c 'grep -Eq "\"action\": *\"set\"" "$0" && grep -Eq "\"action\": *\"clear\"" "$0"' \
        "$DIR/audit.jsonl"
    expect "ha-optoutctl audit verify accepts the audit log" \
        ctl audit verify "$DIR/audit.jsonl"

    if [ $FAILED != 0 ]; then
        echo "--- error.log (tail)"
        tail -n 20 "$DIR/error.log"
        echo "demo --check: FAILED"
        return 1
    fi

    echo "demo --check: all good"
}

if [ "$MODE" = check ]; then
    run_check >&2 && exit 0
    exit 1
fi


# ------------------------------------------------------------- the tour

cat <<EOF

  ha_optout demo is running: nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), pid $MASTER
  directory  $DIR   (config nginx.conf, audit.jsonl, error.log, state/)
  front      $URL/          upstream "app":
               backend-1 127.0.0.1:$PORT_B1  degraded, answers 503
               backend-2 127.0.0.1:$PORT_B2
               backend-3 127.0.0.1:$PORT_B3
             mirrored to a shadow on 127.0.0.1:$PORT_SHADOW (shadow.log)
  database   127.0.0.1:$PORT_DB (stream {}) upstream "db", API name "stream:db":
               db-1 127.0.0.1:$PORT_DB1, db-2 $DB2 (each answers its name)
  admin API  $ADMIN   status $URL/ha-status

  In another shell, paste this first (or: . $DIR/env).  The token is
  valid for 1 hour; the demo sets "ha_optout_admin_replay off" so that it
  may be reused for every write (see README.md):

export URL=$URL
export KEY=$KEY
export TOKEN=$TOKEN
export PATH=$ROOT/build:\$PATH

  1. HA as usual: backend-1 fails, nginx ejects it and fails over, clients
     only ever see backend-2 and backend-3:

for i in 1 2 3 4 5 6; do curl -s \$URL/; done

  2. Pin the degraded node, to take a heap dump or read its logs while it
     is still getting real traffic (TTL 10 minutes, then HA comes back):

curl -s -X PUT \$URL/ha-optout/v1/flags/app -H "Authorization: Bearer \$TOKEN" -d '{"pin":"$B1","ttl":"10m","reason":"INC-42 hold degraded backend-1"}'
for i in 1 2 3; do curl -s \$URL/; done
curl -si \$URL/ | grep -i '^x-ha-optout'

     or with ha-optoutctl (it mints a fresh token for every request):

ha-optoutctl set --url \$URL/ha-optout/ --key \$KEY --kid demo --upstream app --pin $B1 --ttl 10m --reason "INC-42 hold degraded backend-1"

     or pin only the requests of one forensic case (header X-Forensic-Case):

ha-optoutctl set --url \$URL/ha-optout/ --key \$KEY --kid demo --upstream app --pin $B1 --pin-selector INC-42 --ttl 10m --reason "INC-42 only"
curl -s -H "X-Forensic-Case: INC-42" \$URL/; curl -s \$URL/

  3. Watch it:

curl -s \$URL/ha-status
curl -s "\$URL/ha-status?format=prometheus"
curl -s "\$URL/ha-status?format=html" > /tmp/ha-status.html   # or open \$URL/ha-status in a browser
ha-optoutctl status --url \$URL/ha-optout/ --key \$KEY --kid demo
curl -s \$URL/ha-optout/v1/flags/app -H "Authorization: Bearer \$TOKEN"
tail -n 3 $DIR/audit.jsonl

  4. Restore HA now:

curl -s -X DELETE \$URL/ha-optout/v1/flags/app -H "Authorization: Bearer \$TOKEN"
ha-optoutctl clear --url \$URL/ha-optout/ --key \$KEY --kid demo --upstream app
ha-optoutctl audit verify $DIR/audit.jsonl

  More: bypass the mirror during a "migration" (watch $DIR/shadow.log stop):

ha-optoutctl set --url \$URL/ha-optout/ --key \$KEY --kid demo --upstream app --no-replication --ttl 5m --reason "schema migration"

  TCP too: hold "database" connections (stream {}) on db-2:

cat < /dev/tcp/127.0.0.1/$PORT_DB      # db-1 or db-2
ha-optoutctl set --url \$URL/ha-optout/ --key \$KEY --kid demo --upstream stream:db --pin $DB2 --ttl 10m --reason "hold db on db-2"
for i in 1 2 3; do cat < /dev/tcp/127.0.0.1/$PORT_DB; done     # db-2, db-2, db-2

  Ctrl-C stops nginx and removes $DIR$([ "$KEEP" = 1 ] && echo " (no: --keep, it is kept)").

EOF

while kill -0 "$MASTER" 2>/dev/null; do
    sleep 1 &
    wait $! || true
done

KEEP=1
die "nginx exited by itself; see $DIR/error.log"
