#!/usr/bin/perl

# Tokens minted by PyJWT (Debian python3-jwt with python3-cryptography),
# RS256, ES256, EdDSA and HS256, verify as they are: against PEM keys and
# against a JWK Set exported the way an identity provider publishes it
# (PyJWT's to_jwk, with kid/use/alg; the set world-readable, as public
# keys are).  Forged ones are refused, each for its own reason.

use strict;
use warnings;

use Test::More;
use MIME::Base64 qw(encode_base64url);
use HaOptout::Test;
use HaOptout::Interop;

if (my $why = pyjwt_missing()) {
    # make deps installs it; a machine without it must not pass silently
    fail("PyJWT is needed: $why");
    done_testing();
    exit;
}

my $t = HaOptout::Test->new;
my $d = $t->testdir;
my $ISS = 'https://idp.example/realms/ops';

$t->backend('b1');

# PEM keys (p*), JWK Set keys (k*), a forger's RSA key
pyjwt($d, 'keys', $d, qw(rsa-pr ec-pe ed-pd rsa-kr ec-ke ed-kd rsa-forger));
pyjwt($d, 'jwks', "$d/idp.jwks", qw(kr ke kd));
chmod 0644, "$d/idp.jwks", glob("$d/*.pub.pem");

my $hs = 'pyjwt-shared-secret-0123456789abcdef';      # text, as SPEC 9 says
$t->secret_file('hs.key', secret => "$hs\n");
my $oct = 'pyjwt-oct-secret-in-a-jwk-set-0123456789';
$t->write_file('oct.jwks', '{"keys":[{"kty":"oct","kid":"ko","alg":"HS256",'
                           . '"k":"' . encode_base64url($oct) . '"}]}', 0600);

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
            ha_optout_admin_key rs256 %%TESTDIR%%/pr.pub.pem kid=pr;
            ha_optout_admin_key es256 %%TESTDIR%%/pe.pub.pem kid=pe;
            ha_optout_admin_key eddsa %%TESTDIR%%/pd.pub.pem kid=pd;
            ha_optout_admin_key hs256 %%TESTDIR%%/hs.key kid=ph;
            ha_optout_admin_audience edge-eu-1;
            ha_optout_admin_issuer $ISS;
        }

        location /jwks/ {
            ha_optout_admin;
            ha_optout_admin_key jwks %%TESTDIR%%/idp.jwks;
            ha_optout_admin_key jwks %%TESTDIR%%/oct.jwks;
            ha_optout_admin_audience edge-eu-1;
            ha_optout_admin_issuer $ISS;
        }
    }
}
EOF

$t->run;

# spec(KEY, ALG, KID, claims => {...}, headers => {...}, forge => ...)
sub spec {
    my ($key, $alg, $kid, %o) = @_;
    return {
        key => $key, alg => $alg,
        headers => { (defined $kid ? (kid => $kid) : ()),
                     %{ $o{headers} // {} } },
        claims => { iss => $ISS, aud => 'edge-eu-1', %{ $o{claims} // {} } },
        ($o{forge} ? (forge => $o{forge}) : ()),
    };
}

sub whoami {
    my ($prefix, $token) = @_;
    return $t->api(GET => 'v1/whoami', prefix => $prefix, token => $token);
}

# --- accepted, PEM keys and JWK Set keys, every algorithm

my @good = (
    [ '/pem/',  'RS256', spec('pr', 'RS256', 'pr',
                              headers => { typ => 'at+jwt' }) ],
    [ '/pem/',  'ES256', spec('pe', 'ES256', 'pe') ],
    [ '/pem/',  'EdDSA', spec('pd', 'EdDSA', 'pd') ],
    [ '/pem/',  'HS256', spec("secret:$hs", 'HS256', 'ph') ],
    [ '/jwks/', 'RS256', spec('kr', 'RS256', 'kr',
                              headers => { typ => 'at+jwt' }) ],
    [ '/jwks/', 'ES256', spec('ke', 'ES256', 'ke') ],
    [ '/jwks/', 'EdDSA', spec('kd', 'EdDSA', 'kd') ],
    [ '/jwks/', 'HS256', spec("secret:$oct", 'HS256', 'ko') ],
);

my @tok = pyjwt_mint($d, map { $_->[2] } @good);

for my $i (0 .. $#good) {
    my ($prefix, $alg) = @{ $good[$i] };
    my $kid = $good[$i][2]{headers}{kid};
    my $r = whoami($prefix, $tok[$i]);
    is($r->{status}, 200, "PyJWT $alg token verifies with the "
       . ($prefix eq '/pem/' ? 'PEM key' : 'JWK Set key') . " (kid $kid)")
        or diag $r->{body};
    is($r->{json}{kid}, $kid, "PyJWT $alg: verified by kid $kid");
}

# --- a write: scope from "scp" (array, Okta; string, Azure AD)

my ($scp_ro, $scp_w, $scp_str) = pyjwt_mint($d,
    spec('kr', 'RS256', 'kr', claims => { scope => undef,
                                          scp => ['ha:read'] }),
    spec('kr', 'RS256', 'kr', claims => { scope => undef,
                                          scp => ['openid', 'ha:write'] }),
    spec('kr', 'RS256', 'kr', claims => { scope => undef,
                                          scp => 'ha:read ha:write' }));

my $flag = { failover => JSON::PP::false, ttl => '5m', reason => 'pyjwt' };

my $r = $t->api(PUT => 'v1/flags/app', prefix => '/jwks/', token => $scp_ro,
                json => $flag);
is($r->{status}, 403, 'scp ["ha:read"] may not write');

$r = $t->api(GET => 'v1/flags', prefix => '/jwks/', token => $scp_ro);
is($r->{status}, 200, 'scp ["ha:read"] may read');

$r = $t->api(PUT => 'v1/flags/app', prefix => '/jwks/', token => $scp_w,
             json => $flag);
is($r->{status}, 200, 'scp ["openid","ha:write"] sets a flag')
    or diag $r->{body};
like($r->{body}, qr/"actor":\s*"alice"/, "the PyJWT token's sub is the actor");

$r = $t->api(DELETE => 'v1/flags/app', prefix => '/jwks/', token => $scp_str);
is($r->{status}, 200, 'scp "ha:read ha:write" (a string) clears it')
    or diag $r->{body};

# --- forged or foreign tokens, each refused for its reason

my @bad = (
    [ '/pem/',  'signature', 'RS256 signed by another RSA key, kid of ours',
      spec('forger', 'RS256', 'pr') ],
    [ '/jwks/', 'signature', 'the same against the JWK Set',
      spec('forger', 'RS256', 'kr') ],
    [ '/pem/',  'algorithm', 'RS256 -> HS256 keyed with the public PEM',
      spec('pr', 'HS256', 'pr', forge => 'hmac-pem') ],
    [ '/jwks/', 'algorithm', "RS256 -> HS256 keyed with the set key's PEM",
      spec('kr', 'HS256', 'kr', forge => 'hmac-pem') ],
    [ '/jwks/', 'algorithm', "an RS256 token naming the oct key's kid",
      spec('kr', 'RS256', 'ko') ],
    [ '/jwks/', 'algorithm', "an HS256 token naming the RSA key's kid",
      spec("secret:$oct", 'HS256', 'kr') ],
    [ '/jwks/', 'algorithm', 'alg none',
      { key => 'secret:', alg => 'none', headers => { kid => 'kr' },
        claims => { iss => $ISS, aud => 'edge-eu-1' } } ],
    [ '/jwks/', 'type', 'typ JOSE (not an access token)',
      spec('kr', 'RS256', 'kr', headers => { typ => 'JOSE' }) ],
    [ '/jwks/', 'type', 'typ logout+jwt',
      spec('kr', 'RS256', 'kr', headers => { typ => 'logout+jwt' }) ],
    [ '/jwks/', 'issuer', 'iss of another realm',
      spec('kr', 'RS256', 'kr', claims => {
          iss => 'https://idp.example/realms/dev' }) ],
    [ '/pem/',  'issuer', 'no iss',
      spec('pr', 'RS256', 'pr', claims => { iss => undef }) ],
    [ '/jwks/', 'audience', 'aud of another nginx',
      spec('kr', 'RS256', 'kr', claims => { aud => 'edge-us-1' }) ],
    [ '/jwks/', 'expired', 'expired an hour ago',
      spec('kr', 'RS256', 'kr', claims => { iat => time - 4000,
                                            exp => time - 3600 }) ],
    [ '/jwks/', 'unknown_kid', 'a kid the set does not hold',
      spec('kr', 'RS256', 'kr-next') ],
    [ '/jwks/', 'missing_kid', 'no kid at all (a set needs one; the message says so)',
      spec('kr', 'RS256', undef) ],
);

my @forged = pyjwt_mint($d, map { $_->[3] } @bad);

for my $i (0 .. $#bad) {
    my ($prefix, $want, $name) = @{ $bad[$i] };
    is(bearer_reason(whoami($prefix, $forged[$i])), $want,
       "refused ($want): $name");
}

done_testing();
