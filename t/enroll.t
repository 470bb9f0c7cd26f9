#!/usr/bin/perl

# an upstream that a config flag (or a mirror gate) names, but that has no
# "ha_optout" line of its own, is enrolled as if it had one: the flag acts,
# the API and the status page know the upstream.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('bad', status => 503);
$t->backend('good');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    ha_optout_flag reporting failover=off "reason=nightly batch window";

    upstream reporting {
        least_conn;
        server 127.0.0.1:%%PORT_bad%%;
        server 127.0.0.1:%%PORT_good%%;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://reporting;
            proxy_next_upstream error http_503;
            ha_optout_header on;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

$t->run;

my @r = $t->spray(8, '/');
ok((grep { $_ eq '503 bad' } @r) > 0,
   'the config flag acts: the 503 of the bad server reaches the client')
    or diag "@r";
is(scalar(grep { $_ ne '503 bad' && $_ ne '200 good' } @r), 0,
   'each request gets its own server\'s answer, never a retried one')
    or diag "@r";
ok($t->hits('bad') + $t->hits('good') == 8,
   'one try per request: no failover') or diag "@r";

my $flags = $t->api(GET => 'v1/flags')->{json};
ok(exists $flags->{reporting}, 'GET v1/flags lists the enrolled upstream');
is($flags->{reporting}{source}, 'config', 'with its config flag');
is($flags->{reporting}{reason}, 'nightly batch window', 'and its reason');

my $h = $t->get('/')->{headers}{'x-ha-optout'};
is($h, 'failover=off', 'X-HA-Optout names the suspension');

my $st = $t->status;
ok($st->{upstreams}{reporting}{failover_suppressed} > 0,
   'status counts the suppressed failovers');

# the API can change it as any other upstream

my $good = '127.0.0.1:' . $t->port('good');
my $r = $t->api(PUT => 'v1/flags/reporting', json => {
    pin => $good, ttl => '5m', reason => 'hold on good' });
is($r->{status}, 200, 'an API flag on the enrolled upstream');
is_deeply([ $t->spray(4, '/') ], [ ('200 good') x 4 ], 'and it acts');

like($t->error_log, qr/"reporting" has no "ha_optout" line; enrolled/,
     'the enrolment is logged at startup');

done_testing();
