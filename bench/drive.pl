#!/usr/bin/perl
# bench/drive.pl PORT N: N GET / requests on one keep-alive connection,
# every other one with X-Forensic-Case (as bench/alternate.lua does).
# Used for the callgrind runs, where a fixed request count matters.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use BenchHttp;

my ($port, $n) = @ARGV;
my $s = BenchHttp::connect_to($port);
my $bad = 0;

for my $i (1 .. $n) {
    my $h = $i % 2 ? {} : { 'X-Forensic-Case' => 'INC-4211' };
    my $r = BenchHttp::request($s, 'GET', '/', $h);
    $bad++ unless ($r->{status} // 0) == 200;
}

print "drive: $n requests, $bad not 200\n";
exit($bad ? 1 : 0);
