#!/usr/bin/perl

# Errors that say how to fix them (issue 17, item 4), each met as an
# operator meets it: a pin to a server the upstream does not have lists
# the servers it has; an unknown upstream echoes the name sent (escaped)
# and suggests the near match; a TTL of "2d" suggests "48h"; the CLI
# without --url names HA_OPTOUT_URL; "selector=" without "$" fails nginx -t.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HaOptout::Test;

my $CTL = abs_path(dirname(__FILE__) . '/..') . '/build/ha-optoutctl';

my $t = HaOptout::Test->new;
$t->backend('b1');
$t->backend('b2');
$t->secret_file('ha-optout.key', default => 1);
$t->secret_file('other.key');

my $b1 = '127.0.0.1:' . $t->port('b1');
my $b2 = '127.0.0.1:' . $t->port('b2');

my $CONF = <<'EOF';
http {
    ha_optout_zone ha_optout 1m;

    upstream Checkout {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout SELECTOR;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
        location /two-keys/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
            ha_optout_admin_key hs256 %%TESTDIR%%/other.key kid=ci;
        }
    }
}
EOF

# ------------------------------------------------------------ nginx -t

(my $bad = $CONF) =~ s/SELECTOR/selector=http_x_case/;
$t->conf($bad);
my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'nginx -t refuses "ha_optout selector=http_x_case" (no $)');
like($out, qr/"selector=http_x_case" is a constant: it takes a variable, e\.g\. "selector=\$http_x_case"/,
     '... and shows the variable it meant');

(my $good = $CONF) =~ s/SELECTOR/selector=\$http_x_case/;
$t->conf($good);
$t->run;

# ------------------------------------------------------------ the API

my $r = $t->api(PUT => 'v1/flags/Checkout', json => {
    pin => '127.0.0.1:1', ttl => '30m', reason => 'x' });
is($r->{status}, 409, 'a pin to a server the upstream lacks: 409');
like($r->{json}{error}{message},
     qr/^pin "127\.0\.0\.1:1" names no server of upstream "Checkout"; its servers: \Q$b1\E, \Q$b2\E$/,
     '... naming the pin sent and the servers there are');

$r = $t->api(PUT => 'v1/flags/checkout', json => {
    failover => JSON::PP::false(), ttl => '30m', reason => 'x' });
is($r->{status}, 404, 'a name in the wrong case: 404');
like($r->{json}{error}{message},
     qr/^no upstream with "ha_optout" is named "checkout"; did you mean "Checkout"\?$/,
     '... echoing the name and suggesting the near match');

$r = $t->api(GET => 'v1/flags/%01%22evil');
is($r->{status}, 404, 'a name with control bytes and quotes: 404');
like($r->{json}{error}{message},
     qr/is named "\\x01"evil"; GET v1\/flags lists them$/,
     '... echoed escaped (control bytes as \xNN), no suggestion');

$r = $t->api(PUT => 'v1/flags/Checkout', json => {
    failover => JSON::PP::false(), ttl => '2d', reason => 'x' });
is($r->{status}, 400, 'ttl "2d": 400');
like($r->{json}{error}{message}, qr/e\.g\. "90s", "30m", "24h" \(2 days: "48h"\)/,
     '... suggesting the units that work');

# ------------------------------------------------------------ tokens

my $exp = time - 600;
$r = $t->api(GET => 'v1/flags', token_args => { iat => $exp - 60,
                                                 exp => $exp });
is($r->{status}, 401, 'an expired token: 401');
like($r->{json}{error}{message},
     qr/^bearer token rejected: expired: its exp $exp is \d{4}-\d\d-\d\dT[\d:]+Z, this server's time is \d+ \(\d{4}-[^)]+Z\)/,
     '... saying its exp and the server\'s time');

$r = $t->api(GET => 'v1/flags', prefix => '/two-keys/');
is($r->{status}, 401, 'a token without kid where two keys are: 401');
like($r->{json}{error}{message},
     qr/^bearer token rejected: missing_kid: the token has no "kid" header and this location has 2 keys/,
     '... saying the kid is missing, not "unknown_kid"');

$r = $t->api(GET => 'v1/flags', prefix => '/two-keys/',
             token_args => { kid => 'nosuch' });
like($r->{json}{error}{message}, qr/^bearer token rejected: unknown_kid$/,
     'a kid that names no key is still unknown_kid');

# ------------------------------------------------------------ the CLI

my $key = $t->testdir . '/ha-optout.key';
$out = `env -u HA_OPTOUT_URL $CTL status --key $key --kid ops 2>&1`;
is($? >> 8, 2, 'the CLI without --url: usage error');
like($out, qr/HA_OPTOUT_URL/, '... naming HA_OPTOUT_URL');

my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
$out = `$CTL set --url $url --key $key --kid ops --upstream Checkout --no-failover --ttl 2d --reason x 2>&1`;
is($? >> 8, 2, 'the CLI with --ttl 2d: usage error');
like($out, qr/e\.g\. 90s, 30m, 24h \(2 days: 48h\)/, '... suggesting 48h');

done_testing;
