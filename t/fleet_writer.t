#!/usr/bin/perl

# The writer side of the fleet (SPEC section 11) against a real etcd:
# set writes a signed record on a lease of the TTL, two writers racing
# with --if-match end with exactly one winner, clear deletes, run keeps
# the lease (re-signing expires_at) and revokes it at the end, a run
# killed with SIGKILL leaves a record that goes with its lease, and an
# etcd nobody answers on is "unreachable" (exit 3).

use strict;
use warnings;

use Test::More;
use JSON::PP;
use MIME::Base64 qw(decode_base64url);
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Etcd;

plan skip_all => 'etcd not installed (make deps)'
    unless HaOptout::Etcd::available();

my $t = HaOptout::Test->new;
my $key = $t->secret_file('writer.key');
my $etcd = HaOptout::Etcd->new(members => 1);
my @E = ('--etcd', $etcd->urls, '--environment', 'prod', '--key', $key,
         '--sub', 'alice');
my $K = '/ha-optout/prod/flags/app';

sub record {
    my $v = $etcd->get($_[0] // $K);
    return defined $v ? decode_json($v) : undef;
}

# ---- set: a signed record, on a lease of the TTL
my ($rc, $out, $err) = $etcd->cli('set', @E, '--upstream', 'app',
    '--no-failover', '--pin', '127.0.0.1:9', '--ttl', '30s',
    '--reason', 'INC-7 hold node');
is($rc, 0, 'set --etcd exits 0') or diag($err);
like($out, qr/app: HA suspended on the fleet prod: failover=off pin=127.0.0.1:9 until \S+ \(revision \d+\)/,
     'set says what it suspended and the revision');

my $r = record();
ok($r, 'the record is in etcd under /ha-optout/prod/flags/app');
is_deeply([ @$r{qw(upstream environment failover pin ttl reason actor)} ],
          [ 'app', 'prod', JSON::PP::false, '127.0.0.1:9', '30s',
            'INC-7 hold node', 'alice' ],
          'the record holds the flag fields, actor and ttl');
like($r->{expires_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'expires_at');

my @jws = split /\./, $r->{signature} // '';
is(scalar @jws, 3, 'signature is a compact JWS');
my $payload = decode_json(decode_base64url($jws[1] // 'e30'));
my %visible = %$r;
delete $visible{signature};
is_deeply($payload, \%visible, 'the JWS payload is the record itself');
is(decode_json(decode_base64url($jws[0]))->{alg}, 'HS256', 'HS256');

# the lease: TTL 30
my ($lrc, $lout) = $etcd->etcdctl('get', $K, '-w', 'json');
my $lease = eval { decode_json($lout)->{kvs}[0]{lease} };
ok($lease, 'the record is attached to a lease');
($lrc, $lout) = $etcd->etcdctl('lease', 'timetolive', sprintf('%x', $lease));
like($lout, qr/granted with TTL\(30s\)/, 'the lease has the flag\'s TTL');

# status --etcd and --json
($rc, $out) = $etcd->cli('status', @E);
like($out, qr/^app\s+\d+\s+failover=off pin=127\.0\.0\.1:9\s+alice\s+\S+\s+INC-7 hold node$/m,
     'status --etcd shows the flag');
($rc, $out) = $etcd->cli('status', @E, '--json');
my $st = eval { decode_json($out) };
is($st->{flags}{app}{reason}, 'INC-7 hold node', 'status --json');
my $rev = $st->{flags}{app}{revision};
ok($rev, "the record's revision ($rev)");

# fleet status with no agent at all: not converged
($rc, $out) = $etcd->cli('fleet', 'status', @E);
is($rc, 1, 'fleet status without any agent: exit 1');
like($out, qr/NOT converged \(no agent reports\)/, '... says why');
($rc, $out) = $etcd->cli('fleet', 'status', @E, '--upstream', 'nope');
like($out, qr/no fleet flag on nope/, 'fleet status --upstream: a missing flag');

# ---- If-Match: a stale revision is refused and changes nothing
($rc, $out, $err) = $etcd->cli('set', @E, '--upstream', 'app',
    '--sticky', '--ttl', '30s', '--reason', 'late', '--if-match', $rev - 1);
is($rc, 1, 'set --if-match with a stale revision: exit 1');
like($err, qr/412 PreconditionFailed: the fleet record is at revision $rev/,
     '412-style refusal names the current revision');
is(record()->{reason}, 'INC-7 hold node', 'the record is unchanged');

($rc, $out, $err) = $etcd->cli('set', @E, '--upstream', 'app',
    '--sticky', '--ttl', '30s', '--reason', 'replace', '--if-match', $rev);
is($rc, 0, 'set --if-match with the current revision: replaced')
    or diag($err);
is(record()->{reason}, 'replace', 'the record was replaced');

# ---- two writers racing on one revision: exactly one wins
($rc, $out) = $etcd->cli('status', @E, '--json');
$rev = decode_json($out)->{flags}{app}{revision};
for my $round (1 .. 3) {
    my @pids = map {
        $etcd->cli_start("race$round-$_", 'set', @E, '--upstream', 'app',
                         '--no-failover', '--ttl', '30s',
                         '--reason', "writer $_", '--if-match', $rev)
    } 1 .. 2;
    my @rc = map { $etcd->cli_wait($_, 20) } @pids;
    is(join(',', sort map { $_ // 'timeout' } @rc), '0,1',
       "race $round on revision $rev: one writer wins, one gets exit 1");
    like(record()->{reason}, qr/^writer [12]$/, 'the winner\'s record');
    ($rc, $out) = $etcd->cli('status', @E, '--json');
    $rev = decode_json($out)->{flags}{app}{revision};
}

# --if-match 0: only when there is no record
my @pids = map {
    $etcd->cli_start("create-$_", 'set', @E, '--upstream', 'fresh',
                     '--no-failover', '--ttl', '30s', '--reason', "c$_",
                     '--if-match', 0)
} 1 .. 2;
is(join(',', sort map { $etcd->cli_wait($_, 20) // 'x' } @pids), '0,1',
   '--if-match 0 by two writers at once: one creates, one is refused');

# ---- clear
($rc, $out) = $etcd->cli('clear', @E, '--upstream', 'app');
is($rc, 0, 'clear --etcd exits 0');
like($out, qr/app: HA restored on the fleet prod/, 'clear says so');
is($etcd->get($K), undef, 'the record is gone');
($rc, $out) = $etcd->cli('clear', @E, '--upstream', 'app');
is($rc, 0, 'clearing again is not an error');
like($out, qr/there was no fleet flag/, '... and says there was none');

# a fleet flag needs a TTL: it lives on a lease
($rc, $out, $err) = $etcd->cli('set', @E, '--upstream', 'app',
    '--no-failover', '--ttl', 'none', '--reason', 'forever');
is($rc, 2, 'ttl none is a usage error for a fleet flag');

# unsigned is impossible from the CLI
($rc, $out, $err) = $etcd->cli('set', '--etcd', $etcd->urls,
    '--environment', 'prod', '--upstream', 'app', '--no-failover',
    '--ttl', '5s', '--reason', 'x');
is($rc, 2, 'set --etcd without --key: usage error');
like($err, qr/signed/, '... the record must be signed');

# ---- set lapses with its lease
($rc) = $etcd->cli('set', @E, '--upstream', 'short', '--no-failover',
                   '--ttl', '2s', '--reason', 'short');
is($rc, 0, 'a 2s fleet flag');
ok($etcd->get('/ha-optout/prod/flags/short'), 'is there');
my $t0 = time;
ok($etcd->wait_for(sub { !defined $etcd->get('/ha-optout/prod/flags/short') },
                   6), 'and goes with its lease');
cmp_ok(time - $t0, '<', 4.5, sprintf('within TTL + 2 s (%.1f s)', time - $t0));

# ---- run: the lease is kept, the record re-signed, revoked at the end
my $pid = $etcd->cli_start('run1', 'run', @E, '--upstream', 'app',
    '--no-failover', '--ttl', '3s', '--reason', 'migration', '--',
    'sleep', '4');
ok($etcd->wait_for(sub { record() }, 5), 'run: the record is set');
my $first = record();
ok($etcd->wait_for(sub { my $x = record();
                         $x && $x->{expires_at} ne $first->{expires_at} },
                   4), 'run re-signs the record with a later expires_at');
my $second = record();
is($second->{set_at}, $first->{set_at}, '... set_at stays');
isnt($second->{signature}, $first->{signature}, '... a new signature');
sleep 0.1 while time - $t0 < 0 ;
is($etcd->cli_wait($pid, 15), 0, 'run exits with the command\'s status');
is($etcd->get($K), undef, 'the record is gone as soon as run ends');
like($etcd->log_of('run1.err'), qr/HA restored on the fleet prod/,
     'run says HA is restored');

# the record outlives the TTL while the command runs
$pid = $etcd->cli_start('run2', 'run', @E, '--upstream', 'app',
    '--no-failover', '--ttl', '2s', '--reason', 'long', '--', 'sleep', '30');
ok($etcd->wait_for(sub { record() }, 5), 'run with ttl 2s: set');
sleep 3;
ok(record(), 'still there after more than one TTL (heartbeat)');

# ---- run killed with SIGKILL: the lease expires, the record goes
kill 'KILL', $pid;
$etcd->cli_wait($pid, 5);
$t0 = time;
ok($etcd->wait_for(sub { !defined $etcd->get($K) }, 6),
   'run killed with SIGKILL: the record goes with its lease');
my $lapse = time - $t0;
cmp_ok($lapse, '<=', 4, sprintf('within TTL + 2 s (%.1f s)', $lapse));
diag(sprintf('killed run: record gone %.2f s after SIGKILL (ttl 2s)', $lapse));

# a command that fails: its status, and the record still goes
($rc) = $etcd->cli('run', @E, '--upstream', 'app', '--no-failover',
                   '--ttl', '5s', '--reason', 'fails', '--', 'sh', '-c',
                   'exit 7');
is($rc, 7, 'run returns the command\'s exit status');
is($etcd->get($K), undef, '... and removes the record');

# ---- run --etcd started where SIGINT and SIGQUIT are ignored (a CI job,
# a shell's background job): the command must not inherit "ignore" for
# the signals run passes on, as plain run already ensures
{
    local $SIG{INT} = 'IGNORE';
    local $SIG{QUIT} = 'IGNORE';
    local $SIG{TERM} = 'IGNORE';
    ($rc, $out, $err) = $etcd->cli('run', @E, '--upstream', 'app',
        '--no-failover', '--ttl', '5s', '--reason', 'sigign', '--',
        'grep', '^SigIgn:', '/proc/self/status');
}
is($rc, 0, 'run --etcd with SIGINT ignored: the command ran') or diag($err);
my ($ign) = $out =~ /^SigIgn:\s*([0-9a-f]+)/m;
ok(defined $ign, "the command reported its ignored signals ($out)");
$ign = hex($ign // 'ffff');
is($ign & (1 << (2 - 1)), 0, '... SIGINT is not ignored by the command');
is($ign & (1 << (3 - 1)), 0, '... nor SIGQUIT');
is($ign & (1 << (15 - 1)), 0, '... nor SIGTERM');
is($etcd->get($K), undef, '... and the record is gone after it');

# ---- unreachable etcd
($rc, $out, $err) = $etcd->cli('set', '--etcd',
    'http://127.0.0.1:' . $t->dead_port('dead'), '--environment', 'prod',
    '--key', $key, '--upstream', 'app', '--no-failover', '--ttl', '5s',
    '--reason', 'x', '--timeout', '2');
is($rc, 3, 'etcd unreachable: exit 3');
like($err, qr/127\.0\.0\.1/, '... naming the member');

# a dead member first in the list: the next one answers
($rc) = $etcd->cli('set', '--etcd',
    'http://127.0.0.1:' . $t->dead_port('dead') . ',' . $etcd->urls,
    '--environment', 'prod', '--key', $key, '--upstream', 'app',
    '--no-failover', '--ttl', '5s', '--reason', 'failover');
is($rc, 0, 'a dead member in --etcd: the next one answers');

# bad usage
($rc, $out, $err) = $etcd->cli('set', '--etcd', $etcd->urls, '--url',
    'http://127.0.0.1:1/', '--environment', 'prod', '--key', $key,
    '--upstream', 'app', '--no-failover', '--ttl', '5s', '--reason', 'x');
is($rc, 2, '--url and --etcd together: usage error');
($rc) = $etcd->cli('set', '--etcd', $etcd->urls, '--key', $key,
    '--upstream', 'app', '--no-failover', '--ttl', '5s', '--reason', 'x');
is($rc, 2, '--etcd without --environment: usage error');

$etcd->stop;
done_testing();
