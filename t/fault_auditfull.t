#!/usr/bin/perl

# Fault test (docs/reliability.md, "Hostile inputs"): the audit log cannot
# take a line, because its file system is full (a 64k tmpfs mounted under
# it; needs root and a mount-capable sandbox, else skipped with the
# reason).  The file is filled so that the next line straddles its last
# page: write() stops short, which used to leave half a line that the next
# line was appended to (the log never verified again), and the change was
# applied although it was not audited.
#
# - a PUT that suspends HA is refused 503 AuditNotWritten, nothing of it
#   acts (GET, traffic), and the log is exactly as before: no partial line;
# - a DELETE restores HA at once (200, "persisted": false, traffic round
#   robin again) with an alert in error_log;
# - once there is room, worker 0's timer writes the waiting line by itself,
#   error_log says so, every line is one JSON object and
#   `ha-optoutctl audit verify` accepts the chain;
# - the state file's audit_hash is always the hash of a line in the log:
#   the restore saved while its line waits names the last line written,
#   and once the line is written the state file follows it (the timer's
#   one persist mechanism), so `audit verify --state` accepts the log.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Load qw(audit_verify);

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
$t->state_dir;

my $adir = $t->testdir . '/auditfs';
my $log = "$adir/audit.jsonl";
mkdir $adir, 0755 or die "$adir: $!\n";
my (undef, undef, $uid, $gid) = getpwnam('nobody');

my ($mounted, $why_not);
if ($> != 0) {
    $why_not = 'not root: cannot mount a tmpfs';
} elsif (system('mount', '-t', 'tmpfs', '-o',
                "size=64k,uid=$uid,gid=$gid,mode=0755", 'tmpfs', $adir) != 0)
{
    $why_not = 'mount -t tmpfs refused in this sandbox';
} else {
    $mounted = 1;
}

# nginx holds the log open: stopped before the file system goes
END { if ($mounted) { $t->stop if $t; system('umount', $adir) } }

plan skip_all => "full audit file system: $why_not" unless $mounted;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/auditfs/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

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

$t->run;

my $b1 = '127.0.0.1:' . $t->port('b1');

sub flag { $t->api(GET => 'v1/flags/app')->{json} }
sub logtext { local $/; open my $f, '<', $log or return ''; <$f> }

my $state = $t->testdir . '/state/ha-optout.state';
sub last_hash { logtext() =~ /"hash": "([0-9a-f]{64})"\}\n\z/ ? $1 : '' }
sub state_hash {
    $t->read_file($state) =~ /^audit_hash: ([0-9a-f]{64})$/m ? $1 : '';
}

# lines of one shape (a PUT replacing a PUT) until the next one would
# cross the end of the file's last 4k page
my $reason = 'r' x 200;
my ($n, $len, $size) = (0, 0, 0);
while ($n++ < 60) {
    my $r = $t->api(PUT => 'v1/flags/app', json => {
        pin => $b1, ttl => '10m', reason => sprintf('%03d%s', $n, $reason) });
    die "PUT $n: $r->{status}\n" unless $r->{status} == 200;
    my $new = -s $log;
    $len = $new - $size;
    $size = $new;
    my $room = 4096 - $size % 4096;
    last if $n > 2 && $room > 64 && $room < $len - 64;
}
my $pinned = flag();
is($pinned->{pin}, $b1, "a pin is set ($n lines of $len bytes, the last page "
                        . "of the log has " . (4096 - $size % 4096) . ' left)');

# fill the file system: no page is left, the log's last page has room
for my $i (1 .. 64) {
    last if system("dd if=/dev/zero of=$adir/filler.$i bs=4k count=16 "
                   . "2>/dev/null") != 0;
}
my $before = logtext();

###############################################################################
# a suspension that cannot be audited is refused, and leaves no partial line

my $put = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '5m',
    reason => sprintf('%03d%s', $n + 1, $reason) });
is($put->{status}, 503, 'a PUT whose audit line does not fit is refused 503');
is($put->{json}{error}{code}, 'AuditNotWritten', 'as JSON AuditNotWritten');
is(logtext(), $before, 'the audit log is exactly as before: no partial line');
my $f = flag();
is($f->{version}, $pinned->{version}, 'GET: the flag is unchanged');
ok(!defined $f->{failover} || $f->{failover}, 'GET: failover is not off');
like($t->error_log, qr/audit line cut after \d+ of \d+ bytes.*cut back/,
     'error.log tells that the short write was cut back');

$t->reset_hits;
my @r = $t->spray(4, sub { "/refused/$_[0]" });
is(scalar(grep { $_ eq '200 b1' } @r), 4, 'the old pin still acts') or diag "@r";

###############################################################################
# a restore acts at once, is answered 200 and persisted later

my $del = $t->api(DELETE => 'v1/flags/app');
is($del->{status}, 200, 'DELETE answers 200 although its line cannot be written');
is($del->{json}{persisted}, JSON::PP::false, 'with "persisted": false');
is(flag(), undef, 'GET: no flag');
$t->reset_hits;
@r = $t->spray(6, sub { "/restored/$_[0]" });
ok((grep { $_ eq '200 b2' } @r) && (grep { $_ eq '200 b1' } @r),
   'HA is back at once: both servers answer') or diag "@r";
like($t->error_log, qr/\[alert\].*HA on "app" is restored in memory/,
     'error.log alerts that the restore is not persisted yet');
is(logtext(), $before, 'the log is still as before');
is(state_hash(), last_hash(),
   "the state file's audit_hash is the last line in the log, not the "
   . 'waiting one');

unlink glob "$adir/filler.*";

ok($t->wait_for(sub { logtext() =~ /"action": "clear"/ }, 15),
   'with room again, the timer writes the waiting line');
like($t->error_log, qr/audit log is written again: \d+ waiting lines/,
     'error.log says that the audit log is written again');

my @lines = split /\n/, logtext();
is(scalar(grep { !eval { JSON::PP::decode_json($_); 1 } } @lines), 0,
   'every line of the log is one JSON object');
is(scalar(grep { /"reason": "${\ ($n + 1)}r/ } @lines), 0,
   'the refused PUT has no line');

# audit_verify reads TESTDIR/audit.jsonl
symlink $log, $t->testdir . '/audit.jsonl';
my ($rc, $out) = audit_verify($t);
is($rc, 0, 'ha-optoutctl audit verify accepts the chain') or diag $out;

ok($t->wait_for(sub { state_hash() eq last_hash() }, 5),
   "the state file's audit_hash follows to the line written late")
    or diag 'state ' . state_hash() . ', log ' . last_hash();
$out = `$ENV{HA_OPTOUT_CTL} audit verify --state $state $log 2>&1`;
is($? >> 8, 0, 'audit verify --state accepts the log: no tail is missing')
    or diag $out;

my $again = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '5m', reason => 'room again' });
is($again->{status}, 200, 'with room again, a PUT succeeds');

diag(sprintf 'fault_auditfull: %d lines of %d bytes, short write refused '
     . 'and cut back, restore persisted later', $n, $len);

done_testing();
