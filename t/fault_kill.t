#!/usr/bin/perl

# Fault test (docs/reliability.md, "Fault tests"): `kill -9` of worker
# processes.
#
# 1. During a stream of API writes (each a PUT with its own reason), a
#    worker is killed a few milliseconds after a write was sent, 30 times.
#    nginx's master respawns it; the zone's mutex (the slab pool's, which
#    the master unlocks for a dead holder) recovers: the next write succeeds
#    within a second of each kill.  Afterwards GET v1/flags, the state file
#    and the last write agree, and the audit chain verifies.
#
#    What the module guarantees for the write a kill cuts short (the client
#    gets no answer): it happened entirely or not at all in the zone; if
#    it happened, its audit line may be missing (the worker died between
#    the change and the audit write) and the state file catches up with
#    the next write.  Every write that was answered 200 has exactly one
#    audit line, no write has two, and a respawned worker does not restore
#    the state file over the live zone.
#
# 2. With a pin set, every worker is killed once under load: the flag is
#    not lost (same version), the respawned workers obey it, the expiry
#    timer (worker 0's) still clears a short flag.

use strict;
use warnings;

use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Load qw(load_start load_wait audit_lines audit_verify);

use constant KILLS => 30;
use constant WRITES_PER_KILL => 8;

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
$t->state_dir;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream other {
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

my $port = $t->port('http');
my $b1 = '127.0.0.1:' . $t->port('b1');
my $state = $t->state_dir . '/ha-optout.state';

# ---------------------------------------------------------------- helpers

# a write on its own connection, sent now and read later
sub send_put {
    my ($reason, %f) = @_;
    my $body = $t->encode_json({ %f, ttl => '10m', reason => $reason });
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 2)
        or return { status => 'connect' };
    $s->autoflush(1);
    print $s "PUT /ha-optout/v1/flags/app HTTP/1.1\r\n"
        . "Host: localhost\r\nConnection: close\r\n"
        . "Authorization: Bearer " . $t->token . "\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
    return { sock => $s, reason => $reason, sent => time };
}

sub finish {
    my ($w) = @_;
    my $s = delete $w->{sock} or return $w;
    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + 5;
    while ((my $left = $deadline - time) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }
    close $s;
    $w->{status} = $buf =~ m{^HTTP/1\.1 (\d{3})} ? $1 : 'lost';
    my ($body) = $buf =~ /\r\n\r\n(.*)\z/s;
    $w->{json} = eval { JSON::PP::decode_json($body // '') };
    return $w;
}

sub state_flag {
    my ($name) = @_;
    my $text = $t->read_file($state);
    my ($block) = $text =~ /^  \Q$name\E:\n((?:    .*\n)+)/m or return undef;
    my %f = $block =~ /^    (\w+): (.*)$/mg;
    s/^"(.*)"$/$1/ for values %f;
    return \%f;
}

sub respawned {
    my ($old) = @_;
    return $t->wait_for(sub {
        my @p = $t->worker_pids;
        @p == 2 && !grep { $_ == $old } @p;
    }, 3);
}

###############################################################################
# 1. kills during a stream of writes

my $master = $t->master_pid;
my (@writes, @recover, @notrespawned, %killed);
my $seq = 0;

for my $k (1 .. KILLS) {

    # a few writes, then one with a kill a moment after it was sent
    for (1 .. WRITES_PER_KILL - 1) {
        push @writes, finish(send_put('w' . ++$seq,
                                      $seq % 2 ? (pin => $b1)
                                               : (failover => JSON::PP::false)));
    }

    my @pids = $t->worker_pids;
    my $victim = $pids[$k % @pids];
    my $w = send_put('w' . ++$seq, pin => $b1);
    sleep rand(0.004);
    my $killed_at = time;
    kill 'KILL', $victim;
    $killed{$victim} = 1;
    push @writes, finish($w);

    push @notrespawned, $victim unless respawned($victim);

    # the zone's lock must be free again: the next write is answered 200
    # within a second of the kill
    my $ok;
    while (time - $killed_at < 3) {
        my $n = finish(send_put('w' . ++$seq, failover => JSON::PP::false));
        push @writes, $n;
        if ($n->{status} eq '200') { $ok = time - $killed_at; last }
    }
    push @recover, $ok // 99;
}

is($t->master_pid, $master, 'the master survived every kill');
is(scalar @notrespawned, 0,
   'the master respawned every killed worker (two workers again)')
    or diag "@notrespawned";
is(scalar(grep { $_ > 1 } @recover), 0,
   'after every kill a write succeeded within a second')
    or diag explain \@recover;

my %st;
$st{ $_->{status} }++ for @writes;
my @other = grep { $_ ne '200' && $_ ne 'lost' } keys %st;
is(scalar @other, 0, 'every write was answered 200 or lost with its worker')
    or diag explain \%st;

# the final word: one more write, after the kills
my $final = finish(send_put('final', pin => $b1, failover => JSON::PP::false));
is($final->{status}, '200', 'a write after the kills succeeds');

my $g = $t->api(GET => 'v1/flags');
my $flag = $g->{json}{app};
is($flag->{reason}, 'final', 'GET v1/flags shows the last write');
is($flag->{version}, $final->{json}{version}, 'with its version');

my $sf = state_flag('app') // {};
is($sf->{reason}, 'final', 'the state file holds the last write');
is($sf->{version}, $flag->{version}, 'the state file has the same version');
is($sf->{pin}, $flag->{pin}, 'the state file has the same pin');
is($sf->{failover}, 'false', 'the state file has failover off');
ok(!defined state_flag('other') && !defined $g->{json}{other},
   'no flag on other, in the zone or in the file');
like($t->read_file($state), qr/^version_seq: $flag->{version}$/m,
     'the state file holds the last version handed out');

# the audit trail

my ($rc, $out) = audit_verify($t);
is($rc, 0, 'ha-optoutctl audit verify accepts the chain after the kills')
    or diag $out;

my @a = audit_lines($t);
my %lines;
$lines{ $_->{after}{reason} // '' }++ for grep { $_->{action} eq 'set' } @a;

my @answered = grep { $_->{status} eq '200' } @writes, $final;
my @lost = grep { $_->{status} eq 'lost' } @writes;

is(scalar(grep { ($lines{ $_->{reason} } // 0) != 1 } @answered), 0,
   'every write answered 200 has exactly one audit line');
is(scalar(grep { $_ > 1 } values %lines), 0,
   'no write has two audit lines');
is(scalar(grep { $_->{action} =~ /^(restore|restore_rejected|expire)$/ } @a),
   0, 'respawned workers did not restore the state file over the live zone');

# lost writes: applied with a line, applied without one (the documented
# gap), or not applied at all.  "Applied" shows in the next line's before.
my %before_of_next;
$before_of_next{ $_->{before}{reason} // '' } = 1
    for grep { $_->{action} eq 'set' } @a;
my ($lost_logged, $lost_unlogged, $lost_nothing) = (0, 0, 0);
for my $w (@lost) {
    if ($lines{ $w->{reason} }) { $lost_logged++ }
    elsif ($before_of_next{ $w->{reason} }) { $lost_unlogged++ }
    else { $lost_nothing++ }
}

my @tmp = glob("$state.tmp.*");

# a change whose writer was killed before its audit line is audited by
# the next writer (or worker 0's timer) as "audited after process N ... died"
is($lost_unlogged, 0, 'every change that took effect has an audit line');

TODO: {
    local $TODO = 'finding (docs/reliability.md, "Fault tests"): a worker '
                . 'killed while saving leaves FILE.tmp.<pid> forever';

    is(scalar @tmp, 0, 'killed workers leave no temporary state file behind');
}

diag(sprintf 'fault_kill: %d kills during %d writes; %d answered 200, %d lost '
     . 'with their worker (%d applied and audited, %d applied without an '
     . 'audit line, %d not applied); slowest recovery %.3f s; %d stale '
     . 'temp files',
     KILLS, scalar @writes, scalar @answered - 1, scalar @lost,
     $lost_logged, $lost_unlogged, $lost_nothing,
     (sort { $b <=> $a } @recover)[0], scalar @tmp);

###############################################################################
# 2. kill every worker once under load, with a pin set

my $set = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, failover => JSON::PP::false, ttl => '10m',
    reason => 'hold b1 while workers die' });
is($set->{status}, 200, 'pin on b1 set before the kills under load');

$t->reset_hits;

# 4 s of load (wrk, else the Perl client printing its count only)
my $wrk = load_start($t, seconds => 4, timeout => 2, out => 'wrk.out',
                     settle => 1, count_only => 1);
my @victims = $t->worker_pids;
my @kept;
for my $v (@victims) {
    kill 'KILL', $v;
    respawned($v);
    sleep 0.5;
    my $r = $t->api(GET => 'v1/flags/app');
    push @kept, ($r->{json}{version} // 'none');
}

my $wl = load_wait($wrk, 10);
my ($wtext, $served) = ($wl->{text}, $wl->{requests});

is_deeply(\@kept, [ ($set->{json}{version}) x @victims ],
          'after each kill the flag is there with the same version');
is(scalar(grep { $killed{$_} } $t->worker_pids), 0,
   'the workers now running are all respawned ones');
ok(($served // 0) > 0, 'traffic was served around the kills')
    or diag $wtext;
is($t->hits('b2'), 0, 'no request escaped the pin to b2 during the kills');

my @r = $t->spray(10, sub { "/after-kill/$_[0]" });
is(scalar(grep { $_ eq '200 b1' } @r), 10,
   'the respawned workers obey the pin') or diag "@r";

# worker 0 (which runs the expiry timer) was killed too: the timer runs in
# its successor
my $short = $t->api(PUT => 'v1/flags/other', json => {
    failover => JSON::PP::false, ttl => '1s', reason => 'short after kills' });
is($short->{status}, 200, 'a 1 s flag set on other');
ok($t->wait_for(sub {
        grep { $_->{action} eq 'expire' && $_->{upstream} eq 'other' }
            audit_lines($t);
    }, 3),
   'the expiry timer of the respawned worker 0 clears it and audits expire');
ok(!defined state_flag('other'), 'and the state file forgets it');

($rc, $out) = audit_verify($t);
is($rc, 0, 'the audit chain still verifies at the end') or diag $out;

my ($errs) = $wtext =~ /Socket errors: (.*)/;
diag(sprintf 'fault_kill: %d workers killed under load; %s requests served; '
     . 'socket errors: %s; flag kept', scalar @victims, $served // '?',
     $errs // 'none');

done_testing();
