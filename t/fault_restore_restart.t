#!/usr/bin/perl

# Fault test (SPEC section 8, docs/state-and-policy.md): a restore that
# could not be saved must not come back after a restart.  The workers run
# as nobody; the state directory is made read-only (0500, as root: the
# workers cannot create the temporary file any more).
#
# - the state file itself is still writable: the DELETE is saved by the
#   in-place rewrite of the existing file; after "nginx -s stop" and a
#   start the flag does not act (no X-HA-Optout, GET null);
# - the state file is not writable either (0400): the DELETE answers 200
#   "persisted": false, and the worker that exits at "nginx -s stop" tries
#   once more and logs an alert that the restore is lost at the next start.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;

plan skip_all => 'needs root (workers run as nobody)' if $> != 0;

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $dir = $t->state_dir;
my $state = "$dir/ha-optout.state";

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            ha_optout_header on;
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

END { chmod 0755, $dir if defined $dir; chmod 0600, $state if defined $state }

sub flag_of {
    my $r = $t->api(GET => 'v1/flags/app');
    return $r->{is_json} ? $r->{json} : 'not json';
}

# as "nginx -s stop" does: SIGTERM to the master, waited for
sub nginx_stop {
    my $pid = $t->master_pid;
    kill 'TERM', $pid;
    my $deadline = time + 10;
    sleep 0.05 while kill(0, $pid) && time < $deadline;
    ok(!kill(0, $pid), 'nginx -s stop: the master is gone');
    unlink $t->testdir . '/nginx.pid';
    $t->{running} = 0;
}

sub case {
    my ($name, $file_mode) = @_;

    chmod 0755, $dir;
    chmod 0600, $state if -e $state;

    $t->run;

    my $set = $t->api(PUT => 'v1/flags/app', json => {
        failover => JSON::PP::false, ttl => '10m',
        reason => "$name: suspended" });
    is($set->{status}, 200, "$name: a flag is set");
    ok($t->get('/')->{headers}{'x-ha-optout'}, "$name: it acts");

    chmod 0500, $dir;
    chmod $file_mode, $state if defined $file_mode;

    my $log_before = length $t->error_log;
    my $del = $t->api(DELETE => 'v1/flags/app');
    is($del->{status}, 200, "$name: the DELETE answers 200");
    ok(!defined flag_of(), "$name: the flag is gone at once");

    nginx_stop();

    chmod 0755, $dir;        # the start must read (and may set aside) it

    return ($del, substr($t->error_log, $log_before));
}


###############################################################################
# the directory is read-only, the state file writable: saved in place

my ($del, $log) = case('dir 0500');
ok($del->{is_json} && !defined $del->{json},
   'dir 0500: the restore is saved (in place): the answer is null, no '
   . '"persisted": false') or diag explain $del;
like($log, qr/rewritten in place/, 'dir 0500: error_log says it was rewritten in place');
unlike($t->read_file($state), qr/suspended/,
       'dir 0500: the state file no longer holds the flag');

$t->run;
ok(!defined flag_of(), 'dir 0500: after stop and start, GET is null');
ok(!$t->get('/')->{headers}{'x-ha-optout'},
   'dir 0500: after stop and start, no X-HA-Optout');
nginx_stop();


###############################################################################
# the state file is not writable either: persisted false, alert at stop

($del, $log) = case('dir 0500 + file 0400', 0400);
is_deeply($del->{json}, { acting => undef, persisted => JSON::PP::false },
          'file 0400: the DELETE answers "persisted": false')
    or diag explain $del;
like($t->error_log, qr/\[alert\].*cannot be saved in state file/,
     'file 0400: error_log alerts that the restore cannot be saved');
like($log, qr/\[alert\].*nginx stops with a restore of HA that state file "\Q$state\E" does not hold/,
     'file 0400: at stop, error_log alerts that the restore will be lost');

done_testing;
