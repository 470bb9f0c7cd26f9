#!/usr/bin/perl

# Tokens minted by node's jose package (npm, version pinned in
# t/interop/package-lock.json) verify as they are: RS256, EdDSA and
# ES256, typ at+jwt, against PEM keys from jose's exportSPKI and against a
# JWK Set from its exportJWK (world-readable, as public keys are).
# Forged ones are refused.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;
use HaOptout::Interop;

if (my $why = jose_missing()) {
    fail("node's jose is needed: $why");
    done_testing();
    exit;
}

my $t = HaOptout::Test->new;
my $d = $t->testdir;
my $ISS = 'https://dev-1234.okta.example/oauth2/default';

$t->backend('b1');

jose($d, 'keys', $d, qw(RS256:jr EdDSA:jd ES256:jc RS256:forger
                        RS256:sr EdDSA:sd));
jose($d, 'jwks', "$d/idp.jwks", qw(sr sd));
chmod 0644, "$d/idp.jwks", glob("$d/*.pub.pem");

$t->conf(<<"EOF");
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
        }

        location /pem/ {
            ha_optout_admin;
            ha_optout_admin_key rs256 %%TESTDIR%%/jr.pub.pem kid=jr;
            ha_optout_admin_key eddsa %%TESTDIR%%/jd.pub.pem kid=jd;
            ha_optout_admin_key es256 %%TESTDIR%%/jc.pub.pem kid=jc;
            ha_optout_admin_audience api://ha-optout;
            ha_optout_admin_issuer $ISS;
        }

        location /jwks/ {
            ha_optout_admin;
            ha_optout_admin_key jwks %%TESTDIR%%/idp.jwks;
            ha_optout_admin_audience api://ha-optout;
            ha_optout_admin_issuer $ISS;
        }
    }
}
EOF

$t->run;

sub spec {
    my ($kid, $alg, %o) = @_;
    return { kid => $kid, alg => $alg, iss => $ISS, aud => 'api://ha-optout',
             %o };
}

sub whoami {
    my ($prefix, $token) = @_;
    return $t->api(GET => 'v1/whoami', prefix => $prefix, token => $token);
}

my @good = (
    [ '/pem/',  spec('jr', 'RS256') ],
    [ '/pem/',  spec('jd', 'EdDSA') ],
    [ '/pem/',  spec('jc', 'ES256') ],
    [ '/jwks/', spec('sr', 'RS256') ],
    [ '/jwks/', spec('sd', 'EdDSA', typ => 'JWT') ],
);

my @tok = jose_mint($d, map { $_->[1] } @good);

for my $i (0 .. $#good) {
    my ($prefix, $s) = @{ $good[$i] };
    my $r = whoami($prefix, $tok[$i]);
    is($r->{status}, 200, "jose $s->{alg} token verifies with the "
       . ($prefix eq '/pem/' ? 'PEM key' : 'JWK Set key') . " (kid $s->{kid})")
        or diag $r->{body};
    is($r->{json}{kid}, $s->{kid}, "jose $s->{alg}: kid $s->{kid}");
}

# an Okta-style token (scp array) with ha_upstreams writes, once

my ($w, $other) = jose_mint($d,
    spec('sr', 'RS256', scp => ['ha:write'], upstreams => ['app']),
    spec('sr', 'RS256', scp => ['ha:write'], upstreams => ['db']));

my $flag = { failover => JSON::PP::false, ttl => '5m', reason => 'jose' };
my $r = $t->api(PUT => 'v1/flags/app', prefix => '/jwks/', token => $w,
                json => $flag);
is($r->{status}, 200, 'a jose RS256 token with scp ["ha:write"] sets a flag')
    or diag $r->{body};

$r = $t->api(PUT => 'v1/flags/app', prefix => '/jwks/', token => $w,
             json => $flag);
is($r->{status}, 401, 'the same jose token (same jti) is not accepted twice');

$r = $t->api(DELETE => 'v1/flags/app', prefix => '/jwks/', token => $other);
is($r->{status}, 403, 'ha_upstreams ["db"] may not touch app');

my @bad = (
    [ '/pem/',  'signature', 'RS256 by another jose key under our kid',
      spec('forger', 'RS256', signkid => 'jr') ],
    [ '/jwks/', 'signature', 'the same against the JWK Set',
      spec('forger', 'RS256', signkid => 'sr') ],
    [ '/jwks/', 'algorithm', 'an EdDSA token naming the RSA key',
      spec('sd', 'EdDSA', signkid => 'sr') ],
    [ '/pem/',  'type', 'typ JOSE',
      spec('jr', 'RS256', typ => 'JOSE') ],
    [ '/jwks/', 'issuer', 'iss of another authorization server',
      spec('sr', 'RS256', iss => 'https://dev-1234.okta.example/oauth2/x') ],
    [ '/jwks/', 'audience', 'aud of another API',
      spec('sr', 'RS256', aud => 'api://other') ],
);

my @forged = jose_mint($d, map { $_->[3] } @bad);

for my $i (0 .. $#bad) {
    my ($prefix, $want, $name) = @{ $bad[$i] };
    is(bearer_reason(whoami($prefix, $forged[$i])), $want,
       "refused ($want): $name");
}

done_testing();
