#!/usr/bin/perl

# Attacks on the sticky bindings and the workers' copies of them
# (sticky.c): what an unlucky operator or a hostile client can do.
#
# - a sticky flag replaced by a new PUT within the second it was set: a
#   new flag starts afresh, its bindings must go (they were known by the
#   flag's set_at, in seconds, so a PUT in the same second kept them)
# - the same with a clear and a PUT in one second
# - hostile client keys: 64 and 65 bytes (the copy's bound), 255+ bytes
#   (the zone's cut), binary bytes: each client keeps its server in both
#   workers; keys alike in their first 255 bytes are one client
# - keys alike in crc32 (one hash, one change counter): each keeps its
#   own server, in both workers, after the other's copies were made
# - a worker killed with -9: after its respawn the bindings hold in both
# - a reload that removes a server and adds another, which takes its
#   slot in the zone's record: the removed server's clients are balanced
#   anew, not all handed to the newcomer (they were)

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 2);

$t->backend($_) for qw(b1 b2 b3);
$t->secret_file;

sub conf {
    my $list = join '', map { "        server 127.0.0.1:%%PORT_$_%%;\n" } @_;
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

sub flag {
    my $r = $t->api(PUT => 'v1/flags/app', json => {
        sticky => JSON::PP::true, ttl => '10m', reason => 'sessions' });
    return ($r->{status}, $r->{json} ? $r->{json}{set_at} // '' : '');
}

sub entries {
    return $t->status->{upstreams}{app}{sticky_entries} // -1;
}

sub one {
    my ($key) = @_;
    return raw_one($key) if $key =~ /[^\x20-\x7e]/;
    my $r = $t->get('/', headers => { 'X-Client' => $key });
    return ($r->{headers}{'x-worker'} // '-',
            "$r->{status} " . ($r->{headers}{'x-backend'} // '-'));
}

# a key HTTP::Tiny will not send (bytes over 0x7e): raw request text
sub raw_one {
    my ($key) = @_;
    my ($text) = $t->raw("GET / HTTP/1.0\r\nHost: x\r\n"
                         . "X-Client: $key\r\n\r\n");
    my ($status) = $text =~ m{^HTTP/1\.\d (\d+)};
    my ($w) = $text =~ /^X-Worker: (\d+)\r?$/mi;
    my ($b) = $text =~ /^X-Backend: (\S+)\r?$/mi;
    return ($w // '-', ($status // 0) . ' ' . ($b // '-'));
}

###############################################################################

# --- a new PUT in the same second: the bindings start afresh --------------

my ($same, $kept) = (0, -1);
for my $try (1 .. 5) {
    my $before = time;
    $t->wait_for(sub { time > $before }, 3);    # the start of a second
    my ($st1, $at1) = flag();
    one("same$_") for 1 .. 4;
    my $bound = entries();
    my ($st2, $at2) = flag();
    next unless $st1 == 200 && $st2 == 200 && $at1 eq $at2 && $bound >= 4;
    $same = 1;
    $t->wait_for(sub { entries() == 0 }, 5);
    $kept = entries();
    last;
}
ok($same, 'a sticky flag replaced by a PUT within the same second');
is($kept, 0, 'the old flag\'s bindings are dropped (a new PUT starts afresh)');

# --- cleared and set again within the second: afresh too -----------------

($same, $kept) = (0, -1);
for my $try (1 .. 5) {
    my $before = time;
    $t->wait_for(sub { time > $before }, 3);
    my ($st1, $at1) = flag();
    one("clr$_") for 1 .. 4;
    my $bound = entries();
    my $del = $t->api(DELETE => 'v1/flags/app')->{status};
    my ($st2, $at2) = flag();
    next unless $st1 == 200 && $del == 200 && $st2 == 200 && $at1 eq $at2
                && $bound >= 4;
    $same = 1;
    $t->wait_for(sub { entries() == 0 }, 5);
    $kept = entries();
    last;
}
ok($same, 'a sticky flag cleared and set again within the same second');
is($kept, 0, 'the bindings made before the clear are dropped');

# --- hostile keys: the copy's bound, the zone's cut, binary ---------------

# requests of one client on fresh connections until each worker served it
# $n times; the answers seen
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

my %keys = (
    'k63'     => 'a' x 63,
    'k64'     => 'b' x 64,
    'k65'     => 'c' x 65,
    'k255'    => 'd' x 255,
    'k256'    => 'e' x 256,
    'k4000'   => 'f' x 4000,
    'binary'  => join('', map { chr } 0x80 .. 0xbf),              # 64 bytes
    'binary2' => join('', map { chr } 0x21 .. 0x7e, 0x80 .. 0xff), # 222
);

my @wrong;
for my $round (1 .. 2) {
    my $before = time;
    $t->wait_for(sub { time > $before }, 3);
    my ($st) = flag();                          # a new flag each round
    $t->wait_for(sub { entries() == 0 }, 5);
    for my $name (sort keys %keys) {
        my ($workers, $seen) = both($keys{$name}, 3);
        push @wrong, "round $round $name: $seen ($workers workers)"
            unless $workers == 2 && $seen =~ /^200 b\d$/;
    }
    my $n = entries();
    push @wrong, "round $round: $n bindings, not 8" unless $n == 8;
}
is("@wrong", '', 'every hostile key keeps one server in both workers');

# keys alike in their first 255 bytes are one client (the zone's cut)
my ($w1, $s1) = both(('d' x 255) . 'tail-one', 2);
my ($w2, $s2) = both(('d' x 255) . 'tail-two', 2);
is("$w1 $s1 | $w2 $s2", "2 $s1 | 2 $s1",
   'keys alike in their first 255 bytes share the binding');

# --- keys alike in crc32 (one bucket, one hash): each its own server -----

my @pairs = map { [ split /:/ ] } qw(
    c-0xyf3rpz5c:c-ga87t0m5rv c-s7es8sg4pi:c-4qmt6x6i4e
    c-5yhe75m6bz:c-ban3m5ajw6 c-6blsenjfhr:c-dxn75jo42y
    c-b4pn777dwp:c-mttaxfila6 c-5m9tlumpkv:c-96dlli479q
    c-1bsntu2w57:c-804pw4jvdh c-62ytglh6ba:c-8dwk0sk8lc
    c-fqjz4nzzex:c-yv31pj5zwa c-npxck330rd:c-goqcvnwos6
    c-xkold96koo:c-l473uxwo0v c-aj0494r8zw:c-3dlutygt54
);

my ($apart, @mixed) = (0);
for my $p (@pairs) {
    my ($a, $b) = @$p;
    my ($wa, $sa) = both($a, 2);
    my ($wb, $sb) = both($b, 2);
    my ($wa2, $sa2) = both($a, 2);             # after $b's copies were made
    my ($wb2, $sb2) = both($b, 2);
    push @mixed, "$a/$b: $sa $sb then $sa2 $sb2"
        unless $wa == 2 && $wb == 2 && $wa2 == 2 && $wb2 == 2
               && $sa =~ /^200 b\d$/ && $sb =~ /^200 b\d$/
               && $sa2 eq $sa && $sb2 eq $sb;
    $apart++ if $sa ne $sb;
}
is("@mixed", '', 'keys of one crc32 keep each its own server in both workers');
ok($apart, "$apart of 12 crc32-alike pairs were bound to two servers");

# --- a worker killed (-9) and respawned: the bindings hold in both -------

my %home;
for my $k (map { "kl$_" } 1 .. 8) {
    my ($workers, $seen) = both($k, 2);
    ($home{$k}) = $seen =~ /^200 (b\d)$/;
}
my @old = $t->worker_pids;
kill 9, $old[0];
ok($t->wait_for(sub {
    my @now = $t->worker_pids;
    @now == 2 && !grep { $_ == $old[0] } @now }, 10),
   'a worker killed with -9 is respawned');
my @lost;
for my $k (sort keys %home) {
    my ($workers, $seen) = both($k, 2);
    push @lost, "$k: " . ($home{$k} // '?') . " -> $seen ($workers workers)"
        unless defined $home{$k} && $workers == 2
               && $seen eq "200 $home{$k}";
}
is("@lost", '', 'after the respawn every client is on its server in both');

# --- a reload that removes the bound server and adds another --------------

# b2 leaves and b3 comes in the same reload: b3 takes b2's slot in the
# zone's record; b2's clients must be balanced anew (b1 or b3), not all
# moved to b3 as if they had been bound to it

my ($bst) = flag();
$t->wait_for(sub { entries() == 0 }, 5);
my %on;
for my $k (map { "rl$_" } 1 .. 12) {
    my ($workers, $seen) = both($k, 2);
    my ($b) = $seen =~ /^200 (b\d)$/;
    push @{ $on{$b // '?'} }, $k;
}
my @b2 = @{ $on{b2} // [] };
ok(@b2 >= 3 && @{ $on{b1} // [] } >= 3, '12 clients bound to b1 and b2')
    or diag(join ' ', map { "$_: @{ $on{$_} }" } sort keys %on);

conf(qw(b1 b3));
ok($t->reload, 'reload: b2 out, b3 in');
ok($t->wait_for(sub { $t->worker_pids == 2 }, 10), 'two new workers run');

my (%now, @bad);
for my $k (@b2) {
    my ($workers, $seen) = both($k, 2);
    push @bad, "$k: $seen ($workers workers)"
        unless $workers == 2 && $seen =~ /^200 (b1|b3)$/;
    $now{$1}++ if $seen =~ /^200 (b\d)$/;
}
is("@bad", '', "b2's clients keep one server in both workers");
ok($now{b1}, "b2's clients are balanced anew, not all moved to b3 ("
   . join(' ', map { "$_=$now{$_}" } sort keys %now) . ')');

my @moved;
for my $k (@{ $on{b1} // [] }) {
    my ($workers, $seen) = both($k, 2);
    push @moved, "$k: $seen" unless $workers == 2 && $seen eq '200 b1';
}
is("@moved", '', "b1's clients stay on b1");

done_testing();
