#!/usr/bin/perl

# admin API, the happy paths: the stored flag's shape, replace, PATCH,
# If-Match, dry_run, DELETE revealing the config flag, whoami, audit.

use strict;
use warnings;

use Test::More;
use Time::Local qw(timegm);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->backend('bad', status => 503);
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_environment testing;

    ha_optout_flag reporting failover=off "reason=nightly batch window";

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream reporting {
        zone reporting 64k;
        server 127.0.0.1:%%PORT_bad%% max_fails=0;
        server 127.0.0.1:%%PORT_b2%% max_fails=0;
        ha_optout;
    }

    upstream plain {
        server 127.0.0.1:%%PORT_b1%%;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        proxy_next_upstream error timeout http_503;

        location /app/ {
            proxy_pass http://app;
        }

        location /reporting/ {
            proxy_pass http://reporting;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

$t->run;

my $b1 = '127.0.0.1:' . $t->port('b1');
my $b2 = '127.0.0.1:' . $t->port('b2');

sub epoch {
    my ($s) = @_;
    return -1 unless ($s // '') =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$/;
    return timegm($6, $5, $4, $3, $2 - 1, $1);
}

sub is_null { my ($r) = @_; $r->{is_json} && !defined $r->{json} }

###############################################################################

# the list: every upstream with ha_optout, and only those

my $all = $t->api(GET => 'v1/flags');
is($all->{status}, 200, 'GET v1/flags answers');
is(join(',', sort keys %{ $all->{json} // {} }), 'app,reporting',
    'GET v1/flags lists every upstream with ha_optout, and only those');
ok(exists $all->{json}{app} && !defined $all->{json}{app},
    'an upstream without a flag is listed as null');

# the config flag

my $cfg = $t->api(GET => 'v1/flags/reporting')->{json};
is($cfg->{source}, 'config', 'ha_optout_flag acts with source config');
is($cfg->{failover}, JSON::PP::false, 'config flag: failover false');
is($cfg->{reason}, 'nightly batch window', 'config flag: its reason');
ok(exists $cfg->{expires_at} && !defined $cfg->{expires_at},
    'config flag: no expiry');

my @r = $t->spray(6, sub { "/reporting/$_[0]" });
ok(scalar(grep { $_ eq '503 bad' } @r) > 0,
    'the config flag acts: the 503 of bad reaches the client') or diag "@r";

# PUT: the stored flag

my $put = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, pin => $b2, ttl => '30m',
    reason => 'INC-4211 hold degraded node for heap dump' });

is($put->{status}, 200, 'PUT stores the flag');
like($put->{headers}{'content-type'} // '', qr{^application/json},
    'the answer is JSON');

my $f = $put->{json} // {};
is(join(',', sort keys %$f),
    join(',', sort qw(upstream environment failover pin pin_selector
                      replication sticky reason actor source version
                      set_at expires_at approved_by)),
    'the stored flag has exactly the fields of the contract (SPEC 3, 10)');
is_deeply($f->{approved_by}, [], 'approved_by is [] without approvers');
is($f->{upstream}, 'app', 'upstream');
is($f->{environment}, 'testing', 'environment from ha_optout_environment');
is($f->{failover}, JSON::PP::false, 'failover false');
is($f->{pin}, $b2, 'pin');
ok(exists $f->{pin_selector} && !defined $f->{pin_selector},
    'pin_selector null');
is($f->{replication}, JSON::PP::true, 'replication true when not given');
is($f->{sticky}, JSON::PP::false, 'sticky false when not given');
is($f->{actor}, 'alice', 'actor is the token subject');
is($f->{source}, 'api', 'source api');
ok(abs(epoch($f->{set_at}) - time) <= 2, 'set_at is now');
is(epoch($f->{expires_at}) - epoch($f->{set_at}), 1800,
    'expires_at is set_at + 30m');
is($put->{headers}{etag}, qq{"$f->{version}"}, 'ETag is the version');

my $get = $t->api(GET => 'v1/flags/app');
is_deeply($get->{json}, $f, 'GET answers the stored flag');
is($get->{headers}{etag}, qq{"$f->{version}"}, 'GET carries the ETag');
is_deeply($t->api(GET => 'v1/flags')->{json}{app}, $f,
    'GET v1/flags lists the stored flag');

@r = $t->spray(4, sub { "/app/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @r), 4, 'the stored pin acts');

# PUT replaces

my $put2 = $t->api(PUT => 'v1/flags/app', json => {
    replication => JSON::PP::false, ttl => '10m', reason => 'migration' });
is($put2->{status}, 200, 'a second PUT is accepted');
ok(!defined $put2->{json}{pin}, 'PUT replaces: the old pin is gone');
is($put2->{json}{failover}, JSON::PP::true,
    'PUT replaces: failover is back on');
ok($put2->{json}{version} > $f->{version}, 'the version grows');

# If-Match

my $v = $put2->{json}{version};

my $r = $t->api(PUT => 'v1/flags/app', headers => { 'If-Match' => qq{"$v"} },
                json => { pin => $b1, ttl => '10m', reason => 'if-match' });
is($r->{status}, 200, 'If-Match with the current version writes')
    or diag "ETag $put2->{headers}{etag}, version $v: $r->{body}";
is($r->{json}{pin}, $b1, 'the conditional write is stored');
$v = $r->{json}{version};

$r = $t->api(PUT => 'v1/flags/app', headers => { 'If-Match' => '"0"' },
             json => { pin => $b2, ttl => '10m', reason => 'only if none' });
is($r->{status}, 412, 'If-Match "0" refuses while a flag exists');

$r = $t->api(PUT => 'v1/flags/app', headers => { 'If-Match' => '*' },
             json => { pin => $b1, ttl => '10m', reason => 'any version' });
is($r->{status}, 200, 'If-Match * always writes');
$v = $r->{json}{version};

# dry_run

my $tok = $t->token;
$r = $t->api(PUT => 'v1/flags/app?dry_run=1', token => $tok,
             json => { failover => JSON::PP::false, ttl => '5m',
                       reason => 'just checking' });
is($r->{status}, 200, 'dry_run answers 200');
is($r->{json}{reason}, 'just checking', 'dry_run answers what would be stored');
is($t->api(GET => 'v1/flags/app')->{json}{version}, $v,
    'dry_run changes nothing');

$r = $t->api(PUT => 'v1/flags/app?dry_run=1',
             json => { failover => 'no', ttl => '5m', reason => 'x' });
is($r->{status}, 400, 'dry_run still validates');

$r = $t->api(PUT => 'v1/flags/app', token => $tok,
             json => { pin => $b1, ttl => '10m', reason => 'after dry run' });
is($r->{status}, 200, 'dry_run does not consume the token');

# PATCH

my $before = $r->{json};
sleep 1;

$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '1h' },
             token_args => { sub => 'bob' });
is($r->{status}, 200, 'PATCH ttl accepted');
is($r->{json}{pin}, $b1, 'PATCH keeps the other fields');
is($r->{json}{reason}, 'after dry run', 'PATCH keeps the reason');
is($r->{json}{set_at}, $before->{set_at}, 'PATCH keeps set_at');
ok(abs(epoch($r->{json}{expires_at}) - time - 3600) <= 2,
    'PATCH ttl restarts the clock: expires_at is now + 1h');
is($r->{json}{actor}, 'bob', 'PATCH makes its caller the actor');
ok($r->{json}{version} > $before->{version}, 'PATCH grows the version');

# DELETE

$r = $t->api(DELETE => 'v1/flags/app');
is($r->{status}, 200, 'DELETE answers 200');
ok(is_null($r), 'DELETE answers null: nothing acts now');
is($r->{headers}{etag}, '"0"', 'DELETE answers ETag "0"');

$r = $t->api(DELETE => 'v1/flags/app');
is($r->{status}, 200, 'DELETE without a flag is not an error');

$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '1h' });
is($r->{status}, 409, 'PATCH without a flag: 409');
is($r->{json}{error}{code}, 'NoFlag', 'PATCH without a flag: NoFlag');

# layers: an API flag hides the config flag, DELETE reveals it

$r = $t->api(PUT => 'v1/flags/reporting', json => {
    pin => $b2, ttl => '5m', reason => 'look at b2' });
is($r->{json}{source}, 'api', 'an API flag over a config flag acts');

@r = $t->spray(4, sub { "/reporting/api/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @r), 4, 'the API flag wins over config');

$r = $t->api(DELETE => 'v1/flags/reporting');
is($r->{status}, 200, 'DELETE of the API flag');
is($r->{json}{source}, 'config',
    'DELETE answers the config flag that now acts again');
is($t->api(GET => 'v1/flags/reporting')->{json}{source}, 'config',
    'GET shows the config flag again');

# whoami and audit

$r = $t->api(GET => 'v1/whoami', token_args => { sub => 'carol' });
is($r->{status}, 200, 'whoami answers');
is($r->{json}{sub}, 'carol', 'whoami names the subject');
is_deeply([ sort @{ $r->{json}{scopes} // [] } ], [ 'ha:read', 'ha:write' ],
    'whoami lists the scopes');

$r = $t->api(GET => 'v1/audit?limit=2');
is($r->{status}, 200, 'audit answers');
my @e = @{ $r->{json}{entries} // [] };
is(scalar @e, 2, 'audit honours limit');
is($e[0]{action}, 'clear', 'newest audit entry first: the clear');
is($e[0]{upstream}, 'reporting', 'audit entry names the upstream');
is($e[1]{action}, 'set', 'then the set before it');
is($e[1]{reason}, 'look at b2', 'audit entry carries the reason');

###############################################################################

done_testing;
