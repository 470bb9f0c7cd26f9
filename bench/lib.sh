# bench/lib.sh: what bench/run.sh and bench/scale.sh share, sourced by
# both after they set ROOT, BENCH and BENCH_NAME (the log's tag): the
# build's paths, the log, the packages a bench needs, its work directory
# (removed at exit with the servers it started), free ports, and starting
# a stock nginx.
#
#   bench_packages PKG...        install what dpkg does not have
#   bench_workdir PREFIX SIGNAL  $W = /tmp/ha-optout-PREFIX-XXXXXX; at exit
#                                valgrinds get TERM, PIDFILES get SIGNAL
#   bench_ports N                N free ports on 127.0.0.1 for take_port
#   stop_valgrind PID PORT       a callgrind'ed nginx stopped, its file out

BUILD=${BUILD:-$ROOT/build}
MODULE=$BUILD/ngx_http_ha_optout_module.so
OUT=${BENCH_OUT:-$BUILD/bench}
NGINX=${NGINX:-/usr/sbin/nginx}
export -n NGINX      # nginx reads $NGINX as inherited sockets (binary upgrade)
MODDIR=/usr/lib/nginx/modules

START=$SECONDS

log() { printf '[%s %3ds] %s\n' "$BENCH_NAME" $((SECONDS - START)) "$*" >&2; }
skip() { [[ " $SKIP " == *" $1 "* ]]; }

bench_need() {    # file...: built by make
    local f
    for f in "$@"; do
        [ -e "$f" ] || { echo "missing $f: run 'make'" >&2; exit 1; }
    done
}

bench_packages() {
    local p missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
            || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
}

bench_workdir() {     # prefix signal
    W=$(mktemp -d /tmp/ha-optout-$1-XXXXXX)
    chmod 0755 "$W"
    mkdir -p "$OUT"
    PIDFILES=()
    VGPIDS=()
    BENCH_STOP_SIGNAL=$2
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local p f
    for p in "${VGPIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for f in "${PIDFILES[@]}"; do
        [ -s "$f" ] && kill -"$BENCH_STOP_SIGNAL" "$(cat "$f")" 2>/dev/null \
            || true
    done
    sleep 0.3
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}

# free ports on 127.0.0.1, chosen by the kernel
bench_ports() {   # count
    PORTS=($(perl -MIO::Socket::INET -e '
        my @s = map { IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                      LocalPort => 0, Listen => 1) or die $! } 1 .. $ARGV[0];
        print join(" ", map { $_->sockport } @s), "\n"' "$1"))
    next_port=0
}

take_port() { printf -v "$1" %s "${PORTS[$next_port]}"; next_port=$((next_port + 1)); }

wait_port() {     # port [tries of 0.1 s]
    local i
    for i in $(seq 1 ${2:-100}); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

common_head() {   # dir
    cat <<EOT
pid $1/nginx.pid;
error_log $1/error.log warn;
EOT
}

temp_paths() {    # dir
    cat <<EOT
    client_body_temp_path $1/client_body_temp;
    proxy_temp_path $1/proxy_temp;
    fastcgi_temp_path $1/fastcgi_temp;
    uwsgi_temp_path $1/uwsgi_temp;
    scgi_temp_path $1/scgi_temp;
EOT
}

start_nginx() {   # dir
    PIDFILES+=("$1/nginx.pid")
    "$NGINX" -p "$1/" -c "$1/nginx.conf" -e "$1/error.log" \
        || { cat "$1/error.log" >&2; return 1; }
}

# nginx under valgrind can sleep on in epoll_wait after SIGTERM set its
# flag: a connection wakes it up to notice (and write callgrind's file)
stop_valgrind() {     # pid port
    local i
    kill -TERM "$1"
    for i in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
        (exec 3<>/dev/tcp/127.0.0.1/"$2") 2>/dev/null || true
        sleep 0.2
    done
    wait "$1" || true
}
