#!/usr/bin/perl

# The fleet against an etcd with TLS (client certificates required) and
# authentication on, with a user whose role is limited to /ha-optout/
# (the RBAC role docs/fleet.md gives): set, status and clear work with
# --etcd-user/--etcd-password-file/--etcd-cacert/--etcd-cert/--etcd-key;
# a password file with CRLF line endings works too; a wrong password, a
# missing client certificate, an untrusted server and a key outside the
# role's prefix are refused.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use HaOptout::Test;
use HaOptout::Etcd;
use HaOptout::Fleet;

plan skip_all => 'etcd not installed (make deps)'
    unless HaOptout::Etcd::available();

my $t = HaOptout::Test->new;
my $key = $t->secret_file('writer.key');
my $etcd = HaOptout::Etcd->new(members => 1, tls => 1,
    auth => { user => 'ops', password => 'ops-secret-pw',
              prefix => '/ha-optout/' });

my $pw = $t->write_file('etcd.pw', "ops-secret-pw\n", 0600);
my $bad = $t->write_file('bad.pw', "nope\n", 0600);
my @TLS = ('--etcd-cacert', $etcd->cacert, '--etcd-cert', $etcd->client_cert,
           '--etcd-key', $etcd->client_key);
my @E = ('--etcd', $etcd->urls, '--environment', 'prod', '--key', $key,
         '--sub', 'alice', '--etcd-user', 'ops', '--etcd-password-file', $pw,
         @TLS);
my @F = ('--upstream', 'app', '--no-failover', '--ttl', '30s',
         '--reason', 'tls and auth');

like($etcd->urls, qr/^https:/, 'etcd speaks https');

my ($rc, $out, $err) = $etcd->cli('set', @E, @F);
is($rc, 0, 'set over TLS with a user limited to /ha-optout/') or diag($err);
my $v = $etcd->get('/ha-optout/prod/flags/app');
ok($v && decode_json($v)->{signature}, 'the signed record is in etcd');

($rc, $out) = $etcd->cli('status', @E, '--json');
is(eval { decode_json($out)->{flags}{app}{reason} }, 'tls and auth',
   'status over TLS and auth');

($rc, $out, $err) = $etcd->cli('fleet', 'status', @E);
ok($rc == 0 || $rc == 1, 'fleet status over TLS and auth') or diag($err);
like($out, qr/^app\s/m, '... lists the flag');

($rc, $out, $err) = $etcd->cli('clear', @E, '--upstream', 'app');
is($rc, 0, 'clear over TLS and auth') or diag($err);
is($etcd->get('/ha-optout/prod/flags/app'), undef, 'the record is gone');

# run: lease keepalive and revoke with auth
($rc, $out, $err) = $etcd->cli('run', @E, @F[0 .. 2], '--ttl', '3s',
                               '--reason', 'r', '--', 'true');
is($rc, 0, 'run over TLS and auth') or diag($err);
is($etcd->get('/ha-optout/prod/flags/app'), undef, '... and revoked');

# a password file saved with CRLF line endings (a Windows editor, a
# secret pasted through one): its "\r" is not part of the password
my $crlf = $t->write_file('crlf.pw', "ops-secret-pw\r\n", 0600);
my @crlf = map { $_ eq $pw ? $crlf : $_ } @E;
($rc, $out, $err) = $etcd->cli('status', @crlf, '--json');
is($rc, 0, 'a password file with CRLF line endings: authenticated')
    or diag($err);
unlike($err, qr/refused user/, '... etcd does not refuse the user');

# refusals
my @bad = map { $_ eq $pw ? $bad : $_ } @E;
($rc, $out, $err) = $etcd->cli('set', @bad, @F);
is($rc, 1, 'a wrong password: refused (exit 1)');
like($err, qr/etcd refused user "ops"/, '... saying so');
unlike($err, qr/nope/, '... without printing the password');

($rc, $out, $err) = $etcd->cli('set', @E, @F, '--etcd-prefix', '/other');
is($rc, 1, 'outside the role\'s prefix: refused (exit 1)');
like($err, qr/permission denied/, '... permission denied');
like($err, qr/roles do not grant this key/, '... and what to change');

my @nocert = grep { $_ ne '--etcd-cert' && $_ ne $etcd->client_cert
                    && $_ ne '--etcd-key' && $_ ne $etcd->client_key } @E;
($rc, $out, $err) = $etcd->cli('set', @nocert, @F, '--timeout', '3');
isnt($rc, 0, 'no client certificate: refused');
like($err, qr/client certificate\? --etcd-cert, --etcd-key/,
     '... asking for one');

my @noca = grep { $_ ne '--etcd-cacert' && $_ ne $etcd->cacert } @E;
($rc, $out, $err) = $etcd->cli('set', @noca, @F, '--timeout', '3');
is($rc, 3, 'an untrusted server certificate: unreachable (exit 3)');
like($err, qr/certificate|SSL/i, '... naming the certificate problem');
like($err, qr/--etcd-cacert FILE/, '... and the option that fixes it');

($rc, $out, $err) = $etcd->cli('set', '--etcd', $etcd->urls,
                   '--environment', 'prod', '--key', $key, @TLS, @F);
is($rc, 1, 'no user while auth is on: refused');
like($err, qr/authentication on: give --etcd-user and --etcd-password-file/,
     '... saying which options are missing');

# ---- an agent over TLS and auth applies and removes the fleet flag
my $node = HaOptout::Fleet->new(etcd => $etcd, host => 'lb-tls',
    trust => [$key], etcd_args => [ '--etcd-user', 'ops',
                                    '--etcd-password-file', $pw, @TLS ]);
ok($etcd->wait_for(sub { $node->report }, 10),
   'the agent reports over TLS and auth') or diag($node->agent_log);
($rc, $out, $err) = $etcd->cli('set', @E, @F);
is($rc, 0, 'set');
ok($etcd->wait_for(sub { $node->fleet_layer }, 5),
   'the agent applied it through the TLS watch') or diag($node->agent_log);
($rc) = $etcd->cli('clear', @E, '--upstream', 'app');
ok($etcd->wait_for(sub { !$node->fleet_layer }, 5), 'clear: removed');
$node->stop;

# ---- the same agent from a --config file (the Debian unit's way)
my @urls = split /,/, $etcd->urls;
my ($ca, $cc, $ck) = ($etcd->cacert, $etcd->client_cert, $etcd->client_key);
my $byconf = HaOptout::Fleet->new(etcd => $etcd, host => 'lb-conf',
    config => sub {
        my ($url, $admin) = @_;
        return "# the agent's settings\n"
            . "etcd: [" . join(', ', @urls) . "]\n"
            . "environment: prod\nurl: $url\nkey: $admin\n"
            . "trust-key: [$key]\nhost: lb-conf\n"
            . "etcd-user: ops\netcd-password-file: $pw\n"
            . "etcd-cacert: $ca\netcd-cert: $cc\netcd-key: $ck\n";
    });
ok($etcd->wait_for(sub { $byconf->report }, 10),
   'an agent configured by --config FILE reports') or diag($byconf->agent_log);
($rc) = $etcd->cli('set', @E, @F);
ok($etcd->wait_for(sub { $byconf->fleet_layer }, 5), '... and applies');
($rc) = $etcd->cli('clear', @E, '--upstream', 'app');
ok($etcd->wait_for(sub { !$byconf->fleet_layer }, 5), '... and removes');
$byconf->stop;

my $badconf = $t->write_file('bad-agent.yaml', "etcd: x\ncolour: red\n");
($rc, $out, $err) = $etcd->cli('agent', '--config', $badconf);
is($rc, 2, 'an unknown setting in --config: exit 2');
like($err, qr/bad-agent\.yaml:2: unknown setting "colour"/,
     '... naming the file and line');

$etcd->stop;
done_testing();
