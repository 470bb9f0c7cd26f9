package HaOptout::Test;

# Test harness for ngx_http_ha_optout_module: one nginx, a few tiny backends,
# signed admin calls.  See the POD at the end.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256);
use Fcntl qw(:flock O_CREAT O_EXCL O_WRONLY);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64url);
use POSIX qw(:sys_wait_h _exit setsid);
use Scalar::Util qw(weaken);
use Time::HiRes qw(sleep time);

our $VERSION = '0.1';

my $ROOT = abs_path(dirname(__FILE__) . '/../../..');

our $NGINX = $ENV{HA_OPTOUT_NGINX} || '/usr/sbin/nginx';
our $MODULE = $ENV{HA_OPTOUT_MODULE}
    || "$ROOT/build/ngx_http_ha_optout_module.so";
our $STREAM_MODULE = $ENV{HA_OPTOUT_STREAM_MODULE}
    || "$ROOT/build/ngx_stream_ha_optout_module.so";
our $STREAM_CORE = _stream_core();

# The stream core to load before the stream twin: Debian builds it as a
# module (--with-stream=dynamic), nginx.org's --with-stream compiles it in
# (nothing to load).  HA_OPTOUT_STREAM_CORE overrides ("" loads nothing).
sub _stream_core {
    return $ENV{HA_OPTOUT_STREAM_CORE} if defined $ENV{HA_OPTOUT_STREAM_CORE};

    my $v = `$NGINX -V 2>&1`;
    return '' unless $v =~ /--with-stream=dynamic\b/;

    my $dir = $v =~ /--modules-path=(\S+)/ ? $1
            : $v =~ /--prefix=(\S+)/ ? "$1/modules"
            : '/usr/lib/nginx/modules';
    return "$dir/ngx_stream_module.so";
}


# nginx_version of the binary under test, e.g. 1031004 for 1.31.4
our $NGINX_VERSION_NUM = do {
    my $v = `$NGINX -v 2>&1`;
    $v =~ m{nginx/(\d+)\.(\d+)\.(\d+)} ? $1 * 1000000 + $2 * 1000 + $3 : 0;
};

sub nginx_version { $NGINX_VERSION_NUM }

# true when the nginx under test is at least VERSION ("1.29.7")
sub nginx_at_least {
    my (undef, $want) = @_;
    my ($a, $b, $c) = split /\./, $want;
    return $NGINX_VERSION_NUM >= $a * 1000000 + $b * 1000 + ($c // 0);
}


my $PORT_DIR = '/tmp/ha-optout-test-ports';
my %CLAIMED;            # ports this process reserved: port => 1
my @INSTANCES;          # weak refs, for the END block

my $JSON = JSON::PP->new->canonical->allow_nonref;

my %REASON = (200 => 'OK', 201 => 'Created', 204 => 'No Content',
              400 => 'Bad Request', 404 => 'Not Found',
              500 => 'Internal Server Error', 502 => 'Bad Gateway',
              503 => 'Service Unavailable', 504 => 'Gateway Timeout');


sub new {
    my ($class, %o) = @_;

    die "ha_optout module not built: $MODULE (run 'make module')\n"
        unless -f $MODULE;

    my $dir = tempdir('ha-optout-t-XXXXXX', TMPDIR => 1,
                      CLEANUP => !$ENV{HA_OPTOUT_KEEP});
    chmod 0755, $dir;
    diag("test dir kept: $dir") if $ENV{HA_OPTOUT_KEEP};

    my $self = bless {
        dir       => $dir,
        owner     => $$,
        ports     => {},
        backends  => {},
        token_defaults => {},
        workers   => $o{workers} // 2,
    }, $class;

    push @INSTANCES, $self;
    weaken($INSTANCES[-1]);

    # killed by a timeout or ^C: still stop nginx and the backends (END)
    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub { exit 128 } unless $SIG{$sig};
    }

    return $self;
}


sub testdir { $_[0]{dir} }
sub module_path { $MODULE }


# ---------------------------------------------------------------- ports

sub _claim_port {
    mkdir $PORT_DIR, 0777;

    for (1 .. 200) {
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'tcp',
                                      Listen => 1, ReuseAddr => 1)
            or next;
        my $port = $s->sockport;
        close $s;

        # another test process may have been handed the same port a moment
        # ago: a file per port, created exclusively, settles who owns it
        my $f = "$PORT_DIR/$port";

        if (open my $fh, '<', $f) {
            my $pid = <$fh> // '';
            close $fh;
            next if $pid =~ /^(\d+)/ && kill(0, $1);
            unlink $f;
        }

        sysopen(my $fh, $f, O_CREAT | O_EXCL | O_WRONLY) or next;
        print $fh "$$\n";
        close $fh;

        $CLAIMED{$port} = 1;
        return $port;
    }

    die "no free port\n";
}


sub port {
    my ($self, $name) = @_;
    return $self->{ports}{$name} //= _claim_port();
}


sub dead_port {
    my ($self, $name) = @_;
    return $self->port($name);
}


# ---------------------------------------------------------------- files

sub write_file {
    my ($self, $name, $content, $mode) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{dir}/$name";
    open my $fh, '>', $path or die "$path: $!\n";
    binmode $fh;
    print $fh $content;
    close $fh;
    chmod $mode, $path if defined $mode;
    return $path;
}


sub read_file {
    my ($self, $name) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{dir}/$name";
    open my $fh, '<', $path or return '';
    local $/;
    my $c = <$fh>;
    return $c // '';
}


sub secret_file {
    my ($self, $name, %o) = @_;
    $name //= 'ha-optout.key';

    my @c = ('a' .. 'z', 'A' .. 'Z', 0 .. 9);
    my $secret = $o{secret} // join '', map { $c[rand @c] } 1 .. 40;

    my $path = $self->write_file($name, $secret, $o{mode} // 0600);
    $self->{secret} //= $secret unless defined $o{secret};
    $self->{secret} = $secret if $o{default};

    return wantarray ? ($path, $secret) : $path;
}


sub secret { $_[0]{secret} }


sub state_dir {
    my ($self) = @_;
    my $d = "$self->{dir}/state";
    unless (-d $d) {
        mkdir $d, 0755 or die "$d: $!\n";
        my (undef, undef, $uid, $gid) = getpwnam('nobody');
        chown $uid, $gid, $d;
    }
    return $d;
}


# ---------------------------------------------------------------- backends

sub backend {
    my ($self, $name, %o) = @_;

    my $port = $self->port($name);
    my $dir = $self->{dir};
    my $body = $o{body} // $name;

    $self->write_file("backend-$name.status", ($o{status} // 200) . "\n");
    $self->write_file("hits-$name.log", '');

    my $ls = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port",
                                   Proto => 'tcp', Listen => 128,
                                   ReuseAddr => 1)
        or die "backend $name: listen 127.0.0.1:$port: $!\n";

    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        setsid();
        $SIG{CHLD} = 'IGNORE';
        $SIG{TERM} = sub { _exit(0) };

        while (1) {
            my $c = $ls->accept or next;
            my $kid = fork;
            if (defined $kid && $kid == 0) {
                close $ls;
                eval { _serve($c, $name, $body, $dir) };
                _exit(0);
            }
            close $c;
        }
    }

    close $ls;
    $self->{backends}{$name} = $pid;
    return $port;
}


sub _serve {
    my ($c, $name, $body, $dir) = @_;

    $c->autoflush(1);
    local $SIG{ALRM} = sub { _exit(0) };

    while (1) {
        alarm 60;

        my $line = <$c>;
        return unless defined $line;
        $line =~ s/\r?\n\z//;
        redo if $line eq '';

        my ($method, $uri, $ver) = split / /, $line;
        $ver //= 'HTTP/1.0';

        my %h;
        while (my $l = <$c>) {
            $l =~ s/\r?\n\z//;
            last if $l eq '';
            my ($k, $v) = split /:\s*/, $l, 2;
            $h{lc $k} = $v // '';
        }

        if (my $len = $h{'content-length'}) {
            my $got = 0;
            while ($got < $len) {
                my $n = read($c, my $buf, $len - $got);
                return unless $n;
                $got += $n;
            }

        } elsif (lc($h{'transfer-encoding'} // '') eq 'chunked') {
            while (my $sz = <$c>) {
                $sz = hex($sz);
                read($c, my $buf, $sz + 2) if $sz;
                if (!$sz) { <$c>; last }
            }
        }

        my $status = 200;
        my $delay = 0;
        if (open my $fh, '<', "$dir/backend-$name.status") {
            my $s = <$fh> // '';
            close $fh;
            $status = $1 if $s =~ /^(\d{3})/;
            $delay = $1 if $s =~ /delay=([\d.]+)/;
        }

        # the hit is written before the answer: once a client has its
        # response, the hit it caused can be counted
        my $xh = join ' ', map { "$_=$h{$_}" } sort grep { /^x-/ } keys %h;
        if (open my $log, '>>', "$dir/hits-$name.log") {
            flock $log, LOCK_EX;
            print $log "$method $uri $xh\n";
            close $log;
        }

        sleep $delay if $delay;

        my $conn = lc($h{connection} // '');
        my $keep = $ver eq 'HTTP/1.1' ? $conn ne 'close'
                                      : $conn eq 'keep-alive';

        my $b = $method eq 'HEAD' ? '' : $body;
        print $c "HTTP/1.1 $status " . ($REASON{$status} // 'X') . "\r\n"
            . "X-Backend: $name\r\n"
            . "Content-Type: text/plain\r\n"
            . "Content-Length: " . length($body) . "\r\n"
            . "Connection: " . ($keep ? 'keep-alive' : 'close') . "\r\n"
            . "\r\n" . $b;

        return unless $keep;
    }
}


sub backend_set_status {
    my ($self, $name, $status, %o) = @_;
    my $s = $status . (defined $o{delay} ? " delay=$o{delay}" : '') . "\n";
    my $f = "$self->{dir}/backend-$name.status";
    $self->write_file("$f.tmp", $s);
    rename "$f.tmp", $f;
}


sub hit_log {
    my ($self, $name) = @_;
    return split /\n/, $self->read_file("hits-$name.log");
}


sub hits {
    my ($self, $name) = @_;
    return scalar(my @l = $self->hit_log($name));
}


sub reset_hits {
    my ($self, @names) = @_;
    @names = keys %{ $self->{backends} } unless @names;
    $self->write_file("hits-$_.log", '') for @names;
}


sub stop_backends {
    my ($self) = @_;
    for my $pid (values %{ $self->{backends} }) {
        kill 'TERM', -$pid;
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
    $self->{backends} = {};
}


# ---------------------------------------------------------------- nginx

sub conf {
    my ($self, $text) = @_;
    $self->{conf_text} = $text;
    $self->_write_conf;
    return $self;
}


sub _write_conf {
    my ($self) = @_;

    my $d = $self->{dir};
    my $text = $self->{conf_text} // die "no conf given\n";

    unless ($text =~ /^\s*events\s*\{/m) {
        my $g = "load_module %%MODULE%%;\n";

        # the stream twin loads after the stream core and the http module
        if ($text =~ /^\s*stream\s*\{/m) {
            $g .= "load_module $STREAM_CORE;\n" if $STREAM_CORE ne '';
            $g .= "load_module $STREAM_MODULE;\n";
        }

        $g .= "pid %%TESTDIR%%/nginx.pid;\n"
            . "error_log %%TESTDIR%%/error.log info;\n"
            . "daemon on;\n"
            . "master_process on;\n";
        $g .= "worker_processes $self->{workers};\n"
            unless $text =~ /^\s*worker_processes\b/m;
        $g .= "events { worker_connections 1024; }\n\n";

        my $h = "\n    client_body_temp_path %%TESTDIR%%/client_body_temp;\n"
            . "    proxy_temp_path %%TESTDIR%%/proxy_temp;\n"
            . "    fastcgi_temp_path %%TESTDIR%%/fastcgi_temp;\n"
            . "    uwsgi_temp_path %%TESTDIR%%/uwsgi_temp;\n"
            . "    scgi_temp_path %%TESTDIR%%/scgi_temp;\n";
        $h .= "    access_log %%TESTDIR%%/access.log;\n"
            unless $text =~ /\baccess_log\b/;

        $text =~ s/^(\s*http\s*\{[^\n]*)\n/$1$h/m;
        $text = $g . $text;
    }

    $text =~ s/%%TESTDIR%%/$d/g;
    $text =~ s/%%MODULE%%/$MODULE/g;
    $text =~ s/%%STREAM_MODULE%%/$STREAM_MODULE/g;
    $text =~ s/^\s*load_module\s+%%STREAM_CORE%%;\n//mg if $STREAM_CORE eq '';
    $text =~ s/%%STREAM_CORE%%/$STREAM_CORE/g;
    $text =~ s/%%PORT_(\w+)%%/$self->port($1)/ge;

    $self->{listen} = [ map { /(\d+)$/ ? $1 : () }
                        $text =~ /^\s*listen\s+([\w.:\[\]]+)/mg ];

    $self->write_file('nginx.conf', $text);
}


sub conf_line {
    my ($self, $re) = @_;
    my @l = split /\n/, $self->read_file('nginx.conf');
    for my $i (0 .. $#l) {
        return $i + 1 if $l[$i] =~ $re;
    }
    return undef;
}


sub _nginx_cmd {
    my ($self, @args) = @_;
    my $d = $self->{dir};
    return ($NGINX, '-p', "$d/", '-c', "$d/nginx.conf",
            '-e', "$d/error.log", @args);
}


sub _system {
    my ($self, @cmd) = @_;
    my $out = "$self->{dir}/nginx.out";
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        exec @cmd or _exit(127);
    }
    waitpid $pid, 0;
    my $rc = $? >> 8;
    return ($rc, $self->read_file($out));
}


sub nginx_t {
    my ($self) = @_;
    $self->_write_conf;
    return $self->_system($self->_nginx_cmd('-t'));
}


sub run {
    my ($self) = @_;

    $self->_write_conf;

    my ($rc, $out) = $self->_system($self->_nginx_cmd);
    die "nginx failed to start (exit $rc): $out\n" . $self->_log_tail
        if $rc;

    my $deadline = time + 10;
    for my $port (@{ $self->{listen} }) {
        until (IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                     Timeout => 1))
        {
            die "nginx does not answer on port $port\n" . $self->_log_tail
                if time > $deadline;
            sleep 0.05;
        }
    }

    # the ports answer a moment before the daemonised master has written
    # its pid file: tests read it (master_pid, worker_pids)
    until (defined $self->master_pid) {
        die "nginx wrote no pid file\n" . $self->_log_tail
            if time > $deadline;
        sleep 0.05;
    }

    $self->{running} = 1;
    return $self;
}


sub master_pid {
    my ($self) = @_;
    my $pid = $self->read_file('nginx.pid');
    return $pid =~ /(\d+)/ ? $1 : undef;
}


sub worker_pids {
    my ($self) = @_;
    my $m = $self->master_pid or return ();
    my @p = `pgrep -P $m`;
    chomp @p;
    return @p;
}


sub reload {
    my ($self) = @_;

    $self->_write_conf;

    my %old = map { $_ => 1 } $self->worker_pids;
    my ($rc, $out) = $self->_system($self->_nginx_cmd('-s', 'reload'));
    die "nginx -s reload failed (exit $rc): $out\n" if $rc;

    my $deadline = time + 5;
    while (time < $deadline) {
        my @now = $self->worker_pids;
        return 1 if @now && !grep { $old{$_} } @now;
        sleep 0.05;
    }

    diag("reload: old workers still running after 5 s");
    return 0;
}


sub stop {
    my ($self) = @_;

    return unless $$ == $self->{owner};

    my $pid = $self->master_pid;
    if ($pid && kill 0, $pid) {
        for my $sig (qw(QUIT TERM KILL)) {
            kill $sig, $pid;
            my $deadline = time + ($sig eq 'KILL' ? 1 : 5);
            while (kill(0, $pid) && time < $deadline) {
                sleep 0.05;
            }
            last unless kill 0, $pid;
        }
    }

    unlink "$self->{dir}/nginx.pid";
    $self->{running} = 0;
    $self->_check_crashes;
    return $self;
}


# A worker that died of a signal (SIGSEGV, SIGABRT, SIGBUS, ...) is a crash
# however the test went: each stop fails the test for it, once per line.
# SIGKILL is not a crash (fault tests send it, nginx uses it at shutdown);
# a test that crashes workers on purpose sets $t->{allow_crash} = 1.

sub _check_crashes {
    my ($self) = @_;

    return if $self->{allow_crash};

    my $log = $self->error_log;
    return unless defined $log && length $log;

    my $from = $self->{crash_checked} // 0;
    $from = 0 if $from > length $log;
    $self->{crash_checked} = length $log;

    my @crash = grep { /exited on signal (\d+)/ && $1 != 9 }
                split /\n/, substr($log, $from);

    return unless @crash;

    my $tb = Test::More->builder;
    $tb->ok(0, 'no nginx process exited on a signal (a crash)');
    $tb->diag("  $_") for @crash;
}


sub error_log {
    my ($self) = @_;
    return $self->read_file('error.log');
}


sub _log_tail {
    my ($self) = @_;
    my @l = split /\n/, $self->error_log;
    @l = @l[-20 .. -1] if @l > 20;
    return join '', map { "  $_\n" } @l;
}


# ---------------------------------------------------------------- http

sub http {
    my ($self, $method, $path, %o) = @_;

    my $port = $self->port($o{port} // 'http');
    my $ua = HTTP::Tiny->new(max_redirect => 0, timeout => $o{timeout} // 10,
                             keep_alive => 0, proxy => undef,
                             http_proxy => undef, https_proxy => undef);

    my %opt = (headers => $o{headers} // {});
    $opt{content} = $o{body} if defined $o{body};

    my $res = $ua->request($method, "http://127.0.0.1:$port$path", \%opt);

    my $r = {
        status  => $res->{status},
        headers => $res->{headers} // {},
        body    => $res->{content} // '',
    };

    my $json = eval { $JSON->decode($r->{body}) };
    unless ($@) {
        $r->{json} = $json;
        $r->{is_json} = 1;
    }

    return $r;
}


sub get {
    my ($self, $path, %o) = @_;
    return $self->http('GET', $path, %o);
}


# Sends raw request text and reads until nginx closes the connection or
# $o{timeout} (2 s) passes; returns (text read, 1 if nginx closed it).
sub raw {
    my ($self, $request, %o) = @_;

    my $port = $self->port($o{port} // 'http');
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Timeout => 2)
        or return ('', 0);
    $s->autoflush(1);
    print $s $request;

    my ($buf, $closed) = ('', 0);
    my $deadline = time + ($o{timeout} // 2);
    my $sel = IO::Select->new($s);

    while ((my $left = $deadline - time) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread($s, $buf, 65536, length $buf);
        if (!$n) { $closed = 1; last }
    }

    close $s;
    return ($buf, $closed);
}


# Sends $n requests (each on its own connection); returns the list of
# "status backend" strings, e.g. ("200 b1", "503 b2", "502 -").
sub spray {
    my ($self, $n, $path, %o) = @_;
    my @r;
    for my $i (1 .. $n) {
        my $p = ref $path eq 'CODE' ? $path->($i) : $path;
        my $r = $self->http($o{method} // 'GET', $p, %o);
        push @r, "$r->{status} " . ($r->{headers}{'x-backend'} // '-');
    }
    return @r;
}


sub status {
    my ($self, %o) = @_;
    my $r = $self->http('GET', $o{path} // '/ha-status', %o);
    return $r->{json};
}


# ---------------------------------------------------------------- tokens

sub token_defaults {
    my ($self, %a) = @_;
    $self->{token_defaults} = { %{ $self->{token_defaults} }, %a };
    return $self;
}


sub _b64 { encode_base64url(ref $_[0] ? $JSON->encode($_[0]) : $_[0]) }


sub token {
    my ($self, %a) = @_;

    %a = (%{ $self->{token_defaults} }, %a);

    my $now = time;
    $now = int $now;
    my $iat = exists $a{iat} ? $a{iat} : $now;

    my %c = (
        sub   => $a{sub} // 'alice',
        scope => $a{scope} // 'ha:read ha:write',
        exp   => $a{exp} // ($iat // $now) + ($a{ttl} // 300),
        jti   => exists $a{jti} ? $a{jti}
                                : join('', map { sprintf '%04x', rand 65536 }
                                           1 .. 8),
    );
    $c{iat} = $iat if defined $iat;
    $c{nbf} = $a{nbf} if defined $a{nbf};
    $c{aud} = $a{aud} if defined $a{aud};
    %c = (%c, %{ $a{claims} // {} });
    for (@{ $a{omit} // [] }) { delete $c{$_} }
    for (keys %c) { delete $c{$_} unless defined $c{$_} }

    my $alg = $a{alg} // 'HS256';
    my $h = $a{header} // {
        alg => $alg, typ => 'JWT',
        (defined $a{kid} ? (kid => $a{kid}) : ()),
    };

    my $input = _b64(ref $h ? $h : "$h") . '.' . _b64(\%c);

    my $secret = $a{secret} // $self->{secret}
        // die "token: no secret (call secret_file first)\n";

    my $sig = exists $a{signature} ? $a{signature}
            : lc $alg eq 'none' ? ''
            : encode_base64url(hmac_sha256($input, $secret));

    return "$input.$sig";
}


sub api {
    my ($self, $method, $path, %o) = @_;

    my $prefix = $o{prefix} // '/ha-optout/';
    my %h = %{ $o{headers} // {} };

    my $tok = exists $o{token} ? $o{token}
                               : $self->token(%{ $o{token_args} // {} });
    $h{Authorization} = "Bearer $tok" if defined $tok;

    my $body = $o{body};
    if (exists $o{json}) {
        $body = $JSON->encode($o{json});
        $h{'Content-Type'} //= 'application/json';
    }

    return $self->http($method, $prefix . $path, %o, headers => \%h,
                       body => $body);
}


# Polls $cond every 50 ms until it is true or $timeout seconds pass;
# returns the last value of $cond.
sub wait_for {
    my ($self, $cond, $timeout) = @_;
    my $deadline = time + ($timeout // 3);
    while (1) {
        my $v = $cond->();
        return $v if $v || time > $deadline;
        sleep 0.05;
    }
}


sub encode_json { $JSON->encode($_[1]) }


# ---------------------------------------------------------------- cleanup

sub _cleanup {
    my ($self) = @_;
    return unless $self && $self->{owner} == $$;
    $self->stop;
    $self->stop_backends;
}


sub DESTROY {
    my ($self) = @_;
    local ($?, $@);
    $self->_cleanup;
}


END {
    local $?;
    for my $t (grep { defined } @INSTANCES) {
        $t->_cleanup;
    }
    for my $p (keys %CLAIMED) {
        unlink "$PORT_DIR/$p";
    }
}


1;

__END__

=head1 NAME

HaOptout::Test - start nginx with ngx_http_ha_optout_module, backends that
say who they are, and signed admin calls, for t/*.t

=head1 SYNOPSIS

    use Test::More;
    use HaOptout::Test;

    my $t = HaOptout::Test->new;
    $t->backend('b1');                       # answers "b1", X-Backend: b1
    $t->backend('b2', status => 503);        # a degraded node
    $t->secret_file;                         # HS256 key for the admin API

    $t->conf(<<'EOF')->run;
    http {
        ha_optout_zone ha_optout 1m;
        upstream app {
            server 127.0.0.1:%%PORT_b1%%;
            server 127.0.0.1:%%PORT_b2%%;
            ha_optout;
        }
        server {
            listen 127.0.0.1:%%PORT_http%%;
            location / { proxy_pass http://app; }
            location /ha-optout/ {
                ha_optout_admin;
                ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
            }
            location = /ha-status { ha_optout_status; }
        }
    }
    EOF

    my $r = $t->api(PUT => 'v1/flags/app', json => {
        pin => '127.0.0.1:' . $t->port('b2'), ttl => '5m', reason => 'test'});
    is($t->get('/')->{headers}{'x-backend'}, 'b2', 'pin holds traffic');

=head1 ENVIRONMENT

C<HA_OPTOUT_MODULE> (path of the .so; default F<build/> of this repository),
C<HA_OPTOUT_STREAM_MODULE> (the stream twin), C<HA_OPTOUT_NGINX> (default
F</usr/sbin/nginx>; C<make test-compat> points it at an nginx.org build),
C<HA_OPTOUT_STREAM_CORE> (the F<ngx_stream_module.so> to load before the
stream twin; by default found from C<nginx -V> when stream is a dynamic
module, as on Debian, and none when it is compiled in, as in nginx.org
builds; "" loads none), C<HA_OPTOUT_KEEP> (keep the test directory and
print its path).

C<< HaOptout::Test->nginx_version >> is the version under test as a number
(1031004 for 1.31.4); C<< HaOptout::Test->nginx_at_least('1.29.7') >> lets
version-dependent tests say which behaviour they expect.

=head1 METHODS

=over

=item new(workers => 2)

A fresh temporary directory (mode 0755: workers run as C<nobody> and must
traverse it).  Dies when the module has not been built.

=item port(NAME), dead_port(NAME)

The port for a named thing (a backend, a C<listen>), reserved on first use
by binding 127.0.0.1:0 and claiming a file in F</tmp/ha-optout-test-ports>,
so parallel test files never share a port.  A dead port is one that nobody
listens on.  C<http()> and C<api()> default to the port named C<http>.

=item backend(NAME, status => 200, body => NAME)

A forked HTTP/1.1 server (keep-alive aware) on 127.0.0.1:port(NAME).  Each
answer carries C<X-Backend: NAME> and the body NAME.  Every request
appends "METHOD URI x-header=value ..." to F<hits-NAME.log> before it is
answered.

=item backend_set_status(NAME, STATUS, delay => SECONDS)

Changes the answer status (and an optional delay) from the next request.

=item hits(NAME), hit_log(NAME), reset_hits(NAMES...)

Requests a backend has seen since the last reset (all backends when no
names are given).

=item conf(TEXT), run, reload, stop, nginx_t, conf_line(REGEX)

C<conf> writes F<nginx.conf> from TEXT, replacing C<%%TESTDIR%%>,
C<%%MODULE%%> and C<%%PORT_name%%>.  Unless TEXT has its own C<events>
block, it is prefixed with C<load_module>, C<pid>, C<error_log ... info>,
C<worker_processes 2> (unless given) and C<events>, and the temp paths (and
an C<access_log>, unless TEXT mentions one) are put at the top of C<http>.
C<run> starts nginx and waits until every C<listen> port answers; it dies
with the tail of F<error.log> otherwise.  C<reload> rewrites the conf, sends
C<nginx -s reload> and waits (at most 5 s) until no old worker remains.
C<stop> stops nginx (QUIT, then TERM); backends stay up (C<stop_backends>).
Both are also done when the object goes away and at END.  C<nginx_t>
returns (exit code, output) of C<nginx -t> on the conf.  C<conf_line>
gives the line number of the first line of the written conf matching
REGEX, to check the file:line nginx reports.

=item secret_file(NAME, mode => 0600), state_dir, write_file, read_file

C<secret_file> writes a 40-byte random HS256 secret (default name
F<ha-optout.key>, mode 0600) and remembers the first one for C<token>.
C<state_dir> is a directory owned by C<nobody>.

=item http(METHOD, PATH, port => NAME, headers => {}, body => TEXT), get

One request on a fresh connection; no redirects followed.  Returns
C<{status, headers (lower-cased names), body, json, is_json}>.

=item raw(TEXT, port => NAME, timeout => 2)

Sends TEXT as is on a fresh connection and reads until nginx closes it;
returns (what was read, 1 if nginx closed the connection in time).

=item spray(N, PATH_OR_SUB, %http_options)

N requests; returns a list of "STATUS BACKEND" strings ("502 -" when no
backend answered).

=item status

The decoded JSON of C<GET /ha-status>.

=item token(%claims), token_defaults(%claims)

An HS256 JWT: C<sub> (alice), C<scope> ("ha:read ha:write"), C<ttl> (300),
C<iat>, C<exp>, C<nbf>, C<aud>, C<kid>, C<jti> (random; C<undef> omits),
C<claims> (extra claims), C<omit> (claim names to drop), C<secret>,
C<alg>, C<header> (a hash or raw JSON text replacing the header),
C<signature> (raw).  C<token_defaults> sets defaults for every later token.

=item api(METHOD, PATH, json => DATA, token => TOKEN, token_args => {},
headers => {}, prefix => '/ha-optout/')

An admin call with a fresh token (so a fresh C<jti>) unless C<token> is
given; C<< token => undef >> sends none.

=item wait_for(CODE, TIMEOUT)

Polls CODE every 50 ms until true, at most TIMEOUT (3) seconds.

=item error_log

The contents of F<error.log>.

=item allow_crash

C<stop> (and so the end of every test) fails the test when F<error.log>
says that a process "exited on signal N" for any N but 9 (a worker
crash). A test that makes workers crash on purpose sets
C<< $t->{allow_crash} = 1 >>.

=back

=cut
