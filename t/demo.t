#!/usr/bin/perl

# make demo works: demo/run.sh --check starts the demo nginx, pins the
# degraded backend, watches status, restores, and stops everything again.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Time::HiRes qw(time);

my $root = abs_path(dirname(__FILE__) . '/..');

plan skip_all => 'module or CLI not built (make)'
    unless -f ($ENV{HA_OPTOUT_MODULE} // "$root/build/ngx_http_ha_optout_module.so")
        && -x "$root/build/ha-optoutctl";

my $start = time;
my $out = '';

my $pid = open(my $fh, '-|') // die "fork: $!\n";

if ($pid == 0) {
    open STDERR, '>&', \*STDOUT;
    exec "$root/demo/run.sh", '--check' or exit 127;
}

eval {
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 30;
    $out .= $_ while <$fh>;
    alarm 0;
};

if ($@) {
    kill 'TERM', $pid;
    fail('demo --check finishes within 30 s');
}

close $fh;
my $rc = $? >> 8;

# every step of the tour is one assertion here, in the demo's own words
for my $line (split /\n/, $out) {
    if ($line =~ /^ok   - (.*)/) {
        pass("demo: $1");
    } elsif ($line =~ /^FAIL - (.*)/) {
        fail("demo: $1");
    }
}

is($rc, 0, 'demo/run.sh --check exits 0') or diag($out);
cmp_ok(time - $start, '<', 20, 'the demo check takes less than 20 s');

unlike($out, qr/directory kept/, 'the demo removes its directory after a '
       . 'successful check');

done_testing;
