#!/usr/bin/perl

# ha_optout_state_file: flags survive a restart; ones that expired while
# nginx was down, or whose pin no longer names a server, are dropped and
# audited; a corrupt file is kept aside and nginx starts with HA fully on;
# a write that cannot be persisted changes nothing.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->backend('b3');
$t->secret_file;

my $dir = $t->state_dir;
my $state = "$dir/ha-optout.state";

my $conf = <<'EOF';
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
        server 127.0.0.1:%%PORT_b3%%;
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

$t->conf($conf)->run;

my $b2 = '127.0.0.1:' . $t->port('b2');

sub audit_actions {
    my ($upstream) = @_;
    my @a;
    for my $l (split /\n/, $t->read_file('audit.jsonl')) {
        my $j = eval { JSON::PP::decode_json($l) } or next;
        push @a, $j->{action} if $j->{upstream} eq $upstream;
    }
    return @a;
}

sub flag_of {
    my ($upstream) = @_;
    my $r = $t->api(GET => "v1/flags/$upstream");
    return $r->{is_json} ? $r->{json} : 'not json';
}

###############################################################################
# every change is written to the file

my $set = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b2, failover => JSON::PP::false, ttl => '10m',
    reason => 'hold b2 for a heap dump' });
is($set->{status}, 200, 'flag set on app');

my $short = $t->api(PUT => 'v1/flags/other', json => {
    failover => JSON::PP::false, ttl => '2s', reason => 'short one' });
is($short->{status}, 200, 'a 2 s flag set on other');

ok(-f $state, 'the state file exists after a write');
is((stat $state)[2] & 07777, 0600, 'the state file is mode 0600');

my $text = $t->read_file($state);
like($text, qr/^version: 1$/m, 'the state file names its format version');
like($text, qr/^\s+app:$/m, 'the state file holds app');
like($text, qr/pin: "\Q$b2\E"/, 'the state file holds the pin');
like($text, qr/reason: "hold b2 for a heap dump"/,
    'the state file holds the reason');
my @tmp = glob("$dir/*.tmp.*");
is(scalar @tmp, 0, 'no temporary file is left behind');

###############################################################################
# restart: a fresh zone, flags come back from the file

$t->stop;
sleep 2.5;              # the flag on "other" expires while nginx is down
$t->run;

my $got = $t->wait_for(sub {
    my $f = flag_of('app');
    ref $f eq 'HASH' && $f;
}, 3);

ok($got, 'the flag on app is back after a restart');
is($got->{pin}, $b2, 'restored flag keeps its pin');
is($got->{failover}, JSON::PP::false, 'restored flag keeps failover=false');
is($got->{source}, 'api', 'restored flag is an api flag');
is($got->{actor}, 'alice', 'restored flag keeps its actor');
is($got->{version}, $set->{json}{version}, 'restored flag keeps its version');
is($got->{expires_at}, $set->{json}{expires_at},
    'restored flag keeps its expiry');
is($got->{set_at}, $set->{json}{set_at}, 'restored flag keeps set_at');

$t->reset_hits;
my @r = $t->spray(6, sub { "/restored/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @r), 6,
    'the restored pin holds traffic on b2') or diag "@r";

my $f = flag_of('other');
ok(!defined $f, 'a flag that expired while nginx was down is not restored');

ok((grep { $_ eq 'restore' } audit_actions('app')),
    'the restore of app is audited');
ok((grep { $_ eq 'expire' } audit_actions('other')),
    'the flag that expired while nginx was down is audited as expire');

$t->wait_for(sub { $t->read_file($state) !~ /^\s+other:$/m }, 2);
unlike($t->read_file($state), qr/^\s+other:$/m,
    'the dropped flag is gone from the state file');

my $next = $t->api(PATCH => 'v1/flags/app', json => { ttl => '20m' });
is($next->{status}, 200, 'the restored flag can be changed');
cmp_ok($next->{json}{version}, '>', $set->{json}{version},
    'versions continue after a restart');

###############################################################################
# the config changed: the pinned server is gone

(my $changed = $conf) =~ s/server 127.0.0.1:%%PORT_b2%%;/server 127.0.0.1:%%PORT_b3%%;/;

$t->stop;
$t->conf($changed)->run;

ok($t->wait_for(sub { grep { $_ eq 'restore_rejected' } audit_actions('app') },
                3),
    'a flag whose pin no longer names a server is audited restore_rejected');

$f = flag_of('app');
ok(!defined $f, 'the flag with a stale pin is not applied');

$t->reset_hits;
@r = $t->spray(8, sub { "/changed/$_[0]" });
ok($t->hits('b1') > 0 && $t->hits('b3') > 0,
    'traffic is balanced normally after the stale pin was dropped')
    or diag "@r";
is($t->hits('b2'), 0, 'nothing goes to the removed server');

like($t->error_log, qr/saved flag of "app" dropped: .*pin/,
    'error.log says why the flag was dropped');

###############################################################################
# a corrupt state file is kept aside

$t->stop;
$t->conf($conf);
$t->write_file($state, "version: 1\nflags: {app: [unclosed\n", 0600);

$t->run;

my @aside;
ok($t->wait_for(sub { @aside = glob("$state.corrupt-*"); scalar @aside }, 3),
    'a corrupt state file is renamed aside');
like($aside[0] // '', qr/\.corrupt-\d+$/, 'the new name ends in the unix time');
like($t->read_file($aside[0] // '/nonexistent'), qr/\[unclosed/,
    'the corrupt file keeps its content');
like($t->error_log, qr/\[alert\].*ha_optout: state file .* is corrupt .*renamed to/,
    'error.log has an alert naming the reason and the new name');

my $all = $t->api(GET => 'v1/flags')->{json} // {};
ok(exists $all->{app} && !defined $all->{app} && !defined $all->{other},
    'nginx starts with HA fully on after a corrupt state file');

$t->wait_for(sub { -f $state }, 2);
like($t->read_file($state), qr/^flags: \{\}$/m,
    'a fresh, empty state file is written');

###############################################################################
# the state directory is not writable: the write is refused, nothing changes

my $keep = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b2, ttl => '5m', reason => 'before read-only' });
is($keep->{status}, 200, 'a flag is set while the directory is writable');

chmod 0555, $dir;
chmod 0400, $state;    # nor in place (t/fault_restore_restart.t)

my $ro = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '5m', reason => 'cannot persist' });
is($ro->{status}, 503, 'a write that cannot be persisted answers 503');
is($ro->{json}{error}{code}, 'StateNotPersisted',
    'the error code is StateNotPersisted');

$got = flag_of('app');
is($got->{reason}, 'before read-only', 'GET shows the flag unchanged');
is($got->{version}, $keep->{json}{version}, 'the version is unchanged');
is($got->{pin}, $b2, 'the pin is unchanged');

like($t->error_log, qr/state file "\Q$state\E" cannot be written.*must be writable by the nginx worker user "nobody"/,
    'error.log names the path and the user that must be able to write it');

# restoring HA is never refused (SPEC section 8): the DELETE acts at once
# and says that it is not on disk yet; the timer saves it later
my $del = $t->api(DELETE => 'v1/flags/app');
is($del->{status}, 200, 'a DELETE that cannot be persisted still answers 200');
is_deeply($del->{json}, { acting => undef, persisted => JSON::PP::false },
          'with "persisted": false');
ok(!defined flag_of('app'), 'and the flag is gone at once');
like($t->error_log, qr/\[alert\].*HA on "app" is restored in memory/,
     'error.log has an alert that the restore is not persisted');
like($t->read_file($state), qr/before read-only/,
     'the state file still holds the flag (it could not be written)');

chmod 0755, $dir;
chmod 0600, $state;

ok($t->wait_for(sub { $t->read_file($state) !~ /before read-only/ }, 15),
   'once the directory is writable, the timer saves the restore');
# the notice follows the rename: waited for, not read at once
ok($t->wait_for(sub {
       $t->error_log =~ qr/state file "\Q$state\E" saved after \d+ failed/
   }, 5),
   'and error.log says so');

# an expiry is a restore too: it acts although the directory is read-only,
# and the timer saves it once it can
my $expired = grep { $_ eq 'expire' } audit_actions('app');
my $brief = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b2, ttl => '2s', reason => 'expires read-only' });
is($brief->{status}, 200, 'a 2 s flag is set');
chmod 0555, $dir;
chmod 0400, $state;    # nor in place (t/fault_restore_restart.t)
ok($t->wait_for(sub { (grep { $_ eq 'expire' } audit_actions('app'))
                      > $expired }, 10),
   'it expires (audited) with the directory read-only');
ok(!defined flag_of('app'), 'and is gone');
like($t->error_log, qr/\[alert\].*expired flags are cleared in memory/,
     'error.log alerts that the expiry is not persisted');
like($t->read_file($state), qr/expires read-only/,
     'the state file still holds it');
chmod 0755, $dir;
chmod 0600, $state;
ok($t->wait_for(sub { $t->read_file($state) !~ /expires read-only/ }, 15),
   'the timer saves the expiry once the directory is writable');

# a worker killed while saving leaves STATE.tmp.PID; the timer removes those
# of processes that are gone (at the first tick of a new worker 0)

$t->write_file("state/ha-optout.state.tmp.999999", "half a snapshot\n", 0600);
my $live = "state/ha-optout.state.tmp.$$";
$t->write_file($live, "ours\n", 0600);
$t->reload;

ok($t->wait_for(sub { !-e "$dir/ha-optout.state.tmp.999999" }, 3),
   'a temp file left by a killed worker is removed');
ok(-e "$t->{dir}/$live", 'a temp file of a live process is kept');
unlink "$t->{dir}/$live";

###############################################################################

done_testing;
