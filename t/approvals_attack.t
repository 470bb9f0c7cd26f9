#!/usr/bin/perl

# The two-person rule (SPEC section 10) under attack.  A requester who
# gets a second token whose "sub" differs from hers only in case,
# surrounding white space or invisible characters is still the requester;
# so is she under another key.  A reload that raises "approvers" raises
# what a pending request needs; a state file edited while nginx is
# stopped (forged approved_by naming the requester, a lower "needed", an
# expires_at years away) gives no request more than the policy allows.
# Malformed ids are a JSON 404; header-unsafe reasons stay escaped in the
# CLI; every request/approve/reject/approval_expired line verifies with
# "ha-optoutctl audit verify".

use strict;
use warnings;
use Encode ();

use Test::More;
use HaOptout::Test;
use HaOptout::Approvals;
use JSON::PP ();
use FindBin;
use POSIX ();

my $t = HaOptout::Test->new;

my $policy = <<'EOF';
upstreams:
  app:
    approvers: 1
  pay:
    approvers: 2
  db:
    approvers: 1
    approval_ttl: 1s
  gone:
    approvers: 1
EOF

my $dir = HaOptout::Approvals::setup($t, $policy);
my (undef, $secret2) = $t->secret_file('ops2.key');

my @ups = (app => ['b1'], pay => ['b1'], db => ['b2']);
my $admin = "            ha_optout_admin_key hs256 %%TESTDIR%%/ops2.key "
          . "kid=ops2;\n";
my $c1 = HaOptout::Approvals::conf(upstreams => [ @ups, gone => ['b2'] ],
                                   admin => $admin);
my $c2 = HaOptout::Approvals::conf(upstreams => \@ups, admin => $admin);

$t->conf($c1)->run;

my $ALL = 'ha:read ha:write ha:approve';

sub as {
    my ($sub, %o) = @_;
    return (token_args => { sub => Encode::encode_utf8($sub), scope => $ALL, kid => 'ops', %o });
}

sub audit { HaOptout::Approvals::audit($t) }

sub pending {
    return $t->api('GET', 'v1/approvals', as('dave'))->{json}{approvals}
           // [];
}

sub request {
    my ($up, %o) = @_;
    my $r = $t->api('PUT', "v1/flags/$up",
                    json => { failover => JSON::PP::false(), ttl => '30m',
                              reason => $o{reason} // 'INC-7 attack' },
                    as($o{by} // 'alice'));
    is($r->{status}, 202, "$up: a suspending PUT waits (202)")
        or diag explain $r->{json};
    return $r->{json}{approval}{id};
}

# ---------------------------------------------------------------- subjects

my $id = request('app');

for my $sub ('Alice', 'ALICE', 'alice ', ' alice', "alice\t", "alice\n",
             "ali\x{200b}ce", "alice\x{feff}", "al\x{00ad}ice",
             "\x{2060}alice")
{
    (my $shown = $sub) =~ s/([^a-zA-Z ])/sprintf '\\x{%x}', ord $1/ge;
    my $r = $t->api('POST', "v1/approvals/$id", as($sub));
    is($r->{status}, 403, "the requester as sub \"$shown\" cannot approve");
    is($r->{json}{error}{code}, 'SelfApproval', "... SelfApproval ($shown)");
}

my $r = $t->api('POST', "v1/approvals/$id",
                as('alice', kid => 'ops2', secret => $secret2));
is($r->{status}, 403, 'the requester under another key (kid) cannot approve');
is($t->api('GET', 'v1/flags/app', as('dave'))->{json}, undef, 'nothing was applied');

# a distinct subject that merely contains the requester's name approves
$r = $t->api('POST', "v1/approvals/$id", as('alice2'));
is($r->{status}, 200, 'another subject ("alice2") approves: 200');
$t->api('DELETE', 'v1/flags/app', as('alice'));

# the same approver twice, the second time as a variant
$id = request('pay');
is($t->api('POST', "v1/approvals/$id", as('bob'))->{status}, 200,
   'pay: bob approves (1 of 2)');
for my $sub ('BOB', ' bob', "b\x{200b}ob") {
    (my $shown = $sub) =~ s/([^a-zA-Z ])/sprintf '\\x{%x}', ord $1/ge;
    $r = $t->api('POST', "v1/approvals/$id", as($sub));
    is($r->{status}, 403, "bob again as \"$shown\": 403");
    is($r->{json}{error}{code}, 'AlreadyApproved', "... AlreadyApproved");
}
is($t->api('GET', 'v1/flags/pay', as('dave'))->{json}, undef, 'pay: still nothing acts');
$t->api('DELETE', "v1/approvals/$id", as('alice'));

# ---------------------------------------------------------------- ids

for my $bad ('..%2F..%2Fflags%2Fapp', '0123456789ABCDEF', 'zzzzzzzzzzzzzzzz',
             '0' x 16, '1' x 4000, '0123456789abcde', '0123456789abcdef0',
             '%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20%20')
{
    $r = $t->api('POST', "v1/approvals/$bad", as('bob'));
    is($r->{status}, 404, 'malformed id ' . substr($bad, 0, 20) . ': 404');
    ok($r->{is_json}, '... as JSON');
}

$id = request('app');
$r = $t->api('DELETE', "v1/approvals/$id",
             token_args => { sub => 'mallory', scope => 'ha:read ha:write',
                             kid => 'ops' });
is($r->{status}, 403, 'DELETE by a third party without ha:approve: 403');
is(scalar(grep { $_->{id} eq $id } @{ pending() }), 1, '... still pending');

# ---------------------------------------------------------------- reload

# the policy now asks for two: one approval no longer suffices
(my $p2 = $policy) =~ s/app:\n    approvers: 1/app:\n    approvers: 2/;
$t->write_file('policy.yaml', $p2);
$t->reload;

$r = $t->api('POST', "v1/approvals/$id", as('bob'));
is($r->{status}, 200, 'approvers raised by reload: an approval is taken');
ok($r->{json}{approval}, '... and the request is still pending')
    or diag explain $r->{json};
is($r->{json}{approval} && $r->{json}{approval}{needed}, 2,
   '... it needs what the policy asks now');
is($t->api('GET', 'v1/flags/app', as('dave'))->{json}, undef,
   'approvers raised by reload: one approval applies nothing');
$r = $t->api('POST', "v1/approvals/$id", as('carol'));
is($r->{status}, 200, 'the second approval applies it');
is_deeply($r->{json}{approved_by}, ['bob', 'carol'], '... approved_by both');
$t->api('DELETE', 'v1/flags/app', as('alice'));

# an upstream removed at reload: its request cannot be applied
$id = request('gone');
(my $p3 = $policy) =~ s/  gone:\n    approvers: 1\n//;
$t->write_file('policy.yaml', $p3);
$t->conf($c2);
$t->reload;
$r = $t->api('POST', "v1/approvals/$id", as('bob'));
is($r->{status}, 409, 'the request of an upstream removed at reload: 409')
    or diag explain $r->{json};
is($r->{json}{error}{code}, 'UnknownUpstream', '... UnknownUpstream');
ok((grep { $_->{action} eq 'reject' && $_->{upstream} eq 'gone'
           && ($_->{reason} // '') =~ /\Q$id\E/ } audit()),
   '... dropped and audited as reject');
is(scalar(grep { $_->{id} eq $id } @{ pending() }), 0, '... not listed');
$t->conf($c1);
$t->write_file('policy.yaml', $policy);
$t->reload;

# ---------------------------------------------------------------- state file

# while nginx is stopped, someone edits the pending approvals: one gets a
# lower "needed" and an expiry years away, the other the requester (as a
# variant) among approved_by
my $forge = request('pay');
my $forge2 = request('pay');
$t->stop;

my $sf = "$dir/ha-optout.state";
my $st = $t->read_file('state/ha-optout.state');
like($st, qr/\Q$forge\E/, 'the state file holds the request');
my $n = ($st =~ s/(\Q$forge\E.*?needed:\s*)"?2"?/${1}1/s);
ok($n, 'forged: needed 1');
$n = ($st =~ s/(\Q$forge\E.*?expires_at:\s*)"?\d{4}-([^"\n]*)"?/${1}"2099-$2"/s);
ok($n, 'forged: expires_at 2099');
$n = ($st =~ s/(\Q$forge2\E.*?flag:\s*\n(\s+))/$1approved_by: [" Alice"]\n$2/s);
ok($n, 'forged: approved_by the requester');
diag $st if $ENV{SHOW_STATE};
open my $fh, '>', $sf or die "$sf: $!";
print $fh $st;
close $fh;

$t->run;

my %back = map { $_->{id} => $_ }
           @{ $t->wait_for(sub { @{ pending() } >= 2 && pending() }, 5)
              || [] };
ok($back{$forge} && $back{$forge2}, 'the edited requests are back');
is($back{$forge} && $back{$forge}{needed}, 2,
   'restored: needed is what the policy asks, not 1');
ok($back{$forge} && $back{$forge}{expires_at} lt '2099',
   'restored: expiry within approval_ttl of now, not 2099')
    or diag explain $back{$forge};
is_deeply($back{$forge2} && $back{$forge2}{approved_by}, [],
          'restored: the requester is not among approved_by');
for my $x ($forge, $forge2) {
    $r = $t->api('POST', "v1/approvals/$x", as('carol'));
    is($r->{status}, 200, 'one real approval');
    ok($r->{json}{approval}, '... leaves it pending') or diag explain $r->{json};
}
is($t->api('GET', 'v1/flags/pay', as('dave'))->{json}, undef,
   'the edited state file applied nothing');
like($t->error_log, qr/ha_optout: state file: approval \Q$forge2\E .*dropped/,
     'the dropped approver is logged');
$t->api('DELETE', "v1/approvals/$_", as('alice')) for $forge, $forge2;

# ---------------------------------------------------------------- CLI text

my $evil = Encode::encode_utf8("INC-8 \e[31mred\e[0m \x{202e}txet \r\nX-Evil: 1");
$r = $t->api('PUT', 'v1/flags/app',
             json => { failover => JSON::PP::false(), ttl => '30m',
                       reason => $evil }, as('alice'));
is($r->{status}, 202, 'a reason with control bytes and bidi is requested');
is($r->{json}{approval}{reason}, $evil, '... kept as UTF-8 in JSON');
ok(!exists $r->{headers}{'x-evil'}, '... and reaches no header');

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
my $key = "$dir/../ha-optout.key";

sub cli {
    my (@args) = @_;
    my ($out, $err) = ("$dir/../cli.out", "$dir/../cli.err");
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{"HA_OPTOUT_$_"} for qw(URL TOKEN KEY ALG KID AUD);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $CLI, @args or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return { rc => $? >> 8, out => $t->read_file('cli.out'),
             err => $t->read_file('cli.err') };
}

my $c = cli('approvals', 'list', '--url', $url, '--key', $key, '--kid', 'ops',
            '--sub', 'dave', '--scope', $ALL);
is($c->{rc}, 0, 'cli approvals list: exit 0');
unlike($c->{out}, qr/[\x00-\x08\x0b-\x1f\x7f]|\x{202e}|\xe2\x80\xae/,
       'cli list: no raw control byte or bidi override') or diag $c->{out};
is(scalar(() = $c->{out} =~ /\n/g), 1, 'cli list: one line per request');
$t->api('DELETE', "v1/approvals/$r->{json}{approval}{id}", as('bob'));

# ---------------------------------------------------------------- audit

$id = request('db');
ok($t->wait_for(sub {
    grep { $_->{action} eq 'approval_expired'
           && ($_->{reason} // '') =~ /\Q$id\E/ } audit() }, 10),
   'db: approval_expired audited');

my %seen = map { $_->{action} => 1 } audit();
ok($seen{$_}, "audit has a $_ line")
    for qw(request approve reject approval_expired set);

$t->stop;
$c = cli('audit', 'verify', "$dir/audit.jsonl");
is($c->{rc}, 0, 'ha-optoutctl audit verify: the chain holds')
    or diag $c->{out}, $c->{err};

unlike($t->error_log, qr/exited on signal/, 'no worker crashed');

done_testing;
