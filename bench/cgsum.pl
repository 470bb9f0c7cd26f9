#!/usr/bin/perl
# bench/cgsum.pl CASE N base.out full.out
#
# base.out and full.out are two callgrind runs of the same configuration
# that differ only in N more requests (same start, same admin PUT, same
# warm-up), so their difference is the cost of N requests.
# Instructions (Ir) per request: the whole process, and the module's own
# share on the request path (its timer's share apart, timer_ir_per_req).  The module's share is the self cost of every ngx_http_ha_optout_*
# function plus what they call elsewhere in nginx or libc, except the hooks
# they wrap (the original round-robin init/get/free and the next header
# filter; Debian's nginx is stripped, so static nginx functions reached
# through those hooks show as 0x... and are excluded too), which stock
# nginx runs anyway.  Prints CG lines for report.pl.

use strict;
use warnings;

my ($case, $n, @files) = @ARGV;

my (%self, %call, %calls, $total);
$total = 0;

sub resolve {
    my ($h, $s) = @_;
    if ($s =~ /^\((\d+)\)(?: (.*))?$/) {
        $h->{$1} = $2 if defined $2;
        return $h->{$1};
    }
    return $s;
}

for my $i (0, 1) {
my $sign = $i ? 1 : -1;
my (%name, $fn, $cfn, $in_call);
open my $fh, '<', $files[$i] or die "$files[$i]: $!\n";
while (<$fh>) {
    chomp;
    if (/^fn=(.*)$/) { $fn = resolve(\%name, $1); $in_call = 0; next }
    if (/^cfn=(.*)$/) { $cfn = resolve(\%name, $1); next }
    if (/^calls=(\d+)/) { $in_call = 1; $calls{$fn}{$cfn} += $sign * $1; next }
    if (/^(?:[+-]?\d+|\*)\s+(\d+)/) {
        if ($in_call) {
            $call{$fn}{$cfn} += $sign * $1;
            $in_call = 0;
        } else {
            $self{$fn} += $sign * $1;
            $total += $sign * $1;
        }
    }
}
}

# CG_MODULE (a regex) names the module's functions: the stream twin's are
# ngx_stream_ha_optout_* and they call the http module's
my $mod = qr/$ENV{CG_MODULE}/ if $ENV{CG_MODULE};
$mod //= qr/^ngx_http_ha_optout_/;
my $wrapped = qr/^ngx_(?:http|stream)_upstream_(?:init|get|free)_round_robin_peer$|_header_filter$|^0x/;
my (%own, $sum);
$sum = 0;

for my $f (grep { /$mod/ } keys %self) {
    my $c = $self{$f};
    for my $g (keys %{ $call{$f} || {} }) {
        next if $g =~ /$mod/ || $g =~ /$wrapped/;
        $c += $call{$f}{$g};
    }
    $own{$f} = $c;
    $sum += $c;
}

# entry points and their call counts, so one can see what ran per request
my %entry;
for my $f (keys %calls) {
    next if $f =~ /$mod/;
    for my $g (keys %{ $calls{$f} }) {
        $entry{$g} += $calls{$f}{$g} if $g =~ /$mod/;
    }
}

# the profile of the difference: the functions that cost most per request
my @top = sort { $self{$b} <=> $self{$a} } grep { $self{$_} > 0 } keys %self;
my $ntop = $ENV{CG_TOP} // 0;
for my $f (@top[0 .. ($ntop < @top ? $ntop : @top) - 1]) {
    printf "CGTOP case=%s fn=%s self_ir_per_req=%.1f\n", $case, $f,
        $self{$f} / $n;
}

# what the module's timer (ngx_http_ha_optout_tick, every 250 ms) costs
# between the two runs: it depends on how long they ran, not on requests
# (gcc may suffix a static function: .isra.0, .part.0, .constprop.0)
my $timer = qr/_ha_optout_(?:tick|windows_tick|approvals_tick|expire|sticky_sweep|state_restore|state_save|state_write|state_behind|persist_retry|tmp_sweep|sha256_hex|emit\w*|audit\w*|flag_json|json_out|writer_\w+)(?:\.\w+\.\d+)*$/;
my ($tsum, $ticks) = (0, 0);
$tsum += $own{$_} for grep { /$timer/ } keys %own;
for my $f (keys %calls) {
    $ticks += $calls{$f}{$_} for grep { /_ha_optout_windows_tick$/ } keys %{ $calls{$f} };
}

printf "CG case=%s requests=%d total_ir_per_req=%.1f module_ir_per_req=%.1f timer_ir_per_req=%.1f ticks=%d\n",
    $case, $n, $total / $n, ($sum - $tsum) / $n, $tsum / $n, $ticks;
for my $f (sort { $own{$b} <=> $own{$a} } keys %own) {
    next unless $own{$f};
    printf "CGFN case=%s fn=%s ir_per_req=%.1f calls_per_req=%.2f\n",
        $case, $f, $own{$f} / $n, ($entry{$f} // 0) / $n;
}
