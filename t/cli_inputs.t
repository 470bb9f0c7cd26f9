#!/usr/bin/perl

# ha-optoutctl against what an operator's own files and arguments hold
# (no nginx needed: each is refused, or read, before anything is sent):
#   - an agent --config with more trust-key entries than the CLI keeps (16,
#     as lines of their own, a list, or both) is refused naming the file,
#     the line and the limit, and never writes past its array;
#   - a bare --ttl 90 (no unit: the API takes Ns, Nm or Nh) is a usage
#     error saying to give a unit, for set, run and fleet set, instead of
#     a request nginx refuses (or, for a fleet set, a record in etcd).

use strict;
use warnings;

use Test::More;
use FindBin;
use POSIX qw(:sys_wait_h _exit);
use Time::HiRes qw(sleep time);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $t = HaOptout::Test->new;
my $d = $t->testdir;
my $key = $t->secret_file('admin.key');
my $dead = 'http://127.0.0.1:' . $t->dead_port('nobody');

# the CLI with a clean environment, killed after 10 s: {rc, sig, out, err}
# (rc undef when it was killed or died of a signal)
sub cli {
    my ($out, $err) = ("$d/cli.out", "$d/cli.err");

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{$_} for grep { /^HA_OPTOUT_/ } keys %ENV;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $CLI, @_ or _exit(127);
    }

    my $deadline = time + 10;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $deadline) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
            last;
        }
        sleep 0.05;
    }

    return { rc => WIFEXITED($?) ? WEXITSTATUS($?) : undef,
             sig => WIFSIGNALED($?) ? WTERMSIG($?) : 0,
             out => $t->read_file($out), err => $t->read_file($err) };
}

# ---------------------------------------------------------------- trust-key

my @keys = map { scalar $t->secret_file("trust$_.key") } 1 .. 20;

sub agent_conf {
    my ($name, @lines) = @_;
    return $t->write_file($name, join '', "etcd: $dead\n",
                          "environment: prod\n", "url: $dead/ha-optout/\n",
                          "key: $key\n", @lines);
}

# 20 lines "trust-key: FILE": the 17th (line 21) is one too many
my $conf = agent_conf('lines.yaml', map { "trust-key: $_\n" } @keys);
my $r = cli('agent', '--config', $conf);
is($r->{sig}, 0, '20 trust-key lines: no crash') or diag "signal $r->{sig}";
is($r->{rc}, 2, '... a usage error (exit 2)') or diag $r->{err};
like($r->{err}, qr/lines\.yaml:21: trust-key: at most 16 files/,
     '... naming the file, the line of the 17th and the limit');

# a list of 16, then one more on a line of its own
$conf = agent_conf('list.yaml', 'trust-key: [' . join(', ', @keys[0 .. 15])
                   . "]\n", "trust-key: $keys[16]\n");
$r = cli('agent', '--config', $conf);
is($r->{sig}, 0, 'a list of 16 trust-key and one more: no crash');
is($r->{rc}, 2, '... exit 2') or diag $r->{err};
like($r->{err}, qr/list\.yaml:6: trust-key: at most 16 files/,
     '... naming line 6 and the limit');

# a list of 17
$conf = agent_conf('list17.yaml', "trust-key:\n",
                   map { "  - $_\n" } @keys[0 .. 16]);
$r = cli('agent', '--config', $conf);
is($r->{rc}, 2, 'a list of 17 trust-key: exit 2') or diag $r->{err};
like($r->{err}, qr/list17\.yaml:22: trust-key: at most 16/,
     '... naming the 17th item\'s line');

# 16 are taken: the next setting is read (and here refused)
$conf = agent_conf('sixteen.yaml', (map { "trust-key: $_\n" } @keys[0 .. 15]),
                   "colour: red\n");
$r = cli('agent', '--config', $conf);
is($r->{rc}, 2, '16 trust-key lines are read on') or diag $r->{err};
like($r->{err}, qr/sixteen\.yaml:21: unknown setting "colour"/,
     '... to the next setting');

# ---------------------------------------------------------------- --ttl

my @set = ('--url', "$dead/ha-optout/", '--key', $key, '--upstream', 'app',
           '--no-failover', '--reason', 'INC-1');

for my $ttl ('90', '0090', '1') {
    $r = cli('set', @set, '--ttl', $ttl);
    is($r->{rc}, 2, "set --ttl $ttl (no unit): usage error, nothing sent")
        or diag $r->{err};
    like($r->{err}, qr/--ttl \Q$ttl\E: give a unit, e\.g\. \Q$ttl\Es or \Q$ttl\Em/,
         '... saying to give a unit');
}

$r = cli('run', @set, '--ttl', '90', '--', 'true');
is($r->{rc}, 2, 'run --ttl 90: usage error, the command does not run')
    or diag $r->{err};
like($r->{err}, qr/--ttl 90: give a unit/, '... saying to give a unit');

$r = cli('set', '--etcd', $dead, '--environment', 'prod', @set[2 .. $#set],
         '--ttl', '90', '--timeout', '2');
is($r->{rc}, 2, 'fleet set (--etcd) --ttl 90: usage error') or diag $r->{err};

$r = cli('set', @set, '--ttl', '90s', '--timeout', '2');
is($r->{rc}, 3, 'set --ttl 90s is sent (here: unreachable, exit 3)')
    or diag $r->{err};

done_testing();
