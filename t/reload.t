#!/usr/bin/perl

# flags live in shared memory: nginx -s reload keeps them, and the new
# workers obey them.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $conf = <<'EOF';
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }

        location = /ha-status {
            ha_optout_status;
        }

        # RELOAD-MARKER
    }
}
EOF

$t->conf($conf)->run;

my $b2 = '127.0.0.1:' . $t->port('b2');

###############################################################################

my $used = $t->token;    # its jti is spent by this write
my $set = $t->api(PUT => 'v1/flags/app', token => $used, json => {
    pin => $b2, failover => JSON::PP::false, ttl => '10m',
    reason => 'hold b2 across a reload' });
is($set->{status}, 200, 'flag set before the reload');

my @r = $t->spray(4, sub { "/before/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @r), 4, 'pin acts before the reload');

# a real configuration change, so that nginx builds a new cycle

(my $changed = $conf) =~ s{# RELOAD-MARKER}
                          {location = /reloaded { return 200 "yes"; }};
$t->conf($changed);

ok($t->reload, 'nginx -s reload replaced every worker');
is($t->get('/reloaded')->{body}, 'yes', 'the new configuration is in effect');

my $replay = $t->api(PATCH => 'v1/flags/app', token => $used,
                     json => { ttl => '20m' });
is($replay->{status}, 401, 'the replay cache survives the reload: a token '
                         . 'spent before it is refused after it');

my $get = $t->api(GET => 'v1/flags/app');
is($get->{status}, 200, 'flag readable after the reload');
is($get->{json}{pin}, $b2, 'the pin survives the reload');
is($get->{json}{failover}, JSON::PP::false, 'failover=false survives the reload');
is($get->{json}{version}, $set->{json}{version},
    'the flag version is unchanged by the reload');
is($get->{json}{expires_at}, $set->{json}{expires_at},
    'the flag expiry is unchanged by the reload');
is($get->{json}{actor}, 'alice', 'the actor survives the reload');

$t->reset_hits;

@r = $t->spray(10, sub { "/after/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @r), 10,
    'new workers obey the pin set before the reload') or diag "@r";
is($t->hits('b1'), 0, 'b1 sees nothing after the reload');

is($t->status->{upstreams}{app}{flag}{pin}, $b2,
    'status shows the flag after the reload');

# and a second reload with a clear in between

is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'flag cleared');
ok($t->reload, 'second reload');

$get = $t->api(GET => 'v1/flags/app');
ok($get->{is_json} && !defined $get->{json},
    'a cleared flag does not come back after a reload');

$t->reset_hits;
$t->spray(6, sub { "/cleared/$_[0]" });
ok($t->hits('b1') > 0, 'traffic is balanced again after clear and reload');

###############################################################################

done_testing;
