#!/usr/bin/perl

# The resolve cache (issue 18) against "resolve" servers (nginx 1.27.3+):
# their peers come and go at run time, and the cache is dropped whenever
# the list's change counter moved.  Here DNS flips every few hundred ms
# between two sets of addresses (16 for backend.test beside the pinned
# 127.0.0.1, 30 for other.test) while two workers serve pinned requests
# and one of them runs the resolver: peers the cache once pointed to are
# freed and their memory reused.  Every pinned request must reach the
# pinned server, no worker may crash or log an alert, and the cache re-made
# on every change must not grow a worker's memory.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use POSIX qw(_exit setsid);
use Time::HiRes qw(sleep time);
use HaOptout::Test;

plan skip_all => '"resolve" is in open-source nginx since 1.27.3 (this '
                 . 'nginx: ' . HaOptout::Test->nginx_version . ')'
    unless HaOptout::Test->nginx_at_least('1.27.3');

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $answers = $t->testdir . '/dns';
$t->write_file('dns-backend', "127.0.0.1\n");
$t->write_file('dns-other', "127.0.1.1\n");

# ---------------------------------------------------------------- DNS

# A queries for NAME.test answered from the file dns-NAME (none: NXDOMAIN)
sub dns_responder {
    my ($port, $file) = @_;

    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
                                  Proto => 'udp', ReuseAddr => 1)
        or die "dns: udp 127.0.0.1:$port: $!\n";

    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;

    setsid();
    local $SIG{ALRM} = sub { _exit(0) };
    alarm 120;                                      # self-stopping

    while (1) {
        my $from = $s->recv(my $q, 512) // next;
        next if length $q < 17;

        my ($id, $flags, $qd) = unpack 'n n n', $q;

        # the question: labels up to the root, then type and class
        my $off = 12;
        my @labels;
        while ((my $l = ord substr($q, $off, 1)) > 0) {
            push @labels, substr($q, $off + 1, $l);
            $off += $l + 1;
        }
        my $qname = lc join '.', @labels;
        my ($qtype) = unpack 'n', substr($q, $off + 1, 2);
        my $question = substr($q, 12, $off + 5 - 12);

        my @a;
        if ($qtype == 1 && $qname =~ /^(\w+)\.test$/
            && open my $fh, '<', "$file-$1")
        {
            @a = grep { /^\d+\.\d+\.\d+\.\d+$/ } map { chomp; $_ } <$fh>;
        }

        my $rcode = ($qname =~ /\.test$/ && ($qtype != 1 || @a)) ? 0 : 3;

        my $r = pack('n n n n n n', $id, 0x8180 | $rcode, 1, scalar @a, 0, 0)
              . $question;
        for my $ip (@a) {
            $r .= pack('n n n N n', 0xc00c, 1, 1, 1, 4)
                . pack('C4', split /\./, $ip);
        }

        $s->send($r, 0, $from);
    }
}

$t->{backends}{dns} = dns_responder($t->port('dns'), $answers);

$t->conf(<<'EOF')->run;
http {
    ha_optout_zone ha_optout 1m;

    resolver 127.0.0.1:%%PORT_dns%% valid=1s ipv6=off;
    resolver_timeout 2s;

    upstream rz {
        zone rz 512k;
        server other.test:%%PORT_b2%% resolve;
        server backend.test:%%PORT_b1%% resolve;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://rz;
            proxy_next_upstream off;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

my $live = '127.0.0.1:' . $t->port('b1');

sub addresses {
    my $st = $t->status // return '';
    return join ' ', sort map { $_->{address} // '' }
                     @{ $st->{upstreams}{rz}{servers} // [] };
}

ok($t->wait_for(sub { addresses() =~ /\Q$live\E/ }, 15),
   "backend.test resolved to $live") or diag addresses();

my $r = $t->api(PUT => 'v1/flags/rz', json => {
    pin => $live, ttl => '5m', reason => 'resolved address' });
is($r->{status}, 200, 'pin on the resolve server\'s address')
    or diag $r->{body};

sub rss_anon {
    my $max = 0;
    for my $pid ($t->worker_pids) {
        open my $fh, '<', "/proc/$pid/status" or next;
        while (<$fh>) {
            $max = $1 if /^RssAnon:\s+(\d+)/ && $1 > $max;
        }
    }
    return $max;
}

$t->spray(20, '/');
my $rss0 = rss_anon();

# DNS flips: the pinned address stays, every other one changes

my $stop = $t->testdir . '/stop';
my $flipper = fork // die "fork: $!\n";
if ($flipper == 0) {
    setsid();
    my $deadline = time + 60;
    for (my $i = 0; !-e $stop && time < $deadline; $i++) {
        my $b = 2 + ($i % 2) * 16;
        my $o = 1 + ($i % 2) * 30;
        open my $fh, '>', "$answers-backend.tmp" or _exit(1);
        print $fh join '', "127.0.0.1\n", map { "127.0.0.$_\n" } $b .. $b + 15;
        close $fh;
        rename "$answers-backend.tmp", "$answers-backend";
        open $fh, '>', "$answers-other.tmp" or _exit(1);
        print $fh join '', map { "127.0.1.$_\n" } $o .. $o + 29;
        close $fh;
        rename "$answers-other.tmp", "$answers-other";
        sleep 0.3;
    }
    _exit(0);
}

# pinned traffic while the peers change

my $port = $t->port('http');
my $client = fork // die "fork: $!\n";
if ($client == 0) {
    setsid();
    open my $out, '>', $t->testdir . '/client.log' or _exit(1);
    $out->autoflush(1);
    my $deadline = time + 60;
    while (!-e $stop && time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                      Timeout => 5) or next;
        print $s "GET / HTTP/1.0\r\nHost: rz\r\n\r\n";
        local $/;
        my $resp = <$s> // '';
        my ($st) = $resp =~ m{^HTTP/1\.\d (\d+)};
        my ($be) = $resp =~ /^X-Backend: (\S+)/mi;
        print $out(($st // '-') . ' ' . ($be // '-') . "\n");
        sleep 0.002;
    }
    _exit(0);
}

my ($changes, $last) = (0, '');
my $deadline = time + 40;
while ($changes < 8 && time < $deadline) {
    my $a = addresses();
    $changes++ if $a =~ /127\.0\.1\.\d+/ && $last ne '' && $a ne $last;
    $last = $a if $a =~ /127\.0\.1\.\d+/;
    sleep 0.1;
}
ok($changes >= 8, "the peer list changed $changes times while pinned "
   . 'requests ran');

$t->write_file('stop', '');
waitpid $flipper, 0;
waitpid $client, 0;

my %seen;
$seen{$_}++ for split /\n/, $t->read_file('client.log');
my $n = 0;
$n += $_ for values %seen;
my $ok = $seen{'200 b1'} // 0;

# a request whose list changed between its init_peer and its get (by the
# other worker's resolver) is refused as the walk always did: a 502 now
# and then, never another server
my @other = grep { $_ ne '200 b1' && $_ ne '502 -' } keys %seen;
ok($n >= 50, "$n pinned requests ran");
is("@other", '', 'none reached another server');
ok($ok >= $n * 0.95, "$ok of $n reached the pinned server");

unlike($t->error_log, qr/\[(alert|crit|emerg)\]|chunk is already free/,
       'no alert in error.log');

my $rss1 = rss_anon();
ok($rss1 < $rss0 + 1024, "worker memory flat across the changes ($rss0 KB, "
   . "$rss1 KB)");

is(scalar(grep { $_ eq '200 b1' } $t->spray(6, '/')), 6,
   'the pin holds after the changes');

done_testing;
