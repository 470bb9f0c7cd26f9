#!/usr/bin/perl
# bench/cgdiff.pl base.out full.out N [REGEX]
#
# The per-request profile of the difference of two callgrind runs (see
# bench/cgsum.pl): self and inclusive Ir/request of each function, and of
# each call from a function matching REGEX (default: the module's), to see
# where a case's instructions go.  SCALE_KEEP_BASE=1 bench/scale.sh keeps
# both runs of each case.

use strict;
use warnings;

my ($bf, $ff, $n, $re) = @ARGV;
$re //= "_ha_optout_";
$re = qr/$re/;

my (%self, %incl, %call, %calls);

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
    open my $fh, '<', $i ? $ff : $bf or die "$!\n";
    while (<$fh>) {
        chomp;
        if (/^fn=(.*)$/) { $fn = resolve(\%name, $1); $in_call = 0; next }
        if (/^cfn=(.*)$/) { $cfn = resolve(\%name, $1); next }
        if (/^calls=(\d+)/) { $in_call = 1; $calls{$fn}{$cfn} += $sign * $1; next }
        if (/^(?:[+-]?\d+|\*)\s+(\d+)/) {
            if ($in_call) {
                $call{$fn}{$cfn} += $sign * $1;
                $incl{$fn} += $sign * $1 unless $fn eq $cfn;
                $in_call = 0;
            } else {
                $self{$fn} += $sign * $1;
                $incl{$fn} += $sign * $1;
            }
        }
    }
}

my $total = 0;
$total += $_ for values %self;
printf "total %.1f Ir/request\n\n", $total / $n;
printf "%-50s %9s %9s\n", "function (top 40 by self)", "self", "incl";
my @f = sort { $self{$b} <=> $self{$a} } keys %self;
for my $f (@f[0 .. 39]) {
    last unless defined $f;
    printf "%-50s %9.1f %9.1f\n", substr($f, 0, 50), $self{$f} / $n,
        ($incl{$f} // 0) / $n;
}
print "\n";
for my $f (sort { ($incl{$b} // 0) <=> ($incl{$a} // 0) } grep { /$re/ } keys %self) {
    next unless $incl{$f};
    printf "%s: self %.1f incl %.1f\n", $f, $self{$f} / $n, $incl{$f} / $n;
    for my $g (sort { $call{$f}{$b} <=> $call{$f}{$a} } keys %{ $call{$f} }) {
        next unless $call{$f}{$g};
        printf "    -> %-44s %8.1f  calls %.2f\n", $g, $call{$f}{$g} / $n,
            ($calls{$f}{$g} // 0) / $n;
    }
}
