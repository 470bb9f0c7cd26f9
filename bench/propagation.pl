#!/usr/bin/perl
# bench/propagation.pl PORT CTL KEY PIN ROUNDS
#
# Time from an admin PUT to the first request that obeys it, in each of the
# proxy's workers.  The proxy adds X-Worker ($pid) and X-Upstream
# ($upstream_addr) and has "ha_optout_header on".  After the PUT is sent,
# requests go out on new connections ("listen ... reuseport" spreads them
# over the workers) until every worker has answered one that carries the
# flag (X-HA-Optout) and went to the pinned server.  Then the same for the
# DELETE (first request per worker without the header).  A request answered
# after the PUT's response that does not obey counts as a violation.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use BenchHttp;
use Time::HiRes qw(time);

my ($port, $ctl, $key, $pin, $rounds) = @ARGV;
$rounds ||= 5;

sub token {
    my $t = `$ctl token --key $key --kid bench --sub bench --scope "ha:read ha:write" --ttl 1h`;
    chomp $t;
    die "token: $?\n" if $? || !$t;
    return $t;
}

sub workers_obey {
    my ($want_flag, $t_sent, $t_resp) = @_;
    my (%first, %seen, $viol, $n);
    $viol = 0;
    $n = 0;
    while (time - $t_sent < 3) {
        my $r = BenchHttp::request($port, 'GET', '/', {});
        my $now = time;
        $n++;
        my $w = $r->{headers}{'x-worker'} // '?';
        $seen{$w} = 1;
        my $has = exists $r->{headers}{'x-ha-optout'};
        my $ok = $want_flag
            ? ($has && ($r->{headers}{'x-upstream'} // '') eq $pin)
            : !$has;
        if ($ok) {
            $first{$w} //= $now - $t_sent;
        } elsif (defined $t_resp) {
            $viol++;
        }
        last if keys %seen >= 2 && keys %first == keys %seen;
    }
    return (\%first, $viol, $n);
}

my (@put, @del, $viol_total);
$viol_total = 0;

for my $round (1 .. $rounds) {
    my $tok = token();
    my $body = qq({"pin": "$pin", "failover": false, "ttl": "10m", )
             . qq("reason": "bench propagation $round"});
    my $t0 = time;
    my $r = BenchHttp::request($port, 'PUT', '/ha-optout/v1/flags/app',
        { Authorization => "Bearer $tok",
          'Content-Type' => 'application/json' }, $body);
    my $t1 = time;
    die "PUT: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    my ($first, $viol, $n) = workers_obey(1, $t0, $t1);
    die "PUT round $round: only ", scalar(keys %$first),
        " worker(s) obeyed within 3 s\n" if keys %$first < 2;
    my $max = (sort { $b <=> $a } values %$first)[0];
    push @put, $max;
    $viol_total += $viol;
    printf "PROP put round=%d put_rtt_ms=%.3f all_workers_ms=%.3f requests=%d violations=%d\n",
        $round, ($t1 - $t0) * 1e3, $max * 1e3, $n, $viol;

    $tok = token();
    $t0 = time;
    $r = BenchHttp::request($port, 'DELETE', '/ha-optout/v1/flags/app',
        { Authorization => "Bearer $tok" });
    $t1 = time;
    die "DELETE: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    ($first, $viol, $n) = workers_obey(0, $t0, $t1);
    die "DELETE round $round: not all workers reverted within 3 s\n"
        if keys %$first < 2;
    $max = (sort { $b <=> $a } values %$first)[0];
    push @del, $max;
    $viol_total += $viol;
    printf "PROP delete round=%d rtt_ms=%.3f all_workers_ms=%.3f requests=%d violations=%d\n",
        $round, ($t1 - $t0) * 1e3, $max * 1e3, $n, $viol;
}

@put = sort { $a <=> $b } @put;
@del = sort { $a <=> $b } @del;
printf "PROPSUM put_median_ms=%.3f put_max_ms=%.3f delete_median_ms=%.3f "
     . "delete_max_ms=%.3f violations=%d rounds=%d\n",
    $put[$#put / 2] * 1e3, $put[-1] * 1e3, $del[$#del / 2] * 1e3,
    $del[-1] * 1e3, $viol_total, $rounds;
