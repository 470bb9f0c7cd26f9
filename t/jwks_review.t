#!/usr/bin/perl

# Found in a review of the JWK Set support, each as an operator or an
# attacker meets it:
#
# - a set of one key took tokens without kid (docs/tokens.md says a set
#   always needs one): they would all be refused at once when the provider
#   publishes its next key.  Now refused from the start, with a message
#   naming the kid to give.
# - an Ed25519 JWK of small order (the identity point: OpenSSL checks no
#   Ed25519 public key) loaded, and then a token "signed" with R = the
#   identity and S = 0 verified for any claims.  Now the set is refused,
#   the reload fails and the forged token stays 401.
# - a refused token left nothing in error_log (the docs say the reason,
#   kid and subject are logged); a token without exp was told "expired".

use strict;
use warnings;

use Test::More;
use MIME::Base64 qw(encode_base64url);
use JSON::PP;
use HaOptout::Test;
use HaOptout::Interop;

if (my $why = pyjwt_missing()) {
    fail("PyJWT is needed: $why");
    done_testing();
    exit;
}

my $t = HaOptout::Test->new;
my $d = $t->testdir;
my $ISS = 'https://idp.example/realms/ops';

$t->backend('b1');

pyjwt($d, 'keys', $d, qw(rsa-one));
pyjwt($d, 'jwks', "$d/idp.jwks", qw(one));
chmod 0644, "$d/idp.jwks";

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

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key jwks %%TESTDIR%%/idp.jwks;
            ha_optout_admin_issuer $ISS;
        }
    }
}
EOF

$t->run;

sub mint {
    my (%o) = @_;
    return scalar pyjwt_mint($d, { key => 'one', alg => 'RS256',
                                   headers => $o{headers} // { kid => 'one' },
                                   claims => { iss => $ISS,
                                               %{ $o{claims} // {} } } });
}

sub message {
    my ($r) = @_;
    return ref $r->{json} eq 'HASH' ? $r->{json}{error}{message} // '' : '';
}

# --- a set of one key still needs the kid

my $r = $t->api(GET => 'v1/whoami', token => mint());
is($r->{status}, 200, 'a token with the kid of the only key of the set: 200')
    or diag $r->{body};

$r = $t->api(GET => 'v1/whoami', token => mint(headers => { typ => 'JWT' }));
is($r->{status}, 401, 'a token without kid, the set holding one key: 401')
    or diag $r->{body};
like(message($r),
     qr/^bearer token rejected: missing_kid: .*JWK Set.*give the kid of the key \("one"\)/,
     '... and the message names the kid to give') or diag $r->{body};

# --- a token without exp is not told it "expired" without saying why

$r = $t->api(GET => 'v1/whoami', token => mint(claims => { exp => undef }));
is($r->{status}, 401, 'a token without exp: 401');
like(message($r), qr/expired: the token has no "exp" claim/,
     '... and the message says the claim is missing') or diag $r->{body};

# --- refusals reach error_log, the subject escaped

$r = $t->api(GET => 'v1/whoami',
             token => mint(claims => { iss => "$ISS/", sub => "eve\n[emerg] x" }));
is($r->{status}, 401, 'a token of another issuer: 401');
ok($t->wait_for(sub { $t->error_log =~
       /\[info\].*ha_optout: bearer token rejected: issuer: the token.s "iss" is "https:\/\/idp.example\/realms\/ops\/"; this location accepts only "https:\/\/idp.example\/realms\/ops" \(ha_optout_admin_issuer\) \(kid "one", sub "eve\\n\[emerg\] x"\)/ }, 10),
   'the refusal is in error_log with kid and the escaped sub')
    or diag $t->error_log;
unlike($t->error_log, qr/^\[emerg\] x/m, 'the sub forged no line');

# --- a small-order Ed25519 key is refused, so the forged token stays 401

my $good = $t->read_file('idp.jwks');
my $set = decode_json($good);
push @{ $set->{keys} }, { kty => 'OKP', crv => 'Ed25519', kid => 'weak',
                          use => 'sig', alg => 'EdDSA',
                          x => encode_base64url("\x01" . "\x00" x 31) };
$t->write_file('idp.jwks', encode_json($set), 0644);

my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'nginx -t refuses a set with a small-order Ed25519 key');
like($out, qr/OKP key 2 is a small-order Ed25519 point/, '... saying so')
    or diag $out;

# the master has acted on the reload when it logged the refusal (new
# code) or replaced its workers (a set it accepted)
my $seen = () = $t->error_log =~ /OKP key 2 is a small-order/g;
my %old = map { $_ => 1 } $t->worker_pids;
$t->_system($t->_nginx_cmd('-s', 'reload'));
ok($t->wait_for(sub {
       my $n = () = $t->error_log =~ /\[emerg\].*OKP key 2 is a small-order/g;
       my @now = $t->worker_pids;
       $n > $seen || (@now && !grep { $old{$_} } @now) }, 10),
   'the master acted on the reload');
my $n = () = $t->error_log =~ /\[emerg\].*OKP key 2 is a small-order/g;
ok($n > $seen, 'the reload with it fails, saying why') or diag $t->error_log;

my $now = time;
my $forged = join '.',
    encode_base64url(encode_json({ alg => 'EdDSA', kid => 'weak' })),
    encode_base64url(encode_json({ iss => $ISS, sub => 'mallory',
                                   scope => 'ha:read ha:write',
                                   iat => $now, exp => $now + 300,
                                   jti => 'forged-1' })),
    encode_base64url("\x01" . "\x00" x 63);

$r = $t->api(GET => 'v1/whoami', token => $forged);
is($r->{status}, 401, 'a token signed R = identity, S = 0 is refused')
    or diag $r->{body};
is($t->api(GET => 'v1/whoami', token => mint())->{status}, 200,
   'the running keys still verify');

$t->write_file('idp.jwks', $good, 0644);

done_testing();
