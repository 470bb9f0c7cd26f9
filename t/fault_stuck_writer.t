#!/usr/bin/perl

# Fault test (docs/reliability.md, "Hostile inputs"): one writer of flags
# is stuck and must not stop anything else.  The audit log is a FIFO whose
# reader stalls (a log shipper that hangs): once its 64 KiB are full, the
# worker writing the next line blocks in write() holding the writer lock.
# It used to hold the zone's mutex there too, and every other writer (the
# API, worker 0's timer) spun on the lock inside its event loop: nginx
# stopped answering, proxying included, and a reload could not even start
# new workers.
#
# After a reload (the stuck worker stays, shutting down), while it is
# stuck, this measures proxied requests through the module in the new
# workers (including the one where an API write waits for the lock) and
# checks that
# - a PUT gives up after the bounded wait: 503 WriterBusy, Retry-After;
# - a DELETE restores HA at once (traffic is round robin again) and is
#   answered 200 "persisted": false after the same wait;
# - once the FIFO is read again, the stuck worker finishes and exits, and
#   worker 0's timer saves the restore (state file) and writes its line.

use strict;
use warnings;

use Test::More;
use POSIX qw(_exit);
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::StuckWriter;

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
$t->state_dir;

my $dir = $t->testdir;
my $state = "$dir/state/ha-optout.state";
my $sw = HaOptout::StuckWriter->new($t);

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.fifo;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream other {
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

        add_header X-Worker $pid always;

        location / {
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

$t->run;

my $b1 = '127.0.0.1:' . $t->port('b1');

# whatever happens, the FIFO is read in the end, so that nginx can stop
END { $sw->finish if $sw }

###############################################################################
# fill the FIFO until a write of flags gets stuck

my ($n, $stuck) = $sw->fill('app', { pin => $b1 });
ok($stuck, "write $n of flags gets stuck on the full audit FIFO");

# a reload while it is stuck: new workers must start
my ($new, $left) = $sw->reload;
my @new = @$new;
is(scalar @new, 2, 'a reload starts two new workers while a writer is stuck');
my @left = @$left;
is(scalar @left, 1, 'the stuck worker is the one old worker left');

###############################################################################
# while it is stuck: proxied requests, a PUT and a DELETE

sub timed {
    my ($file, $method, $path, %o) = @_;
    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;
    my $t0 = time;
    my $r = $t->api($method => $path, timeout => 8, %o);
    open my $f, '>', $file or _exit(1);
    print $f $t->encode_json({ status => $r->{status}, took => time - $t0,
                               json => $r->{json},
                               retry => $r->{headers}{'retry-after'},
                               worker => $r->{headers}{'x-worker'},
                               start => $t0 });
    close $f;
    _exit(0);
}

my $wait0 = time;
my @kids = (timed("$dir/put.json", PUT => 'v1/flags/other', json => {
                failover => JSON::PP::false, ttl => '5m', reason => 'stuck' }),
            timed("$dir/del.json", DELETE => 'v1/flags/app'));

my (@lat, %by_worker, @bad);
my $t0 = time;
while (time - $t0 < 3.5) {
    my $s = time;
    my $r = $t->http(GET => "/p/" . scalar @lat, timeout => 3);
    my $took = time - $s;
    push @lat, $took;
    push @bad, "$r->{status} after ${took}s" unless $r->{status} == 200;
    push @{ $by_worker{ $r->{headers}{'x-worker'} // '-' } }, [ $s, $took ];
    sleep 0.01;
}
waitpid $_, 0 for @kids;

sub slurp_json { my $x = eval { JSON::PP::decode_json($t->read_file($_[0])) };
                 $x // {} }
my $put = slurp_json('put.json');
my $del = slurp_json('del.json');

@lat = sort { $a <=> $b } @lat;
my $p99 = $lat[int(0.99 * $#lat)] // 99;
my $max = $lat[-1] // 99;

is(scalar @bad, 0, sprintf('%d proxied requests during the stuck write all '
                           . 'answered 200', scalar @lat)) or diag "@bad";
ok($max < 1, sprintf 'no proxied request waited for the writer (max %.3f s)',
   $max);

is($put->{status}, 503, 'the PUT gives up: 503');
is($put->{json}{error}{code}, 'WriterBusy', 'as JSON WriterBusy');
ok(defined $put->{retry}, 'with Retry-After');
ok(($put->{took} // 99) < 4, sprintf 'after the bounded wait (%.2f s)',
   $put->{took} // 99);

is($del->{status}, 200, 'the DELETE is answered 200');
is($del->{json}{persisted}, JSON::PP::false, 'with "persisted": false');

# requests answered by the worker where the PUT waited, while it waited
my $same = grep { $_->[0] > $put->{start} + 0.1
                  && $_->[0] + $_->[1] < $put->{start} + $put->{took} - 0.1 }
           @{ $by_worker{ $put->{worker} // '' } // [] };
ok($same > 0, "$same proxied requests answered by the worker where the PUT "
              . 'waited, during its wait');

$t->reset_hits;
my @r = $t->spray(8, sub { "/after/$_[0]" }, timeout => 3);
ok((grep { $_ eq '200 b2' } @r) && (grep { $_ eq '200 b1' } @r),
   'the DELETE acts at once: both servers answer again') or diag "@r";

###############################################################################
# the FIFO is read again: the stuck worker finishes, the restore is saved

$sw->drain;

ok($t->wait_for(sub { !kill 0, $left[0] }, 10),
   'the stuck worker finishes and exits') if @left;
ok($t->wait_for(sub { $t->read_file($state) !~ /reason: "\d+x/ }, 15),
   'worker 0 saves the restore in the state file');
ok($t->wait_for(sub { $t->read_file('audit.out') =~ /"action": "clear"/ }, 15),
   'and writes its audit line');

diag(sprintf 'fault_stuck_writer: writer stuck after %d lines; %d proxied '
     . 'requests while stuck: median %.1f ms, p99 %.1f ms, max %.1f ms; PUT '
     . '503 after %.2f s, DELETE 200 after %.2f s; %d requests in the '
     . 'waiting worker', $n, scalar @lat, 1000 * $lat[$#lat / 2],
     1000 * $p99, 1000 * $max, $put->{took} // -1, $del->{took} // -1,
     $same);

done_testing();
