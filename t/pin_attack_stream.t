#!/usr/bin/perl

# The stream twin's use of the resolve cache (issue 18): a pin on a stream
# upstream found by server text of the lengths where the two-word compare
# meets (7, 8, 16, 17 bytes) and by address, through reloads that reorder
# the servers and put the upstream's zone on, off and to another size, in
# two workers.  Every session must reach the pinned server.

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 2);
$t->secret_file;

my %text = (
    db1 => '0:%%PORT_db1%%',                # 7 bytes
    db2 => '00:%%PORT_db2%%',               # 8
    db3 => '127.0.0.01:%%PORT_db3%%',       # 16
    db4 => '127.0.0.001:%%PORT_db4%%',      # 17
);

sub text { my $s = $text{$_[0]}; $s =~ s/%%PORT_(\w+)%%/$t->port($1)/e; $s }
sub addr { ($_[0] eq 'db1' || $_[0] eq 'db2' ? '0.0.0.0:' : '127.0.0.1:')
           . $t->port($_[0]) }

sub conf {
    my ($zone, @order) = @_;
    my $list = join '', map { "        server $text{$_};\n" } @order;
    $t->conf(<<EOF);
stream {
    upstream db {
        $zone
$list
        ha_optout;
    }

    server { listen 127.0.0.1:%%PORT_tcp%%; proxy_pass db; }
    server { listen 127.0.0.1:%%PORT_db1%%; return "db1\\n"; }
    server { listen 127.0.0.1:%%PORT_db2%%; return "db2\\n"; }
    server { listen 127.0.0.1:%%PORT_db3%%; return "db3\\n"; }
    server { listen 127.0.0.1:%%PORT_db4%%; return "db4\\n"; }
}

http {
    ha_optout_zone ha_optout 1m;

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF
}

my $tcp = $t->port('tcp');

sub served {
    my ($n) = @_;
    my %seen;
    for (1 .. $n) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$tcp",
                                      Timeout => 3);
        my $l = $s ? <$s> : undef;
        $l = defined $l ? ($l =~ s/\s+\z//r) : '-';
        $seen{$l}++;
    }
    return join ',', map { "$_=$seen{$_}" } sort keys %seen;
}

sub pin {
    my ($name) = @_;
    return $t->api(PUT => 'v1/flags/stream:db', json => {
        pin => $name, ttl => '10m', reason => "pin $name" })->{status};
}

conf('zone db 64k;', qw(db1 db2 db3 db4));
$t->run;

for my $round (1, 2) {
    for my $s (qw(db1 db2 db3 db4)) {
        for my $name (text($s), addr($s)) {
            is(pin($name), 200, "pin on \"$name\" (" . length($name)
               . " bytes)");
            is(served(4), "$s=4", "every session reaches $s (round $round)");
        }
    }
}

my @steps = (['', qw(db4 db3 db2 db1)], ['zone db 128k;', qw(db2 db4 db1 db3)],
             ['zone db 64k;', qw(db3 db1 db4 db2)], ['', qw(db1 db3 db2 db4)]);

is(pin(text('db3')), 200, 'pin on db3 by its 16-byte text');
for my $step (@steps) {
    my ($zone, @order) = @$step;
    conf($zone, @order);
    ok($t->reload, "reload: " . ($zone || 'no zone') . ", @order");
    is(served(6), 'db3=6', 'every session still reaches db3');
}

is(pin(text('db4')), 200, 'the pin moves to db4 (17 bytes)');
is(served(6), 'db4=6', 'every session reaches db4, not the db3 found before');

done_testing();
