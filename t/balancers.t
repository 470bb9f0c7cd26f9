#!/usr/bin/perl

# pin and failover=false work whatever balancer the upstream uses, with or
# without a shared zone, with or without upstream keepalive.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('s1');
$t->backend('s2');
$t->secret_file;

# every balancer x (zone | no zone) x (keepalive | none): one upstream each,
# reached at /u/NAME/...

my %balancer = (
    rr         => '',
    hash       => 'hash $request_uri;',
    consistent => 'hash $request_uri consistent;',
    ip_hash    => 'ip_hash;',
    least_conn => 'least_conn;',
    random     => 'random;',
);

my @upstreams;
my $upstreams = '';

for my $b (sort keys %balancer) {
    for my $zone (0, 1) {
        for my $ka (0, 1) {
            my $name = $b . ($zone ? '_zone' : '') . ($ka ? '_ka' : '');
            push @upstreams, $name;
            $upstreams .= "    upstream $name {\n"
                . ($zone ? "        zone $name 64k;\n" : '')
                . ($balancer{$b} ? "        $balancer{$b}\n" : '')
                . "        server 127.0.0.1:%%PORT_s1%% max_fails=0;\n"
                . "        server 127.0.0.1:%%PORT_s2%% max_fails=0;\n"
                . "        ha_optout;\n"
                . ($ka ? "        keepalive 4;\n" : '')
                . "    }\n";
        }
    }
}

$t->conf(<<"EOF");
http {
    ha_optout_zone ha_optout 1m;

$upstreams
    server {
        listen 127.0.0.1:%%PORT_http%%;

        location ~ ^/u/(?<up>\\w+)/ {
            proxy_pass http://\$up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_503;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

$t->run;

my %addr = map { $_ => '127.0.0.1:' . $t->port($_) } qw(s1 s2);

sub put {
    my ($up, %flag) = @_;
    my $r = $t->api(PUT => "v1/flags/$up",
                    json => { %flag, ttl => '5m', reason => "test $up" });
    return $r->{status};
}

###############################################################################

for my $up (@upstreams) {
    my $uri = sub { "/u/$up/$_[0]" };

    # pin: try both servers, so at least one pin goes against the
    # balancer's own choice (hash and ip_hash always choose one)

    for my $pin (qw(s1 s2)) {
        my $other = $pin eq 's1' ? 's2' : 's1';

        is(put($up, pin => $addr{$pin}), 200, "$up: pin $pin accepted");
        $t->reset_hits;

        my @r = $t->spray(6, $uri);
        is(scalar(grep { $_ eq "200 $pin" } @r), 6,
            "$up: pin holds every request on $pin") or diag "@r";
        is($t->hits($other), 0, "$up: $other sees nothing while $pin is pinned");
    }

    is($t->api(DELETE => "v1/flags/$up")->{status}, 200, "$up: pin cleared");

    # failover: both servers answer 503, so HA on tries both per request,
    # HA off only one

    $t->backend_set_status($_, 503) for qw(s1 s2);
    $t->reset_hits;

    my @r = $t->spray(4, $uri);
    is($t->hits('s1') + $t->hits('s2'), 8,
        "$up: with HA on, each failed request is retried on the other server")
        or diag "@r";

    is(put($up, failover => JSON::PP::false), 200,
        "$up: failover=false accepted");
    $t->reset_hits;

    @r = $t->spray(4, $uri);
    is(scalar(grep { /^503 s[12]$/ } @r), 4,
        "$up: with failover off, the 503 reaches the client") or diag "@r";
    is($t->hits('s1') + $t->hits('s2'), 4,
        "$up: with failover off, each request tries one server only");

    is($t->api(DELETE => "v1/flags/$up")->{status}, 200, "$up: HA restored");
    $t->backend_set_status($_, 200) for qw(s1 s2);
}

###############################################################################

done_testing;
