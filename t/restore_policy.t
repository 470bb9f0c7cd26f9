#!/usr/bin/perl

# A flag read back from the state file at start must pass the policy as a
# write would now.  The file is written by the workers' user (www-data on
# Debian): whoever can act as that user could otherwise put back a flag no
# token may set (a month-long ttl over max_ttl, an opt-out the policy does
# not allow, ttl "none", a flag on a protected upstream outside its
# windows).  A stricter policy since the flag was set drops it likewise:
# HA comes back, the restore_rejected audit line names the policy's
# refusal, and a flag the policy still allows is restored as it was.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;
use JSON::PP ();
use POSIX ();
use FindBin;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
my $dir = $t->state_dir;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";

my $open = <<'EOF';
upstreams:
  "*":
    ttl_none: true
EOF

my $strict = <<'EOF';
upstreams:
  "*":
    allow: [failover, pin, replication, sticky]
    max_ttl: 1h
  app:
    max_ttl: 1h
  pinned:
    allow: [failover]
  batch:
    ttl_none: false
  pay:
    protected: true
windows:
  - upstream: pay
    start: 2030-01-01T00:00:00Z
    end: 2030-01-01T01:00:00Z
    failover: false
    reason: "a window far away"
EOF

$t->write_file('policy.yaml', $open);

my $ups = join '', map { <<"EOF" } qw(app pinned batch pay keep edited);
    upstream $_ {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }
EOF

$t->conf(<<"EOF")->run;
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/state/audit.jsonl;

$ups
    server {
        listen 127.0.0.1:%%PORT_http%%;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

my $b2 = '127.0.0.1:' . $t->port('b2');

my %set = (
    app    => { failover => JSON::PP::false(), ttl => '2h' },
    pinned => { pin => $b2, ttl => '10m' },
    batch  => { failover => JSON::PP::false(), ttl => 'none' },
    pay    => { failover => JSON::PP::false(), ttl => '10m' },
    keep   => { failover => JSON::PP::false(), ttl => '10m' },
    edited => { failover => JSON::PP::false(), ttl => '10m' },
);

for my $u (sort keys %set) {
    my $r = $t->api(PUT => "v1/flags/$u",
        json => { %{ $set{$u} }, reason => "INC-7 $u" });
    is($r->{status}, 200, "flag on $u under the open policy")
        or diag $r->{body};
}

$t->stop;

# the stricter policy, and a month more for "edited" by hand (its ttl of
# 10 minutes passes any max_ttl; the file now says it ends in 30 days)

$t->write_file('policy.yaml', $strict);

my $state = "$dir/ha-optout.state";
my $text = $t->read_file($state);
my $far = POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time + 30 * 86400));
ok($text =~ s/(\n  edited:\n(?:    .*\n)*?    expires_at: )\S+/$1$far/,
   'the state file edited: "edited" now expires in 30 days');
$t->write_file('state/ha-optout.state', $text);

$t->run;

my $flags = $t->wait_for(sub {
    my $r = $t->api(GET => 'v1/flags');
    my $j = eval { JSON::PP->new->decode($r->{body}) };
    return $j && $j->{keep} ? $j : undef;
}, 10);
ok($flags, 'the flag the policy still allows is restored') or diag explain $flags;

is(join(',', sort grep { $flags->{$_} && $flags->{$_}{source} eq 'api' }
                   keys %{ $flags // {} }),
   'keep', 'no other API flag acts after the restart')
    or diag explain $flags;
like($flags->{keep}{reason} // '', qr/INC-7 keep/, '(keep as it was)');

my $audit = $t->wait_for(sub {
    my $a = $t->read_file('state/audit.jsonl');
    return (() = $a =~ /"restore_rejected"/g) >= 5 ? $a : undef;
}, 10);
ok($audit, 'five restore_rejected lines');

my %cause;
for my $line (split /\n/, $audit // '') {
    my $j = eval { JSON::PP->new->decode($line) } or next;
    next unless ($j->{action} // '') eq 'restore_rejected';
    $cause{ $j->{upstream} } = $j->{cause};
}

like($cause{app} // '', qr/^refused by policy now: .*max_ttl of 1h/,
     'app: its 2h is over max_ttl 1h now');
like($cause{edited} // '', qr/^refused by policy now: .*max_ttl of 1h/,
     'edited: the hand-made month is over max_ttl');
like($cause{pinned} // '', qr/^refused by policy now: .*pin/,
     'pinned: the policy no longer allows a pin');
like($cause{batch} // '', qr/^refused by policy now: .*ttl "none"/,
     'batch: ttl none is no longer allowed');
like($cause{pay} // '', qr/^refused by policy now: .*protected/,
     'pay: protected, and no window is open');
ok(!exists $cause{keep}, 'keep: no restore_rejected line');

like($t->error_log, qr/saved flag of "edited" dropped: the policy refuses it now: ttl/,
     'error_log says why at warn');

$text = $t->wait_for(sub {
    my $s = $t->read_file($state);
    return $s !~ /\n  (?:app|edited|pinned|batch|pay):\n/ ? $s : undef;
}, 10);
ok($text, 'the state file written again without the dropped flags');

my $pid = fork // die;
if ($pid == 0) {
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', "$dir/../verify.out";
    open STDERR, '>&', \*STDOUT;
    exec $CLI, 'audit', 'verify', "$dir/audit.jsonl" or POSIX::_exit(127);
}
waitpid $pid, 0;
is($? >> 8, 0, 'ha-optoutctl audit verify: the chain holds')
    or diag $t->read_file('verify.out');

done_testing;
