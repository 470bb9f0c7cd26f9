#!/usr/bin/perl

# Fault test (docs/reliability.md, "Fault tests"): an operator toggles a pin
# on and off 1,000 times through the admin API while clients keep sending
# traffic.  The pin names a healthy server, so no state of the flag fails a
# request on purpose: every request must succeed.  Afterwards the flag is
# exactly what the last write left, the state file says the same, the audit
# log has exactly one line per toggle and its hash chain verifies.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Load qw(load_start load_stop audit_lines audit_verify);

use constant TOGGLES => 1000;
use constant LOOP_SECONDS => 45;        # bound on the toggle loop

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
        keepalive 16;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
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
my $state = $t->state_dir . '/ha-optout.state';

###############################################################################

$t->reset_hits;
my $load = load_start($t);

my (%status, @fails, @versions, $last);
my $t0 = time;
my $done = 0;

for my $i (1 .. TOGGLES) {
    last if time - $t0 > LOOP_SECONDS;

    my $r = $i % 2
        ? $t->api(PUT => 'v1/flags/app', json => {
              pin => $b1, ttl => '10m', reason => "toggle $i" })
        : $t->api(DELETE => 'v1/flags/app');

    $status{ $r->{status} }++;
    push @fails, "#$i $r->{status} $r->{body}" if $r->{status} != 200;
    push @versions, $r->{json}{version} if $i % 2 && $r->{json};
    $last = $r;
    $done++;
}

my $elapsed = time - $t0;
my $w = load_stop($load);

is($done, TOGGLES, sprintf 'all %d toggles were sent within %d s (%.1f s)',
   TOGGLES, LOOP_SECONDS, $elapsed);
is($status{200} // 0, TOGGLES, 'every toggle was answered 200')
    or diag explain [ @fails[0 .. ($#fails < 9 ? $#fails : 9)] ];

is(scalar(grep { !defined $_ } @versions), 0, 'every PUT answered a version');
my $increasing = 1;
for my $k (1 .. $#versions) {
    $increasing = 0 unless ($versions[$k] // 0) > ($versions[$k - 1] // 0);
}
ok($increasing, 'versions only grow over the run');

ok(defined $w->{requests} && $w->{requests} > 0,
   'the load generator served requests during the run')
    or diag $w->{text};
is($w->{non2xx}, 0, 'no request was answered non-2xx during the toggles')
    or diag $w->{text};
is($w->{socket}, 0, 'no socket error (connect, read, write, timeout)')
    or diag $w->{text};

# pinned half of the time: b1 took the pinned share and half of the rest
my ($h1, $h2) = ($t->hits('b1'), $t->hits('b2'));
ok($h1 > $h2 && $h2 > 0, "the pin acted during the run (b1 $h1, b2 $h2)");

# 499: requests in flight when the load generator was stopped (at most
# one per connection); anything else that is not 2xx is a failure
my @load = grep { m{GET /load} } split /\n/, $t->read_file('access.log');
my @bad = grep { !/" (2\d\d|499) / } @load;
is(scalar @bad, 0, 'access.log has no non-2xx answer for the load')
    or diag join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)];
cmp_ok(scalar(grep { /" 499 / } @load), '<=', 8,
       'only requests cut by stopping the load generator are 499');

unlike($t->error_log, qr/\[(alert|crit|emerg)\]|exited on signal/,
       'error.log has no alert, crit or crashed worker');

# ---------------------------------------------------------------- after

# the last write was a DELETE (toggle 1000): HA is fully on

my $g = $t->api(GET => 'v1/flags/app');
is($g->{status}, 200, 'GET v1/flags/app after the run');
ok($g->{is_json} && !defined $g->{json},
   'the flag is exactly the last write: cleared (null)');
ok($last && $last->{is_json} && !defined $last->{json},
   'the last write (DELETE) answered null');

my $text = $t->read_file($state);
like($text, qr/^flags: \{\}$/m, 'the state file says no flag either');
like($text, qr/^version_seq: \Q$versions[-1]\E$/m,
     'the state file holds the last version handed out')
    if @versions;

$t->reset_hits;
my @r = $t->spray(10, sub { "/after/$_[0]" });
ok($t->hits('b1') > 0 && $t->hits('b2') > 0,
   'traffic is balanced over both servers again') or diag "@r";

my @a = audit_lines($t);
my $sets = grep { $_->{action} eq 'set' } @a;
my $clears = grep { $_->{action} eq 'clear' } @a;
is(scalar @a, TOGGLES, 'the audit log has exactly one line per toggle');
is($sets, TOGGLES / 2, 'half of them are set');
is($clears, TOGGLES / 2, 'half of them are clear');

my $alternate = 1;
for my $k (0 .. $#a) {
    my $want = $k % 2 ? 'clear' : 'set';
    $alternate = 0 unless $a[$k]{action} eq $want
        && ($a[$k]{reason} // '') eq 'toggle ' . ($k % 2 ? $k : $k + 1);
}
ok($alternate, 'the audit lines are in the order of the writes');

my ($rc, $verify) = audit_verify($t);
is($rc, 0, 'ha-optoutctl audit verify accepts the chain') or diag $verify;

# ---------------------------------------------------------------- figures

my $sec = $w->{seconds} || $elapsed;
diag(sprintf 'fault_toggle: %d toggles in %.1f s (%.0f toggles/s); '
     . '%s requests served in %.1f s (%.0f req/s) by %s; '
     . 'non-2xx %d, socket errors %d',
     $done, $elapsed, $done / ($elapsed || 1),
     $w->{requests} // '?', $sec, ($w->{requests} // 0) / ($sec || 1),
     ($w->{text} =~ /Running/ ? 'wrk -t1 -c8' : 'a Perl client'),
     $w->{non2xx}, $w->{socket});

done_testing();
