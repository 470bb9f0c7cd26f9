#!/usr/bin/perl

# Issue 13 replaced the CLI's option if-chain (cli/main.c) by a table
# (cli/options.c) and said "behaviour unchanged".  The attack review ran
# 1,800 invocations of the CLI of aa6ef2b and of the new one side by side
# (every option of every verb as --opt value, --opt=value and with its
# value missing; unknown options; getopt's abbreviations; the environment's
# fallbacks, set and empty) and found no difference.  This pins the
# answers of the old if-chain that no other test pins, so that the next
# edit of the table keeps them: what an operator's script meets when it
# mistypes an option (exit 2, the message), the environment's fallbacks,
# and the options' ranges.  Every expected line is the old CLI's.  No
# nginx: each case is refused before a request would be sent, or sent to a
# port nothing listens on.

use strict;
use warnings;

use Test::More;
use FindBin;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(_exit);

my $CLI = $ENV{HA_OPTOUT_CLI} // "$FindBin::Bin/../build/ha-optoutctl";
plan(skip_all => "ha-optoutctl not built: $CLI (run 'make cli')")
    unless -x $CLI;

my $d = tempdir('ha-optout-t-rr-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# a port that refuses: bound, never listening (no race with other tests)
my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                 Proto => 'tcp', ReuseAddr => 0)
    // die "bind: $!\n";
my $dead = 'http://127.0.0.1:' . $sock->sockport . '/ha-optout/';

sub cli {
    my $env = ref $_[0] eq 'HASH' ? shift : {};

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        delete $ENV{$_} for grep { /^HA_OPTOUT_/ } keys %ENV;
        @ENV{keys %$env} = values %$env;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$d/out";
        open STDERR, '>', "$d/err";
        exec $CLI, @_ or _exit(127);
    }

    waitpid $pid, 0;

    local $/;
    open my $o, '<', "$d/out" or die;
    open my $e, '<', "$d/err" or die;
    return { rc => $? >> 8, out => <$o> // '', err => <$e> // '' };
}

my @trust = map { ('--trust-key', "k$_") } 1 .. 17;

# [ env, args, exit code, stderr (regex) ]
my @cases = (
    # unknown options, missing values, values given to switches
    [ {}, [qw(status --bogus)], 2,
      qr/^ha-optoutctl: unknown option or missing value: --bogus\nTry 'ha-optoutctl status --help'\.\n\z/ ],
    [ {}, [qw(status -x)], 2, qr/^ha-optoutctl: unknown option -x\n/ ],
    [ {}, [qw(status --url)], 2,
      qr/^ha-optoutctl: unknown option or missing value: --url\n/ ],
    [ {}, [qw(status --timeout)], 2,
      qr/unknown option or missing value: --timeout\n/ ],
    [ {}, [qw(status --json=1)], 2,
      qr/unknown option or missing value: --json=1\n/ ],
    [ {}, [qw(set --no-failover=1)], 2,
      qr/unknown option or missing value: --no-failover=1\nTry 'ha-optoutctl set --help'/ ],

    # getopt's abbreviations: unique ones work, ambiguous ones are refused
    [ {}, [qw(status --up=x)], 2,
      qr/unknown option or missing value: --up=x\n/ ],
    [ {}, [qw(status --etcd-p x)], 2,
      qr/unknown option or missing value: --etcd-p\n/ ],
    [ {}, [qw(status --hel)], 0, qr/^\z/ ],

    # an option of another verb
    [ {}, [qw(status --limit 5)], 2,
      qr/^ha-optoutctl: --limit does not apply to 'status'\n/ ],
    [ {}, [qw(token --key k --url http://x/)], 2,
      qr/--url does not apply to 'token'\n/ ],
    [ {}, [qw(token -v --key k)], 2,
      qr/--verbose does not apply to 'token'\n/ ],

    # ranges, as --opt=value and --opt value alike
    [ {}, [qw(status --timeout=0)], 2,
      qr/--timeout must be 1\.\.3600 seconds\n/ ],
    [ {}, [qw(status --timeout 3601)], 2,
      qr/--timeout must be 1\.\.3600 seconds\n/ ],
    [ {}, [qw(status --timeout=5x)], 2,
      qr/--timeout must be 1\.\.3600 seconds\n/ ],
    [ {}, [qw(audit list --limit=0)], 2,
      qr/--limit must be a positive number\nTry 'ha-optoutctl audit --help'/ ],
    [ {}, [qw(audit list --limit 100001)], 2,
      qr/--limit must be a positive number\n/ ],
    [ {}, [qw(token --token-ttl 5d --key k)], 2,
      qr/--token-ttl must be Ns, Nm or Nh: e\.g\. 90s, 5m, 1h\n/ ],
    [ {}, [ 'agent', @trust ], 2, qr/at most 16 --trust-key\n/ ],

    # combinations, from the command line or the environment
    [ {}, [qw(status --token a --key b)], 2,
      qr/give --token or --key, not both\n/ ],
    [ {}, [qw(status --cert-key k)], 2,
      qr/--cert-key needs --cert \(the certificate it belongs to\)\n/ ],
    [ { HA_OPTOUT_CERT_KEY => 'k' }, [qw(status)], 2,
      qr/--cert-key needs --cert/ ],
    [ { HA_OPTOUT_ETCD => 'http://127.0.0.1:1' }, [ 'status', '--url', $dead ],
      2, qr/give --url \(one nginx\) or --etcd \(the fleet\), not both\n/ ],

    # the environment: "" is no value for the TLS files and the token ...
    [ { HA_OPTOUT_CERT_KEY => '' }, [ 'status', '--url', $dead ], 2,
      qr/^ha-optoutctl: no credentials: give --token or --key, or set HA_OPTOUT_TOKEN or HA_OPTOUT_KEY\n\z/ ],
    [ { HA_OPTOUT_TOKEN => '', HA_OPTOUT_KEY => '' }, [ 'status', '--url', $dead ],
      2, qr/no credentials/ ],
    # ... and an empty HA_OPTOUT_URL, like none, asks for --url
    [ { HA_OPTOUT_URL => '', HA_OPTOUT_TOKEN => 't' }, [qw(status --timeout 1)],
      2, qr/^ha-optoutctl: no --url given and HA_OPTOUT_URL is not set/ ],
    [ { HA_OPTOUT_TOKEN => 't' }, [qw(status --url= --timeout 1)], 2,
      qr/no --url given and HA_OPTOUT_URL is not set/ ],
    # HA_OPTOUT_URL and HA_OPTOUT_TOKEN are used: the request is sent
    [ { HA_OPTOUT_URL => $dead, HA_OPTOUT_TOKEN => 't' },
      [qw(status --timeout 2)], 3, qr/^error: cannot reach \Q$dead\E/ ],
    [ { HA_OPTOUT_TOKEN => 't' }, [ 'status', "--url=$dead", '--timeout=2' ],
      3, qr/^error: cannot reach \Q$dead\E/ ],

    # verbs
    [ {}, [qw(run --upstream a --ttl 1m --reason r --no-failover)], 2,
      qr/no COMMAND given after --\nTry 'ha-optoutctl run --help'/ ],
    [ {}, [qw(bogusverb)], 2, qr/^ha-optoutctl: unknown verb "bogusverb"\n/ ],
    [ {}, [], 2, qr/^usage: ha-optoutctl VERB \[OPTIONS\]\n/ ],
);

for my $c (@cases) {
    my ($env, $args, $rc, $err) = @$c;
    my $name = join(' ', map { "$_=$env->{$_}" } sort keys %$env)
               . " ha-optoutctl @$args";
    my $r = cli($env, @$args);

    is($r->{rc}, $rc, "$name: exit $rc");
    like($r->{err}, $err, "$name: what it says") or diag $r->{err};
}

# --help, -h, help VERB and VERB --help print the verb's usage on stdout
for my $args ([qw(set --help)], [qw(set -h)], [qw(help set)]) {
    my $r = cli(@$args);
    is($r->{rc}, 0, "ha-optoutctl @$args: exit 0");
    like($r->{out}, qr/^usage: ha-optoutctl set --url URL --upstream NAME/,
         "ha-optoutctl @$args: the usage of set on stdout");
}

done_testing;
