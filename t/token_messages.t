#!/usr/bin/perl

# A 401 says what is wrong with the token, so the operator wiring an
# identity provider can mend it from the message alone: a "malformed"
# token names the claim (or the part) that is wrong, and a token of
# another issuer or audience says what it carries and what the location
# accepts.  The token's own text in the message is escaped: the same
# message goes to error_log at info, and it cannot forge a line there.

use strict;
use warnings;

use Test::More;
use MIME::Base64 qw(encode_base64url);
use Digest::SHA qw(hmac_sha256);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->secret_file;

my $ISS = 'https://idp.example/realms/ops';

$t->conf(<<"EOF")->run;
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
            ha_optout_admin_issuer $ISS;
            ha_optout_admin_audience edge-eu-1;
        }
    }
}
EOF

$t->token_defaults(claims => { iss => $ISS }, aud => 'edge-eu-1');

sub refused {
    my ($what, $tok, $re) = @_;
    my $r = $t->api(GET => 'v1/flags', token => $tok);
    is($r->{status}, 401, "$what: 401");
    my $m = ref $r->{json} eq 'HASH' ? $r->{json}{error}{message} // '' : '';
    like($m, $re, "$what: the message says why") or diag $r->{body};
    return $m;
}

my $ok = $t->api(GET => 'v1/flags');
is($ok->{status}, 200, 'a token of the issuer and the audience: 200')
    or diag $ok->{body};

# malformed, claim by claim

for my $c (
    [ exp => 'tomorrow', qr/malformed: the claim "exp" is not a NumericDate/ ],
    [ iat => -5,         qr/malformed: the claim "iat" is not a NumericDate/ ],
    [ nbf => [1],        qr/malformed: the claim "nbf" is not a NumericDate/ ],
    [ sub => 42,         qr/malformed: the claim "sub" is not a string/ ],
    [ jti => {},         qr/malformed: the claim "jti" is not a string/ ],
    [ iss => 7,          qr/malformed: the claim "iss" is not a string/ ],
    [ scope => ['ha:read'], qr/malformed: the claim "scope" is not a string/ ],
    [ scp => 1,          qr/"scp" neither a string nor an array of strings/ ],
    [ aud => 5,          qr/malformed: the claim "aud" is neither a string nor an array of strings/ ],
    [ aud => ['edge-eu-1', 3], qr/the claim "aud" is neither a string/ ],
    [ ha_upstreams => 'app', qr/malformed: the claim "ha_upstreams" is not an array of strings/ ],
) {
    my ($k, $v, $re) = @$c;
    refused("$k as " . (ref $v ? ref $v : "'$v'"),
            $t->token(claims => { iss => $ISS, $k => $v }), $re);
}

# malformed, the token itself

my $good = $t->token;
my ($h, $p, $s) = split /\./, $good;

refused('two parts', "$h.$p",
        qr/malformed: it is not a JWS compact token: three base64url parts/);
refused('padding', "$h.$p=.$s",
        qr/malformed: it is not a JWS compact token/);

my $bad = encode_base64url('[1,2]');
my $sig = encode_base64url(hmac_sha256("$h.$bad", $t->secret));
refused('a payload that is an array', "$h.$bad.$sig",
        qr/malformed: its payload is not one JSON object/);

$bad = encode_base64url('{"sub":"a","sub":"b","exp":' . (time + 60) . '}');
$sig = encode_base64url(hmac_sha256("$h.$bad", $t->secret));
refused('a claim given twice', "$h.$bad.$sig",
        qr/malformed: its payload is not one JSON object \(a claim given twice/);

# issuer and audience: what the token says, what the location accepts

refused('another issuer', $t->token(claims => { iss => "$ISS/" }),
        qr{^bearer token rejected: issuer: the token's "iss" is "\Q$ISS\E/"; this location accepts only "\Q$ISS\E" \(ha_optout_admin_issuer\)$});
refused('no issuer', $t->token(claims => { iss => undef }),
        qr/^bearer token rejected: issuer: the token has no "iss" claim; this location accepts only "\Q$ISS\E"/);
my $m = refused('an issuer that would forge a line',
        $t->token(claims => { iss => "x\n[emerg] forged" }),
        qr/^bearer token rejected: issuer: the token's "iss" is "x\\n\[emerg\] forged"/);

refused('another audience', $t->token(aud => 'edge-us-2'),
        qr/^bearer token rejected: audience: the token's "aud" is "edge-us-2"; this location accepts only "edge-eu-1" \(ha_optout_admin_audience\)$/);
refused('an audience list without ours', $t->token(aud => ['a', 'b']),
        qr/audience: the token's "aud" is \[\\"a\\",\\"b\\"\]; this location accepts only "edge-eu-1"/);
refused('no audience', $t->token(aud => undef, omit => ['aud']),
        qr/audience: the token has no "aud" claim/);

ok($t->wait_for(sub { $t->error_log =~ /\[info\].*bearer token rejected: issuer: the token's "iss" is "x\\n\[emerg\] forged"/ }, 10),
   'error_log has the refusal, the token\'s iss escaped')
    or diag $t->error_log;
unlike($t->error_log, qr/^\[emerg\] forged/m, 'no forged line');

done_testing;
