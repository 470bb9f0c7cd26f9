#!/usr/bin/perl

# Errors that say how to fix them (issue 17, item 4), the configuration's
# side, each met as an operator meets it:
#
# - pin_selector on a stream upstream (in "ha_optout", a policy window or
#   a PUT) names what stream has instead (pin, sticky, sticky_key=), never
#   the http-only "selector=" it cannot have;
# - a flag the state file restore (or a reload) drops is audited
#   restore_rejected with its cause in a "cause" member: the pin that names
#   no server (and the servers there are), the upstream that is gone, the
#   text that is not header-safe; one that expired meanwhile says so; the
#   chain still verifies;
# - a zone too small for its upstreams says how large it must be, at
#   nginx -t, and that size passes; a 507 ZoneFull says how large the zone
#   must be, and the size it suggests holds about twice as many writes.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Time::HiRes qw(sleep time);
use HaOptout::Test;

my $CTL = abs_path(dirname(__FILE__) . '/..') . '/build/ha-optoutctl';

# ------------------------------------------------------------ stream

my $t = HaOptout::Test->new;
$t->secret_file;
$t->backend('b1');
$t->backend('b2');
$t->backend('b3');
my $b1 = '127.0.0.1:' . $t->port('b1');
my $b2 = '127.0.0.1:' . $t->port('b2');
my $b3 = '127.0.0.1:' . $t->port('b3');
my $db2 = '127.0.0.1:' . $t->port('db2');
$t->state_dir;

my $STREAM = <<'EOF';
stream {
    upstream db {
        server 127.0.0.1:%%PORT_db1%%;
        server 127.0.0.1:%%PORT_db2%%;
        ha_optout STREAMARG;
    }

    server { listen 127.0.0.1:%%PORT_tcp%%; proxy_pass db; }
    server { listen 127.0.0.1:%%PORT_db1%%; return "db-1\n"; }
    server { listen 127.0.0.1:%%PORT_db2%%; return "db-2\n"; }
}

http {
    ha_optout_zone ha_optout 1m;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    POLICY

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        SERVER_B2
        SERVER_B3
        ha_optout;
    }

    upstream hdr {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout selector=$http_x_case;
    }

    GONE

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF

sub conf {
    my (%o) = @_;
    my $c = $STREAM;
    $c =~ s/STREAMARG/$o{streamarg} \/\/ ''/e;
    $c =~ s/POLICY/$o{policy} ? "ha_optout_policy %%TESTDIR%%\/policy.yaml;" : ''/e;
    $c =~ s/SERVER_B2/$o{no_b2} ? '' : 'server 127.0.0.1:%%PORT_b2%%;'/e;
    $c =~ s/SERVER_B3/$o{b3} ? 'server 127.0.0.1:%%PORT_b3%%;' : ''/e;
    my $ups = '';
    for my $u (qw(gone short)) {
        $ups .= "upstream $u { server 127.0.0.1:%%PORT_b1%%; ha_optout; }\n"
            if $o{$u};
    }
    $c =~ s/GONE/$ups/;
    return $c;
}

$t->conf(conf(streamarg => 'selector=$remote_addr', b3 => 1, gone => 1, short => 1));
my ($rc, $out) = $t->nginx_t;
my $file = $t->testdir . '/nginx.conf';
my $line = $t->conf_line(qr/ha_optout selector=\$remote_addr/);
isnt($rc, 0, 'nginx -t refuses "ha_optout selector=" in a stream upstream');
like($out, qr/invalid parameter "selector=\$remote_addr": selectors are http only \(a TCP connection has no request header to select on\); "ha_optout" in stream takes only "sticky_key=\$var" \(default \$remote_addr\), and a pin holds every new connection in \Q$file\E:$line/,
     '... naming what stream takes instead, with file:line');

$t->conf(conf(streamarg => 'sticky_kye=$remote_addr', b3 => 1, gone => 1, short => 1));
($rc, $out) = $t->nginx_t;
like($out, qr/invalid parameter "sticky_kye=\$remote_addr": "ha_optout" in stream takes only "sticky_key=\$var"/,
     'a misspelt parameter names the one that exists');

my $start = int(time) + 3600;
my $iso = sub { my @g = gmtime $_[0]; sprintf '%04d-%02d-%02dT%02d:%02d:%02dZ',
                $g[5] + 1900, $g[4] + 1, @g[3, 2, 1, 0] };
$t->write_file('policy.yaml', <<"EOF");
windows:
  - upstream: "stream:db"
    start: ${\ $iso->($start)}
    end: ${\ $iso->($start + 3600)}
    pin: "$db2"
    pin_selector: "INC-7"
    reason: "replica rebuild"
EOF
$t->conf(conf(policy => 1, b3 => 1, gone => 1, short => 1));
($rc, $out) = $t->nginx_t;
my $pfile = $t->testdir . '/policy.yaml';
isnt($rc, 0, 'nginx -t refuses a policy window with pin_selector on a '
     . 'stream upstream (was silently accepted)');
like($out, qr/policy \Q$pfile\E:2:5: pin_selector is http only: stream upstream "stream:db" has no request header to select on \("ha_optout" in stream takes only sticky_key=\$var\); use "pin" alone to hold every new connection, or "sticky: true"/,
     '... with the policy\'s file:line:column and what to use instead');

$t->conf(conf(b3 => 1, gone => 1, short => 1));
$t->run;

my $r = $t->api(PUT => 'v1/flags/stream:db', json => {
    pin => $db2, pin_selector => 'INC-7', ttl => '10m', reason => 'x' });
is($r->{status}, 400, 'a PUT with pin_selector on a stream upstream: 400');
like($r->{json}{error}{message},
     qr/^pin_selector is http only: a stream upstream has no request header to select on \("ha_optout" in stream takes only sticky_key=\$var\); send "pin" alone to hold every new connection on that server, or "sticky": true to keep each client on its server$/,
     '... naming the fields that exist for stream');
unlike($r->{json}{error}{message}, qr/selector=\$var" in the upstream/,
       '... not the http-only "ha_optout selector=$var"');

$r = $t->api(PUT => 'v1/flags/stream:db', json => {
    pin => $db2, ttl => '10m', reason => 'x' });
is($r->{status}, 200, 'the pin alone, as suggested, is accepted');
is($t->api(DELETE => 'v1/flags/stream:db')->{status}, 200, '... and cleared');

# ------------------------------------------------------------ restore causes

sub put {
    my ($up, %f) = @_;
    my $x = $t->api(PUT => "v1/flags/$up", json => {
        ttl => '30m', reason => "saved $up", %f });
    is($x->{status}, 200, "a flag on $up to be saved") or diag $x->{body};
    return $x->{json};
}

put(app => pin => $b3);
put(hdr => pin => $b1, pin_selector => 'INC-7');
put(gone => failover => JSON::PP::false());
my $short = put(short => failover => JSON::PP::false(), ttl => '2s');
$t->stop;

my $state = $t->testdir . '/state/ha-optout.state';
my $text = $t->read_file($state);
ok($text =~ s/pin_selector: "INC-7"/pin_selector: "x\\r\\nSet-Cookie: a=b"/,
   'the state file is edited: a CR/LF pin_selector');
$t->write_file($state, $text, 0600);
chown((getpwnam('nobody'))[2, 3], $state);

# the short flag's expires_at passes while nginx is down
my $until = time + 3;
sleep 0.1 while time < $until;

# app loses b3 (the pinned one), "gone" goes; "short" stays, to expire
$t->conf(conf(short => 1));
$t->run;

sub audit_lines {
    return map { JSON::PP->new->decode($_) }
           grep { /\S/ } split /\n/, $t->read_file('audit.jsonl');
}

sub line_of {
    my ($action, $up) = @_;
    my ($l) = grep { $_->{action} eq $action && $_->{upstream} eq $up }
              audit_lines();
    return $l;
}

ok($t->wait_for(sub { line_of(restore_rejected => 'gone') }, 5),
   'the restart audits restore_rejected');

my $l = line_of(restore_rejected => 'app');
like($l->{cause} // '',
     qr/^pin "\Q$b3\E" names no server of upstream "app" now; its servers: \Q$b1\E, \Q$b2\E$/,
     'a pin to a removed server: its cause names the pin and the servers there are');
is($l->{reason}, 'saved app', '... the reason stays the flag\'s own');

$l = line_of(restore_rejected => 'gone');
like($l->{cause} // '',
     qr/^unknown upstream: no upstream "gone" has "ha_optout" in the configuration now/,
     'an upstream no longer there: cause "unknown upstream"');

$l = line_of(restore_rejected => 'hdr');
like($l->{cause} // '', qr/^text not header-safe: its pin or pin_selector holds control bytes/,
     'a CR/LF pin_selector: cause "text not header-safe"');

$l = line_of(expire => 'short');
like($l->{cause} // '', qr/^expired: its expires_at \Q$short->{expires_at}\E passed while nginx was down$/,
     'a flag that expired while nginx was down: its expire line says so');

ok(!defined line_of(restore => 'app'), 'the stale pin is not restored');

my $v = `$CTL audit verify ${\ $t->testdir}/audit.jsonl 2>&1`;
is($? >> 8, 0, 'the audit log with "cause" members still verifies')
    or diag $v;

# a reload that removes the server a flag pins

put(app => pin => $b2);
$t->conf(conf(short => 1, no_b2 => 1));
$t->reload;

ok($t->wait_for(sub {
       grep { $_->{action} eq 'restore_rejected' && $_->{upstream} eq 'app'
              && ($_->{cause} // '') =~ /^dropped at reload/ } audit_lines()
   }, 5), 'the reload audits restore_rejected');
($l) = grep { $_->{action} eq 'restore_rejected' && $_->{upstream} eq 'app'
              && ($_->{cause} // '') =~ /^dropped at reload/ } audit_lines();
like($l->{cause}, qr/^dropped at reload: pin "\Q$b2\E" names no server of upstream "app" now; its servers: \Q$b1\E$/,
     '... with its cause: the pin and the servers left');
is($l->{reason}, 'saved app', '... and the flag\'s own reason');

$v = `$CTL audit verify ${\ $t->testdir}/audit.jsonl 2>&1`;
is($? >> 8, 0, '... the chain still verifies') or diag $v;

$t->stop;

# ------------------------------------------------------------ zone sizes

my $z = HaOptout::Test->new(workers => 1);
$z->secret_file;
$z->backend('b1');

sub zone_conf {
    my ($size, $n) = @_;
    my $ups = join '', map { "    upstream u$_ { server 127.0.0.1:%%PORT_b1%%; "
                             . "ha_optout; }\n" } 1 .. $n;
    return <<"EOF";
http {
    ha_optout_zone ha_optout $size;
$ups
    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF
}

$z->conf(zone_conf('64k', 20));
($rc, $out) = $z->nginx_t;
isnt($rc, 0, 'nginx -t: 20 upstreams in a 64k zone fail');
ok($out =~ /zone "ha_optout" is too small for 20 upstreams: its 64k hold (\d+) \(an upstream takes (\d+)k\); 20 need at least "ha_optout_zone ha_optout (\d+)k;", better (\d+)k/,
   '... saying how many it holds and how large it must be') or diag $out;
my ($held, $each, $need, $better) = ($1 // 0, $2 // 0, $3 // 0, $4 // 0);
cmp_ok($need, '>=', 64 + (20 - $held) * $each,
       "... at least ${need}k: the records it lacks");

$z->conf(zone_conf("${need}k", 20));
($rc, $out) = $z->nginx_t;
is($rc, 0, "the size it names (${need}k) passes nginx -t") or diag $out;
unlike($out, qr/too small/, '... with no "too small"');

$z->conf(zone_conf("${better}k", 20));
$z->run;
$r = $z->api(PUT => 'v1/flags/u20', json => {
    failover => JSON::PP::false(), ttl => '5m', reason => 'x' });
is($r->{status}, 200, "with the better size (${better}k) the 20th upstream "
   . 'takes a flag');
$z->stop;

# records that leave no room for writes: nginx starts, and says so
$z->conf(zone_conf('64k', 6));
($rc, $out) = $z->nginx_t;
is($rc, 0, '6 upstreams fit a 64k zone');
like($out, qr/\[warn\] ha_optout: zone "ha_optout" \(64k\) has \d+k left after the records of its 6 upstreams \(\d+k each\): too little for writes .*; give it "ha_optout_zone ha_optout \d+k;"/,
     '... but nginx -t warns that it leaves too little for writes');

# the replay cache full: 507 says how large the zone must be

sub fill {
    my $x = $z->api(PUT => 'v1/flags/u1', json => {
        failover => JSON::PP::false(), ttl => '30m', reason => 'fill' });
    my $n = 1;
    while ($x->{status} == 200 && $n < 5000) {
        $x = $z->api(PATCH => 'v1/flags/u1', json => { reason => "f $n" });
        $n++ if $x->{status} == 200;
    }
    return ($n, $x);
}

$z->conf(zone_conf('64k', 1));
$z->run;
my ($n64, $full) = fill();
is($full->{status}, 507, "a 64k zone is full after $n64 writes");
ok(($full->{json}{error}{message} // '') =~ /^the replay cache is full: zone "ha_optout" \(64k\) keeps the jti of each write until its token expires \(\+60s\), (\d+) at most \(half the zone, 128 bytes each\), and holds (\d+); the oldest is forgotten in \d+s: try again then, or give the zone room for more writes per token lifetime: "ha_optout_zone ha_optout (\d+)k;" keeps about twice as many \(256 bytes of zone per write\)$/,
   '... its 507 says how many it keeps, when one leaves, how large the '
   . 'zone must be') or diag $full->{body};
my $suggest = $3 // 128;
$z->stop;

$z->conf(zone_conf("${suggest}k", 1));
$z->run;
my ($n2, $full2) = fill();
cmp_ok($n2, '>=', 1.5 * $n64, "the suggested ${suggest}k holds $n2 writes "
       . "($n64 before)");
like($full2->{json}{error}{message} // '', qr/"ha_optout_zone ha_optout \d+k;"/,
     '... and its own 507 names the next size');
$z->stop;

diag(sprintf 'zone: 64k holds %d of 20 upstreams (%dk each), %dk needed, '
     . '%dk suggested; writes until 507: %d in 64k, %d in %dk',
     $held, $each, $need, $better, $n64, $n2, $suggest);

done_testing;
