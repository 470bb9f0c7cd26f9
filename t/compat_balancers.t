#!/usr/bin/perl

# Balancers and server states newer than the module's first nginx (issue
# 12), each on the versions that have it:
#
# - least_time (1.31): keeps its own free, so our wrap would step aside at
#   run time and a pin would be shown but not act.  Refused in either
#   order, http and stream (before the fix "least_time; ha_optout;" was
#   silently accepted).
# - sticky (1.29.6+): wraps the balancer as keepalive used to.  Before
#   "ha_optout" it would sit inside our wrap (refused; was silently
#   accepted); after it, a pinned request carries the pinned server's
#   sticky cookie (pc->sid; before the fix nginx logged "balancer does not
#   support sticky" and set no cookie).
# - drain (1.29.6+): takes no new clients.  A pin is new traffic: refused
#   by the API and by nginx -t, like a down server.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $v = HaOptout::Test->nginx_version;
my $has_least_time = HaOptout::Test->nginx_at_least('1.31.0');
my $has_sticky = HaOptout::Test->nginx_at_least('1.29.6');

plan skip_all => "nginx $v has neither least_time nor sticky nor drain "
                 . '(1.29.6+)'
    unless $has_sticky;

diag("nginx $v: least_time " . ($has_least_time ? 'tested' : 'absent')
     . ', sticky and drain tested');

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

sub conf {
    my (%p) = @_;
    my $up = $p{upstream} // 'ha_optout;';
    my $b2 = $p{b2} // '';
    my $http = $p{http} // '';
    my $stream = $p{stream} // '';

    return <<"EOF";
http {
    ha_optout_zone ha_optout 1m;
    $http

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%% $b2;
        $up
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
$stream
EOF
}

sub refused {
    my ($name, $conf, $line_re, $msg_re) = @_;

    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;
    my $line = $t->conf_line($line_re) // 0;

    isnt($rc, 0, "nginx -t refuses $name");
    like($out, qr/\[emerg\].*nginx\.conf:$line\b/,
         "$name: the error names line $line") or diag $out;
    like($out, $msg_re, "$name: the error says why") or diag $out;
}

sub accepted {
    my ($name, $conf) = @_;

    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;
    is($rc, 0, "nginx -t accepts $name") or diag $out;
}

# ---------------------------------------------------------------- least_time

SKIP: {
    skip "nginx $v has no least_time (1.31+)", 9 unless $has_least_time;

    refused('least_time before ha_optout',
        conf(upstream => "least_time header;\n        ha_optout;"),
        qr/^\s*ha_optout;/, qr/does not work with "least_time"/);

    refused('least_time after ha_optout',
        conf(upstream => "ha_optout;\n        least_time header;"),
        qr/^\s*ha_optout;/, qr/overridden by a balancer/);

    refused('stream: least_time before ha_optout', conf(stream => <<'EOF'),
stream {
    upstream tcp {
        server 127.0.0.1:%%PORT_b1%%;
        least_time connect;
        ha_optout;                  # the stream one
    }
    server {
        listen 127.0.0.1:%%PORT_tcp%%;
        proxy_pass tcp;
    }
}
EOF
        qr/ha_optout;\s+# the stream one/, qr/does not work with "least_time"/);
}

# ---------------------------------------------------------------- sticky

refused('sticky before ha_optout',
    conf(upstream => "sticky cookie srv_id;\n        ha_optout;"),
    qr/^\s*ha_optout;/, qr/must come before "sticky"/);

accepted('ha_optout then sticky',
    conf(upstream => "ha_optout;\n        sticky cookie srv_id;"));

$t->conf(conf(upstream => "ha_optout;\n        sticky cookie srv_id;"))->run;

my $b2 = '127.0.0.1:' . $t->port('b2');

my $r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b2, ttl => '5m', reason => 'sticky' });
is($r->{status}, 200, 'sticky: pinned') or diag $r->{body};

my @cookies;
for (1 .. 4) {
    $r = $t->get('/');
    is($r->{headers}{'x-backend'}, 'b2', 'sticky: the pin holds');
    my $c = $r->{headers}{'set-cookie'} // '';
    $c = join ' ', @$c if ref $c;
    push @cookies, $c =~ /srv_id=(\w+)/ ? $1 : '';
}

ok($cookies[0] ne '', 'a pinned request carries nginx\'s sticky cookie')
    or diag $t->error_log;
is(scalar(grep { $_ eq $cookies[0] } @cookies), 4,
   'the same cookie every time');
unlike($t->error_log, qr/balancer does not support sticky/,
       'nginx\'s sticky learns the pinned server (pc->sid)');

# the cookie names b2: without the pin, nginx's sticky sends it there

$t->api(DELETE => 'v1/flags/app');
$t->reset_hits;

my @r = map { $t->get('/', headers => { Cookie => "srv_id=$cookies[0]" })
                ->{headers}{'x-backend'} // '-' } 1 .. 6;
is(scalar(grep { $_ eq 'b2' } @r), 6,
   'unpinned, the cookie a pinned request got leads to the pinned server')
    or diag "@r";

$t->stop;

# ---------------------------------------------------------------- drain

refused('a config pin to a draining server',
    conf(b2 => 'drain', http => "ha_optout_flag app pin=$b2 \"reason=t\";"),
    qr/ha_optout_flag app/, qr/not a usable server/);

$t->conf(conf(b2 => 'drain'))->run;

$r = $t->api(PUT => 'v1/flags/app', json => {
    pin => $b2, ttl => '5m', reason => 'drain' });
is($r->{status}, 409, 'the API refuses a pin to a draining server (409)')
    or diag $r->{body};

@r = $t->spray(6, '/');
is(scalar(grep { $_ eq '200 b1' } @r), 6,
   'a draining server takes no new traffic') or diag "@r";

unlike($t->error_log, qr/\[(alert|crit)\]/, 'no alert in error.log');

done_testing;
