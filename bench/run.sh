#!/bin/bash
#
# bench/run.sh: throughput, latency, callgrind cost, flag propagation and
# zone bytes of ngx_http_ha_optout_module against stock round robin and an
# OpenResty-style Lua balancer.  Everything runs on 127.0.0.1 with stock
# Debian nginx as the proxy and as the backend, wrk as the client.
# `make bench` runs it after `make deps all`; docs/benchmarks.md explains
# the numbers.
#
# Knobs (environment): BENCH_DURATION (s per wrk run, 3), BENCH_ROUNDS (5),
# BENCH_CONNECTIONS (16), BENCH_CG_REQUESTS (2000), BENCH_SKIP (words of
# "wrk callgrind propagation zone scale fleet" to skip), BENCH_OUT (report
# directory, build/bench).  "scale" is bench/scale.sh (its own SCALE_*
# knobs): how the cost grows with servers, upstreams, clients, and stream.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
BENCH_NAME=bench
SKIP=${BENCH_SKIP:-}
. "$BENCH/lib.sh"
CTL=$BUILD/ha-optoutctl
DURATION=${BENCH_DURATION:-3}
ROUNDS=${BENCH_ROUNDS:-5}
CONNS=${BENCH_CONNECTIONS:-16}
CG_REQUESTS=${BENCH_CG_REQUESTS:-2000}

CASES="a b c d e f"
VARIANTS="plain ka"

bench_need "$MODULE" "$CTL"

# case (f) and the profile need packages that `make deps` does not list
bench_packages wrk valgrind libnginx-mod-http-lua lua-resty-core

bench_workdir bench QUIT
bench_ports 24

take_port B1
take_port B2

KEY=$W/bench.key
head -c 48 /dev/urandom | base64 | tr -d '\n=+/' | head -c 48 > "$KEY"
chmod 0600 "$KEY"

token() {
    "$CTL" token --key "$KEY" --kid bench --sub bench \
        --scope "ha:read ha:write" --ttl 1h
}

# --- the backend: one worker, two ports, "return 200" -----------------------

start_nginx() {   # dir
    PIDFILES+=("$1/nginx.pid")
    "$NGINX" -p "$1/" -c "$1/nginx.conf" -e "$1/error.log" \
        || { cat "$1/error.log" >&2; return 1; }
}

mkdir -p "$W/backend"
{
    common_head "$W/backend"
    cat <<EOF
daemon on;
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
$(temp_paths "$W/backend")
    server {
        listen 127.0.0.1:$B1 backlog=4096;
        listen 127.0.0.1:$B2 backlog=4096;
        location / { return 200 "\$server_port\n"; }
    }
}
EOF
} > "$W/backend/nginx.conf"
start_nginx "$W/backend"

# --- the proxies -------------------------------------------------------------
#
# gen_conf CASE VARIANT PORT DIR [extra main lines] [extra server lines]
#   variant "plain": local upstream, a new backend connection per request;
#   variant "ka": "zone app 64k" and "keepalive 16" (peers in shared memory,
#   connections reused).

gen_conf() {
    local c=$1 v=$2 p=$3 d=$4 main=${5:-} srv=${6:-}
    local zone="" ka="" kaproxy="" mod="" hazone="" ha="" admin="" lua=""
    local servers="        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;"

    if [ "$v" = ka ]; then
        zone="        zone app 64k;"
        ka="        keepalive 16;"
        kaproxy="            proxy_http_version 1.1;
            proxy_set_header Connection \"\";"
    fi

    case $c in
    a) ;;
    f)
        mod="load_module $MODDIR/ndk_http_module.so;
load_module $MODDIR/ngx_http_lua_module.so;"
        lua="    lua_package_path \"$BENCH/lua/?.lua;;\";
    lua_shared_dict ha_optout 1m;
    init_by_lua_block {
        local d = ngx.shared.ha_optout
        d:set(\"app:pin\", \"127.0.0.1:$B1\")
        d:set(\"app:failover\", false)
    }
    init_worker_by_lua_block {
        require(\"bench_optout\").init({ \"127.0.0.1:$B1\", \"127.0.0.1:$B2\" })
    }"
        servers="        server 0.0.0.1;
        balancer_by_lua_block { require(\"bench_optout\").balance() }"
        ;;
    *)
        mod="load_module $MODULE;"
        hazone="    ha_optout_zone ha_optout 1m;"
        ha="        ha_optout selector=\$http_x_forensic_case;"
        admin="        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 $KEY kid=bench;
        }"
        ;;
    esac

    common_head "$d"
    cat <<EOF
$mod
$main
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
$(temp_paths "$d")
$hazone
$lua
    upstream app {
$zone
$servers
$ha
$ka
    }
    server {
        listen 127.0.0.1:$p backlog=4096 $([ -n "$srv" ] && echo reuseport);
        location / {
            proxy_pass http://app;
$kaproxy
$srv
        }
$admin
    }
}
EOF
}

# the flag of each case, as a PUT body (none for a, b, f)
flag_body() {
    case $1 in
    c) echo '{"failover": false, "ttl": "1h", "reason": "bench (c)"}' ;;
    d) echo "{\"pin\": \"127.0.0.1:$B1\", \"ttl\": \"1h\", \"reason\": \"bench (d)\"}" ;;
    e) echo "{\"pin\": \"127.0.0.1:$B1\", \"pin_selector\": \"INC-4211\", \"ttl\": \"1h\", \"reason\": \"bench (e)\"}" ;;
    esac
}

set_flag() {      # case port
    local body
    body=$(flag_body "$1")
    [ -n "$body" ] || return 0
    curl -sS -f -o /dev/null -X PUT -H "Authorization: Bearer $(token)" \
        -H 'Content-Type: application/json' --data "$body" \
        "http://127.0.0.1:$2/ha-optout/v1/flags/app" \
        || { echo "PUT flag for case $1 failed" >&2; return 1; }
}

check_route() {   # case port: the flag acts (pinned cases reach only B1)
    local i got
    case $1 in d|f) ;; *) return 0 ;; esac
    for i in 1 2 3 4; do
        got=$(curl -sS "http://127.0.0.1:$2/")
        [ "$got" = "$B1" ] || { echo "case $1: reached $got, not the pin" >&2; return 1; }
    done
}

declare -A PORT_OF WORKER_OF

if ! skip wrk; then
    for v in $VARIANTS; do
        for c in $CASES; do
            d=$W/$v-$c
            mkdir -p "$d"
            take_port pp
            PORT_OF[$v-$c]=$pp
            gen_conf "$c" "$v" "${PORT_OF[$v-$c]}" "$d" \
                "daemon on;
worker_processes 1;" > "$d/nginx.conf"
            start_nginx "$d"
        done
    done
    wait_port "$B1"
    for v in $VARIANTS; do
        for c in $CASES; do
            wait_port "${PORT_OF[$v-$c]}"
            set_flag "$c" "${PORT_OF[$v-$c]}"
            check_route "$c" "${PORT_OF[$v-$c]}"
            # the proxy's one worker: its CPU time is read around each run
            WORKER_OF[$v-$c]=$(pgrep -P "$(cat "$W/$v-$c/nginx.pid")")
        done
    done
    log "proxies up: ${#PORT_OF[@]} (cases $CASES x variants $VARIANTS)"

    # warm-up: every proxy once
    for key in "${!PORT_OF[@]}"; do
        timeout 10 wrk -t1 -c"$CONNS" -d1s -s "$BENCH/alternate.lua" \
            "http://127.0.0.1:${PORT_OF[$key]}/" > /dev/null
    done

    : > "$OUT/wrk.tsv"
    for r in $(seq 1 "$ROUNDS"); do
        for v in $VARIANTS; do
            for c in $CASES; do
                wk=${WORKER_OF[$v-$c]}
                cpu0=$(cut -d' ' -f1 "/proc/$wk/schedstat")
                res=$(timeout $((DURATION + 15)) wrk -t1 -c"$CONNS" \
                      -d"${DURATION}s" --timeout 2s -s "$BENCH/alternate.lua" \
                      "http://127.0.0.1:${PORT_OF[$v-$c]}/" | grep '^RESULT')
                cpu1=$(cut -d' ' -f1 "/proc/$wk/schedstat")
                res="$res proxy_cpu_ns=$((cpu1 - cpu0))"
                echo "round=$r variant=$v case=$c $res" >> "$OUT/wrk.tsv"
                log "round $r $v ($c): $res"
            done
        done
    done
fi

# --- callgrind: instructions per request in the module -----------------------

if ! skip callgrind; then
    : > "$OUT/callgrind.txt"
    for c in $CASES; do
        d=$W/cg-$c
        mkdir -p "$d"
        take_port p
        gen_conf "$c" plain "$p" "$d" "master_process off;
daemon off;" > "$d/nginx.conf"
        # two runs that differ only in CG_REQUESTS more requests
        for run in base full; do
            valgrind --tool=callgrind \
                --callgrind-out-file="$d/callgrind.$run" \
                "$NGINX" -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" \
                > "$d/valgrind.$run.log" 2>&1 &
            vg=$!
            VGPIDS+=("$vg")
            wait_port "$p" 300
            set_flag "$c" "$p"
            perl "$BENCH/drive.pl" "$p" 200 > /dev/null       # warm-up
            [ $run = base ] \
                || perl "$BENCH/drive.pl" "$p" "$CG_REQUESTS" > /dev/null
            stop_valgrind "$vg" "$p"
        done
        perl "$BENCH/cgsum.pl" "$c" "$CG_REQUESTS" "$d/callgrind.base" \
            "$d/callgrind.full" | tee -a "$OUT/callgrind.txt" >&2
        cp "$d/callgrind.full" "$OUT/callgrind.out.$c"
    done
    log "callgrind done"
fi

# --- propagation: PUT -> first obeying request in both workers ---------------

if ! skip propagation; then
    d=$W/prop
    mkdir -p "$d"
    take_port p
    gen_conf b plain "$p" "$d" "daemon on;
worker_processes 2;" "            ha_optout_header on;
            add_header X-Worker \$pid always;
            add_header X-Upstream \$upstream_addr always;" > "$d/nginx.conf"
    start_nginx "$d"
    wait_port "$p"
    timeout 120 perl "$BENCH/propagation.pl" "$p" "$CTL" "$KEY" \
        "127.0.0.1:$B2" 5 | tee "$OUT/propagation.txt" >&2
    log "propagation done"
fi

# --- zone bytes: per upstream record (measured), per replay entry (sizeof) ---

if ! skip zone; then
    : > "$OUT/zone.txt"
    (cd /usr/share/nginx/src && cc -O0 -I src/core -I src/event \
        -I src/event/modules -I src/os/unix -I "$ROOT/ngx_ha_optout_module" \
        -I "$BUILD" -I src/http -I src/http/modules -I src/http/v2 \
        -o "$W/sizes" "$BENCH/sizes.c")
    "$W/sizes" "$(getconf PAGESIZE)" | sed 's/^/SIZE /' >> "$OUT/zone.txt"

    # how many upstreams with ha_optout fit a zone ("nginx -t" refuses more)
    for size in 64k 128k; do
        lo=0 hi=64
        while [ $((hi - lo)) -gt 1 ]; do
            n=$(((lo + hi) / 2))
            d=$W/zt
            mkdir -p "$d"
            {
                common_head "$d"
                echo "load_module $MODULE; events {} http {"
                temp_paths "$d"
                echo "ha_optout_zone ha_optout $size;"
                for i in $(seq 1 $n); do
                    echo "upstream u$i { server 127.0.0.1:$B1; ha_optout; }"
                done
                echo "}"
            } > "$d/nginx.conf"
            if "$NGINX" -t -q -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" \
                    2>/dev/null; then
                lo=$n
            else
                hi=$n
            fi
        done
        echo "UPSTREAMS zone=$size fit=$lo" >> "$OUT/zone.txt"
    done

    # Replay entries are not filled here: a DELETE is never refused for
    # want of room (it restores HA), and every PUT also writes an audit line
    # into the zone, so no write grows the replay cache alone.  Their size
    # is the sizeof line above (replay_entry_*) rounded by the slab.
    cat "$OUT/zone.txt" >&2
    log "zone done"
fi

if ! skip scale; then
    BUILD=$BUILD BENCH_OUT=$OUT NGINX=$NGINX "$BENCH/scale.sh" > /dev/null
    log "scale done"
fi

# the fleet on etcd (docs/fleet.md): 10 nginx + agents, 100 toggles
if ! skip fleet && command -v etcd > /dev/null; then
    log "fleet (etcd, 10 nginx + agents)"
    perl "$BENCH/fleet.pl" > "$OUT/fleet.txt"
    cat "$OUT/fleet.txt" >&2
fi

perl "$BENCH/report.pl" "$OUT" > "$OUT/report.md"
if ! skip scale && [ -s "$OUT/scale-report.md" ]; then
    { echo; echo "## How cost grows (bench/scale.sh)"; echo
      cat "$OUT/scale-report.md"; } >> "$OUT/report.md"
fi
if ! skip fleet && command -v etcd > /dev/null && [ -s "$OUT/fleet.txt" ]; then
    { echo; echo "## Fleet on etcd (bench/fleet.pl)"; echo
      cat "$OUT/fleet.txt"; } >> "$OUT/report.md"
fi
cat "$OUT/report.md"
log "report: $OUT/report.md (raw: wrk.tsv callgrind.txt propagation.txt zone.txt)"
