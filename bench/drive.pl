#!/usr/bin/perl
# bench/drive.pl PORT N [CLIENTS [OFFSET]]: N GET / requests on one
# keep-alive connection, every other one with X-Forensic-Case (as
# bench/alternate.lua does).  With CLIENTS, request i also carries
# "X-Client: c<(i + OFFSET) % CLIENTS>" (bench/scale.sh: distinct sticky or
# hash keys without distinct source addresses).
# Used for the callgrind runs, where a fixed request count matters.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use BenchHttp;

my ($port, $n, $clients, $off) = @ARGV;
$off //= 0;
my $s = BenchHttp::connect_to($port);
my $bad = 0;

for my $i (1 .. $n) {
    my $h = $i % 2 ? {} : { 'X-Forensic-Case' => 'INC-4211' };
    $h->{'X-Client'} = 'c' . (($i + $off) % $clients) if $clients;
    my $r = BenchHttp::request($s, 'GET', '/', $h);
    $bad++ unless ($r->{status} // 0) == 200;
}

print "drive: $n requests, $bad not 200\n";
exit($bad ? 1 : 0);
