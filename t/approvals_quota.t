#!/usr/bin/perl

# One writer cannot fill the table of pending approvals (32 per zone) and
# so lock everyone else's requests out: a subject holds at most 8 pending
# requests (compared as the two-person rule compares subjects, so "ALICE"
# is alice); the 9th is 429 TooManyPending, saying how to free one, and
# changes nothing.  Other subjects still request; alice's withdrawal
# frees her a place.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;
use HaOptout::Approvals;
use JSON::PP ();

my $t = HaOptout::Test->new;

HaOptout::Approvals::setup($t, <<'EOF');
upstreams:
  "*":
    approvers: 1
EOF

my @ups = map { "u$_" } 1 .. 10;
$t->conf(HaOptout::Approvals::conf(
    upstreams => [ map { $_ => ['b1', 'b2'] } @ups ]))->run;

sub request {
    my ($sub, $u) = @_;
    return $t->api(PUT => "v1/flags/$u",
        token_args => { sub => $sub },
        json => { failover => JSON::PP::false(), ttl => '10m',
                  reason => "INC-9 $sub $u" });
}

my @ids;
for my $i (1 .. 8) {
    my $r = request($i % 2 ? 'alice' : 'ALICE', "u$i");
    is($r->{status}, 202, "alice's request $i is pending (202)")
        or diag $r->{body};
    push @ids, eval { JSON::PP->new->decode($r->{body})->{approval}{id} };
}

my $r = request(' alice', 'u9');
is($r->{status}, 429, "alice's 9th request: 429") or diag $r->{body};
my $e = eval { JSON::PP->new->decode($r->{body})->{error} } // {};
is($e->{code}, 'TooManyPending', '... TooManyPending');
like($e->{message}, qr/8 requests waiting.*DELETE v1\/approvals\/\{id\}/,
     '... saying the limit and how to free one');

$r = $t->api(GET => 'v1/approvals');
my $list = eval { JSON::PP->new->decode($r->{body}) } // {};
my @pending = @{ ref $list eq 'HASH' ? $list->{approvals} // [] : $list };
is(scalar @pending, 8, 'the refused request left nothing pending');

$r = request('bob', 'u9');
is($r->{status}, 202, 'bob still requests (202)') or diag $r->{body};

$r = $t->api(DELETE => "v1/approvals/$ids[0]",
             token_args => { sub => 'alice' });
is($r->{status}, 200, 'alice withdraws one') or diag $r->{body};

$r = request('alice', 'u10');
is($r->{status}, 202, 'and may request again (202)') or diag $r->{body};

$r = request('alice', 'u1');
is($r->{status}, 429, 'the 9th again: 429');

done_testing;
