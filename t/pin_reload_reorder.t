#!/usr/bin/perl

# The pinned server and a sticky client's server are found through a
# per-worker resolve cache (balancer.c), not by a walk of the peer list on
# every request.  What an operator can do to such a cache: move the pin to
# another server, reload with the servers in another order (a new server
# in front, the pinned one last), drop or change the upstream's zone.  The
# pin must keep reaching its server, counted on that server, and every
# sticky client must stay on the server it was bound to.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 1);

$t->backend($_) for qw(b1 b2 b3 b4);
$t->secret_file;

sub conf {
    my ($zone, @servers) = @_;
    my $list = join '', map { "        server 127.0.0.1:%%PORT_$_%%;\n" }
                        @servers;
    $t->conf(<<EOF);
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
$zone
$list
        ha_optout sticky_key=\$http_x_client;
        keepalive 4;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
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
}

sub addr { '127.0.0.1:' . $t->port($_[0]) }

sub served {
    my ($n, %o) = @_;
    my %seen;
    $seen{$_}++ for map { (split / /)[1] } $t->spray($n, '/', %o);
    return join ',', map { "$_=$seen{$_}" } sort keys %seen;
}

sub pinned_count {
    my ($name) = @_;
    my $prom = $t->http(GET => '/ha-status?format=prometheus')->{body};
    my $a = quotemeta addr($name);
    return $prom =~ /^ha_optout_pinned_requests_total\{upstream="app",server="$a"\} (\d+)$/m
           ? $1 : 0;
}

conf('        zone app 64k;', qw(b1 b2 b3));
$t->run;

# --- the pin ----------------------------------------------------------------

my $r = $t->api(PUT => 'v1/flags/app', json => {
    pin => addr('b2'), ttl => '10m', reason => 'hold b2' });
is($r->{status}, 200, 'pin on b2 (the second of b1 b2 b3)');

is(served(8), 'b2=8', 'every request reaches b2');

$r = $t->api(PUT => 'v1/flags/app', json => {
    pin => addr('b3'), ttl => '10m', reason => 'hold b3' });
is($r->{status}, 200, 'the pin moves to b3');
is(served(6), 'b3=6', 'the next requests reach b3, not the b2 found before');

$r = $t->api(PUT => 'v1/flags/app', json => {
    pin => addr('b2'), ttl => '10m', reason => 'hold b2 again' });
is($r->{status}, 200, 'the pin is back on b2');
is(served(4), 'b2=4', 'and reaches b2 again');

my $b2 = pinned_count('b2');
is($b2, 12, 'b2 counted its 12 pinned requests');

# a new server in front, the pinned one last: index and order all change

conf('        zone app 64k;', qw(b4 b3 b1 b2));
ok($t->reload, 'reload with b4 b3 b1 b2');

is(served(8), 'b2=8', 'after the reorder the pin still reaches b2 only');
is(pinned_count('b2'), $b2 + 8, 'and counts on b2, not on the server now '
   . 'in its old place');
is(pinned_count('b3'), 6, 'b3 keeps its own count');
is(pinned_count('b4'), 0, 'the new server has no pinned request');

# no zone: the peers move from shared memory to the worker

conf('', qw(b2 b1 b4 b3));
ok($t->reload, 'reload without the upstream zone, b2 first');
is(served(6), 'b2=6', 'the pin reaches b2 from the local peer list');

conf('        zone app 128k;', qw(b3 b4 b1 b2));
ok($t->reload, 'reload with a new zone size, b2 last');
is(served(6), 'b2=6', 'the pin reaches b2 in the new zone');
is(pinned_count('b2'), $b2 + 20, 'every pinned request counted on b2');

# a server that left the configuration: the reload drops the pin (as
# docs/state-and-policy.md says a restore does), then HA as usual

conf('        zone app 128k;', qw(b1 b3 b4));
ok($t->reload, 'reload without b2');
ok($t->wait_for(sub { !defined $t->api(GET => 'v1/flags/app')->{json} },
                5),
   'the pin on a server that left is dropped');
is(served(6), 'b1=2,b3=2,b4=2', 'then round robin over the servers left');

# --- sticky bindings --------------------------------------------------------

conf('        zone app 128k;', qw(b1 b2 b3 b4));
ok($t->reload, 'reload with b1 b2 b3 b4');

$r = $t->api(DELETE => 'v1/flags/app');
ok($r->{status} == 200 || $r->{status} == 204, 'pin cleared');

$r = $t->api(PUT => 'v1/flags/app', json => {
    sticky => JSON::PP::true, ttl => '10m', reason => 'keep sessions' });
is($r->{status}, 200, 'sticky flag set');

my %bound;
for my $k (1 .. 12) {
    my @s = $t->spray(1, '/', headers => { 'X-Client' => "k$k" });
    ($bound{"k$k"}) = (split / /, $s[0])[1];
}
my %used = map { $_ => 1 } values %bound;
ok(keys %used >= 2, '12 clients were bound to ' . (keys %used) . ' servers');

sub still_bound {
    my ($what) = @_;
    my @moved;
    for my $k (sort keys %bound) {
        my $s = served(2, headers => { 'X-Client' => $k });
        push @moved, "$k: $bound{$k} -> $s" unless $s eq "$bound{$k}=2";
    }
    is("@moved", '', "every client stays on its server $what");
}

still_bound('before any reload');

conf('        zone app 128k;', qw(b4 b3 b2 b1));
ok($t->reload, 'reload with the servers reversed');
still_bound('after the servers were reversed');

conf('', qw(b2 b4 b1 b3));
ok($t->reload, 'reload without zone, in yet another order');
still_bound('after the zone went and the order changed again');

done_testing();
