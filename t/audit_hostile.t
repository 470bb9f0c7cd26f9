#!/usr/bin/perl

# Hostile inputs (docs/reliability.md, "Hostile inputs"), the smaller ones
# of the audit trail and the zone:
#
# - any ha:read token can be refused a write as often as its holder likes:
#   a flood with a 4 KB `sub` used to write one 4 KB-actor "denied" line
#   per request; now one line per actor and upstream per minute, the actor
#   cut to 128 bytes, the next line telling how many were left out;
# - a write with a valid token without `sub` used to be applied with a
#   null actor: now 401 InvalidToken, nothing changes;
# - the audit log used to be created 0644 (and 0644 again after a
#   rotation and `nginx -s reopen`): now 0640, as Debian's nginx logs;
# - a zone whose replay cache was filled with spent jtis used to make a
#   reload that adds upstreams fail ("zone is too small"), although
#   `nginx -t` passed: spent jtis keep to half the zone, and give way to
#   upstream records as a last resort.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Load qw(audit_lines);

my $t = HaOptout::Test->new(workers => 2);

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $conf = <<'EOF';
http {
    ha_optout_zone ha_optout 64k;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }
%%MORE%%
    server {
        listen 127.0.0.1:%%PORT_http%% reuseport;

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

(my $c = $conf) =~ s/%%MORE%%//;
$t->conf($c);
$t->run;

my $audit = $t->testdir . '/audit.jsonl';

###############################################################################
# a flood of refused writes with a 4 KB sub

my $long = 'm' x 4096;
my %st;
for my $i (1 .. 30) {
    my $r = $t->api(PUT => 'v1/flags/app', token_args => {
        sub => $long, scope => 'ha:read' },
        json => { failover => JSON::PP::false, ttl => '5m', reason => 'x' });
    $st{ $r->{status} }++;
}
is_deeply(\%st, { 403 => 30 }, '30 writes with an ha:read token are refused 403');

my @denied = grep { $_->{action} eq 'denied' } audit_lines($t);
is(scalar @denied, 1, 'one "denied" line for 30 refusals of one actor');
ok(length($denied[0]{actor} // '') <= 128,
   sprintf 'its actor is cut to at most 128 bytes (%d)',
   length($denied[0]{actor} // ''));

$t->api(PUT => 'v1/flags/app', token_args => { sub => 'bob',
                                               scope => 'ha:read' },
        json => { failover => JSON::PP::false, ttl => '5m', reason => 'x' });
@denied = grep { $_->{action} eq 'denied' } audit_lines($t);
is(scalar @denied, 2, 'another actor gets its own line');
is($denied[1]{actor}, 'bob', 'naming it');

###############################################################################
# a write without sub

my $nosub = $t->api(PUT => 'v1/flags/app', token_args => { omit => ['sub'] },
                    json => { failover => JSON::PP::false, ttl => '5m',
                              reason => 'who am I' });
is($nosub->{status}, 401, 'a write with a token without sub is refused 401');
is($nosub->{json}{error}{code}, 'InvalidToken', 'as JSON InvalidToken');
like($nosub->{json}{error}{message} // '', qr/sub/, 'saying that sub is missing');
is($t->api(GET => 'v1/flags/app', token_args => { omit => ['sub'] })->{json},
   undef, 'nothing was set (a token without sub may still read)');
is(scalar(grep { $_->{action} eq 'set' } audit_lines($t)), 0,
   'and nothing audited as set');

###############################################################################
# the audit log's mode, also after a rotation

is(sprintf('%04o', (stat $audit)[2] & 07777), '0640', 'the audit log is 0640');

rename $audit, "$audit.1" or die "rename: $!\n";
$t->_system($t->_nginx_cmd('-s', 'reopen'));
ok($t->wait_for(sub { -e $audit }, 5), 'nginx -s reopen makes a new audit log');
my $set = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '5m', reason => 'after rotation' });
is($set->{status}, 200, 'a write after the rotation');
ok($t->wait_for(sub { -s $audit }, 5), 'goes to the new log');
is(sprintf('%04o', (stat $audit)[2] & 07777), '0640',
   'which is 0640 too');
is($t->api(DELETE => 'v1/flags/app')->{status}, 200, 'cleared again');

###############################################################################
# spent jtis fill the zone, then a reload adds upstreams

my ($n, $full) = (0, 0);
while ($n++ < 3000) {
    my $r = $t->api(PUT => 'v1/flags/app', token_args => { ttl => 3000 },
                 json => { failover => JSON::PP::false, ttl => '5m',
                           reason => "fill $n" });
    if ($r->{status} == 507) { $full = 1; last }
    die "PUT $n: $r->{status} $r->{body}\n" unless $r->{status} == 200;
}
ok($full, "the replay cache is full after $n writes (507)");

my $more = join '', map { <<"EOF" } qw(new1 new2);

    upstream $_ {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }
EOF
($c = $conf) =~ s/%%MORE%%/$more/;
$t->conf($c);
my ($rc) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts the configuration with two more upstreams');
ok($t->reload, 'the reload succeeds');
unlike($t->error_log, qr/\[emerg\].*too small/, 'no "zone is too small"');

my $g = $t->api(GET => 'v1/flags/new2');
is($g->{status}, 200, 'the new upstream is known to the API');
my $p = $t->api(PUT => 'v1/flags/new1', json => {
    failover => JSON::PP::false, ttl => '1m', reason => 'new upstream' });
ok($p->{status} == 200 || $p->{status} == 507,
   "a write on it answers 200 or 507, never 5xx HTML ($p->{status})");

diag(sprintf 'audit_hostile: 30 refusals -> %d line(s); replay cache full '
     . 'after %d jtis in a 64k zone; reload with 2 more upstreams ok',
     scalar @denied - 1, $n);

done_testing();
