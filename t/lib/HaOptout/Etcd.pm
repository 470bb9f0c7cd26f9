package HaOptout::Etcd;

# A real etcd cluster (Debian's etcd-server) for the fleet tests: 1 or 3
# members on 127.0.0.1 with claimed ports, data in a temporary directory,
# optionally TLS (its own CA, client certificates) and authentication.
# Stopped for sure at the end.  See the POD at the end.

use strict;
use warnings;

use File::Temp qw(tempdir);
use HTTP::Tiny;
use POSIX qw(_exit);
use Time::HiRes qw(sleep time);

use HaOptout::Daemon;
use HaOptout::Test;

our $VERSION = '0.1';

our $ETCD = $ENV{HA_OPTOUT_ETCD_BIN}
    || HaOptout::Daemon::find_program('etcd');
our $ETCDCTL = HaOptout::Daemon::find_program('etcdctl');


sub available { return defined $ETCD && defined $ETCDCTL }


sub new {
    my ($class, %o) = @_;

    die "etcd not installed (make deps)\n" unless available();

    my $dir = $o{dir} // tempdir('ha-optout-etcd-XXXXXX', TMPDIR => 1,
                                 CLEANUP => !$ENV{HA_OPTOUT_KEEP});
    my $n = $o{members} // 1;
    my $self = bless { dir => $dir, n => $n, tls => $o{tls} // 0,
                       auth => $o{auth}, members => [], owner => $$,
                       token => "t-$$-" . int(rand(1e9)) },
               $class;

    $self->_make_certs if $self->{tls};

    for my $i (0 .. $n - 1) {
        push @{ $self->{members} }, {
            name => "m$i",
            client => HaOptout::Test::_claim_port(),
            peer => HaOptout::Test::_claim_port(),
            data => "$dir/m$i.etcd",
            log => "$dir/m$i.log",
        };
    }

    $self->start_member($_) for 0 .. $n - 1;
    $self->wait_healthy($_) for 0 .. $n - 1;
    $self->_enable_auth if $self->{auth};

    return $self;
}


sub dir { $_[0]{dir} }
sub scheme { $_[0]{tls} ? 'https' : 'http' }


sub url {
    my ($self, $i) = @_;
    return $self->scheme . "://127.0.0.1:$self->{members}[$i]{client}";
}


# every member's client URL, comma separated, as --etcd takes them
sub urls {
    my ($self) = @_;
    return join ',', map { $self->url($_) } 0 .. $self->{n} - 1;
}


sub _cluster {
    my ($self) = @_;
    return join ',', map { "$_->{name}=http://127.0.0.1:$_->{peer}" }
                     @{ $self->{members} };
}


sub start_member {
    my ($self, $i) = @_;

    my $m = $self->{members}[$i];
    my $state = -d $m->{data} ? 'existing' : 'new';
    my $d = $self->{dir};

    my @cmd = ($ETCD, '--name', $m->{name}, '--data-dir', $m->{data},
        '--listen-client-urls', $self->url($i),
        '--advertise-client-urls', $self->url($i),
        '--listen-peer-urls', "http://127.0.0.1:$m->{peer}",
        '--initial-advertise-peer-urls', "http://127.0.0.1:$m->{peer}",
        '--initial-cluster', $self->_cluster,
        '--initial-cluster-state', $state,
        '--initial-cluster-token', $self->{token},
        '--heartbeat-interval', 50, '--election-timeout', 500,
        '--logger', 'zap', '--log-level', 'warn');

    push @cmd, '--cert-file', "$d/server.pem", '--key-file',
        "$d/server.key", '--trusted-ca-file', "$d/ca.pem",
        '--client-cert-auth'
        if $self->{tls};

    $m->{daemon} = HaOptout::Daemon->spawn(name => "etcd-$m->{name}",
                                           cmd => \@cmd, log => $m->{log});
    return $m->{daemon};
}


sub member_pid {
    my ($self, $i) = @_;
    my $dm = $self->{members}[$i]{daemon};
    return $dm ? $dm->pid : undef;
}


sub kill_member {
    my ($self, $i, $sig) = @_;
    my $m = $self->{members}[$i];
    return unless $m->{daemon};
    kill $sig // 'KILL', $m->{daemon}->pid;
    $m->{daemon}->stop;
    $m->{daemon} = undef;
}


sub stop_member { $_[0]->kill_member($_[1], 'TERM') }


sub stop {
    my ($self) = @_;
    return unless $self->{owner} == $$;
    for my $pid (@{ $self->{cli_pids} // [] }) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
    $self->{cli_pids} = [];
    $self->stop_member($_) for 0 .. $self->{n} - 1;
}


sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    $self->stop;
}


# runs etcdctl against the cluster; returns (exit code, output)
sub etcdctl {
    my ($self, @args) = @_;
    my %o = ref $args[0] eq 'HASH' ? %{ shift @args } : ();

    my @cmd = ($ETCDCTL, '--endpoints', $o{endpoints} // $self->urls,
               '--dial-timeout', '2s', '--command-timeout', '5s');
    push @cmd, '--cacert', "$self->{dir}/ca.pem", '--cert',
        "$self->{dir}/client.pem", '--key', "$self->{dir}/client.key"
        if $self->{tls};
    push @cmd, '--user', $o{user} // "root:$self->{root_password}"
        if $self->{auth_on} && !$o{noauth};

    my $out = "$self->{dir}/etcdctl.out";
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete @ENV{grep { /^ETCDCTL_/ } keys %ENV};
        $ENV{ETCDCTL_API} = 3;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec @cmd, @args or _exit(127);
    }
    waitpid $pid, 0;
    my $rc = $? >> 8;
    open my $fh, '<', $out or return ($rc, '');
    local $/;
    my $text = <$fh> // '';
    return ($rc, $text);
}


sub wait_healthy {
    my ($self, $i, $timeout) = @_;
    my $deadline = time + ($timeout // 30);
    my $m = $self->{members}[$i];

    while (time < $deadline) {
        my ($rc) = $self->etcdctl({ endpoints => $self->url($i),
                                    noauth => 1 },
                                  'endpoint', 'health');
        return 1 if $rc == 0;
        die "etcd member $m->{name} died:\n" . $m->{daemon}->log_tail
            unless $m->{daemon} && $m->{daemon}->alive;
        sleep 0.1;
    }

    die "etcd member $m->{name} not healthy in time:\n"
        . $m->{daemon}->log_tail;
}


# the cluster answers a linearizable read through one of the given members
sub wait_quorum {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // 20);
    while (time < $deadline) {
        my ($rc) = $self->etcdctl('get', '/ha-optout-probe');
        return 1 if $rc == 0;
        sleep 0.1;
    }
    return 0;
}


sub _openssl {
    my ($self, @args) = @_;
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/openssl.log";
        open STDERR, '>&', \*STDOUT;
        exec 'openssl', @args or _exit(127);
    }
    waitpid $pid, 0;
    die "openssl @args[0 .. 1] failed\n" if $?;
}


sub _make_certs {
    my ($self) = @_;
    my $d = $self->{dir};

    open my $fh, '>', "$d/san.cnf" or die "$d/san.cnf: $!\n";
    print $fh "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        . "extendedKeyUsage=serverAuth,clientAuth\n";
    close $fh;

    $self->_openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-days', 2, '-subj',
        '/CN=ha-optout test CA', '-keyout', "$d/ca.key", '-out',
        "$d/ca.pem");

    # etcd's JSON gateway refuses a client certificate with a CommonName
    # (etcd would take it for a user name it cannot pass on): the client
    # certificate names an organisation only
    for my $who (qw(server client)) {
        my $subj = $who eq 'client' ? '/O=ha-optout agents' : "/CN=$who";
        $self->_openssl('req', '-newkey', 'ec', '-pkeyopt',
            'ec_paramgen_curve:P-256', '-nodes', '-subj', $subj,
            '-keyout', "$d/$who.key", '-out', "$d/$who.csr");
        $self->_openssl('x509', '-req', '-in', "$d/$who.csr", '-CA',
            "$d/ca.pem", '-CAkey', "$d/ca.key", '-CAcreateserial', '-days',
            2, '-extfile', "$d/san.cnf", '-out', "$d/$who.pem");
    }
}


sub cacert { "$_[0]{dir}/ca.pem" }
sub client_cert { "$_[0]{dir}/client.pem" }
sub client_key { "$_[0]{dir}/client.key" }


# root, and a user limited to the prefix: auth => {user => NAME,
# password => PW, prefix => '/ha-optout/'}
sub _enable_auth {
    my ($self) = @_;
    my $a = $self->{auth};
    my $prefix = $a->{prefix} // '/ha-optout/';

    $self->{root_password} = 'root-' . int(rand(1e9));

    my @steps = (
        [ 'user', 'add', "root:$self->{root_password}" ],
        [ 'user', 'grant-role', 'root', 'root' ],
        [ 'role', 'add', 'ha-optout' ],
        [ 'role', 'grant-permission', 'ha-optout', '--prefix=true',
          'readwrite', $prefix ],
        [ 'user', 'add', "$a->{user}:$a->{password}" ],
        [ 'user', 'grant-role', $a->{user}, 'ha-optout' ],
        [ 'auth', 'enable' ],
    );

    for my $s (@steps) {
        my ($rc, $out) = $self->etcdctl(@$s);
        die "etcdctl @$s: $out\n" if $rc;
    }

    $self->{auth_on} = 1;
}


# ---------------------------------------------------------------- the CLI

our $CLI = $ENV{HA_OPTOUT_CLI}
    // HaOptout::Test::module_path() =~ s{[^/]+$}{ha-optoutctl}r;


sub _cli_child {
    my ($out, $err, @args) = @_;
    delete @ENV{grep { /^HA_OPTOUT_/ && !/^HA_OPTOUT_(KEEP|CLI)$/ }
                keys %ENV};
    delete @ENV{qw(http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
                   all_proxy ALL_PROXY)};
    open STDIN, '<', '/dev/null';
    open STDOUT, '>>', $out;
    open STDERR, '>>', $err;
    exec $CLI, @args or _exit(127);
}


# runs ha-optoutctl ARGS; returns (exit code, stdout, stderr)
sub cli {
    my ($self, @args) = @_;
    my $n = ++$self->{cli_n};
    my ($out, $err) = ("$self->{dir}/cli$n.out", "$self->{dir}/cli$n.err");
    my $pid = fork // die "fork: $!\n";
    _cli_child($out, $err, @args) if $pid == 0;
    waitpid $pid, 0;
    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    return ($rc, _slurp($out), _slurp($err));
}


# starts ha-optoutctl ARGS in the background (output appended to LOG.out,
# LOG.err in the etcd dir); returns its pid
sub cli_start {
    my ($self, $log, @args) = @_;
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        POSIX::setsid();
        _cli_child("$self->{dir}/$log.out", "$self->{dir}/$log.err", @args);
    }
    push @{ $self->{cli_pids} }, $pid;
    return $pid;
}


# waits for a pid; its exit code (128+N for signal N), undef on timeout
sub cli_wait {
    my ($self, $pid, $timeout) = @_;
    my $deadline = time + ($timeout // 20);
    while (time < $deadline) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            $self->{cli_pids} = [ grep { $_ != $pid } @{ $self->{cli_pids} } ];
            return $? & 127 ? 128 + ($? & 127) : $? >> 8;
        }
        sleep 0.02;
    }
    return undef;
}


sub cli_stop {
    my ($self, $pid, $sig) = @_;
    kill $sig // 'TERM', $pid;
    my $rc = $self->cli_wait($pid, 10);
    unless (defined $rc) {
        kill 'KILL', $pid;
        $rc = $self->cli_wait($pid, 5);
    }
    return $rc;
}


sub log_of {
    my ($self, $name) = @_;
    return _slurp("$self->{dir}/$name");
}


sub _slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    my $t = <$fh>;
    return $t // '';
}


# the value at KEY as etcd holds it (undef when absent), via etcdctl
sub get {
    my ($self, $key) = @_;
    my ($rc, $out) = $self->etcdctl('get', $key, '--print-value-only');
    return undef if $rc || $out eq '';
    chomp $out;
    return $out;
}


# waits until CODE is true or TIMEOUT seconds pass; the last value
sub wait_for {
    my ($self, $code, $timeout) = @_;
    my $deadline = time + ($timeout // 5);
    while (1) {
        my $v = $code->();
        return $v if $v || time > $deadline;
        sleep 0.05;
    }
}

1;

__END__

=head1 NAME

HaOptout::Etcd - a real etcd cluster on 127.0.0.1 for the fleet tests

=head1 SYNOPSIS

    my $etcd = HaOptout::Etcd->new(members => 3);
    system('ha-optoutctl', 'set', '--etcd', $etcd->urls, ...);
    my ($rc, $out) = $etcd->etcdctl('get', '--prefix', '/ha-optout/');
    $etcd->kill_member(0);          # SIGKILL
    $etcd->start_member(0);         # again, with its data
    $etcd->stop;                    # also at the end

=head1 METHODS

C<available> (etcd and etcdctl installed), C<new(members => 1|3,
tls => 1, auth => {user, password, prefix})>, C<urls>, C<url(I)>,
C<start_member(I)>, C<kill_member(I, SIG)>, C<stop_member(I)>, C<stop>,
C<etcdctl(ARGS)> (as root when auth is on; C<{user => 'u:p'}> or
C<{noauth => 1}> as a first argument), C<wait_healthy(I)>,
C<wait_quorum>, C<cacert>, C<client_cert>, C<client_key>.  Ports come
from C<HaOptout::Test>'s claimed ports; members are started with
C<HaOptout::Daemon> (own session, stdin from /dev/null), so a test runs
without a terminal and with SIGINT ignored.

=cut
