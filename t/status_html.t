#!/usr/bin/perl

# ha_optout_status, HTML: the page an on-call person opens in a browser.
# Rendered by headless Chromium: it names the upstream, says SUSPENDED, who
# and why, escapes what the flag's setter typed, and loads nothing from
# elsewhere.  A screenshot is left in the test directory.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $CHROMIUM = (grep { -x } map { ("$_/chromium", "$_/chromium-browser") }
                split /:/, $ENV{PATH})[0];
plan(skip_all => 'chromium not found (Debian package "chromium"; '
               . 'run "make deps")') unless $CHROMIUM;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_environment production;

    upstream checkout {
        zone checkout 64k;
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream search {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

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

$t->run;

my $b2 = '127.0.0.1:' . $t->port('b2');
my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-status';
my $REASON = 'INC-4211 heap dump <img src=x onerror=alert(1)> & "quotes"';

# what a browser sends
my $BROWSER = 'text/html,application/xhtml+xml,application/xml;q=0.9,'
    . 'image/avif,image/webp,*/*;q=0.8';

sub chromium {
    my (@args) = @_;
    my $dir = $t->testdir;
    my $out = "$dir/chromium.out";
    my @cmd = ('timeout', '90', $CHROMIUM, '--headless', '--no-sandbox',
               '--disable-gpu', '--disable-background-networking',
               '--disable-component-update', '--disable-sync',
               '--no-first-run', "--user-data-dir=$dir/chromium-profile",
               @args);
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDOUT, '>', $out;
        open STDERR, '>', "$out.err";
        exec @cmd or exit 127;
    }
    waitpid $pid, 0;
    return ($? >> 8, $t->read_file($out), $t->read_file("$out.err"));
}

###############################################################################

my $r = $t->api(PUT => 'v1/flags/checkout', json => {
    pin => $b2, ttl => '45m', reason => $REASON },
    token_args => { sub => 'carol.oncall' });
is($r->{status}, 200, 'flag set on checkout');

# the raw page

$r = $t->get('/ha-status', headers => { Accept => $BROWSER });
is($r->{status}, 200, 'page answers 200');
is($r->{headers}{'content-type'}, 'text/html; charset=utf-8',
    'a browser\'s Accept gets HTML');
like($r->{headers}{'content-security-policy'} // '', qr/default-src 'none'/,
    'the page may load nothing from elsewhere (CSP)');

my $html = $r->{body};

unlike($html, qr{(?:src|href|action)\s*=\s*["']?(?:[a-z]+:)?//}i,
    'no external assets or links');
unlike($html, qr/<img/i, 'the reason\'s markup is escaped, not rendered');
like($html, qr/&lt;img src=x onerror=alert\(1\)&gt; &amp; &quot;quotes&quot;/,
    'the reason is HTML-escaped');
like($html, qr/<meta http-equiv="refresh"|setInterval\(refresh/,
    'the page refreshes itself');

is($t->get('/ha-status?format=html')->{headers}{'content-type'},
    'text/html; charset=utf-8', '?format=html gets HTML');

# rendered by a browser

my ($rc, $dom, $err) = chromium('--dump-dom', $url);
is($rc, 0, 'chromium rendered the page') or diag $err;

like($dom, qr/checkout/, 'the page names the upstream');
like($dom, qr/HA SUSPENDED/, 'the page says HA is SUSPENDED');
like($dom, qr/carol\.oncall/, 'the page says who suspended it');
like($dom, qr/INC-4211 heap dump/, 'the page says why');
like($dom, qr/\Q$b2\E/, 'the page names the pinned server');
like($dom, qr/<title>\(1\) HA SUSPENDED - production/,
    'the page\'s script ran (title counts the suspended upstreams)');
like($dom, qr/class="left[^"]*" data-expires="\d+">(?:4[0-5] m \d\d s)</,
    'time left counts down from the TTL');
like($dom, qr/HA normal/, 'an upstream without a flag reads HA normal');
like($dom, qr/>api</, 'the page names the layer');
like($dom, qr/pinned requests/, 'the page shows the counters');
unlike($dom, qr/<img/i, 'nothing the setter typed becomes markup');

# the page refreshes itself in place (virtual time runs its timers)

($rc, $dom) = chromium('--virtual-time-budget=11000', '--dump-dom', $url);
ok(scalar(grep { m{"GET /ha-status\?format=html HTTP/1\.1" 200 .*Chrome} }
          split /\n/, $t->read_file('access.log')),
    'the page fetches a fresh copy of itself');
like($dom, qr{<div class="stale" id="stale" role="alert"></div>},
    'the refresh succeeds (no STALE warning)');
like($dom, qr/HA SUSPENDED.*carol\.oncall/s,
    'the refreshed page still shows the suspension');

# a picture for people

my $png = $t->testdir . '/status.png';
($rc, undef, $err) = chromium("--screenshot=$png", '--window-size=1200,800',
                              $url);
ok($rc == 0 && -s $png, 'chromium took a screenshot') or diag $err;
diag("status page screenshot: $png"
     . ($ENV{HA_OPTOUT_KEEP} ? '' : ' (set HA_OPTOUT_KEEP=1 to keep it)'));

# the clear shows

$t->api(DELETE => 'v1/flags/checkout');
($rc, $dom) = chromium('--dump-dom', $url);
like($dom, qr/HA normal on all 2 upstreams/, 'after a clear, all is normal');
unlike($dom, qr/HA SUSPENDED/, 'and nothing reads SUSPENDED');

###############################################################################

done_testing;
