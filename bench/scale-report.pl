#!/usr/bin/perl
# bench/scale-report.pl DIR: the "How cost grows" tables, targets and
# profiles (markdown, stdout) from DIR/scale-callgrind.txt and
# DIR/scale-wrk.tsv, and the plot DIR/bench-scale.svg (all written by
# bench/scale.sh).

use strict;
use warnings;

my $dir = shift;
my $CGN = $ENV{SCALE_CG_REQUESTS} // 1000;

sub median { my @s = sort { $a <=> $b } @_; return undef unless @s; return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2 }
sub slurp { my $f = "$dir/$_[0]"; return () unless -e $f; open my $h, '<', $f or die; return <$h> }

my (%ir, %mod, %top, %cpu, %fn, %timer, %ticks);
for (slurp('scale-callgrind.txt')) {
    if (/^CG case=(\S+) requests=\d+ total_ir_per_req=(\S+) module_ir_per_req=(\S+)(?: timer_ir_per_req=(\S+) ticks=(\S+))?/) {
        ($ir{$1}, $mod{$1}, $timer{$1}, $ticks{$1}) = ($2, $3, $4 // 0, $5 // 0);
    } elsif (/^CGTOP case=(\S+) fn=(\S+) self_ir_per_req=(\S+)/) {
        push @{ $top{$1} }, [$2, $3];
    } elsif (/^CGFN case=(\S+) fn=(\S+) ir_per_req=(\S+)/) {
        push @{ $fn{$1} }, [$2, $3] if $3 >= 5;
    }
}
for (slurp('scale-wrk.tsv')) {
    my %kv = /(\w+)=(\S+)/g;
    next unless $kv{requests};
    push @{ $cpu{$kv{case}} }, $kv{proxy_cpu_ns} / 1e3 / $kv{requests};
}

# aliases: the same measurement seen from another dimension
my %alias = ('ups-1' => 'pinfirst-2', 'stickyc-10' => 'sticky-2');
sub k { return $alias{$_[0]} // $_[0] }
sub IR { my $v = $ir{k($_[0])}; return $v }
sub MOD { return $mod{k($_[0])} }
sub CPU { my $c = $cpu{k($_[0])}; return $c ? median(@$c) : undef }

# capacity ratio: reference cost / case cost (>1: cheaper than reference)
sub cap { my ($ref, $c) = @_; return (defined IR($ref) && IR($c)) ? IR($ref) / IR($c) : undef }
# the same without the module's timer, whose share between the two runs
# follows their duration, not the requests (the targets use this one)
sub IRN { my $v = IR($_[0]); return defined $v ? $v - ($timer{k($_[0])} // 0) : undef }
sub capn { my ($ref, $c) = @_; return (defined IRN($ref) && IRN($c)) ? IRN($ref) / IRN($c) : undef }
sub ccap {
    my ($ref, $c) = @_;
    my ($a, $b) = ($cpu{k($ref)}, $cpu{k($c)});
    return undef unless $a && $b;
    my $n = @$a < @$b ? @$a : @$b;
    return median(map { $a->[$_] / $b->[$_] } 0 .. $n - 1);
}
sub f { my ($fmt, $v) = @_; return defined $v ? sprintf($fmt, $v) : '-' }

my %label = (stock => 'stock round robin', noflag => 'module, no flag',
             foff => 'failover off', pinfirst => 'pin, first server',
             pinlast => 'pin, last server', sticky => 'sticky (10 clients)');
my @kinds = qw(stock noflag foff pinfirst pinlast sticky);
my @servers = (2, 100, 1000);

print "### Servers per upstream\n\n";
print "| servers | case | whole nginx Ir/request | capacity vs stock (Ir) | module Ir/request | proxy CPU µs/request | CPU capacity vs stock |\n";
print "|---:|---|---:|---:|---:|---:|---:|\n";
for my $s (@servers) {
    for my $k (@kinds) {
        my $c = "$k-$s";
        next unless defined IR($c);
        printf "| %d | %s | %s | %s | %s | %s | %s |\n", $s, $label{$k},
            f('%.0f', IR($c)), f('%.3f', cap("stock-$s", $c)),
            $k eq 'stock' ? '-' : f('%.1f', MOD($c)), f('%.2f', CPU($c)),
            f('%.3f', ccap("stock-$s", $c));
    }
}

print "\n### Upstreams holding a flag (a pin on the first server, 2 servers each; requests to the last upstream)\n\n";
print "| upstreams | whole nginx Ir/request | of which the module's 250 ms timer | whole nginx without the timer | capacity vs stock without the timer (1 upstream, 2 servers) | module Ir/request (request path) | timer Ir per tick | proxy CPU µs/request | CPU capacity vs stock |\n";
print "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
for my $u (1, 100, 1000) {
    my $c = "ups-$u";
    next unless defined IR($c);
    my $t = $timer{k($c)} // 0;
    my $tk = $ticks{k($c)} // 0;
    my $s0 = IR('stock-2');
    printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", $u, f('%.0f', IR($c)),
        f('%.0f', $t), f('%.0f', IR($c) - $t),
        defined $s0 ? f('%.3f', $s0 / (IR($c) - $t)) : '-', f('%.1f', MOD($c)),
        $tk > 0 ? f('%.0f', $t * $CGN / $tk) : '-', f('%.2f', CPU($c)),
        f('%.3f', ccap('stock-2', $c));
}
print "\nThe module's timer (every 250 ms per worker: policy windows, expiry, sticky sweep) walks every upstream with ha_optout; its instructions land between the two callgrind runs in proportion to how long they ran (slower on a loaded machine), not to the requests, so they are shown apart.\n";

print "\n### Sticky clients (2 servers; module `sticky_key=\$http_x_client` vs stock `hash \$http_x_client consistent`)\n\n";
print "| clients | sticky Ir/request | stock hash Ir/request | capacity sticky vs hash (Ir) | module Ir/request | sticky CPU µs/request | hash CPU µs/request | CPU capacity vs hash |\n";
print "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
for my $n (10, 10000) {
    my ($c, $h) = ("stickyc-$n", "hash-$n");
    next unless defined IR($c);
    printf "| %d | %s | %s | %s | %s | %s | %s | %s |\n", $n, f('%.0f', IR($c)),
        f('%.0f', IR($h)), f('%.3f', cap($h, $c)), f('%.1f', MOD($c)),
        f('%.2f', CPU($c)), f('%.2f', CPU($h)), f('%.3f', ccap($h, $c));
}

print "\n### Stream twin (redis-benchmark PING_INLINE, one new TCP session per command, 2 Redis servers)\n\n";
print "| case | whole nginx Ir/session | capacity vs stock stream proxy (Ir) | module Ir/session | proxy CPU µs/session | CPU capacity vs stock |\n";
print "|---|---:|---:|---:|---:|---:|\n";
my %tl = (tstock => 'stock stream proxy, round robin',
          tzone => 'the same, with the http module loaded (zone, state file; no stream twin)',
          tnoflag => 'stream twin, no flag', tpin => 'stream twin, pin');
for my $c (qw(tstock tzone tnoflag tpin)) {
    next unless defined IR($c);
    printf "| %s | %s | %s | %s | %s | %s |\n", $tl{$c}, f('%.0f', IR($c)),
        f('%.3f', cap('tstock', $c)), $c =~ /^t(?:stock|zone)$/ ? '-' : f('%.1f', MOD($c)),
        f('%.2f', CPU($c)), f('%.3f', ccap('tstock', $c));
}

print "\nIr: instructions of the proxy process per request (callgrind, difference of two runs that differ only in the measured requests; one keep-alive client connection for http). Module Ir: self cost of the module's functions plus what they call outside the module, except the wrapped round-robin hooks. CPU: the proxy worker's CPU time (/proc/PID/schedstat) per request under wrk -t1 -c8 (http) or redis-benchmark -c4 -k0 (stream), median over rounds; on 2 shared cores it is noise at the 1-10 % level, the Ir columns decide.\n\n";

# --- targets -------------------------------------------------------------------

my @fail;
sub verdict {
    my ($text, $ok, $val, $case, $ref) = @_;
    if (!defined $ok) { print "- $text: not measured\n"; return }
    printf "- %s: %s (%s)\n", $text, $ok ? 'HOLDS' : 'FAILS', $val;
    push @fail, [$text, $case, $ref] unless $ok;
}

# a ratio beside its threshold: four digits when three would round a
# miss up to the threshold itself ("FAILS (0.990)" for 0.9897)
sub fr {
    my ($r, $thr) = @_;
    return '-' unless defined $r;
    my $s = sprintf('%.3f', $r);
    return ($r < $thr && $s >= $thr) ? sprintf('%.4f', $r) : $s;
}

print "### Targets (callgrind)\n\n";
print "Whole nginx Ir/request without the module's timer.\n\n";
for my $k (qw(pinfirst pinlast)) {
    my ($a, $b) = (MOD("$k-2"), MOD("$k-1000"));
    verdict("module Ir/request of `$label{$k}` at 1,000 servers within 10 % of 2 servers",
            (defined $a && defined $b) ? $b <= 1.10 * $a : undef,
            (defined $a && defined $b) ? sprintf('%.0f vs %.0f, %+.1f %%', $b, $a, 100 * ($b / $a - 1)) : '',
            "$k-1000", "$k-2");
}
for my $k (qw(pinfirst pinlast)) {
    my $r = capn('stock-2', "$k-2");
    verdict("whole nginx with `$label{$k}` at 2 servers >= 0.99 x stock", defined $r ? $r >= 0.99 : undef,
            fr($r, 0.99), "$k-2", 'stock-2');
}
my $r = capn('hash-10000', 'stickyc-10000');
verdict('sticky at 10,000 clients >= 0.97 x stock hash consistent', defined $r ? $r >= 0.97 : undef,
        fr($r, 0.97), 'stickyc-10000', 'hash-10000');
$r = capn('tstock', 'tpin');
verdict('stream twin with a pin >= 0.99 x stock stream proxy', defined $r ? $r >= 0.99 : undef,
        fr($r, 0.99), 'tpin', 'tstock');

# not a target of the issue: what the twin itself costs, against the same
# nginx with the http module loaded (tzone), which the no-flag twin pays too
$r = capn('tzone', 'tpin');
if (defined $r) {
    printf "- (for the stream target's parts, not a target) stream twin with a pin "
        . "vs the stock stream proxy with the http module loaded (`tzone`): %.3f, "
        . "no flag %s\n", $r, f('%.3f', capn('tzone', 'tnoflag'));
}

for my $fl (@fail) {
    my ($text, $c, $ref) = @$fl;
    my ($ct, $rt) = (k($c), k($ref));
    my (%a, %b, %u);
    $a{$_->[0]} = $_->[1] for @{ $top{$ct} || [] };
    $b{$_->[0]} = $_->[1] for @{ $top{$rt} || [] };
    @u{keys %a, keys %b} = ();
    my @d = sort { abs($b->[1]) <=> abs($a->[1]) }
            map { [$_, ($a{$_} // 0) - ($b{$_} // 0)] } keys %u;
    print "\n#### Profile: $text\n\n";
    print "The functions whose self Ir/request differ most between `$ct` and `$rt` "
        . "(callgrind, difference of the two runs; among each case's "
        . ($ENV{CG_TOP} // 60) . " costliest functions; 0x... are static functions of the stripped nginx binary):\n\n";
    print "| function | `$ct` | `$rt` | difference |\n|---|---:|---:|---:|\n";
    for my $r (@d[0 .. ($#d < 11 ? $#d : 11)]) {
        printf "| %s | %s | %s | %+.1f |\n", $r->[0], f('%.1f', $a{$r->[0]}),
            f('%.1f', $b{$r->[0]}), $r->[1];
    }
    my $pin_why = 'the pin\'s ~640 Ir (decide with the X-HA-Optout text, '
        . 'init_peer, select under the zone\'s write lock as round robin takes '
        . 'it, the counters) against the ~136 of round robin\'s get it replaces '
        . 'put it at about 0.99; the whole-process count of the same case moves '
        . 'by ~0.3 % between runs (the event loop wakes up a different number of '
        . 'times), so a verdict within 0.003 of 0.99 is the spread, not a change';
    my %why = (
        'pinfirst-2' => $pin_why,
        'pinlast-2' => $pin_why,
        'stickyc-10000' => 'a known client is answered from the worker\'s '
            . 'copy of its binding (sticky.c: no zone mutex, no rbtree walk); '
            . 'what is left over stock hash is the flag\'s decision and peer '
            . 'data (`decide`, `init_peer`, ~400 Ir) and a third request-pool '
            . 'block for every other request (2.5 blocks against hash\'s 2.0, '
            . '~350 Ir); a run where the copies miss (every client new, or the '
            . 'zone\'s bindings changing) takes the locked path (+~500 Ir)',
        'tpin' => stream_why(),
    );
    my %where = ('stickyc-10000' => '"Sticky: the worker\'s copies of the bindings"');
    print "\nWhy: $why{$ct} (docs/benchmarks.md, "
        . ($where{$ct} // '"Second step" and "Third step"') . ").\n" if $why{$ct};
    if ($fn{$ct}) {
        print "\nThe module's functions in `$ct` (self + what they call outside the module): "
            . join(', ', map { sprintf('`%s` %.0f', $_->[0] =~ s/^ngx_(?:http|stream)_ha_optout_//r, $_->[1]) }
                         @{ $fn{$ct} }) . ".\n";
    }
}

# The stream target from the measured parts: what loading the http module
# costs a stream session by itself (tzone against tstock: its timer in the
# worker's timer tree, the heap the session's buffers then come from), and
# what the twin's pin adds on top (tpin against tzone).
sub stream_why {
    my ($s, $z, $p) = (IRN('tstock'), IRN('tzone'), IRN('tpin'));
    return 'a stream session is ~10,750 Ir, so 1 % is ~108 Ir (run tzone '
         . 'for the parts)' unless defined $s && defined $z && defined $p;
    my %d;
    for my $c (qw(tstock tzone)) {
        for (@{ $top{$c} || [] }) {
            my $sign = $c eq 'tzone' ? 1 : -1;
            $d{timer} += $sign * $_->[1] if $_->[0] =~ /rbtree|timer/;
            $d{heap} += $sign * $_->[1]
                if $_->[0] =~ /^(?:_int_malloc|_int_free|unlink_chunk|systrim|malloc|free)\b/;
        }
    }
    return sprintf('a stream session is %.0f Ir, so 1 %% is %.0f Ir. Loading the '
        . 'http module alone, with no stream twin (`tzone`), costs %.0f Ir a '
        . 'session (%.3f x stock): %+.0f in the timer tree (the module\'s '
        . '250 ms timer is a second node in an otherwise one-session tree, '
        . 'walked by every timer the session adds and deletes) and %+.0f in '
        . 'malloc/free (the session\'s two 16 KB buffers come from the '
        . 'heap\'s free lists instead of its top chunk: blocks the module '
        . 'allocates at run time sit above them); the stream twin with its '
        . 'pin adds %.0f Ir over that (its functions and what they call, '
        . 'the lock and the 64-byte peer data included: %.0f Ir, against '
        . 'the 137 of the round robin get it replaces)',
        $s, $s / 100, $z - $s, $s / $z, $d{timer} // 0, $d{heap} // 0,
        $p - $z, MOD('tpin') // 0);
}

# --- the plot ------------------------------------------------------------------

svg("$dir/bench-scale.svg");

sub svg {
    my ($file) = @_;
    my ($W, $H) = (1380, 340);
    my @panels = (
        { title => 'Ir/request against servers per upstream (zone + keepalive)',
          x => [@servers], xl => 'servers per upstream (log)',
          lines => [map { my $k = $_; [$label{$k}, [map { IR("$k-$_") } @servers]] } @kinds] },
        { title => 'module Ir/request against servers per upstream',
          x => [@servers], xl => 'servers per upstream (log)', yl => 'module Ir/request',
          lines => [map { my $k = $_; [$label{$k}, [map { $k eq 'stock' ? undef : MOD("$k-$_") } @servers]] } @kinds] },
        { title => 'Ir/request against distinct sticky clients (2 servers)',
          x => [10, 10000], xl => 'distinct client keys (log)',
          lines => [['module sticky', [IR('stickyc-10'), IR('stickyc-10000')]],
                    ['stock hash consistent', [IR('hash-10'), IR('hash-10000')]],
                    ['stock round robin', [IR('stock-2'), IR('stock-2')]]] },
    );
    # one colour per series in every panel; the pin on the first server is
    # dashed (it lies on the pin on the last server, which would hide it)
    my %col = ($label{stock} => '#444444', $label{noflag} => '#1f77b4',
               $label{foff} => '#2ca02c', $label{pinfirst} => '#ff7f0e',
               $label{pinlast} => '#d62728', $label{sticky} => '#9467bd',
               'module sticky' => '#9467bd', 'stock hash consistent' => '#8c564b');
    my %dash = ($label{pinfirst} => ' stroke-dasharray="6 4"');
    my $out = qq{<svg xmlns="http://www.w3.org/2000/svg" width="$W" height="$H" viewBox="0 0 $W $H" font-family="sans-serif" font-size="11">\n};
    $out .= qq{<rect width="$W" height="$H" fill="white"/>\n};
    my $pw = $W / 3;
    for my $p (0 .. $#panels) {
        my $P = $panels[$p];
        my ($x0, $y0, $x1, $y1) = ($p * $pw + 70, 30, $p * $pw + $pw - 20, $H - 150);
        my @v = grep { defined } map { @{ $_->[1] } } @{ $P->{lines} };
        next unless @v;
        my $max = 0;
        $max = $_ > $max ? $_ : $max for @v;
        my $step = 10 ** int(log($max) / log(10));
        $step /= 2 if $max / $step < 4;
        my $ymax = $step * (int($max / $step) + 1);
        my @xs = @{ $P->{x} };
        my ($lx0, $lx1) = (log($xs[0]), log($xs[-1]));
        my $X = sub { $x0 + ($x1 - $x0) * (log($_[0]) - $lx0) / ($lx1 - $lx0) };
        my $Y = sub { $y1 - ($y1 - $y0) * $_[0] / $ymax };
        $out .= sprintf qq{<text x="%d" y="18" font-size="12" font-weight="bold">%s</text>\n}, $x0 - 55, $P->{title};
        $out .= sprintf qq{<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>\n}, $x0, $y1, $x1, $y1;
        $out .= sprintf qq{<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>\n}, $x0, $y0, $x0, $y1;
        for (my $t = 0; $t <= $ymax; $t += $step) {
            my $y = $Y->($t);
            $out .= sprintf qq{<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#dddddd"/>\n}, $x0, $y, $x1, $y;
            $out .= sprintf qq{<text x="%d" y="%.1f" text-anchor="end">%d</text>\n}, $x0 - 4, $y + 4, $t;
        }
        for my $x (@xs) {
            $out .= sprintf qq{<text x="%.1f" y="%d" text-anchor="middle">%d</text>\n}, $X->($x), $y1 + 14, $x;
        }
        $out .= sprintf qq{<text x="%.1f" y="%d" text-anchor="middle">%s</text>\n}, ($x0 + $x1) / 2, $y1 + 30, $P->{xl};
        my $ly = $y1 + 48;
        for my $i (0 .. $#{ $P->{lines} }) {
            my ($name, $vals) = @{ $P->{lines}[$i] };
            my @pt = map { defined $vals->[$_] ? sprintf('%.1f,%.1f', $X->($xs[$_]), $Y->($vals->[$_])) : () } 0 .. $#xs;
            next unless @pt;
            my ($c, $d) = ($col{$name} // '#000000', $dash{$name} // '');
            $out .= sprintf qq{<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>\n}, $c, $d, join(' ', @pt);
            $out .= sprintf qq{<circle cx="%s" cy="%s" r="3" fill="%s"/>\n}, split(/,/, $_), $c for @pt;
            my $lx = $x0 + ($i % 2) * 170;
            my $yy = $ly + int($i / 2) * 16;
            $out .= sprintf qq{<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>\n}, $lx, $yy - 4, $lx + 20, $yy - 4, $c, $d;
            $out .= sprintf qq{<text x="%d" y="%d">%s</text>\n}, $lx + 26, $yy, $name;
        }
        $out .= sprintf qq{<text x="%d" y="%d" transform="rotate(-90 %d %d)" text-anchor="middle">%s</text>\n},
            $x0 - 52, ($y0 + $y1) / 2, $x0 - 52, ($y0 + $y1) / 2, $P->{yl} // 'whole nginx Ir/request';
    }
    $out .= "</svg>\n";
    open my $fh, '>', $file or die "$file: $!\n";
    print $fh $out;
    close $fh;
}
