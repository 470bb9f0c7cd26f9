#!/usr/bin/perl

# admin API errors: every refusal is JSON with error.status, error.code,
# error.message and request_id, and changes nothing.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
$t->secret_file('other.key', default => 0);
$t->token_defaults(aud => 'edge-test');

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        server 127.0.0.1:%%PORT_b3%% down;
        ha_optout;
    }

    upstream db {
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
            ha_optout_admin_audience edge-test;
            add_header X-Request-Id $request_id always;
        }
    }
}
EOF

$t->run;

my $b1 = '127.0.0.1:' . $t->port('b1');
my $b3 = '127.0.0.1:' . $t->port('b3');
my $now = time;

my %good = (failover => JSON::PP::false, ttl => '5m', reason => 'drill');

# something to be left unchanged by every refusal

my $base = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, ttl => '10m', reason => 'baseline' });
is($base->{status}, 200, 'baseline flag set');

my $before = $t->api(GET => 'v1/flags')->{body};
like($before, qr/"baseline"/, 'baseline flag listed');

# refused(NAME, RESPONSE, STATUS, CODE): the common shape of a refusal

sub refused {
    my ($name, $r, $status, $code) = @_;

    is($r->{status}, $status, "$name: answers $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
        "$name: the answer is JSON");

    my $e = $r->{is_json} && ref $r->{json} eq 'HASH' ? $r->{json} : {};
    is($e->{error}{status}, $status, "$name: error.status is $status");
    if (defined $code) {
        is($e->{error}{code}, $code, "$name: error.code is $code");
    } else {
        like($e->{error}{code} // '', qr/^[A-Z]\w+$/, "$name: has error.code");
    }
    like($e->{error}{message} // '', qr/\S/, "$name: error.message explains");
    like($e->{request_id} // '', qr/^\w+$/, "$name: carries a request_id");
    is($e->{request_id}, $r->{headers}{'x-request-id'},
        "$name: request_id is the request's \$request_id");

    is($t->api(GET => 'v1/flags')->{body}, $before, "$name: changes nothing");

    return $e;
}

###############################################################################

# tokens (401)

my $r = $t->api(PUT => 'v1/flags/app', json => \%good, token => undef);
refused('no token', $r, 401, 'InvalidToken');
like($r->{headers}{'www-authenticate'} // '',
    qr/^Bearer\b.*error="invalid_token"/,
    'no token: WWW-Authenticate: Bearer error="invalid_token"');

$r = $t->api(GET => 'v1/flags', token => undef);
is($r->{status}, 401, 'GET without a token: 401');

$r = $t->api(PUT => 'v1/flags/app', json => \%good,
             token => $t->token(secret => $t->read_file('other.key')));
refused('bad signature', $r, 401, 'InvalidToken');
like($r->{headers}{'www-authenticate'} // '', qr/error="invalid_token"/,
    'bad signature: WWW-Authenticate names invalid_token');

$r = $t->api(PUT => 'v1/flags/app', json => \%good,
             token => $t->token(iat => $now - 600, exp => $now - 300));
refused('expired token', $r, 401, 'InvalidToken');

$r = $t->api(PUT => 'v1/flags/app', json => \%good,
             token => $t->token(aud => 'edge-elsewhere'));
refused('token for another audience', $r, 401, 'InvalidToken');

$r = $t->api(PUT => 'v1/flags/app', json => \%good,
             token => $t->token(alg => 'none'));
refused('alg none', $r, 401, 'InvalidToken');

$r = $t->api(PUT => 'v1/flags/app', json => \%good, token => 'not.a.jwt');
refused('garbage token', $r, 401, 'InvalidToken');

# scope (403)

$r = $t->api(PUT => 'v1/flags/app', json => \%good,
             token => $t->token(scope => 'ha:read'));
refused('read-only token writing', $r, 403, 'InsufficientScope');
like($r->{headers}{'www-authenticate'} // '', qr/error="insufficient_scope"/,
    'read-only token writing: WWW-Authenticate names insufficient_scope');

$r = $t->api(GET => 'v1/flags', token => $t->token(scope => 'ha:write'));
is($r->{status}, 403, 'write-only token reading: 403');

$r = $t->api(PUT => 'v1/flags/app', json => \%good,
             token => $t->token(claims => { ha_upstreams => ['db'] }));
refused('token limited to another upstream', $r, 403, 'UpstreamNotAllowed');

# bodies (400, 413)

$r = $t->api(PUT => 'v1/flags/app', body => '{"failover": false,',
             headers => { 'Content-Type' => 'application/json' });
refused('malformed JSON', $r, 400, 'InvalidJSON');

$r = $t->api(PUT => 'v1/flags/app', json => { %good, colour => 'red' });
refused('unknown field', $r, 400, 'UnknownField');
like($r->{json}{error}{message} // '', qr/colour/,
    'unknown field: the message names the field');

$r = $t->api(PUT => 'v1/flags/app', json => { %good, failover => 'no' });
refused('failover of the wrong type', $r, 400, 'InvalidField');

$r = $t->api(PUT => 'v1/flags/app', json => { %good, pin => 9001 });
refused('pin of the wrong type', $r, 400, 'InvalidField');

for my $ttl ('5 minutes', '0s', '-5m', '5d', '', 'm') {
    $r = $t->api(PUT => 'v1/flags/app', json => { %good, ttl => $ttl });
    refused("ttl \"$ttl\"", $r, 400, 'InvalidTTL');
}

$r = $t->api(PUT => 'v1/flags/app', json => { %good, ttl => 300 });
refused('ttl as a number', $r, 400);

$r = $t->api(PUT => 'v1/flags/app',
             json => { failover => JSON::PP::false, ttl => '5m' });
refused('missing reason', $r, 400, 'InvalidReason');

$r = $t->api(PUT => 'v1/flags/app', json => { %good, reason => '' });
refused('empty reason', $r, 400, 'InvalidReason');

$r = $t->api(PUT => 'v1/flags/app', json => { %good, reason => 'x' x 257 });
refused('reason over 256 bytes', $r, 400, 'InvalidReason');

$r = $t->api(PUT => 'v1/flags/app', json => { ttl => '5m', reason => 'r' });
refused('a flag that opts out of nothing', $r, 400, 'EmptyFlag');

$r = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::true, replication => JSON::PP::true,
    ttl => '5m', reason => 'r' });
refused('a flag that keeps every protection', $r, 400, 'EmptyFlag');

$r = $t->api(PUT => 'v1/flags/app', json => { %good, pin_selector => 'X' });
refused('pin_selector without pin', $r, 400);

$r = $t->api(PUT => 'v1/flags/app', json => [ \%good ]);
refused('a JSON array', $r, 400);

$r = $t->api(PUT => 'v1/flags/app',
             json => { %good, reason => 'y' x (17 * 1024) });
refused('body over 16 KiB', $r, 413, 'PayloadTooLarge');

# pins (409)

$r = $t->api(PUT => 'v1/flags/app', json => { %good, pin => $b3 });
refused('pin to a down server', $r, 409, 'PinConflict');

$r = $t->api(PUT => 'v1/flags/app',
             json => { %good, pin => '127.0.0.1:1' });
refused('pin to a server not in the upstream', $r, 409, 'PinConflict');

$r = $t->api(PUT => 'v1/flags/db', json => { %good, pin => $b1 });
refused('pin to a server of another upstream', $r, 409, 'PinConflict');

# paths and methods (404, 405)

$r = $t->api(PUT => 'v1/flags/nosuch', json => \%good);
refused('PUT to an unknown upstream', $r, 404, 'UnknownUpstream');

$r = $t->api(GET => 'v1/flags/nosuch');
refused('GET of an unknown upstream', $r, 404, 'UnknownUpstream');

$r = $t->api(DELETE => 'v1/flags/nosuch');
refused('DELETE of an unknown upstream', $r, 404, 'UnknownUpstream');

$r = $t->api(GET => 'v2/flags');
refused('an unknown path', $r, 404, 'NotFound');

$r = $t->api(POST => 'v1/flags/app', json => \%good);
refused('POST to a flag', $r, 405, 'MethodNotAllowed');

$r = $t->api(DELETE => 'v1/flags');
refused('DELETE of the whole list', $r, 405, 'MethodNotAllowed');

# preconditions (412)

$r = $t->api(PUT => 'v1/flags/app', json => \%good,
             headers => { 'If-Match' => '"999999"' });
refused('If-Match of a stale version', $r, 412, 'PreconditionFailed');

# replay (401): a write token is good for one write only

my $once = $t->token;
$r = $t->api(PUT => 'v1/flags/db', json => \%good, token => $once);
is($r->{status}, 200, 'a fresh token writes');
$before = $t->api(GET => 'v1/flags')->{body};

$r = $t->api(DELETE => 'v1/flags/db', token => $once);
refused('a replayed token', $r, 401, 'InvalidToken');

$r = $t->api(PUT => 'v1/flags/db', json => \%good,
             token => $t->token(jti => undef));
refused('a write token without jti', $r, 401, 'InvalidToken');

# the baseline flag is exactly as it was set

my $app = $t->api(GET => 'v1/flags/app')->{json};
is($app->{version}, $base->{json}{version}, 'baseline flag version intact');
is($app->{pin}, $b1, 'baseline flag pin intact');

###############################################################################

done_testing;
