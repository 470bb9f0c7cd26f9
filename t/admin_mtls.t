#!/usr/bin/perl

# The admin location behind mutual TLS (docs/api.md): nginx asks for a
# client certificate (ssl_verify_client on) and ha-optoutctl gives one
# (--cert, --cert-key, --cacert, or HA_OPTOUT_CERT, _CERT_KEY, _CACERT).
# With it set/status/clear work; without it, with one from another CA, or
# against a server whose CA the CLI was not given, nothing is changed and
# the CLI says why, with the exit codes of SPEC section 7.

use strict;
use warnings;

use Test::More;
use FindBin;
use POSIX qw(_exit);
use HaOptout::Test;

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
die "ha-optoutctl not built: $CLI (run 'make cli')\n" unless -x $CLI;

my $OPENSSL = (grep { -x "$_/openssl" } split(/:/, $ENV{PATH}), '/usr/bin')[0];
plan(skip_all => 'openssl not found') unless $OPENSSL;
$OPENSSL .= '/openssl';

# nginx.org builds have TLS only when configured so: the compat builds of
# "make test-compat" need --with-http_ssl_module for this test to run
my $V = `$HaOptout::Test::NGINX -V 2>&1`;
plan(skip_all => "$HaOptout::Test::NGINX was built without "
               . '--with-http_ssl_module') unless $V =~ /--with-http_ssl_module\b/;

my $t = HaOptout::Test->new;
my $d = $t->testdir;

$t->backend('b1');
$t->backend('b2');
my $key = $t->secret_file;

# ------------------------------------------------------------ a throwaway PKI

sub openssl {
    my $cmd = join ' ', map { "'$_'" } $OPENSSL, @_;
    my $out = `cd '$d' && $cmd 2>&1`;
    die "openssl @_: $out" if $?;
}

sub ca {
    my ($name, $cn) = @_;
    openssl(qw(req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
               -days 2), '-subj', "/CN=$cn", '-keyout', "$name.key",
            '-out', "$name.crt",
            '-addext', 'basicConstraints=critical,CA:TRUE',
            '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

sub leaf {
    my ($name, $ca, $cn, $ext) = @_;
    $t->write_file("$name.ext", "$ext\n");
    openssl(qw(req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes),
            '-subj', "/CN=$cn", '-keyout', "$name.key", '-out', "$name.csr");
    openssl(qw(x509 -req -days 2 -set_serial), int(rand(1e9)) + 1,
            '-in', "$name.csr", '-CA', "$ca.crt", '-CAkey', "$ca.key",
            '-extfile', "$name.ext", '-out', "$name.crt");
}

ca('ca', 'ha-optout test CA');
ca('other-ca', 'somebody else');
leaf('server', 'ca', '127.0.0.1',
     "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth");
leaf('client', 'ca', 'ci-pipeline', 'extendedKeyUsage=clientAuth');
leaf('stranger', 'other-ca', 'ci-pipeline', 'extendedKeyUsage=clientAuth');

# the client certificate and its key in one file, as --cert alone takes it
$t->write_file('client-both.pem',
               $t->read_file('client.crt') . $t->read_file('client.key'),
               0600);

# ------------------------------------------------------------ nginx

# the server block of docs/api.md ("Mutual TLS")
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

        location / {
            proxy_pass http://app;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_admin%% ssl;

        ssl_certificate         %%TESTDIR%%/server.crt;
        ssl_certificate_key     %%TESTDIR%%/server.key;
        ssl_client_certificate  %%TESTDIR%%/ca.crt;
        ssl_verify_client       on;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }
    }
}
EOF

my $url = 'https://127.0.0.1:' . $t->port('admin') . '/ha-optout/';
my @tls = ('--cacert', "$d/ca.crt", '--cert', "$d/client.crt",
           '--cert-key', "$d/client.key");
my @set = ('--upstream', 'app', '--no-failover', '--ttl', '5m',
           '--reason', 'INC-77 mtls drill');

# runs the CLI with a clean environment; returns {rc, out, err}
sub cli {
    my $env = ref $_[0] eq 'HASH' ? shift : {};
    my ($out, $err) = ("$d/cli.out", "$d/cli.err");

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{"HA_OPTOUT_$_"}
            for qw(URL TOKEN KEY ALG KID AUD CACERT CERT CERT_KEY);
        @ENV{keys %$env} = values %$env;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out;
        open STDERR, '>', $err;
        exec $CLI, @_ or _exit(127);
    }

    waitpid $pid, 0;
    return { rc => $? >> 8, out => $t->read_file($out),
             err => $t->read_file($err) };
}

# the flag of app as the CLI sees it through mTLS, or '' when none
sub app_flag {
    my $r = cli('status', '--url', $url, '--key', $key, @tls,
                '--upstream', 'app', '--json');
    return $r->{rc} == 0 && $r->{out} =~ /"reason":\s*"([^"]*)"/ ? $1 : '';
}

###############################################################################

# with the client certificate

my $r = cli('status', '--url', $url, '--key', $key, @tls);
is($r->{rc}, 0, 'status through mTLS') or diag $r->{err};
like($r->{out}, qr/^app\s/m, 'and it lists the upstream');

$r = cli('set', '--url', $url, '--key', $key, @tls, @set);
is($r->{rc}, 0, 'set through mTLS') or diag $r->{err};
is(app_flag(), 'INC-77 mtls drill', 'the flag is set');

$r = cli('clear', '--url', $url, '--key', $key, @tls, '--upstream', 'app');
is($r->{rc}, 0, 'clear through mTLS') or diag $r->{err};
is(app_flag(), '', 'the flag is gone');

# the same from the environment, certificate and key in one file

$r = cli({ HA_OPTOUT_URL => $url, HA_OPTOUT_KEY => $key,
           HA_OPTOUT_CACERT => "$d/ca.crt",
           HA_OPTOUT_CERT => "$d/client-both.pem" },
         'set', @set);
is($r->{rc}, 0, 'HA_OPTOUT_CACERT and HA_OPTOUT_CERT (cert and key in one '
              . 'file) do the same') or diag $r->{err};
is(app_flag(), 'INC-77 mtls drill', 'the flag is set');

$r = cli({ HA_OPTOUT_URL => $url, HA_OPTOUT_KEY => $key,
           HA_OPTOUT_CACERT => "$d/ca.crt",
           HA_OPTOUT_CERT => "$d/client.crt",
           HA_OPTOUT_CERT_KEY => "$d/client.key" },
         'clear', '--upstream', 'app');
is($r->{rc}, 0, 'HA_OPTOUT_CERT_KEY gives the key') or diag $r->{err};
is(app_flag(), '', 'the flag is gone');

# without a client certificate: nginx refuses before the module sees it

$r = cli('set', '--url', $url, '--key', $key, '--cacert', "$d/ca.crt", @set);
is($r->{rc}, 1, 'no client certificate: refused (exit 1)');
like($r->{err}, qr/ClientCertificateRequired: .*client certificate.*--cert /,
    'and the CLI says a client certificate is needed and how to give it')
    or diag $r->{err};
is(app_flag(), '', 'nothing was set');

# a certificate from a CA nginx does not trust

$r = cli('set', '--url', $url, '--key', $key, '--cacert', "$d/ca.crt",
         '--cert', "$d/stranger.crt", '--cert-key', "$d/stranger.key", @set);
is($r->{rc}, 1, 'a client certificate of another CA: refused (exit 1)');
like($r->{err}, qr/ClientCertificateRejected: .*did not accept/,
    'and the CLI says the certificate was not accepted') or diag $r->{err};
is(app_flag(), '', 'nothing was set');

# the server is not the one the CLI was told to trust

$r = cli('set', '--url', $url, '--key', $key, @tls[2 .. 5],
         '--cacert', "$d/other-ca.crt", @set);
is($r->{rc}, 3, '--cacert of another CA: the CLI refuses the server '
              . '(exit 3)');
like($r->{err}, qr/not trusted.*--cacert/,
    'and says the server certificate is not trusted') or diag $r->{err};
is(app_flag(), '', 'nothing was set');

$r = cli('set', '--url', $url, '--key', $key, @tls[2 .. 5], @set);
is($r->{rc}, 3, 'no --cacert: the system CAs do not know the server either');

$r = cli('set', '--url', $url, '--key', $key, @tls[2 .. 5], '--insecure',
         @set);
is($r->{rc}, 0, '--insecure skips the server check (the client cert is '
              . 'still what nginx checks)') or diag $r->{err};
is(cli('clear', '--url', $url, '--key', $key, @tls, '--upstream', 'app')
   ->{rc}, 0, 'cleared');

# local mistakes are usage errors

$r = cli('status', '--url', $url, '--key', $key, '--cacert', "$d/ca.crt",
         '--cert-key', "$d/client.key");
is($r->{rc}, 2, '--cert-key without --cert: usage (exit 2)');
like($r->{err}, qr/--cert-key needs --cert/, 'and says so');

$r = cli('status', '--url', $url, '--key', $key, '--cacert', "$d/ca.crt",
         '--cert', "$d/missing.crt", '--cert-key', "$d/client.key");
is($r->{rc}, 2, 'an unreadable --cert: usage (exit 2)');
like($r->{err}, qr/cannot use the client certificate.*missing\.crt/,
    'and names the file') or diag $r->{err};

$r = cli('status', '--url', $url, '--key', $key, '--cacert', "$d/ca.crt",
         '--cert', "$d/client.crt", '--cert-key', "$d/stranger.key");
is($r->{rc}, 2, 'a --cert-key that is not the certificate\'s: usage (exit 2)')
    or diag $r->{err};

(my $plain = $url) =~ s/^https/http/;
$r = cli('status', '--url', $plain, '--key', $key);
is($r->{rc}, 1, 'http:// to the TLS port: refused (exit 1)');
like($r->{err}, qr/PlainHTTPToHTTPS: .*use https:/, 'and says use https://')
    or diag $r->{err};

###############################################################################

done_testing;
