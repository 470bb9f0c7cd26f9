#!/usr/bin/perl

# ha-optoutctl run: HA is off exactly while the command runs.  The
# heartbeat keeps a short TTL alive, every way the command can end clears
# the flag, and a killed CLI leaves a flag that lapses within one TTL.

use strict;
use warnings;

use Test::More;
use FindBin;
use POSIX qw(_exit WNOHANG);
use Time::HiRes qw(sleep time);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
my $key = $t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF

$t->run;

my $d = $t->testdir;
my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
my @run = ('run', '--url', $url, '--key', $key, '--upstream', 'app',
           '--no-failover', '--reason', 'chaos test');

# starts the CLI in the background; returns its pid.  The CLI gets the
# signal dispositions this test was started with (a CI job or "make test &"
# ignores SIGINT) unless @IGNORE names signals to ignore on purpose.
our @IGNORE;

sub start {
    my (@args) = @_;
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        $SIG{$_} = 'IGNORE' for @IGNORE;
        delete $ENV{"HA_OPTOUT_$_"} for qw(URL TOKEN KEY ALG KID AUD);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/cli.out";
        open STDERR, '>>', "$d/cli.err";
        exec $CLI, @args or _exit(127);
    }
    return $pid;
}

# waits for a pid; returns its exit code, or 128+signal, or undef on timeout
sub finish {
    my ($pid, $timeout) = @_;
    my $deadline = time + ($timeout // 20);
    while (time < $deadline) {
        return $? & 127 ? 128 + ($? & 127) : $? >> 8
            if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return undef;
}

sub flag {
    return $t->api(GET => 'v1/flags/app')->{json};
}

sub flag_set { defined flag() }

###############################################################################

# heartbeat: a 3 s TTL outlives itself while an 8 s command runs

my $t0 = time;
my $pid = start(@run, '--ttl', '3s', '--', 'sh', '-c', 'sleep 8; exit 7');

ok($t->wait_for(\&flag_set, 3), 'run sets the flag before the command runs');
is(flag() && flag()->{failover} ? 'on' : 'off', 'off', 'failover is off');

sleep(5 - (time - $t0)) if time - $t0 < 5;
ok(flag_set(), 'the flag is still set past its 3 s TTL: the heartbeat '
   . 'renews it');

sleep(7 - (time - $t0)) if time - $t0 < 7;
ok(flag_set(), 'and still set while the command runs');

is(finish($pid), 7, 'run returns the command\'s exit status');
ok(time - $t0 >= 7.9, 'run waited for the command');
ok(!flag_set(), 'the flag is cleared when the command ends');

my $audit = $t->api(GET => 'v1/audit?limit=50')->{json};
$audit = $audit->{entries} if ref $audit eq 'HASH';
my @updates = grep { ($_->{action} // '') eq 'update' }
              ref $audit eq 'ARRAY' ? @$audit : ();
ok(@updates >= 4, 'heartbeats renewed the TTL every third of it')
    or diag explain $audit;

# exit status

$pid = start(@run, '--ttl', '1m', '--', 'true');
is(finish($pid), 0, 'a command that succeeds: exit 0');
ok(!flag_set(), 'flag cleared after success');

$pid = start(@run, '--ttl', '1m', '--', "$d/no-such-command");
is(finish($pid), 127, 'a command that cannot be found: exit 127');
ok(!flag_set(), 'flag cleared after a command that never ran');

# signals

$pid = start(@run, '--ttl', '1m', '--', 'sleep', '30');
ok($t->wait_for(\&flag_set, 3), 'flag set for a long command');
kill 'TERM', $pid;
is(finish($pid, 10), 128 + 15,
   'SIGTERM reaches the command; run returns 128+15');
ok(!flag_set(), 'the flag is cleared after SIGTERM');

# the script says when its trap is set: no guessed sleep before the kill
$t->write_file('trap.sh', <<'EOF', 0755);
#!/bin/sh
trap 'echo interrupted > "$1"; exit 5' INT
echo ready > "$1.ready"
sleep 30 &
wait
EOF

# started as a shell starts a background job or CI starts "make test":
# SIGINT and SIGQUIT ignored; and as a terminal starts it

for my $how ('with SIGINT and SIGQUIT ignored', 'with default signals') {
    local @IGNORE = $how =~ /ignored/ ? qw(INT QUIT) : ();
    unlink "$d/trap.out", "$d/trap.out.ready";

    $pid = start(@run, '--ttl', '1m', '--', "$d/trap.sh", "$d/trap.out");
    ok($t->wait_for(sub { -e "$d/trap.out.ready" }, 5),
       "$how: the command runs and has set its SIGINT trap");
    ok(flag_set(), "$how: the flag is set meanwhile");
    kill 'INT', $pid;
    is(finish($pid, 10), 5, "$how: SIGINT is passed on; the command's own "
       . 'status comes back');
    like(-e "$d/trap.out" ? $t->read_file('trap.out') : '', qr/interrupted/,
         "$how: the command saw the SIGINT");
    ok(!flag_set(), "$how: the flag is cleared after SIGINT");
}

# a command started ignoring SIGTERM would outlive a kill aimed at run

{
    local @IGNORE = qw(INT QUIT TERM);
    $pid = start(@run, '--ttl', '1m', '--', 'sleep', '30');
    ok($t->wait_for(\&flag_set, 3), 'started with SIGTERM ignored: flag set');
    kill 'TERM', $pid;
    is(finish($pid, 10), 128 + 15,
       'SIGTERM still reaches the command: run returns 128+15');
    ok(!flag_set(), 'the flag is cleared');
}

# a refused or unreachable set: the command is not run

$pid = start('run', '--url', $url, '--key', $key, '--upstream', 'nosuch',
             '--no-failover', '--ttl', '1m', '--reason', 'x', '--',
             'touch', "$d/ran");
is(finish($pid), 1, 'a refused set exits 1');
ok(!-e "$d/ran", 'and the command is not run');

my $dead = 'http://127.0.0.1:' . $t->dead_port('nobody') . '/ha-optout/';
$pid = start('run', '--url', $dead, '--key', $key, '--upstream', 'app',
             '--no-failover', '--ttl', '1m', '--reason', 'x', '--',
             'touch', "$d/ran");
is(finish($pid), 3, 'nginx unreachable exits 3');
ok(!-e "$d/ran", 'and the command is not run');

# SIGKILL: nothing can clear the flag, the TTL does

$pid = start(@run, '--ttl', '3s', '--', 'sh', '-c',
             "echo \$\$ > $d/child.pid; exec sleep 20");
ok($t->wait_for(\&flag_set, 3), 'flag set');
ok($t->wait_for(sub { -s "$d/child.pid" }, 5), 'the command runs');
kill 'KILL', $pid;
my $killed = time;
is(finish($pid), 128 + 9, 'the CLI is killed');
ok(flag_set(), 'the flag outlives a killed CLI for a moment');

ok($t->wait_for(sub { !flag_set() }, 5),
   'and lapses within one TTL (plus the expiry timer)');
ok(time - $killed < 3 + 1.5, 'within 4.5 s of the kill')
    or diag(time - $killed);

my ($child) = $t->read_file('child.pid') =~ /(\d+)/;
kill 'KILL', $child if $child;

# usage

$pid = start(@run, '--ttl', '1m');
is(finish($pid), 2, 'run without a command is a usage error');

$pid = start('run', '--url', $url, '--key', $key, '--upstream', 'app',
             '--no-failover', '--ttl', 'none', '--reason', 'x', '--', 'true');
is(finish($pid), 2, 'run needs a finite TTL');

done_testing();
