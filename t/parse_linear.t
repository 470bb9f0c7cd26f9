#!/usr/bin/perl

# Every parser is linear in its input (SPEC 8).  A policy of 80,000 keys
# is checked by "nginx -t" at once (it took 35 s with the pairwise
# duplicate check), a duplicate at its end is named by file:line:column,
# and a state file of 80,000 spent jtis is read at start without holding
# up the API.  The bounds are generous (10 s): they catch a quadratic
# parser, not a slow machine.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use POSIX qw(WNOHANG _exit);
use HaOptout::Test;

my $N = 80_000;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->secret_file;
my $dir = $t->state_dir;
my $d = $t->testdir;

my $conf = <<'EOF';
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
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
EOF

# nginx -t with a deadline: (exit code or 'hung', output, seconds)
sub nginx_t_bounded {
    my ($secs) = @_;
    $t->_write_conf;
    my $out = "$d/t.out";
    my $t0 = time;
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec $t->_nginx_cmd('-t') or _exit(127);
    }
    while (time < $t0 + $secs) {
        if (waitpid($pid, WNOHANG) > 0) {
            return ($? >> 8, $t->read_file($out), time - $t0);
        }
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return ('hung', $t->read_file($out), time - $t0);
}

$t->conf($conf);

###############################################################################
# 80,000 distinct keys: accepted at once

# stream upstreams are named, not checked, by "nginx -t"
my $many = "upstreams:\n" . join '', map { "  \"stream:u$_\": ~\n" } 1 .. $N;
$t->write_file('policy.yaml', $many);

my ($rc, $out, $secs) = nginx_t_bounded(10);
is($rc, 0, "a policy of $N keys passes nginx -t") or diag $out;
diag(sprintf "parse_linear: nginx -t with %d policy keys: %.2f s", $N, $secs);

###############################################################################
# the same with a duplicate at the very end: named by file:line:column

$t->write_file('policy.yaml', $many . "  \"stream:u17\": ~\n");

($rc, $out, $secs) = nginx_t_bounded(10);
isnt($rc, 'hung', 'a duplicate key at the end of 80,000 is found quickly');
isnt($rc, 0, 'and fails nginx -t');
my $line = $N + 2;
like($out, qr/policy \S+policy\.yaml:$line:3: duplicate key "stream:u17" in upstreams/,
     'naming the duplicate by file:line:column');
diag(sprintf "parse_linear: nginx -t with a duplicate after %d keys: "
     . "%.2f s", $N, $secs);

# a small mapping still names its first duplicate, in file order

$t->write_file('policy.yaml', <<'EOF');
upstreams:
  app:
    max_ttl: 1h
    allow: [failover]
    max_ttl: 2h
    allow: [pin]
EOF
($rc, $out) = nginx_t_bounded(10);
like($out, qr/policy\.yaml:5:5: duplicate key "max_ttl"/,
     'the first duplicate in file order is named');

# a large one too: with 40 keys (sorted, not compared pairwise)

$t->write_file('policy.yaml', "upstreams:\n"
    . join('', map { "  \"stream:u$_\": ~\n" } 1 .. 40)
    . "  \"stream:u30\": ~\n  \"stream:u5\": ~\n");
($rc, $out) = nginx_t_bounded(10);
like($out, qr/policy\.yaml:42:3: duplicate key "stream:u30"/,
     'in a large mapping too');

###############################################################################
# nesting 100,000 deep (libyaml's loader is quadratic in depth: 20 s and
# more): refused at once, naming where it goes deeper than 64

my $D = 100_000;
$t->write_file('policy.yaml', 'windows: ' . ('[' x $D) . (']' x $D) . "\n");
($rc, $out, $secs) = nginx_t_bounded(10);
isnt($rc, 'hung', "a policy nested $D deep is refused quickly");
isnt($rc, 0, '... by nginx -t');
like($out, qr/policy \S+policy\.yaml:1:73: nested deeper than 64/,
     '... naming file:line:column where it is too deep') or diag $out;
cmp_ok($secs, '<', 5, '... in well under a second or so');
diag(sprintf "parse_linear: nginx -t with a policy nested %d deep: %.2f s",
     $D, $secs);

# 64 deep is still read (and judged on its content)

$t->write_file('policy.yaml', 'windows: ' . ('[' x 62) . (']' x 62) . "\n");
($rc, $out) = nginx_t_bounded(10);
unlike($out, qr/nested deeper/, '64 deep is not refused for its depth');

###############################################################################
# a state file of 80,000 spent jtis: read at start, quickly

$t->write_file('policy.yaml', "upstreams:\n  app:\n    max_ttl: 1h\n");

my $exp = int(time) + 3600;
# jti-7 expires last: those are kept first when not all fit the zone
my $st = "version: 1\nversion_seq: 1\nflags: {}\njtis:\n"
    . join '', map { sprintf "  %s: %d\n", unpack('H*', "jti-$_"),
                             $exp + ($_ == 7 ? 60 : 0) }
                   1 .. $N;
$t->write_file("$dir/ha-optout.state", $st);
chown((getpwnam('nobody'))[2, 3], "$dir/ha-optout.state");

my $used = $t->token(jti => 'jti-7');
my $t0 = time;
$t->run;

my $r = $t->api(PUT => 'v1/flags/app', token => $used, timeout => 10,
                json => { failover => JSON::PP::false, ttl => '10m',
                          reason => 'spent before' });
my $took = time - $t0;
is($r->{status}, 401, 'a jti from a state file of 80,000 is spent')
    or diag $r->{body};
cmp_ok($took, '<', 10, 'the state file was read quickly');
diag(sprintf "parse_linear: start + first write with %d jtis in the "
     . "state file: %.2f s", $N, $took);

# the jtis restored leave room in the zone for new writes

$r = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '10m', reason => 'fresh token' });
is($r->{status}, 200, "a fresh token writes") or diag "$r->{status} $r->{body}";

###############################################################################
# a state file nested too deep: set aside like a corrupt one, HA fully on

$t->stop;
$t->write_file("$dir/ha-optout.state", "version: 1\nversion_seq: 1\n"
    . 'flags: ' . ('[' x $D) . (']' x $D) . "\n");
chown((getpwnam('nobody'))[2, 3], "$dir/ha-optout.state");
$t0 = time;
$t->run;
my @aside;
ok($t->wait_for(sub { @aside = glob("$dir/ha-optout.state.corrupt-*");
                      scalar @aside }, 5),
   'a state file nested 100,000 deep is renamed aside');
cmp_ok(time - $t0, '<', 5, '... quickly');
like($t->error_log, qr/\[alert\].*ha_optout: state file .*nested deeper than 64/,
     '... the alert says why') or diag $t->error_log;
$r = $t->get('/');
is($r->{status}, 200, 'nginx serves after it');

done_testing();
