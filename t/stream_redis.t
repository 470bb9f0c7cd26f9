#!/usr/bin/perl

# the stream twin with real Redis servers behind nginx stream {}: pin holds
# clients on one server, failover off lets a stopped Redis surface as an
# error instead of a silent switch, sticky keeps a client on its server
# after the other one fails and across a reload.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $REDIS = '/usr/bin/redis-server';
my $CLI = '/usr/bin/redis-cli';

plan skip_all => 'redis-server and redis-cli are needed (make deps)'
    unless -x $REDIS && -x $CLI;

my $t = HaOptout::Test->new;
$t->secret_file;

my $dir = $t->testdir;
my %redis;

sub redis_start {
    my ($name) = @_;
    my $port = $t->port($name);
    system($REDIS, '--port', $port, '--bind', '127.0.0.1', '--save', '',
           '--appendonly', 'no', '--daemonize', 'yes',
           '--pidfile', "$dir/$name.pid", '--logfile', "$dir/$name.log",
           '--dir', $dir) == 0 or die "redis $name did not start\n";
    $redis{$name} = $port;
    for (1 .. 50) {
        last if `$CLI -p $port PING 2>/dev/null` =~ /PONG/;
        select undef, undef, undef, 0.1;
    }
}

sub redis_stop {
    my ($name) = @_;
    system("$CLI -p $redis{$name} SHUTDOWN NOSAVE >/dev/null 2>&1");
    for (1 .. 50) {
        last unless `$CLI -p $redis{$name} PING 2>/dev/null` =~ /PONG/;
        select undef, undef, undef, 0.1;
    }
}

END { local $?; redis_stop($_) for keys %redis }

redis_start('r1');
redis_start('r2');

$t->conf(<<'EOF');
stream {
    upstream db {
        server 127.0.0.1:%%PORT_r1%%;
        server 127.0.0.1:%%PORT_r2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_tcp%%;
        proxy_pass db;
        proxy_connect_timeout 2s;
    }
}

http {
    ha_optout_zone ha_optout 1m;

    server {
        listen 127.0.0.1:%%PORT_http%%;

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

my $tcp = $t->port('tcp');
my %name_of = map { $redis{$_} => $_ } keys %redis;

# which Redis answers a new client connection through nginx ("-" on error)
sub served_by {
    my $out = `$CLI -h 127.0.0.1 -p $tcp INFO server 2>&1`;
    return $out =~ /^tcp_port:(\d+)/m ? $name_of{$1} // "?$1" : '-';
}

sub serve_counts {
    my ($n) = @_;
    my %c;
    $c{ served_by() }++ for 1 .. $n;
    return join ' ', map { "$_=$c{$_}" } sort keys %c;
}

# writes through nginx land where the balancer sends them
system("$CLI -h 127.0.0.1 -p $tcp SET k$_ v >/dev/null 2>&1") for 1 .. 6;
my $k1 = `$CLI -p $redis{r1} DBSIZE` + 0;
my $k2 = `$CLI -p $redis{r2} DBSIZE` + 0;
is($k1 + $k2, 6, 'six writes through nginx stream are stored');
ok($k1 > 0 && $k2 > 0, "without a flag writes land on both Redis ($k1/$k2)");

# pin: every client is held on r2

my $pin = "127.0.0.1:$redis{r2}";
my $r = $t->api(PUT => 'v1/flags/stream:db', json => {
    pin => $pin, ttl => '10m', reason => 'hold db traffic on r2' });
is($r->{status}, 200, 'pin set on the stream upstream stream:db');
is($r->{json}{upstream}, 'stream:db', 'stream upstreams are named stream:NAME');

is(serve_counts(8), 'r2=8', 'pinned: every client connection goes to r2');

system("$CLI -p $redis{$_} FLUSHALL >/dev/null") for qw(r1 r2);
system("$CLI -h 127.0.0.1 -p $tcp SET pinned$_ v >/dev/null 2>&1") for 1 .. 4;
is(`$CLI -p $redis{r2} DBSIZE` + 0, 4, 'pinned writes all land on r2');
is(`$CLI -p $redis{r1} DBSIZE` + 0, 0, 'r1 receives no write while pinned');

ok($t->status->{upstreams}{'stream:db'}{pinned_requests} >= 8,
    'status counts the pinned stream connections');

my %srv = map { $_->{address} => $_ }
          @{ $t->status->{upstreams}{'stream:db'}{servers} };
ok($srv{$pin}{pinned}, 'status marks the pinned Redis server');
ok(exists $srv{"127.0.0.1:$redis{r1}"} && !$srv{"127.0.0.1:$redis{r1}"}{pinned},
    'status lists the other Redis server, not pinned');

$r = $t->api(DELETE => 'v1/flags/stream:db');
is($r->{status}, 200, 'pin cleared');

# failover off: a stopped r1 surfaces as errors

redis_stop('r1');

my $c = serve_counts(6);
is($c, 'r2=6', 'with HA on, a stopped r1 is silently failed over to r2');

# the stopped server was ejected by that; wait out nothing, just opt out
$r = $t->api(PUT => 'v1/flags/stream:db', json => {
    failover => JSON::PP::false, ttl => '10m', reason => 'chaos: db' });
is($r->{status}, 200, 'failover off on stream:db');

# ejection (max_fails=1, fail_timeout=10s) hides r1 for a while: restart
# the config so r1 is eligible again, with the flag kept in the zone
$t->reload;

$c = serve_counts(8);
like($c, qr/(^|\s)-=\d/, "failover off: clients sent to the stopped r1 get an error ($c)");
unlike($c, qr/r1=/, 'nothing is served by the stopped r1');

ok($t->status->{upstreams}{'stream:db'}{failover_suppressed} > 0,
    'status counts the suppressed stream failovers');

$t->api(DELETE => 'v1/flags/stream:db');
redis_start('r1');
$t->reload;

# sticky: this client (one $remote_addr) keeps its server

$r = $t->api(PUT => 'v1/flags/stream:db', json => {
    sticky => JSON::PP::true, ttl => '10m', reason => 'keep db sessions' });
is($r->{status}, 200, 'sticky on stream:db');

my $first = served_by();
like($first, qr/^r[12]$/, "the client is bound to $first");
is(serve_counts(6), "$first=6", 'sticky: the client stays on its server');

my ($other) = grep { $_ ne $first } qw(r1 r2);
redis_stop($other);
is(serve_counts(4), "$first=4", "after $other fails the client stays on $first");

$t->reload;
is(serve_counts(4), "$first=4", 'after nginx -s reload the client stays too');

done_testing();
