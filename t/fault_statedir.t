#!/usr/bin/perl

# Fault test (docs/reliability.md, "Fault tests"): the state directory
# cannot take the write.  t/state_file.t covers a read-only directory for a
# single writer (503 StateNotPersisted, GET unchanged); this adds:
#
# - a full file system (a 64k tmpfs mounted on the state directory; needs
#   root and a mount-capable sandbox, else skipped with the reason): PUT
#   and PATCH answer 503 StateNotPersisted (JSON), GET, the state file and
#   the audit log are unchanged, no temporary file is left; DELETE restores
#   HA at once and saves it (200) by rewriting the existing state file in
#   place (no room for a temporary file; t/fault_restore_restart.t);
# - concurrent writers on a read-only directory: every write is refused,
#   and the flag afterwards must be the one from before (nothing half
#   applied).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Load qw(send_at_once);

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $dir = $t->state_dir;
my $state = "$dir/ha-optout.state";
my (undef, undef, $uid, $gid) = getpwnam('nobody');

my $mounted;
my $why_not;
if ($> != 0) {
    $why_not = 'not root: cannot mount a tmpfs';
} elsif (system('mount', '-t', 'tmpfs', '-o',
                "size=64k,uid=$uid,gid=$gid,mode=0755", 'tmpfs', $dir) != 0)
{
    $why_not = 'mount -t tmpfs refused in this sandbox';
} else {
    $mounted = 1;
}

END { system('umount', $dir) if $mounted }

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
my $b2 = '127.0.0.1:' . $t->port('b2');

sub audit_text { $t->read_file('audit.jsonl') }

sub flag { $t->api(GET => 'v1/flags/app')->{json} }

###############################################################################
# the file system is full

SKIP: {
    skip "full state directory: $why_not", 23 unless $mounted;

    my $set = $t->api(PUT => 'v1/flags/app', json => {
        pin => $b1, ttl => '10m', reason => 'before the disk filled' });
    is($set->{status}, 200, 'a flag set while the tmpfs has room');

    # fill it up
    my $filler = "$dir/filler";
    system("dd if=/dev/zero of=$filler bs=4k count=64 2>/dev/null");
    system("dd if=/dev/zero of=$filler.2 bs=1 count=4096 2>/dev/null");
    my $st_text = $t->read_file($state);
    my $audit = audit_text();

    my @refused;
    for my $w ([ PUT => { failover => JSON::PP::false, ttl => '5m',
                          reason => 'disk is full' } ],
               [ PATCH => { ttl => '20m' } ])
    {
        my $r = $t->api($w->[0] => 'v1/flags/app', json => $w->[1]);
        push @refused, $r;
    }

    is_deeply([ map { $_->{status} } @refused ], [ 503, 503 ],
              'PUT and PATCH answer 503 on a full file system');
    is_deeply([ map { $_->{json}{error}{code} // 'not JSON' } @refused ],
              [ ('StateNotPersisted') x 2 ],
              'as JSON StateNotPersisted');
    like($refused[0]{headers}{'content-type'} // '', qr{^application/json},
         'with Content-Type application/json');

    my $f = flag();
    is($f->{version}, $set->{json}{version}, 'GET: the version is unchanged');
    is($f->{reason}, 'before the disk filled', 'GET: the reason is unchanged');
    is($f->{pin}, $b1, 'GET: the pin is unchanged');
    ok(!defined $f->{failover} || $f->{failover}, 'GET: failover not off');

    is($t->read_file($state), $st_text, 'the state file is unchanged');
    is(audit_text(), $audit, 'no audit line for the refused writes');
    is(scalar(my @g = glob("$state.tmp.*")), 0, 'no temporary file is left');
    like($t->error_log, qr/state file "\Q$state\E" cannot be written.*No space left/,
         'error.log names the file and ENOSPC');

    $t->reset_hits;
    my @r = $t->spray(6, sub { "/full/$_[0]" });
    is(scalar(grep { $_ eq '200 b1' } @r), 6, 'the old pin still acts')
        or diag "@r";

    # restoring HA is never refused (SPEC section 8)
    my $del = $t->api(DELETE => 'v1/flags/app');
    is($del->{status}, 200, 'DELETE on a full file system answers 200');
    # no room for a temporary file, but the existing state file is
    # rewritten in place (a restore only): the restore is saved at once
    ok($del->{is_json} && !defined $del->{json},
       'and it is persisted (no "persisted": false): rewritten in place')
        or diag explain $del->{json};
    is(flag(), undef, 'GET: no flag any more');
    $t->reset_hits;
    @r = $t->spray(6, sub { "/restored-full/$_[0]" });
    ok((grep { $_ eq '200 b2' } @r) && (grep { $_ eq '200 b1' } @r),
       'HA is back: both servers answer again') or diag "@r";
    unlike($t->read_file($state), qr/before the disk filled/,
           'the state file no longer holds the flag');
    like(audit_text(), qr/"action": "clear"[^\n]*"reason": "before the disk filled"/,
         'the restore is audited (the audit log is elsewhere)');

    unlink $filler, "$filler.2";

    ok($t->wait_for(sub { $t->read_file($state) !~ /before the disk filled/ },
                    15),
       'with room again, the state file still holds no flag');
    like($t->error_log, qr/state file "\Q$state\E" rewritten in place/,
         'error.log says that it was rewritten in place');

    my $again = $t->api(PUT => 'v1/flags/app', json => {
        failover => JSON::PP::false, ttl => '5m', reason => 'room again' });
    is($again->{status}, 200, 'with room again, the write succeeds');
    like($t->read_file($state), qr/reason: "room again"/,
         'and reaches the state file');
    is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'and DELETE too');
}

###############################################################################
# concurrent writers on a read-only directory: nothing half applied

# PUT on its own connection from N processes at once
sub burst {
    my ($round, $n) = @_;
    my @requests;
    for my $i (1 .. $n) {
        my $body = $t->encode_json({ pin => $b2, failover => JSON::PP::false,
                                     ttl => '5m',
                                     reason => "refused $round.$i" });
        push @requests, "PUT /ha-optout/v1/flags/app HTTP/1.1\r\n"
            . "Host: localhost\r\nConnection: close\r\n"
            . "Authorization: Bearer " . $t->token . "\r\n"
            . "Content-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n\r\n$body";
    }
    return send_at_once($t, "burst-$round", 0.2, @requests);
}

my $keep = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, ttl => '10m', reason => 'before read-only' });
is($keep->{status}, 200, 'a flag set while the directory is writable');
my $st_text = $t->read_file($state);
my $audit = audit_text();

chmod 0555, $dir;

# the race needs both workers inside the window between a change and its
# undo at once: bursts until the flag drifts (it stays drifted), at most
# 40 bursts or 15 s
my (%all, @drift);
my $rounds = 0;
my $t0 = time;
for my $round (1 .. 40) {
    last if time - $t0 > 15;
    my $st = burst($round, 20);
    $all{$_} += $st->{$_} for keys %$st;
    $rounds++;
    my $f = flag();
    if ($f->{version} != $keep->{json}{version}
        || $f->{reason} ne 'before read-only')
    {
        push @drift, "burst $round: version $f->{version}, reason "
                   . "\"$f->{reason}\", pin $f->{pin}";
        last;
    }
}

chmod 0755, $dir;

is_deeply(\%all, { 503 => 20 * $rounds },
          "all @{[ 20 * $rounds ]} concurrent writes were refused 503");

{
    is(scalar @drift, 0, 'after every burst the flag is the one from before '
                       . 'the directory became read-only')
        or diag "a write answered 503 acts: @drift";

    $t->reset_hits;
    my @r = $t->spray(6, sub { "/after-burst/$_[0]" });
    is(scalar(grep { $_ eq '200 b1' } @r), 6,
       'traffic still follows the pin on b1, no refused pin on b2 acts')
        or diag "@r";
}

is($t->read_file($state), $st_text, 'the state file is unchanged');
is(audit_text(), $audit, 'no audit line for any refused write');

diag(sprintf 'fault_statedir: full tmpfs: %s; read-only: %d concurrent '
     . 'writes in %d bursts of 20 refused 503; %s',
     $mounted ? 'tested' : "skipped ($why_not)",
     20 * $rounds, $rounds,
     @drift ? "a refused write acts after $drift[0]" : 'the flag never drifted');

done_testing();
