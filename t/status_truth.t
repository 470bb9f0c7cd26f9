#!/usr/bin/perl

# The status page tells the whole truth (issue 17, item 2): a server nginx
# has ejected (fails >= max_fails within fail_timeout) reads failed, the
# pinned one pinned; each upstream shows its next policy window and whether
# it is protected or needs approval (policy approvers); the acting flag's
# counters count from when it was set
# (a new flag starts at 0, a PATCH does not reset them); and every flag
# says how HA comes back.  JSON, Prometheus and HTML (headless Chromium).

use strict;
use warnings;

use Test::More;
use POSIX qw(strftime);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('good');
$t->backend('good2');
my $dead = '127.0.0.1:' . $t->dead_port('dead');
my $good = '127.0.0.1:' . $t->port('good');
$t->secret_file;

my $now = time;
my $iso = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) };
my ($w_start, $w_end) = ($now + 86400 - $now % 60, $now + 90000 - $now % 60);
my $open_end = $now + 3600 - $now % 60;

$t->write_file('policy.yaml', <<"EOF");
upstreams:
  payments:
    protected: true
    approvers: 2
    approval_ttl: 30m
  reporting:
    approvers: 1
windows:
  - upstream: payments
    start: "@{[ $iso->($w_start) ]}"
    end: "@{[ $iso->($w_end) ]}"
    failover: false
    reason: "PCI scan"
  - upstream: reporting
    start: "@{[ $iso->($now - 60) ]}"
    end: "@{[ $iso->($open_end) ]}"
    replication: false
    reason: "nightly export"
EOF

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_flag batch failover=off "reason=kept off in nginx.conf";

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_dead%% max_fails=1 fail_timeout=30s;
        server 127.0.0.1:%%PORT_good%% max_fails=1 fail_timeout=30s;
        ha_optout;
    }

    upstream chaos {
        zone chaos 64k;
        server 127.0.0.1:%%PORT_dead%% max_fails=0;
        server 127.0.0.1:%%PORT_good2%% max_fails=0;
        ha_optout;
    }

    upstream payments { zone payments 64k; server 127.0.0.1:%%PORT_good%%;
                        ha_optout; }
    upstream reporting { server 127.0.0.1:%%PORT_good%%; ha_optout; }
    upstream batch { server 127.0.0.1:%%PORT_good%%; ha_optout; }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        proxy_connect_timeout 1s;

        location /app/ { proxy_pass http://app; }
        location /chaos/ { proxy_pass http://chaos; }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }

        location = /ha-status { ha_optout_status; }
    }
}
EOF

$t->run;

sub server_of {
    my ($s, $up, $addr) = @_;
    return (grep { $_->{address} eq $addr }
            @{ $s->{upstreams}{$up}{servers} // [] })[0] // {};
}

sub prom {
    return $t->get('/ha-status?format=prometheus')->{body};
}


# ------------------------------------------------------------ failed servers

my $s = $t->status;
ok(!server_of($s, 'app', $dead)->{failed}, 'before any error the dead '
   . 'server is not failed');
is(server_of($s, 'app', $dead)->{max_fails}, 1, 'max_fails is shown');
is(server_of($s, 'app', $dead)->{fail_timeout}, 30, 'fail_timeout is shown '
   . '(seconds)');

# requests until nginx has met the dead server once (round robin)
$t->wait_for(sub {
    $t->get('/app/x');
    server_of($t->status, 'app', $dead)->{fails} >= 1;
}, 10);

$s = $t->status;
ok(server_of($s, 'app', $dead)->{failed}, 'after max_fails errors within '
   . 'fail_timeout the dead server reads failed (nginx skips it)');
ok(!server_of($s, 'app', $good)->{failed}, 'the good server does not');
like(prom(), qr/^ha_optout_server_failed\{upstream="app",server="\Q$dead\E"\} 1$/m,
     'Prometheus: ha_optout_server_failed 1 for the ejected server');
like(prom(), qr/^ha_optout_server_failed\{upstream="app",server="\Q$good\E"\} 0$/m,
     'Prometheus: 0 for the healthy one');

# a pin shows which server is pinned

my $r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $good, ttl => '30m', reason => 'INC-1 hold good' });
is($r->{status}, 200, 'pin set on app');
$s = $t->status;
ok(server_of($s, 'app', $good)->{pinned}, 'the pinned server is pinned');
like(prom(), qr/^ha_optout_server_pinned\{upstream="app",server="\Q$good\E"\} 1$/m,
     'Prometheus: ha_optout_server_pinned 1 for it');
is($s->{upstreams}{app}{restore},
   'DELETE v1/flags/app (ha-optoutctl clear --upstream app)',
   'an API flag says the DELETE that restores HA');


# ------------------------------------------------------------ since the flag

sub suppress_some {
    my ($n) = @_;
    my $before = $t->status->{upstreams}{chaos}{failover_suppressed};
    $t->wait_for(sub {
        $t->get('/chaos/x');
        $t->status->{upstreams}{chaos}{failover_suppressed} >= $before + $n;
    }, 10);
}

$r = $t->api(PUT => 'v1/flags/chaos', json => {
    failover => JSON::PP::false(), ttl => '30m', reason => 'GameDay 1' });
is($r->{status}, 200, 'failover off on chaos');
is_deeply($t->status->{upstreams}{chaos}{since_flag},
          { failover_suppressed => 0, pinned_requests => 0,
            replication_bypassed => 0 },
          'a new flag starts its counters at 0');

suppress_some(2);
$s = $t->status->{upstreams}{chaos};
cmp_ok($s->{since_flag}{failover_suppressed}, '>=', 2,
       'failovers suppressed under the flag count since it was set');
my $lifetime = $s->{failover_suppressed};

$r = $t->api(PATCH => 'v1/flags/chaos', json => { ttl => '1h' });
is($r->{status}, 200, 'PATCH (a heartbeat)');
is($t->status->{upstreams}{chaos}{since_flag}{failover_suppressed},
   $s->{since_flag}{failover_suppressed},
   'a PATCH keeps the counters of the flag');

is($t->api(DELETE => 'v1/flags/chaos')->{status}, 200, 'cleared');
is($t->status->{upstreams}{chaos}{since_flag}, undef,
   'no flag, no counters since a flag');
$r = $t->api(PUT => 'v1/flags/chaos', json => {
    failover => JSON::PP::false(), ttl => '30m', reason => 'GameDay 2' });
$s = $t->status->{upstreams}{chaos};
is($s->{since_flag}{failover_suppressed}, 0, 'the next flag starts at 0 '
   . 'again');
is($s->{failover_suppressed}, $lifetime, 'while the lifetime total keeps '
   . 'what came before');
like(prom(), qr/^ha_optout_flag_failover_suppressed\{upstream="chaos"\} 0$/m,
     'Prometheus: ha_optout_flag_failover_suppressed counts since the flag');
like(prom(), qr/^ha_optout_failover_suppressed_total\{upstream="chaos",server="\Q$dead\E"\} [1-9]/m,
     'beside the lifetime counter');

# a fleet flag set beneath the API flag counts from when it was set (its
# own slot, not the window's nor the lifetime totals), and shows once the
# API flag is gone
suppress_some(2);
my $at_fleet = $t->status->{upstreams}{chaos}{failover_suppressed};
$r = $t->api(PUT => 'v1/fleet/chaos',
             token_args => { sub => 'lb1', scope => 'ha:fleet' },
             json => { failover => JSON::PP::false(), ttl => '30m',
                       reason => 'INC-7 fleet hold', revision => 7,
                       actor => 'alice', via => 'lb1' });
is($r->{status}, 200, 'a fleet flag beneath the API flag on chaos');
suppress_some(2);
is($t->api(DELETE => 'v1/flags/chaos')->{status}, 200,
   'the API flag cleared: the fleet flag acts');
$s = $t->status->{upstreams}{chaos};
is($s->{flag}{source}, 'fleet', '... it is the fleet flag');
cmp_ok($s->{since_flag}{failover_suppressed}, '>=', 2,
       'the fleet flag counted what it suppressed beneath the API flag');
is($s->{since_flag}{failover_suppressed},
   $s->{failover_suppressed} - $at_fleet,
   'the fleet flag counts since it was set, not the lifetime totals')
    or diag explain $s;
like($s->{restore}, qr/^clear it in etcd: ha-optoutctl clear --etcd URLS --environment default --upstream chaos \(the agents then DELETE v1\/fleet\/chaos\)$/,
     'a fleet flag says how to clear it in etcd') or diag $s->{restore};


# ------------------------------------------------------------ windows

$s = $t->status;
my $pay = $s->{upstreams}{payments};
ok($pay->{protected}, 'payments is protected by policy');
ok(!$s->{upstreams}{app}{protected}, 'app is not');
is_deeply($pay->{next_window}, {
    start => $iso->($w_start), end => $iso->($w_end), open => JSON::PP::false(),
    what => 'failover=off', reason => 'PCI scan' },
    'payments shows its next window: when, what, why, not open yet')
    or diag explain $pay->{next_window};
is($s->{upstreams}{app}{next_window}, undef, 'app has no window');
like(prom(), qr/^ha_optout_upstream_protected\{upstream="payments"\} 1$/m,
     'Prometheus: ha_optout_upstream_protected');
is($pay->{approvers}, 2, 'payments: an API opt-out needs 2 approvers');
is($s->{upstreams}{app}{approvers}, 0, 'app: no approval needed');
like(prom(), qr/^ha_optout_upstream_approvers\{upstream="payments"\} 2$/m,
     'Prometheus: ha_optout_upstream_approvers');
like(prom(), qr/^ha_optout_upstream_approvers\{upstream="app"\} 0$/m,
     'Prometheus: ha_optout_upstream_approvers 0 without approvers');
like(prom(), qr/^ha_optout_next_window_start_timestamp_seconds\{upstream="payments"\} $w_start$/m,
     'Prometheus: the next window\'s start');

ok($t->wait_for(sub { $t->status->{upstreams}{reporting}{flag} }, 5),
   'the open window on reporting acts');
$s = $t->status->{upstreams}{reporting};
ok($s->{next_window}{open}, 'the open window reads open');
is($s->{approvers}, 1, 'reporting has approvers: 1 ...');
is_deeply($s->{pending_approvals}, [],
          '... yet its window acts with no approval (windows need none)');
is($s->{restore}, 'ends with its window at ' . $iso->($open_end),
   'a window flag says when it ends');
is($t->status->{upstreams}{batch}{restore},
   'remove its ha_optout_flag line from nginx.conf and reload',
   'a config flag says how it goes');
like(prom(), qr/^ha_optout_flag_restore_info\{upstream="app",restore="DELETE v1\/flags\/app \(ha-optoutctl clear --upstream app\)"\} 1$/m,
     'Prometheus: ha_optout_flag_restore_info');


# ------------------------------------------------------------ HTML

my $CHROMIUM = (grep { -x } map { ("$_/chromium", "$_/chromium-browser") }
                split /:/, $ENV{PATH})[0];

SKIP: {
    skip 'chromium not found', 10 unless $CHROMIUM;

    my $dir = $t->testdir;
    my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-status?format=html';
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/chromium.out";
        open STDERR, '>', "$dir/chromium.err";
        exec 'timeout', '90', $CHROMIUM, '--headless', '--no-sandbox',
             '--disable-gpu', '--disable-background-networking',
             '--disable-component-update', '--disable-sync',
             '--no-first-run', "--user-data-dir=$dir/chromium-profile",
             '--dump-dom', $url or exit 127;
    }
    waitpid $pid, 0;
    my $dom = $t->read_file('chromium.out');

    like($dom, qr/failed <small>\(nginx skips it\)/,
         'HTML: the ejected server reads failed');
    like($dom, qr{<td>1 / 1</td><td>30 s</td>},
         'HTML: fails / max_fails and fail_timeout');
    like($dom, qr{DELETE v1/flags/app \(ha-optoutctl clear --upstream app\)},
         'HTML: how to restore an API flag');
    like($dom, qr/ends with its window at /, 'HTML: a window flag\'s end');
    like($dom, qr/PCI scan/, 'HTML: the next window of payments');
    like($dom, qr/yes: the API may opt out only inside a window/,
         'HTML: payments is protected');
    like($dom, qr/2 others must approve an API opt-out, within 30 m 00 s; windows need none/,
         'HTML: payments needs two approvers');
    like($dom, qr/<dd class="approvers">not needed<\/dd>/,
         'HTML: app needs no approval');
    like($dom, qr/since set.*failovers suppressed/s,
         'HTML: the counters since the flag was set');
    like($dom, qr/<b class="pin">pinned<\/b>/, 'HTML: the pinned server');
}

done_testing;
