#!/usr/bin/perl

# Errors that say how to fix them (issue 17, item 4), each met as an
# operator meets it: a pin to a server the upstream does not have lists
# the servers it has; an unknown upstream echoes the name sent (escaped)
# and suggests the near match; a TTL of "2d" suggests "48h"; the CLI
# without --url names HA_OPTOUT_URL; "selector=" without "$" fails nginx -t;
# a --url that reached a proxied application, a page, nginx's own 404 or an
# allow/deny 403 says what it reached and where the admin location is.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HaOptout::Test;

my $CTL = abs_path(dirname(__FILE__) . '/..') . '/build/ha-optoutctl';

my $t = HaOptout::Test->new;
$t->backend('b1');
$t->backend('b2');
$t->secret_file('ha-optout.key', default => 1);
$t->secret_file('other.key');

my $b1 = '127.0.0.1:' . $t->port('b1');
my $b2 = '127.0.0.1:' . $t->port('b2');

my $CONF = <<'EOF';
http {
    ha_optout_zone ha_optout 1m;

    upstream Checkout {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout SELECTOR;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;
        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
        location /two-keys/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
            ha_optout_admin_key hs256 %%TESTDIR%%/other.key kid=ci;
        }
        location /app/ {
            proxy_pass http://127.0.0.1:%%PORT_b1%%;
        }
        location /shop/ {
            default_type text/html;
            return 200 "SHOP_PAGE";
        }
        location /guarded/ {
            allow 192.0.2.1;
            deny all;
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

# a page with a UTF-8 dash and an ESC sequence in it, as raw bytes
my $SHOP = "<html><body>Shop \xe2\x80\x94 \e[2J</body></html>";
$CONF =~ s/SHOP_PAGE/$SHOP/;

# ------------------------------------------------------------ nginx -t

(my $bad = $CONF) =~ s/SELECTOR/selector=http_x_case/;
$t->conf($bad);
my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'nginx -t refuses "ha_optout selector=http_x_case" (no $)');
like($out, qr/"selector=http_x_case" is a constant: it takes a variable, e\.g\. "selector=\$http_x_case"/,
     '... and shows the variable it meant');

(my $good = $CONF) =~ s/SELECTOR/selector=\$http_x_case/;
$t->conf($good);
$t->run;

# ------------------------------------------------------------ the API

my $r = $t->api(PUT => 'v1/flags/Checkout', json => {
    pin => '127.0.0.1:1', ttl => '30m', reason => 'x' });
is($r->{status}, 409, 'a pin to a server the upstream lacks: 409');
like($r->{json}{error}{message},
     qr/^pin "127\.0\.0\.1:1" names no server of upstream "Checkout"; its servers: \Q$b1\E, \Q$b2\E$/,
     '... naming the pin sent and the servers there are');

$r = $t->api(PUT => 'v1/flags/checkout', json => {
    failover => JSON::PP::false(), ttl => '30m', reason => 'x' });
is($r->{status}, 404, 'a name in the wrong case: 404');
like($r->{json}{error}{message},
     qr/^no upstream with "ha_optout" is named "checkout"; did you mean "Checkout"\?$/,
     '... echoing the name and suggesting the near match');

$r = $t->api(GET => 'v1/flags/%01%22evil');
is($r->{status}, 404, 'a name with control bytes and quotes: 404');
like($r->{json}{error}{message},
     qr/is named "\\x01"evil"; GET v1\/flags lists them$/,
     '... echoed escaped (control bytes as \xNN), no suggestion');

$r = $t->api(PUT => 'v1/flags/Checkout', json => {
    failover => JSON::PP::false(), ttl => '2d', reason => 'x' });
is($r->{status}, 400, 'ttl "2d": 400');
like($r->{json}{error}{message}, qr/e\.g\. "90s", "30m", "24h" \(2 days: "48h"\)/,
     '... suggesting the units that work');

# ------------------------------------------------------------ tokens

my $exp = time - 600;
$r = $t->api(GET => 'v1/flags', token_args => { iat => $exp - 60,
                                                 exp => $exp });
is($r->{status}, 401, 'an expired token: 401');
like($r->{json}{error}{message},
     qr/^bearer token rejected: expired: its exp $exp is \d{4}-\d\d-\d\dT[\d:]+Z, this server's time is \d+ \(\d{4}-[^)]+Z\)/,
     '... saying its exp and the server\'s time');

$r = $t->api(GET => 'v1/flags', prefix => '/two-keys/');
is($r->{status}, 401, 'a token without kid where two keys are: 401');
like($r->{json}{error}{message},
     qr/^bearer token rejected: missing_kid: the token has no "kid" header and this location has 2 keys/,
     '... saying the kid is missing, not "unknown_kid"');

$r = $t->api(GET => 'v1/flags', prefix => '/two-keys/',
             token_args => { kid => 'nosuch' });
like($r->{json}{error}{message}, qr/^bearer token rejected: unknown_kid$/,
     'a kid that names no key is still unknown_kid');

# ------------------------------------------------------------ the CLI

my $key = $t->testdir . '/ha-optout.key';
$out = `env -u HA_OPTOUT_URL $CTL status --key $key --kid ops 2>&1`;
is($? >> 8, 2, 'the CLI without --url: usage error');
like($out, qr/HA_OPTOUT_URL/, '... naming HA_OPTOUT_URL');

my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
$out = `$CTL set --url $url --key $key --kid ops --upstream Checkout --no-failover --ttl 2d --reason x 2>&1`;
is($? >> 8, 2, 'the CLI with --ttl 2d: usage error');
like($out, qr/e\.g\. 90s, 30m, 24h \(2 days: 48h\)/, '... suggesting 48h');

# --url that reached something else than the admin API

my $base = 'http://127.0.0.1:' . $t->port('http');
sub ctl_status {
    my ($u) = @_;
    my $o = `$CTL status --url $u --key $key --kid ops 2>&1`;
    return ($? >> 8, $o);
}

($rc, $out) = ctl_status("$base/app/");
is($rc, 1, '--url of a proxied application: refused (exit 1)');
like($out, qr{^error: 200 NotTheAdminAPI: GET \Q$base\E/app/v1/flags answered 200 with Content-Type "text/plain", not the admin API's JSON, beginning "b1": --url reached something else \(a proxied application, a static file or another location\)},
     '... saying what it reached: status, Content-Type, the body');
like($out, qr{it must be the prefix of the location that holds "ha_optout_admin", e\.g\. --url \Q$base\E/ha-optout/ for "location /ha-optout/ \{ ha_optout_admin; \.\.\. \}"$},
     '... and suggesting the admin location\'s path');

($rc, $out) = ctl_status("$base/shop/");
is($rc, 1, '--url of an HTML page: exit 1');
like($out, qr{answered 200 with Content-Type "text/html", not the admin API's JSON, beginning "<html><body>Shop \x{e2}\x{80}\x{94} \\x1b\[2J</body></html>":},
     '... its first bytes shown, a control byte escaped');
unlike($out, qr/\x1b/, '... no raw ESC reaches the terminal');

($rc, $out) = ctl_status("$base/nothing/");
is($rc, 1, '--url where no location matches: exit 1');
like($out, qr{^error: 404 NotTheAdminAPI: GET \Q$base\E/nothing/v1/flags answered 404 with Content-Type "text/html", not the admin API's JSON, beginning "<html>.*an error page of nginx itself: no location with "ha_optout_admin" there\)}s,
     '... nginx\'s own 404 page is named as such');

($rc, $out) = ctl_status("$base/guarded/");
is($rc, 1, 'an admin location behind allow/deny: exit 1');
like($out, qr{^error: 403 ForbiddenByNginx: \Q$base\E/guarded/ was refused by nginx's access rules \(allow/deny or satisfy in that location or its server\), before any token was looked at: this is not a token problem},
     '... refused by nginx access rules, not by a token');
like($out, qr{allow this host \(it connected from 127\.0\.0\.1\) in the admin location},
     '... naming the address to allow');
like($t->error_log, qr/access forbidden by rule/,
     '... as nginx\'s error_log says');

($rc, $out) = ctl_status("$base/ha-optout/");
is($rc, 0, 'the admin location itself still works') or diag $out;

my $r2 = $t->api(GET => 'v1/flags/nosuch');
$out = `$CTL status --url $base/ha-optout/ --key $key --kid ops --upstream nosuch 2>&1`;
like($out, qr/^error: 404 UnknownUpstream: /,
     'an API error (JSON) is still reported as the API\'s');

done_testing;
