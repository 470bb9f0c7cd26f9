#!/usr/bin/perl

# policy windows: a scheduled opt-out opens and closes on time by itself,
# is audited, and sits below the API: an API flag wins, and deleting it
# reveals the window again.

use strict;
use warnings;

use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(sleep time);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->backend('r1');
$t->backend('r2');
$t->secret_file;

sub iso { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) }

# a one-off window a few seconds ahead

my $start = int(time) + 3;
my $end = $start + 10;

# a weekly window open now: from the minute before to two minutes after

my $w0 = int(time / 60) * 60 - 60;
my $every = lc(strftime('%a %H:%M', gmtime $w0)) . '-'
            . strftime('%H:%M', gmtime($w0 + 180));

my $b2 = '127.0.0.1:' . $t->port('b2');
my $b1 = '127.0.0.1:' . $t->port('b1');

$t->write_file('policy.yaml', <<"EOF");
upstreams:
  app:
    protected: true
windows:
  - upstream: app
    start: ${\ iso($start)}
    end: ${\ iso($end)}
    failover: false
    pin: "$b2"
    reason: "schema migration"
  - upstream: reporting
    every: "$every"
    replication: false
    failover: false
    reason: "weekly compliance downtime"
EOF

$t->conf(<<'EOF')->run;
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream reporting {
        server 127.0.0.1:%%PORT_r1%%;
        server 127.0.0.1:%%PORT_r2%%;
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

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

sub flag_of {
    my ($upstream) = @_;
    my $r = $t->api(GET => "v1/flags/$upstream");
    return $r->{is_json} ? $r->{json} : 'not json';
}

sub audit_actions {
    my ($upstream) = @_;
    my @a;
    for my $l (split /\n/, $t->read_file('audit.jsonl')) {
        my $j = eval { JSON::PP::decode_json($l) } or next;
        push @a, $j->{action} if $j->{upstream} eq $upstream;
    }
    return @a;
}

###############################################################################
# a weekly window that is open now

my $rep = $t->wait_for(sub { my $f = flag_of('reporting'); ref $f && $f }, 2);
is($rep->{source}, 'window', "a weekly window \"$every\" open now acts");
is($rep->{replication}, JSON::PP::false, 'with its opt-outs');
is($rep->{set_at}, iso($w0), 'set_at is the start of this week\'s window');
is($rep->{expires_at}, iso($w0 + 180), 'expires_at is its end');
is($rep->{actor}, 'policy', 'the actor of a window is "policy"');

###############################################################################
# the one-off window, before it opens

ok(time < $start, 'the one-off window is still ahead') or diag 'slow start';

my $f = flag_of('app');
ok(!defined $f, 'no flag before the window opens');

$t->reset_hits;
my @r = $t->spray(6, sub { "/before/$_[0]" });
ok($t->hits('b1') > 0 && $t->hits('b2') > 0,
    'traffic is balanced before the window') or diag "@r";

###############################################################################
# it opens on time

sleep($start - time) if $start > time;

$f = $t->wait_for(sub { my $g = flag_of('app'); ref $g && $g }, 1.2);
ok($f, 'the window opens within a second of its start');
is($f->{source}, 'window', 'GET shows source "window"');
is($f->{pin}, $b2, 'with the window\'s pin');
is($f->{failover}, JSON::PP::false, 'and failover false');
is($f->{reason}, 'schema migration', 'and its reason');
is($f->{set_at}, iso($start), 'set_at is the window start');
is($f->{expires_at}, iso($end), 'expires_at is the window end');

$t->reset_hits;
@r = $t->spray(6, sub { "/window/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @r), 6, 'traffic obeys the window')
    or diag "@r";

my $st = $t->status;
is($st->{upstreams}{app}{layers}{window}{reason}, 'schema migration',
    'status shows the window layer');

ok((grep { $_ eq 'window_start' } audit_actions('app')),
    'the window start is in the audit log');

###############################################################################
# an API flag wins over the window; DELETE reveals the window again

# app is protected: the API may act only inside the window, until its end

my $api = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, ttl => '1m', reason => 'hold b1 instead' });
is($api->{status}, 403, 'on a protected upstream a flag may not outlast the window');
like($api->{json}{error}{message} // '',
    qr/protected by policy: a flag must end with its open window, at \Q${\ iso($end)}\E/,
    'the refusal names the end of the window');

my $left = $end - int(time) - 1;
$api = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, ttl => "${left}s", reason => 'hold b1 instead' });
is($api->{status}, 200, 'an API flag that ends with the window is accepted');

$f = flag_of('app');
is($f->{source}, 'api', 'the API flag wins over the window');

$t->reset_hits;
@r = $t->spray(4, sub { "/api/$_[0]" });
is(scalar(grep { $_ eq '200 b1' } @r), 4, 'traffic obeys the API flag')
    or diag "@r";

my $del = $t->api(DELETE => 'v1/flags/app');
is($del->{status}, 200, 'the API flag is deleted');
is($del->{json}{source}, 'window', 'DELETE answers with the window beneath');

$f = flag_of('app');
is($f->{source}, 'window', 'GET shows the window again');

$t->reset_hits;
@r = $t->spray(4, sub { "/revealed/$_[0]" });
is(scalar(grep { $_ eq '200 b2' } @r), 4, 'traffic obeys the window again')
    or diag "@r";

# a reload: the new worker 0 finds the window already open

ok($t->reload, 'nginx -s reload during the window');
is(flag_of('app')->{source}, 'window', 'the window still acts after the reload');

###############################################################################
# it closes on time

ok(time < $end, 'still inside the window') or diag 'too slow';

sleep($end - time) if $end > time;

$f = $t->wait_for(sub { !defined flag_of('app') }, 1.2);
ok($f, 'the window closes within a second of its end');

$t->reset_hits;
@r = $t->spray(6, sub { "/after/$_[0]" });
ok($t->hits('b1') > 0 && $t->hits('b2') > 0,
    'traffic is balanced after the window') or diag "@r";

ok($t->wait_for(sub { grep { $_ eq 'window_end' } audit_actions('app') }, 1),
    'the window end is in the audit log');

my @a = grep { /^window_/ } audit_actions('app');
is("@a", 'window_start window_end',
    'one start and one end, even across a reload');

like($t->error_log, qr/\[warn\].*availability protections suspended on "app" by "policy" \(window_start\)/,
    'the window start is in error_log at warn');

###############################################################################

done_testing;
