#!/usr/bin/perl

# ha-optoutctl: every verb against a real nginx, and the exit codes a
# pipeline relies on (0 ok, 1 refused, 2 usage, 3 unreachable).

use strict;
use warnings;

use Test::More;
use FindBin;
use JSON::PP;
use POSIX qw(_exit);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
my $key = $t->secret_file;

# asymmetric keys, for these tests only: the CLI signs with the private
# half, nginx holds the public one
my $d = $t->testdir;

$t->write_file('ed.pem', <<'EOF', 0600);
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJpvWwWc0rBkoVgWZUEUes/CSMFn2LYde+BAXdp4X/rN
-----END PRIVATE KEY-----
EOF

$t->write_file('ed.pub.pem', <<'EOF', 0600);
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA5rmCe3WeKqS80hzfINLr6BLMToW6nFc+hLoJaFND+e4=
-----END PUBLIC KEY-----
EOF

$t->write_file('ec.pem', <<'EOF', 0600);
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg19cVcpYHXpDK6XfH
iL8mNad8orBLlbwMLc5eUPBiWhShRANCAARHZ5lOpx5JJ8fcYVAnulzZxRgQfOcZ
FUUBqHQ0J+4y8WiFdMyJ1mt+6zF3gt9FkIky4sNLFNoEHG8AQyaPxDS7
-----END PRIVATE KEY-----
EOF

$t->write_file('ec.pub.pem', <<'EOF', 0600);
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER2eZTqceSSfH3GFQJ7pc2cUYEHzn
GRVFAah0NCfuMvFohXTMidZrfusxd4LfRZCJMuLDSxTaBBxvAEMmj8Q0uw==
-----END PUBLIC KEY-----
EOF

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream reporting {
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
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
            ha_optout_admin_key es256 %%TESTDIR%%/ec.pub.pem kid=ci;
            ha_optout_admin_key eddsa %%TESTDIR%%/ed.pub.pem kid=ed;
        }
    }
}
EOF

$t->run;

my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
my $dead = 'http://127.0.0.1:' . $t->dead_port('nobody') . '/ha-optout/';
my $b2 = '127.0.0.1:' . $t->port('b2');
my @auth = ('--url', $url, '--key', $key, '--kid', 'ops');

# runs the CLI with a clean environment; returns {rc, out, err}
sub cli {
    my $env = ref $_[0] eq 'HASH' ? shift : {};
    my ($out, $err) = ("$d/cli.out", "$d/cli.err");

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{"HA_OPTOUT_$_"} for qw(URL TOKEN KEY ALG KID AUD);
        @ENV{keys %$env} = values %$env;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $CLI, @_ or _exit(127);
    }

    waitpid $pid, 0;
    return { rc => $? >> 8, out => $t->read_file($out),
             err => $t->read_file($err) };
}

sub flag {
    my ($name) = @_;
    return $t->api(GET => "v1/flags/$name", token_args => { kid => 'ops' })
        ->{json};
}

###############################################################################

# usage

for my $verb (qw(token status set clear run fleet whoami audit)) {
    my $r = cli($verb, '--help');
    ok($r->{rc} == 0 && $r->{out} =~ /usage: ha-optoutctl $verb/,
       "$verb --help explains the verb");
}

is(cli()->{rc}, 2, 'no verb is a usage error');
is(cli('frobnicate')->{rc}, 2, 'an unknown verb is a usage error');
is(cli('set', @auth, '--upstream', 'app', '--no-failover', '--ttl', '5m')
   ->{rc}, 2, 'set without --reason is a usage error');
is(cli('set', @auth, '--upstream', 'app', '--no-failover', '--ttl', 'soon',
       '--reason', 'x')->{rc}, 2, 'a malformed ttl is a usage error');
is(cli('set', @auth, '--upstream', 'app', '--ttl', '5m', '--reason', 'x')
   ->{rc}, 2, 'set with nothing to suspend is a usage error');
is(cli('status', @auth, '--pin', $b2)->{rc}, 2,
   'an option that does not apply to the verb is a usage error');
is(cli('status', '--url', $url)->{rc}, 2, 'no credentials is a usage error');

# token

my $r = cli('token', '--key', $key, '--kid', 'ops', '--sub', 'carol',
            '--scope', 'ha:read');
is($r->{rc}, 0, 'token mints');
my $tok = $r->{out};
chomp $tok;
like($tok, qr/^[\w-]+\.[\w-]+\.[\w-]+$/, 'token prints a compact JWT');

my $who = $t->api(GET => 'v1/whoami', token => $tok);
is($who->{status}, 200, 'nginx accepts the minted token');
like($t->encode_json($who->{json}), qr/carol/,
     'the minted token carries --sub');

$r = cli('whoami', @auth, '--sub', 'dave');
is($r->{rc}, 0, 'whoami answers');
like($r->{out}, qr/dave/, 'whoami shows the subject nginx sees');

# status, set, clear

$r = cli('status', @auth);
is($r->{rc}, 0, 'status exits 0');
like($r->{out}, qr/^app\s+-\s/m, 'status shows app with HA on');
like($r->{out}, qr/^reporting\s+-\s/m, 'status lists every ha_optout upstream');

$r = cli('set', @auth, '--sub', 'alice', '--upstream', 'app', '--pin', $b2,
         '--no-failover', '--ttl', '10m', '--reason', 'INC-4211 heap dump');
is($r->{rc}, 0, 'set exits 0') or diag $r->{err};
like($r->{out}, qr/app: HA suspended: failover=off pin=\Q$b2\E/,
     'set says what it suspended');

my $f = flag('app');
ok($f && !$f->{failover}, 'set switched failover off');
is($f && $f->{pin}, $b2, 'set pinned the node');
is($f && $f->{actor}, 'alice', '--sub becomes the actor');
is($f && $f->{reason}, 'INC-4211 heap dump', 'the reason is stored');

my @hits = $t->spray(4, sub { "/p/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @hits), 4,
   'a pin set with the CLI holds traffic on the node') or diag "@hits";

$r = cli('status', @auth);
like($r->{out}, qr/^app\s+ACTIVE\s+failover=off\ pin=\Q$b2\E\s+alice\s+
                   (9m\d\ds|10m00s)\s+INC-4211\ heap\ dump$/mx,
     'status shows state, what, who, time left and why');

$r = cli('status', @auth, '--json');
my $j = eval { decode_json($r->{out}) };
ok($j && exists $j->{app} && exists $j->{reporting},
   'status --json is the API object') or diag $r->{out};
is($j && $j->{app}{pin}, $b2, 'status --json carries the flag');

$r = cli('status', @auth, '--upstream', 'reporting');
like($r->{out}, qr/^reporting\s+-\s/m, 'status --upstream shows one upstream');

$r = cli('set', @auth, '--upstream', 'app', '--sticky', '--ttl', '1m',
         '--reason', 'dry', '--dry-run');
is($r->{rc}, 0, 'a dry run exits 0');
is(flag('app')->{pin}, $b2, 'a dry run changes nothing');

$r = cli('set', @auth, '--upstream', 'app', '--sticky', '--ttl', '1m',
         '--reason', 'stale', '--if-match', '999999');
is($r->{rc}, 1, 'a stale --if-match is refused');
like($r->{err}, qr/^error: 412 /m, 'the refusal names 412');

$r = cli('clear', @auth, '--upstream', 'app');
is($r->{rc}, 0, 'clear exits 0');
is(flag('app'), undef, 'clear restored HA');

# refused: exit 1

$r = cli('set', @auth, '--scope', 'ha:read', '--upstream', 'app',
         '--no-failover', '--ttl', '5m', '--reason', 'read only');
is($r->{rc}, 1, 'a write with a read-only token is refused with exit 1');
like($r->{err}, qr/^error: 403 \S+: /m,
     'the refusal prints status, code and message');
is(flag('app'), undef, 'a refused write changes nothing')
    or diag explain flag('app');

$r = cli('clear', @auth, '--upstream', 'nosuch');
is($r->{rc}, 1, 'an unknown upstream is refused with exit 1');
like($r->{err}, qr/^error: 404 /m, 'the refusal names 404');

$r = cli('status', '--url', $url, '--key',
         scalar($t->secret_file('wrong.key')), '--kid', 'ops');
is($r->{rc}, 1, 'a token signed with the wrong key is refused');
like($r->{err}, qr/^error: 401 /m, 'the refusal names 401');

# unreachable: exit 3

$r = cli('status', '--url', $dead, '--key', $key);
is($r->{rc}, 3, 'nginx down exits 3');
like($r->{err}, qr/cannot reach/, 'and says it cannot reach it');

$r = cli('set', '--url', $dead, '--key', $key, '--upstream', 'app',
         '--no-failover', '--ttl', '5m', '--reason', 'x');
is($r->{rc}, 3, 'a write to nginx down exits 3');

# credentials from the environment

$r = cli({ HA_OPTOUT_URL => $url, HA_OPTOUT_KEY => $key,
           HA_OPTOUT_KID => 'ops' }, 'status');
is($r->{rc}, 0, 'HA_OPTOUT_URL and HA_OPTOUT_KEY are enough');

my $static = $t->token(kid => 'ops');
$r = cli({ HA_OPTOUT_TOKEN => $static }, 'status', '--url', $url);
is($r->{rc}, 0, 'HA_OPTOUT_TOKEN is used as it is');

$r = cli('set', '--url', $url, '--token', $static, '--upstream', 'app',
         '--no-failover', '--ttl', '1m', '--reason', 'static', '--verbose');
is($r->{rc}, 0, 'a static --token can write once');
unlike($r->{out} . $r->{err}, qr/\Q$static\E/,
       'the token is never printed, even with --verbose');
my ($hdr, $claims) = split /\./, $static;
unlike($r->{out} . $r->{err}, qr/\Q$claims\E/, 'not even in part');

$r = cli('clear', '--url', $url, '--token', $static, '--upstream', 'app');
is($r->{rc}, 1, 'the same token cannot write twice (replay)');
cli('clear', @auth, '--upstream', 'app');

# asymmetric algorithms

$r = cli('set', '--url', $url, '--key', "$d/ec.pem", '--alg', 'es256',
         '--kid', 'ci', '--sub', 'pipeline', '--upstream', 'reporting',
         '--no-failover', '--ttl', '5m', '--reason', 'es256');
is($r->{rc}, 0, 'es256: a token signed with the private key is accepted')
    or diag $r->{err};
is(flag('reporting') && flag('reporting')->{actor}, 'pipeline',
   'es256: the subject is the actor');

$r = cli('clear', '--url', $url, '--key', "$d/ed.pem", '--alg', 'eddsa',
         '--kid', 'ed', '--upstream', 'reporting');
is($r->{rc}, 0, 'eddsa: a token signed with the private key is accepted')
    or diag $r->{err};
is(flag('reporting'), undef, 'eddsa: the clear went through');

$r = cli('status', '--url', $url, '--key', "$d/ed.pub.pem", '--alg', 'eddsa',
         '--kid', 'ed');
is($r->{rc}, 2, 'a public key cannot mint: usage error');

# a private key without --alg: hs256 is the default, and says what to give
$r = cli('status', '--url', $url, '--key', "$d/ed.pem", '--kid', 'ed');
is($r->{rc}, 2, 'an Ed25519 PEM without --alg: usage error');
like($r->{err}, qr/is a PEM key, not an HS256 secret: give --alg eddsa, es256/,
     '... naming --alg, not a byte of the PEM');

# audit list

$r = cli('audit', 'list', @auth, '--limit', '5');
is($r->{rc}, 0, 'audit list exits 0');
like($r->{out}, qr/"upstream":\s*"reporting"/,
     'audit list shows the newest changes');

done_testing();
