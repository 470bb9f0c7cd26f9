#!/usr/bin/perl

# The two-person rule (SPEC section 10) never stands between an operator
# and HA coming back, nor in front of reviewed config: on an upstream with
# "approvers: 1" a policy window opens and acts with no approval, ending
# or skipping a window through the API is answered at once (200, not
# 202), a PATCH that lifts an opt-out applies at once, a fleet write (the
# agents' layer, signed upstream in etcd) is not held; and a pending
# approval whose approval_ttl ran out while nginx was stopped is audited
# as approval_expired at the next start and never applied.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;
use HaOptout::Approvals;
use JSON::PP ();
use POSIX qw(strftime);
use Time::HiRes ();

my $t = HaOptout::Test->new;

my $dir = HaOptout::Approvals::setup($t);

my $now = time;
$now -= $now % 60;
my $iso = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) };

$t->write_file('policy.yaml', <<"EOF");
upstreams:
  app:
    approvers: 1
  db:
    approvers: 1
    approval_ttl: 2s
windows:
  - upstream: app
    name: migration
    start: "@{[ $iso->($now - 60) ]}"
    end: "@{[ $iso->($now + 3600) ]}"
    replication: false
    reason: "schema migration"
  - upstream: app
    name: next
    start: "@{[ $iso->($now + 7200) ]}"
    end: "@{[ $iso->($now + 10800) ]}"
    failover: false
    reason: "next migration"
EOF

$t->conf(HaOptout::Approvals::conf(
    upstreams => [ app => ['b1', 'b2'], db => ['b2'] ],
    server => <<'EOF'))->run;

        location = /ha-status {
            ha_optout_status;
        }
EOF

my $ALL = 'ha:read ha:write ha:approve';

sub as {
    my ($sub, $scope) = @_;
    return (token_args => { sub => $sub, scope => $scope // $ALL });
}

sub audit { HaOptout::Approvals::audit($t) }

sub pending {
    return $t->api('GET', 'v1/approvals', as('dave', 'ha:read'))
             ->{json}{approvals} // [];
}

# ---------------------------------------------------------------- windows

my $w = $t->wait_for(sub { $t->status->{upstreams}{app}{flag} }, 5);
is($w && $w->{source}, 'window',
   'a window on an approvers upstream acts without approval');
is(scalar @{ pending() }, 0, '... and asked for none');

my $r = $t->api('POST', 'v1/windows/app/skip',
                json => { window => 'next', reason => 'INC-1 not needed' },
                as('alice', 'ha:read ha:write'));
is($r->{status}, 200, 'skipping a window on an approvers upstream: 200')
    or diag explain $r->{json};
ok(!exists(($r->{json} // {})->{approval}), 'skip: no approval asked');

$r = $t->api('POST', 'v1/windows/app/end',
             json => { reason => 'INC-1 done early' },
             as('alice', 'ha:read ha:write'));
is($r->{status}, 200, 'ending a window on an approvers upstream: 200')
    or diag explain $r->{json};
ok($t->wait_for(sub { !$t->status->{upstreams}{app}{flag} }, 5),
   'the window is ended at once: HA back');
is(scalar @{ pending() }, 0, 'end and skip asked for no approval');
ok((grep { $_->{action} eq 'window_end' && $_->{actor} eq 'alice' } audit()),
   'audit: window_end by alice');

# ---------------------------------------------------------------- narrowing

my $put = { failover => JSON::PP::false(), replication => JSON::PP::false(),
            ttl => '30m', reason => 'INC-2 two opt-outs' };

$r = $t->api('PUT', 'v1/flags/app', json => $put, as('alice'));
is($r->{status}, 202, 'a PUT that suspends HA waits for approval');
my $id = $r->{json}{approval}{id};
is($t->api('POST', "v1/approvals/$id", as('bob'))->{status}, 200,
   'approved by bob: applied');
my $st = $t->status->{upstreams}{app};
is($st->{flag}{source}, 'api', 'status: the approved API flag acts');
is_deeply($st->{since_flag}, { failover_suppressed => 0, pinned_requests => 0,
                               replication_bypassed => 0 },
          'status: its counters since it was set start at 0');
like($st->{restore} // '', qr/^DELETE v1\/flags\/app /,
     'status: how to restore it (no approval needed)');

$r = $t->api('PATCH', 'v1/flags/app', json => { replication => JSON::PP::true() },
             as('alice', 'ha:read ha:write'));
is($r->{status}, 200, 'a PATCH that lifts an opt-out needs no approval')
    or diag explain $r->{json};
is($r->{json}{replication}, JSON::PP::true(), '... replication is back');
is($r->{json}{failover}, JSON::PP::false(), '... the rest is kept');
is_deeply($r->{json}{approved_by}, ['bob'], '... and so is approved_by');

$r = $t->api('PATCH', 'v1/flags/app', json => { replication => JSON::PP::false() },
             as('alice', 'ha:read ha:write'));
is($r->{status}, 202, 'a PATCH that suspends it again waits');
$t->api('DELETE', "v1/approvals/$r->{json}{approval}{id}", as('alice'));

$r = $t->api('DELETE', 'v1/flags/app', as('alice', 'ha:read ha:write'));
is($r->{status}, 200, 'DELETE restores at once');

# ---------------------------------------------------------------- fleet

$r = $t->api('PUT', 'v1/fleet/app', token_args => { sub => 'lb1',
             scope => 'ha:fleet' },
             json => { failover => JSON::PP::false(), ttl => '30m',
                       reason => 'INC-3 fleet hold', revision => 7,
                       actor => 'alice', via => 'lb1' });
is($r->{status}, 200, 'a fleet write is not held for approval (signed in '
   . 'etcd, see docs/api.md)') or diag explain $r->{json};
$t->api('DELETE', 'v1/fleet/app', token_args => { sub => 'lb1',
        scope => 'ha:fleet' });

# ---------------------------------------------------------------- restart

$r = $t->api('PUT', 'v1/flags/db', json => $put, as('alice'));
is($r->{status}, 202, 'db: 202, approval_ttl 2s');
my $d = $r->{json}{approval}{id};
my $expires = $r->{json}{approval}{expires_at};

$t->stop;
like($t->read_file('state/ha-optout.state'), qr/\Q$d\E/,
     'the stopped nginx kept the pending approval in the state file');
ok(!(grep { $_->{action} eq 'approval_expired' } audit()),
   'not expired while it ran');

# nginx is down while the approval_ttl runs out: wait for the clock
my $end = $t->wait_for(sub { $iso->(int Time::HiRes::time()) gt $expires }, 10);
ok($end, "the clock passed expires_at $expires with nginx stopped");

$t->run;

my $exp = $t->wait_for(sub {
    scalar grep { $_->{action} eq 'approval_expired'
                  && ($_->{reason} // '') =~ /\Q$d\E/ } audit();
}, 10);
ok($exp, 'at start the expired approval is audited as approval_expired');
is(scalar(grep { $_->{id} eq $d } @{ pending() }), 0,
   'it is not listed any more');
is($t->api('POST', "v1/approvals/$d", as('bob'))->{status}, 404,
   'it cannot be approved');
is($t->api('GET', 'v1/flags/db')->{json}, undef, 'nothing applied on db');
$t->wait_for(sub { $t->read_file('state/ha-optout.state') !~ /\Q$d\E/ }, 5);
unlike($t->read_file('state/ha-optout.state'), qr/\Q$d\E/,
       'the state file no longer holds it');

unlike($t->error_log, qr/exited on signal/, 'no worker crashed');

done_testing;
