#!/usr/bin/perl

# pin: hold all traffic of an upstream on one server, even a degraded or
# ejected one, for forensic inspection.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->backend('b3');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_b1%% max_fails=1 fail_timeout=30s;
        server 127.0.0.1:%%PORT_b2%%;
        server 127.0.0.1:%%PORT_b3%% backup;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            proxy_next_upstream error timeout http_503;
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

my $b1 = '127.0.0.1:' . $t->port('b1');
my $b3 = '127.0.0.1:' . $t->port('b3');

sub count { my ($re, @r) = @_; scalar grep { $_ =~ $re } @r }

###############################################################################

# without a flag, both primaries serve and the backup stays idle

my @r = $t->spray(10, sub { "/healthy/$_[0]" });
is(count(qr/^200 /, @r), 10, 'healthy upstream answers every request');
ok($t->hits('b1') > 0 && $t->hits('b2') > 0,
    'requests are balanced over both primaries');
is($t->hits('b3'), 0, 'backup is idle while primaries are up');

# b1 degrades: nginx ejects it after one failure and fails over to b2

$t->backend_set_status('b1', 503);
$t->reset_hits;

@r = $t->spray(6, sub { "/degraded/$_[0]" });
is(count(qr/^200 b2$/, @r), 6, 'degraded b1 is routed around by failover')
    or diag "@r";
is($t->hits('b1'), 1, 'b1 is ejected after its first failure');

# pin the ejected node

my $res = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, ttl => '5m', reason => 'INC-1 hold degraded node' });

is($res->{status}, 200, 'pin accepted');
is($res->{json}{pin}, $b1, 'stored flag names the pinned server');
is($res->{json}{upstream}, 'app', 'stored flag names the upstream');
is($res->{json}{source}, 'api', 'stored flag source is api');
is($res->{json}{actor}, 'alice', 'stored flag actor is the token subject');
is($res->{json}{reason}, 'INC-1 hold degraded node', 'stored flag reason');
like($res->{json}{version} // '', qr/^\d+$/, 'stored flag has a version');
is($res->{headers}{etag}, qq{"$res->{json}{version}"},
    'ETag carries the version');
like($res->{json}{expires_at} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
    'stored flag has an expiry');

$t->reset_hits;

@r = $t->spray(10, sub { "/pinned/$_[0]" });
is(count(qr/^503 b1$/, @r), 10,
    'pin holds traffic on the degraded, ejected node') or diag "@r";
is($t->hits('b1'), 10, 'pinned node sees every request');
is($t->hits('b2'), 0, 'pinned requests never fail over to another primary');
is($t->hits('b3'), 0, 'pinned requests never reach the backup');

my $s = $t->status;
ok(($s->{upstreams}{app}{pinned_requests} // 0) >= 10,
    'status counts pinned requests');
my ($srv) = grep { $_->{address} eq $b1 }
    @{ $s->{upstreams}{app}{servers} // [] };
ok($srv && $srv->{pinned}, 'status marks the pinned server');
is($s->{upstreams}{app}{flag}{pin}, $b1, 'status shows the acting pin');

is($t->api(GET => 'v1/flags/app')->{json}{pin}, $b1,
    'GET shows the acting pin');

# a backup server may be pinned

$res = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b3, ttl => '5m', reason => 'INC-2 inspect the backup' });
is($res->{status}, 200, 'pin to the backup accepted');

$t->reset_hits;

@r = $t->spray(6, sub { "/backup/$_[0]" });
is(count(qr/^200 b3$/, @r), 6, 'pin to the backup sends traffic there')
    or diag "@r";
is($t->hits('b1') + $t->hits('b2'), 0, 'primaries see nothing');

# clearing the pin restores normal balancing (b1 still ejected and failing)

$res = $t->api(DELETE => 'v1/flags/app');
is($res->{status}, 200, 'pin cleared');
ok($res->{is_json} && !defined $res->{json},
    'DELETE answers the acting flag: none left');
$res = $t->api(GET => 'v1/flags/app');
ok($res->{is_json} && !defined $res->{json}, 'GET shows no flag');

$t->reset_hits;

@r = $t->spray(6, sub { "/cleared/$_[0]" });
is(count(qr/^200 b2$/, @r), 6, 'after clear, failover routes around b1')
    or diag "@r";
is($t->hits('b3'), 0, 'after clear, backup is idle again');

###############################################################################

done_testing;
