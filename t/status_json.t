#!/usr/bin/perl

# ha_optout_status, JSON (the default): every field of SPEC section 6 with
# its type, counters that move with traffic, and the three layers.

use strict;
use warnings;

use B ();
use Test::More;
use JSON::PP ();
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->dead_port('dead');
$t->backend('good');
$t->backend('spare');
$t->backend('r1');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_environment staging;

    ha_optout_flag reporting failover=off "reason=nightly batch window";

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_dead%% max_fails=0;
        server 127.0.0.1:%%PORT_good%% max_fails=0;
        server 127.0.0.1:%%PORT_spare%% backup;
        ha_optout;
    }

    upstream reporting {
        server 127.0.0.1:%%PORT_r1%%;
        server 127.0.0.1:%%PORT_good%% down;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        proxy_next_upstream error timeout;

        location /app/ {
            proxy_pass http://app;
        }

        location = /gate {
            ha_optout_mirror_gate app;
            proxy_pass http://app;
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

my $dead = '127.0.0.1:' . $t->port('dead');
my $good = '127.0.0.1:' . $t->port('good');
my $spare = '127.0.0.1:' . $t->port('spare');

# JSON::PP keeps integers as integers: a string "3" is not a count
sub is_int {
    my ($v) = @_;
    return defined $v && !ref $v
        && B::svref_2object(\$v)->FLAGS & (B::SVp_IOK | B::SVp_NOK)
        && !(B::svref_2object(\$v)->FLAGS & B::SVp_POK)
        && $v =~ /^\d+$/;
}

sub is_str { defined $_[0] && !ref $_[0] && !is_int($_[0]) }
sub is_bool { JSON::PP::is_bool($_[0]) }
sub is_obj { ref $_[0] eq 'HASH' }

sub server {
    my ($s, $up, $addr) = @_;
    my ($v) = grep { $_->{address} eq $addr }
              @{ $s->{upstreams}{$up}{servers} // [] };
    return $v // {};
}

###############################################################################

my $r = $t->get('/ha-status');

is($r->{status}, 200, 'status answers 200');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON by default');
is($r->{headers}{'cache-control'}, 'no-store', 'status is never cached');
ok($r->{is_json} && is_obj($r->{json}), 'body is a JSON object');

my $s = $r->{json};

is($s->{environment}, 'staging', 'environment names the deployment');
like($s->{nginx_version}, qr/^\d+\.\d+\.\d+$/, 'nginx_version is x.y.z');
is($s->{module_version}, '0.1.0', 'module_version is the module release');
like($s->{generated_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
    'generated_at is RFC 3339 UTC');
is_deeply([ sort keys %{ $s->{upstreams} } ], [ 'app', 'reporting' ],
    'every upstream with ha_optout is listed, and only those');

for my $name (qw(app reporting)) {
    my $u = $s->{upstreams}{$name};

    is_deeply([ sort keys %$u ],
        [ qw(approvers failover_suppressed flag layers next_window
             pending_approvals pinned_requests protected replication_bypassed
             restore servers since_flag sticky_entries) ],
        "$name: the fields of an upstream");
    is_deeply($u->{pending_approvals}, [],
              "$name: no pending approvals (SPEC 10)");
    is($u->{approvers}, 0, "$name: no approvers in the policy (SPEC 10)");
    is_deeply([ sort keys %{ $u->{layers} } ],
        [ qw(api config fleet window) ],
        "$name: layers api, fleet, window and config");
    ok(is_int($u->{$_}), "$name: $_ is an integer")
        for qw(failover_suppressed pinned_requests replication_bypassed
               sticky_entries);
    is(ref $u->{servers}, 'ARRAY', "$name: servers is a list");

    for my $srv (@{ $u->{servers} }) {
        is_deeply([ sort keys %$srv ],
            [ qw(address backup down fail_timeout failed fails max_fails
                 pinned) ],
            "$name: server $srv->{address} has its fields");
        ok(is_str($srv->{address}), "$name: address is a string");
        ok(is_bool($srv->{$_}), "$name: $_ is a boolean")
            for qw(backup down failed pinned);
        ok(is_int($srv->{fails}), "$name: fails is an integer");
    }
}

my $app = $s->{upstreams}{app};

ok(!defined $app->{flag}, 'app without a flag: flag is null');
ok(!defined $app->{layers}{$_}, "app without a flag: $_ layer is null")
    for qw(api fleet window config);
is(scalar @{ $app->{servers} }, 3, 'app lists its three servers');
ok(!server($s, 'app', $dead)->{backup}, 'a primary is not backup');
ok(server($s, 'app', $spare)->{backup}, 'the backup server is marked backup');
ok(!grep({ $_->{pinned} } @{ $app->{servers} }), 'nothing pinned');
is($app->{$_}, 0, "app $_ starts at 0")
    for qw(failover_suppressed pinned_requests replication_bypassed
           sticky_entries);

ok(server($s, 'reporting', $good)->{down}, 'a static down server is down');

# the config flag shows as the config layer, and it acts

my $rep = $s->{upstreams}{reporting};

is($rep->{flag}{source}, 'config', 'config flag acts on reporting');
is($rep->{flag}{reason}, 'nightly batch window', 'config flag reason');
ok(is_bool($rep->{flag}{failover}) && !$rep->{flag}{failover},
    'config flag has failover false');
is($rep->{layers}{config}{reason}, 'nightly batch window',
    'config layer shows the ha_optout_flag line');
ok(!defined $rep->{layers}{api}, 'no api layer on reporting yet');
ok(!defined $rep->{layers}{window}, 'no window layer on reporting');
ok(!defined $rep->{flag}{expires_at}, 'config flag has no expiry');

# an API flag lies over the config flag: both layers show, the api acts

$r = $t->api(PUT => 'v1/flags/reporting', json => {
    pin => '127.0.0.1:' . $t->port('r1'), ttl => '10m',
    reason => 'INC-9 inspect r1' });
is($r->{status}, 200, 'api flag set on reporting');

$rep = $t->status->{upstreams}{reporting};
is($rep->{flag}{source}, 'api', 'api flag wins over the config flag');
is($rep->{layers}{api}{reason}, 'INC-9 inspect r1', 'api layer shows');
is($rep->{layers}{config}{reason}, 'nightly batch window',
    'config layer still shows beneath');
is($rep->{flag}{actor}, 'alice', 'acting flag names who set it');
like($rep->{flag}{expires_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
    'api flag shows when it expires');

$t->api(DELETE => 'v1/flags/reporting');
$rep = $t->status->{upstreams}{reporting};
is($rep->{flag}{source}, 'config', 'DELETE reveals the config flag again');
ok(!defined $rep->{layers}{api}, 'api layer is null after DELETE');

# a pinned request moves pinned_requests and marks the server

$r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $good, ttl => '5m', reason => 'INC-10 pin good' });
is($r->{status}, 200, 'pin set on app');

my @r = $t->spray(5, sub { "/app/pinned/$_[0]" });
is(scalar(grep { $_ eq '200 good' } @r), 5, 'pinned requests reach good')
    or diag "@r";

$s = $t->status;
$app = $s->{upstreams}{app};
is($app->{pinned_requests}, 5, 'pinned_requests counts every pinned request');
ok(server($s, 'app', $good)->{pinned}, 'the pinned server is marked pinned');
ok(!server($s, 'app', $dead)->{pinned}, 'other servers are not pinned');
is($app->{flag}{pin}, $good, 'flag shows the pin');
is($app->{layers}{api}{pin}, $good, 'api layer shows the pin');

# failover off: a request that would have failed over is counted

$r = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '5m', reason => 'INC-11 no failover'
});
is($r->{status}, 200, 'failover off set on app');

@r = $t->spray(6, sub { "/app/nofail/$_[0]" });
my $errors = grep { /^502 / } @r;
ok($errors > 0, 'the dead server\'s errors reach the client') or diag "@r";

$s = $t->status;
$app = $s->{upstreams}{app};
is($app->{failover_suppressed}, $errors,
    'failover_suppressed counts each failover that would have happened');
ok(!grep({ $_->{pinned} } @{ $app->{servers} }),
    'no server is pinned under failover off');
ok(is_bool($app->{flag}{failover}) && !$app->{flag}{failover},
    'flag shows failover false');
is($app->{pinned_requests}, 5, 'pinned_requests stays put');

# replication off: the gate's 204 is counted

$r = $t->api(PUT => 'v1/flags/app', json => {
    replication => JSON::PP::false, ttl => '5m', reason => 'INC-12' });
is($t->get('/gate')->{status}, 204, 'gate answers 204 under replication off');
is($t->status->{upstreams}{app}{replication_bypassed}, 1,
    'replication_bypassed counts the bypassed copy');

# DELETE: HA back, counters kept

$t->api(DELETE => 'v1/flags/app');
$app = $t->status->{upstreams}{app};
ok(!defined $app->{flag}, 'after DELETE app has no flag');
ok(!defined $app->{layers}{api}, 'after DELETE the api layer is null');
is($app->{failover_suppressed}, $errors, 'counters survive the DELETE');

# content negotiation and errors stay JSON

is($t->get('/ha-status?format=json')->{headers}{'content-type'},
    'application/json', '?format=json is JSON');
$r = $t->get('/ha-status', headers => { Accept => 'application/json' });
ok($r->{is_json}, 'Accept: application/json gets JSON');
$r = $t->get('/ha-status', headers => { Accept => '*/*' });
ok($r->{is_json}, 'Accept: */* (curl) gets JSON');

$r = $t->get('/ha-status?format=xml');
is($r->{status}, 400, 'an unknown format is refused');
is($r->{json}{error}{code}, 'InvalidFormat', 'with a JSON error');

$r = $t->http('POST', '/ha-status', body => 'x');
is($r->{status}, 405, 'status is read-only');
is($r->{headers}{allow}, 'GET, HEAD', 'and says what it allows');

$r = $t->http('HEAD', '/ha-status');
is($r->{status}, 200, 'HEAD answers');
is($r->{body}, '', 'HEAD has no body');

###############################################################################

done_testing;
