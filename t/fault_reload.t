#!/usr/bin/perl

# Fault test (docs/reliability.md, "Fault tests"): `nginx -s reload` every
# second for 8 s while clients keep sending traffic and a pin is set on a
# healthy server.  No request fails, the flag keeps acting after every
# reload (sampled on fresh connections), and its version does not move:
# a reload neither re-sets, re-restores nor audits anything.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Load qw(load_start load_stop);

use constant RELOADS => 8;

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
$t->state_dir;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
        keepalive 16;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            ha_optout_header on;
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

###############################################################################

my $set = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b1, failover => JSON::PP::false, ttl => '10m',
    reason => 'hold b1 across reloads' });
is($set->{status}, 200, 'pin on the healthy b1 set before the reloads');
my $version = $set->{json}{version};
my $audit_before = $t->read_file('audit.jsonl');

# one request per connection: a kept-alive connection that is idle at
# the instant an old worker exits is closed under the client's next request
# (nginx core, with or without this module: docs/reliability.md), which
# HTTP clients answer by retrying; wrk counts it as a read error instead
my $load = load_start($t, args => [ '-H', 'Connection: close' ]);

my ($reloaded, $sampled, @off, @versions) = (0, 0);
my $t0 = time;

for my $n (1 .. RELOADS) {
    my $tick = $t0 + $n;
    sleep $tick - time if $tick > time;

    my %old = map { $_ => 1 } $t->worker_pids;
    $reloaded++ if $t->reload;
    my @new = $t->worker_pids;
    push @off, "reload $n: workers not replaced" if grep { $old{$_} } @new;

    # the new workers obey the flag: sample on fresh connections
    for my $i (1 .. 5) {
        my $r = $t->get("/sample/$n/$i");
        $sampled++;
        push @off, "reload $n sample $i: $r->{status} "
                   . ($r->{headers}{'x-backend'} // '-') . ' '
                   . ($r->{headers}{'x-ha-optout'} // '-')
            unless $r->{status} == 200
                && ($r->{headers}{'x-backend'} // '') eq 'b1'
                && ($r->{headers}{'x-ha-optout'} // '') =~ /pin=\Q$b1\E/;
    }

    my $g = $t->api(GET => 'v1/flags/app');
    push @versions, $g->{json}{version} // 'none';

    last if time - $t0 > 20;
}

my $elapsed = time - $t0;
my $w = load_stop($load);

is($reloaded, RELOADS, sprintf '%d reloads, one a second (%.1f s)',
   RELOADS, $elapsed);
is(scalar @off, 0, "the pin acted on all $sampled sampled requests after "
                   . 'each reload') or diag explain \@off;
is_deeply(\@versions, [ ($version) x RELOADS ],
          "the flag's version is unchanged after every reload ($version)");

ok(defined $w->{requests} && $w->{requests} > 0,
   'the load generator served requests during the reloads')
    or diag $w->{text};
is($w->{non2xx}, 0, 'no request was answered non-2xx during the reloads')
    or diag $w->{text};
is($w->{socket}, 0, 'no socket error (connect, read, write, timeout)')
    or diag $w->{text};

my @load = grep { m{GET /load} } split /\n/, $t->read_file('access.log');
my @bad = grep { !/" (2\d\d|499) / } @load;
is(scalar @bad, 0, 'access.log has no non-2xx answer for the load')
    or diag join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)];

# under the pin every load request went to b1
is($t->hits('b2'), 0, 'b2 saw nothing while b1 was pinned');

my $g = $t->api(GET => 'v1/flags/app');
is($g->{json}{reason}, 'hold b2 across reloads' =~ s/b2/b1/r,
   'the flag is the one set before the reloads');
is($g->{json}{expires_at}, $set->{json}{expires_at}, 'its expiry is unchanged');
is($t->read_file('audit.jsonl'), $audit_before,
   'the reloads wrote no audit line (no restore, no set, no expire)');

unlike($t->error_log, qr/\[(alert|crit|emerg)\]|exited on signal/,
       'error.log has no alert, crit or crashed worker');

my $sec = $w->{seconds} || $elapsed;
diag(sprintf 'fault_reload: %d reloads in %.1f s; %s requests served '
     . '(%.0f req/s) by %s; %d samples after reloads all pinned; '
     . 'non-2xx %d, socket errors %d',
     $reloaded, $elapsed, $w->{requests} // '?',
     ($w->{requests} // 0) / ($sec || 1),
     ($w->{text} =~ /Running/ ? 'wrk -t1 -c8' : 'a Perl client'),
     $sampled, $w->{non2xx}, $w->{socket});

done_testing();
