#!/usr/bin/perl

# ha-optoutctl fleet: one change across three nginx instances, in
# parallel, one line each; a down instance is reported, never hidden.

use strict;
use warnings;

use Test::More;
use FindBin;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(_exit);
use Time::HiRes qw(time);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $CONF = <<'EOF';
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
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

# three instances, each with a secret of its own
my %nginx;
for my $name (qw(eu1 eu2 us1)) {
    my $t = HaOptout::Test->new(workers => 1);
    $t->secret_file;
    $t->conf($CONF)->run;
    $nginx{$name} = $t;
}

my $eu1 = $nginx{eu1};
my $d = $eu1->testdir;

sub url { 'http://127.0.0.1:' . $nginx{$_[0]}->port('http') . '/ha-optout/' }

my $down = 'http://127.0.0.1:' . $eu1->dead_port('down') . '/ha-optout/';

# keys by relative path: relative to the fleet file
mkdir "$d/keys";
for my $name (keys %nginx) {
    $eu1->write_file("keys/$name.key",
                     $eu1->read_file($nginx{$name}->testdir
                                     . '/ha-optout.key'), 0600);
}

my $good = "instances:\n"
    . join('', map { "  - {name: $_, url: \"" . url($_) . "\", "
                     . "key: keys/$_.key, kid: ops}\n" } qw(eu1 eu2 us1));

$eu1->write_file('fleet.yaml', $good);
$eu1->write_file('fleet-down.yaml',
                 $good . "  - name: ap1\n    url: $down\n"
                 . "    key: keys/eu1.key\n");

# runs the CLI with a clean environment; returns {rc, out, err}
sub cli {
    my ($out, $err) = ("$d/cli.out", "$d/cli.err");

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{"HA_OPTOUT_$_"} for qw(URL TOKEN KEY ALG KID AUD);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $CLI, @_ or _exit(127);
    }

    waitpid $pid, 0;
    return { rc => $? >> 8, out => $eu1->read_file($out),
             err => $eu1->read_file($err) };
}

sub flag {
    my ($name) = @_;
    my $t = $nginx{$name};
    return $t->api(GET => 'v1/flags/app', token_args => { kid => 'ops' })
        ->{json};
}

sub line {
    my ($r, $name) = @_;
    return (grep { /^\Q$name\E\s/ } split /\n/, $r->{out})[0] // '';
}

my @set = ('set', '--upstream', 'app', '--no-failover', '--ttl', '10m',
           '--reason', 'region drill');

###############################################################################

my $r = cli('fleet', '--fleet', "$d/fleet.yaml", @set);
is($r->{rc}, 0, 'fleet set converges on every instance: exit 0')
    or diag $r->{out}, $r->{err};
for my $name (qw(eu1 eu2 us1)) {
    like(line($r, $name), qr/\bok\s+app: HA suspended: failover=off/,
         "$name reports its flag");
    ok(flag($name) && !flag($name)->{failover}, "$name has failover off");
}

$r = cli('fleet', '--fleet', "$d/fleet.yaml", 'status');
is($r->{rc}, 0, 'fleet status: exit 0');
is(scalar(() = $r->{out} =~ /1 with HA suspended; app failover=off/g), 3,
   'fleet status shows the flag on each instance') or diag $r->{out};

$r = cli('fleet', '--fleet', "$d/fleet.yaml", 'status', '--json');
my $j = eval { decode_json($r->{out}) };
is(join(',', sort keys %{ $j // {} }), 'eu1,eu2,us1',
   'fleet status --json is keyed by instance');
is($j && $j->{eu2}{state}, 'ok', 'with a state per instance');

# a down instance

$r = cli('fleet', '--fleet', "$d/fleet-down.yaml", 'clear', '--upstream',
         'app');
is($r->{rc}, 3, 'one instance unreachable, none refused: exit 3');
like(line($r, 'ap1'), qr/\bunreachable\s+cannot reach/,
     'the down instance is reported, not hidden');
like(line($r, 'eu2'), qr/\bok\s+app: HA restored/,
     'the others are still changed');
ok(!defined flag($_), "$_ has HA back") for qw(eu1 eu2 us1);

# a refusing instance

$eu1->write_file('fleet-mixed.yaml', "instances:\n"
    . "  - {name: eu1, url: \"" . url('eu1') . "\", key: keys/eu1.key, "
    . "kid: ops}\n"
    . "  - {name: eu2, url: \"" . url('eu2') . "\", key: keys/us1.key, "
    . "kid: ops}\n"
    . "  - {name: ap1, url: \"$down\", key: keys/eu1.key}\n");

$r = cli('fleet', '--fleet', "$d/fleet-mixed.yaml", @set);
is($r->{rc}, 1, 'one instance refused: exit 1, even with one down');
like(line($r, 'eu2'), qr/\brefused\s+401 /, 'the refusal is named');
like(line($r, 'eu1'), qr/\bok\b/, 'the instance that agreed says so');
like(line($r, 'ap1'), qr/\bunreachable\b/, 'the down one says so');
ok(flag('eu1'), 'fleet does not roll back what converged');
cli('fleet', '--fleet', "$d/fleet.yaml", 'clear', '--upstream', 'app');

# in parallel: two instances that accept but never answer cost one timeout

my @hole = map { IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => 0, Listen => 16,
                                       Proto => 'tcp') } 1 .. 2;
$eu1->write_file('fleet-slow.yaml', $good . join '', map {
    "  - {name: hole$_, url: \"http://127.0.0.1:" . $hole[$_]->sockport
    . "/ha-optout/\", key: keys/eu1.key}\n" } 0 .. 1);

my $t0 = time;
$r = cli('fleet', '--fleet', "$d/fleet-slow.yaml", '--timeout', '2',
         'status');
my $took = time - $t0;
is($r->{rc}, 3, 'instances that time out are unreachable: exit 3');
like(line($r, 'hole1'), qr/\bunreachable\b/, 'a hung instance is reported');
ok($took < 3.5, 'instances are asked in parallel') or diag "took $took s";

# usage

$eu1->write_file('bad.yaml', "instances:\n  - {name: x, url: y, kye: z}\n");
$r = cli('fleet', '--fleet', "$d/bad.yaml", 'status');
is($r->{rc}, 2, 'an unknown field is a usage error');
like($r->{err}, qr/bad\.yaml:2:\d+: unknown instance field "kye"/,
     'named with file:line:column');

$eu1->write_file('broken.yaml', "instances:\n  - name: x\n   url: y\n");
$r = cli('fleet', '--fleet', "$d/broken.yaml", 'status');
is($r->{rc}, 2, 'broken YAML is a usage error');
like($r->{err}, qr/broken\.yaml:\d+:\d+: /, 'named with file:line:column');

is(cli('fleet', '--fleet', "$d/fleet.yaml", 'restart')->{rc}, 2,
   'an unknown fleet action is a usage error');
is(cli('fleet', '--fleet', "$d/nonexistent.yaml", 'status')->{rc}, 2,
   'a missing fleet file is a usage error');

done_testing();
