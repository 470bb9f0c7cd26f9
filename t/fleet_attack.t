#!/usr/bin/perl

# Attacks on the fleet (SPEC section 11) by someone who can write to etcd
# but holds no signing key, against a real etcd, nginx and agent:
#
#   a genuine record captured, cleared, then put back on its own lease
#   (granted again by ID through the gateway) -> refused, audited denied,
#   HA stays on; clear and a replacing set end the old record's lease, so
#   no copy can live on it
#   a --trust-key anyone may rewrite (world-writable, or a symlink in a
#   directory others may change) -> the agent trusts nothing: it removes
#   the fleet flag it had applied (HA back on), refuses every record and
#   says why; fixed and restarted, it applies again
#   300 junk keys under flags/ (more than the agent's table) -> a flag
#   cleared while the agent was down is still removed at its start, and
#   a new genuine flag is still applied
#   flags/ holding more than the agent reads in one answer (50 values of
#   1.4 MB) -> the agent still reconciles, and applies a genuine flag
#   control bytes (a terminal escape) in keys, reasons and agent reports
#   -> status --etcd and fleet status print them escaped

use strict;
use warnings;

use Test::More;
use JSON::PP;
use HTTP::Tiny;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Etcd;
use HaOptout::Fleet;

plan skip_all => 'etcd not installed (make deps)'
    unless HaOptout::Etcd::available();

my $etcd = HaOptout::Etcd->new(members => 1);
my $d = $etcd->dir;

for my $c ("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
           . "-out $d/writer.pem",
           "openssl pkey -in $d/writer.pem -pubout -out $d/writer.pub")
{
    system("$c 2>/dev/null") == 0 or die "$c failed\n";
}

my @W = ('--etcd', $etcd->urls, '--environment', 'prod',
         '--key', "$d/writer.pem", '--alg', 'es256', '--sub', 'alice');
my $K = '/ha-optout/prod/flags/app';
my $n = HaOptout::Fleet->new(etcd => $etcd, host => 'lb1',
                             trust => ["$d/writer.pub"]);

ok($etcd->wait_for(sub { $n->report }, 15), 'the agent reports')
    or diag($n->agent_log);

# the record as etcd holds it: (base64 value, lease, mod_revision)
sub raw {
    my ($rc, $out) = $etcd->etcdctl('get', $K, '-w', 'json');
    my $kv = eval { decode_json($out)->{kvs}[0] } or return;
    return ($kv->{value}, $kv->{lease}, $kv->{mod_revision});
}

sub lease_alive {
    my ($rc, $out) = $etcd->etcdctl('lease', 'timetolive',
                                    sprintf('%x', $_[0]));
    return $out !~ /already expired/;
}

# what an attacker with write access does: the lease again, by its ID,
# and the captured value on it
my $http = HTTP::Tiny->new(timeout => 5);
sub gateway {
    my ($path, $body) = @_;
    my $r = $http->post((split /,/, $etcd->urls)[0] . $path,
                        { content => encode_json($body) });
    return $r->{status} == 200 ? decode_json($r->{content}) : undef;
}

sub replay {
    my ($value, $lease) = @_;
    gateway('/v3/lease/grant', { TTL => 120, ID => "$lease" });
    my $r = gateway('/v3/kv/put', { key => encode_base64($K, ''),
                                    value => $value, lease => "$lease" });
    return $r ? $r->{header}{revision} : undef;
}

sub msg { return (($n->report // {})->{upstreams}{app}{message} // q()) }

sub denied {
    my ($rev) = @_;
    return scalar grep { ($_->{action} // '') eq 'denied'
                         && ($_->{revision} // 0) == $rev } $n->audit_lines;
}

# ---- set, capture, clear, put it back
my ($rc, $out, $err) = $etcd->cli('set', @W, '--upstream', 'app',
    '--no-failover', '--ttl', '120s', '--reason', 'INC-9');
is($rc, 0, 'set --etcd') or diag($err);
ok($etcd->wait_for(sub { $n->fleet_layer }, 10), 'nginx holds the fleet flag');
my ($value, $lease) = raw();
ok($lease, "the record is on lease $lease");

($rc, $out, $err) = $etcd->cli('clear', @W, '--upstream', 'app');
is($rc, 0, 'clear --etcd') or diag($err);
ok($etcd->wait_for(sub { !$n->fleet_layer }, 10), 'clear: HA restored');
ok(!lease_alive($lease), 'clear revoked the cleared record\'s lease');

my $rev = replay($value, $lease);
ok($rev, "the captured record put back on lease $lease (revision $rev)");
ok($etcd->wait_for(sub { denied($rev) }, 10),
   'the replay is refused and audited "denied"')
    or diag($n->agent_log);
ok(!$n->fleet_layer, 'HA stays on: nginx holds no fleet flag');
like(msg(),
     qr/ended when it was cleared or replaced/, 'the report says why');
$etcd->etcdctl('del', $K);

# ---- a set that replaces a record ends the old record's lease
($rc) = $etcd->cli('set', @W, '--upstream', 'app', '--no-failover',
                   '--ttl', '120s', '--reason', 'first');
my ($v1, $l1) = raw();
ok($etcd->wait_for(sub { $n->fleet_layer }, 10), 'first record applied');
($rc) = $etcd->cli('set', @W, '--upstream', 'app', '--sticky',
                   '--ttl', '120s', '--reason', 'second');
my (undef, $l2, $r2) = raw();
ok($etcd->wait_for(sub { (($n->fleet_layer // {})->{revision} // 0) == $r2 }, 10),
   'the replacing record applied');
ok(!lease_alive($l1), 'the replaced record\'s lease is revoked');
($rc, $out, $err) = $etcd->cli('clear', @W, '--upstream', 'app');
ok($etcd->wait_for(sub { !$n->fleet_layer }, 10), 'cleared');

$rev = replay($v1, $l1);
ok($etcd->wait_for(sub { denied($rev) }, 10),
   'the first, replaced record put back: refused, audited "denied"');
ok(!$n->fleet_layer, 'HA stays on');
$etcd->etcdctl('del', $K);

# ---- a --trust-key others may rewrite
sub restart_with {
    my (@trust) = @_;
    $n->stop_agent;
    $n->{trust} = [@trust];
    $n->start_agent;
}

($rc, $out, $err) = $etcd->cli('set', @W, '--upstream', 'app',
    '--no-failover', '--ttl', '120s', '--reason', 'INC-10');
my (undef, undef, $good) = raw();
ok($etcd->wait_for(sub { (($n->fleet_layer // {})->{revision} // 0) == $good }, 10),
   'a genuine record applied');

chmod 0666, "$d/writer.pub";
restart_with("$d/writer.pub");
ok($etcd->wait_for(sub { !$n->fleet_layer }, 10),
   'world-writable --trust-key: the agent removes the fleet flag, HA on')
    or diag($n->agent_log);
like($n->agent_log, qr/--trust-key "\Q$d\E\/writer.pub" is not safe: it is writable by everyone/,
     '... and says why at start');
ok($etcd->wait_for(sub { msg()
                         =~ /not safe/ }, 10),
   '... its report says the record is refused for it');
ok($etcd->wait_for(sub { denied($good) }, 10), '... audited "denied"');
chmod 0644, "$d/writer.pub";

mkdir "$d/drop";
chmod 0777, "$d/drop";
symlink "$d/writer.pub", "$d/drop/trust.pub" or die "symlink: $!\n";
restart_with("$d/drop/trust.pub");
ok($etcd->wait_for(sub { msg()
                         =~ /directory "\Q$d\E\/drop" can be changed/ }, 10),
   'a --trust-key symlink in a directory anyone may change: refused')
    or diag($n->agent_log);
ok(!$n->fleet_layer, '... HA stays on');

symlink "$d/writer.pub", "$d/trust.pub" or die "symlink: $!\n";
restart_with("$d/trust.pub");
ok($etcd->wait_for(sub { (($n->fleet_layer // {})->{revision} // 0) == $good }, 10),
   'a safe symlink, and the agent restarted: applied again')
    or diag($n->agent_log);

# ---- more junk keys than the agent has slots
$n->stop_agent;
($rc, $out, $err) = $etcd->cli('clear', @W, '--upstream', 'app');
is($rc, 0, 'app cleared while the agent is down') or diag($err);
ok($n->fleet_layer, '... nginx still holds it (nobody told it)');
my $junk = 0;
for my $i (1 .. 300) {
    $junk++ if gateway('/v3/kv/put', {
        key => encode_base64(sprintf('/ha-optout/prod/flags/aaa-%03d', $i),
                             ''),
        value => encode_base64('{"junk":1}', '') });
}
is($junk, 300, '300 junk keys written under flags/ (sorting before app)');
$n->start_agent;
ok($etcd->wait_for(sub { !$n->fleet_layer }, 20),
   'the agent, started among the junk, still removes the cleared flag')
    or diag(substr($n->agent_log, -2000));
($rc, $out, $err) = $etcd->cli('set', @W, '--upstream', 'other',
    '--no-failover', '--ttl', '120s', '--reason', 'after junk');
ok($etcd->wait_for(sub { $n->fleet_layer('other') }, 20),
   '... and applies a new genuine flag')
    or diag(substr($n->agent_log, -2000));
$etcd->cli('clear', @W, '--upstream', 'other');
ok($etcd->wait_for(sub { !$n->fleet_layer('other') }, 10), '... and its clear');
$etcd->etcdctl('del', '--prefix', '/ha-optout/prod/flags/aaa-');

# ---- a flags/ prefix too big for one answer
$n->stop_agent;
my $blob = encode_base64('x' x (1400 * 1024), '');
my $big = 0;
for my $i (1 .. 50) {
    $big++ if gateway('/v3/kv/put', {
        key => encode_base64(sprintf('/ha-optout/prod/flags/big-%02d', $i),
                             ''),
        value => $blob });
}
is($big, 50, '50 values of 1.4 MB under flags/');
$n->start_agent;
($rc, $out, $err) = $etcd->cli('set', @W, '--upstream', 'app',
    '--no-failover', '--ttl', '120s', '--reason', 'after big');
ok($etcd->wait_for(sub { $n->fleet_layer }, 30),
   'the agent reconciles past them and applies a genuine flag')
    or diag(substr($n->agent_log, -1500));
$etcd->cli('clear', @W, '--upstream', 'app');
ok($etcd->wait_for(sub { !$n->fleet_layer }, 10), '... and its clear');
$etcd->etcdctl('del', '--prefix', '/ha-optout/prod/flags/big-');

# ---- terminal escapes in what etcd holds
my $esc = "\e]0;owned\a\e[2J";
gateway('/v3/kv/put', {
    key => encode_base64("/ha-optout/prod/flags/x$esc", ''),
    value => encode_base64(encode_json({ upstream => "x$esc",
        reason => "r$esc", actor => "m$esc", ttl => '60s' }), '') });
gateway('/v3/kv/put', {
    key => encode_base64("/ha-optout/prod/agents/h$esc", ''),
    value => encode_base64(encode_json({ host => "h$esc",
        seen_at => "s$esc", upstreams => { "u$esc" => { result => "r$esc" } }
    }), '') });
($rc, $out) = $etcd->cli('status', @W);
like($out, qr/owned/, 'status --etcd shows the forged record');
unlike($out, qr/[\x00-\x09\x0b-\x1f\x7f]/, '... with no control byte');
($rc, $out) = $etcd->cli('fleet', 'status', @W);
like($out, qr/h.*owned/, 'fleet status shows the forged report');
unlike($out, qr/[\x00-\x09\x0b-\x1f\x7f]/, '... with no control byte');
$etcd->etcdctl('del', '--prefix', '/ha-optout/prod/flags/x');
$etcd->etcdctl('del', '--prefix', '/ha-optout/prod/agents/h');

$n->stop;
$etcd->stop;
done_testing();
