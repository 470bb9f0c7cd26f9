#!/usr/bin/perl

# pin_selector: only requests whose selector variable matches are held on
# the pinned server; everybody else is balanced as usual.

use strict;
use warnings;

use Test::More;
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
        ha_optout selector=$http_x_forensic_case;
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
    }
}
EOF

$t->run;

my $b1 = '127.0.0.1:' . $t->port('b1');

sub count { my ($re, @r) = @_; scalar grep { $_ =~ $re } @r }

###############################################################################

my $res = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, pin_selector => 'INC-4211', ttl => '5m',
    reason => 'INC-4211 forensic case' });

is($res->{status}, 200, 'selective pin accepted');
is($res->{json}{pin}, $b1, 'stored flag names the pinned server');
is($res->{json}{pin_selector}, 'INC-4211', 'stored flag names the selector');
is($res->{json}{failover}, JSON::PP::true, 'failover stays on');

$t->reset_hits;

my @r = $t->spray(10, sub { "/case/$_[0]" },
                  headers => { 'X-Forensic-Case' => 'INC-4211' });
is(count(qr/^200 b1$/, @r), 10, 'requests of the forensic case go to the pin')
    or diag "@r";
is($t->hits('b2'), 0, 'no request of the case reaches another server');

$t->reset_hits;

@r = $t->spray(10, sub { "/other/$_[0]" });
is(count(qr/^200 /, @r), 10, 'other requests are served');
ok($t->hits('b1') > 0 && $t->hits('b2') > 0,
    'requests without the case header are balanced as usual') or diag "@r";

$t->reset_hits;

@r = $t->spray(10, sub { "/another/$_[0]" },
               headers => { 'X-Forensic-Case' => 'INC-9999' });
ok($t->hits('b1') > 0 && $t->hits('b2') > 0,
    'requests of another case are balanced as usual') or diag "@r";

is(scalar(grep { /x-forensic-case=INC-4211/ } $t->hit_log('b2')), 0,
    'b2 never saw the forensic case');

# a selector needs a pin

$res = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, pin_selector => 'INC-1', ttl => '5m',
    reason => 'selector without pin' });
is($res->{status}, 400, 'pin_selector without pin is refused');
is($t->api(GET => 'v1/flags/app')->{json}{pin_selector}, 'INC-4211',
    'refused change leaves the selective pin in place');

# clearing it

is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'selective pin cleared');

$t->reset_hits;

@r = $t->spray(10, sub { "/after/$_[0]" },
               headers => { 'X-Forensic-Case' => 'INC-4211' });
ok($t->hits('b2') > 0, 'after clear the case is balanced again') or diag "@r";

###############################################################################

done_testing;
