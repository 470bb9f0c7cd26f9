#!/usr/bin/perl

# ha-optoutctl audit verify: the audit log nginx writes is a SHA-256 hash
# chain; an edited, deleted or moved line is named by its number.

use strict;
use warnings;

use Test::More;
use FindBin;
use Digest::SHA qw(sha256_hex);
use POSIX qw(_exit);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
my $key = $t->secret_file;
my $state = $t->state_dir;

$t->conf(<<'EOF');
http {
    ha_optout_zone        ha_optout 1m;
    ha_optout_environment staging;
    ha_optout_audit_log   %%TESTDIR%%/state/audit.jsonl;

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
    return { rc => $? >> 8, out => $t->read_file($out),
             err => $t->read_file($err) };
}

sub lines { split /(?<=\n)/, $_[0] }

###############################################################################

# a few changes through the API, with a reason that looks like a member

my @c = ('--url', $url, '--key', $key, '--upstream', 'app');
cli('set', @c, '--no-failover', '--ttl', '5m', '--reason',
    'INC-1 "quoted", "hash": "not really"');
cli('run', @c, '--no-failover', '--ttl', '3s', '--reason', 'heartbeat',
    '--', 'sleep', '1.5');
cli('set', @c, '--sticky', '--ttl', '5m', '--reason', 'sticky');
cli('clear', @c);

my $log = "$state/audit.jsonl";
$t->wait_for(sub { (() = $t->read_file($log) =~ /\n/g) >= 5 }, 3);
my @l = lines($t->read_file($log));
ok(@l >= 5, 'nginx wrote the changes to the audit log') or diag scalar @l;

my $r = cli('audit', 'verify', $log);
is($r->{rc}, 0, 'the log nginx wrote verifies: exit 0') or diag $r->{out};
is($r->{out}, 'ok: ' . scalar(@l) . " lines\n", 'verify counts the lines');

# tampering, named by line

my $edited = join '', map { $_ == 2 ? $l[$_] =~ s/"app"/"ap2"/r : $l[$_] }
                      0 .. $#l;
$t->write_file('edited.jsonl', $edited);
$r = cli('audit', 'verify', "$d/edited.jsonl");
is($r->{rc}, 1, 'an edited line fails: exit 1');
like($r->{out}, qr/^line 3: hash does not match/, 'and is named: line 3');

$t->write_file('deleted.jsonl', join '', @l[0, 2 .. $#l]);
$r = cli('audit', 'verify', "$d/deleted.jsonl");
is($r->{rc}, 1, 'a deleted line fails');
like($r->{out}, qr/^line 2: prev_hash does not match/,
     'the line after the gap is named');

$t->write_file('swapped.jsonl', join '', @l[0, 2, 1, 3 .. $#l]);
like(cli('audit', 'verify', "$d/swapped.jsonl")->{out}, qr/^line 2: /,
     'moved lines fail at the first one out of place');

$t->write_file('head.jsonl', join '', @l[1 .. $#l]);
$r = cli('audit', 'verify', "$d/head.jsonl");
like($r->{out}, qr/^line 1: prev_hash/, 'a cut head fails at line 1');

my ($prev) = $l[0] =~ /"hash": "([0-9a-f]{64})"\}$/;
$r = cli('audit', 'verify', '--prev-hash', $prev, "$d/head.jsonl");
is($r->{rc}, 0, 'a rotated log verifies from the hash it continues');

$t->write_file('truncated.jsonl', join '', @l[0 .. $#l - 1],
               substr($l[-1], 0, 40));
like(cli('audit', 'verify', "$d/truncated.jsonl")->{out},
     qr/^line ${\ scalar @l}: not valid JSON/, 'a torn last line is named');

# the chain as docs/cli.md defines it, built here independently

my $hash = '0' x 64;
my $chain = '';
for my $i (1 .. 3) {
    my $text = qq({"time": "2026-11-27T10:00:0${i}Z", "action": "set", )
        . qq("upstream": "app", "reason": "r$i", "prev_hash": "$hash"});
    $hash = sha256_hex($text);
    $chain .= substr($text, 0, -1) . qq(, "hash": "$hash"}\n);
}
$t->write_file('doc.jsonl', $chain);
is(cli('audit', 'verify', "$d/doc.jsonl")->{out}, "ok: 3 lines\n",
   'the documented definition verifies');
$t->write_file('one.jsonl', (split /(?<=\n)/, $chain)[0]);
is(cli('audit', 'verify', "$d/one.jsonl")->{out}, "ok: 1 line\n",
   'one line is "1 line", not "1 lines"');

# hostile bytes in a log line or a file name do not reach the terminal
# raw: jansson's error text quotes the bad token, ESC included

$t->write_file('esc.jsonl', join '', @l[0 .. $#l - 1],
               "{\"a\": \e]0;owned\a\e[2J}\n");
$r = cli('audit', 'verify', "$d/esc.jsonl");
is($r->{rc}, 1, 'a line with ESC bytes fails');
like($r->{out}, qr/^line ${\ scalar @l}: not valid JSON/, '... named');
unlike($r->{out} . $r->{err}, qr/[\x00-\x08\x0b-\x1f\x7f]/,
       'no raw control byte in what verify prints') or diag explain $r;

my $evil = "$d/e\e[2Jvil.jsonl";
$t->write_file("e\e[2Jvil.jsonl", join '', @l);
$r = cli('audit', 'verify', $evil, "$d/head.jsonl");
unlike($r->{out} . $r->{err}, qr/[\x00-\x08\x0b-\x1f\x7f]/,
       'a file name with ESC is printed escaped') or diag explain $r;
$r = cli('audit', 'verify', "$d/no\e[2Jne.jsonl");
is($r->{rc}, 2, 'a missing file with ESC in its name: usage error');
unlike($r->{out} . $r->{err}, qr/[\x00-\x08\x0b-\x1f\x7f]/,
       '... its name printed escaped') or diag explain $r;

is(cli('audit', 'verify', "$d/none.jsonl")->{rc}, 2,
   'a missing file is a usage error');
is(cli('audit', 'verify')->{rc}, 2, 'no file is a usage error');

done_testing();
