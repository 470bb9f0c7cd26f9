#!/usr/bin/env bash
# make test-deb: install the Debian packages of build/deb/ for real, run the
# stock nginx config with the shipped example on test ports, pin a server
# with ha-optoutctl, rotate the audit log with the shipped logrotate stanza,
# verify the chain, purge and check that nothing is left, install again,
# and leave the machine as it was found.
#
# Not part of 'prove t/': it changes the system (root, apt-get).  The
# system nginx service is never stopped or started; installing and purging
# a libnginx-mod-* package reloads it if it runs, as apt always does.  Only
# the nginx this script starts (its own pid file) is signalled.
#
#   t/deb/run.sh [DEB_DIR]          (default build/deb)
#   HA_OPTOUT_TEST_DEB_FORCE=1      run even where the packages are installed
#                                   (their state directory is lost on purge)

set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEB_DIR=$(cd "${1:-$ROOT/build/deb}" && pwd)
PKGS=(libnginx-mod-http-ha-optout libnginx-mod-stream-ha-optout ha-optoutctl)
NGINX=/usr/sbin/nginx
KEY=/etc/nginx/ha-optout.key
STATEDIR=/var/lib/nginx/ha-optout
AUDIT=/var/log/nginx/ha-optout.audit.jsonl
LOGROTATE=/etc/logrotate.d/libnginx-mod-http-ha-optout
DOC=/usr/share/doc/libnginx-mod-http-ha-optout
PORT_DIR=/tmp/ha-optout-test-ports          # shared with t/lib/HaOptout/Test.pm

# what the test looks at, before and after: everything the packages or the
# nginx they configure could leave behind
WATCH=(/etc/nginx /etc/logrotate.d /etc/systemd/system /etc/ha-optout
       /usr/lib/nginx/modules /usr/share/nginx/modules-available
       /var/lib/nginx /var/log/nginx /usr/bin/ha-optoutctl
       /lib/systemd/system/ha-optout-agent.service
       /usr/lib/systemd/system/ha-optout-agent.service
       /var/lib/systemd/deb-systemd-helper-enabled
       /var/lib/systemd/deb-systemd-helper-masked
       /usr/share/man/man1/ha-optoutctl.1.gz
       /usr/share/doc/libnginx-mod-http-ha-optout
       /usr/share/doc/libnginx-mod-stream-ha-optout
       /usr/share/doc/ha-optoutctl)

n=0 failed=0
ok()   { n=$((n + 1)); echo "ok $n - $*"; }
fail() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
die()  { echo "t/deb/run.sh: $*" >&2; exit 1; }

# poll a condition, at most $1 seconds
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

snapshot() {
    find "${WATCH[@]}" -printf '%p %y %m %u:%g\n' 2>/dev/null | sort || true
}

[ "$(id -u)" = 0 ] || die "needs root (apt-get install, purge)"
shopt -s nullglob
DEBS=("$DEB_DIR"/*.deb)
shopt -u nullglob
[ ${#DEBS[@]} -eq 3 ] || die "expected the 3 packages in $DEB_DIR (make deb), found ${#DEBS[@]}"

BEFORE=()
for p in "${PKGS[@]}"; do installed "$p" && BEFORE+=("$p"); done
if [ -z "${HA_OPTOUT_TEST_DEB_FORCE:-}" ]; then
    [ ${#BEFORE[@]} -eq 0 ] \
        || die "already installed: ${BEFORE[*]}; this test purges them (HA_OPTOUT_TEST_DEB_FORCE=1 to run anyway)"
    for f in "$STATEDIR" "$AUDIT" "$KEY"; do
        [ ! -e "$f" ] || die "$f exists: this machine uses ha-optout (HA_OPTOUT_TEST_DEB_FORCE=1 to run anyway)"
    done
fi

T=$(mktemp -d /tmp/ha-optout-deb.XXXXXX)
chmod 0755 "$T"
S0=$T/snapshot.before
snapshot > "$S0"
KEY_MADE= NGX_PID= PORTS=()

cleanup() {
    local rc=$?
    set +e
    if [ -n "$NGX_PID" ] && kill -0 "$NGX_PID" 2>/dev/null; then
        kill -QUIT "$NGX_PID"
        wait_for 20 eval '! kill -0 '"$NGX_PID"' 2>/dev/null' || kill -KILL "$NGX_PID"
    fi
    if [ ${#BEFORE[@]} -eq 0 ]; then
        apt-get purge -y -q "${PKGS[@]}" >> "$T/apt.log" 2>&1
    else
        apt-get install -y -q "${DEBS[@]}" >> "$T/apt.log" 2>&1
    fi
    # what this test (not the packages) made: the key, the audit logs,
    # the temp directories nginx -t creates under /var/lib/nginx
    [ -n "$KEY_MADE" ] && rm -f "$KEY"
    for f in "$AUDIT"* /var/lib/nginx/{body,fastcgi,proxy,scgi,uwsgi}; do
        [ -e "$f" ] || continue
        grep -q "^$f " "$S0" || rm -rf "$f"
    done
    for p in "${PORTS[@]}"; do rm -f "$PORT_DIR/$p"; done
    if [ ${#BEFORE[@]} -eq 0 ]; then
        # nginx's own temp directories: any nginx that starts (this test's
        # runs as www-data, the suite's as nobody) chowns them to its user
        tmpdirs='^/var/lib/nginx/(body|fastcgi|proxy|scgi|uwsgi)[^ ]* '
        if diff <(grep -vE "$tmpdirs" "$S0") <(snapshot | grep -vE "$tmpdirs") \
                > "$T/final.diff"; then
            echo "# the machine is as it was found"
        else
            echo "# NOT as found:"; sed 's/^/#   /' "$T/final.diff"; rc=1
        fi
    fi
    if [ $rc -ne 0 ] || [ $failed -ne 0 ]; then
        echo "# kept for inspection: $T"
    else
        rm -rf "$T"
    fi
    exit $(( rc != 0 ? rc : (failed != 0) ))
}
trap cleanup EXIT
trap 'exit 130' INT TERM

claim_port() {
    mkdir -p "$PORT_DIR"; chmod 1777 "$PORT_DIR" 2>/dev/null || true
    perl -MIO::Socket::INET -MFcntl -e '
        for (1 .. 200) {
            my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                LocalPort => 0, Listen => 1, ReuseAddr => 1) or next;
            my $p = $s->sockport; close $s;
            sysopen(my $fh, "$ARGV[0]/$p", O_CREAT | O_EXCL | O_WRONLY)
                or next;
            print $fh "$ARGV[1]\n"; close $fh; print "$p\n"; exit 0;
        }
        exit 1' "$PORT_DIR" $$
}

echo "# packages: ${DEBS[*]##*/}"

# ------------------------------------------------------------ install
apt-get install -y -q "${DEBS[@]}" > "$T/apt.log" 2>&1 \
    || { tail -20 "$T/apt.log"; die "apt-get install failed"; }
for p in "${PKGS[@]}"; do
    check "$p installed" installed "$p"
    dpkg -L "$p" > "$T/$p.files"
done

ABI=$(sed -n 's/^nginx:abi=//p' /usr/share/nginx/src/debian/libnginx-mod.abisubstvars)
for p in libnginx-mod-http-ha-optout libnginx-mod-stream-ha-optout; do
    check "$p depends on $ABI (dh_nginx)" \
        grep -qw -- "$ABI" <(dpkg-query -W -f='${Depends}' "$p")
done
check "the stream package depends on libnginx-mod-stream and the http module" \
    grep -q 'libnginx-mod-stream,.*libnginx-mod-http-ha-optout (= \|libnginx-mod-http-ha-optout (= .*libnginx-mod-stream' \
    <(dpkg-query -W -f='${Depends}' libnginx-mod-stream-ha-optout)

link_ok() {     # modules-enabled/$1 -> modules-available/$2
    [ -L "/etc/nginx/modules-enabled/$1" ] \
        && [ "$(readlink "/etc/nginx/modules-enabled/$1")" = "/usr/share/nginx/modules-available/$2" ] \
        && [ -f "/usr/share/nginx/modules-available/$2" ]
}
check "modules-enabled/50-mod-http-ha-optout.conf enables the http module" \
    link_ok 50-mod-http-ha-optout.conf mod-http-ha-optout.conf
check "modules-enabled/70-mod-stream-ha-optout.conf enables the stream module" \
    link_ok 70-mod-stream-ha-optout.conf mod-stream-ha-optout.conf
# the include glob is sorted: the stream twin after the stream core and
# after the http module whose symbols it uses
order=$(cd /etc/nginx/modules-enabled && printf '%s\n' *.conf \
        | grep -nE '^(50-mod-stream|50-mod-http-ha-optout|70-mod-stream-ha-optout)\.conf$' \
        | cut -d: -f2 | tr '\n' ' ')
check "load order: http module, stream core, stream twin ($order)" \
    [ "$order" = "50-mod-http-ha-optout.conf 50-mod-stream.conf 70-mod-stream-ha-optout.conf " ]

check "$STATEDIR is a directory of www-data, mode 0700" \
    [ "$(stat -c '%F %U %G %a' "$STATEDIR" 2>/dev/null)" = "directory www-data www-data 700" ]
check "the audit log is created www-data:adm 0640 before nginx opens it" \
    [ "$(stat -c '%U:%G %a' "$AUDIT" 2>/dev/null)" = "www-data:adm 640" ]
check "$LOGROTATE is installed" [ -f "$LOGROTATE" ]
check "examples: conf.d snippet and policy" \
    [ -f "$DOC/examples/ha-optout.conf" -a -f "$DOC/examples/ha-optout.yaml" ]
check "README.Debian is installed" eval '[ -f "$DOC/README.Debian" ] || [ -f "$DOC/README.Debian.gz" ]'
check "ha-optoutctl(1) man page" [ -f /usr/share/man/man1/ha-optoutctl.1.gz ]
check "/usr/bin/ha-optoutctl runs" eval '/usr/bin/ha-optoutctl --version | grep -q "^ha-optoutctl "'
check "ha-optout-agent.service is shipped" \
    eval '[ -f /lib/systemd/system/ha-optout-agent.service ] || [ -f /usr/lib/systemd/system/ha-optout-agent.service ]'
check "ha-optout-agent.service is not enabled" \
    eval '! ls /etc/systemd/system/*.wants/ha-optout-agent.service >/dev/null 2>&1'

check "stock nginx -t with the modules enabled" eval "$NGINX -t -q >$T/t0.log 2>&1"

# ------------------------------------------ stock nginx.conf + example
if [ ! -e "$KEY" ]; then
    (umask 077; openssl rand -hex 32 > "$KEY"); KEY_MADE=1
fi

# stock nginx.conf, with the example included where conf.d/*.conf is
perl -pe 's{^(\s*include\s+/etc/nginx/conf\.d/\*\.conf;.*)$}{$1\n\tinclude '"$T"'/ha-optout.conf;}' \
    /etc/nginx/nginx.conf > "$T/nginx-stock.conf"
check "the stock nginx.conf includes conf.d/" grep -q "include $T/ha-optout.conf;" "$T/nginx-stock.conf"
cp "$DOC/examples/ha-optout.conf" "$T/ha-optout.conf"
check "stock nginx.conf + example snippet: nginx -t" \
    eval "$NGINX -t -q -c $T/nginx-stock.conf >$T/t1.log 2>&1"
[ -s "$T/t1.log" ] && sed 's/^/#   /' "$T/t1.log"

# the example policy, enabled as the snippet's comment says
sed "s|^#ha_optout_policy .*|ha_optout_policy $DOC/examples/ha-optout.yaml;|" \
    "$DOC/examples/ha-optout.conf" > "$T/ha-optout.conf"
check "... with the example policy enabled: nginx -t" \
    eval "$NGINX -t -q -c $T/nginx-stock.conf >$T/t2.log 2>&1"
[ -s "$T/t2.log" ] && sed 's/^/#   /' "$T/t2.log"
cp "$DOC/examples/ha-optout.conf" "$T/ha-optout.conf"

# the stream example at the top level of nginx.conf
SDOC=/usr/share/doc/libnginx-mod-stream-ha-optout/examples/ha-optout-stream.conf
{ cat "$T/nginx-stock.conf"; echo "include $SDOC;"; } > "$T/nginx-stream.conf"
check "... plus the stream example: nginx -t" \
    eval "$NGINX -t -q -c $T/nginx-stream.conf >$T/t3.log 2>&1"
[ -s "$T/t3.log" ] && sed 's/^/#   /' "$T/t3.log"

# ------------------------------------------------ a running instance
P0=$(claim_port) && PORTS+=("$P0")
P1=$(claim_port) && PORTS+=("$P1")
P2=$(claim_port) && PORTS+=("$P2")
mkdir -p "$T/run"
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$P0/g" -e "s/127\.0\.0\.1:8081/127.0.0.1:$P1/g" \
    -e "s/127\.0\.0\.1:8082/127.0.0.1:$P2/g" "$DOC/examples/ha-optout.conf" > "$T/run/ha-optout.conf"

# the stock nginx.conf with its own pid, logs and temp directories, the
# example instead of conf.d/ and sites-enabled/ (the stock site need not be
# enabled, and port 80 is not ours)
perl -pe '
    BEGIN { $t = shift }
    s{^(\s*)pid\s+[^;]*;}{${1}pid $t/nginx.pid;};
    s{^(\s*)error_log\s+[^;]*;}{${1}error_log $t/error.log;};
    s{^(\s*)access_log\s+[^;]*;}{${1}access_log $t/access.log;};
    s{^\s*include\s+/etc/nginx/(conf\.d|sites-enabled)/.*$}{};
    s{^(\s*http\s*\{.*)$}{$1\n\tinclude $t/ha-optout.conf;\n\tclient_body_temp_path $t/tmp/body;\n\tproxy_temp_path $t/tmp/proxy;\n\tfastcgi_temp_path $t/tmp/fastcgi;\n\tuwsgi_temp_path $t/tmp/uwsgi;\n\tscgi_temp_path $t/tmp/scgi;};
' "$T/run" /etc/nginx/nginx.conf > "$T/run/nginx.conf"
grep -q "pid $T/run/nginx.pid;" "$T/run/nginx.conf" || die "no pid line in /etc/nginx/nginx.conf"
mkdir -p "$T/run/tmp"

URL=http://127.0.0.1:$P0
ADMIN=$URL/ha-optout/
CTL=(/usr/bin/ha-optoutctl)
CRED=(--url "$ADMIN" --key "$KEY" --kid ops)

"$NGINX" -c "$T/run/nginx.conf" > "$T/run/start.log" 2>&1 \
    || { cat "$T/run/start.log" "$T/run/error.log" 2>/dev/null; die "the test nginx did not start"; }
wait_for 20 test -s "$T/run/nginx.pid" || die "no pid file"
NGX_PID=$(cat "$T/run/nginx.pid")
wait_for 20 eval "curl -sf -o /dev/null $URL/" || die "the test nginx does not answer on $URL"
ok "nginx (stock config + example, user www-data) runs on 127.0.0.1:$P0, pid $NGX_PID"

seen=$(for i in 1 2 3 4 5 6; do curl -s "$URL/"; done | sort -u | tr '\n' ' ')
check "HA as usual: both backends answer ($seen)" [ "$seen" = "backend-1 backend-2 " ]

# README.Debian's curl: a token from ha-optoutctl token, a PUT
TOKEN=$("${CTL[@]}" token --key "$KEY" --kid ops --sub make-test-deb --ttl 5m)
check "curl PUT v1/flags/app pin=127.0.0.1:$P1 with a minted token: 200" \
    [ "$(curl -s -o "$T/put.json" -w '%{http_code}' -X PUT "${ADMIN}v1/flags/app" \
         -H "Authorization: Bearer $TOKEN" \
         -d '{"pin":"127.0.0.1:'"$P1"'","ttl":"10m","reason":"first try"}')" = 200 ]
seen=$(for i in 1 2 3 4 5 6; do curl -s "$URL/"; done | sort -u | tr '\n' ' ')
check "pinned by curl: every request on backend-1 ($seen)" [ "$seen" = "backend-1 " ]

check "ha-optoutctl set --pin 127.0.0.1:$P2" \
    eval '"${CTL[@]}" set "${CRED[@]}" --upstream app --pin 127.0.0.1:$P2 --ttl 10m --reason "make test-deb" >$T/set.log 2>&1'
seen=$(for i in 1 2 3 4 5 6; do curl -s "$URL/"; done | sort -u | tr '\n' ' ')
check "pinned: every request on backend-2 ($seen)" [ "$seen" = "backend-2 " ]
check "X-HA-Optout: pin=127.0.0.1:$P2" \
    grep -qi "^x-ha-optout: pin=127.0.0.1:$P2" <(curl -si "$URL/" | tr -d '\r')
check "ha-optoutctl status (HA_OPTOUT_URL, _KEY, _KID) shows the pin" \
    grep -q "pin=127.0.0.1:$P2" <(HA_OPTOUT_URL=$ADMIN HA_OPTOUT_KEY=$KEY HA_OPTOUT_KID=ops \
                                  "${CTL[@]}" status 2>&1)
check "the workers wrote $STATEDIR/ha-optout.state" \
    wait_for 10 eval '[ "$(stat -c %U "$STATEDIR/ha-optout.state" 2>/dev/null)" = www-data ]'
check "the audit log has the pin" wait_for 10 grep -q "make test-deb" "$AUDIT"

# ------------------------------------------------------ rotate
# the shipped stanza signals the system nginx through its init script
# (invoke-rc.d nginx rotate reads the pid file from nginx.conf); this
# instance has its own pid file, so only that line is redirected to it
sed "s|invoke-rc.d nginx rotate.*|kill -USR1 \$(cat $T/run/nginx.pid)|" \
    "$LOGROTATE" > "$T/logrotate.conf"
check "the shipped stanza names the audit log and reopens through nginx's init script" \
    eval "grep -q '^$AUDIT {' $LOGROTATE && grep -q 'invoke-rc.d nginx rotate' $LOGROTATE && grep -q 'kill -USR1' $T/logrotate.conf"
old_lines=$(wc -l < "$AUDIT")
check "logrotate -f with the shipped stanza" \
    eval "logrotate -f -s $T/logrotate.status $T/logrotate.conf >$T/logrotate.log 2>&1"
check "rotated: $AUDIT.1 ($old_lines lines) and a new $AUDIT" \
    eval "[ \$(wc -l < $AUDIT.1) -eq $old_lines ] && [ -f $AUDIT ] && [ ! -s $AUDIT ]"
check "the new file is www-data:adm 0640 (create)" \
    [ "$(stat -c '%U:%G %a' "$AUDIT")" = "www-data:adm 640" ]

# nginx reopens on USR1; the next write must land in the new file
check "ha-optoutctl clear after the rotation" \
    eval '"${CTL[@]}" clear "${CRED[@]}" --upstream app >$T/clear.log 2>&1'
check "nginx writes the new audit file after reopening" \
    wait_for 10 grep -q '"app"' "$AUDIT"
check "the old file got nothing more" [ "$(wc -l < "$AUDIT.1")" -eq "$old_lines" ]
seen=$(for i in 1 2 3 4 5 6; do curl -s "$URL/"; done | sort -u | tr '\n' ' ')
check "cleared: both backends again ($seen)" [ "$seen" = "backend-1 backend-2 " ]

# the chain across both files
last=$(tail -n 1 "$AUDIT.1" | sed -n 's/.*"hash": "\([0-9a-f]\{64\}\)"}$/\1/p')
set +e
"${CTL[@]}" audit verify "$AUDIT.1" "$AUDIT" > "$T/verify2.log" 2>&1; both=$?
set -e
if [ $both -eq 0 ]; then
    ok "audit verify OLD NEW: $(cat "$T/verify2.log")"
elif [ $both -eq 2 ]; then
    echo "# audit verify OLD NEW: not supported here (exit 2), each file instead"
    check "audit verify $AUDIT.1" eval '"${CTL[@]}" audit verify "$AUDIT.1" >$T/v1.log 2>&1'
    check "audit verify --prev-hash <last hash of .1> $AUDIT" \
        eval '"${CTL[@]}" audit verify --prev-hash "$last" "$AUDIT" >$T/v2.log 2>&1'
else
    fail "audit verify OLD NEW: exit $both: $(cat "$T/verify2.log")"
fi
# and the chain does continue: the new file starts at the old one's last hash
first_prev=$(head -n 1 "$AUDIT" | sed -n 's/.*"prev_hash": "\([0-9a-f]\{64\}\)".*/\1/p')
check "the new file's first prev_hash is the old file's last hash (${last:0:12}...)" \
    [ -n "$last" -a "$first_prev" = "$last" ]

kill -QUIT "$NGX_PID"
wait_for 20 eval '! kill -0 '"$NGX_PID"' 2>/dev/null' && ok "the test nginx stopped" || fail "the test nginx stopped"
NGX_PID=

# ------------------------------------------------------ remove, then purge
apt-get remove -y -q "${PKGS[@]}" >> "$T/apt.log" 2>&1 || { tail -20 "$T/apt.log"; die "apt-get remove failed"; }
check "remove: the link becomes 50-mod-http-ha-optout.conf.removed (as for every libnginx-mod-*)" \
    eval '[ -L /etc/nginx/modules-enabled/50-mod-http-ha-optout.conf.removed ] && [ ! -e /etc/nginx/modules-enabled/50-mod-http-ha-optout.conf ]'
check "remove: stock nginx -t passes without the modules" eval "$NGINX -t -q >$T/t5.log 2>&1"
check "remove: the state directory and the logrotate conffile stay until purge" \
    [ -d "$STATEDIR" -a -f "$LOGROTATE" ]
apt-get purge -y -q "${PKGS[@]}" >> "$T/apt.log" 2>&1 || { tail -20 "$T/apt.log"; die "apt-get purge failed"; }
for p in "${PKGS[@]}"; do check "$p purged" eval "! dpkg-query -W -f='\${Status}' $p 2>/dev/null | grep -q installed"; done

left=
for p in "${PKGS[@]}"; do
    while read -r f; do
        [ "$f" = /. ] && continue
        grep -q "^$f " "$S0" && continue                 # it was there before
        if [ ! -d "$f" ] && { [ -e "$f" ] || [ -L "$f" ]; }; then
            left="$left $f"
        elif [ -d "$f" ] && [ -z "$(ls -A "$f")" ]; then
            left="$left $f/"                                # ours, empty
        fi                                                  # else shared: /usr, /lib/systemd/system ...
    done < "$T/$p.files"
done
check "every file of dpkg -L is gone${left:+:$left}" [ -z "$left" ]
check "$STATEDIR is gone" [ ! -e "$STATEDIR" ]
check "no modules-enabled link is left" eval '! ls /etc/nginx/modules-enabled/ | grep -q ha-optout'
check "$LOGROTATE is gone" [ ! -e "$LOGROTATE" ]

# everything else as before, except what nginx (not the packages) made:
# the audit logs (kept on purge, README.Debian), the key this test made,
# the temp directories of nginx -t
# (any nginx started meanwhile chowns those to its worker user: compared
# neither before nor after)
NGINX_MADE="^($AUDIT[^ ]*|/var/lib/nginx/(body|fastcgi|proxy|scgi|uwsgi)[^ ]*|${KEY_MADE:+$KEY}) "
snapshot | grep -vE "$NGINX_MADE" > "$T/snapshot.purged" || true
grep -vE "$NGINX_MADE" "$S0" > "$T/snapshot.before.cmp" || true
if diff "$T/snapshot.before.cmp" "$T/snapshot.purged" > "$T/purge.diff"; then
    ok "after purge: /etc/nginx, /var/lib/nginx, /var/log/nginx, logrotate, systemd as before"
else
    fail "after purge, not as before:"; sed 's/^/#   /' "$T/purge.diff"
fi
check "the audit logs are kept on purge (a record)" [ -f "$AUDIT.1" ]

# ------------------------------------------------------ install again
apt-get install -y -q "${DEBS[@]}" >> "$T/apt.log" 2>&1 || { tail -20 "$T/apt.log"; die "reinstall failed"; }
check "reinstalled: module enabled again" link_ok 50-mod-http-ha-optout.conf mod-http-ha-optout.conf
check "reinstalled: stream module enabled again" link_ok 70-mod-stream-ha-optout.conf mod-stream-ha-optout.conf
check "reinstalled: $STATEDIR www-data 0700 again" \
    [ "$(stat -c '%F %U %G %a' "$STATEDIR" 2>/dev/null)" = "directory www-data www-data 700" ]
check "reinstalled: stock config + example: nginx -t" \
    eval "$NGINX -t -q -c $T/nginx-stock.conf >$T/t4.log 2>&1"

echo "1..$n"
echo "test-deb: $((n - failed)) passed, $failed failed"
