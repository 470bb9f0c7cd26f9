package HaOptout::StuckWriter;

# A writer of flags stuck holding the writer lock, for the tests that need
# one (t/fault_stuck_writer.t, t/approvals_race.t): the audit log is a
# FIFO, audit.fifo in the test dir, whose reader stalls (a log shipper
# that hangs).  Once its 64 KiB are full, the worker writing the next line
# blocks in write() with the lock held.
#
#   my $sw = HaOptout::StuckWriter->new($t);    # before $t->run
#   END { $sw->finish if $sw }                  # drain, stop nginx
#   ... ha_optout_audit_log %%TESTDIR%%/audit.fifo; ... $t->run;
#   my ($n, $stuck) = $sw->fill('other', { failover => JSON::PP::false });
#   my ($new, $left) = $sw->reload;             # new workers, old left
#   $sw->drain;                                 # unstuck: read the FIFO

use strict;
use warnings;

use Fcntl qw(O_RDONLY O_NONBLOCK F_GETFL F_SETFL);
use POSIX qw(mkfifo _exit);
use Time::HiRes qw(sleep);

our $VERSION = '0.1';


# the FIFO and a reader that never reads (so that nginx's open() for
# writing does not block)
sub new {
    my ($class, $t) = @_;

    my $dir = $t->testdir;
    my $fifo = "$dir/audit.fifo";
    mkfifo($fifo, 0640) or die "mkfifo: $!\n";
    sysopen(my $rd, $fifo, O_RDONLY | O_NONBLOCK) or die "$fifo: $!\n";

    return bless { t => $t, dir => $dir, rd => $rd, drainer => undef },
                 $class;
}


# writes of flags on UPSTREAM (JSON plus ttl 10m and a 200-byte reason)
# until one gets stuck (no answer within 1 s): answers how many writes it
# took and whether one got stuck (dies on a write refused)
sub fill {
    my ($self, $upstream, $json) = @_;

    my $reason = 'x' x 200;
    my ($n, $stuck) = (0, 0);

    while ($n++ < 200) {
        my $r = $self->{t}->api(PUT => "v1/flags/$upstream", timeout => 1,
                                json => { %$json, ttl => '10m',
                                          reason => sprintf('%03d%s', $n,
                                                            $reason) });
        if ($r->{status} == 599) { $stuck = 1; last }
        die "PUT $n: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    }

    return ($n, $stuck);
}


# a reload while it is stuck: answers the new workers and the old ones
# left, once there are two new ones and at most one old one (the stuck
# one), or what there is after 10 s each
sub reload {
    my ($self) = @_;

    my $t = $self->{t};
    my %old = map { $_ => 1 } $t->worker_pids;

    $t->_write_conf;
    $t->_system($t->_nginx_cmd('-s', 'reload'));

    my $new = $t->wait_for(sub {
        my @w = grep { !$old{$_} } $t->worker_pids;
        @w >= 2 ? \@w : undef }, 10);
    $new //= [ grep { !$old{$_} } $t->worker_pids ];

    my $left = $t->wait_for(sub {
        my @w = grep { $old{$_} } $t->worker_pids;
        @w <= 1 ? \@w : undef }, 10);
    $left //= [ grep { $old{$_} } $t->worker_pids ];

    return ($new, $left);
}


# the FIFO is read again from now on, into audit.out in the test dir (a
# child that reads until it is killed)
sub drain {
    my ($self) = @_;

    return if $self->{drainer};

    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        my $rd = $self->{rd};
        my $fl = fcntl($rd, F_GETFL, 0);
        fcntl($rd, F_SETFL, $fl & ~O_NONBLOCK);
        open my $out, '>>', "$self->{dir}/audit.out" or _exit(1);
        $out->autoflush(1);
        while (1) {
            my $n = sysread($rd, my $buf, 65536);
            if (!defined $n || $n == 0) { sleep 0.05; next }
            print $out $buf;
        }
    }

    $self->{drainer} = $pid;
}


# whatever happened, the FIFO is read in the end, so that nginx can stop;
# then the reader goes
sub finish {
    my ($self) = @_;

    $self->drain;
    $self->{t}->stop if $self->{t};
    kill 'KILL', $self->{drainer} if $self->{drainer};
    $self->{drainer} = undef;
}


1;
