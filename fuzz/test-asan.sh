#!/bin/bash
# make test-asan: the module built with AddressSanitizer and UBSan into
# $BUILD_ASAN, then the whole t/ suite against it.  nginx itself is not
# instrumented: gcc's libasan is preloaded into nginx (and only nginx: a
# wrapper given to the harness as HA_OPTOUT_NGINX), so the module's
# memory, and every allocation it makes through libc, is checked.
#
# Fails when prove fails or when any process left an ASan/UBSan report.
#
#   BUILD_ASAN=build-asan NGX_SRC=/usr/share/nginx/src fuzz/test-asan.sh [t/x.t ...]

set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NGX_SRC=${NGX_SRC:-/usr/share/nginx/src}
BUILD_ASAN=${BUILD_ASAN:-$ROOT/build-asan}
NGINX=${HA_OPTOUT_NGINX:-/usr/sbin/nginx}
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
PROVE_JOBS=${PROVE_JOBS:-2}

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -e "$LIBASAN" ] || { echo "no libasan.so for gcc (apt-get install libgcc-12-dev)"; exit 1; }
LIBASAN=$(readlink -f "$LIBASAN")

mkdir -p "$BUILD_ASAN"

if [ ! -f "$BUILD_ASAN/Makefile" ] || [ "$ROOT/config" -nt "$BUILD_ASAN/Makefile" ]; then
    echo "configure: $BUILD_ASAN"
    ( cd "$NGX_SRC" && . ./conf_flags && ./configure \
        --with-cc-opt="-g -O1 -fPIC $SAN" \
        --with-ld-opt="-fPIC $SAN" \
        "${NGX_CONF_FLAGS[@]}" --with-stream=dynamic \
        --add-dynamic-module="$ROOT" --builddir="$BUILD_ASAN" ) \
        > "$BUILD_ASAN/configure.log" 2>&1 \
        || { tail -20 "$BUILD_ASAN/configure.log"; exit 1; }
fi

# only our objects, as the top-level Makefile does: nginx-dev has no
# stream core sources
MODULE=$BUILD_ASAN/ngx_http_ha_optout_module.so
targets=$MODULE
if grep -q "^$BUILD_ASAN/ngx_stream_ha_optout_module.so:" "$BUILD_ASAN/Makefile"; then
    targets="$targets $BUILD_ASAN/ngx_stream_ha_optout_module.so"
fi

make -s -f "$BUILD_ASAN/Makefile" -C "$NGX_SRC" $targets \
    || { echo "asan build failed"; exit 1; }

ls -l "$MODULE"

# reports from workers (user nobody) too: a sticky world-writable dir
LOGDIR=$BUILD_ASAN/asan-logs
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"
chmod 1777 "$LOGDIR"

# named nginx, in a directory of its own: t/docs.t puts the directory of
# HA_OPTOUT_NGINX on PATH for the docs' `nginx -p ...` lines
mkdir -p "$BUILD_ASAN/bin"
cat > "$BUILD_ASAN/bin/nginx" <<EOF
#!/bin/sh
LD_PRELOAD=$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD} \\
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$LOGDIR/asan:detect_odr_violation=0 \\
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$LOGDIR/ubsan \\
exec $NGINX "\$@"
EOF
chmod 755 "$BUILD_ASAN/bin/nginx"

cd "$ROOT"

if [ $# -eq 0 ]; then
    set -- t/
fi

# the CLI does not depend on nginx: the one make built (make cli, build/)
HA_OPTOUT_CLI=${HA_OPTOUT_CLI:-$ROOT/build/ha-optoutctl} \
HA_OPTOUT_MODULE=$MODULE HA_OPTOUT_NGINX=$BUILD_ASAN/bin/nginx \
HA_OPTOUT_SANITIZED=1 \
    prove -j"$PROVE_JOBS" -I t/lib "$@"
rc=$?

reports=$(ls "$LOGDIR" 2>/dev/null)

if [ -n "$reports" ]; then
    for f in "$LOGDIR"/*; do
        echo "==== $f"
        cat "$f"
    done
    echo "test-asan: sanitizer reports in $LOGDIR"
    exit 1
fi

[ $rc -eq 0 ] && echo "test-asan: t/ passed, no sanitizer report"
exit $rc
