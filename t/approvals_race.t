#!/usr/bin/perl

# The two-person rule (SPEC section 10) against a race: a PUT narrower than
# the approved API flag needs no approval of its own, because the flag it
# narrows was approved.  If that flag goes while the PUT waits for the
# writer lock (a DELETE acts at once, in memory, without it), the PUT
# suspends HA on its own: it must then ask for approval (202), never be
# applied with the old flag's approved_by.
#
# The writer lock is held by a stuck writer, as in t/fault_stuck_writer.t:
# the audit log is a FIFO whose reader stalls; a write of flags on another
# upstream blocks in write() holding the lock.  After a reload (the stuck
# worker stays, shutting down), the narrower PUT reaches a new worker and
# waits; the approved flag is deleted; then the FIFO is read again and the
# PUT gets the lock.

use strict;
use warnings;

use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX qw(_exit);
use Time::HiRes qw(sleep time);
use JSON::PP ();
use HaOptout::Test;
use HaOptout::StuckWriter;

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;
$t->state_dir;

my $sw = HaOptout::StuckWriter->new($t);

$t->write_file('policy.yaml', <<'EOF');
upstreams:
  app:
    approvers: 1
EOF

$t->conf(<<'EOF');
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.fifo;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream other {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }
    }
}
EOF

$t->run;

my $ALL = 'ha:read ha:write ha:approve';
sub as { (token_args => { sub => $_[0], scope => $ALL }) }

my @kids;

# whatever happens, the FIFO is read in the end, so that nginx can stop
END {
    $sw->finish if $sw;
    kill 'KILL', @kids if @kids;
}

###############################################################################
# an approved flag that suspends two things

my $r = $t->api(PUT => 'v1/flags/app', as('alice'), json => {
    failover => JSON::PP::false, replication => JSON::PP::false,
    ttl => '30m', reason => 'INC-1 two opt-outs' });
is($r->{status}, 202, 'the PUT waits for approval');
$r = $t->api(POST => "v1/approvals/$r->{json}{approval}{id}", as('bob'));
is($r->{status}, 200, 'approved by bob: applied');
is_deeply($r->{json}{approved_by}, ['bob'], '... with approved_by bob');

###############################################################################
# a writer stuck on the full audit FIFO, holding the writer lock

my ($n, $stuck) = $sw->fill('other', { failover => JSON::PP::false });
ok($stuck, "write $n of flags gets stuck on the full audit FIFO");

my ($new, $left) = $sw->reload;
ok(@$new >= 2 && @$left <= 1,
   'new workers serve while the stuck one holds the writer lock');

###############################################################################
# the narrower PUT (replication back), sent while the lock is held

my $body = $t->encode_json({ failover => JSON::PP::false, ttl => '10m',
                             reason => 'INC-1 replication back' });
my $tok = $t->token(sub => 'alice', scope => $ALL);
my $port = $t->port('http');
my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 2)
    or die "connect: $!\n";
$s->autoflush(1);
print $s "PUT /ha-optout/v1/flags/app HTTP/1.1\r\nHost: localhost\r\n"
         . "Authorization: Bearer $tok\r\nConnection: close\r\n"
         . "Content-Type: application/json\r\n"
         . "Content-Length: " . length($body) . "\r\n\r\n$body";
my $put0 = time;

# nginx has read the whole request (and so judged it, in the same event)
# once the server side of this connection has nothing left to read
sub unread {
    my $want = sprintf '%08X:%04X', 0x0100007F, $port;
    my $peer = sprintf ':%04X', $s->sockport;
    open my $f, '<', '/proc/net/tcp' or return undef;
    while (<$f>) {
        my @c = split;
        next unless @c > 4 && $c[1] eq $want && $c[2] =~ /\Q$peer\E$/;
        my ($tx, $rx) = split /:/, $c[4];
        return hex $rx;
    }
    return undef;
}
ok($t->wait_for(sub { defined(my $u = unread()) or return 0; $u == 0 }, 5),
   'nginx has read the narrower PUT, which waits for the writer lock');

# the approved flag goes meanwhile: a DELETE acts at once, in memory
my $del = fork // die "fork: $!\n";
if ($del == 0) {
    $t->api(DELETE => 'v1/flags/app', timeout => 8, as('carol'));
    _exit(0);
}
push @kids, $del;
ok($t->wait_for(sub {
       my $f = $t->api(GET => 'v1/flags/app', timeout => 1);
       $f->{status} == 200 && !defined $f->{json} }, 5),
   'the approved flag is deleted while the PUT waits');

# the writer is unstuck; the PUT gets the lock within its 2 s
$sw->drain;

my ($buf, $sel) = ('', IO::Select->new($s));
while (time - $put0 < 8 && $sel->can_read(8 - (time - $put0))) {
    last unless sysread($s, $buf, 65536, length $buf);
}
my ($status) = $buf =~ m{^HTTP/1\.1 (\d+)};
my ($json) = $buf =~ /\r\n\r\n(.*)\z/s;
$json = eval { JSON::PP::decode_json($json) } // {};
diag "the PUT took " . sprintf('%.2f', time - $put0) . " s";

isnt($status // 0, 200, 'the narrower PUT over no flag is not applied');
is($status, 202, '... it asks for approval of its own: 202')
    or diag $buf;
ok(!@{ $json->{approved_by} // [] },
   '... and carries no approved_by of the deleted flag');

my $f = $t->wait_for(sub {
    my $x = $t->api(GET => 'v1/flags/app', timeout => 2);
    $x->{status} == 200 ? $x : undef }, 5);
is($f && $f->{json}, undef, 'HA is not suspended on app without approval');

waitpid $del, 0;
@kids = ();

unlike($t->error_log, qr/exited on signal/, 'no worker crashed');

done_testing;
