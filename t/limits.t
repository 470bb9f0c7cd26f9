#!/usr/bin/perl

# Sizes (docs/reliability.md, "Limits"): how many upstreams a zone holds,
# how many single-use jtis the replay cache keeps before a write answers
# 507 ZoneFull, and that the cache makes room again once tokens expire.
# The numbers are printed as diag() lines for the document.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

# ---------------------------------------------------------------- upstreams

# nginx -t creates the shared zones too, so it finds the largest count
sub conf_upstreams {
    my ($zone, $n) = @_;
    my $ups = join '', map {
        "    upstream u$_ { server 127.0.0.1:1; ha_optout; }\n"
    } 1 .. $n;

    return <<"EOF";
http {
    ha_optout_zone ha_optout $zone;
$ups
    server {
        listen 127.0.0.1:%%PORT_http%%;
        location / { proxy_pass http://u1; }
    }
}
EOF
}

sub max_upstreams {
    my ($t, $zone, $hi) = @_;
    my ($lo, $best) = (1, 0);

    while ($lo <= $hi) {
        my $mid = int(($lo + $hi) / 2);
        $t->conf(conf_upstreams($zone, $mid));
        my ($rc, $out) = $t->nginx_t;
        if ($rc == 0) {
            ($best, $lo) = ($mid, $mid + 1);
        } else {
            like($out, qr/too small|no memory|ha_optout/,
                 "a zone too small for $mid upstreams is refused by nginx -t")
                if $mid == $hi;
            $hi = $mid - 1;
        }
    }

    return $best;
}

{
    my $t = HaOptout::Test->new;

    my $n64 = max_upstreams($t, '64k', 64);
    ok($n64 >= 4, "a 64k zone holds a handful of upstreams ($n64)");
    diag("limits: 64k zone: $n64 upstreams with ha_optout");

    my $n1m = max_upstreams($t, '1m', 1024);
    ok($n1m >= 100, "a 1m zone holds over a hundred upstreams ($n1m)");
    diag("limits: 1m zone: $n1m upstreams with ha_optout");
}

# ---------------------------------------------------------------- replay

# single-use jtis: fresh ones until the cache is full
sub fill_replay {
    my ($zone, %o) = @_;

    my $t = HaOptout::Test->new(workers => 1);
    $t->backend('b1');
    $t->secret_file;

    $t->conf(<<"EOF");
http {
    ha_optout_zone ha_optout $zone;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF
    $t->run;

    # each PUT is a write that burns a jti (a DELETE would not do: it is
    # never refused for want of room, restoring HA must always work)
    my ($n, $r) = (0);
    my $seq = 0;
    while ($n < 100000) {
        my $jti = sprintf '%032x', ++$seq;
        $r = $t->api(PUT => 'v1/flags/app',
                     json => { failover => JSON::PP::false, ttl => '10m',
                               reason => 'fill the replay cache' },
                     token_args => { jti => $jti, %{ $o{token} // {} } });
        last unless $r->{status} == 200;
        $n++;
    }

    return ($t, $n, $r);
}

{
    my ($t, $n, $r) = fill_replay('64k');

    is($r->{status}, 507, '64k zone: the replay cache fills up with 507');
    is($r->{json}{error}{code}, 'ZoneFull', '64k zone: error code ZoneFull');
    ok($n > 100, "64k zone: more than 100 writes before it is full ($n)");
    diag("limits: 64k zone: $n single-use jtis (32 bytes) before 507");

    is($t->api(GET => 'v1/flags/app')->{status}, 200,
       '64k zone: reads still work while the replay cache is full');

    my $d = $t->api(DELETE => 'v1/flags/app',
                    token_args => { jti => 'restore-while-full' });
    is($d->{status}, 200, '64k zone: DELETE restores HA even when full');
    is($t->api(GET => 'v1/flags/app')->{body}, "null\n",
       '64k zone: and the flag is gone');

    $t->stop;
}

{
    my ($t, $n, $r) = fill_replay('1m');

    is($r->{status}, 507, '1m zone: the replay cache fills up with 507');
    ok($n > 2000, "1m zone: more than 2000 writes before it is full ($n)");
    diag("limits: 1m zone: $n single-use jtis (32 bytes) before 507");
    diag(sprintf 'limits: 1m zone: %.0f jtis per MiB', $n);

    $t->stop;
}

# entries live until exp + 60 s leeway: tokens that expired 50 s ago are
# still accepted, and their entries go 10 s later
{
    my $exp = time - 50;
    my ($t, $n, $r) = fill_replay('64k', token => { iat => $exp - 60,
                                                    exp => $exp });
    is($r->{status}, 507, 'short-lived tokens fill the 64k zone too');

    sleep 1 while time < $exp + 61;

    $r = $t->api(PUT => 'v1/flags/app',
                 json => { failover => JSON::PP::false, ttl => '10m',
                           reason => 'after expiry' },
                 token_args => { jti => 'after-expiry' });
    is($r->{status}, 200,
       'once the tokens have expired the replay cache has room again');

    $t->stop;
}

# ---------------------------------------------------------------- sticky

# sticky bindings share the zone with the replay cache: fill it with
# distinct client keys, count them, then try to restore HA
{
    my $t = HaOptout::Test->new(workers => 1);
    $t->backend('b1');
    $t->backend('b2');
    $t->secret_file;
    $t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 64k;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout sticky_key=$http_x_key;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location / { proxy_pass http://app; }
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
        location = /ha-status { ha_optout_status; }
    }
}
EOF
    $t->run;

    my $r = $t->api(PUT => 'v1/flags/app', json => {
        sticky => JSON::PP::true, ttl => '5m', reason => 'limits' });
    is($r->{status}, 200, 'sticky flag set');

    my $entries = sub {
        $t->http(GET => '/ha-status')->{json}{upstreams}{app}{sticky_entries}
            // -1;
    };

    my ($n, $last) = (0, 0);
    while ($n < 2000) {
        $t->http(GET => '/', headers => { 'X-Key' => sprintf 'client-%06d', $n++ });
        next if $n % 100;
        my $e = $entries->();
        last if $e == $last;
        $last = $e;
    }

    my $e = $entries->();
    ok($e > 100 && $e < $n, "64k zone: sticky bindings are bounded ($e)");
    diag("limits: 64k zone: $e sticky entries (12-byte keys) after $n "
         . 'distinct clients');

    {
        $r = $t->api(DELETE => 'v1/flags/app');
        is($r->{status}, 200,
           'HA can be restored while the zone is full of sticky bindings');
    }

    $t->stop;
}

# ---------------------------------------------------------------- actor

# the actor is the token's sub, kept to 128 bytes (NGX_HA_OPTOUT_ACTOR_LEN)
{
    my $t = HaOptout::Test->new(workers => 1);
    $t->backend('b1');
    $t->secret_file;
    $t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 64k;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF
    $t->run;

    my %flag = (failover => JSON::PP::false, ttl => '5m', reason => 'drill');

    my $r = $t->api(PUT => 'v1/flags/app', json => \%flag,
                    token_args => { sub => 'b' x 300 });
    is($r->{status}, 200, 'a 300-byte sub may set a flag');
    is(length($r->{json}{actor} // ''), 128,
       'the actor is the first 128 bytes of the sub');

    # 127 bytes and a 2-byte UTF-8 character: byte 128 is half of it
    {
        $r = $t->api(PUT => 'v1/flags/app', json => \%flag,
                     token_args => { sub => ('a' x 127) . "\xc3\xa9" });
        is($r->{status}, 200, 'a long non-ASCII sub may set a flag');
        is($t->api(GET => 'v1/flags/app')->{status}, 200,
           'the flag it set can still be read');
        like($t->read_file('audit.jsonl'), qr/"action": *"set".*"action": *"set"/s,
             'and its change is audited');
    }

    $t->stop;
}

done_testing();
