#!/usr/bin/perl

# The C unit test of ha-optoutctl's helpers (t/unit/cli_test.c, with
# AddressSanitizer and LeakSanitizer where the compiler has them), run as
# part of the suite: what the CLI wipes and frees when loading its
# --trust-key files fails, and the etcd range of an empty prefix.

use strict;
use warnings;

use Test::More;
use File::Temp qw(tempdir);
use FindBin;

my $build = tempdir('ha-optout-cliunit-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $out = `make -s -f $FindBin::Bin/unit/cli.mk check BUILD=$build 2>&1`;
my $rc = $? >> 8;

my @not_ok = grep { /^not ok/ } split /\n/, $out;
my $ok = () = $out =~ /^ok /mg;
my ($plan) = $out =~ /^1\.\.(\d+)$/m;

ok($plan && $ok == $plan, "cli unit test ran its cases ($ok of "
   . ($plan // '?') . ' passed)') or diag $out;
is(scalar @not_ok, 0, 'no cli unit case fails') or diag join "\n", @not_ok;
is($rc, 0, 'cli unit test exits 0 (no sanitizer report)') or diag $out;

done_testing();
