#!/usr/bin/perl

# the stream twin decides once per zone change and second in each worker,
# and keeps a session's peer data in 64 bytes (round robin's inside it):
# with 2 workers, a pin set, moved and cleared through the admin API is
# obeyed by the very next sessions in both workers (no session keeps the
# decision or the server of the one before), a pin's ttl ends it without
# a write, and the pin holds for every stream balancer the wrap takes:
# round robin and least_conn (their data is ours), hash and random (their
# data is their own).

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 2);
$t->secret_file;

$t->backend('b1');
$t->backend('b2');

my @UPS = qw(rr lc hash random);
my %BAL = (rr => '', lc => 'least_conn;', hash => 'hash $remote_port;',
           random => 'random;');

my $ups = join '', map { <<"EOF" } @UPS;
    upstream $_ {
        $BAL{$_}
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_$_%% reuseport;
        proxy_pass $_;
        access_log %%TESTDIR%%/stream-$_.log s;
    }

EOF

$t->conf(<<"EOF");
stream {
    log_format s '\$pid \$upstream_addr';

$ups}

http {
    ha_optout_zone ha_optout 1m;
    access_log %%TESTDIR%%/access.log;

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

my %addr = (b1 => '127.0.0.1:' . $t->port('b1'),
            b2 => '127.0.0.1:' . $t->port('b2'));
my %name_of = reverse %addr;

# n sessions through a stream upstream: backends seen, "b1=3 b2=5"
sub sessions {
    my ($u, $n) = @_;
    my %c;
    for ($t->spray($n, '/', port => $u)) {
        my ($st, $b) = split / /;
        $c{ $st eq '200' ? $b : "error$st" }++;
    }
    return join ' ', map { "$_=$c{$_}" } sort keys %c;
}

# the sessions of the log since offset: backend => { worker pid => count }
sub logged {
    my ($u, $from) = @_;
    my %seen;
    open my $fh, '<', $t->testdir . "/stream-$u.log" or return {};
    seek $fh, $from, 0;
    while (<$fh>) {
        my ($pid, $a) = split;
        $seen{ $name_of{$a} // $a }{$pid}++;
    }
    return \%seen;
}

sub log_size { -s ($t->testdir . "/stream-$_[0].log") // 0 }

# sessions until both workers served some (reuseport spreads them by the
# client's port); returns the log's view of them
sub through_both_workers {
    my ($u, $want) = @_;
    my $from = log_size($u);
    my ($seen, $c);
    $t->wait_for(sub {
        $c = sessions($u, 16);
        $seen = logged($u, $from);
        my %pids = map { %$_ } values %$seen;
        keys %pids >= 2;
    }, 20);
    return ($c, $seen);
}

sub pids_of { my ($seen, $b) = @_; scalar keys %{ $seen->{$b} // {} } }

for my $u (@UPS) {
    my $c = sessions($u, 12);
    like($c, qr/^b1=\d+ b2=\d+$/, "$u: without a flag both servers serve ($c)");
}

# a pin on b2 of every upstream, obeyed by the next sessions of both workers

for my $u (@UPS) {
    my $r = $t->api(PUT => "v1/flags/stream:$u", json => {
        pin => $addr{b2}, ttl => '10m', reason => 'hold on b2' });
    is($r->{status}, 200, "$u: pin on b2 set");

    my ($c, $seen) = through_both_workers($u);
    like($c, qr/^b2=\d+$/, "$u: pinned, every session goes to b2 ($c)");
    is(pids_of($seen, 'b2'), 2, "$u: both workers send sessions to b2");
    ok(!$seen->{b1}, "$u: no worker sends a session to b1");
}

# moved to b1 and cleared at once: no worker keeps the decision or the
# server it had resolved (the same second: nothing waits here)

my $r = $t->api(PUT => 'v1/flags/stream:rr', json => {
    pin => $addr{b1}, ttl => '10m', reason => 'now b1' });
is($r->{status}, 200, 'rr: pin moved to b1');

my ($c, $seen) = through_both_workers('rr');
like($c, qr/^b1=\d+$/, "rr: moved pin, every session goes to b1 ($c)");
is(pids_of($seen, 'b1'), 2, 'rr: both workers follow the moved pin');
ok(!$seen->{b2}, 'rr: no worker sends a session to the old pin b2');

$r = $t->api(DELETE => 'v1/flags/stream:rr');
is($r->{status}, 200, 'rr: pin cleared');

($c, $seen) = through_both_workers('rr');
like($c, qr/^b1=\d+ b2=\d+$/, "rr: cleared, both servers serve again ($c)");
ok(pids_of($seen, 'b1') && pids_of($seen, 'b2'),
   'rr: sessions after the clear are balanced');

# failover off, then sticky, on the same upstream: each decision replaces
# the one before (a session of the old flag's kind would show here)

$r = $t->api(PUT => 'v1/flags/stream:lc', json => {
    failover => JSON::PP::false, ttl => '10m', reason => 'no failover' });
is($r->{status}, 200, 'lc: failover off replaces the pin');

$c = sessions('lc', 12);
like($c, qr/^b1=\d+ b2=\d+$/, "lc: failover off balances over both ($c)");

$r = $t->api(PUT => 'v1/flags/stream:lc', json => {
    sticky => JSON::PP::true, ttl => '10m', reason => 'keep clients' });
is($r->{status}, 200, 'lc: sticky replaces failover off');

# one client address: one binding, shared by both workers through the zone
($c, $seen) = through_both_workers('lc');
like($c, qr/^b[12]=\d+$/, "lc: sticky, the one client keeps one server ($c)");
is(scalar keys %$seen, 1, 'lc: both workers send it to the same server');

# a pin's ttl ends it with no write: the second moves on, so does the
# decision

$r = $t->api(PUT => 'v1/flags/stream:hash', json => {
    pin => $addr{b1}, ttl => '2s', reason => 'two seconds' });
is($r->{status}, 200, 'hash: pin on b1 for 2 s');
like(sessions('hash', 6), qr/^b1=6$/, 'hash: pinned to b1 while the ttl runs');

my $after = $t->wait_for(sub { sessions('hash', 8) =~ /^b1=\d+ b2=\d+$/ }, 8);
ok($after, 'hash: after the ttl the sessions are balanced again');

# status still counts the pinned sessions on their server

my $st = $t->status->{upstreams}{'stream:random'};
ok($st->{pinned_requests} >= 16, "random: pinned sessions are counted "
   . "($st->{pinned_requests})");
my %srv = map { $_->{address} => $_ } @{ $st->{servers} };
ok($srv{ $addr{b2} }{pinned}, 'random: status marks b2 as the pin');

$t->stop;
unlike($t->error_log, qr/\[(alert|emerg|crit)\]/, 'no alert in the error log');

done_testing();
