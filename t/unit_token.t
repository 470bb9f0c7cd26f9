#!/usr/bin/perl

# The C unit test of JWT verification (t/unit/token_test.c, with
# AddressSanitizer where the compiler has it), run as part of the suite.

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use FindBin;

my $build = tempdir('ha-optout-unit-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $out = `make -s -C $FindBin::Bin/unit check BUILD=$build 2>&1`;
my $rc = $? >> 8;

my @not_ok = grep { /^not ok/ } split /\n/, $out;
my $ok = () = $out =~ /^ok /mg;

ok($ok > 50, "token unit test ran its cases ($ok passed)") or diag $out;
is(scalar @not_ok, 0, 'no token unit case fails') or diag join "\n", @not_ok;
is($rc, 0, 'token unit test exits 0') or diag $out;

done_testing();
