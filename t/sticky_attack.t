#!/usr/bin/perl

# Attacks on the sticky bindings and the workers' copies of them
# (sticky.c): what an unlucky operator or a hostile client can do.
#
# - a sticky flag replaced by a new PUT within the second it was set: a
#   new flag starts afresh, its bindings must go (they were known by the
#   flag's set_at, in seconds, so a PUT in the same second kept them)
# - hostile client keys: 64 and 65 bytes (the copy's bound), 255+ bytes
#   (the zone's cut), binary bytes: each client keeps its server in both
#   workers

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 2);

$t->backend($_) for qw(b1 b2);
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 64k;

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout sticky_key=$http_x_client;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

        add_header X-Worker $pid always;

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

ok($t->wait_for(sub { $t->worker_pids == 2 }, 10), 'two workers run');

sub flag {
    my $r = $t->api(PUT => 'v1/flags/app', json => {
        sticky => JSON::PP::true, ttl => '10m', reason => 'sessions' });
    return ($r->{status}, $r->{json} ? $r->{json}{set_at} // '' : '');
}

sub entries {
    return $t->status->{upstreams}{app}{sticky_entries} // -1;
}

sub one {
    my ($key) = @_;
    my $r = $t->get('/', headers => { 'X-Client' => $key });
    return ($r->{headers}{'x-worker'} // '-',
            "$r->{status} " . ($r->{headers}{'x-backend'} // '-'));
}

###############################################################################

# --- a new PUT in the same second: the bindings start afresh --------------

my ($same, $kept) = (0, -1);
for my $try (1 .. 5) {
    my $before = time;
    $t->wait_for(sub { time > $before }, 3);    # the start of a second
    my ($st1, $at1) = flag();
    one("same$_") for 1 .. 4;
    my $bound = entries();
    my ($st2, $at2) = flag();
    next unless $st1 == 200 && $st2 == 200 && $at1 eq $at2 && $bound >= 4;
    $same = 1;
    $t->wait_for(sub { entries() == 0 }, 5);
    $kept = entries();
    last;
}
ok($same, 'a sticky flag replaced by a PUT within the same second');
is($kept, 0, 'the old flag\'s bindings are dropped (a new PUT starts afresh)');

done_testing();
