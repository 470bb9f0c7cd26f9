#!/usr/bin/perl

# admin API changes: PATCH as a heartbeat, ETag / If-Match, dry runs,
# replay protection and whoami.

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
    }
}
EOF

$t->run;

my $b1 = '127.0.0.1:' . $t->port('b1');

sub flag { $t->api(GET => 'v1/flags/app') }

###############################################################################

# dry run validates and changes nothing

my $r = $t->api(PUT => 'v1/flags/app?dry_run=1', json => {
    pin => $b1, ttl => '5m', reason => 'just looking' });
is($r->{status}, 200, 'dry run answers 200');
is($r->{json}{pin}, $b1, 'dry run answers what would be stored');
is(flag()->{body}, "null\n", 'dry run stores nothing');

$r = $t->api(PUT => 'v1/flags/app?dry_run=1', json => {
    pin => $b1, ttl => 'forever', reason => 'x' });
is($r->{status}, 400, 'dry run still validates');

# set, with an ETag

$r = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, pin => $b1, ttl => '60s',
    reason => 'heap dump' });
is($r->{status}, 200, 'flag set');
my $v = $r->{json}{version};
is($r->{headers}{etag}, "\"$v\"", 'write answers ETag: "<version>"');
is(flag()->{headers}{etag}, "\"$v\"", 'GET answers the same ETag');

# PATCH extends the ttl (a heartbeat) and keeps the rest

my $exp1 = $r->{json}{expires_at};
sleep 1;
$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '10m' },
             headers => { 'If-Match' => "\"$v\"" });
is($r->{status}, 200, 'PATCH with a matching If-Match is applied');
like($r->{headers}{'content-type'}, qr{^application/json}, 'answer is JSON');
ok($r->{json}{expires_at} gt $exp1, 'PATCH ttl moves expires_at later');
is($r->{json}{pin}, $b1, 'PATCH keeps the fields it does not name');
ok(!$r->{json}{failover}, 'PATCH keeps failover off');
my $v2 = $r->{json}{version};
ok($v2 > $v, 'PATCH gives a new version');

# a stale If-Match changes nothing

my $before = flag()->{body};
$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '1h' },
             headers => { 'If-Match' => "\"$v\"" });
is($r->{status}, 412, 'stale If-Match answers 412');
is($r->{json}{error}{code}, 'PreconditionFailed', '412 is JSON');
is($r->{headers}{etag}, "\"$v2\"", '412 tells the current version in ETag');
is(flag()->{body}, $before, 'stale If-Match changes nothing');

$r = $t->api(DELETE => 'v1/flags/app', headers => { 'If-Match' => '"1"' });
is($r->{status}, 412, 'stale If-Match on DELETE answers 412');
is(flag()->{body}, $before, 'and the flag stays');

# PATCH can drop the pin with null

$r = $t->api(PATCH => 'v1/flags/app', json => { pin => undef });
is($r->{status}, 200, 'PATCH pin null is accepted');
is($r->{json}{pin}, undef, 'PATCH pin null removes the pin');
ok(!$r->{json}{failover}, 'failover stays off');

$r = $t->api(PATCH => 'v1/flags/app', json => { failover => JSON::PP::true });
is($r->{status}, 400, 'PATCH that would leave nothing opted out is refused');
is($r->{json}{error}{code}, 'EmptyFlag', 'as EmptyFlag');

# replay: a token is good for one write

my $tok = $t->token;
$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '9m' }, token => $tok);
is($r->{status}, 200, 'a fresh token writes');
$before = flag()->{body};
$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '8m' }, token => $tok);
is($r->{status}, 401, 'the same token again is a replay: 401');
like($r->{json}{error}{message}, qr/replay/, 'the message says replayed');
is(flag()->{body}, $before, 'a replay changes nothing');

$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '8m' },
             token => $t->token(jti => undef));
is($r->{status}, 401, 'a write without jti is refused');

is($t->api(GET => 'v1/flags/app', token => $tok)->{status}, 200,
    'reads do not consume the jti');

# whoami: any valid token

$r = $t->api(GET => 'v1/whoami',
             token => $t->token(sub => 'ci-bot', scope => 'ha:write'));
is($r->{status}, 200, 'whoami answers a write-only token');
is($r->{json}{sub}, 'ci-bot', 'whoami names the subject');
is_deeply($r->{json}{scopes}, ['ha:write'], 'whoami lists the scopes');
ok($r->{json}{exp} > time, 'whoami gives the expiry');

# DELETE restores HA

$r = $t->api(DELETE => 'v1/flags/app');
is($r->{status}, 200, 'DELETE answers 200');
is($r->{body}, "null\n", 'nothing lies beneath: null');
ok($r->{headers}{etag}, 'DELETE answers an ETag');

$r = $t->api(PATCH => 'v1/flags/app', json => { ttl => '1m' });
is($r->{status}, 409, 'PATCH with no flag answers 409');
is($r->{json}{error}{code}, 'NoFlag', 'as NoFlag');

# bodies over nginx's default client_max_body_size still get JSON

$r = $t->api(PUT => 'v1/flags/app', body => 'x' x (2 * 1024 * 1024),
             headers => { 'Content-Type' => 'application/json' });
is($r->{status}, 413, 'a 2 MiB body answers 413');
is($r->{json}{error}{code}, 'PayloadTooLarge', 'the 413 is JSON, not HTML');

# a refused write is audited as denied

$r = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '1m', reason => 'sneaky' },
    token => $t->token(sub => 'mallory', scope => 'ha:read'));
is($r->{status}, 403, 'a read-only token cannot write');

my $audit = $t->api(GET => 'v1/audit?limit=1')->{json}{entries};
is($audit->[0]{action}, 'denied', 'the refusal is the newest audit entry');
is($audit->[0]{actor}, 'mallory', 'denied names the actor');
is($audit->[0]{upstream}, 'app', 'denied names the upstream');

done_testing();
