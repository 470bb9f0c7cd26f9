#!/usr/bin/perl

# Key files as nginx -t meets them (SPEC sections 2, 8 and 9): public keys
# (PEM, JWK Sets without secrets) may be world-readable but not writable
# by others; secret material (HS256 secret files, oct keys, private "d"
# members) must be private; an HS256 secret file is text; a FIFO planted
# as a key file is refused at once instead of hanging nginx -t; weak RSA
# keys, JWKs without kid and other mistakes are refused with file:line
# and a message that says what to do.

use strict;
use warnings;

use Test::More;
use MIME::Base64 qw(encode_base64url);
use POSIX qw(mkfifo);
use Time::HiRes qw(time);
use HaOptout::Test;

my $t = HaOptout::Test->new;
my $d = $t->testdir;

sub openssl {
    my ($cmd) = @_;
    my $out = `openssl $cmd 2>&1`;
    die "openssl $cmd: $out" if $?;
    return $out;
}

openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $d/rsa.pem");
openssl("pkey -in $d/rsa.pem -pubout -out $d/rsa.pub.pem");
openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out $d/weak.pem");
openssl("pkey -in $d/weak.pem -pubout -out $d/weak.pub.pem");
openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $d/ec.pem");
openssl("pkey -in $d/ec.pem -pubout -out $d/ec.pub.pem");
openssl("genpkey -algorithm ED25519 -out $d/ed.pem");
openssl("pkey -in $d/ed.pem -pubout -out $d/ed.pub.pem");
chmod 0644, glob("$d/*.pub.pem");

# the public RSA JWK of rsa.pub.pem, as an identity provider publishes it
my ($mod) = openssl("rsa -pubin -in $d/rsa.pub.pem -noout -modulus")
    =~ /Modulus=([0-9A-F]+)/;
my $n = encode_base64url(pack 'H*', $mod);
my $rsa_jwk = qq({"kty":"RSA","kid":"kc-1","use":"sig","alg":"RS256",)
            . qq("n":"$n","e":"AQAB"});
my $enc_jwk = qq({"kty":"RSA","kid":"kc-enc","use":"enc","alg":"RSA-OAEP",)
            . qq("n":"$n","e":"AQAB"});
my $oct_jwk = '{"kty":"oct","kid":"ops","k":"'
            . encode_base64url('0123456789abcdef0123456789abcdef') . '"}';

$t->write_file('public.jwks', qq({"keys":[$rsa_jwk,$enc_jwk]}), 0644);

sub conf {
    my ($keys) = @_;
    return <<"EOF";
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
            $keys
            ha_optout_admin_issuer https://keycloak.example/realms/ops;
        }
    }
}
EOF
}

# nginx -t, bounded: a key file that blocks open() must not hang it
sub nginx_t {
    my ($keys) = @_;
    $t->conf(conf($keys));
    my $t0 = time;
    my ($rc, $out) = $t->_system('timeout', '20', $t->_nginx_cmd('-t'));
    return ($rc, $out, time - $t0);
}

sub accepted {
    my ($name, $keys, $re) = @_;
    my ($rc, $out) = nginx_t($keys);
    is($rc, 0, "nginx -t accepts $name") or diag $out;
    like($t->error_log, $re, "$name: error_log says $re") if $re;
}

sub rejected {
    my ($name, $keys, $msg_re, $line_re) = @_;
    my ($rc, $out, $took) = nginx_t($keys);
    my $line = $t->conf_line($line_re // qr/ha_optout_admin_key/) // 0;
    my $file = "$d/nginx.conf";

    isnt($rc, 0, "nginx -t refuses $name");
    ok($rc != 124, "$name: nginx -t did not hang (" . sprintf('%.1f', $took)
       . ' s)');
    like($out, qr/\[emerg\].*\Q$file\E:$line\b/,
        "$name: the error names nginx.conf line $line") or diag $out;
    like($out, $msg_re, "$name: the error says why") or diag $out;
}

# --- public keys may be world-readable

accepted('a world-readable RS256 public key (0644)',
    "ha_optout_admin_key rs256 $d/rsa.pub.pem kid=kc;");
accepted('world-readable ES256 and EdDSA public keys (0644)',
    "ha_optout_admin_key es256 $d/ec.pub.pem kid=ci;
            ha_optout_admin_key eddsa $d/ed.pub.pem kid=bot;");
accepted('a world-readable public JWK Set (0644), enc key skipped',
    "ha_optout_admin_key jwks $d/public.jwks;",
    qr/\[notice\].*key 2 skipped: "use" is "enc"/);

chmod 0664, "$d/ec.pub.pem";
rejected('a public key the group may write (0664)',
    "ha_optout_admin_key es256 $d/ec.pub.pem kid=ci;",
    qr/is writable by group or others \(chmod 644\)/);
chmod 0644, "$d/ec.pub.pem";

# --- secret material must be private

$t->write_file('oct.jwks', qq({"keys":[$rsa_jwk,$oct_jwk]}), 0644);
rejected('a JWK Set with an oct key readable by others',
    "ha_optout_admin_key jwks $d/oct.jwks;",
    qr/holds secret key material.*chmod 600/);

chmod 0600, "$d/oct.jwks";
accepted('the same JWK Set with mode 0600',
    "ha_optout_admin_key jwks $d/oct.jwks;");

$t->write_file('hs.key', ('ab' x 32) . "\n", 0640);
rejected('an HS256 secret readable by the group',
    "ha_optout_admin_key hs256 $d/hs.key kid=ops;",
    qr/accessible by group or others \(chmod 600\)/);

# --- the HS256 secret file is text

$t->write_file('hs.key', ('ab' x 32) . "\n", 0600);
accepted('a hex HS256 secret with one trailing newline',
    "ha_optout_admin_key hs256 $d/hs.key kid=ops;");

$t->write_file('raw.key', join('', map { chr(128 + $_ * 3) } 1 .. 39) . "\n",
               0600);
rejected('a raw binary HS256 secret',
    "ha_optout_admin_key hs256 $d/raw.key kid=ops;",
    qr/is not text: byte 1 is not ASCII.*hex or base64 encoded/);

$t->write_file('crlf.key', ('ab' x 32) . "\r\n", 0600);
rejected('an HS256 secret ending in CRLF',
    "ha_optout_admin_key hs256 $d/crlf.key kid=ops;",
    qr/byte 65 is a carriage return/);

# --- weak or wrong keys

rejected('a 1024-bit RSA key',
    "ha_optout_admin_key rs256 $d/weak.pub.pem kid=old;",
    qr/less than 2048 bits/);
rejected('an EC key given as rs256',
    "ha_optout_admin_key rs256 $d/ec.pub.pem kid=x;",
    qr/is not an RSA public key/);
openssl("rsa -pubin -in $d/rsa.pub.pem -RSAPublicKey_out -out $d/pkcs1.pem");
chmod 0644, "$d/pkcs1.pem";
accepted('a PKCS#1 RSA public key ("BEGIN RSA PUBLIC KEY")',
    "ha_optout_admin_key rs256 $d/pkcs1.pem kid=x;");
chmod 0600, "$d/rsa.pem", "$d/ec.pem";
rejected('a private key PEM given as rs256',
    "ha_optout_admin_key rs256 $d/rsa.pem kid=x;",
    qr/is a private key: give nginx its public half: openssl pkey -in \Q$d\E\/rsa\.pem -pubout -out \Q$d\E\/rsa\.pem\.pub\.pem/);
rejected('a private key PEM given as es256',
    "ha_optout_admin_key es256 $d/ec.pem kid=x;",
    qr/is a private key: give nginx its public half/);
rejected('an RSA public key given as es256',
    "ha_optout_admin_key es256 $d/rsa.pub.pem kid=x;",
    qr/is an RSA public key, not a P-256 EC one: give it as rs256/);

$t->write_file('nokid.jwks', '{"keys":[{"kty":"RSA","n":"' . $n
                             . '","e":"AQAB"}]}', 0644);
rejected('a JWK without kid',
    "ha_optout_admin_key jwks $d/nokid.jwks;",
    qr/key 1 \(RS256\) has no "kid"/);

$t->write_file('discovery.json', '{"issuer":"https://kc/realms/ops",'
               . '"jwks_uri":"https://kc/realms/ops/protocol/openid-connect/'
               . 'certs"}', 0644);
rejected('the discovery document instead of the set',
    "ha_optout_admin_key jwks $d/discovery.json;",
    qr/discovery document: fetch its "jwks_uri"/);

rejected('a kid= parameter on a JWK Set',
    "ha_optout_admin_key jwks $d/public.jwks kid=x;",
    qr/the kid of each key is in the JWK Set/);

rejected('a kid of the set also given to a PEM key',
    "ha_optout_admin_key rs256 $d/rsa.pub.pem kid=kc-1;
            ha_optout_admin_key jwks $d/public.jwks;",
    qr/duplicate kid "kc-1"/, qr/ha_optout_admin_key jwks/);

# found in review: beside other keys, a key without kid= is dead (a token
# without kid selects only a location's one key), and the missing_kid
# message told its signers to give a kid= it does not have
$t->write_file('hs-nokid.key', ('cd' x 32) . "\n", 0600);
rejected('a key without kid= beside a JWK Set',
    "ha_optout_admin_key jwks $d/public.jwks;
            ha_optout_admin_key hs256 $d/hs-nokid.key;",
    qr/the key "\Q$d\E\/hs-nokid\.key" has no kid= and this location has \d+ keys: no token could select it; give it kid=/,
    qr/hs-nokid\.key/);
rejected('a key without kid= before a keyed one',
    "ha_optout_admin_key hs256 $d/hs-nokid.key;
            ha_optout_admin_key es256 $d/ec.pub.pem kid=ci;",
    qr/has no kid= and this location has 2 keys/, qr/kid=ci/);

rejected('an unknown algorithm',
    "ha_optout_admin_key ps256 $d/rsa.pub.pem kid=x;",
    qr/hs256, es256, eddsa, rs256 or jwks/);

# --- a FIFO planted as a key file is refused, not waited on

for my $alg (qw(rs256 hs256 jwks)) {
    my $fifo = "$d/$alg.fifo";
    mkfifo($fifo, 0600) or die "mkfifo: $!\n";
    rejected("a FIFO as $alg key file",
        "ha_optout_admin_key $alg $fifo" . ($alg eq 'jwks' ? ';' : ' kid=x;'),
        qr/is not a regular file \(a FIFO, device or directory is never read\): give a regular file/);
    unlink $fifo;
}

done_testing();
