#!/usr/bin/perl

# Fault test (docs/reliability.md, "Fault tests"): the zone's replay cache
# is full.  t/limits.t measures how many jtis fit and that a 64k zone
# answers 507 ZoneFull; this adds what an operator relies on while it is
# full and as it drains:
#
# - the 507 is JSON, and the refused write changes nothing (flag, version,
#   audit log);
# - a replayed token is never accepted: 401 while the cache is full, 401
#   after it made room (the short tokens have expired, the long-lived one
#   is still remembered);
# - once the short tokens (exp in the past, inside the 60 s leeway) expire,
#   writes succeed again, within seconds and without a restart.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;

use constant LEEWAY => 60;
use constant LEFT => 20;        # seconds the short tokens have left: the
                                # fill must end before (a loaded machine
                                # wrote 348 in 5 s, so 8 s was too tight)

my $t = HaOptout::Test->new(workers => 1);

$t->backend('b1');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 64k;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF

$t->run;

sub changes {
    return scalar grep { /"action": ?"(set|update|clear)"/ }
        split /\n/, $t->read_file('audit.jsonl');
}

###############################################################################

# a flag on app, set with a long-lived token (its jti is remembered 5 min)

my $long = $t->token(jti => 'long-lived-1', ttl => 300);
my $set = $t->api(PUT => 'v1/flags/app', token => $long, json => {
    failover => JSON::PP::false, ttl => '10m', reason => 'before the flood' });
is($set->{status}, 200, 'a flag set with a long-lived token');

# fill the cache with single-use tokens whose exp passed 52 s ago: still
# accepted (60 s leeway), remembered for LEFT more seconds.  Each is a
# PATCH of app's reason (a DELETE is not used: restoring HA may be exempt
# from ZoneFull).

my $exp = int(time) - LEEWAY + LEFT;
my (@used, $r, $last);
$last = $set;
my $t0 = time;
for my $i (1 .. 5000) {
    last if time - $t0 > LEFT - 3;
    my $tok = $t->token(jti => sprintf('fill-%028d', $i),
                        iat => $exp - 60, exp => $exp);
    $r = $t->api(PATCH => 'v1/flags/app', token => $tok,
                 json => { reason => "fill $i" });
    last unless $r->{status} == 200;
    $last = $r;
    push @used, $tok;
}
my $fill_time = time - $t0;

is($r->{status}, 507, sprintf 'the replay cache is full after %d writes '
   . '(%.1f s)', scalar @used, $fill_time);
is($r->{json}{error}{code}, 'ZoneFull', '507 is JSON with code ZoneFull');
like($r->{headers}{'content-type'} // '', qr{^application/json},
     '507 has Content-Type application/json');

# while full

my $audit = changes();
my $w = $t->api(PUT => 'v1/flags/app', json => {
    pin => '127.0.0.1:' . $t->port('b1'), ttl => '5m', reason => 'flood' });
is($w->{status}, 507, 'a write with a fresh token is refused 507');
my $g = $t->api(GET => 'v1/flags/app');
is($g->{json}{version}, $last->{json}{version},
   'the flag is unchanged (the version of the last accepted write)');
is($g->{json}{reason}, $last->{json}{reason}, 'its reason too');
ok(!defined $g->{json}{pin}, 'no pin was applied');
is(changes(), $audit, 'no change was audited');

my %replay;
for my $tok ($used[0], $used[$#used / 2], $used[-1], $long) {
    my $x = $t->api(PATCH => 'v1/flags/app', token => $tok,
                    json => { reason => 'replayed' });
    $replay{ $x->{status} }++;
}
is_deeply(\%replay, { 401 => 4 },
          'while full, replayed tokens are refused 401 (not 200, not 507)');

my $x = $t->api(PATCH => 'v1/flags/app', json => { ttl => '20m' },
                token => $long);
is($x->{status}, 401, 'the long-lived token replayed on app: 401');
like($x->{headers}{'www-authenticate'} // '', qr/invalid_token/,
     'with WWW-Authenticate invalid_token');

# the short tokens expire: room again, without a restart

my ($back, %odd);
my $deadline = $exp + LEEWAY + 5;
while (time < $deadline) {
    $w = $t->api(PATCH => 'v1/flags/app', json => { reason => 'after' });
    if ($w->{status} == 200) { $back = time; last }
    $odd{ $w->{status} }++ unless $w->{status} == 507;
    sleep 0.25;
}
is_deeply(\%odd, {}, 'until the short tokens expire, writes get 507 only');
ok($back, sprintf 'writes succeed again once the short tokens expired '
   . '(%.1f s after their exp + leeway)', ($back // time) - ($exp + LEEWAY));
is($t->api(GET => 'v1/flags/app')->{json}{reason}, 'after',
   'the write after the drain took effect');

%replay = ();
for my $tok ($used[0], $used[-1], $long) {
    my $y = $t->api(PATCH => 'v1/flags/app', token => $tok,
                    json => { reason => 'replayed' });
    $replay{ $y->{status} }++;
}
is_deeply(\%replay, { 401 => 3 },
          'after the drain, neither expired nor long-lived tokens replay');

my $z = $t->api(PATCH => 'v1/flags/app', json => { ttl => '9m' },
                token => $long);
is($z->{status}, 401, 'the long-lived jti is still remembered');

unlike($t->read_file('audit.jsonl'), qr/"reason": ?"replayed"/,
       'no replayed write ever reached the audit log');

my $ok = 0;
for (1 .. 20) {
    $ok++ if $t->api(PATCH => 'v1/flags/app',
                     json => { reason => "fresh $_" })->{status} == 200;
}
is($ok, 20, 'fresh tokens write normally after the drain');

diag(sprintf 'fault_zonefull: 64k zone full after %d jtis in %.1f s; '
     . 'writable again %.1f s after the short tokens expired',
     scalar @used, $fill_time, ($back // time) - ($exp + LEEWAY));

done_testing();
