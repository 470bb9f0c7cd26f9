#!/usr/bin/perl

# The agent's systemd units as an operator installs them: the binary each
# ExecStart names is where that install puts it (make install: PREFIX/bin;
# the Debian package: /usr/bin), the options it passes (with the settings
# the unit's header shows in /etc/default/ha-optout-agent) are options the
# real agent accepts, and a usage error (exit 2) is not restarted forever.
# No systemd needed: the ExecStart line is run as systemd would run it.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Time::HiRes qw(sleep time);
use POSIX qw(WNOHANG);
use HaOptout::Test;

my $ROOT = abs_path(dirname(__FILE__) . '/..');
my $CTL = "$ROOT/build/ha-optoutctl";

plan skip_all => 'CLI not built (make cli)' unless -x $CTL;

my $t = HaOptout::Test->new;
my $D = $t->testdir;

sub unit {
    my ($file) = @_;
    my $text = $t->read_file("$ROOT/$file");
    $text =~ s/\\\n\s*/ /g;                     # continuation lines
    my %u = (text => $text);
    ($u{exec}) = $text =~ /^ExecStart=(.*)$/m;
    $u{env} = { $text =~ /^#\s+(HA_OPTOUT_\w+)=(.*)$/mg };
    return \%u;
}

my ($prefix) = $t->read_file("$ROOT/Makefile") =~ /^PREFIX\s*\?=\s*(\S+)/m;
my ($deb_bin) = $t->read_file("$ROOT/debian/rules")
                =~ m{debian/tmp(/\S*/ha-optoutctl)\b};

my %UNITS = ('contrib/ha-optout-agent.service' => "$prefix/bin/ha-optoutctl",
             'debian/ha-optoutctl.ha-optout-agent.service' => $deb_bin);

# the credentials systemd would hand over, and the Debian unit's YAML
my $cred = "$D/credentials";
mkdir $cred;
$t->secret_file("$cred/agent.key");
system("openssl genpkey -algorithm ED25519 -out $D/ops.pem 2>/dev/null"
       . " && openssl pkey -in $D/ops.pem -pubout -out $cred/trust.pem") == 0
    or die "openssl failed\n";
my $dead = 'http://127.0.0.1:' . $t->port('dead');
$t->write_file("$D/agent.yaml", "etcd: [$dead]\nenvironment: production\n"
    . "url: $dead/ha-optout/\nkey: $cred/agent.key\n"
    . "trust-key: [$cred/trust.pem]\n");

for my $file (sort keys %UNITS) {
    my $u = unit($file);
    ok($u->{exec}, "$file: has an ExecStart") or next;

    my ($bin, @args) = split ' ', $u->{exec};
    is($bin, $UNITS{$file}, "$file: ExecStart names $UNITS{$file}, where "
       . 'that install puts ha-optoutctl');
    like($u->{text}, qr/^RestartPreventExitStatus=2$/m,
         "$file: a usage error (exit 2) is not restarted");

    # as systemd would run it: %d the credentials, $VARS from the defaults
    my %env = (%{ $u->{env} }, HA_OPTOUT_ETCD => $dead);
    @args = map {
        my $a = $_;
        $a =~ s{%d}{$cred}g;
        $a =~ s{^/etc/ha-optout/agent\.yaml$}{$D/agent.yaml};
        $a =~ /^\$(\w+)$/ ? split(' ', ($env{$1} // '') =~ s/^"|"$//gr) : $a
    } @args;
    s{^http://127\.0\.0\.1/}{$dead/} for @args;

    my $log = "$D/agent.log";
    unlink $log;
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        @ENV{keys %env} = values %env;
        open STDERR, '>', $log or die;
        open STDOUT, '>', '/dev/null' or die;
        exec $CTL, @args or die;
    }

    my ($started, $rc) = (0, undef);
    my $deadline = time + 10;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) { $rc = $? >> 8; last }
        if (-s $log && $t->read_file($log) =~ /agent \S+: watching /) {
            $started = 1;
            last;
        }
        sleep 0.05;
    }
    ok($started, "$file: the agent accepts every option ExecStart passes "
       . '(' . join(' ', @args) . ')')
        or diag("exit " . ($rc // 'none') . ":\n"
                . (-e $log ? $t->read_file($log) : ''));

    # systemctl reload: ExecReload sends SIGHUP; the agent reads its keys
    # (and --config) again and keeps running, its flags kept up
    my ($reload) = $u->{text} =~ /^ExecReload=(.*)$/m;
    is($reload, '/bin/kill -HUP $MAINPID',
       "$file: systemctl reload sends SIGHUP to the agent");
    if ($started && !defined $rc) {
        kill 'HUP', $pid;
        my $reloaded = 0;
        $deadline = time + 10;
        while (time < $deadline) {
            if (waitpid($pid, WNOHANG) == $pid) { $rc = $? >> 8; last }
            if ($t->read_file($log) =~ /agent \S+: SIGHUP: reloaded 1 trusted keys/) {
                $reloaded = 1;
                last;
            }
            sleep 0.05;
        }
        ok($reloaded && !defined $rc && waitpid($pid, WNOHANG) == 0,
           "$file: after SIGHUP the agent has reloaded and still runs")
            or diag("exit " . ($rc // 'none') . ":\n"
                    . $t->read_file($log));
    }

    if (!defined $rc) {
        kill 'TERM', $pid;
        waitpid($pid, 0);
    }
}

# what RestartPreventExitStatus=2 relies on
my $rc = system("$CTL agent --no-such-option >/dev/null 2>&1") >> 8;
is($rc, 2, 'an unknown agent option exits 2');

done_testing;
