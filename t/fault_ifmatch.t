#!/usr/bin/perl

# Fault test (docs/reliability.md, "Fault tests"): optimistic concurrency.
# Many operators (processes) PATCH the same flag at the same instant, each
# with If-Match of the version they all read.  Exactly one wins each round
# (200), every other one gets 412 and changes nothing, the version moves by
# exactly one per round, and the audit log has one line per round.
# 10 rounds of 10 writers, then one round of 100.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Load qw(send_at_once audit_verify);

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

$t->run;

# N operators PATCH the flag at the same instant, each with a token of its
# own and If-Match: VERSION; returns the count of each status
sub round {
    my ($round, $n, $version) = @_;
    my @requests;

    for my $i (1 .. $n) {
        my $tok = $t->token(sub => "op-$round-$i");
        my $body = $t->encode_json({ reason => "round $round writer $i" });
        push @requests, "PATCH /ha-optout/v1/flags/app HTTP/1.1\r\n"
            . "Host: localhost\r\nConnection: close\r\n"
            . "Authorization: Bearer $tok\r\n"
            . "If-Match: \"$version\"\r\n"
            . "Content-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n\r\n$body";
    }

    # 0.3 s: every writer connected and waiting
    return send_at_once($t, "round-$round", 0.3, @requests);
}

###############################################################################

my $r = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '10m', reason => 'contended' });
is($r->{status}, 200, 'a flag to fight over');
my $version = $r->{json}{version};

my @rounds = ((10) x 10, 100);
my ($good, $writers, $t0) = (0, 0, time);
my @bad;

for my $k (0 .. $#rounds) {
    my $n = $rounds[$k];
    my $st = round($k + 1, $n, $version);
    $writers += $n;

    my $g = $t->api(GET => 'v1/flags/app');
    my $now = $g->{json}{version} // -1;

    my $ok = ($st->{200} // 0) == 1 && ($st->{412} // 0) == $n - 1
             && $now == $version + 1;
    $good++ if $ok;
    push @bad, { round => $k + 1, writers => $n, statuses => $st,
                 version_before => $version, version_after => $now }
        unless $ok;

    like($g->{json}{reason} // '', qr/^round @{[ $k + 1 ]} writer \d+$/,
         "round @{[ $k + 1 ]}: the flag holds the winner's change")
        if $k == $#rounds;

    $version = $now;
    last if time - $t0 > 40;
}

is($good, scalar @rounds,
   'each round: exactly one 200, every other writer 412, version +1')
    or diag explain \@bad;

my @a = grep { /"action": ?"update"/ } split /\n/, $t->read_file('audit.jsonl');
is(scalar @a, scalar @rounds, 'the audit log has one update line per round');

my ($rc, $out) = audit_verify($t);
is($rc, 0, 'the audit chain verifies') or diag $out;

diag(sprintf 'fault_ifmatch: %d writers in %d rounds (10 x 10, then 100 at '
     . 'once) in %.1f s: %d rounds with exactly one winner',
     $writers, scalar @rounds, time - $t0, $good);

done_testing();
