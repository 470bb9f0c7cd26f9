#!/usr/bin/perl

# nginx -t refuses a configuration the module cannot honour, naming the
# file and line, and accepts the valid ones.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->secret_file;                                      # ha-optout.key, 0600
$t->write_file('weak.key', 'x' x 31, 0600);
$t->write_file('open.key', 'y' x 40, 0644);

# conf(HTTP => ..., UPSTREAM => ..., LOCATION => ...): the valid shape below
# with one piece changed

sub conf {
    my (%p) = @_;

    my $http = $p{HTTP} // 'ha_optout_zone ha_optout 1m;';
    my $upstream = $p{UPSTREAM} // 'ha_optout;';
    my $location = $p{LOCATION} // '';

    return <<"EOF";
http {
    $http

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        $upstream
    }

    upstream plain {
        server 127.0.0.1:%%PORT_b1%%;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            ha_optout_header on;
        }

        location = /shadow {
            internal;
            $location
            proxy_pass http://127.0.0.1:%%PORT_b2%%;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF
}

# rejected(NAME, CONF, LINE_REGEX, MESSAGE_REGEX)

sub rejected {
    my ($name, $conf, $line_re, $msg_re) = @_;

    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;
    my $line = $t->conf_line($line_re) // 0;
    my $file = $t->testdir . '/nginx.conf';

    isnt($rc, 0, "nginx -t refuses $name");
    like($out, qr/\[emerg\].*\Q$file\E:$line\b/,
        "$name: the error names nginx.conf line $line") or diag $out;
    like($out, $msg_re, "$name: the error says why") if $msg_re;
}

sub accepted {
    my ($name, $conf) = @_;

    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;

    is($rc, 0, "nginx -t accepts $name") or diag $out;
    like($out, qr/test is successful/, "$name: test is successful");
}

###############################################################################

accepted('the valid configuration', conf());

accepted('a config flag, a mirror gate, a selector and an audience', conf(
    HTTP => 'ha_optout_zone ha_optout 1m;
    ha_optout_flag app failover=off "reason=nightly batch window";',
    UPSTREAM => 'ha_optout selector=$http_x_forensic_case '
        . 'sticky_key=$cookie_session;',
    LOCATION => 'ha_optout_mirror_gate app;'));

rejected('ha_optout without ha_optout_zone',
    conf(HTTP => ''), qr/^\s*ha_optout;/, qr/ha_optout_zone/);

rejected('ha_optout_flag naming an unknown upstream',
    conf(HTTP => 'ha_optout_zone ha_optout 1m;
    ha_optout_flag nosuch failover=off "reason=typo";'),
    qr/ha_optout_flag nosuch/, qr/nosuch/);

# an upstream named by a flag or a gate without its own "ha_optout" is
# enrolled as if it had one, with a warning (t/enroll.t shows it acts)

sub warned {
    my ($name, $conf, $msg_re) = @_;

    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;

    is($rc, 0, "nginx -t accepts $name") or diag $out;
    like($out, qr/\[warn\].*$msg_re/, "$name: with a warning") or diag $out;
}

warned('ha_optout_flag naming an upstream without ha_optout',
    conf(HTTP => 'ha_optout_zone ha_optout 1m;
    ha_optout_flag plain failover=off "reason=not wrapped";'),
    qr/"plain" has no "ha_optout" line; enrolled/);

rejected('ha_optout_mirror_gate naming an unknown upstream',
    conf(LOCATION => 'ha_optout_mirror_gate nosuch;'),
    qr/ha_optout_mirror_gate nosuch/, qr/nosuch/);

warned('ha_optout_mirror_gate naming an upstream without ha_optout',
    conf(LOCATION => 'ha_optout_mirror_gate plain;'),
    qr/"plain" has no "ha_optout" line; enrolled/);

# keepalive before ha_optout, and enrolling an upstream with keepalive, are
# refused or accepted depending on the nginx version: t/compat_keepalive.t

(my $weak = conf()) =~ s/ha-optout\.key/weak.key/;
rejected('an HS256 secret under 32 bytes', $weak,
    qr/ha_optout_admin_key/, qr/shorter than 32 bytes: make one with "openssl rand -hex 32"/);

(my $open = conf()) =~ s/ha-optout\.key/open.key/;
rejected('a key file readable by others', $open,
    qr/ha_optout_admin_key/, qr/open\.key/);

(my $missing = conf()) =~ s/ha-optout\.key/missing.key/;
rejected('a missing key file', $missing,
    qr/ha_optout_admin_key/, qr/missing\.key/);

# a balancer after ha_optout would silently replace it

for my $b ('least_conn;', 'hash $request_uri;', 'ip_hash;', 'random;') {
    rejected("ha_optout followed by $b",
        conf(UPSTREAM => "ha_optout;\n        $b"),
        qr/^\s*(?:ha_optout;|\Q$b\E)/, qr/ha_optout/);
}

for my $b ('least_conn;', 'hash $request_uri consistent;', 'ip_hash;',
           'random;', '')
{
    my $name = $b eq '' ? 'round robin' : $b;
    accepted("$name then ha_optout then keepalive", conf(
        UPSTREAM => "$b\n        ha_optout;\n        keepalive 4;"));
}

accepted('a shared zone, a balancer, ha_optout, keepalive', conf(
    UPSTREAM => "zone app 64k;\n        least_conn;\n        ha_optout;\n"
        . "        keepalive 4;"));

###############################################################################

done_testing;
