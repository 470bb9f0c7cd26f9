#!/usr/bin/perl

# failover=false: a failed request is not retried on another server, not
# sent to the backup; the error reaches the client and is counted.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('bad', status => 503);
$t->backend('good');
$t->backend('spare');
$t->dead_port('dead');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_bad%% max_fails=0;
        server 127.0.0.1:%%PORT_good%% max_fails=0;
        server 127.0.0.1:%%PORT_spare%% backup;
        ha_optout;
    }

    upstream gone {
        zone gone 64k;
        server 127.0.0.1:%%PORT_dead%% max_fails=0;
        server 127.0.0.1:%%PORT_good%% max_fails=0;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        proxy_next_upstream error timeout http_503;

        location /app/ {
            proxy_pass http://app;
        }

        location /gone/ {
            proxy_pass http://gone;
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

sub count { my ($re, @r) = @_; scalar grep { $_ =~ $re } @r }

sub total { my $n = 0; $n += $t->hits($_) for @_; $n }

###############################################################################

# the setup fails over: every request succeeds although "bad" answers 503

my @r = $t->spray(10, sub { "/app/$_[0]" });
is(count(qr/^200 good$/, @r), 10, 'with HA on, 503s are retried on good')
    or diag "@r";
ok($t->hits('bad') > 0, 'with HA on, bad is tried (and failed over from)');

sub fails {
    my ($up, $name) = @_;
    my $addr = '127.0.0.1:' . $t->port($name);
    my ($srv) = grep { $_->{address} eq $addr }
        @{ $t->status->{upstreams}{$up}{servers} // [] };
    return $srv ? $srv->{fails} : undef;
}

my $fails = fails('app', 'bad');
ok(defined $fails && $fails > 0, 'with HA on, failures of bad are counted');

# HA off

my $res = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '5m',
    reason => 'chaos drill: let errors through' });

is($res->{status}, 200, 'failover=false accepted');
is($res->{json}{failover}, JSON::PP::false, 'stored flag has failover false');
ok(!defined $res->{json}{pin}, 'stored flag has no pin');
is($res->{json}{replication}, JSON::PP::true, 'replication stays on');

$t->reset_hits;

@r = $t->spray(10, sub { "/app/$_[0]" });
my $errors = count(qr/^503 /, @r);
ok($errors > 0, 'with failover off, the 503 of bad reaches the client')
    or diag "@r";
is(count(qr/^503 bad$/, @r), $errors, 'every 503 comes from bad itself');
is(count(qr/^200 good$/, @r), 10 - $errors, 'the rest is served by good');
is($t->hits('bad'), $errors, 'bad saw exactly the requests that failed');
is($t->hits('good'), 10 - $errors,
    'failed requests were not retried on good');
is($t->hits('spare'), 0, 'the backup is never used');

my $s = $t->status;
ok(($s->{upstreams}{app}{failover_suppressed} // 0) > 0,
    'status counts the suppressed failovers')
    or diag explain $s->{upstreams}{app};
is($s->{upstreams}{app}{flag}{failover}, JSON::PP::false,
    'status shows the acting flag');
is(fails('app', 'bad'), $fails,
    'errors while failover is off do not count toward max_fails');

my $bad = '127.0.0.1:' . $t->port('bad');
like($t->error_log, qr/\[warn\].*would have failed over.*\Q$bad\E/,
    'error_log says the 503 of bad would have failed over');

# all primaries down: no switch to the backup

$t->backend_set_status('good', 503);
$t->reset_hits;

@r = $t->spray(6, sub { "/app/down/$_[0]" });
is(count(qr/^503 /, @r), 6, 'with failover off, an all-down upstream errors')
    or diag "@r";
is(total('bad', 'good'), 6, 'each request tried exactly one server');
is($t->hits('spare'), 0, 'no switch to the backup while failover is off');

# restore HA: the backup takes over again

is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'failover restored');

$t->reset_hits;

@r = $t->spray(4, sub { "/app/restored/$_[0]" });
is(count(qr/^200 spare$/, @r), 4, 'after restore, the backup takes over')
    or diag "@r";

$t->backend_set_status('good', 200);

###############################################################################

# a dead server: connection refused becomes a 502 for the client

$t->reset_hits;

@r = $t->spray(6, sub { "/gone/$_[0]" });
is(count(qr/^200 good$/, @r), 6, 'with HA on, a dead server is routed around')
    or diag "@r";

$res = $t->api(PUT => 'v1/flags/gone', json => {
    failover => JSON::PP::false, ttl => '5m',
    reason => 'see the dead node fail' });
is($res->{status}, 200, 'failover=false on gone accepted');

$t->reset_hits;

@r = $t->spray(10, sub { "/gone/$_[0]" });
$errors = count(qr/^502 /, @r);
ok($errors > 0, 'with failover off, the dead server gives the client a 502')
    or diag "@r";
is($t->hits('good'), 10 - $errors,
    'requests to the dead server were not retried on good');
ok(($t->status->{upstreams}{gone}{failover_suppressed} // 0) > 0,
    'status counts the suppressed failovers of gone');
my $dead = '127.0.0.1:' . $t->port('dead');
like($t->error_log, qr/\[warn\].*would have failed over.*\Q$dead\E/,
    'error_log says the dead server would have failed over');

is($t->api(GET => 'v1/flags/app')->{body} =~ /^null\s*$/ ? 1 : 0, 1,
    'the flag of one upstream leaves the others alone');

###############################################################################

done_testing;
