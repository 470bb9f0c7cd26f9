#!/usr/bin/perl

# keepalive and ha_optout on every nginx version (issue 12).
#
# Up to 1.29.6 the "keepalive" directive wraps the balancer on the spot:
# written before "ha_optout" it would sit inside our wrap (refused), and an
# upstream with keepalive cannot be enrolled by ha_optout_flag (refused).
# Since 1.29.7 keepalive is on by default and wraps every upstream last:
# both are accepted, the opt-out acts, and keepalive still reuses the
# upstream connections (it stays the outermost wrap).  Before the fix every
# configuration with ha_optout failed on 1.29.7+ ("must come before
# keepalive"), and an enrolled upstream was refused ("uses keepalive").

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use POSIX qw(_exit setsid);
use HaOptout::Test;

my $late = HaOptout::Test->nginx_at_least('1.29.7');
diag(sprintf "nginx %d: expecting keepalive to wrap %s",
     HaOptout::Test->nginx_version,
     $late ? 'last (1.29.7+: accepted in any order)'
           : 'on its directive (up to 1.29.6: order enforced)');

my $t = HaOptout::Test->new(workers => 1);
$t->secret_file;

# Two backends that log the client port of the connection each request
# came on: how many upstream connections nginx opened.

my %log;
for my $name (qw(b1 b2)) {
    my $port = $t->port($name);
    my $file = $t->testdir . "/conn-$name.log";
    $t->write_file($file, '');
    $log{$name} = $file;

    my $ls = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
                                   Listen => 64, ReuseAddr => 1)
        or die "listen $port: $!\n";

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        setsid();
        $SIG{CHLD} = 'IGNORE';
        local $SIG{ALRM} = sub { _exit(0) };
        alarm 120;                                  # self-stopping
        while (my $c = $ls->accept) {
            next if fork;
            $c->autoflush(1);
            while (my $line = <$c>) {
                my $len = 0;
                while (my $h = <$c>) {
                    last if $h =~ /^\r?\n$/;
                    $len = $1 if $h =~ /^content-length:\s*(\d+)/i;
                }
                read($c, my $b, $len) if $len;
                open my $fh, '>>', $file;
                print $fh $c->peerport, "\n";
                close $fh;
                print $c "HTTP/1.1 200 OK\r\nX-Backend: $name\r\n"
                    . "Content-Length: 2\r\nConnection: keep-alive\r\n\r\n"
                    . "ok";
            }
            _exit(0);
        }
        _exit(0);
    }
    close $ls;
    $t->{backends}{$name} = $pid;       # stopped with the others
}

sub conns {
    my ($name) = @_;
    my %p = map { $_ => 1 } split /\n/, $t->read_file($log{$name});
    return scalar keys %p;
}

sub requests {
    my ($name) = @_;
    return scalar(my @l = split /\n/, $t->read_file($log{$name}));
}

sub conf {
    my (%p) = @_;
    my $flag = $p{flag} // '';
    my $app = $p{app} // "ha_optout;\n        keepalive 4;";
    my $plain = $p{plain} // '';

    return <<"EOF";
worker_processes 1;
http {
    ha_optout_zone ha_optout 1m;
    $flag

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        $app
    }

    upstream plain {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        $plain
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location / { proxy_pass http://app; }
        location /plain/ { proxy_pass http://plain; }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF
}

my $b2 = '127.0.0.1:' . $t->port('b2');

# ------------------------------------------- keepalive before ha_optout

$t->conf(conf(app => "keepalive 4;\n        ha_optout;"));
my ($rc, $out) = $t->nginx_t;

if ($late) {
    is($rc, 0, 'keepalive before ha_optout: accepted (1.29.7+)')
        or diag $out;

} else {
    isnt($rc, 0, 'keepalive before ha_optout: refused (up to 1.29.6)');
    my $line = $t->conf_line(qr/^\s*ha_optout;/);
    like($out, qr/before "keepalive".*nginx\.conf:$line\b/,
         'the error names the ha_optout line');
}

# ------------------------------------- enrolling an upstream with keepalive

$t->conf(conf(flag => "ha_optout_flag plain pin=$b2 \"reason=t\";",
              plain => 'keepalive 4;'));
($rc, $out) = $t->nginx_t;

if ($late) {
    is($rc, 0, 'ha_optout_flag enrolling an upstream with keepalive: '
               . 'accepted (1.29.7+)') or diag $out;
    like($out, qr/"plain" has no "ha_optout" line; enrolled/,
         'with the enrollment warning');

} else {
    isnt($rc, 0, 'ha_optout_flag enrolling an upstream with keepalive: '
                 . 'refused (up to 1.29.6)');
    like($out, qr/uses "keepalive"/, 'the error says why');
}

# --------------- at run time: the flag acts and keepalive reuses connections

my $n = 12;

sub spray_plain {
    my @r;
    for (1 .. $n) {
        my $r = $t->get('/plain/');
        push @r, "$r->{status} " . ($r->{headers}{'x-backend'} // '-');
    }
    return @r;
}

if ($late) {
    # an enrolled upstream under default keepalive (no keepalive line),
    # then one with keepalive written before ha_optout

    for my $case (['an enrolled upstream under default keepalive',
                   conf(flag => "ha_optout_flag plain pin=$b2 \"reason=t\";")],
                  ['an enrolled upstream with "keepalive 4"',
                   conf(flag => "ha_optout_flag plain pin=$b2 \"reason=t\";",
                        plain => 'keepalive 4;')])
    {
        my ($name, $conf) = @$case;

        $t->write_file($log{$_}, '') for qw(b1 b2);
        $t->conf($conf);
        $t->{running} ? $t->reload : $t->run;

        my @r = spray_plain();
        is(scalar(grep { $_ eq '200 b2' } @r), $n,
           "$name: the config pin holds every request") or diag "@r";
        is(requests('b1'), 0, "$name: the other server sees none");
        ok(conns('b2') < $n / 2,
           "$name: keepalive reuses upstream connections ("
           . conns('b2') . " for $n requests)");
    }

    # ha_optout after keepalive: an API pin acts, connections are reused

    $t->write_file($log{$_}, '') for qw(b1 b2);
    $t->conf(conf(app => "keepalive 4;\n        ha_optout;"));
    $t->reload;

    my $r = $t->api(PUT => 'v1/flags/app', json => {
        pin => $b2, ttl => '5m', reason => 'keepalive first' });
    is($r->{status}, 200, 'keepalive before ha_optout: the API pins')
        or diag $r->{body};

    my @r = map { my $x = $t->get('/');
                  "$x->{status} " . ($x->{headers}{'x-backend'} // '-') }
            1 .. $n;
    is(scalar(grep { $_ eq '200 b2' } @r), $n,
       'keepalive before ha_optout: the pin holds every request')
        or diag "@r";
    ok(conns('b2') < $n / 2,
       'keepalive before ha_optout: connections are reused ('
       . conns('b2') . " for $n requests)");

} else {
    # before 1.29.7: an enrolled upstream without keepalive acts; an
    # ha_optout upstream with keepalive after it acts and reuses

    $t->conf(conf(flag => "ha_optout_flag plain pin=$b2 \"reason=t\";"));
    $t->run;

    my @r = spray_plain();
    is(scalar(grep { $_ eq '200 b2' } @r), $n,
       'an enrolled upstream without keepalive: the config pin holds')
        or diag "@r";

    $t->write_file($log{$_}, '') for qw(b1 b2);
    my $r = $t->api(PUT => 'v1/flags/app', json => {
        pin => $b2, ttl => '5m', reason => 'keepalive after' });
    is($r->{status}, 200, 'ha_optout then keepalive: the API pins');

    @r = map { my $x = $t->get('/');
               "$x->{status} " . ($x->{headers}{'x-backend'} // '-') }
         1 .. $n;
    is(scalar(grep { $_ eq '200 b2' } @r), $n,
       'ha_optout then keepalive: the pin holds') or diag "@r";
    ok(conns('b2') < $n / 2,
       'ha_optout then keepalive: connections are reused ('
       . conns('b2') . " for $n requests)");
}

unlike($t->error_log, qr/\[(alert|crit)\]/, "no alert in error.log");

done_testing;
