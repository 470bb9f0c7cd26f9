#!/usr/bin/perl
# bench/report.pl DIR: the markdown report from wrk.tsv, callgrind.txt,
# propagation.txt and zone.txt in DIR (all written by bench/run.sh).

use strict;
use warnings;

my $dir = shift;
my %label = (
    a => 'stock round robin, no module',
    b => 'module, `ha_optout`, no flag',
    c => 'module, `failover: false`',
    d => 'module, `pin`',
    e => 'module, `pin` + `pin_selector` (half match)',
    f => 'Lua `balancer_by_lua` + `lua_shared_dict` (pin, no failover)',
);
my %vlabel = (plain => 'local upstream, new backend connection per request',
              ka => '`zone app 64k` + `keepalive 16`');

sub median { my @s = sort { $a <=> $b } @_; return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
sub slurp { my $f = "$dir/$_[0]"; return () unless -e $f; open my $h, '<', $f or die; return <$h> }

my (%rps, %cpu, %p50, %p99, %err, @rounds);
for (slurp('wrk.tsv')) {
    my %kv = /(\w+)=(\S+)/g;
    my $k = "$kv{variant}-$kv{case}";
    push @{ $rps{$k} }, $kv{requests} / ($kv{duration_us} / 1e6);
    push @{ $cpu{$k} }, $kv{proxy_cpu_ns} / 1e3 / $kv{requests};
    push @{ $p50{$k} }, $kv{p50_us};
    push @{ $p99{$k} }, $kv{p99_us};
    $err{$k} += $kv{sockerr} + $kv{non2xx};
}

my %ratio;        # median over rounds of the per-round ratio to (a)
my @fail;

if (%rps) {
    print "## Throughput and latency (wrk, interleaved rounds)\n\n";
    for my $v (qw(plain ka)) {
        next unless $rps{"$v-a"};
        my $nr = @{ $rps{"$v-a"} };
        print "### $vlabel{$v}\n\n";
        print "| case | req/s (median) | req/s ratio to (a) | req/s ratio to (f) | proxy CPU µs/req | CPU capacity ratio to (a) | CPU capacity ratio to (f) | p50 µs | p99 µs | p99 vs (a) | spread of req/s | spread of CPU/req | errors |\n";
        print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for my $c (qw(a b c d e f)) {
            my $k = "$v-$c";
            next unless $rps{$k};
            my @r = map { $rps{$k}[$_] / $rps{"$v-a"}[$_] } 0 .. $nr - 1;
            my @rf = $rps{"$v-f"} ? map { $rps{$k}[$_] / $rps{"$v-f"}[$_] } 0 .. $nr - 1 : ();
            $ratio{$k} = median(@r);
            my @cr = map { $cpu{"$v-a"}[$_] / $cpu{$k}[$_] } 0 .. $nr - 1;
            my @crf = $cpu{"$v-f"} ? map { $cpu{"$v-f"}[$_] / $cpu{$k}[$_] } 0 .. $nr - 1 : ();
            $ratio{"$k-cpu"} = median(@cr);
            $ratio{"$k-cpu-f"} = @crf ? median(@crf) : undef;
            my @cs = sort { $a <=> $b } @{ $cpu{$k} };
            my $cm = median(@cs);
            $ratio{"$k-spread"} = ($cs[-1] - $cs[0]) / $cm;
            my $rf = @rf ? median(@rf) : undef;
            my $m = median(@{ $rps{$k} });
            my @s = sort { $a <=> $b } @{ $rps{$k} };
            my $p99r = median(@{ $p99{$k} }) / median(@{ $p99{"$v-a"} });
            printf "| (%s) %s | %.0f | %.3f | %s | %.2f | %.3f | %s | %.0f | %.0f | %+.1f%% | %.0f%% | %.0f%% | %d |\n",
                $c, $label{$c}, $m, $ratio{$k},
                defined $rf ? sprintf('%.2f', $rf) : '-',
                $cm, $ratio{"$k-cpu"},
                defined $ratio{"$k-cpu-f"} ? sprintf('%.2f', $ratio{"$k-cpu-f"}) : '-',
                median(@{ $p50{$k} }), median(@{ $p99{$k} }),
                ($p99r - 1) * 100, ($s[-1] - $s[0]) / $m * 100,
                ($cs[-1] - $cs[0]) / $cm * 100, $err{$k};
            $ratio{"$k-f"} = $rf;
            $ratio{"$k-p99"} = $p99r;
        }
        print "\nRatios: median over the $nr rounds of the per-round ratio (each round runs every case back to back). "
            . "CPU capacity ratio = proxy worker CPU time per request of the reference / of the case (from /proc/PID/schedstat around each run): "
            . "what the throughput ratio would be if the proxy alone were the bottleneck; it is far less disturbed by other load on the machine. "
            . "Spread = (max - min) / median over the rounds.\n\n";
    }

    print "### Targets\n\n";
    for my $v (qw(plain ka)) {
        next unless $ratio{"$v-a"};
        my $both = sub {
            my ($k, $min) = @_;
            my ($w, $c) = ($ratio{$k}, $ratio{"$k-cpu"});
            return [$w >= $min && $c >= $min,
                    sprintf('req/s %.3f, CPU capacity %.3f%s', $w, $c,
                            ($w >= $min) != ($c >= $min)
                            ? ($c >= $min ? '; holds by CPU, not by req/s' : '; holds by req/s, not by CPU') : '')];
        };
        my $both_f = sub {
            my ($c, $min) = @_;
            my ($w, $u) = ($ratio{"$v-$c-f"}, $ratio{"$v-$c-cpu-f"});
            return [0, 'n/a'] unless defined $w;
            return [$w >= $min && $u >= $min, sprintf('req/s %.2f, CPU capacity %.2f', $w, $u)];
        };
        my @t = (
            ["(b) throughput >= 0.99 x (a)", @{ $both->("$v-b", 0.99) }],
            ["(b) p99 within 3% of (a)", abs($ratio{"$v-b-p99"} - 1) <= 0.03 || $ratio{"$v-b-p99"} < 1, sprintf('%+.1f%%', ($ratio{"$v-b-p99"} - 1) * 100)],
            ["(c) throughput >= 0.98 x (a)", @{ $both->("$v-c", 0.98) }],
            ["(d) throughput >= 0.98 x (a)", @{ $both->("$v-d", 0.98) }],
        );
        for my $c (qw(b c d e)) {
            push @t, ["($c) >= 1.15 x (f)", @{ $both_f->($c, 1.15) }];
        }
        my $noise = 0;
        for my $c (qw(a b c d e f)) {
            my $sp = $ratio{"$v-$c-spread"} // 0;
            $noise = $sp if $sp > $noise;
        }
        for (@t) {
            printf "- %s, %s: %s (%s)\n", $vlabel{$v}, $_->[0], $_->[1] ? 'holds' : 'fails', $_->[2];
        }
        printf "- **wall-clock verdicts above are inconclusive**: CPU/request varied by up to %.0f%% between rounds, more than the 1-2%% margins; see the callgrind verdicts\n", $noise * 100
            if $noise > 0.04;
    }
    print "\n";
}

my @cg = slurp('callgrind.txt');
if (@cg) {
    print "## Instructions per request (callgrind)\n\n";
    print "| case | whole nginx Ir/request | delta vs (a) | capacity ratio to (a) = Ir(a)/Ir | capacity ratio to (f) = Ir(f)/Ir | module Ir/request |\n|---|---:|---:|---:|---:|---:|\n";
    my (%tot, %modir);
    for (@cg) {
        next unless /^CG case=(\w) requests=\d+ total_ir_per_req=(\S+) module_ir_per_req=(\S+)/;
        ($tot{$1}, $modir{$1}) = ($2, $3);
    }
    for my $c (sort keys %tot) {
        printf "| (%s) | %.0f | %s | %s | %s | %s |\n", $c, $tot{$c},
            defined $tot{a} ? sprintf('%+.0f', $tot{$c} - $tot{a}) : '-',
            defined $tot{a} ? sprintf('%.3f', $tot{a} / $tot{$c}) : '-',
            defined $tot{f} ? sprintf('%.2f', $tot{f} / $tot{$c}) : '-',
            $c =~ /[bcde]/ ? sprintf('%.1f', $modir{$c}) : '-';
    }
    print "\nIr = instructions executed by the proxy process (callgrind, local upstream, one keep-alive client connection, every other request with X-Forensic-Case), per request. "
        . "The capacity ratios are what the throughput ratios would be if the proxy's instructions alone set the pace.\n";
    print "\nPer function (self + what it calls outside the module, except the wrapped round-robin hooks and the next header filter):\n\n";
    print "| case | function | Ir/request | calls/request |\n|---|---|---:|---:|\n";
    for (@cg) {
        next unless /^CGFN case=(\w) fn=(\S+) ir_per_req=(\S+) calls_per_req=(\S+)/;
        print "| ($1) | $2 | $3 | $4 |\n" if abs($3) >= 1;
    }
    print "\n### Targets by instructions (deterministic)\n\n";
    if (defined $modir{b}) {
        printf "- (b) <= 150 Ir/request in the module: %s (%.1f)\n",
            $modir{b} <= 150 ? 'HOLDS' : 'FAILS', $modir{b};
    }
    if (defined $tot{a}) {
        for (['b', 0.99], ['c', 0.98], ['d', 0.98]) {
            my ($c, $min) = @$_;
            next unless $tot{$c};
            printf "- (%s) capacity >= %.2f x (a): %s (%.3f)\n", $c, $min,
                $tot{a} / $tot{$c} >= $min ? 'HOLDS' : 'FAILS', $tot{a} / $tot{$c};
        }
    }
    if (defined $tot{f}) {
        for my $c (qw(b c d e)) {
            next unless $tot{$c};
            printf "- (%s) capacity >= 1.15 x (f): %s (%.2f)\n", $c,
                $tot{f} / $tot{$c} >= 1.15 ? 'HOLDS' : 'FAILS', $tot{f} / $tot{$c};
        }
    }
    print "\n";
}

my @pr = grep { /^PROP/ } slurp('propagation.txt');
if (@pr) {
    print "## Propagation (2 workers, new connection per probe)\n\n```\n", @pr, "```\n\n";
}

my @z = slurp('zone.txt');
if (@z) {
    print "## Zone bytes\n\n| structure | sizeof | slab bytes |\n|---|---:|---:|\n";
    for (@z) {
        print "| $1 | $2 | $3 |\n" if /^SIZE (\S+) (\d+) (\d+)/;
    }
    print "\n```\n", grep({ !/^SIZE/ } @z), "```\n";
    my %up = map { /zone=(\S+) fit=(\d+)/ ? ($1 => $2) : () } @z;
    my %rp = map { /accepted=(\d+).*zone=(\S+)/ ? ($2 => $1) : () } @z;
    if (defined $up{'64k'} && defined $up{'128k'} && $up{'128k'} > $up{'64k'}) {
        printf "\nmeasured: %.0f zone bytes per upstream with `ha_optout` (65536 / %d more upstreams in 128k than in 64k)\n",
            65536 / ($up{'128k'} - $up{'64k'}), $up{'128k'} - $up{'64k'};
    }
    if (defined $rp{'64k'} && defined $rp{'128k'} && $rp{'128k'} > $rp{'64k'}) {
        printf "measured: %.0f zone bytes per replay entry (65536 / %d more writes before 507 in 128k than in 64k)\n",
            65536 / ($rp{'128k'} - $rp{'64k'}), $rp{'128k'} - $rp{'64k'};
    }
}
