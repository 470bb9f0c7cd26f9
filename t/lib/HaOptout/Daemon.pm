package HaOptout::Daemon;

# Helpers for tests that run programs beside nginx (Prometheus,
# Alertmanager, openssl s_server...): start one in its own session with
# its output in a log file, wait until it answers, stop it for sure; and a
# webhook sink that records what it is sent.  See the POD at the end.

use strict;
use warnings;

use Fcntl qw(:flock);
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX qw(_exit setsid);
use Time::HiRes qw(sleep time);

our $VERSION = '0.1';

my @RUNNING;            # [pid, owner pid, name]


sub find_program {
    my (@names) = @_;
    for my $n (@names) {
        return $n if $n =~ m{/} && -x $n;
        for my $d (split(/:/, $ENV{PATH} // ''), '/usr/bin', '/usr/sbin') {
            return "$d/$n" if -x "$d/$n";
        }
    }
    return undef;
}


sub spawn {
    my ($class, %o) = @_;

    my $log = $o{log} // die "spawn: no log\n";
    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        setsid();
        chdir $o{dir} if defined $o{dir};

        # everything here talks to 127.0.0.1: never through a proxy
        delete @ENV{qw(http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
                       all_proxy ALL_PROXY)};
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        exec @{ $o{cmd} } or _exit(127);
    }

    my $self = bless { pid => $pid, name => $o{name} // $o{cmd}[0],
                       log => $log, owner => $$ }, $class;
    push @RUNNING, [$pid, $$, $self->{name}];
    return $self;
}


sub pid { $_[0]{pid} }


sub alive {
    my ($self) = @_;
    return 0 unless $self->{pid};
    return waitpid($self->{pid}, POSIX::WNOHANG()) == 0;
}


sub log_text {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return '';
    local $/;
    my $t = <$fh> // '';
    return $t;
}


sub log_tail {
    my ($self, $n) = @_;
    my @l = split /\n/, $self->log_text;
    @l = @l[-($n // 15) .. -1] if @l > ($n // 15);
    return join '', map { "  $self->{name}: $_\n" } @l;
}


# GET http://127.0.0.1:PORT/PATH until it answers 2xx, the process dies
# or TIMEOUT passes; returns true when it answered
sub wait_http {
    my ($self, $url, $timeout) = @_;
    my $ua = HTTP::Tiny->new(timeout => 2, proxy => undef,
                             http_proxy => undef, https_proxy => undef);
    my $deadline = time + ($timeout // 20);

    while (time < $deadline) {
        return 1 if $ua->get($url)->{success};
        return 0 unless $self->alive;
        sleep 0.1;
    }

    return 0;
}


sub _stop_pid {
    my ($pid) = @_;

    for my $sig (qw(TERM KILL)) {
        kill $sig, $pid;
        my $deadline = time + ($sig eq 'TERM' ? 10 : 2);
        while (time < $deadline) {
            my $w = waitpid $pid, POSIX::WNOHANG();
            return if $w == $pid || $w < 0;
            sleep 0.05;
        }
    }
}


sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    _stop_pid($self->{pid});
    @RUNNING = grep { $_->[0] != $self->{pid} } @RUNNING;
    $self->{pid} = undef;
}


sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    $self->stop;
}


END {
    local $?;
    for my $r (@RUNNING) {
        _stop_pid($r->[0]) if $r->[1] == $$;
    }
}


# ---------------------------------------------------------------- webhook

# A forked HTTP server on 127.0.0.1:PORT that answers every request 200
# and appends "UNIX_TIME<TAB>METHOD<TAB>PATH<TAB>BODY" (the body on one
# line: newlines as \n) to FILE, stamped when the request was read.

sub webhook {
    my ($class, %o) = @_;

    my $file = $o{file} // die "webhook: no file\n";
    open my $fh, '>', $file or die "$file: $!\n";
    close $fh;

    my $ls = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$o{port}",
                                   Proto => 'tcp', Listen => 16,
                                   ReuseAddr => 1)
        or die "webhook: listen 127.0.0.1:$o{port}: $!\n";

    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        setsid();
        $SIG{TERM} = sub { _exit(0) };
        $SIG{ALRM} = sub { _exit(0) };

        # one request at a time is all Alertmanager needs, and keeps the
        # records in order
        while (1) {
            my $c = $ls->accept or next;
            eval { _hook_serve($c, $file) };
            close $c;
        }
    }

    close $ls;

    my $self = bless { pid => $pid, name => 'webhook', log => $file,
                       owner => $$ }, $class;
    push @RUNNING, [$pid, $$, 'webhook'];
    return $self;
}


sub _hook_serve {
    my ($c, $file) = @_;

    $c->autoflush(1);
    alarm 10;

    my $line = <$c> // return;
    my ($method, $path) = split / /, $line;

    my %h;
    while (my $l = <$c>) {
        $l =~ s/\r?\n\z//;
        last if $l eq '';
        my ($k, $v) = split /:\s*/, $l, 2;
        $h{lc $k} = $v // '';
    }

    my $body = '';
    my $len = $h{'content-length'} // 0;
    while (length $body < $len) {
        my $n = read($c, $body, $len - length $body, length $body);
        last unless $n;
    }

    my $now = time;
    (my $flat = $body) =~ s/\\/\\\\/g;
    $flat =~ s/\n/\\n/g;

    if (open my $fh, '>>', $file) {
        flock $fh, LOCK_EX;
        printf $fh "%.3f\t%s\t%s\t%s\n", $now, $method, $path, $flat;
        close $fh;
    }

    print $c "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
        . "Connection: close\r\n\r\n";
    alarm 0;
}


# what the webhook received: a list of {time, method, path, body}
sub received {
    my ($self) = @_;
    my @r;

    for my $l (split /\n/, $self->log_text) {
        my ($t, $m, $p, $b) = split /\t/, $l, 4;
        next unless defined $b;
        $b =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
        push @r, { time => $t, method => $m, path => $p, body => $b };
    }

    return @r;
}


1;

__END__

=head1 NAME

HaOptout::Daemon - run a helper program or a webhook sink beside the
nginx of a test, and stop it however the test ends

=head1 SYNOPSIS

    my $prom = HaOptout::Daemon->find_program('prometheus')
        or plan skip_all => 'no prometheus';
    my $p = HaOptout::Daemon->spawn(name => 'prometheus',
        cmd => [$prom, "--config.file=$dir/p.yml", ...],
        log => "$dir/prometheus.log");
    $p->wait_http("http://127.0.0.1:$port/-/ready", 30)
        or die "prometheus did not start\n" . $p->log_tail;

    my $hook = HaOptout::Daemon->webhook(port => $port,
                                         file => "$dir/webhook.log");
    my @got = $hook->received;     # ({time, method, path, body}, ...)

=head1 METHODS

=over

=item find_program(NAMES...)

The first of NAMES found on C<PATH> (or F</usr/bin>, F</usr/sbin>), or
undef.

=item spawn(cmd => [...], log => FILE, name => NAME, dir => DIR)

Forks, starts a new session, sends stdout and stderr to FILE, execs.

=item wait_http(URL, TIMEOUT), alive, log_text, log_tail(N), pid

=item stop

TERM, then KILL after 10 s; also done when the object goes away and at
END, only by the process that started it.

=item webhook(port => PORT, file => FILE), received

A one-connection-at-a-time HTTP server that answers 200 to everything and
records each request with the time it was read.

=back

=cut
