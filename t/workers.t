#!/usr/bin/perl

# a flag set through one worker is obeyed by every worker at once.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

# reuseport: the kernel spreads fresh connections over both workers;
# no zone in the upstream, so only the module's own zone is shared

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

        add_header X-Worker $pid always;

        location / {
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

$t->run;

my $b2 = '127.0.0.1:' . $t->port('b2');

sub fifty {
    my ($tag) = @_;
    my (%worker, @r);
    for my $i (1 .. 50) {
        my $r = $t->get("/$tag/$i");
        $worker{ $r->{headers}{'x-worker'} // '-' }++;
        push @r, "$r->{status} " . ($r->{headers}{'x-backend'} // '-');
    }
    return (\%worker, @r);
}

###############################################################################

# nginx answers once the master listens, before it has forked every
# worker: wait for them rather than count at once
ok($t->wait_for(sub { $t->worker_pids == 2 }, 10), 'two workers run')
    or diag('workers: ' . join ' ', $t->worker_pids);

my $res = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b2, failover => JSON::PP::false, ttl => '5m',
    reason => 'every worker must obey' });
is($res->{status}, 200, 'flag set through one worker');

$t->reset_hits;

my ($w, @r) = fifty('pinned');
is(scalar(grep { $_ eq '200 b2' } @r), 50,
    'all 50 requests on fresh connections obey the pin') or diag "@r";
is($t->hits('b1'), 0, 'no worker sends anything to b1');
is(scalar(grep { $_ ne '-' } keys %$w), 2,
    'both workers served some of the requests')
    or diag explain $w;

# and a clear reaches every worker as fast

is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'flag cleared');

$t->reset_hits;

($w, @r) = fifty('cleared');
is(scalar(grep { /^200 b[12]$/ } @r), 50, 'all 50 served after the clear');
ok($t->hits('b1') >= 10, 'every worker balances again after the clear')
    or diag "@r";

# set and read back through alternating connections

for my $i (1 .. 5) {
    my $put = $t->api(PUT => 'v1/flags/app', json => {
        pin => $b2, ttl => '5m', reason => "round $i" });
    my $seen = 0;
    for (1 .. 6) {
        $seen++ if ($t->api(GET => 'v1/flags/app')->{json}{reason} // '')
            eq "round $i";
    }
    is($seen, 6, "round $i: every worker reads the newest flag at once");
}

###############################################################################

done_testing;
