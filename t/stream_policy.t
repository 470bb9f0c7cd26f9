#!/usr/bin/perl

# policy for stream upstreams: a window on "stream:db" opens and closes on
# time, and "protected" refuses API opt-outs outside windows.

use strict;
use warnings;

use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(sleep time);
use IO::Socket::INET;
use HaOptout::Test;

my $t = HaOptout::Test->new;
$t->secret_file;

sub iso { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) }

my $start = int(time) + 3;
my $end = $start + 4;
my $db2 = '127.0.0.1:' . $t->port('db2');

$t->write_file('policy.yaml', <<"EOF");
upstreams:
  "stream:db":
    protected: true
windows:
  - upstream: "stream:db"
    start: ${\ iso($start)}
    end: ${\ iso($end)}
    pin: "$db2"
    reason: "replica rebuild"
EOF

$t->conf(<<'EOF');
stream {
    upstream db {
        server 127.0.0.1:%%PORT_db1%%;
        server 127.0.0.1:%%PORT_db2%%;
        ha_optout;
    }

    server { listen 127.0.0.1:%%PORT_tcp%%; proxy_pass db; }
    server { listen 127.0.0.1:%%PORT_db1%%; return "db-1\n"; }
    server { listen 127.0.0.1:%%PORT_db2%%; return "db-2\n"; }
}

http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

$t->run;

my $tcp = $t->port('tcp');

sub served {
    my %seen;
    for (1 .. 6) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$tcp",
                                      Timeout => 2) or next;
        my $line = <$s> // '-';
        chomp $line;
        $seen{$line}++;
    }
    return join ',', sort keys %seen;
}

is(served(), 'db-1,db-2', 'before the window, connections are balanced');

my $r = $t->api(PUT => 'v1/flags/stream:db', json => {
    failover => JSON::PP::false, ttl => '5m', reason => 'not now' });
is($r->{status}, 403, 'a protected stream upstream refuses opt-outs');
is($r->{json}{error}{code}, 'ForbiddenByPolicy', 'as ForbiddenByPolicy');

sleep 0.2 while time < $start + 1;

is($t->api(GET => 'v1/flags/stream:db')->{json}{source}, 'window',
   'the window on stream:db opens on time');
is(served(), 'db-2', 'while it is open, every connection is pinned to db-2');

sleep 0.2 while time < $end + 1.2;

is($t->api(GET => 'v1/flags/stream:db')->{body}, "null\n",
   'the window closes on time');
is(served(), 'db-1,db-2', 'after the window, connections are balanced again');

my $audit = $t->read_file('audit.jsonl');
like($audit, qr/"action": "window_start", "upstream": "stream:db"/,
     'window_start is audited');
like($audit, qr/"action": "window_end", "upstream": "stream:db"/,
     'window_end is audited');

done_testing();
