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
use IO::Socket::INET;
use POSIX qw(_exit);
use Time::HiRes qw(sleep time);
use HaOptout::Test;

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

my $port = $t->port('http');

# N processes, each with its own connection open and its request ready;
# they all send when the parent closes the pipe, then write down the
# status they got
sub round {
    my ($round, $n, $version) = @_;

    pipe(my $rd, my $wr) or die "pipe: $!\n";
    my @kids;

    for my $i (1 .. $n) {
        my $tok = $t->token(sub => "op-$round-$i");
        my $body = $t->encode_json({ reason => "round $round writer $i" });
        my $req = "PATCH /ha-optout/v1/flags/app HTTP/1.1\r\n"
            . "Host: localhost\r\nConnection: close\r\n"
            . "Authorization: Bearer $tok\r\n"
            . "If-Match: \"$version\"\r\n"
            . "Content-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n\r\n$body";
        my $out = $t->testdir . "/round-$round-$i";

        my $pid = fork // die "fork: $!\n";
        if ($pid == 0) {
            close $wr;
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                          Timeout => 5);
            sysread($rd, my $x, 1);         # EOF: go
            my $status = 'connect';
            if ($s) {
                local $SIG{ALRM} = sub { _exit(1) };
                alarm 10;
                print $s $req;
                local $/;
                my $resp = <$s> // '';
                $status = $resp =~ m{^HTTP/1\.1 (\d{3})} ? $1 : 'lost';
            }
            open my $fh, '>', $out;
            print $fh $status;
            close $fh;
            _exit(0);
        }
        push @kids, [ $pid, $out ];
    }

    close $rd;
    sleep 0.3;                  # every writer connected and waiting
    close $wr;

    my %st;
    for my $k (@kids) {
        waitpid $k->[0], 0;
        $st{ $t->read_file($k->[1]) || 'none' }++;
    }
    return \%st;
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

my $ctl = $ENV{HA_OPTOUT_CTL};
my $out = `$ctl audit verify @{[ $t->testdir ]}/audit.jsonl 2>&1`;
is($? >> 8, 0, 'the audit chain verifies') or diag $out;

diag(sprintf 'fault_ifmatch: %d writers in %d rounds (10 x 10, then 100 at '
     . 'once) in %.1f s: %d rounds with exactly one winner',
     $writers, scalar @rounds, time - $t0, $good);

done_testing();

BEGIN {
    require Cwd;
    require File::Basename;
    $ENV{HA_OPTOUT_CTL} //= Cwd::abs_path(File::Basename::dirname(__FILE__)
                                          . '/..') . '/build/ha-optoutctl';
}
