#!/usr/bin/perl

# SIGHUP to "ha-optoutctl agent" (systemctl reload, kill -HUP) as an
# operator meets it, against a real etcd, nginx and agent started with
# --config FILE:
#
#   a record signed by a writer the agent does not trust yet -> refused;
#   the writer's key added to trust-key in FILE, SIGHUP -> the agent keeps
#   running, logs one line saying what it reloaded, and applies the record
#   a trust-key made world-writable, then SIGHUP -> the new set refused
#   (logged why), the keys before kept: the flag stays applied
#   FILE made invalid, then SIGHUP -> refused, logged, nothing changes
#   the writer's key taken out again and "environment" changed, SIGHUP ->
#   the record is no longer trusted (HA back on); the environment change
#   is logged as waiting for a restart, not applied
#   SIGTERM still stops it
#
# Before, SIGHUP stopped the agent like SIGTERM.

use strict;
use warnings;

use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Etcd;
use HaOptout::Fleet;

plan skip_all => 'etcd not installed (make deps)'
    unless HaOptout::Etcd::available();

my $etcd = HaOptout::Etcd->new(members => 1);
my $d = $etcd->dir;

for my $w (qw(alice bob)) {
    for my $c ("openssl genpkey -algorithm EC -pkeyopt "
               . "ec_paramgen_curve:P-256 -out $d/$w.pem",
               "openssl pkey -in $d/$w.pem -pubout -out $d/$w.pub")
    {
        system("$c 2>/dev/null") == 0 or die "$c failed\n";
    }
}

# the agent's settings, trusting the files of @trust
my ($URL, $ADMIN);
sub yaml {
    my ($env, @trust) = @_;
    return "etcd: [" . join(', ', split /,/, $etcd->urls) . "]\n"
        . "environment: $env\nurl: $URL\nkey: $ADMIN\nhost: lb1\n"
        . "trust-key: [" . join(', ', @trust) . "]\n";
}

my $n = HaOptout::Fleet->new(etcd => $etcd, host => 'lb1',
    config => sub {
        ($URL, $ADMIN) = @_;
        return yaml('prod', "$d/alice.pub");
    });
my $pid = $n->agent_pid;
ok($etcd->wait_for(sub { $n->report }, 15), 'the agent reports')
    or diag($n->agent_log);

sub rewrite { $n->t->write_file('agent.yaml', $_[0], 0600) }
sub alive { waitpid($pid, WNOHANG) == 0 }
sub msg { (($n->report // {})->{upstreams}{app}{message} // q()) }
sub result { (($n->report // {})->{upstreams}{app}{result} // q()) }
sub applied_rev { (($n->fleet_layer // {})->{revision} // 0) }

# log lines of the agent matching RE, counted
sub logged { my ($re) = @_; scalar(() = $n->agent_log =~ /$re/g) }

# a fresh report after this moment: the agent has gone round its loop
sub next_report {
    my $seen = ($n->report // {})->{seen_at} // '';
    return $etcd->wait_for(sub { (($n->report // {})->{seen_at} // '')
                                 gt $seen }, 10);
}

# ---- bob is not trusted yet: his record is refused
my ($rc, $out, $err) = $etcd->cli('set', '--etcd', $etcd->urls,
    '--environment', 'prod', '--key', "$d/bob.pem", '--alg', 'es256',
    '--sub', 'bob', '--upstream', 'app', '--no-failover', '--ttl', '120s',
    '--reason', 'INC-12');
is($rc, 0, 'bob sets a fleet flag') or diag($err);
ok($etcd->wait_for(sub { result() eq 'refused' }, 10),
   'the agent refuses it: bob\'s key is not trusted') or diag($n->agent_log);
ok(!$n->fleet_layer, '... HA stays on');
my ($lrc, $lout) = $etcd->etcdctl('get', '/ha-optout/prod/flags/app', '-w',
                                  'fields');
my ($rev) = $lout =~ /"ModRevision" : (\d+)/;
ok($rev, "the record's revision ($rev)");

# ---- bob's key added, SIGHUP: reloaded, still running, applied
rewrite(yaml('prod', "$d/alice.pub", "$d/bob.pub"));
kill 'HUP', $pid;
ok($etcd->wait_for(sub { applied_rev() == $rev }, 10),
   'SIGHUP with bob\'s key added to trust-key: the record is applied')
    or diag($n->agent_log);
ok(alive(), '... and the agent is still running');
is(logged(qr/agent lb1: SIGHUP: reloaded 2 trusted keys and the settings of \S+agent\.yaml; records are verified again\n/),
   1, '... it logged one line saying what it reloaded')
    or diag($n->agent_log);
ok($etcd->wait_for(sub { result() eq 'applied' }, 10),
   '... its report says applied');

# ---- a new set that is not safe: refused, the keys before kept
chmod 0666, "$d/bob.pub";
kill 'HUP', $pid;
ok($etcd->wait_for(sub { logged(qr/SIGHUP: reload refused: --trust-key "\Q$d\E\/bob\.pub" is not safe: it is writable by everyone.*; the 2 trusted keys before are kept/) }, 10),
   'SIGHUP with a world-writable trust-key: refused, and the log says why')
    or diag($n->agent_log);
ok(next_report() && next_report(), '... the agent goes on reporting');
ok(alive(), '... still running');
is(applied_rev(), $rev, '... and the flag stays applied (the keys before)');
is(result(), 'applied', '... its report still says applied');
chmod 0644, "$d/bob.pub";

# a key file that is gone: refused likewise
rewrite(yaml('prod', "$d/alice.pub", "$d/nobody.pub"));
kill 'HUP', $pid;
ok($etcd->wait_for(sub { logged(qr/SIGHUP: reload refused: cannot read --trust-key "\Q$d\E\/nobody\.pub"/) }, 10),
   'SIGHUP with a trust-key file that is missing: refused')
    or diag($n->agent_log);

# ---- the file itself invalid: refused, nothing changes
rewrite(yaml('prod', "$d/alice.pub") . "no-such-setting: 1\n");
kill 'HUP', $pid;
ok($etcd->wait_for(sub { logged(qr/SIGHUP: reload refused: \S+agent\.yaml:\d+: unknown setting "no-such-setting"; the settings and the 2 trusted keys before are kept/) }, 10),
   'SIGHUP with an invalid --config: refused, and the log says why')
    or diag($n->agent_log);
ok(next_report() && next_report(), '... the agent goes on reporting');
ok(alive(), '... still running');
is(applied_rev(), $rev, '... the flag stays applied');

# ---- bob's key taken out, the environment changed: the key goes at once,
# the environment waits for a restart (the agent still reports under prod)
rewrite(yaml('staging', "$d/alice.pub"));
kill 'HUP', $pid;
ok($etcd->wait_for(sub { !$n->fleet_layer }, 10),
   'SIGHUP with bob\'s key taken out: the fleet flag goes, HA on')
    or diag($n->agent_log);
ok($etcd->wait_for(sub { result() eq 'refused' }, 10),
   '... the record is refused again');
ok(logged(qr/SIGHUP: reloaded 1 trusted keys and the settings of \S+; records are verified again; changed, and kept as they were until a restart: environment\n/),
   '... the log says the environment waits for a restart')
    or diag($n->agent_log);
ok(alive(), '... still running');

# ---- SIGTERM still stops it
is($n->stop_agent('TERM'), 0, 'SIGTERM stops the agent (exit 0)');
like($n->agent_log, qr/stopping; local fleet flags lapse/, '... saying so');

$n->stop;
$etcd->stop;
done_testing();
