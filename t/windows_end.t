#!/usr/bin/perl

# Windows can be ended or skipped (issue 17, item 3): POST
# v1/windows/{upstream}/end closes the policy window open now, .../skip
# keeps its next occurrence closed; both need ha:write and a reason, are
# audited (window_end / window_skip) with the actor, refused for a window
# with "endable: false", and kept in the state file, so a restart does not
# reopen what was ended.  The CLI verb "window end|skip" does the same.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP ();
use POSIX qw(strftime);
use HaOptout::Test;

my $CTL = abs_path(dirname(__FILE__) . '/..') . '/build/ha-optoutctl';

my $t = HaOptout::Test->new;
$t->backend('b1');
my (undef, $secret) = $t->secret_file('ha-optout.key');
my $state = $t->state_dir;

my $now = time;
$now -= $now % 60;
my $iso = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) };

$t->write_file('policy.yaml', <<"EOF");
upstreams:
  pci:
    protected: true
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
  - upstream: pci
    start: "@{[ $iso->($now - 60) ]}"
    end: "@{[ $iso->($now + 3600) ]}"
    endable: false
    failover: false
    reason: "PCI mandated"
EOF

$t->conf(<<"EOF");
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_state_file $state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app { server 127.0.0.1:%%PORT_b1%%; ha_optout; }
    upstream pci { server 127.0.0.1:%%PORT_b1%%; ha_optout; }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
        location = /ha-status { ha_optout_status; }
    }
}
EOF

$t->run;

sub win {
    my ($path, $body, %o) = @_;
    return $t->api(POST => "v1/windows/$path", json => $body, %o);
}

sub flag_of { $t->status->{upstreams}{$_[0]}{flag} }

sub audit_lines {
    return map { JSON::PP::decode_json($_) }
           grep { /\S/ } split /\n/, $t->read_file('audit.jsonl');
}

ok($t->wait_for(sub { flag_of('app') && flag_of('pci') }, 5),
   'the open windows on app and pci act');

# ------------------------------------------------------------ refusals

my $r = win('app/end', {});
is($r->{status}, 400, 'end without a reason: 400');
is($r->{json}{error}{code}, 'InvalidReason', '... InvalidReason');

$r = win('app/end', { reason => 'x' }, token_args => { scope => 'ha:read' });
is($r->{status}, 403, 'end with a read-only token: 403');

$r = win('app/end', { reason => 'x', window => 'nosuch' });
is($r->{status}, 404, 'an unknown window: 404');
like($r->{json}{error}{message},
     qr/no window "nosuch"; its windows: 1 \(migration\), 2 \(next\)/,
     '... naming the windows the upstream has');

$r = win('nosuch/end', { reason => 'x' });
is($r->{status}, 404, 'an unknown upstream: 404');

$r = win('pci/end', { reason => 'please' });
is($r->{status}, 403, 'a window with endable: false cannot be ended');
is($r->{json}{error}{code}, 'ForbiddenByPolicy', '... ForbiddenByPolicy');
like($r->{json}{error}{message}, qr/endable: false/, '... saying why');
ok(flag_of('pci'), 'the pci window still acts');
ok((grep { $_->{action} eq 'denied' && $_->{upstream} eq 'pci' }
    audit_lines()), 'the refusal is audited as denied');

$r = $t->api(GET => 'v1/windows/app/end');
is($r->{status}, 405, 'GET on a window endpoint: 405');
is($r->{headers}{allow}, 'POST', '... Allow: POST');

# ------------------------------------------------------------ end

$r = win('app/end', { reason => 'migration finished early' },
         token_args => { sub => 'carol' });
is($r->{status}, 200, 'end the open window: 200') or diag explain $r->{json};
is($r->{json}{window}, 'migration', '... the window by its name');
is($r->{json}{action}, 'end', '... action end');
ok($r->{json}{was_acting}, '... it was the acting window');
is($r->{json}{flag}, undef, '... and nothing acts on app now');
is(flag_of('app'), undef, 'the status page shows app without a flag at once');

my ($end) = grep { $_->{action} eq 'window_end' } audit_lines();
ok($end, 'audited as window_end');
is($end->{actor}, 'carol', '... with the actor');
is($end->{reason}, 'migration finished early', '... and the reason given');
is($end->{before}{reason}, 'schema migration', '... and the window ended');

$r = win('app/end', { reason => 'again' });
is($r->{status}, 409, 'ending again: 409');
is($r->{json}{error}{code}, 'NoOpenWindow', '... NoOpenWindow');

like($t->read_file("$state/ha-optout.state"), qr/^windows_ended:/m,
     'the state file keeps the ended occurrence');

# a restart does not reopen it: the pci window coming back proves the
# timer has run
$t->stop;
$t->run;
ok($t->wait_for(sub { flag_of('pci') }, 5), 'after a restart the timer '
   . 'opens the pci window again');
is(flag_of('app'), undef, 'but not the ended app window');

# ------------------------------------------------------------ skip (CLI)

my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
my $key = $t->testdir . '/ha-optout.key';
my $out = `$CTL window skip --url $url --key $key --kid ops --sub dave --upstream app --reason "not this quarter" 2>&1`;
is($? >> 8, 0, 'ha-optoutctl window skip exits 0') or diag $out;
like($out, qr/^app: window next skipped: \Q@{[ $iso->($now + 7200) ]}\E/,
     '... and names the skipped occurrence');
is($t->status->{upstreams}{app}{next_window}, undef,
   'app has no window left to come');
my ($skip) = grep { $_->{action} eq 'window_skip' } audit_lines();
ok($skip && $skip->{actor} eq 'dave'
   && $skip->{reason} eq 'not this quarter', 'audited as window_skip, with '
   . 'actor and reason');

$out = `$CTL window end --url $url --key $key --kid ops --upstream pci --reason x 2>&1`;
is($? >> 8, 1, 'ha-optoutctl window end on an endable: false window exits 1');
like($out, qr/403 ForbiddenByPolicy: .*endable: false/, '... saying why');

$out = `$CTL window skip --url $url --key $key --kid ops --upstream app 2>&1`;
is($? >> 8, 2, 'window without --reason is a usage error');

like($t->get('/ha-status?format=prometheus')->{body},
     qr/^ha_optout_changes_total\{upstream="app",action="window_skip"\} 1$/m,
     'ha_optout_changes_total counts window_skip');

done_testing;
