#!/usr/bin/perl

# The scope a request needs is read from the path the router reads, not
# from text anywhere in the URI.  A token that holds only ha:approve may
# approve and reject (v1/approvals[/{id}]) and nothing else: a flag on an
# upstream whose name holds "v1/approvals" (nginx lets an upstream be
# named so) still needs ha:write, and "v1/approval" without the "s" is no
# approvals path at all.  Likewise "any valid token may ask who it is"
# holds for GET v1/whoami only.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;
use JSON::PP ();

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->secret_file;

$t->conf(<<'EOF')->run;
http {
    ha_optout_zone ha_optout 1m;

    upstream edge/v1/approvals {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    upstream edge/v1/whoami {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    upstream v1/approval {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

my %w = (token_args => { scope => 'ha:read ha:write' });
my %a = (token_args => { scope => 'ha:approve', sub => 'bob' });

for my $u ('edge/v1/approvals', 'v1/approval') {
    my $r = $t->api(PUT => "v1/flags/$u", %w,
        json => { failover => JSON::PP::false(), ttl => '5m',
                  reason => 'INC-1 scope' });
    is($r->{status}, 200, "a flag on upstream $u (ha:write)")
        or diag $r->{body};

    for my $m (qw(PUT PATCH)) {
        $r = $t->api($m => "v1/flags/$u", %a,
            json => { failover => JSON::PP::false(), ttl => '9m',
                      reason => 'INC-1 approver widens' });
        is($r->{status}, 403, "$m v1/flags/$u with only ha:approve: 403");
    }

    $r = $t->api(DELETE => "v1/flags/$u", %a);
    is($r->{status}, 403, "DELETE v1/flags/$u with only ha:approve: 403")
        or diag $r->{body};
    like($r->{body}, qr/ha:write/, '(the refusal names ha:write)');

    $r = $t->api(GET => "v1/flags/$u", %w);
    like($r->{body}, qr/INC-1 scope/, "the flag on $u still acts");

    $r = $t->api(DELETE => "v1/flags/$u", %w);
    is($r->{status}, 200, "DELETE v1/flags/$u with ha:write: 200");
}

# "any valid token may ask who it is" is GET v1/whoami, not a URI that
# ends so: a token with no write scope cannot set or clear a flag on an
# upstream named edge/v1/whoami

my %r = (token_args => { scope => 'ha:read', sub => 'carol' });
my $r = $t->api(PUT => 'v1/flags/edge/v1/whoami', %r,
    json => { failover => JSON::PP::false(), ttl => '5m',
              reason => 'INC-2 read-only token' });
is($r->{status}, 403, 'PUT v1/flags/edge/v1/whoami with only ha:read: 403')
    or diag $r->{body};
$r = $t->api(GET => 'v1/flags/edge/v1/whoami', %r);
unlike($r->{body}, qr/INC-2/, '(and no flag acts on it)');

$r = $t->api(GET => 'v1/whoami', token_args => { scope => '', sub => 'dan' });
is($r->{status}, 200, 'GET v1/whoami with a token of no scope: 200')
    or diag $r->{body};
like($r->{body}, qr/"dan"/, '(it names the subject)');

# the approvals paths themselves: ha:approve is what they need

$r = $t->api(GET => 'v1/approvals', token_args => { scope => 'ha:read' });
is($r->{status}, 200, 'GET v1/approvals with ha:read');

$r = $t->api(POST => 'v1/approvals/0123456789abcdef', %a);
is($r->{status}, 404, 'POST v1/approvals/{unknown id} with ha:approve: 404 '
    . '(scope passed, no such request)') or diag $r->{body};

$r = $t->api(POST => 'v1/approvals/0123456789abcdef', %w);
is($r->{status}, 403, 'POST v1/approvals/{id} with only ha:write: 403');

done_testing;
