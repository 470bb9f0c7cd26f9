#!/usr/bin/perl

# bench/fleet.pl: the fleet on etcd (docs/fleet.md).  A 1-member etcd,
# N nginx (1 worker each) with an agent beside each, all on 127.0.0.1.
#
#   convergence: `ha-optoutctl set --etcd` (and `clear`) started -> every
#     nginx's status shows the new fleet revision (resp. no fleet flag);
#     TOGGLES set+clear pairs; p50/p99/max of both, polled every ~2 ms
#     per nginx (one status GET each round);
#   idle agent: RSS (VmRSS) and CPU (utime+stime) of each agent over
#     IDLE seconds with a flag held and nothing changing.
#
# Knobs: FLEET_NODES (10), FLEET_TOGGLES (100), FLEET_IDLE (20 s),
# FLEET_MEMBERS (1 or 3).  Output: one line per figure, and a markdown
# table on stdout for docs/benchmarks.md.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Etcd;
use HaOptout::Fleet;

$SIG{INT} = $SIG{TERM} = sub { exit 130 };

my $N = $ENV{FLEET_NODES} // 10;
my $TOGGLES = $ENV{FLEET_TOGGLES} // 100;
my $IDLE = $ENV{FLEET_IDLE} // 20;
my $MEMBERS = $ENV{FLEET_MEMBERS} // 1;

my $etcd = HaOptout::Etcd->new(members => $MEMBERS);
my $d = $etcd->dir;
system("openssl genpkey -algorithm ED25519 -out $d/w.pem 2>/dev/null; "
       . "openssl pkey -in $d/w.pem -pubout -out $d/w.pub 2>/dev/null") == 0
    or die "openssl failed\n";

my @W = ('--etcd', $etcd->urls, '--environment', 'prod', '--key',
         "$d/w.pem", '--alg', 'eddsa', '--sub', 'bench');

my @nodes = map { HaOptout::Fleet->new(etcd => $etcd, host => "lb$_",
                                       trust => ["$d/w.pub"]) } 1 .. $N;

$etcd->wait_for(sub { !grep { !$_->report } @nodes }, 30)
    or die "agents did not report\n";

my $ua = HTTP::Tiny->new(timeout => 2, keep_alive => 1, proxy => undef,
                         http_proxy => undef, https_proxy => undef);
my @urls = map { 'http://127.0.0.1:' . $_->t->port('http') . '/ha-status' }
           @nodes;

# the fleet revision each nginx holds (0: none)
sub revs {
    return map {
        my $r = $ua->get($_);
        my $j = $r->{success} ? eval { decode_json($r->{content}) } : undef;
        ($j && $j->{upstreams}{app}{layers}{fleet})
            ? $j->{upstreams}{app}{layers}{fleet}{revision} : 0;
    } @urls;
}

sub wait_all {
    my ($want, $t0) = @_;       # $want: revision, or 0 for none
    my $deadline = $t0 + 10;
    while (time < $deadline) {
        my @r = revs();
        return time - $t0 unless grep { $_ != $want } @r;
    }
    die "no convergence on revision $want\n";
}

sub cli_rev {
    my (@args) = @_;
    my $t0 = time;
    my ($rc, $out, $err) = $etcd->cli(@args, '--json');
    die "ha-optoutctl @args[0 .. 1]: $err\n" if $rc;
    my $j = decode_json($out);
    return ($t0, $j->{revision});
}

my (@set, @clear);

for my $i (1 .. $TOGGLES) {
    my ($t0, $rev) = cli_rev('set', @W, '--upstream', 'app', '--no-failover',
                             '--ttl', '60s', '--reason', "toggle $i");
    push @set, wait_all($rev, $t0);

    ($t0) = cli_rev('clear', @W, '--upstream', 'app');
    push @clear, wait_all(0, $t0);
}

sub pct {
    my ($p, @v) = @_;
    @v = sort { $a <=> $b } @v;
    return $v[ POSIX::ceil($p / 100 * @v) - 1 ];
}

# the CLI alone: a set and a clear against etcd, nobody waiting
my @cli;
for my $i (1 .. 20) {
    my $t0 = time;
    $etcd->cli('set', @W, '--upstream', 'other', '--no-failover', '--ttl',
               '60s', '--reason', 'cli');
    push @cli, time - $t0;
}

# ---- the agents at rest, with a flag held
cli_rev('set', @W, '--upstream', 'app', '--no-failover', '--ttl', '10m',
        '--reason', 'idle');
sleep 2;

my $hz = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

sub cpu_ticks {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my @f = split / /, (<$fh> =~ s/^.*\) //r);
    return $f[11] + $f[12];
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

my @pids = map { $_->agent_pid } @nodes;
my %c0 = map { $_ => cpu_ticks($_) } @pids;
my $t0 = time;
sleep $IDLE;
my $el = time - $t0;
my @cpu = map { (cpu_ticks($_) - $c0{$_}) / $hz / $el * 100 } @pids;
my @rss = map { rss_kb($_) } @pids;

my $ms = sub { sprintf '%.1f', 1000 * $_[0] };

printf "fleet: %d nginx + agents, etcd %d member(s), %d toggles\n", $N,
       $MEMBERS, $TOGGLES;
printf "| change | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n";
printf "| set -> all %d obey | %s | %s | %s |\n", $N, $ms->(pct(50, @set)),
       $ms->(pct(99, @set)), $ms->(pct(100, @set));
printf "| clear -> all %d restored | %s | %s | %s |\n", $N,
       $ms->(pct(50, @clear)), $ms->(pct(99, @clear)),
       $ms->(pct(100, @clear));
printf "| the CLI's set alone (sign, lease, txn) | %s | %s | %s |\n",
       $ms->(pct(50, @cli)), $ms->(pct(99, @cli)), $ms->(pct(100, @cli));
printf "\nidle agent over %.0f s: RSS %d..%d KiB (mean %.0f), CPU %.3f%% "
       . "mean, %.3f%% max\n", $el, (sort { $a <=> $b } @rss)[0],
       (sort { $a <=> $b } @rss)[-1], eval { my $s = 0; $s += $_ for @rss;
       $s / @rss }, eval { my $s = 0; $s += $_ for @cpu; $s / @cpu },
       (sort { $a <=> $b } @cpu)[-1];

$_->stop for @nodes;
$etcd->stop;
