#!/usr/bin/perl

# replication=false: the mirror target guarded by ha_optout_mirror_gate
# answers 204 at once; the shadow gets no copies while main traffic flows.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('shadow');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    log_format sub '$uri $status';

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        log_subrequest on;
        access_log %%TESTDIR%%/access.log sub;

        location / {
            proxy_pass http://app;
            mirror /shadow;
        }

        location = /shadow {
            internal;
            ha_optout_mirror_gate app;
            proxy_pass http://127.0.0.1:%%PORT_shadow%%;
        }

        # the same gate, reachable directly, to see its answer
        location = /gate {
            ha_optout_mirror_gate app;
            proxy_pass http://127.0.0.1:%%PORT_shadow%%;
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

sub shadow_log { scalar grep { m{^/shadow $_[0]$} }
                     split /\n/, $t->read_file('access.log') }

###############################################################################

# replication on: every request is copied to the shadow

my @r = $t->spray(5, sub { "/on/$_[0]" });
is(scalar(grep { $_ eq '200 b1' } @r), 5, 'main traffic is served');
ok($t->wait_for(sub { $t->hits('shadow') >= 5 }, 3),
    'with replication on, the shadow gets a copy of each request');

my $r = $t->get('/gate');
is($r->{status}, 200, 'with replication on, the gate passes to the shadow');
is($r->{headers}{'x-backend'}, 'shadow', 'gate passes to the shadow itself');

# replication off

my $res = $t->api(PUT => 'v1/flags/app', json => {
    replication => JSON::PP::false, ttl => '5m',
    reason => 'schema migration' });

is($res->{status}, 200, 'replication=false accepted');
is($res->{json}{replication}, JSON::PP::false,
    'stored flag has replication false');
is($res->{json}{failover}, JSON::PP::true, 'failover stays on');

$t->reset_hits;

@r = $t->spray(5, sub { "/off/$_[0]" });
is(scalar(grep { $_ eq '200 b1' } @r), 5,
    'with replication off, main traffic is still served') or diag "@r";

$r = $t->get('/gate');
is($r->{status}, 204, 'with replication off, the gate answers 204');
is($r->{body}, '', 'the 204 has no body');

# every mirror subrequest is logged once answered: after that, a copy that
# reached the shadow would be in its hit log (no guessed sleep)
ok($t->wait_for(sub { shadow_log(204) >= 5 }, 5),
    'mirror subrequests are answered 204 by the gate')
    or diag $t->read_file('access.log');
is($t->hits('shadow'), 0, 'with replication off, the shadow gets nothing');

ok($t->wait_for(sub { grep { m{^/off/\d+ 200$} }
                          split /\n/, $t->read_file('access.log') }, 2),
    'with replication off, mirrored requests complete and are logged');

my ($raw, $closed) = $t->raw("GET /off/raw HTTP/1.0\r\n\r\n");
like($raw, qr{^HTTP/1.1 200.*\r\n\r\nb1\z}s,
    'HTTP/1.0 request answered by b1 with replication off');
ok($closed, 'nginx closes the connection after the response (no stuck '
    . 'mirror subrequest)');

ok(($t->status->{upstreams}{app}{replication_bypassed} // 0) >= 5,
    'status counts the bypassed copies');

# replication back on

is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'replication restored');

$t->reset_hits;

@r = $t->spray(3, sub { "/back/$_[0]" });
ok($t->wait_for(sub { $t->hits('shadow') >= 3 }, 3),
    'after restore, the shadow gets copies again');

###############################################################################

done_testing;
