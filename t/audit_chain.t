#!/usr/bin/perl

# The audit chain is one across restarts, zone resizes and log rotation
# (SPEC 8): after "nginx -s stop" and a start, after a reload that resizes
# the zone, after "nginx -s reopen" and after a restart with the log
# rotated away, "ha-optoutctl audit verify" passes over every file in
# order; a log whose last lines were removed fails "audit verify --state".

use strict;
use warnings;

use Test::More;
use FindBin;
use POSIX qw(_exit);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
my $dir = $t->state_dir;
my $d = $t->testdir;

my $conf = <<'EOF';
http {
    ha_optout_zone ha_optout %%ZONE%%;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/state/audit.jsonl;

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

sub conf_zone { (my $c = $conf) =~ s/%%ZONE%%/$_[0]/; $c }

my $log = "$dir/audit.jsonl";
my $state = "$dir/ha-optout.state";

sub cli {
    my ($out, $err) = ("$d/cli.out", "$d/cli.err");

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $CLI, @_ or _exit(127);
    }

    waitpid $pid, 0;
    return { rc => $? >> 8, out => $t->read_file($out),
             err => $t->read_file($err) };
}

sub lines { my $f = shift; -e $f ? split /(?<=\n)/, $t->read_file($f) : () }

sub last_hash {
    my @l = lines(shift);
    return @l && $l[-1] =~ /"hash": "([0-9a-f]{64})"\}$/ ? $1 : '';
}

# the state file names the last line (worker 0 follows the chain)
sub state_follows {
    my $f = shift // $log;
    return $t->wait_for(sub {
        my $h = last_hash($f);
        $h && $t->read_file($state) =~ /^audit_hash: \Q$h\E$/m;
    }, 5);
}

sub change {
    my ($i) = @_;
    my $r = $t->api(PUT => 'v1/flags/app', json => {
        failover => JSON::PP::false, ttl => '10m', reason => "change $i" });
    is($r->{status}, 200, "change $i answered 200");
}

$t->conf(conf_zone('1m'))->run;

###############################################################################
# a restart between two writes

change(1);
change(2);
ok(state_follows(), 'the state file holds the hash of the last audit line');

$t->stop;
$t->run;

change(3);

my @l = lines($log);
my ($prev) = $l[-1] =~ /"prev_hash": "([0-9a-f]{64})"/;
isnt($prev, '0' x 64, 'after a restart, the chain does not start again');

my $r = cli('audit', 'verify', $log);
is($r->{rc}, 0, 'a restart between two writes: audit verify ok')
    or diag $r->{out};

###############################################################################
# a reload that resizes the zone: a fresh zone continues the chain

$t->conf(conf_zone('2m'))->reload;
change(4);

$r = cli('audit', 'verify', $log);
is($r->{rc}, 0, 'a zone resize: audit verify ok') or diag $r->{out};

###############################################################################
# the last lines removed: --state sees it

ok(state_follows(), 'the state file follows the chain');

$r = cli('audit', 'verify', '--state', $state, $log);
is($r->{rc}, 0, 'the whole log verifies against the state file')
    or diag $r->{out};
like($r->{out}, qr/its audit_hash is line \d+; 0 lines after it/,
     'and the state file names its last line');

@l = lines($log);
$t->write_file('cut.jsonl', join '', @l[0 .. $#l - 2]);
$r = cli('audit', 'verify', "$d/cut.jsonl");
is($r->{rc}, 0, 'a log cut at a line is a sound chain on its own');
$r = cli('audit', 'verify', '--state', $state, "$d/cut.jsonl");
is($r->{rc}, 1, 'the last two lines removed: audit verify --state fails');
like($r->{out}, qr/lines at the end were removed/, 'and says so');

$t->write_file('cut1.jsonl', join '', @l[0 .. $#l - 1]);
is(cli('audit', 'verify', '--state', $state, "$d/cut1.jsonl")->{rc}, 1,
   'the last line removed: audit verify --state fails');

###############################################################################
# rotation: mv, then nginx -s reopen; the chain goes on in the new file

rename $log, "$log.1" or die "rename: $!\n";
my ($rc, $out) = $t->_system($t->_nginx_cmd('-s', 'reopen'));
is($rc, 0, 'nginx -s reopen') or diag $out;
ok($t->wait_for(sub { -e $log }, 5), 'the log is opened again');

change(5);
change(6);
ok($t->wait_for(sub { lines($log) >= 2 }, 3), 'new lines in the new file');

$r = cli('audit', 'verify', "$log.1", $log);
is($r->{rc}, 0, 'audit verify over the rotated file and the new one')
    or diag $r->{out};
like($r->{out}, qr/^ok: \d+ lines in 2 files$/m, 'counts both files');

$r = cli('audit', 'verify', $log, "$log.1");
is($r->{rc}, 1, 'files out of order fail');
like($r->{out}, qr/line 1: prev_hash is not where the chain starts/,
     'at the first line of the first file');

is(cli('audit', 'verify', $log)->{rc}, 1,
   'the new file alone does not start a chain');

ok(state_follows($log), 'the state file follows the chain in the new file');
is(cli('audit', 'verify', '--state', $state, "$log.1", $log)->{rc}, 0,
   'rotated files verify against the state file');
is(cli('audit', 'verify', '--state', $state, "$log.1")->{rc}, 1,
   'the newest file left out: --state fails');

###############################################################################
# rotated away (no reopen) and a restart: the new log is empty, the chain
# continues from the state file's hash

ok(state_follows($log), 'state file up to date before the rotation');
rename $log, "$log.2" or die "rename: $!\n";
$t->stop;
$t->run;
change(7);

$r = cli('audit', 'verify', "$log.1", "$log.2", $log);
is($r->{rc}, 0, 'rotated away, restarted: the chain goes on in the new log')
    or diag $r->{out};

###############################################################################
# a log that ends inside a line (a write was cut): nginx says so at start

$t->stop;
open my $fh, '>>', $log or die "$log: $!\n";
print $fh '{"time": "2026-12-01T10:00:00Z", "act';
close $fh;
$t->run;
like($t->error_log, qr/audit log "\Q$log\E" ends inside a line \(37 bytes of a cut write\): they were moved to "\Q$log\E\.torn\.\d+"/,
     'a torn last line is reported at start, and moved aside') or diag join "\n", grep { /inside/ } split /\n/, $t->error_log;
my @torn = glob("$log.torn.*");
is(scalar @torn, 1, 'one LOG.torn.<time> file');
is(@torn ? $t->read_file($torn[0]) : '', '{"time": "2026-12-01T10:00:00Z", "act',
   'it holds the piece, not deleted');
like($t->read_file($log), qr/\}\n\z/, 'the log ends with a whole line');
change(8);
$r = cli('audit', 'verify', "$log.1", "$log.2", $log);
is($r->{rc}, 0, 'and the chain goes on after it') or diag $r->{out};

###############################################################################
# a whole, valid last line that lacks only its newline: kept, not deleted

$t->stop;
my $whole = $t->read_file($log);
my $nlines = () = $whole =~ /\n/g;
chop $whole;
$t->write_file($log, $whole);
$t->run;
like($t->error_log, qr/last line of the audit log "\Q$log\E" lacked only its newline: it was added/,
     'a whole last line without its newline is reported at start')
    or diag join "\n", grep { /inside|newline/ } split /\n/, $t->error_log;
is(substr($t->read_file($log), 0, length($whole) + 1), "$whole\n",
   'it is kept, with its newline');
change(15);
$r = cli('audit', 'verify', "$log.1", "$log.2", $log);
is($r->{rc}, 0, 'the chain goes on from it') or diag $r->{out};

###############################################################################
# a chain that starts again in the middle (a log from before this version)
# is named as such

$t->write_file('restart.jsonl', join '', lines("$log.1"), lines("$log.1"));
$r = cli('audit', 'verify', "$d/restart.jsonl");
is($r->{rc}, 1, 'a chain that starts again in the middle fails');
like($r->{out}, qr/prev_hash is 64 zeros: the chain starts again here/,
     'and is named as a restart of the chain');

###############################################################################
# the end of the log cut while nginx is stopped: the state file's hash is
# not in the log nginx continues; a chain_gap line says so, audit verify
# fails on it (the chain itself stays sound)

change($_) for 9 .. 12;
ok(state_follows($log), 'the state file names the last of four lines');
my ($expected) = $t->read_file($state) =~ /^audit_hash: ([0-9a-f]{64})$/m;
$t->stop;
@l = lines($log);
$t->write_file($log, join '', @l[0 .. $#l - 2]);
my $found = last_hash($log);
my $ncut = () = lines($log);
$t->run;
change(13);

@l = lines($log);
like($l[$ncut], qr/"action": "chain_gap", "expected": "$expected", "found": "$found", "prev_hash": "$found"/,
     'a chain_gap line, chained to the last line left, comes first')
    or diag $l[$ncut];
like($t->error_log, qr/\[alert\] .*audit log "\Q$log\E" was cut while nginx was stopped/,
     'and an alert in error_log');
$r = cli('audit', 'verify', '--state', $state, "$log.1", "$log.2", $log);
is($r->{rc}, 1, 'audit verify --state fails after the cut and a restart')
    or diag $r->{out};
like($r->{out}, qr/^\Q$log\E: line \d+: the log was cut before this restart: the state file expected $expected/,
     'naming the chain_gap line') or diag $r->{out};
$r = cli('audit', 'verify', '--accept-gaps', "$log.1", "$log.2", $log);
is($r->{rc}, 0, '--accept-gaps accepts it') or diag $r->{out};
like($r->{out}, qr/^accepted: 1 chain_gap line/m, '... and counts it');

# no gap when the state file's hash is in the log (lines after it were
# written after the last save), nor after a clean restart

ok(state_follows($log), 'state file up to date');
$t->stop;
$t->run;
change(14);
unlike(join('', lines($log)) =~ s/^.*chain_gap.*\n//mr, qr/chain_gap/,
       'a clean restart writes no second chain_gap line');
is(scalar(() = join('', lines($log)) =~ /chain_gap/g), 1,
   'exactly one chain_gap line');

done_testing();
