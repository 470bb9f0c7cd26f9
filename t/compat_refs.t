#!/usr/bin/perl

# Peer references (nginx 1.27.3+, issue 12): round robin's get takes a
# reference on the peer it returns and its free drops one.  A server picked
# by hand (a pin, a sticky client, a reconnect) must take it too: before the
# fix 10 pinned requests left the peer at refs = 2^64 - 10, so a "resolve"
# server's removed peer was never freed (or freed while in use).
#
# The module's free logs the count it finds, before round robin drops it,
# at debug level: "ha_optout: free peer ADDR refs:N".  One request at a
# time, N must be 1 every time: the request's own reference, and nothing
# left over from the ones before (so it went back to 0 after each).

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

plan skip_all => 'peer references exist since nginx 1.27.3 (this nginx: '
                 . HaOptout::Test->nginx_version . ')'
    unless HaOptout::Test->nginx_at_least('1.27.3');

my $nginx = $ENV{HA_OPTOUT_NGINX} || '/usr/sbin/nginx';
plan skip_all => "$nginx has no debug log (--with-debug)"
    unless `$nginx -V 2>&1` =~ /--with-debug\b/;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

$t->conf(<<'EOF')->run;
http {
    ha_optout_zone ha_optout 1m;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream shared {
        zone shared 64k;
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            error_log %%TESTDIR%%/debug-http.log debug;
            proxy_pass http://app;
        }

        location /shared/ {
            error_log %%TESTDIR%%/debug-shared.log debug;
            proxy_pass http://shared;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}

stream {
    upstream tcp {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_tcp%%;
        error_log %%TESTDIR%%/debug-stream.log debug;
        proxy_pass tcp;
    }
}
EOF

my $b2 = '127.0.0.1:' . $t->port('b2');
my $n = 10;

sub refs {
    my ($log) = @_;
    return map { /ha_optout: free peer (\S+) refs:(\d+)/ ? "$1 $2" : () }
           split /\n/, $t->read_file($log);
}

for my $case (['app', '/', 'debug-http.log', 'no zone'],
              ['shared', '/shared/', 'debug-shared.log', 'a shared zone'])
{
    my ($up, $path, $log, $what) = @$case;

    my $r = $t->api(PUT => "v1/flags/$up", json => {
        pin => $b2, ttl => '5m', reason => 'refs' });
    is($r->{status}, 200, "$what: pinned") or diag $r->{body};

    my @r = $t->spray($n, $path);
    is(scalar(grep { $_ eq '200 b2' } @r), $n, "$what: $n pinned requests")
        or diag "@r";

    my @refs;
    $t->wait_for(sub { (@refs = refs($log)) >= $n }, 5);
    is(scalar @refs, $n, "$what: each request freed its peer once");
    is_deeply(\@refs, [ ("$b2 1") x $n ],
              "$what: the pinned peer holds exactly the request's own "
              . 'reference when it is freed, every time (back to 0 after)')
        or diag explain \@refs;

    # sticky: the first request is balanced (round robin's reference), the
    # next ones go back by hand (ours)

    $t->write_file($log, '');
    $r = $t->api(PUT => "v1/flags/$up", json => {
        sticky => JSON::PP::true, ttl => '5m', reason => 'refs' });
    is($r->{status}, 200, "$what: sticky") or diag $r->{body};

    $t->spray(4, $path);
    $t->wait_for(sub { (@refs = refs($log)) >= 4 }, 5);
    is(scalar(grep { / 1$/ } @refs), 4,
       "$what: sticky, balanced then by hand: 1 reference each time")
        or diag explain \@refs;

    $t->api(DELETE => "v1/flags/$up");
}

# the stream twin

my $r = $t->api(PUT => 'v1/flags/stream:tcp', json => {
    pin => $b2, ttl => '5m', reason => 'refs' });
is($r->{status}, 200, 'stream: pinned') or diag $r->{body};

my $got = 0;
for (1 .. $n) {
    my ($out) = $t->raw("GET / HTTP/1.0\r\n\r\n", port => 'tcp');
    $got++ if $out =~ /X-Backend: b2/;
}
is($got, $n, "stream: $n pinned sessions");

my @refs;
$t->wait_for(sub { (@refs = refs('debug-stream.log')) >= $n }, 5);
is_deeply(\@refs, [ ("$b2 1") x $n ],
          'stream: the pinned peer holds exactly the session\'s reference '
          . 'when it is freed, every time') or diag explain \@refs;

unlike($t->error_log, qr/\[(alert|crit)\]/, 'no alert in error.log');

done_testing;
