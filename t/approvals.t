#!/usr/bin/perl

# The two-person rule (SPEC section 10): policy "approvers: N".  A write
# that suspends or widens an opt-out waits (202) for N other subjects to
# approve it; self-approval, double approval and approval without
# ha:approve are refused; restoring HA never waits; an expired request is
# audited and nothing is applied; pending approvals show in status and
# metrics and survive nginx -s reload and a restart.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;
use HaOptout::Approvals;
use JSON::PP ();
use FindBin;
use POSIX ();

my $t = HaOptout::Test->new;

my $dir = HaOptout::Approvals::setup($t, <<'EOF');
upstreams:
  "*":
    max_ttl: 2h
  app:
    approvers: 1
  pay:
    approvers: 2
    approval_ttl: 10m
  db:
    approvers: 1
    approval_ttl: 1s
EOF

my $conf = HaOptout::Approvals::conf(
    upstreams => [ app => ['b1', 'b2'], pay => ['b1'], db => ['b2'],
                   free => ['b2'] ],
    server => <<'EOF');

        location / {
            proxy_pass http://app;
        }

        location = /ha-status {
            ha_optout_status;
        }
EOF

$t->conf($conf)->run;

my $ALL = 'ha:read ha:write ha:approve';

sub as {
    my ($sub, $scope) = @_;
    return (token_args => { sub => $sub, scope => $scope // $ALL });
}

sub audit { HaOptout::Approvals::audit($t) }

sub pending { $t->api('GET', 'v1/approvals', as('dave', 'ha:read')) }

my $put = { failover => JSON::PP::false(), ttl => '30m',
            reason => 'INC-1 heap dump' };

# ---------------------------------------------------------------- request

my $r = $t->api('PUT', 'v1/flags/app?dry_run=1', json => $put, as('alice'));
is($r->{status}, 202, 'dry run of a write needing approval: 202');
ok(exists $r->{json}{approval} && !defined $r->{json}{approval}{id},
   'dry run: the approval that would be requested, without an id');
is(scalar @{ pending()->{json}{approvals} }, 0, 'dry run: nothing pending');

$r = $t->api('PUT', 'v1/flags/app', json => $put, as('alice'));
is($r->{status}, 202, 'PUT on an upstream with approvers: 202 Accepted');
my $a = $r->{json}{approval};
like($a->{id} // '', qr/^[0-9a-f]{16}$/, 'approval id');
is($a->{upstream}, 'app', 'approval upstream');
is($a->{requested_by}, 'alice', 'approval requested_by');
is($a->{reason}, 'INC-1 heap dump', 'approval reason');
is($a->{needed}, 1, 'approval needed');
is_deeply($a->{approved_by}, [], 'approval approved_by empty');
is($a->{flag}{failover}, JSON::PP::false(), 'approval carries the flag');
like($a->{expires_at} // '', qr/^\d{4}-\d\d-\d\dT/, 'approval expires_at');

is($t->api('GET', 'v1/flags/app')->{json}, undef,
   'nothing acts while the approval is pending');

my $list = pending();
is($list->{status}, 200, 'GET v1/approvals with ha:read');
is(scalar @{ $list->{json}{approvals} }, 1, 'one pending approval');
is($list->{json}{approvals}[0]{id}, $a->{id}, 'listed by id');

# ---------------------------------------------------------------- refusals

$r = $t->api('POST', "v1/approvals/$a->{id}", as('alice'));
is($r->{status}, 403, 'self-approval: 403');
is($r->{json}{error}{code}, 'SelfApproval', 'self-approval: code');

$r = $t->api('POST', "v1/approvals/$a->{id}", as('carol', 'ha:read ha:write'));
is($r->{status}, 403, 'approval without ha:approve: 403');
is($r->{json}{error}{code}, 'InsufficientScope', 'without ha:approve: code');
like($r->{headers}{'www-authenticate'} // '', qr/insufficient_scope/,
     'without ha:approve: WWW-Authenticate');

$r = $t->api('POST', 'v1/approvals/00000000000000ff', as('bob'));
is($r->{status}, 404, 'unknown approval id: 404');
ok($r->{is_json}, 'unknown approval id: JSON');

is($t->api('GET', 'v1/flags/app')->{json}, undef,
   'refused approvals applied nothing');

# the denied lines name the approval's upstream, not its id (nor "")
my @den = grep { $_->{action} eq 'denied' } audit();
my ($den_self) = grep { $_->{actor} eq 'alice' } @den;
my ($den_scope) = grep { $_->{actor} eq 'carol' } @den;
is($den_self && $den_self->{upstream}, 'app',
   'audit: the denied self-approval names the upstream app');
is($den_scope && $den_scope->{upstream}, 'app',
   'audit: the denied approval without ha:approve names the upstream app');

# ---------------------------------------------------------------- approve

$r = $t->api('POST', "v1/approvals/$a->{id}", as('bob'));
is($r->{status}, 200, 'approval by another subject: 200');
is($r->{json}{actor}, 'alice', 'stored flag: actor is the requester');
is_deeply($r->{json}{approved_by}, ['bob'], 'stored flag: approved_by');
is($r->{json}{failover}, JSON::PP::false(), 'stored flag: the request');
like($r->{headers}{etag} // '', qr/^"\d+"$/, 'stored flag: ETag');

my $f = $t->api('GET', 'v1/flags/app')->{json};
is($f->{failover}, JSON::PP::false(), 'the flag acts after approval');
is_deeply($f->{approved_by}, ['bob'], 'GET shows approved_by');
is(scalar @{ pending()->{json}{approvals} }, 0, 'applied: no longer pending');

$r = $t->api('POST', "v1/approvals/$a->{id}", as('carol'));
is($r->{status}, 404, 'an applied approval cannot be approved again');

my @au = audit();
my ($req) = grep { $_->{action} eq 'request' && $_->{upstream} eq 'app' } @au;
my ($app) = grep { $_->{action} eq 'approve' && $_->{upstream} eq 'app' } @au;
my ($set) = grep { $_->{action} eq 'set' && $_->{upstream} eq 'app' } @au;
ok($req && $req->{actor} eq 'alice', 'audit: request by alice');
ok($app && $app->{actor} eq 'bob', 'audit: approve by bob');
ok($set && $set->{actor} eq 'alice'
   && join(',', @{ $set->{after}{approved_by} // [] }) eq 'bob',
   'audit: set line carries approved_by');
like($req->{reason} // '', qr/\Q$a->{id}\E/, 'audit: request names the id');

# ---------------------------------------------------------------- restores

$r = $t->api('PATCH', 'v1/flags/app', json => { ttl => '10m' }, as('alice'));
is($r->{status}, 200, 'a PATCH that only shortens ttl needs no approval');
is_deeply($r->{json}{approved_by}, ['bob'], 'shortened flag keeps approved_by');

$r = $t->api('PATCH', 'v1/flags/app', json => { ttl => '1h' }, as('alice'));
is($r->{status}, 202, 'a PATCH that extends ttl needs approval');
my $ext = $r->{json}{approval}{id};

$r = $t->api('PATCH', 'v1/flags/app', json => { pin => '127.0.0.1:' .
             $t->port('b1') }, as('alice'));
is($r->{status}, 202, 'a PATCH that adds a pin needs approval');
my $pin = $r->{json}{approval}{id};

$r = $t->api('DELETE', "v1/approvals/$pin", as('carol', 'ha:read ha:write'));
is($r->{status}, 403, 'withdraw by neither requester nor approver: 403');

$r = $t->api('DELETE', "v1/approvals/$pin", as('alice', 'ha:read ha:write'));
is($r->{status}, 200, 'the requester withdraws: 200');
is($t->api('POST', "v1/approvals/$pin", as('bob'))->{status}, 404,
   'a withdrawn request cannot be approved');
ok((grep { $_->{action} eq 'reject' } audit()), 'audit: reject');

$r = $t->api('DELETE', 'v1/flags/app', as('alice', 'ha:read ha:write'));
is($r->{status}, 200, 'DELETE of the acting flag needs no approval');
is($r->{json}, undef, 'DELETE: HA restored');

# the PATCH made on the deleted flag can no longer be applied
$r = $t->api('POST', "v1/approvals/$ext", as('bob'));
is($r->{status}, 409, 'approving a PATCH whose flag is gone: 409');
like($r->{json}{error}{message} // '',
     qr/flag changed after this request was made.*request was dropped.*send it again/,
     '409: says the request was dropped and must be sent again');
my ($drop) = grep { $_->{action} eq 'reject'
                    && ($_->{reason} // '') =~ /\Q$ext\E approved but not applied/ }
             audit();
like($drop && $drop->{cause} // '', qr/flag changed after this request.*dropped/,
     'audit: the reject line of the dropped request says why (cause)');
is($t->api('GET', 'v1/flags/app')->{json}, undef, '... and nothing acts');

# an upstream without approvers works as before
$r = $t->api('PUT', 'v1/flags/free', json => $put, as('alice'));
is($r->{status}, 200, 'approvers 0: PUT applies at once');
is_deeply($r->{json}{approved_by}, [], 'approvers 0: approved_by []');

# ---------------------------------------------------------------- two of two

$r = $t->api('PUT', 'v1/flags/pay', json => $put, as('alice'));
is($r->{status}, 202, 'pay: 202');
my $p = $r->{json}{approval}{id};
is($r->{json}{approval}{needed}, 2, 'pay: needs 2');

$r = $t->api('POST', "v1/approvals/$p", as('bob'));
is($r->{status}, 200, 'pay: first approval');
is_deeply($r->{json}{approval}{approved_by}, ['bob'],
          'pay: first approval is listed, still pending');
is($t->api('GET', 'v1/flags/pay')->{json}, undef,
   'pay: one approval of two applies nothing');

$r = $t->api('POST', "v1/approvals/$p", as('bob'));
is($r->{status}, 403, 'double approval by the same subject: 403');
is($r->{json}{error}{code}, 'AlreadyApproved', 'double approval: code');

# ---------------------------------------------------------------- status

my $st = $t->status;
is(scalar @{ $st->{upstreams}{pay}{pending_approvals} // [] }, 1,
   'status JSON: pay has one pending approval');
is($st->{upstreams}{pay}{pending_approvals}[0]{id}, $p,
   'status JSON: by id');

my $prom = $t->get('/ha-status?format=prometheus')->{body};
like($prom, qr/^ha_optout_pending_approvals\{upstream="pay"\} 1$/m,
     'metrics: ha_optout_pending_approvals{upstream="pay"} 1');
like($prom, qr/^ha_optout_pending_approvals\{upstream="app"\} 0$/m,
     'metrics: app 0');

my $html = $t->get('/ha-status?format=html')->{body};
like($html, qr/pending approval/i, 'status HTML shows pending approvals');
like($html, qr/\Q$p\E/, 'status HTML names the approval');

# ---------------------------------------------------------------- reload

$t->reload;
$r = pending();
is(scalar(grep { $_->{id} eq $p } @{ $r->{json}{approvals} }), 1,
   'pending approval survives nginx -s reload');

# ---------------------------------------------------------------- restart

$t->stop;
like($t->read_file('state/ha-optout.state'), qr/\Q$p\E/,
     'the state file holds the pending approval');
$t->run;

$r = pending();
my ($back) = grep { $_->{id} eq $p } @{ $r->{json}{approvals} };
ok($back, 'pending approval survives a restart');
is_deeply($back->{approved_by}, ['bob'], '... with its approvals');

$r = $t->api('POST', "v1/approvals/$p", as('carol'));
is($r->{status}, 200, 'pay: the second approval after restart applies it');
is_deeply($r->{json}{approved_by}, ['bob', 'carol'],
          'pay: approved_by both');

$t->stop;
$t->run;
# the state file is read by worker 0's first tick: wait for it
my $pf = $t->wait_for(sub { $t->api('GET', 'v1/flags/pay')->{json} }, 5);
is_deeply($pf && $pf->{approved_by}, ['bob', 'carol'],
          'approved_by survives a restart (state file)');

# ---------------------------------------------------------------- expiry

$r = $t->api('PUT', 'v1/flags/db', json => $put, as('alice'));
is($r->{status}, 202, 'db: 202');
my $d = $r->{json}{approval}{id};

my $exp = $t->wait_for(sub {
    scalar grep { $_->{action} eq 'approval_expired'
                  && ($_->{reason} // '') =~ /\Q$d\E/ } audit();
}, 10);
ok($exp, 'expiry is audited as approval_expired by the timer');

$r = $t->api('POST', "v1/approvals/$d", as('bob'));
is($r->{status}, 404, 'an expired approval cannot be approved');
is($t->api('GET', 'v1/flags/db')->{json}, undef,
   'expired: nothing applied');
is(scalar(grep { $_->{id} eq $d } @{ pending()->{json}{approvals} }), 0,
   'expired: no longer listed');

# ---------------------------------------------------------------- limits

is_deeply($t->api('GET', 'v1/whoami', as('bob'))->{json}{scopes},
          ['ha:read', 'ha:write', 'ha:approve'], 'whoami lists ha:approve');

# a token limited to other upstreams neither sees nor approves a request
$r = $t->api('PUT', 'v1/flags/app', json => { %$put, sticky =>
             JSON::PP::true() }, as('alice'));
is($r->{status}, 202, 'app: a widening PUT waits');
my $lim = $r->{json}{approval}{id};
$r = $t->api('GET', 'v1/approvals', token_args => { sub => 'gus',
             scope => 'ha:read', claims => { ha_upstreams => ['db'] } });
is(scalar(grep { $_->{id} eq $lim } @{ $r->{json}{approvals} }), 0,
   'ha_upstreams: other upstreams\' approvals are not listed');
$r = $t->api('POST', "v1/approvals/$lim", token_args => { sub => 'gus',
             scope => $ALL, claims => { ha_upstreams => ['db'] } });
is($r->{status}, 403, 'ha_upstreams: approving another upstream: 403');
is($t->api('DELETE', "v1/approvals/$lim", as('bob'))->{status}, 200,
   'a holder of ha:approve rejects');

# the table is bounded: 507 when full, and restoring HA still works
# (eight writers: one subject may hold 8 of the 32, t/approvals_quota.t)
my ($full, $n) = (0, 0);
for (1 .. 40) {
    my $x = $t->api('PUT', 'v1/flags/pay', json => { %$put, sticky =>
                    JSON::PP::true() }, as('writer' . $_ % 8));
    if ($x->{status} == 507) { $full = $x; last }
    $n++;
}
ok($full, "the approvals table is full after $n requests: 507");
is($full && $full->{json}{error}{code}, 'ZoneFull', '507: ZoneFull');
like($full && $full->{json}{error}{message}, qr/32 per zone.*GET v1\/approvals/,
     '507: says how many and how to make room');
is($t->api('DELETE', 'v1/flags/pay', as('alice'))->{status}, 200,
   'a full table never blocks DELETE (restoring HA)');
for my $x (@{ pending()->{json}{approvals} }) {
    $t->api('DELETE', "v1/approvals/$x->{id}", as('alice'));
}
is(scalar @{ pending()->{json}{approvals} }, 0, 'withdrawn: table empty');

# ---------------------------------------------------------------- CLI

# tokens minted by the CLI itself (--key), one subject per person
my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
my $key = "$dir/../ha-optout.key";

our $NOSCOPE;                   # 1: mint with the CLI's default --scope

sub cli {
    my ($sub, @args) = @_;
    my ($out, $err) = ("$dir/../cli.out", "$dir/../cli.err");
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{"HA_OPTOUT_$_"} for qw(URL TOKEN KEY ALG KID AUD);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        # run stops at "--": the common options go before it
        my @common = ('--url', $url, '--key', $key, '--kid', 'ops',
                      '--sub', $sub, $NOSCOPE ? () : ('--scope', $ALL));
        my ($i) = grep { $args[$_] eq '--' } 0 .. $#args;
        splice @args, $i // scalar @args, 0, @common;
        exec $CLI, @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return { rc => $? >> 8, out => $t->read_file('cli.out'),
             err => $t->read_file('cli.err') };
}

my $c = cli('erin', 'set', '--upstream', 'app', '--no-failover',
            '--ttl', '20m', '--reason', 'INC-9 cli');
is($c->{rc}, 0, 'cli set on an approvers upstream: exit 0');
like($c->{out}, qr/approval requested, nothing changed yet: id ([0-9a-f]{16})/,
     'cli set says an approval was requested') or diag $c->{out}, $c->{err};
my ($cid) = $c->{out} =~ /id ([0-9a-f]{16})/;

$c = cli('frank', 'approvals', 'list');
is($c->{rc}, 0, 'cli approvals list: exit 0');
like($c->{out}, qr/^\Q$cid\E  app  by erin  0\/1 approvals/m,
     'cli approvals list shows the request') or diag $c->{out};

$c = cli('erin', 'approvals', 'approve', '--id', $cid);
is($c->{rc}, 1, 'cli self-approval: exit 1 (refused)');
like($c->{err}, qr/403/, 'cli self-approval: 403 shown');

$c = cli('frank', 'approvals', 'approve', '--id', $cid);
is($c->{rc}, 0, 'cli approve by another: exit 0');
like($c->{out}, qr/approved and applied: HA suspended: .*approved by frank/,
     'cli approve applies it') or diag $c->{out}, $c->{err};
is($t->api('GET', 'v1/flags/app')->{json}{actor}, 'erin',
   'the CLI-approved flag acts');
$c = cli('frank', 'status');
like($c->{out}, qr/^app\s+ACTIVE\s.*\berin\b.*INC-9 cli \[approved by frank\]$/m,
     'cli status names who approved the acting flag') or diag $c->{out};

# a set that adds an opt-out to the acting flag widens it: approval
$c = cli('erin', 'set', '--upstream', 'app', '--no-failover', '--sticky',
         '--ttl', '20m', '--reason', 'INC-10 cli');
like($c->{out}, qr/approval requested/, 'cli set that widens: approval');
($cid) = $c->{out} =~ /id ([0-9a-f]{16})/;
$c = cli('frank', 'approvals', 'reject', '--id', $cid);
is($c->{rc}, 0, 'cli reject: exit 0');
like($c->{out}, qr/\Q$cid\E: rejected/, 'cli reject says so');
is(cli('frank', 'approvals', 'approve', '--id', $cid)->{rc}, 1,
   'a rejected request cannot be approved (exit 1)');
is(cli('frank', 'approvals', 'approve')->{rc}, 2, 'approve without --id: 2');

# as an operator types it: the id given without --id, no --scope
$c = cli('erin', 'set', '--upstream', 'app', '--no-failover', '--sticky',
         '--ttl', '20m', '--reason', 'INC-12 cli', '--dry-run');
is($c->{rc}, 0, 'cli set --dry-run needing approval: exit 0');
like($c->{out}, qr/^app: dry run, would need 1 approval\(s\) by others; nothing requested$/m,
     'cli dry run says nothing was requested (no "id -")') or diag $c->{out};
$c = cli('erin', 'set', '--upstream', 'app', '--no-failover', '--sticky',
         '--ttl', '20m', '--reason', 'INC-12 cli');
($cid) = $c->{out} =~ /id ([0-9a-f]{16})/;
{
    local $NOSCOPE = 1;
    $c = cli('frank', 'approvals', 'approve', $cid);
    is($c->{rc}, 2, 'approve ID (positional): usage error');
    like($c->{err}, qr/unexpected argument "\Q$cid\E": give the approval's id as --id \Q$cid\E/,
         'approve ID says to give it as --id') or diag $c->{err};
    $c = cli('frank', 'approvals', 'approve', '--id', $cid);
    is($c->{rc}, 0, 'approve --id with the default --scope: exit 0 (the '
       . 'minted token has ha:approve)') or diag $c->{err};
    like($c->{out}, qr/approved and applied: .*approved by frank/,
         'approve with the default --scope applies it') or diag $c->{out};
}

# run cannot wait for people: it refuses and withdraws its request
my $ran = "$dir/../ran";
$c = cli('erin', 'run', '--upstream', 'pay', '--no-failover', '--ttl', '5m',
         '--reason', 'INC-11 run', '--', '/bin/touch', $ran);
is($c->{rc}, 1, 'cli run on an approvers upstream: exit 1') or diag explain $c;
ok(!-e $ran, 'cli run: the command did not run');
like($c->{err}, qr/wants approvers/, 'cli run says why');
is(scalar(grep { $_->{upstream} eq 'pay' } @{ pending()->{json}{approvals} }),
   0, 'cli run: its request was withdrawn');

# ---------------------------------------------------------------- policy

$t->write_file('policy.yaml', <<'EOF');
upstreams:
  app:
    approvers: many
EOF
my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'approvers: many is refused by nginx -t');
like($out, qr/policy\.yaml:3:\d+: approvers must be/, 'file:line:col');

$t->write_file('policy.yaml', <<'EOF');
upstreams:
  app:
    approvers: 9
EOF
($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'approvers over the bound is refused');
like($out, qr/approvers must be 0\.\.4/, 'the bound is named');

$t->write_file('policy.yaml', <<'EOF');
upstreams:
  app:
    approval_ttl: 0s
EOF
($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'approval_ttl 0s is refused');
like($out, qr/policy\.yaml:3:\d+: approval_ttl/, 'approval_ttl: file:line:col');

unlike($t->error_log, qr/exited on signal/, 'no worker crashed');

done_testing;
