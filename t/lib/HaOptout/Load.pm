package HaOptout::Load;

# Helpers the fault tests (t/fault_*.t) share: a load generator (wrk, or a
# Perl client with the same summary lines), requests released at the same
# instant, and the audit log read and verified.  See the POD at the end.

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(_exit WNOHANG);
use Time::HiRes qw(sleep time);

our $VERSION = '0.1';

our @EXPORT_OK = qw(load_start load_stop load_wait send_at_once
                    audit_lines audit_verify);

$ENV{HA_OPTOUT_CTL} //= abs_path(dirname(__FILE__) . '/../../..')
                        . '/build/ha-optoutctl';

# ---------------------------------------------------------------- load

# wrk when installed (make deps), else a forked Perl client with the same
# summary lines; either runs until it gets SIGINT (load_stop) or for
# `seconds` (load_wait)

sub load_start {
    my ($t, %o) = @_;
    my $seconds = $o{seconds} // 120;
    my $timeout = $o{timeout} // 5;
    my $out = $t->testdir . '/' . ($o{out} // 'load.out');
    my $port = $t->port('http');
    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        # load_stop() ends it with SIGINT, which a test started in the
        # background or by CI inherits as ignored: give wrk the default
        $SIG{$_} = 'DEFAULT' for qw(INT QUIT TERM);
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        if (-x '/usr/bin/wrk' && !$ENV{HA_OPTOUT_NO_WRK}) {
            { exec 'wrk', '-t1', '-c8', "-d${seconds}s",
                   '--timeout', "${timeout}s", @{ $o{args} // [] },
                   "http://127.0.0.1:$port/load" }
            _exit(127);
        }
        _perl_load($port, $seconds, $timeout, $o{count_only});
        _exit(0);
    }

    sleep($o{settle} // 0.5);
    return { t => $t, pid => $pid, out => $out, start => time };
}

sub _perl_load {
    my ($port, $seconds, $timeout, $count_only) = @_;
    my ($n, $bad, $err, $stop) = (0, 0, 0, 0);
    local $SIG{INT} = sub { $stop = 1 };
    my $ua = HTTP::Tiny->new(keep_alive => 1, timeout => $timeout);
    my $t0 = time;
    while (!$stop && time - $t0 < $seconds) {
        my $r = $ua->get("http://127.0.0.1:$port/load");
        if ($r->{status} == 599) { $err++ }
        elsif ($r->{status} !~ /^2/) { $bad++ }
        $n++;
    }
    if ($count_only) {
        printf "  %d requests in %.2fs\n", $n, $seconds;
        return;
    }
    printf "  %d requests in %.2fs, 0MB read\n", $n, time - $t0;
    print "  Non-2xx or 3xx responses: $bad\n" if $bad;
    print "  Socket errors: connect 0, read 0, write 0, timeout $err\n" if $err;
}

sub load_stop {
    my ($l) = @_;
    kill 'INT', $l->{pid};
    my $deadline = time + 10;
    sleep 0.05 while !waitpid($l->{pid}, WNOHANG) && time < $deadline;
    kill 'KILL', $l->{pid} if kill 0, $l->{pid};
    return _parse($l);
}

sub load_wait {
    my ($l, $seconds) = @_;
    my $deadline = time + $seconds;
    sleep 0.1 while !waitpid($l->{pid}, WNOHANG) && time < $deadline;
    return _parse($l);
}

sub _parse {
    my ($l) = @_;
    my $text = $l->{t}->read_file($l->{out});
    my %r = (text => $text, requests => undef, non2xx => 0, socket => 0);
    $r{requests} = $1 if $text =~ /(\d+) requests in ([\d.]+)(\w+)/;
    $r{seconds} = $2 * ($3 eq 'ms' ? 0.001 : $3 eq 'm' ? 60 : 1)
        if defined $2;
    $r{non2xx} = $1 if $text =~ /Non-2xx or 3xx responses: (\d+)/;
    if ($text =~ /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/) {
        $r{socket} = $1 + $2 + $3 + $4;
    }
    return \%r;
}

# ---------------------------------------------------------------- at once

# one process per request, each with its own connection open and its
# request ready; they all send when the parent closes the pipe (SETTLE
# seconds after the last fork), then write down the status they got
sub send_at_once {
    my ($t, $tag, $settle, @requests) = @_;
    my $port = $t->port('http');

    pipe(my $rd, my $wr) or die "pipe: $!\n";
    my @kids;

    for my $i (1 .. @requests) {
        my $req = $requests[$i - 1];
        my $out = $t->testdir . "/$tag-$i";

        my $pid = fork // die "fork: $!\n";
        if ($pid == 0) {
            close $wr;
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                          Timeout => 5);
            sysread($rd, my $x, 1);         # EOF: go
            my $status = 'connect';
            if ($s) {
                local $SIG{ALRM} = sub { _exit(1) };
                alarm 10;
                print $s $req;
                local $/;
                my $resp = <$s> // '';
                $status = $resp =~ m{^HTTP/1\.1 (\d{3})} ? $1 : 'lost';
            }
            open my $fh, '>', $out;
            print $fh $status;
            close $fh;
            _exit(0);
        }
        push @kids, [ $pid, $out ];
    }

    close $rd;
    sleep $settle;
    close $wr;

    my %st;
    for my $k (@kids) {
        waitpid $k->[0], 0;
        $st{ $t->read_file($k->[1]) || 'none' }++;
    }
    return \%st;
}

# ---------------------------------------------------------------- audit

sub audit_lines {
    my ($t) = @_;
    my @a;
    for my $l (split /\n/, $t->read_file('audit.jsonl')) {
        my $j = eval { JSON::PP::decode_json($l) };
        push @a, $j // { action => 'UNPARSABLE' };
    }
    return @a;
}

sub audit_verify {
    my ($t) = @_;
    my $ctl = $ENV{HA_OPTOUT_CTL};
    my $out = `$ctl audit verify @{[ $t->testdir ]}/audit.jsonl 2>&1`;
    return ($? >> 8, $out);
}

1;

__END__

=head1 NAME

HaOptout::Load - what the fault tests (t/fault_*.t) share: a load
generator, requests released at one instant, the audit log

=head1 SYNOPSIS

    use HaOptout::Test;
    use HaOptout::Load qw(load_start load_stop audit_lines audit_verify);

    my $load = load_start($t);               # GET /load until stopped
    ...                                      # the fault
    my $w = load_stop($load);
    is($w->{socket}, 0, 'no socket error') or diag $w->{text};

    my ($rc, $out) = audit_verify($t);
    is($rc, 0, 'the audit chain verifies') or diag $out;

=head1 ENVIRONMENT

C<HA_OPTOUT_NO_WRK> (use the Perl client even when F</usr/bin/wrk> is
installed), C<HA_OPTOUT_CTL> (the ha-optoutctl binary; default
F<build/ha-optoutctl> of this repository).

=head1 FUNCTIONS

Each takes the C<HaOptout::Test> object (or what C<load_start> returned);
nothing is exported unless asked for.

=over

=item load_start(T, args => [], seconds => 120, timeout => 5, out => 'load.out', settle => 0.5, count_only => 0)

Forks a client that sends C<GET /load> to the port named C<http> over 8
connections: C<wrk -t1 -c8 -dSECONDSs --timeout TIMEOUTs ARGS> when
F</usr/bin/wrk> is there, else a Perl loop (HTTP::Tiny, keep-alive, ARGS
ignored) that prints wrk's summary lines: "N requests in S", and "Non-2xx
or 3xx responses" and "Socket errors" when there were any (with
C<count_only>, the request count alone).  Either stops on SIGINT or after
SECONDS.  Its output goes to F<OUT> in the test directory; returns after
SETTLE seconds.

=item load_stop(LOAD), load_wait(LOAD, SECONDS)

C<load_stop> sends SIGINT, waits (at most 10 s, then SIGKILL);
C<load_wait> waits at most SECONDS for the client to end by itself.  Both
return C<{text, requests, seconds, non2xx, socket}> read from its output:
C<requests> is undef when no summary line was printed, C<socket> the sum
of wrk's socket errors.

=item send_at_once(T, TAG, SETTLE, REQUESTS...)

One process per raw HTTP request, each on its own connection to the port
named C<http>; all send at the same instant, SETTLE seconds after the last
one was forked.  Returns the count of each status (C<connect>: no
connection, C<lost>: no status line, C<none>: nothing written down); the
statuses are kept in F<TAG-1>, F<TAG-2>, ... in the test directory.

=item audit_lines(T), audit_verify(T)

C<audit_lines>: the lines of F<audit.jsonl>, decoded (C<{action =>
'UNPARSABLE'}> for a line that is not JSON).  C<audit_verify>: (exit code,
output) of C<ha-optoutctl audit verify> on it.

=back

=cut
