#!/usr/bin/perl

# A pin to a "resolve" server (open-source nginx 1.27.3+, issue 12).  The
# configuration knows such a server by its name only; its addresses live in
# the upstream's zone and change with DNS.  The API must accept a pin to
# the address the name has now (it was refused before the fix: only the
# configured placeholder was compared), the pin must follow DNS (502 while
# the name does not resolve, back when it does), and peers removed by DNS
# must not upset the peer accounting (no alert, no crash).
#
# DNS is a tiny responder on 127.0.0.1 written here: it answers A queries
# for backend.test with the addresses listed in a file (none: NXDOMAIN).

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use POSIX qw(_exit setsid);
use HaOptout::Test;

plan skip_all => '"resolve" is in open-source nginx since 1.27.3 (this '
                 . 'nginx: ' . HaOptout::Test->nginx_version . ')'
    unless HaOptout::Test->nginx_at_least('1.27.3');

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $answers = $t->write_file('dns-answers', "127.0.0.1\n");

# ---------------------------------------------------------------- DNS

sub dns_responder {
    my ($port, $file) = @_;

    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
                                  Proto => 'udp', ReuseAddr => 1)
        or die "dns: udp 127.0.0.1:$port: $!\n";

    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;

    setsid();
    local $SIG{ALRM} = sub { _exit(0) };
    alarm 120;                                      # self-stopping

    while (1) {
        my $from = $s->recv(my $q, 512) // next;
        next if length $q < 17;

        my ($id, $flags, $qd) = unpack 'n n n', $q;

        # the question: labels up to the root, then type and class
        my $off = 12;
        my @labels;
        while ((my $l = ord substr($q, $off, 1)) > 0) {
            push @labels, substr($q, $off + 1, $l);
            $off += $l + 1;
        }
        my $qname = lc join '.', @labels;
        my ($qtype) = unpack 'n', substr($q, $off + 1, 2);
        my $question = substr($q, 12, $off + 5 - 12);

        my @a;
        if ($qname eq 'backend.test' && $qtype == 1
            && open my $fh, '<', $file)
        {
            @a = grep { /^\d+\.\d+\.\d+\.\d+$/ } map { chomp; $_ } <$fh>;
        }

        my $rcode = ($qname eq 'backend.test' && ($qtype != 1 || @a)) ? 0 : 3;

        my $r = pack('n n n n n n', $id, 0x8180 | $rcode, 1, scalar @a, 0, 0)
              . $question;
        for my $ip (@a) {
            $r .= pack('n n n N n', 0xc00c, 1, 1, 1, 4)
                . pack('C4', split /\./, $ip);
        }

        $s->send($r, 0, $from);
    }
}

$t->{backends}{dns} = dns_responder($t->port('dns'), $answers);

# ---------------------------------------------------------------- nginx

$t->conf(<<'EOF')->run;
http {
    ha_optout_zone ha_optout 1m;

    resolver 127.0.0.1:%%PORT_dns%% valid=1s ipv6=off;
    resolver_timeout 2s;

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_b1%%;
        server backend.test:%%PORT_b2%% resolve;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            proxy_next_upstream off;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

my $live = '127.0.0.1:' . $t->port('b2');
my $name = 'backend.test:' . $t->port('b2');

sub b2_live {
    my $st = $t->status // return 0;
    my $servers = $st->{upstreams}{app}{servers} // [];
    return scalar grep { ($_->{address} // '') eq $live } @$servers;
}

ok($t->wait_for(\&b2_live, 15), "backend.test resolved to $live")
    or diag $t->error_log;

# the pin by the address the name has now

my $r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $live, ttl => '5m', reason => 'resolved address' });
is($r->{status}, 200, 'the API pins the resolve server\'s current address')
    or diag $r->{body};

my @r = $t->spray(8, '/');
is(scalar(grep { $_ eq '200 b2' } @r), 8, 'the pin holds every request')
    or diag "@r";

# the pin by name: every address of the name (here one)

$r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $name, ttl => '5m', reason => 'by name' });
is($r->{status}, 200, 'the API pins the resolve server by its name')
    or diag $r->{body};

@r = $t->spray(4, '/');
is(scalar(grep { $_ eq '200 b2' } @r), 4, 'the pin by name holds')
    or diag "@r";

# back to the address; then DNS loses the name: the peer is removed

$r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $live, ttl => '5m', reason => 'resolved address' });
is($r->{status}, 200, 'pinned to the address again');

$t->write_file($answers, '');

ok($t->wait_for(sub { !b2_live() }, 15),
   'DNS lost backend.test: its peer left the upstream');

@r = $t->spray(4, '/');
is(scalar(grep { $_ eq '502 -' } @r), 4,
   'the pin does not fail over while its server is gone') or diag "@r";
is($t->hits('b1'), 0, 'nothing went to the other server');

$r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $live, ttl => '5m', reason => 'gone' });
is($r->{status}, 409, 'a new pin to the vanished address is refused (409)');

# DNS has the name again: the same pin acts again

$t->write_file($answers, "127.0.0.1\n");
ok($t->wait_for(\&b2_live, 15), 'DNS has backend.test again');

$t->reset_hits;
@r = $t->spray(8, '/');
is(scalar(grep { $_ eq '200 b2' } @r), 8, 'the pin holds again') or diag "@r";

# many DNS changes under pinned traffic: peers come and go while pinned
# requests hold references

for my $round (1 .. 3) {
    $t->write_file($answers, '');
    $t->wait_for(sub { $t->spray(1, '/'); !b2_live() }, 15);
    $t->write_file($answers, "127.0.0.1\n");
    $t->wait_for(sub { $t->spray(1, '/'); b2_live() }, 15);
}
@r = $t->spray(4, '/');
is(scalar(grep { $_ eq '200 b2' } @r), 4,
   'after 3 more DNS flips under pinned traffic the pin still holds')
    or diag "@r";

unlike($t->error_log, qr/\[(alert|crit)\]|chunk is already free/,
       'no alert in error.log') or diag $t->error_log;

done_testing;
