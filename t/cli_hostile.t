#!/usr/bin/perl

# ha-optoutctl against what a server sends and what still acts (issue 11,
# items 9 and 11):
#   - text from the server (reason, actor, pin_selector, upstream names)
#     reaches the terminal with its control bytes (ESC, CR, BS), C1
#     controls and bidi overrides escaped, one record per line, in status,
#     whoami, audit list, --json and fleet;
#   - clear says "HA restored" only when it is: a window or an
#     ha_optout_flag line still acting is named (layer, what, until when)
#     and clear exits 1, unless --api-only asked for the API layer only.

use strict;
use warnings;

use Test::More;
use FindBin;
use Encode ();
use JSON::PP ();
use POSIX qw(_exit strftime);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
my $key = $t->secret_file;
my $d = $t->testdir;

sub iso { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime $_[0]) }

my $end = time + 3600;
$t->write_file('policy.yaml', <<"EOF");
windows:
  - upstream: batch
    start: ${\ iso(time - 60)}
    end: ${\ iso($end)}
    failover: false
    reason: "nightly reindex"
EOF

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream batch {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream plain {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    ha_optout_flag app failover=off "reason=kept off in nginx.conf";

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
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

my $url = 'http://127.0.0.1:' . $t->port('http') . '/ha-optout/';
my @auth = ('--url', $url, '--key', $key, '--kid', 'ops');
my $U = JSON::PP->new->utf8->canonical;

# runs the CLI with a clean environment; returns {rc, out, err}
sub cli {
    my ($out, $err) = ("$d/cli.out", "$d/cli.err");
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{"HA_OPTOUT_$_"} for qw(URL TOKEN KEY ALG KID AUD);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $CLI, @_ or _exit(127);
    }
    waitpid $pid, 0;
    return { rc => $? >> 8, out => $t->read_file($out),
             err => $t->read_file($err) };
}

sub put {
    my ($up, $body, %o) = @_;
    return $t->api(PUT => "v1/flags/$up", body => $U->encode($body),
                   headers => { 'Content-Type' => 'application/json' },
                   %o);
}

# bytes a terminal acts on: C0 but \n, DEL, C1 (UTF-8 C2 80..9F) and the
# bidi overrides and isolates (E2 80 AA..AE, E2 81 A6..A9)
sub raw_controls {
    my ($s) = @_;
    my @found;
    push @found, sprintf('0x%02x', ord $1) while $s =~ /([\x00-\x09\x0b-\x1f\x7f])/g;
    push @found, 'C1' if $s =~ /\xc2[\x80-\x9f]/;
    push @found, 'bidi' if $s =~ /\xe2\x80[\xaa-\xae]|\xe2\x81[\xa6-\xa9]/;
    push @found, 'LS/PS' if $s =~ /\xe2\x80[\xa8\xa9]/;
    return join ' ', @found;
}

###############################################################################
# item 11: clear tells the truth

my $r = put('app', { failover => JSON::PP::false, ttl => '10m',
                     reason => 'api layer' });
is($r->{status}, 200, 'an API flag over the ha_optout_flag line of app');

$r = cli('clear', @auth, '--upstream', 'app');
is($r->{rc}, 1, 'clear with a config flag still acting exits 1');
unlike($r->{out}, qr/HA restored/, 'and does not say "HA restored"');
like($r->{out}, qr/^app: API flag removed, but HA is NOT restored: the config flag still acts: failover=off, while its ha_optout_flag line is in nginx\.conf \(set by config, reason: kept off in nginx\.conf\); to end it, remove the ha_optout_flag line and nginx -s reload$/m,
     'it names the layer, what it suspends and until when') or diag $r->{out};
is($t->get('/')->{headers}{'x-ha-optout'}, 'failover=off',
   'responses do still carry X-HA-Optout');

# rev11b 10: no API flag at all, the config flag acting: nothing was removed
$r = cli('clear', @auth, '--upstream', 'app');
is($r->{rc}, 1, 'clear with no API flag and a config flag acting exits 1');
like($r->{out}, qr/^app: no API flag; HA is NOT restored: the config flag still acts: failover=off, .*; to end it, remove the ha_optout_flag line and nginx -s reload$/m,
     '... and says there was no API flag, and how to end the config flag')
    or diag $r->{out};
unlike($r->{out}, qr/API flag removed/, '... not "API flag removed"');

put('app', { failover => JSON::PP::false, ttl => '10m', reason => 'again' });
$r = cli('clear', @auth, '--upstream', 'app', '--api-only');
is($r->{rc}, 0, 'clear --api-only exits 0: the API flag is gone');
like($r->{out}, qr/^app: API flag removed; the config flag still acts: failover=off/m,
     '... and still says what acts') or diag $r->{out};

$r = cli('clear', @auth, '--upstream', 'app', '--json');
is($r->{rc}, 1, 'clear --json: exit 1 as well');
is($U->decode($r->{out})->{source}, 'config',
   '... stdout is the answer: the config flag');
like($r->{err}, qr/HA is NOT restored/, '... the verdict goes to stderr');

# worker 0's timer opens the window (it skips a tick while a write holds
# the writer lock): wait until it acts
ok($t->wait_for(sub {
       my $f = $t->api(GET => 'v1/flags/batch')->{json};
       ref $f && ($f->{source} // '') eq 'window';
   }, 5), 'the window of batch acts');
$r = cli('clear', @auth, '--upstream', 'batch');
is($r->{rc}, 1, 'clear with a window acting exits 1');
my $until = iso($end);
like($r->{out}, qr/^batch: no API flag; HA is NOT restored: the window flag still acts: failover=off, until \Q$until\E \(set by [^)]*reason: nightly reindex\); to end it now: ha-optoutctl window end --upstream batch --reason TEXT \(or change its window in the policy file and nginx -s reload\)$/m,
     'it names the window and when it ends') or diag $r->{out};

put('plain', { failover => JSON::PP::false, ttl => '10m', reason => 'x' });
$r = cli('clear', @auth, '--upstream', 'plain');
is($r->{rc}, 0, 'clear with nothing beneath exits 0');
is($r->{out}, "plain: HA restored\n", 'and says "HA restored"');

# fleet clear shares the verdict

$t->write_file('fleet.yaml', <<"EOF");
instances:
  - {name: eu1, url: "$url", key: "$key", kid: ops}
EOF

put('app', { failover => JSON::PP::false, ttl => '10m', reason => 'fleet' });
$r = cli('fleet', '--fleet', "$d/fleet.yaml", 'clear', '--upstream', 'app');
is($r->{rc}, 1, 'fleet clear with a config flag acting exits 1');
like($r->{out}, qr/^eu1\s+suspended\s+app: API flag removed, but HA is NOT restored: the config flag/m,
     'fleet names the instance as suspended') or diag $r->{out};
$r = cli('fleet', '--fleet', "$d/fleet.yaml", 'clear', '--upstream', 'app',
         '--api-only');
is($r->{rc}, 0, 'fleet clear --api-only exits 0');

###############################################################################
# item 9: nothing from the server acts on the terminal

my $evil = "\e[2J\e[31mred\e[0m\rover\bwrite \x{202e}desrever\x{2066} "
         . "\x{85}nel \x{2028}ls caf\x{e9}";
my $sub = "mallory\e]0;owned\a";

$r = put('plain', { failover => JSON::PP::false, ttl => '10m',
                    pin => '127.0.0.1:' . $t->port('b1'),
                    reason => $evil },
         token_args => { sub => Encode::encode('UTF-8', $sub) });
is($r->{status}, 200, 'a flag whose reason holds ESC, CR, BS, bidi, NEL');

$r = cli('status', @auth);
is($r->{rc}, 0, 'status');
is(raw_controls($r->{out}), '', 'status prints no raw control byte, C1 or '
   . 'bidi override');
my @lines = split /\n/, $r->{out};
is(scalar @lines, 4, 'one line per upstream, and the header');
my ($line) = grep { /^plain / } @lines;
like($line // '', qr/\\x1b\[2J\\x1b\[31mred\\x1b\[0m\\rover\\x08write \\u202edesrever\\u2066 \\u0085nel \\u2028ls caf\xc3\xa9$/,
     'the reason is shown escaped, its UTF-8 kept') or diag $line;
like($line // '', qr/mallory\\x1b\]0;owned\\x07/, 'the actor too');

$r = cli('status', @auth, '--json');
is(raw_controls($r->{out}), '', 'status --json prints no raw C1 or bidi');
my $j = eval { $U->decode($r->{out}) };
is($j && $j->{plain}{reason}, $evil, '... and is the same JSON value');

$r = cli('status', @auth, '--upstream', 'plain');
is(raw_controls($r->{out}), '', 'status --upstream: escaped');

$r = cli('whoami', '--url', $url, '--key', $key, '--kid', 'ops', '--sub',
         Encode::encode("UTF-8", "eve\e[8m\x{202e}"));
is($r->{rc}, 0, 'whoami');
is(raw_controls($r->{out}), '', 'whoami prints the sub escaped');
like($r->{out}, qr/eve\\x1b\[8m\\u202e/, '... visibly');

$r = cli('audit', 'list', @auth);
is($r->{rc}, 0, 'audit list');
is(raw_controls($r->{out}), '', 'audit list prints nothing raw');
ok(!grep({ !eval { $U->decode($_); 1 } } split /\n/, $r->{out}),
   'each line is still one JSON object');

$r = cli('fleet', '--fleet', "$d/fleet.yaml", 'status');
is(raw_controls($r->{out}), '', 'fleet status prints nothing raw');
$r = cli('fleet', '--fleet', "$d/fleet.yaml", 'status', '--json');
is(raw_controls($r->{out}), '', 'fleet status --json prints nothing raw');

###############################################################################

done_testing;
