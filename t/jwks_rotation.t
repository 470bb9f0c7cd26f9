#!/usr/bin/perl

# Key rotation with a JWK Set file the operator fetches from the identity
# provider (curl -o + nginx -s reload): keys are read at configuration
# time, so a reload picks up the new set.  Old and new key both in the
# set: tokens of both verify; the old key removed and reload: its tokens
# are refused with unknown_kid, while tokens of keys still in the set,
# minted before the reload, keep working.  A broken download (truncated
# set) fails the reload and the running keys stay.  The CLI mints RS256
# tokens for the same set (--alg rs256, --upstreams).

use strict;
use warnings;

use Test::More;
use FindBin;
use HaOptout::Test;
use HaOptout::Interop;

if (my $why = pyjwt_missing()) {
    fail("PyJWT is needed: $why");
    done_testing();
    exit;
}

my $t = HaOptout::Test->new;
my $d = $t->testdir;
my $ISS = 'https://keycloak.example/realms/ops';
my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

$t->backend('b1');

pyjwt($d, 'keys', $d, qw(rsa-old rsa-new rsa-next));
pyjwt($d, 'jwks', "$d/idp.jwks", qw(old new));
chmod 0644, "$d/idp.jwks";

$t->conf(<<"EOF");
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    upstream db {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key jwks %%TESTDIR%%/idp.jwks;
            ha_optout_admin_issuer $ISS;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

$t->run;

sub mint {
    my ($kid) = @_;
    return scalar pyjwt_mint($d, { key => $kid, alg => 'RS256',
                                   headers => { kid => $kid,
                                                typ => 'at+jwt' },
                                   claims => { iss => $ISS } });
}

sub who {
    my ($token) = @_;
    my $r = $t->api(GET => 'v1/whoami', token => $token);
    return $r->{status} == 200 ? "200 $r->{json}{kid}" : bearer_reason($r);
}

my $old = mint('old');
my $new = mint('new');
my $next = mint('next');

is(who($old), '200 old', 'old and new in the set: the old key verifies');
is(who($new), '200 new', 'old and new in the set: the new key verifies');
is(who($next), 'unknown_kid', 'a key not yet in the set is unknown');

# the provider rotates: "next" published, "old" retired

pyjwt($d, 'jwks', "$d/idp.jwks", qw(new next));
chmod 0644, "$d/idp.jwks";

is(who($next), 'unknown_kid', 'a new set acts only after a reload');

ok($t->reload, 'nginx -s reload with the rotated set');

is(who($old), 'unknown_kid',
   'after the reload a token of the removed key is refused (unknown_kid)');
is(who(mint('old')), 'unknown_kid', '... however freshly it was minted');
is(who($new), '200 new',
   'a token minted before the reload, of a key still in the set, verifies');
is(who($next), '200 next', 'the newly published key verifies');

# a truncated download: the reload fails, the running set stays

my $good = $t->read_file('idp.jwks');
$t->write_file('idp.jwks', substr($good, 0, length($good) / 2), 0644);

my %before = map { $_ => 1 } $t->worker_pids;
my ($rc, $out) = $t->_system($t->_nginx_cmd('-s', 'reload'));
ok($t->wait_for(sub { $t->error_log =~ /JWK Set "[^"]*idp\.jwks" is not JSON/ },
                10),
   'a truncated set is reported in error_log') or diag $t->error_log;
ok((grep { $before{$_} } $t->worker_pids),
   'the workers of the running configuration stay');
is(who($next), '200 next', 'the running keys still verify');

$t->write_file('idp.jwks', $good, 0644);

# the CLI mints RS256 tokens limited to upstreams

{
    my $tok = `$CLI token --alg rs256 --key $d/next.pem --kid next --iss $ISS --upstreams app --sub carol --ttl 2m 2>&1`;
    chomp $tok;
    is($?, 0, 'ha-optoutctl token --alg rs256 --upstreams app') or diag $tok;

    my $r = $t->api(PUT => 'v1/flags/db', token => $tok, json => {
        failover => JSON::PP::false, ttl => '5m', reason => 'cli rs256' });
    is($r->{status}, 403, 'the CLI token limited to app may not touch db')
        or diag $r->{body};

    $tok = `$CLI token --alg rs256 --key $d/next.pem --kid next --iss $ISS --upstreams app --sub carol --ttl 2m 2>&1`;
    chomp $tok;
    $r = $t->api(PUT => 'v1/flags/app', token => $tok, json => {
        failover => JSON::PP::false, ttl => '5m', reason => 'cli rs256' });
    is($r->{status}, 200, 'the CLI RS256 token sets a flag on app')
        or diag $r->{body};

    $tok = `$CLI token --alg rs256 --key $d/next.pem --kid next --sub carol 2>&1`;
    chomp $tok;
    is(who($tok), 'issuer', 'a CLI token without --iss is refused (issuer)');
}

# the refusals are counted under their reasons

my $prom = $t->get('/ha-status?format=prometheus')->{body};
my %n = $prom =~ /^ha_optout_auth_failures_total\{reason="(\w+)"\} (\d+)$/mg;
is($n{unknown_kid}, 4, 'ha_optout_auth_failures_total{reason="unknown_kid"}');
is($n{issuer}, 1, 'ha_optout_auth_failures_total{reason="issuer"}');
is($n{type}, 0, 'ha_optout_auth_failures_total{reason="type"} is present');

done_testing();
