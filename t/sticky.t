#!/usr/bin/perl

# sticky: while the flag lives, each client key stays on the server it was
# first sent to, through backend failures and nginx -s reload; the
# bindings go when the flag goes.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->backend('b3');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        server 127.0.0.1:%%PORT_b3%%;
        ha_optout sticky_key=$http_x_session;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            proxy_next_upstream error timeout http_503;
            ha_optout_header on;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

$t->run;

sub backend_of {
    my ($session) = @_;
    my $r = $t->get('/', headers => { 'X-Session' => $session });
    return "$r->{status} " . ($r->{headers}{'x-backend'} // '-');
}

sub spread {
    my ($session, $n) = @_;
    my %seen;
    $seen{ backend_of($session) }++ for 1 .. $n;
    return join ',', sort keys %seen;
}

###############################################################################

# without a flag one client is spread over the servers

my $plain = spread('alice', 9);
like($plain, qr/,/, 'without a flag one client is balanced over servers');

my $r = $t->api(PUT => 'v1/flags/app', json => {
    sticky => JSON::PP::true, ttl => '10m', reason => 'keep sessions' });
is($r->{status}, 200, 'sticky flag set');
ok($r->{json}{sticky}, 'stored flag says sticky');

# each key keeps one server

my %home;
for my $s (qw(alice bob carol dave erin frank)) {
    my $spread = spread($s, 6);
    unlike($spread, qr/,/, "client $s stays on one server ($spread)");
    ($home{$s}) = $spread =~ /^200 (b\d)$/;
}

my %used = map { $_ => 1 } grep { defined } values %home;
ok(keys %used > 1, 'different clients are still spread over servers');

my $st = $t->status;
is($st->{upstreams}{app}{sticky_entries}, 6, 'status counts 6 sticky entries');
is($st->{sticky}{entries}, 6, 'the zone-wide sticky table holds 6 entries');
ok($st->{sticky}{capacity} >= 2048, 'a 1m zone has room for 2048 bindings');
is($st->{sticky}{evicted}, 0, 'nothing was evicted');

# the server of alice fails: alice is not moved elsewhere

my $a = $home{alice};
$t->backend_set_status($a, 503);
my @after = map { backend_of('alice') } 1 .. 4;
is_deeply(\@after, [("503 $a") x 4],
    'a failing server keeps its sticky client: the error reaches it');

my ($other) = grep { $home{$_} ne $a } sort keys %home;
is(backend_of($other), "200 $home{$other}",
    'clients of healthy servers are unaffected');

$t->backend_set_status($a, 200);

# reload keeps the bindings

$t->reload;
is(spread('alice', 4), "200 $a", 'after nginx -s reload alice keeps her server');
is(spread('bob', 4), "200 $home{bob}", 'after nginx -s reload bob keeps his');

# a heartbeat (PATCH ttl, as ha-optoutctl run sends) keeps the bindings

$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '15m' });
is($r->{status}, 200, 'heartbeat PATCH extends the sticky flag');
is(spread('alice', 4), "200 $a", 'after a heartbeat alice keeps her server');
is($t->status->{upstreams}{app}{sticky_entries}, 6,
    'a heartbeat drops no binding');

# the flag goes, the bindings go

$r = $t->api(DELETE => 'v1/flags/app');
is($r->{status}, 200, 'sticky flag cleared');

my $gone = $t->wait_for(sub {
    ($t->status->{upstreams}{app}{sticky_entries} // -1) == 0 }, 3);
ok($gone, 'sticky entries are dropped when the flag goes');
like(spread('alice', 9), qr/,/, 'alice is balanced again');

done_testing();
