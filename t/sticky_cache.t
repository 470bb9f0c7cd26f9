#!/usr/bin/perl

# Each worker keeps a copy of the sticky bindings it used (sticky.c) and
# uses it without the zone's mutex while the zone's change counter says
# it is still the zone's binding.  What an operator can do under such a
# copy: bind a client through one worker and reach another, clear and set
# the flag again, replace it, heartbeat it, fill the table until the least
# recently used binding is evicted, reload with the servers reversed.
# Each time every worker must obey the zone's table, not its old copy.
#
# How a stale copy would show: the client's old server S stops answering
# in time and is ejected (max_fails=1: a sticky client's errors count), so
# a client balanced anew lands on the other server, while a client still
# bound to S (or a worker still believing so) gets a 504.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 2);

$t->backend($_) for qw(b1 b2);
$t->secret_file;

sub conf {
    my @servers = @_;
    my $list = join '', map {
        "        server 127.0.0.1:%%PORT_$_%% max_fails=1 fail_timeout=6s;\n"
    } @servers;
    $t->conf(<<EOF);
http {
    ha_optout_zone ha_optout 64k;

    upstream app {
        zone app 64k;
$list
        ha_optout sticky_key=\$http_x_client;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

        add_header X-Worker \$pid always;

        location / {
            proxy_pass http://app;
            proxy_read_timeout 500ms;
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

conf(qw(b1 b2));
$t->run;

ok($t->wait_for(sub { $t->worker_pids == 2 }, 10), 'two workers run');

sub one {
    my ($key) = @_;
    my $r = $t->get('/', headers => { 'X-Client' => $key });
    return ($r->{headers}{'x-worker'} // '-',
            "$r->{status} " . ($r->{headers}{'x-backend'} // '-'));
}

# requests of one client on fresh connections until each worker served it
# $n times (the kernel spreads them, reuseport); the answers seen
sub both {
    my ($key, $n) = @_;
    my (%per, %seen);
    for (1 .. 400) {
        my ($w, $s) = one($key);
        $per{$w}++;
        $seen{$s}++;
        last if keys %per == 2 && !grep { $_ < $n } values %per;
    }
    my $workers = grep { $per{$_} >= $n } keys %per;
    return ($workers, join ',', sort keys %seen);
}

sub flag {
    my $r = $t->api(PUT => 'v1/flags/app', json => {
        sticky => JSON::PP::true, ttl => '10m', reason => 'sessions' });
    return $r->{status};
}

# no server is ejected any more (fail_timeout passed, answers 200)
sub healthy {
    $t->backend_set_status($_, 200) for qw(b1 b2);
    return $t->wait_for(sub {
        my $st = $t->status;
        !grep { $_->{failed} } @{ $st->{upstreams}{app}{servers} // [] };
    }, 20);
}

# a client bound in both workers' copies, its server then failing and
# ejected: the server, and the other one
sub bound_then_eject {
    my ($key) = @_;
    my (undef, $s0) = one($key);
    my ($s) = $s0 =~ /^200 (b\d)$/;
    my ($workers, $seen) = both($key, 3);
    is("$workers $seen", "2 200 $s", "$key is on $s through both workers");
    $t->backend_set_status($s, 200, delay => 3);
    my (undef, $fail) = one($key);
    is($fail, '504 -', "$key stays on $s while it times out (sticky)");
    ok($t->wait_for(sub { grep { $_->{failed} }
                          @{ $t->status->{upstreams}{app}{servers} } }, 3),
       "$s is ejected");
    return ($s, $s eq 'b1' ? 'b2' : 'b1');
}

###############################################################################

is(flag(), 200, 'sticky flag set');

# --- a binding made through one worker holds in the other ---------------

my (%home, %made);
for my $k (map { "x$_" } 1 .. 8) {
    my ($w, $s) = one($k);
    $made{$w}++;
    ($home{$k}) = $s =~ /^200 (b\d)$/;
}
my @moved;
for my $k (sort keys %home) {
    my ($workers, $seen) = both($k, 2);
    push @moved, "$k: $home{$k} -> $seen ($workers workers)"
        unless $workers == 2 && $seen eq "200 $home{$k}";
}
is("@moved", '', 'every binding, made in either worker, holds in both');
my %used = map { $_ => 1 } values %home;
is(scalar(keys %used), 2, 'the 8 clients were bound to both servers');

# --- a heartbeat keeps the bindings, in the copies too --------------------

my ($s, $other) = bound_then_eject('hb');
is($t->api(PATCH => 'v1/flags/app', json => { ttl => '15m' })->{status},
   200, 'heartbeat PATCH');
my ($workers, $seen) = both('hb', 2);
is("$workers $seen", '2 504 -',
   'after a heartbeat both workers keep the client on its failing server');
ok(healthy(), 'servers healthy again');

# --- the flag cleared and set again: bindings start afresh ----------------

($s, $other) = bound_then_eject('cl');
is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'flag cleared');
ok($t->wait_for(sub {
    ($t->status->{upstreams}{app}{sticky_entries} // -1) == 0 }, 5),
   'the bindings are dropped with the flag');
is(flag(), 200, 'sticky flag set again');
($workers, $seen) = both('cl', 2);
is("$workers $seen", "2 200 $other",
   'after clear and set no worker sends the client to its old server');
ok(healthy(), 'servers healthy again');

# --- the flag replaced by a new PUT: bindings start afresh ----------------

($s, $other) = bound_then_eject('rp');
my $before = time;
ok($t->wait_for(sub { time > $before }, 3), 'a new second (set_at)');
is(flag(), 200, 'sticky flag replaced by a new PUT');
($workers, $seen) = both('rp', 2);
is("$workers $seen", "2 200 $other",
   'after a new PUT no worker sends the client to its old server');
ok(healthy(), 'servers healthy again');

# --- the least recently used binding evicted: its copies go too -----------

my $st = $t->status;
my $cap = $st->{sticky}{capacity};
ok($cap && $cap <= 256, "a 64k zone holds $cap bindings");
my $evicted = $st->{sticky}{evicted};

($s, $other) = bound_then_eject('lru');

# more new clients than the table holds, all balanced to $other now
my %newer;
for my $i (1 .. $cap + 16) {
    my (undef, $r) = one("fill$i");
    $newer{$r}++;
}
is(join(',', keys %newer), "200 $other",
   "$cap+16 new clients bound, all to $other");
$st = $t->status;
ok($st->{sticky}{evicted} >= $evicted + 17, 'older bindings were evicted');
($workers, $seen) = both('lru', 2);
is("$workers $seen", "2 200 $other",
   'the evicted client is balanced anew in both workers');
ok(healthy(), 'servers healthy again');

# --- a reload that reverses the servers keeps clients by name -------------

my %bound;
for my $k (map { "r$_" } 1 .. 10) {
    my (undef, $r) = one($k);
    ($bound{$k}) = $r =~ /^200 (b\d)$/;
    both($k, 2);
}
%used = map { $_ => 1 } grep { defined } values %bound;
is(scalar(keys %used), 2, '10 clients bound to both servers');

conf(qw(b2 b1));
ok($t->reload, 'reload with the servers reversed');
ok($t->wait_for(sub { $t->worker_pids == 2 }, 10), 'two new workers run');

@moved = ();
for my $k (sort keys %bound) {
    my ($workers, $seen) = both($k, 2);
    push @moved, "$k: $bound{$k} -> $seen ($workers workers)"
        unless $workers == 2 && $seen eq "200 $bound{$k}";
}
is("@moved", '', 'after the reload every client is on its server in both');

done_testing();
