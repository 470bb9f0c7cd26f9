#!/usr/bin/perl

# The fleet end to end (SPEC section 11, issue 14): a 3-member etcd, three
# nginx and three agents, all real processes on 127.0.0.1.
#
#   set in etcd -> all three nginx obey; clear -> all restore
#   a local API flag stays on top; its DELETE reveals the fleet flag
#   agent restarted -> no second audit line, no gap
#   nginx restarted (no state file) -> the agent applies again
#   a record put straight into etcd unsigned or badly signed -> refused
#     everywhere, reported, audited "denied"; HA stays on
#   "run" killed with SIGKILL -> every nginx restores within TTL + 2 s
#   one etcd member killed -> nothing changes, the fleet still works
#   a fourth nginx + agent started later -> gets the current flags
#   every etcd member stopped -> local fleet flags lapse at their expiry

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Etcd;
use HaOptout::Fleet;

plan skip_all => 'etcd not installed (make deps)'
    unless HaOptout::Etcd::available();

my $etcd = HaOptout::Etcd->new(members => 3);
my $d = $etcd->dir;

# the writer's ES256 key; agents trust its public half only
for my $c ("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
           . "-out $d/writer.pem",
           "openssl pkey -in $d/writer.pem -pubout -out $d/writer.pub",
           "openssl genpkey -algorithm ED25519 -out $d/rogue.pem")
{
    system("$c 2>/dev/null") == 0 or die "$c failed\n";
}

my @W = ('--etcd', $etcd->urls, '--environment', 'prod',
         '--key', "$d/writer.pem", '--alg', 'es256', '--sub', 'alice');

my @nodes = map { HaOptout::Fleet->new(etcd => $etcd, host => "lb$_",
                                       trust => ["$d/writer.pub"]) } 1 .. 3;

ok($etcd->wait_for(sub { !grep { !$_->report } @nodes }, 15),
   'three agents report under /ha-optout/prod/agents/')
    or diag(join '', map { $_->agent_log } @nodes);

sub all_hold {
    my ($rev, @n) = @_;
    @n = @nodes unless @n;
    return !grep { my $f = $_->fleet_layer;
                   !$f || ($rev && $f->{revision} != $rev) } @n;
}

sub none_hold {
    my (@n) = @_;
    @n = @nodes unless @n;
    return !grep { $_->fleet_layer } @n;
}

sub revision_of {
    my ($up) = @_;
    my ($rc, $out) = $etcd->cli('status', @W, '--json');
    return eval { decode_json($out)->{flags}{$up // 'app'}{revision} };
}

sub fleet_status {
    my ($rc, $out) = $etcd->cli('fleet', 'status', @W, '--json');
    return ($rc, eval { decode_json($out) });
}

sub audit_count {
    my ($node, $action, $rev) = @_;
    return scalar grep { $_->{action} eq $action
                         && ($_->{layer} // '') eq 'fleet'
                         && (!defined $rev || ($_->{revision} // 0) == $rev) }
                  $node->audit_lines;
}

my @conv;

# ---- set -> every nginx obeys
my $b2 = '127.0.0.1:' . $nodes[0]->t->port('b2');
my $t0 = time;
my ($rc, $out, $err) = $etcd->cli('set', @W, '--upstream', 'app',
    '--no-failover', '--ttl', '60s', '--reason', 'INC-1 hold lb nodes');
is($rc, 0, 'set --etcd') or diag($err);
my $rev = revision_of();
ok($etcd->wait_for(sub { all_hold($rev) }, 5),
   'set: all three nginx hold the fleet flag at the record\'s revision');
push @conv, time - $t0;

my $f = $nodes[1]->fleet_layer;
is_deeply([ @$f{qw(source actor via revision failover reason)} ],
          [ 'fleet', 'alice', 'lb2', $rev, JSON::PP::false,
            'INC-1 hold lb nodes' ],
          'the local flag: source fleet, the signed actor, via the agent');
is($nodes[1]->acting->{source}, 'fleet', 'and it is the acting flag');

my ($fs, $st) = fleet_status();
ok($etcd->wait_for(sub { ($fs, $st) = fleet_status(); $fs == 0 }, 5),
   'fleet status: converged (exit 0)');
is_deeply([ map { $st->{agents}{"lb$_"}{upstreams}{app} } 1 .. 3 ],
          [ ('converged') x 3 ], 'fleet status: each agent converged');

is(audit_count($_, 'set', $rev), 1, $_->host . ': one audit line "set" '
   . 'with layer fleet and the revision') for @nodes;

# ---- a local API flag stays on top; its DELETE reveals the fleet flag
my $n3 = $nodes[2];
my $r = $n3->t->api(PUT => 'v1/flags/app',
                    json => { sticky => JSON::PP::true, ttl => '5m',
                              reason => 'local forensic hold' });
is($r->{status}, 200, 'a local API flag on lb3');
is($n3->acting->{source}, 'api', 'lb3: the API flag acts');
ok($n3->fleet_layer, 'lb3: the fleet layer is still there beneath it');
$r = $n3->t->api(DELETE => 'v1/flags/app');
is($r->{status}, 200, 'DELETE of the API flag');
is($r->{json}{source}, 'fleet', '... answers the fleet flag it reveals');
is($n3->acting->{source}, 'fleet', 'lb3: the fleet flag acts again');

# the fleet layer is the agent's: an ha:write token cannot touch it
$r = $n3->t->api(DELETE => 'v1/fleet/app');
is($r->{status}, 403, 'DELETE v1/fleet with an ha:write token: 403');
ok($n3->fleet_layer, '... the fleet flag stays');

# ---- agent restarted: no second audit line, no gap
my $n1 = $nodes[0];
$n1->stop_agent;
ok($n1->fleet_layer, 'agent stopped: nginx keeps the fleet flag (no gap)');
($fs, $st) = fleet_status();
is($fs, 1, 'fleet status with an agent stopped: not converged (exit 1)');
ok($st->{agents}{lb1}{silent}, '... lb1 is silent');
is($st->{agents}{lb1}{upstreams}{app}, 'pending', '... and pending');
($rc, $out) = $etcd->cli('fleet', 'status', @W);
like($out, qr/^lb1\s+SILENT\s/m, 'fleet status (text): lb1 SILENT');
like($out, qr{^lb1: silent .*etcdctl del /ha-optout/prod/members/lb1$}m,
     '... and says what to check, and how to drop a host that left');
like($out, qr/^lb2\s+up\s+ok\s+\S+\s+app=converged$/m,
     'fleet status (text): lb2 up, nginx ok, app converged');
$n1->start_agent;
ok($etcd->wait_for(sub { $n1->agent_log =~ /reconciled.*\n(?:.*\n)*.*reconciled/ }, 10),
   'the agent restarted and reconciled');
ok($etcd->wait_for(sub { my $x = $n1->report;
                         $x && ($x->{upstreams}{app}{result} // '') eq 'applied'
                            && $x->{seen_at} }, 10),
   'its report says applied again');
sleep 1.2;          # one local check round of the restarted agent
is(audit_count($n1, 'set', $rev), 1, 'lb1: still one audit line "set"');
is(scalar(grep { $_->{action} ne 'set' } $n1->audit_lines), 0,
   'lb1: no other audit line either');
ok(all_hold($rev, $n1), 'lb1: still holding the same revision');

# ---- nginx restarted without a state file: the agent applies again
my $n2 = $nodes[1];
$n2->t->stop;
$n2->t->run;
ok($etcd->wait_for(sub { all_hold($rev, $n2) }, 5),
   'lb2 restarted without state: the agent applied the flag again');

my $saved = $etcd->get('/ha-optout/prod/flags/app');
like($saved, qr/"lease":"\d+"/, 'the signed record names its lease');

# ---- clear -> every nginx restores
$t0 = time;
($rc) = $etcd->cli('clear', @W, '--upstream', 'app');
is($rc, 0, 'clear --etcd');
ok($etcd->wait_for(sub { none_hold() }, 5), 'clear: all three nginx restore');
push @conv, time - $t0;
ok(!$_->acting, $_->host . ': no acting flag, HA is on') for @nodes;

# ---- records nobody trusted signed: refused everywhere, audited denied
my $K = '/ha-optout/prod/flags/app';
my %unsigned = (upstream => 'app', environment => 'prod', failover =>
                JSON::PP::false, ttl => '60s', reason => 'forged',
                actor => 'mallory', set_at => '2026-01-01T00:00:00Z',
                expires_at => '2099-01-01T00:00:00Z');
($rc, $out) = $etcd->etcdctl('put', $K, encode_json(\%unsigned));
is($rc, 0, 'etcdctl put: an unsigned record');
my $bad = revision_of();
ok($etcd->wait_for(sub { !grep { ($_->report->{upstreams}{app}{result} // '')
                                 ne 'refused' } @nodes }, 5),
   'every agent reports it refused');
ok(none_hold(), 'no nginx applied it');
ok($etcd->wait_for(sub { !grep { audit_count($_, 'denied', $bad) != 1 }
                                @nodes }, 5),
   'every nginx audited it as "denied" with layer fleet and the revision');
($fs, $st) = fleet_status();
is($fs, 1, 'fleet status: not converged (exit 1)');
is($st->{agents}{lb1}{upstreams}{app}, 'refused', '... lb1 refused');
like($st->{agents}{lb1}{messages}{app} // '', qr/not signed/,
     '... and why (JSON messages)');
($rc, $out) = $etcd->cli('fleet', 'status', @W);
like($out, qr/^lb2: app refused: .*not signed/m,
     'fleet status (text) says why each agent refused it');

# signed, but with a key nobody trusts
($rc, $out, $err) = $etcd->cli('set', @W[0 .. 3], '--key', "$d/rogue.pem",
    '--alg', 'eddsa', '--sub', 'mallory', '--upstream', 'app',
    '--no-failover', '--ttl', '60s', '--reason', 'rogue writer');
is($rc, 0, 'a record signed with an untrusted Ed25519 key');
$bad = revision_of();
ok($etcd->wait_for(sub { !grep { audit_count($_, 'denied', $bad) != 1 }
                                @nodes }, 5),
   'refused and audited "denied" everywhere');
ok(none_hold(), 'no nginx applied it');
like($nodes[0]->report->{upstreams}{app}{message},
     qr/does not verify against any --trust-key/, 'the report says why');

# a valid record copied to another upstream's key
my $good = $etcd->cli('set', @W, '--upstream', 'other', '--no-failover',
                      '--ttl', '60s', '--reason', 'copied');
my $v = $etcd->get('/ha-optout/prod/flags/other');
$etcd->cli('clear', @W, '--upstream', 'other');
($rc) = $etcd->etcdctl('put', $K, $v);
$bad = revision_of();
ok($etcd->wait_for(sub { !grep { audit_count($_, 'denied', $bad) != 1 }
                                @nodes }, 5),
   'a signed record moved to another key: refused (denied) everywhere');
ok(none_hold(), '... and not applied');
$etcd->etcdctl('del', $K);

# a genuine signed record put back after its clear (no lease, or another)
($rc) = $etcd->etcdctl('put', $K, $saved);
$bad = revision_of();
ok($etcd->wait_for(sub { !grep { audit_count($_, 'denied', $bad) != 1 }
                                @nodes }, 5),
   'a signed record replayed into etcd off its lease: denied everywhere');
ok(none_hold(), '... and not applied');
like($nodes[0]->report->{upstreams}{app}{message},
     qr/not on the lease its writer signed/, '... the report says why');
$etcd->etcdctl('del', $K);

# ---- run killed with SIGKILL: every nginx restores within TTL + 2 s
my $pid = $etcd->cli_start('run', 'run', @W, '--upstream', 'app',
    '--no-failover', '--ttl', '3s', '--reason', 'chaos', '--', 'sleep', '60');
ok($etcd->wait_for(sub { all_hold() }, 8), 'run: all nginx hold the flag');
sleep 3.5;
ok(all_hold(), 'still held after more than one TTL (heartbeat re-signs)');
kill 'KILL', $pid;
$etcd->cli_wait($pid, 5);
$t0 = time;
ok($etcd->wait_for(sub { none_hold() }, 8),
   'run killed with SIGKILL: every nginx restores');
my $lapse = time - $t0;
cmp_ok($lapse, '<=', 5, sprintf('within TTL + 2 s (%.2f s)', $lapse));
diag(sprintf('killed run: all three nginx restored %.2f s after SIGKILL '
             . '(ttl 3s)', $lapse));

# ---- one etcd member killed: nothing changes, the fleet still works
# each nginx has backends of its own: lb1's b2 is a server of lb1 only
($rc) = $etcd->cli('set', @W, '--upstream', 'app', '--pin', $b2,
                   '--ttl', '60s', '--reason', 'pin lb1 b2');
$rev = revision_of();
ok($etcd->wait_for(sub { all_hold($rev, $nodes[0]) }, 5), 'lb1 pins');
ok($etcd->wait_for(sub { my $x = $nodes[1]->report;
                         ($x->{upstreams}{app}{result} // '') eq 'refused'
                         && $x->{upstreams}{app}{revision} == $rev }, 5),
   'lb2, whose upstream lacks that server, reports the pin refused')
    or diag(encode_json($nodes[1]->report));
like($nodes[1]->report->{upstreams}{app}{message}, qr/409 PinConflict/,
     '... with nginx\'s 409');
ok(none_hold($nodes[1], $nodes[2]), '... and lb2, lb3 keep HA on');

($rc) = $etcd->cli('set', @W, '--upstream', 'app', '--no-failover',
                   '--ttl', '60s', '--reason', 'member loss');
$rev = revision_of();
ok($etcd->wait_for(sub { all_hold($rev) }, 5), 'a flag on all three');
$etcd->kill_member(0);
my $changed = 0;
my $until = time + 3;
while (time < $until) {
    $changed++ unless all_hold($rev);
    sleep 0.1;
}
is($changed, 0, 'one etcd member killed: no nginx lost the flag for 3 s');
is($nodes[0]->acting->{source}, 'fleet', 'lb1 still acts on it');
ok($etcd->wait_quorum(10), 'the two members left have a quorum');
$t0 = time;
($rc, $out, $err) = $etcd->cli('clear', @W, '--upstream', 'app');
is($rc, 0, 'clear with a member down') or diag($err);
ok($etcd->wait_for(sub { none_hold() }, 10),
   'all three restore through the members left');
push @conv, time - $t0;
$etcd->start_member(0);
$etcd->wait_healthy(0);

# ---- a member that hangs (SIGSTOP) under a watch: the agents move
my ($via) = ($nodes[0]->agent_log =~ /.*reconciled at revision \d+ via (\S+)/s);
my ($hung) = grep { $etcd->url($_) eq ($via // '') } 0 .. 2;
ok(defined $hung, "lb1 watches through member $hung");
$hung //= 0;
kill 'STOP', $etcd->member_pid($hung);
my @W12 = ('--etcd', join(',', map { $etcd->url($_) } grep { $_ != $hung }
                                0 .. 2), @W[2 .. $#W]);
$t0 = time;
($rc, $out, $err) = $etcd->cli('set', @W12, '--upstream', 'app',
    '--no-failover', '--ttl', '60s', '--reason', 'member hangs');
is($rc, 0, 'set through the members that answer') or diag($err);
ok($etcd->wait_for(sub { all_hold() }, 15),
   "member $hung hangs: every agent moves its watch and applies the flag")
    or diag($nodes[0]->agent_log);
diag(sprintf('member %d stopped (SIGSTOP): all nginx obey %.2f s after the '
             . 'set', $hung, time - $t0));
like($nodes[0]->agent_log, qr/does not answer; watching through/,
     'lb1 says it left the member that hangs');
($rc) = $etcd->cli('clear', @W12, '--upstream', 'app');
ok($etcd->wait_for(sub { none_hold() }, 12), '... and the clear');
kill 'CONT', $etcd->member_pid($hung);
$etcd->wait_healthy($hung);

# ---- a second agent for one nginx (another environment): they undo
# each other; the one that removes the other's flag says so
($rc) = $etcd->cli('set', @W, '--upstream', 'app', '--no-failover',
                   '--ttl', '60s', '--reason', 'two agents');
$rev = revision_of();
ok($etcd->wait_for(sub { all_hold($rev) }, 5), 'a flag on the three');
my $n3x = $nodes[2];
my $intruder = $etcd->cli_start('agent-intruder', 'agent', '--etcd',
    $etcd->urls, '--environment', 'other', '--url', $n3x->admin_url,
    '--key', $n3x->{key}, '--trust-key', "$d/writer.pub",
    '--host', 'intruder');
ok($etcd->wait_for(sub { $etcd->log_of('agent-intruder.err')
                         =~ /app: fleet flag removed \(nginx had it from agent "lb3", this agent is "intruder": is a second agent running for this nginx\?\)/ }, 10),
   'a second agent for lb3\'s nginx names the agent whose flag it removed')
    or diag($etcd->log_of('agent-intruder.err'));
$etcd->cli_stop($intruder, 'TERM');
ok($etcd->wait_for(sub { all_hold($rev, $n3x) }, 5),
   '... stopped, lb3\'s own agent applies the flag again');
($rc) = $etcd->cli('clear', @W, '--upstream', 'app');
ok($etcd->wait_for(sub { none_hold() }, 5), '... and the clear');

# ---- a fourth nginx + agent started later gets the current flags
($rc) = $etcd->cli('set', @W, '--upstream', 'app', '--no-failover',
                   '--ttl', '8s', '--reason', 'late joiner');
$rev = revision_of();
ok($etcd->wait_for(sub { all_hold($rev) }, 5), 'a flag on the three');
my $n4 = HaOptout::Fleet->new(etcd => $etcd, host => 'lb4',
                              trust => ["$d/writer.pub"]);
push @nodes, $n4;
ok($etcd->wait_for(sub { all_hold($rev, $n4) }, 10),
   'a fourth nginx and agent started later get the current flag');

# ---- every etcd member stopped: local fleet flags lapse at their expiry
my $exp = $n4->fleet_layer->{expires_at};
$etcd->kill_member($_) for 0 .. 2;
ok(all_hold($rev), 'etcd gone: the flags stay until their expiry');
ok($etcd->wait_for(sub { none_hold() }, 12),
   'every etcd member stopped: each local fleet flag lapses');
my $late = time - HaOptout::Fleet::iso_time($exp);
cmp_ok($late, '<', 2, sprintf('at its expires_at (%.2f s after)', $late));
diag(sprintf('etcd down: local fleet flags lapsed %.2f s after their '
             . 'expires_at', $late));
ok(!$_->acting, $_->host . ': HA is back') for @nodes;
like($nodes[0]->agent_log, qr/etcd: .*again in \d+ ms/,
     'the agent backs off and retries');

diag(sprintf('set/clear -> all nginx obey: %s s',
             join(', ', map { sprintf '%.3f', $_ } @conv)));

$_->stop for @nodes;
$etcd->stop;
done_testing();
