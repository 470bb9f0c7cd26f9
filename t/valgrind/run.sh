#!/bin/bash
# Valgrind (memcheck) pass over a representative request mix: one nginx
# process (master_process off; daemon off) with the module from build/,
# its own backends (server blocks of the same nginx), and ha-optoutctl to
# mint tokens.  Exercised: balancing, pin, pin_selector, failover off
# with a dead server, sticky bindings, PUT/PATCH/DELETE with the state
# file written after each, dry runs, If-Match, refused tokens and bodies,
# replay, whoami, audit, the status formats and expiry by the timer.
#
#   t/valgrind/run.sh [MODULE.so]      exit 0: no memcheck error
#
# Not part of "make test" (valgrind makes nginx ~30x slower): see
# docs/reliability.md for the last result.

set -u

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODULE=${1:-${HA_OPTOUT_MODULE:-$ROOT/build/ngx_http_ha_optout_module.so}}
NGINX=${HA_OPTOUT_NGINX:-/usr/sbin/nginx}
CTL=$ROOT/build/ha-optoutctl

command -v valgrind >/dev/null || { echo "valgrind is not installed"; exit 1; }
[ -f "$MODULE" ] && [ -x "$CTL" ] || { echo "run 'make' first"; exit 1; }

D=$(mktemp -d /tmp/ha-optout-valgrind.XXXXXX)
chmod 755 "$D"
trap '[ -n "${VPID:-}" ] && kill $VPID 2>/dev/null; [ -z "${KEEP:-}" ] && rm -rf "$D"' EXIT

P=$((20000 + RANDOM % 20000))        # front; P+1, P+2 backends; P+3 dead
head -c 48 /dev/urandom | base64 | tr -d '\n/+=' | head -c 48 > "$D/key"
chmod 600 "$D/key"

cat > "$D/nginx.conf" <<EOF
load_module $MODULE;
master_process off;
daemon off;
pid $D/nginx.pid;
error_log $D/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $D/body;
    proxy_temp_path $D/proxy;
    ha_optout_zone ha_optout 1m;
    ha_optout_environment valgrind;
    ha_optout_audit_log $D/audit.jsonl;
    ha_optout_state_file $D/ha-optout.state;
    ha_optout_flag cfg failover=off "reason=config flag";

    upstream app {
        server 127.0.0.1:$((P+1)) max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$((P+2));
        server 127.0.0.1:$((P+3));
        ha_optout selector=\$http_x_case sticky_key=\$http_x_key;
    }
    upstream cfg {
        server 127.0.0.1:$((P+1));
        ha_optout;
    }
    server {
        listen 127.0.0.1:$P;
        location / { proxy_pass http://app; ha_optout_header on;
                     add_header X-Var \$ha_optout_app always; }
        location /cfg { proxy_pass http://cfg; }
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 $D/key kid=ops;
        }
        location = /ha-status { ha_optout_status; }
    }
    server { listen 127.0.0.1:$((P+1)); return 200 "b1\n"; }
    server { listen 127.0.0.1:$((P+2)); return 200 "b2\n"; }
}
EOF

valgrind --tool=memcheck --error-exitcode=99 --track-origins=yes \
    --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite --num-callers=30 \
    --suppressions="$ROOT/t/valgrind/nginx.supp" \
    --log-file="$D/valgrind.log" \
    "$NGINX" -p "$D/" -c "$D/nginx.conf" -e "$D/error.log" &
VPID=$!

for i in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$P/cfg" && break
    sleep 0.1
done

U=http://127.0.0.1:$P
tok() { "$CTL" token --key "$D/key" --kid ops --sub valgrind \
            --scope "${1:-ha:read ha:write}" --ttl 5m; }
api() {   # METHOD PATH [BODY [EXTRA CURL ARGS]]
    local m=$1 p=$2 b=${3:-}; shift 3 2>/dev/null || shift $#
    curl -s -o /dev/null -w "%{http_code} $m $p\n" -X "$m" \
         -H "Authorization: Bearer $(tok)" ${b:+-d "$b"} "$@" "$U/ha-optout/$p"
}

{
    for i in 1 2 3 4; do curl -s "$U/" ; done
    curl -s -o /dev/null "$U/cfg"

    api PUT v1/flags/app "{\"pin\":\"127.0.0.1:$((P+2))\",\"ttl\":\"5m\",\"reason\":\"hold b2\"}"
    for i in 1 2 3; do curl -s -D - "$U/"; done
    api PATCH v1/flags/app '{"ttl":"10m"}'
    api PATCH v1/flags/app '{"pin":null,"failover":false}'
    for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w "%{http_code} GET /\n" "$U/"; done
    api PUT v1/flags/app "{\"pin\":\"127.0.0.1:$((P+1))\",\"pin_selector\":\"INC-1\",\"ttl\":\"2s\",\"reason\":\"selector\"}"
    curl -s -H "X-Case: INC-1" "$U/"; curl -s "$U/"
    api PUT v1/flags/app '{"sticky":true,"ttl":"1m","reason":"sticky"}'
    for i in 1 2 3 4 5 6; do curl -s -o /dev/null -H "X-Key: k$i" "$U/"; done
    for i in 1 2 3; do curl -s -o /dev/null -H "X-Key: k$i" "$U/"; done
    api PUT 'v1/flags/app?dry_run=1' '{"replication":false,"ttl":"1m","reason":"dry"}'
    api PUT v1/flags/app '{"sticky":true,"ttl":"1m","reason":"if-match"}' -H 'If-Match: "999"'
    api PUT v1/flags/app '{"failover":false,"ttl":"1x","reason":"bad ttl"}'
    api PUT v1/flags/app '{"failover":false,"ttl":"1m","reason":"x","junk":1}'
    api PUT v1/flags/app 'not json'
    api PUT v1/flags/app "{\"pin\":\"127.0.0.1:1\",\"ttl\":\"1m\",\"reason\":\"no such server\"}"
    api PUT v1/flags/nope '{"failover":false,"ttl":"1m","reason":"x"}'
    api GET v1/flags
    api GET v1/flags/app
    api GET 'v1/audit?limit=5'
    api GET v1/whoami
    t=$(tok)
    for i in 1 2; do
        curl -s -o /dev/null -w "%{http_code} replay\n" -X DELETE \
             -H "Authorization: Bearer $t" "$U/ha-optout/v1/flags/app"
    done
    curl -s -o /dev/null -w "%{http_code} malformed token\n" \
         -H "Authorization: Bearer a.b.c" "$U/ha-optout/v1/flags"
    curl -s -o /dev/null -w "%{http_code} no token\n" "$U/ha-optout/v1/flags"
    curl -s -o /dev/null -w "%{http_code} read-only scope writes\n" -X DELETE \
         -H "Authorization: Bearer $(tok ha:read)" "$U/ha-optout/v1/flags/app"
    api PUT v1/flags/app '{"failover":false,"ttl":"1s","reason":"expires"}'
    sleep 3                                     # the expiry timer runs
    curl -s -o /dev/null "$U/"
    for f in "" "?format=prometheus" "?format=html"; do
        curl -s -o /dev/null -w "%{http_code} status$f\n" "$U/ha-status$f"
    done
    api DELETE v1/flags/app
} > "$D/requests.log" 2>&1

kill -QUIT $VPID
wait $VPID
rc=$?
VPID=

cat "$D/requests.log" | grep -E "^[0-9]{3} " | sort | uniq -c | sed 's/^/# /'
grep -E "ERROR SUMMARY|definitely lost|in use at exit" "$D/valgrind.log"

if [ $rc -ne 0 ]; then
    KEEP=1
    echo "valgrind: nginx exited $rc; log kept in $D/valgrind.log"
    grep -E "^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|.*definitely)" \
        -A 12 "$D/valgrind.log" | head -80
    exit 1
fi

echo "valgrind: no memcheck error"
