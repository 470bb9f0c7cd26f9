#!/usr/bin/perl

# A hostile state directory (SPEC 8): what is planted there is never opened
# in place of nginx's own files.  A symbolic link at the old predictable
# temp name or at the state file, a FIFO as the state file or as the policy
# file: no worker overwrites another file, none blocks in open(), nginx -t
# does not hang, and each is named in a clear error.  The temp sweep
# removes only regular files.  A spent jti stays spent across a restart
# and a zone resize.

use strict;
use warnings;

use Test::More;
use POSIX qw(mkfifo WNOHANG _exit);
use Time::HiRes qw(time sleep);
use Errno qw(ESRCH);
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
my $dir = $t->state_dir;
my $d = $t->testdir;
my $state = "$dir/ha-optout.state";
my (undef, undef, $nobody, $nogroup) = getpwnam('nobody');

my $conf = <<'EOF';
http {
    ha_optout_zone ha_optout %%ZONE%%;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;
    %%POLICY%%

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
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

sub conf {
    my (%o) = @_;
    (my $c = $conf) =~ s/%%ZONE%%/$o{zone} \/\/ '1m'/e;
    $c =~ s/%%POLICY%%/$o{policy} ? "ha_optout_policy $o{policy};" : ''/e;
    return $c;
}

# runs a command with a deadline: (exit code or 'hung', output)
sub run_bounded {
    my ($secs, @cmd) = @_;
    my $out = "$d/bounded.out";
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec @cmd or _exit(127);
    }
    my $deadline = time + $secs;
    while (time < $deadline) {
        return ($? >> 8, $t->read_file($out)) if waitpid($pid, WNOHANG) > 0;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return ('hung', $t->read_file($out));
}

sub dead_pids {
    my ($n) = @_;
    my @p;
    for (my $p = 4_000_000; @p < $n && $p > 1000; $p -= 7) {
        push @p, $p if !kill(0, $p) && $!{ESRCH};
    }
    return @p;
}

sub victim {
    my ($name) = @_;
    my $v = $t->write_file("state/$name", "precious\n");
    chown $nobody, $nogroup, $v;
    return $v;
}

sub set_flag {
    my (%o) = @_;
    return $t->api(PUT => 'v1/flags/app', %o, json => {
        failover => JSON::PP::false, ttl => '10m', reason => 'hostile' });
}

###############################################################################
# the temp sweep: a regular temp file of a dead process goes; a symbolic
# link or a FIFO under such a name stays, and its target is not touched

my @dead = dead_pids(4);
my $v2 = victim('victim2');
my $stale = $t->write_file("$state.tmp.$dead[0].0123456789abcdef", "x");
symlink $v2, "$state.tmp.$dead[1].0123456789abcdef" or die "symlink: $!\n";
symlink $v2, "$state.tmp.$dead[2]" or die "symlink: $!\n";
mkfifo("$state.tmp.$dead[3]", 0600) or die "mkfifo: $!\n";

$t->conf(conf())->run;

ok($t->wait_for(sub { !-e $stale }, 5),
   'the sweep removes a temp file left by a dead process');
ok(-l "$state.tmp.$dead[1].0123456789abcdef",
   'a symbolic link under a temp name is left alone');
ok(-l "$state.tmp.$dead[2]", 'also under the old temp name');
ok(-p "$state.tmp.$dead[3]", 'a FIFO under a temp name is left alone');
is($t->read_file($v2), "precious\n", 'the target of the link is untouched');
unlink "$state.tmp.$dead[1].0123456789abcdef", "$state.tmp.$dead[2]",
       "$state.tmp.$dead[3]";

###############################################################################
# symbolic links at the old predictable temp name of every worker

my $v1 = victim('victim1');
my @workers = $t->worker_pids;
ok(@workers >= 1, 'workers found');
symlink $v1, "$state.tmp.$_" or die "symlink: $!\n" for @workers;

my $r = set_flag();
is($r->{status}, 200, 'a write with links planted at the old temp names');
is($t->read_file($v1), "precious\n",
   'the file the links point to is not overwritten');
ok(-f $state && !-l $state, 'the state file is a regular file');
like($t->read_file($state), qr/reason: "hostile"/,
     'and holds the flag');
ok(-l "$state.tmp.$_", "the planted link of worker $_ is still a link")
    for @workers;
unlink "$state.tmp.$_" for @workers;

my @tmp = grep { !/\.corrupt-/ } glob("$state.tmp.*");
is(scalar @tmp, 0, 'no temp file is left behind') or diag "@tmp";

###############################################################################
# a spent jti stays spent across a restart and a zone resize

my $used = $t->token;
$r = $t->api(PATCH => 'v1/flags/app', token => $used,
             json => { ttl => '20m' });
is($r->{status}, 200, 'a write spends its jti');
my $expires = $r->{json}{expires_at};

$t->stop;
$t->run;

$r = $t->api(PATCH => 'v1/flags/app', token => $used,
             json => { ttl => '30m' });
is($r->{status}, 401, 'the same token after a restart is refused');
like($r->{body}, qr/replayed jti/, 'as a replay');
is($t->api(GET => 'v1/flags/app')->{json}{expires_at}, $expires,
   'and changes nothing');

my $used2 = $t->token;
$r = $t->api(DELETE => 'v1/flags/app', token => $used2);
is($r->{status}, 200, 'a DELETE spends its jti');

$t->conf(conf(zone => '2m'))->reload;

$r = $t->api(PUT => 'v1/flags/app', token => $used2, json => {
    failover => JSON::PP::false, ttl => '10m', reason => 'replayed' });
is($r->{status}, 401, 'a token spent before a zone resize is refused after');
unlike($t->api(GET => 'v1/flags/app')->{body}, qr/replayed/,
       'and sets nothing');

###############################################################################
# a symbolic link as the state file: not read through, replaced on write

$t->stop;

my $elsewhere = $t->write_file('elsewhere.state', <<'EOF');
version: 1
version_seq: 7
flags:
  app:
    failover: false
    reason: "read through a link"
    actor: "mallory"
    version: 7
    set_at: 2026-01-01T00:00:00Z
    expires_at: null
EOF
unlink $state;
symlink $elsewhere, $state or die "symlink: $!\n";

$t->run;

ok($t->wait_for(sub {
    $t->error_log =~ /state file "\Q$state\E" cannot be read \(cannot open: it is a symbolic link/
}, 5), 'a link as the state file is refused with a clear error');
$r = $t->api(GET => 'v1/flags/app');
unlike($r->{body}, qr/read through a link/,
       'the flag in the file it points to does not act');

$r = set_flag();
is($r->{status}, 200, 'a write');
ok(-f $state && !-l $state, 'replaces the link by a regular file');
like($t->read_file($elsewhere), qr/read through a link/,
     'and leaves the file it pointed to alone');

###############################################################################
# a hard link as the state file: not read as nginx's own file

$t->stop;
unlink $state;
link $elsewhere, $state or die "link: $!\n";

$t->run;

ok($t->wait_for(sub {
    $t->error_log =~ /state file "\Q$state\E" cannot be read \(cannot open: it has other hard links/
}, 5), 'a hard link as the state file is refused with a clear error');
unlike($t->api(GET => 'v1/flags/app')->{body}, qr/read through a link/,
       'the flag in it does not act');
is(set_flag()->{status}, 200, 'a write');
like($t->read_file($elsewhere), qr/read through a link/,
     'leaves the other name of the file alone');

###############################################################################
# a FIFO as the state file: no worker blocks in open()

$t->stop;
unlink $state;
mkfifo($state, 0600) or die "mkfifo: $!\n";
chown $nobody, $nogroup, $state;

$t->conf(conf())->run;

ok($t->wait_for(sub {
    $t->error_log =~ /state file "\Q$state\E" cannot be read \(not a regular file: it is a FIFO/
}, 5), 'a FIFO as the state file is refused with a clear error');

my $ok = 0;
for (1 .. 6) {
    my $g = $t->api(GET => 'v1/flags/app', timeout => 3);
    $ok++ if $g->{status} == 200 || $g->{status} == 404;
}
is($ok, 6, 'every worker answers the API');

$r = set_flag(timeout => 5);
is($r->{status}, 200, 'a write answers');
ok(-f $state, 'and replaces the FIFO by the state file');

###############################################################################
# a FIFO as the policy file: nginx -t neither hangs nor passes

$t->stop;
my $fifo = "$d/policy.fifo";
mkfifo($fifo, 0600) or die "mkfifo: $!\n";
$t->conf(conf(policy => $fifo));
$t->_write_conf;

my ($rc, $out) = run_bounded(10, $t->_nginx_cmd('-t'));
isnt($rc, 'hung', 'nginx -t with a FIFO as the policy file does not hang');
isnt($rc, 0, 'and fails');
like($out, qr/policy \Q$fifo\E: not a regular file: it is a FIFO/,
     'naming the file and why');

done_testing();
