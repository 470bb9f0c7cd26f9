#!/usr/bin/perl

# servers that change across reloads: per-server counters follow the
# configuration (a server that left frees its slot), so an upstream whose
# addresses change again and again keeps its per-server metrics.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 1);

$t->backend('b1');
$t->secret_file;

my $CONF = <<'EOF';
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_SECOND%%;
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

# 40 generations of the second server: more than the 32 slots per upstream

my $second;

for my $gen (1 .. 40) {
    $second = $t->dead_port("gone$gen");
    (my $conf = $CONF) =~ s/%%PORT_SECOND%%/$second/;
    $t->conf($conf);

    if ($gen == 1) {
        $t->run;
    } else {
        $t->reload;
    }
}

my @servers = map { $_->{address} }
              @{ $t->status->{upstreams}{app}{servers} };
is_deeply([ sort @servers ],
          [ sort('127.0.0.1:' . $t->port('b1'), "127.0.0.1:$second") ],
          'status lists the servers of the current configuration');

# the newest server still gets its own counter

my $r = $t->api(PUT => 'v1/flags/app', json => {
    pin => "127.0.0.1:$second", ttl => '5m', reason => 'newest server' });
is($r->{status}, 200, 'the newest server can be pinned');

$t->spray(3, '/');

my $prom = $t->http(GET => '/ha-status?format=prometheus')->{body};
like($prom,
     qr/^ha_optout_pinned_requests_total\{upstream="app",server="127\.0\.0\.1:$second"\} 3$/m,
     'after 40 reloads the newest server has its own pinned counter');
unlike($prom, qr/server="127\.0\.0\.1:\Q@{[ $t->port('gone1') ]}\E"/,
       'a server that left the configuration is no longer listed');
unlike($prom, qr/server=""/, 'no empty server label');

done_testing();
