#!/usr/bin/perl

# Docs that cannot drift: every fenced example of docs/*.md and README.md
# is marked runnable or fragment (t/lib/HaOptout/Docs.pm), and the runnable
# ones are run: nginx.conf fragments and YAML policies through nginx -t,
# shell blocks against a started nginx, their shown output compared.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);
use HaOptout::Test;
use HaOptout::Docs;
use HaOptout::Etcd;
use MIME::Base64 ();
use POSIX ();

my $ROOT = abs_path(dirname(__FILE__) . '/..');
# docs/fleet.md runs "nginx": the one the tests use
my $NGINX_DIR = dirname(abs_path($HaOptout::Test::NGINX));
my $CTL = "$ROOT/build/ha-optoutctl";

plan skip_all => 'module or CLI not built (make)'
    unless -f $HaOptout::Test::MODULE && -x $CTL;

my @files = (glob("$ROOT/docs/*.md"), "$ROOT/README.md");
my %blocks = map { $_ => [ HaOptout::Docs::blocks($_) ] } @files;
my %KINDS = map { $_ => 1 } qw(nginx policy sh output fragment);

sub where { my ($b) = @_; (substr $b->{file}, length($ROOT) + 1)
                              . ":$b->{line}" }


# ------------------------------------------------------------ the markers

my @unmarked = map { where($_) }
               grep { !$KINDS{ $_->{kind} } } map { @$_ } values %blocks;
is_deeply(\@unmarked, [], 'every fenced example carries a marker: '
          . 'runnable: nginx|policy|sh, output or fragment');

for my $b (grep { $_->{kind} eq 'output' } map { @$_ } values %blocks) {
    ok($b->{of}{kind} eq 'sh', where($b) . ': an output block follows a '
       . 'runnable sh block');
}


# ------------------------------------------------------------ a fake root

my $t = HaOptout::Test->new;
my $D = $t->testdir;
my $R = "$D/root";
my $DEMO = "$D/demo";

make_path("$R/etc/nginx/tls", "$R/etc/ha-optout", "$R/var/log/nginx",
          "$R/var/lib/nginx/ha-optout", "$R/tmp", $DEMO, "$D/tmp",
          "$D/curl");
chmod 0755, $R, "$R/etc", "$R/var", "$R/var/lib", "$R/var/lib/nginx";
my (undef, undef, $nobody) = getpwnam('nobody');
chown $nobody, -1, "$R/var/lib/nginx/ha-optout";

sub sh_ok { my ($cmd) = @_; system('sh', '-c', "$cmd >/dev/null 2>&1") == 0
                or die "setup: $cmd failed\n" }

my $E = "$R/etc/nginx";
$t->secret_file("$E/ha-optout.key");
$t->secret_file("$DEMO/ha-optout.key");
sh_ok("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
      . "-out $D/ci.pem && openssl pkey -in $D/ci.pem -pubout "
      . "-out $E/ha-optout-ci.pub.pem");
sh_ok("openssl genpkey -algorithm ED25519 -out $D/bot.pem && openssl pkey "
      . "-in $D/bot.pem -pubout -out $E/ha-optout-bot.pub.pem");
sh_ok("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      . "-days 2 -subj /CN=edge -keyout $E/tls/edge-eu-1.key "
      . "-out $E/tls/edge-eu-1.crt && cp $E/tls/edge-eu-1.crt "
      . "$E/tls/ops-ca.crt");
sh_ok("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
      . "-out $D/ops.pem && openssl pkey -in $D/ops.pem -pubout "
      . "-out $E/ha-optout-ops.pub.pem");

# a JWK Set with that RSA key, as an identity provider publishes it
{
    my ($n) = `openssl rsa -pubin -in $E/ha-optout-ops.pub.pem -noout -modulus`
              =~ /Modulus=([0-9A-F]+)/;
    my $b = pack 'H*', $n;
    $t->write_file("$E/idp.jwks", '{"keys":[{"kty":"RSA","kid":"demo-1",'
        . '"use":"sig","alg":"RS256","n":"'
        . MIME::Base64::encode_base64url($b) . '","e":"AQAB"}]}');
}

$t->write_file("$E/ha-optout.yaml", "upstreams:\n  \"*\":\n    max_ttl: 4h\n");

# every port a doc names, and the one this test uses for it
my %PORT = map { $_ => $t->port("p$_") }
           qw(8080 8081 9001 9002 9003 9101 9102 9103 8306);
my %API_PORT = (%PORT, 8080 => $PORT{8081});
# docs/fleet.md starts its own etcd and two nginx: ports of their own
my %FLEET_PORT = (%PORT, map { $_ => $t->port("fleet$_") }
                         qw(2379 2380 8081 8082 9001 9002));

sub localise {
    my ($text, $ports) = @_;
    $ports //= \%PORT;

    $text =~ s{\Q$D\E}{\0TESTDIR}g;      # already local
    $text =~ s{/tmp/ha-optout-demo\.XXXXXX/}{\0DEMO/}g;
    $text =~ s{/var/log/nginx/ha-optout\.audit\.jsonl}{\0DEMO/audit.jsonl}g;
    $text =~ s{(?<![\w/.])/(etc/nginx|etc/ha-optout|var/lib/nginx|var/log/nginx|tmp)/}{$R/$1/}g;
    $text =~ s{\0DEMO}{$DEMO}g;
    $text =~ s{\0TESTDIR}{$D}g;
    $text =~ s{\bmodules/ngx_http_ha_optout_module\.so}
              {$HaOptout::Test::MODULE}g;
    $text =~ s{\bmodules/ngx_stream_ha_optout_module\.so}
              {$HaOptout::Test::STREAM_MODULE}g;
    # where stream is compiled in (nginx.org builds) there is no core to load
    $text =~ s{^[ \t]*load_module\s+modules/ngx_stream_module\.so;[^\n]*\n}{}mg
        if $HaOptout::Test::STREAM_CORE eq '';
    $text =~ s{\bmodules/ngx_stream_module\.so}
              {$HaOptout::Test::STREAM_CORE}g;
    $text =~ s{127\.0\.0\.1([:/])(\d{4})\b}
              {"127.0.0.1$1" . ($ports->{$2} // $2)}ge;
    return $text;
}

# the doc's ports back, for comparing output
sub unlocalise {
    my ($text, $ports) = @_;
    my %back = reverse %{ $ports // \%PORT };
    $text =~ s{127\.0\.0\.1([:/])(\d+)}
              {"127.0.0.1$1" . ($back{$2} // $2)}ge;
    $text =~ s{\Q$DEMO\E/}{/tmp/ha-optout-demo.XXXXXX/}g;
    $text =~ s{\Q$R\E/}{/}g;
    return $text;
}

my $HEAD = "pid $D/nginx-t.pid;\nerror_log $D/error-t.log;\n"
         . "events { worker_connections 64; }\n";
# nginx.org builds log to PREFIX/logs/access.log by default (Debian's to
# /var/log/nginx): name one in the test directory
my $TEMP = join('', map { "    ${_}_temp_path $D/tmp/$_;\n" }
                    qw(client_body proxy fastcgi uwsgi scgi))
         . "    access_log $D/access-t.log;\n";

sub nginx_t {
    my ($conf) = @_;
    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;
    return ($rc, $out);
}

# stubs for the upstreams a fragment names but does not define
sub stubs {
    my ($text) = @_;
    my %def = map { $_ => 1 } $text =~ /^\s*upstream\s+(\S+)\s*\{/mg;
    my %use = map { $_ => 1 }
        ($text =~ m{proxy_pass\s+https?://(\w+)}g),
        ($text =~ /ha_optout_mirror_gate\s+(\w+)/g);
    my $s = '';
    $s .= "    ha_optout_zone ha_optout 1m;\n"
        unless $text =~ /\bha_optout_zone\b/;
    for my $u (sort grep { !$def{$_} } keys %use) {
        $s .= "    upstream $u { server 127.0.0.1:1;"
            . ($u eq 'shadow' ? '' : ' ha_optout;') . " }\n";
    }
    return $s;
}

sub nginx_conf {
    my ($level, $frag) = @_;

    $frag = localise($frag);
    $frag =~ s/^(\s*listen\s+)\S+?(\s|;)/${1}127.0.0.1:$PORT{8080}$2/mg;

    if ($level eq 'main') {
        my $mods = join '', $frag =~ /^(\s*load_module\s+[^;]+;[^\n]*\n)/mg;
        $frag =~ s/^\s*load_module\s+[^;]+;[^\n]*\n//mg;
        $mods ||= "load_module $HaOptout::Test::MODULE;\n";
        $mods .= ($HaOptout::Test::STREAM_CORE eq '' ? ''
                  : "load_module $HaOptout::Test::STREAM_CORE;\n")
               . "load_module $HaOptout::Test::STREAM_MODULE;\n"
            if $frag =~ /^\s*stream\s*\{/m && $mods !~ m{/ngx_stream_[^/;]*\.so};
        my $s = stubs($frag);
        $frag =~ s/^(\s*http\s*\{[^\n]*\n)/$1$TEMP$s/m;
        return $mods . $HEAD . $frag;
    }

    my $body = $frag;
    $body = "server {\n    listen 127.0.0.1:$PORT{8080};\n$body\n}\n"
        if $level eq 'location';
    return "load_module $HaOptout::Test::MODULE;\n$HEAD"
        . "http {\n$TEMP" . stubs($body) . "$body\n}\n";
}


# ------------------------------------------------------------ nginx -t

for my $b (grep { $_->{kind} eq 'nginx' } map { @{ $blocks{$_} } } @files) {
    my ($level) = $b->{arg} =~ /^(main|http|server|location)\b/;
    unless ($level) {
        fail(where($b) . ": runnable: nginx needs main|http|server|location");
        next;
    }
    my ($rc, $out) = nginx_t(nginx_conf($level, $b->{text}));
    is($rc, 0, where($b) . ": nginx -t accepts the $level fragment")
        or diag($out . "\n" . $t->read_file('nginx.conf'));
}


# ------------------------------------------------------------ policies

for my $b (grep { $_->{kind} eq 'policy' } map { @{ $blocks{$_} } } @files) {
    my $y = $b->{text};
    my %up;
    if ($y =~ /^upstreams:\s*\n((?:[ \t#].*\n|\n)*)/m) {
        $up{$_} = 1 for $1 =~ /^  "?([\w.-]+)"?:/mg;
    }
    $up{$_} = 1 for $y =~ /\bupstream:\s*"?([\w.-]+)/g;
    my @pins = $y =~ /\bpin:\s*"?([\d.]+:\d+)/g;
    my %srv = map { $_ => 1 } '127.0.0.1:1', @pins;

    my $f = $t->write_file('policy.yaml', $y);
    my $ups = join '', map {
        "    upstream $_ {\n"
        . join('', map { "        server $_;\n" } sort keys %srv)
        . "        ha_optout;\n    }\n" } sort keys %up;

    my ($rc, $out) = nginx_t("load_module $HaOptout::Test::MODULE;\n$HEAD"
        . "http {\n$TEMP    ha_optout_zone ha_optout 1m;\n"
        . "    ha_optout_policy $f;\n$ups}\n");
    is($rc, 0, where($b) . ': nginx -t accepts the policy (upstreams '
       . join(', ', sort keys %up) . ')')
        or diag($out);
}


# ------------------------------------------------------------ shell

my @sh_files = grep { grep { $_->{kind} eq 'sh' } @{ $blocks{$_} } } @files;

# docs/api.md ends and skips windows of "batch"
{
    my $now = time;
    my $iso = sub { POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) };
    $t->write_file("$D/docs-policy.yaml", <<"EOF");
windows:
  - upstream: batch
    name: nightly
    start: "@{[ $iso->($now - 60) ]}"
    end: "@{[ $iso->($now + 3600) ]}"
    failover: false
    reason: "nightly reindex"
  - upstream: batch
    name: pci
    endable: false
    start: "@{[ $iso->($now + 86400) ]}"
    end: "@{[ $iso->($now + 90000) ]}"
    failover: false
    reason: "PCI scan"
EOF
}

$t->conf(docs_env_conf());

my $TOKEN = `$CTL token --key $DEMO/ha-optout.key --kid demo --sub demo --scope "ha:read ha:write" --ttl 1h`;
chomp $TOKEN;
$t->write_file("$D/curl/.curlrc", "write-out = \"\\n\"\n");

for my $file (@sh_files) {
    my $ports = basename($file) eq 'api.md' ? \%API_PORT
              : basename($file) eq 'fleet.md' ? \%FLEET_PORT : \%PORT;

    if (basename($file) eq 'fleet.md' && !HaOptout::Etcd::available()) {
        SKIP: { skip "docs/fleet.md: etcd not installed (make deps)", 1 }
        next;
    }
    my @sh = grep { $_->{kind} eq 'sh' } @{ $blocks{$file} };
    my (%expect, $script);

    for my $n (0 .. $#sh) {
        my $blk = $sh[$n];
        my $text = localise($blk->{text}, $ports);
        my $k = 0;

        if ($blk->{arg} =~ /output in comments/) {
            my @out;
            my ($seen_cmd, $group) = (0, undef);
            for my $l (split /\n/, $text) {
                if ($seen_cmd && $l =~ /^# ?(.*)$/) {
                    my $e = $1;
                    $e =~ s/\s+\(exit \d+\)\s*$//;
                    unless (defined $group) {
                        $k++;
                        push @out, "printf '\\n\@\@E $n $k\@\@\\n'";
                        $group = '';
                    }
                    $expect{"$n $k"} .= unlocalise($e, $ports) . "\n";
                    $group .= $e;
                    next;
                }
                undef $group;
                $seen_cmd = 1 if $l =~ /\S/ && $l !~ /^\s*#/;
                push @out, $l;
            }
            $text = join "\n", @out;
        }

        $script .= "printf '\\n\@\@B $n\@\@\\n'\n$text\n"
                 . "printf '\\n\@\@R $n %d\@\@\\n' \$?\n";
    }

    # each file starts from a fresh nginx: no flags, an empty audit log
    $t->stop;
    unlink "$R/var/lib/nginx/ha-optout/ha-optout.state", "$DEMO/audit.jsonl";
    $t->run;

    # tokens.md checks a real audit log: it holds an operator's set and clear
    if (basename($file) eq 'tokens.md') {
        my $auth = "Authorization: Bearer $TOKEN";
        my $u = "http://127.0.0.1:$PORT{8080}/ha-optout/v1/flags/app";
        sh_ok("curl -sf -X PUT $u -H '$auth' "
              . "-d '{\"failover\":false,\"ttl\":\"5m\",\"reason\":\"x\"}'"
              . " && curl -sf -X DELETE $u -H '$auth'");
    }

    my $dir = "$D/work-" . basename($file);
    mkdir $dir;
    $t->write_file("$dir/script.sh", $script);

    my $url = "http://127.0.0.1:$PORT{8080}";
    my $out = `cd $dir && env -u HA_OPTOUT_URL -u HA_OPTOUT_KEY \\
        CURL_HOME=$D/curl URL=$url KEY=$DEMO/ha-optout.key TOKEN=$TOKEN \\
        MODULE=$HaOptout::Test::MODULE PATH=$ROOT/build:$NGINX_DIR:\$PATH \\
        timeout -k 5 120 bash script.sh > out 2>&1 </dev/null; cat out`;

    my ($cur, %seg, %rc) = ('');
    my $key;
    for my $l (split /\n/, $out) {
        if ($l =~ /^\@\@B (\d+)\@\@$/) { $key = "$1 0"; next }
        if ($l =~ /^\@\@E (\d+) (\d+)\@\@$/) {
            $seg{"$1 $2"} = $seg{$key} // ''; $key = "$1 $2 after"; next;
        }
        if ($l =~ /^\@\@R (\d+) (\d+)\@\@$/) { $rc{$1} = $2; next }
        $seg{$key} .= unlocalise($l, $ports) . "\n" if defined $key;
    }

    for my $n (0 .. $#sh) {
        my $blk = $sh[$n];
        my $w = where($blk);
        my @groups = sort { $a <=> $b } map { /^$n (\d+)$/ ? $1 : () }
                     keys %expect;
        if (@groups) {
            for my $k (@groups) {
                my $miss = HaOptout::Docs::match($expect{"$n $k"},
                                                 $seg{"$n $k"} // '');
                ok(!defined $miss, "$w: output $k is as shown")
                    or diag("expected line not found: $miss\ngot:\n"
                            . ($seg{"$n $k"} // ''));
            }
        } else {
            is($rc{$n}, 0, "$w: runs and exits 0")
                or diag(join '', map { $seg{$_} // '' }
                        grep { /^$n / } sort keys %seg);
        }
        if (defined $blk->{output}) {
            my $all = join '', map { $seg{$_} // '' }
                      grep { /^$n / } sort keys %seg;
            my $miss = HaOptout::Docs::match($blk->{output}, $all);
            ok(!defined $miss, "$w: the output block is as shown")
                or diag("expected line not found: $miss\ngot:\n$all");
        }
    }
}


# ------------------------------------------------------------ keys made

# the public keys the examples made load as the examples leave them
for my $k (glob("$D/work-*/*.pub.pem"), glob("$E/*.pub.pem")) {
    my $text = `openssl pkey -pubin -in $k -noout -text 2>&1`;
    my $alg = $text =~ /ED25519/i ? 'eddsa'
            : $text =~ /RSA|Modulus/i ? 'rs256' : 'es256';
    my ($rc, $out) = nginx_t(nginx_conf('location',
        "location /ha-optout/ { ha_optout_admin; "
        . "ha_optout_admin_key $alg $k kid=x; }"));
    is($rc, 0, "the $alg key " . unlocalise($k) . ' made by a doc example '
       . 'loads in nginx -t') or diag($out);
}


# ------------------------------------------------------------ the fault

# a broken example fails: the matcher and nginx -t are not blind
{
    my ($rc) = nginx_t(nginx_conf('location',
        "location /x { ha_optout_admin; ha_optout_admin_kye x; }"));
    isnt($rc, 0, 'a misspelt directive in a fragment fails nginx -t');
    ok(defined HaOptout::Docs::match("# ok: 3 lines\n{\"a\":1,...}\n",
                                     "{\"a\":2,\"b\":1}\n"),
       'output that differs from the shown one is a mismatch');
    ok(!defined HaOptout::Docs::match("{\"a\":1,...}\n",
                                      "x\n{\"a\":1,\"b\":1}\n"),
       '"..." stands for the rest of a line');
}


sub docs_env_conf {
    my %p = %PORT;
    my $admin = "        ha_optout_admin;\n"
        . "        ha_optout_admin_key hs256 $E/ha-optout.key kid=ops;\n"
        . "        ha_optout_admin_key hs256 $DEMO/ha-optout.key kid=demo;\n";
    return <<"EOF";
load_module $HaOptout::Test::MODULE;
${\ ($HaOptout::Test::STREAM_CORE eq '' ? '' : "load_module $HaOptout::Test::STREAM_CORE;")}
load_module $HaOptout::Test::STREAM_MODULE;
pid $D/nginx.pid;
error_log $D/error.log info;
worker_processes 2;
events { worker_connections 256; }

stream {
    upstream db {
        server 127.0.0.1:$p{9101};
        server 127.0.0.1:$p{9102};
        ha_optout;
    }
    server { listen 127.0.0.1:$p{8306}; proxy_pass db; }
    server { listen 127.0.0.1:$p{9101}; return "db-1\\n"; }
    server { listen 127.0.0.1:$p{9102}; return "db-2\\n"; }
}

http {
$TEMP    access_log $D/access.log;
    default_type text/plain;
    ha_optout_zone        ha_optout 1m;
    ha_optout_environment production;
    ha_optout_state_file  $R/var/lib/nginx/ha-optout/ha-optout.state;
    ha_optout_audit_log   $DEMO/audit.jsonl;

    upstream app {
        zone app 64k;
        server 127.0.0.1:$p{9001} max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$p{9002} max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$p{9003} max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$p{9103} down;
        ha_optout selector=\$http_x_forensic_case;
    }

    upstream reporting {
        server 127.0.0.1:$p{9101};
        server 127.0.0.1:$p{9102};
        ha_optout;
    }

    upstream batch { server 127.0.0.1:$p{9101}; ha_optout; }
    ha_optout_policy $D/docs-policy.yaml;

    server {
        listen 127.0.0.1:$p{8080};
        location / {
            proxy_pass http://app;
            proxy_next_upstream error http_503;
            ha_optout_header on;
        }
        location /ha-optout/ {
$admin            ha_optout_admin_replay off;     # the demo's \$TOKEN
        }
        location = /ha-status { ha_optout_status; }
    }

    server {
        listen 127.0.0.1:$p{8081};               # docs/api.md: replay on
        location /ha-optout/ {
$admin        }
        location = /ha-status { ha_optout_status; }
    }

    server { listen 127.0.0.1:$p{9001};
             location / { return 503 "backend-1 (degraded)\\n"; } }
    server { listen 127.0.0.1:$p{9002};
             location / { return 200 "backend-2\\n"; } }
    server { listen 127.0.0.1:$p{9003};
             location / { return 200 "backend-3\\n"; } }
}
EOF
}

done_testing;
