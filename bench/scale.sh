#!/bin/bash
#
# bench/scale.sh: how the request path's cost grows with the work, the
# "How cost grows" section of docs/benchmarks.md.  Callgrind Ir/request
# (decisive: exact and repeatable on a loaded machine) and, secondarily,
# the proxy worker's CPU µs/request under wrk, for:
#
#   servers    2, 100, 1000 per upstream: stock round robin, module without
#              flag, failover off, pin on the first, pin on the last server,
#              sticky (10 clients)
#   upstreams  1, 100, 1000 upstreams with ha_optout, each holding a pin;
#              requests go to the last one
#   clients    sticky with 10 and 10,000 distinct client keys
#              (sticky_key=$http_x_client) against stock
#              "hash $http_x_client consistent"
#   stream     stock stream proxy, the same with the http module loaded
#              (its zone and state file, no stream twin: what loading the
#              module costs a stream session by itself), the stream twin
#              without flag and with a pin, in front of two real Redis
#              servers, driven by redis-benchmark (one new TCP session per
#              command)
#
# Every http proxy has "zone" + "keepalive 16" and one worker.  Flags come
# from a state file (ha_optout_state_file), restored at start, so no admin
# call runs under callgrind.  The backend is one stock nginx listening on
# 127.0.X.Y:PORT for as many loopback addresses as servers (all of
# 127.0.0.0/8 is loopback on Linux).  bench/run.sh calls this script;
# alone: bench/scale.sh.
#
# Knobs: SCALE_CG_REQUESTS (1000), SCALE_ROUNDS (2), SCALE_DURATION (2 s),
# SCALE_SKIP ("wrk callgrind"), SCALE_CASES (a subset of the case names
# below), BENCH_OUT (build/bench), KEEP=1, SCALE_KEEP_BASE=1 (keep the
# base profile too, as callgrind.scale.CASE.base, for bench/cgdiff.pl).

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
BENCH_NAME=scale
SKIP=${SCALE_SKIP:-}
. "$BENCH/lib.sh"
STREAM_MODULE=$BUILD/ngx_stream_ha_optout_module.so
CG_REQUESTS=${SCALE_CG_REQUESTS:-1000}
ROUNDS=${SCALE_ROUNDS:-2}
DURATION=${SCALE_DURATION:-2}
WARMUP=200

bench_need "$MODULE" "$STREAM_MODULE"
bench_packages wrk valgrind redis-tools redis-server libnginx-mod-stream

bench_workdir scale TERM
bench_ports 80

# server i (1-based) of an upstream: 127.0.1.1 ... 127.0.4.250
addr() { echo "127.0.$(( ($1 - 1) / 250 + 1 )).$(( ($1 - 1) % 250 + 1 ))"; }

# --- backends: one nginx on 1000 loopback addresses, two Redis --------------

MAXS=1000
take_port BP
mkdir -p "$W/backend"
{
    common_head "$W/backend"
    cat <<EOF
daemon on;
worker_processes 1;
worker_rlimit_nofile 20000;
events { worker_connections 16000; }
http {
    access_log off;
    keepalive_requests 1000000;
$(temp_paths "$W/backend")
    server {
EOF
    for i in $(seq 1 $MAXS); do
        echo "        listen $(addr "$i"):$BP backlog=1024;"
    done
    cat <<EOF
        location / { return 200 "\$server_addr\n"; }
    }
}
EOF
} > "$W/backend/nginx.conf"
start_nginx "$W/backend"

take_port R1
take_port R2
for r in $R1 $R2; do
    mkdir -p "$W/redis-$r"
    redis-server --port "$r" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --dir "$W/redis-$r" --pidfile "$W/redis-$r/redis.pid" \
        --logfile "$W/redis-$r/redis.log" > /dev/null
    PIDFILES+=("$W/redis-$r/redis.pid")
done

# --- the cases ---------------------------------------------------------------
#
# attrs NAME -> "KIND SERVERS UPSTREAMS CLIENTS FLAG"
#   KIND: stock (round robin), hash (stock hash consistent), mod (the
#   module), tstock / tzone (the http module only) / tmod (stream); FLAG:
#   none foff pin1 pinS sticky

SERVERS="2 100 1000"
HTTP_CASES=""
for s in $SERVERS; do
    HTTP_CASES="$HTTP_CASES stock-$s noflag-$s foff-$s pinfirst-$s pinlast-$s sticky-$s"
done
HTTP_CASES="$HTTP_CASES ups-100 ups-1000 stickyc-10000 hash-10 hash-10000"
STREAM_CASES="tstock tzone tnoflag tpin"

attrs() {
    case $1 in
    stock-*)     echo "stock ${1#*-} 1 0 none" ;;
    noflag-*)    echo "mod ${1#*-} 1 0 none" ;;
    foff-*)      echo "mod ${1#*-} 1 0 foff" ;;
    pinfirst-*)  echo "mod ${1#*-} 1 0 pin1" ;;
    pinlast-*)   echo "mod ${1#*-} 1 0 pinS" ;;
    sticky-*)    echo "mod ${1#*-} 1 10 sticky" ;;
    ups-*)       echo "mod 2 ${1#*-} 0 pin1" ;;
    stickyc-*)   echo "mod 2 1 ${1#*-} sticky" ;;
    hash-*)      echo "hash 2 1 ${1#*-} none" ;;
    tstock)      echo "tstock 2 1 0 none" ;;
    tzone)       echo "tzone 2 1 0 none" ;;
    tnoflag)     echo "tmod 2 1 0 none" ;;
    tpin)        echo "tmod 2 1 0 pin1" ;;
    esac
}

# the flag of the case in the state file's YAML.  It expires in a day, as
# bench/run.sh's API flags carry a ttl: a restore judges a saved flag by
# the policy as a write would, and the default policy refuses a flag
# without expiry (ttl_none: false, docs/state-and-policy.md).
SET_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EXPIRES_AT=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
flag_yaml() {     # upstream flag servers
    local pin=null foff=true sticky=false
    case $2 in
    none) return 0 ;;
    foff) foff=false ;;
    pin1) pin="\"$(addr 1):$BP\"" ;;
    pinS) pin="\"$(addr "$3"):$BP\"" ;;
    sticky) sticky=true ;;
    esac
    if [ "$1" = stream:r ] && [ "$2" = pin1 ]; then pin="\"127.0.0.1:$R1\""; fi
    cat <<EOF
  $1:
    failover: $foff
    pin: $pin
    pin_selector: null
    replication: true
    sticky: $sticky
    reason: "bench/scale.sh"
    actor: "bench"
    version: 1
    set_at: $SET_AT
    expires_at: $EXPIRES_AT
EOF
}

write_state() {   # dir flag servers upstreams [stream]
    local i f
    f=$1/state/ha.state
    mkdir -p "$1/state"
    chown nobody "$1/state" 2>/dev/null || chmod 0777 "$1/state"
    {
        echo "version: 1"
        echo "version_seq: $4"
        echo "saved_at: 2000-01-01T00:00:00Z"
        if [ "$2" = none ]; then
            echo "flags: {}"
        else
            echo "flags:"
            if [ -n "${5:-}" ]; then
                flag_yaml stream:r "$2" "$3"
            else
                for i in $(seq 1 "$4"); do flag_yaml "u$i" "$2" "$3"; done
            fi
        fi
    } > "$f"
    chmod 0644 "$f"
    chown nobody "$f" 2>/dev/null || true
}

# the restore rewrites the state file: wait for it without a request
wait_restored() { # dir
    local i
    for i in $(seq 1 600); do
        grep -q '^saved_at: 2000-' "$1/state/ha.state" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "state file of $1 not restored" >&2
    return 1
}

gen_http() {      # case port dir main-lines
    local kind s u clients flag i j mod="" ha="" hazone="" bal=""
    read -r kind s u clients flag <<< "$(attrs "$1")"

    if [ "$kind" = mod ]; then
        mod="load_module $MODULE;"
        hazone="    ha_optout_zone ha_optout 16m;
    ha_optout_state_file $3/state/ha.state;"
        ha="        ha_optout;"
        [ "$flag" != sticky ] || ha="        ha_optout sticky_key=\$http_x_client;"
    fi
    [ "$kind" != hash ] || bal="        hash \$http_x_client consistent;"

    cat <<EOF
$mod
pid $3/nginx.pid;
error_log $3/error.log warn;
$4
worker_rlimit_nofile 20000;
events { worker_connections 16000; }
http {
    access_log off;
    keepalive_requests 1000000;
$(temp_paths "$3")
$hazone
EOF
    for j in $(seq 1 "$u"); do
        echo "    upstream u$j {"
        [ "$j" != "$u" ] || echo "        zone u$j 2m;"
        [ -z "$bal" ] || echo "$bal"
        for i in $(seq 1 "$s"); do echo "        server $(addr "$i"):$BP;"; done
        [ -z "$ha" ] || echo "$ha"
        echo "        keepalive 16;"
        echo "    }"
    done
    cat <<EOF
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / {
            proxy_pass http://u$u;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

gen_stream() {    # case port dir main-lines
    local kind s u clients flag mod="" ha="" hazone=""
    read -r kind s u clients flag <<< "$(attrs "$1")"
    if [ "$kind" = tmod ] || [ "$kind" = tzone ]; then
        mod="load_module $MODULE;"
        hazone="    ha_optout_zone ha_optout 16m;
    ha_optout_state_file $3/state/ha.state;"
    fi
    [ "$kind" != tmod ] || ha="        ha_optout;"
    cat <<EOF
$mod
load_module $MODDIR/ngx_stream_module.so;
$([ "$kind" != tmod ] || echo "load_module $STREAM_MODULE;")
pid $3/nginx.pid;
error_log $3/error.log warn;
$4
events { worker_connections 4096; }
http {
$(temp_paths "$3")
$hazone
}
stream {
    upstream r {
        zone r 64k;
        server 127.0.0.1:$R1;
        server 127.0.0.1:$R2;
$ha
    }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        proxy_pass r;
    }
}
EOF
}

prepare() {       # case port dir main-lines: config and state file
    local kind s u clients flag
    read -r kind s u clients flag <<< "$(attrs "$1")"
    mkdir -p "$3"
    case $kind in
    t*) gen_stream "$@" > "$3/nginx.conf" ;;
    *)  gen_http "$@" > "$3/nginx.conf" ;;
    esac
    case $kind in
    mod)  write_state "$3" "$flag" "$s" "$u" ;;
    tmod) write_state "$3" "$flag" "$s" 1 stream ;;
    tzone) write_state "$3" none "$s" 1 stream ;;
    esac
}

# the flag acts: a pinned case reaches only its pin (4 requests)
check_route() {   # case port
    local kind s u clients flag want i got
    read -r kind s u clients flag <<< "$(attrs "$1")"
    case $flag in
    pin1) want=$(addr 1) ;;
    pinS) want=$(addr "$s") ;;
    *) return 0 ;;
    esac
    [ "${kind#t}" = "$kind" ] || return 0
    for i in 1 2 3 4; do
        got=$(curl -sS "http://127.0.0.1:$2/")
        [ "$got" = "$want" ] || { echo "$1: reached $got, not $want" >&2; return 1; }
    done
}

is_mod() { case $(attrs "$1") in mod*|tmod*|tzone*) return 0 ;; esac; return 1; }

# one load of a case: N requests (http) or N sessions (stream)
# (the warm-up binds every client key, so measured requests find theirs)
drive() {         # case port n
    local kind s u clients flag
    read -r kind s u clients flag <<< "$(attrs "$1")"
    case $kind in
    t*) redis-benchmark -h 127.0.0.1 -p "$2" -n "$3" -c 1 -k 0 \
            -t ping_inline -q > /dev/null 2>&1 ;;
    *)  perl "$BENCH/drive.pl" "$2" "$3" "$clients" > /dev/null ;;
    esac
}

# warm-up: 200 requests, or every client key once
warm() {          # case port
    local kind s u clients flag n=$WARMUP
    read -r kind s u clients flag <<< "$(attrs "$1")"
    [ "$clients" -le "$n" ] || n=$clients
    drive "$1" "$2" "$n"
}

ALL_CASES=""
for c in ${SCALE_CASES:-$HTTP_CASES $STREAM_CASES}; do
    # the report's aliases: the same measurement seen from another dimension
    case $c in ups-1) c=pinfirst-2 ;; stickyc-10) c=sticky-2 ;; esac
    [[ " $HTTP_CASES $STREAM_CASES " == *" $c "* ]] || {
        echo "unknown case '$c' in SCALE_CASES; the cases are:" \
            $HTTP_CASES $STREAM_CASES "(ups-1 = pinfirst-2," \
            "stickyc-10 = sticky-2)" >&2
        exit 1
    }
    ALL_CASES="$ALL_CASES $c"
done

# --- callgrind -----------------------------------------------------------------

if ! skip callgrind; then
    : > "$OUT/scale-callgrind.txt"
    for c in $ALL_CASES; do
        d=$W/cg-$c
        take_port p
        prepare "$c" "$p" "$d" "master_process off;
daemon off;"
        for run in base full; do
            if is_mod "$c"; then
                prepare "$c" "$p" "$d" "master_process off;
daemon off;"
            fi
            valgrind --tool=callgrind \
                --callgrind-out-file="$d/callgrind.$run" \
                "$NGINX" -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" \
                > "$d/valgrind.$run.log" 2>&1 &
            vg=$!
            VGPIDS+=("$vg")
            wait_port "$p" 600
            if is_mod "$c"; then wait_restored "$d"; fi
            check_route "$c" "$p"
            warm "$c" "$p"
            [ $run = base ] || drive "$c" "$p" "$CG_REQUESTS"
            stop_valgrind "$vg" "$p"
        done
        mre='^ngx_http_ha_optout_'
        [ "${c#t}" = "$c" ] || mre='^ngx_(?:http|stream)_ha_optout_'
        CG_MODULE=$mre CG_TOP=${SCALE_TOP:-60} perl "$BENCH/cgsum.pl" "$c" "$CG_REQUESTS" \
            "$d/callgrind.base" "$d/callgrind.full" >> "$OUT/scale-callgrind.txt"
        grep "^CG case=$c " "$OUT/scale-callgrind.txt" | tail -1 >&2
        if [ -n "${SCALE_KEEP_BASE:-}" ]; then
            mv "$d/callgrind.base" "$OUT/callgrind.scale.$c.base"
        else
            rm -f "$d/callgrind.base"
        fi
        mv "$d/callgrind.full" "$OUT/callgrind.scale.$c"
    done
    log "callgrind done"
fi

# --- wrk / redis-benchmark: proxy CPU µs per request ---------------------------

if ! skip wrk; then
    declare -A PORT_OF WORKER_OF
    for c in $ALL_CASES; do
        take_port p
        PORT_OF[$c]=$p
        prepare "$c" "$p" "$W/wrk-$c" "daemon on;
worker_processes 1;"
        start_nginx "$W/wrk-$c"
    done
    for c in $ALL_CASES; do
        wait_port "${PORT_OF[$c]}"
        if is_mod "$c"; then wait_restored "$W/wrk-$c"; fi
        check_route "$c" "${PORT_OF[$c]}"
        WORKER_OF[$c]=$(pgrep -P "$(cat "$W/wrk-$c/nginx.pid")")
        warm "$c" "${PORT_OF[$c]}"
    done
    log "proxies up: $(echo $ALL_CASES | wc -w)"

    : > "$OUT/scale-wrk.tsv"
    for r in $(seq 1 "$ROUNDS"); do
        for c in $ALL_CASES; do
            read -r kind s u clients flag <<< "$(attrs "$c")"
            wk=${WORKER_OF[$c]}
            cpu0=$(cut -d' ' -f1 "/proc/$wk/schedstat")
            if [ "${kind#t}" != "$kind" ]; then
                t0=$(date +%s%N)
                n=$((DURATION * 1500))
                timeout 120 redis-benchmark -h 127.0.0.1 -p "${PORT_OF[$c]}" \
                    -n $n -c 4 -k 0 -t ping_inline -q > /dev/null 2>&1
                t1=$(date +%s%N)
                res="RESULT requests=$n duration_us=$(( (t1 - t0) / 1000 ))"
            else
                res=$(timeout $((DURATION + 15)) wrk -t1 -c8 -d"${DURATION}s" \
                      --timeout 2s -s "$BENCH/scale.lua" \
                      "http://127.0.0.1:${PORT_OF[$c]}/" -- "$clients" \
                      | grep '^RESULT')
            fi
            cpu1=$(cut -d' ' -f1 "/proc/$wk/schedstat")
            echo "round=$r case=$c $res proxy_cpu_ns=$((cpu1 - cpu0))" \
                >> "$OUT/scale-wrk.tsv"
        done
        log "wrk round $r done"
    done
fi

perl "$BENCH/scale-report.pl" "$OUT" > "$OUT/scale-report.md"
cat "$OUT/scale-report.md"
log "report: $OUT/scale-report.md, plot: $OUT/bench-scale.svg"
