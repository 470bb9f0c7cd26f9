#!/usr/bin/perl

# ttl: every flag reverts by itself, a dead man's switch.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
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

$t->run;

my $b1 = '127.0.0.1:' . $t->port('b1');

sub epoch {
    my ($s) = @_;
    return undef unless ($s // '') =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$/;
    return timegm($6, $5, $4, $3, $2 - 1, $1);
}

###############################################################################

my $res = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, ttl => '2s', reason => 'two seconds only' });

is($res->{status}, 200, 'a 2 s flag is accepted');

my @r = $t->spray(4, sub { "/live/$_[0]" });
is(scalar(grep { $_ eq '200 b1' } @r), 4, 'the flag acts while it lives')
    or diag "@r";

my $set = epoch($res->{json}{set_at});
my $exp = epoch($res->{json}{expires_at});
ok(defined $set && defined $exp, 'the flag carries set_at and expires_at');
is(($exp // 0) - ($set // 0), 2, 'expires_at is set_at plus the ttl');

$exp //= int(time) + 3;

# the acting flag is gone within about 1.5 s after expiry

sleep($exp - time + 0.05) if $exp > time;

my $gone = $t->wait_for(sub {
    my $g = $t->api(GET => 'v1/flags/app');
    $g->{status} == 200 && $g->{is_json} && !defined $g->{json};
}, $exp + 1.5 - time);
ok($gone, 'GET shows no flag within 1.5 s of expiry');

$t->reset_hits;

@r = $t->spray(6, sub { "/expired/$_[0]" });
ok($t->hits('b2') > 0, 'an expired pin no longer holds traffic') or diag "@r";

my $cleared = $t->wait_for(sub {
    my $s = $t->status;
    my $u = $s->{upstreams}{app} // return 0;
    exists $u->{flag} && !defined $u->{flag}
        && exists $u->{layers} && !defined $u->{layers}{api};
}, $exp + 1.5 - time);
ok($cleared, 'status shows the expired flag gone within 1.5 s of expiry');

my $all = $t->api(GET => 'v1/flags')->{json};
ok(ref $all eq 'HASH' && exists $all->{app} && !defined $all->{app},
    'GET v1/flags lists app with no flag');

# the timer clears and reports it within a second

my $expiry_log = qr/\[warn\].*ha_optout:.*(?:expir.*"app"|"app".*expir)/i;
ok($t->wait_for(sub { $t->error_log =~ $expiry_log }, $exp + 1.5 - time),
    'expiry is written to error_log at warn within 1.5 s')
    or diag join "\n", grep { /ha_optout:/ } split /\n/, $t->error_log;

###############################################################################

done_testing;
