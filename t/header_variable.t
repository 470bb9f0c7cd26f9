#!/usr/bin/perl

# X-HA-Optout response header (ha_optout_header on) and the
# $ha_optout_<upstream> variable: empty while HA is on, the flag's short
# text while it is off.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    log_format ha '$uri ha=[$ha_optout_app]';
    access_log %%TESTDIR%%/access.log ha;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream other {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            ha_optout_header on;
            add_header X-Var "[$ha_optout_app]" always;
        }

        location /quiet/ {
            proxy_pass http://app;
            add_header X-Var "[$ha_optout_app]" always;
        }

        location /other/ {
            proxy_pass http://other;
            ha_optout_header on;
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
my $text = "failover=off; pin=$b2";

sub logged {
    my ($uri) = @_;
    my $line;
    $t->wait_for(sub {
        ($line) = grep { /^\Q$uri\E / } split /\n/, $t->read_file('access.log');
        defined $line;
    }, 2);
    return $line // '';
}

###############################################################################

# HA on

my $r = $t->get('/on');
is($r->{status}, 200, 'served with HA on');
ok(!exists $r->{headers}{'x-ha-optout'}, 'no X-HA-Optout header with HA on');
is($r->{headers}{'x-var'}, '[]', '$ha_optout_app is empty with HA on');
is(logged('/on'), '/on ha=[]', '$ha_optout_app logs empty with HA on');

# HA off

my $res = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, pin => $b2, ttl => '5m',
    reason => 'header test' });
is($res->{status}, 200, 'flag set');

$r = $t->get('/off');
is($r->{headers}{'x-backend'}, 'b2', 'pinned request served by b2');
is($r->{headers}{'x-ha-optout'}, $text,
    'X-HA-Optout tells the client HA is off and where it is pinned');
is($r->{headers}{'x-var'}, "[$text]",
    '$ha_optout_app carries the same text as the header');
is(logged('/off'), "/off ha=[$text]", '$ha_optout_app is logged');

$r = $t->get('/quiet/x');
ok(!exists $r->{headers}{'x-ha-optout'},
    'no X-HA-Optout header where ha_optout_header is off');
is($r->{headers}{'x-var'}, "[$text]",
    'the variable works without ha_optout_header');

$r = $t->get('/other/x');
is($r->{status}, 200, 'another upstream is served');
ok(!exists $r->{headers}{'x-ha-optout'},
    'no X-HA-Optout header for an upstream without a flag');

# an error response carries the header too

$t->backend_set_status('b2', 503);
$r = $t->get('/failing');
is($r->{status}, 503, 'the pinned node fails');
is($r->{headers}{'x-ha-optout'}, $text,
    'X-HA-Optout is on error responses too');
$t->backend_set_status('b2', 200);

# replication only

$res = $t->api(PUT => 'v1/flags/app', json => {
    replication => JSON::PP::false, ttl => '5m', reason => 'migration' });
is($res->{status}, 200, 'flag replaced');

$r = $t->get('/replication');
is($r->{headers}{'x-ha-optout'}, 'replication=off',
    'X-HA-Optout shows replication=off');

# HA back on

is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'flag cleared');

$r = $t->get('/cleared');
ok(!exists $r->{headers}{'x-ha-optout'}, 'no X-HA-Optout header after clear');
is($r->{headers}{'x-var'}, '[]', '$ha_optout_app is empty after clear');

###############################################################################

done_testing;
