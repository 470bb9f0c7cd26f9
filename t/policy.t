#!/usr/bin/perl

# ha_optout_policy: which opt-outs the API may set, for how long, whether
# ttl "none" is allowed, protected upstreams; nginx -t points at the line
# and column of a bad policy file.

use strict;
use warnings;

use Test::More;
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $policy = $t->write_file('policy.yaml', <<'EOF');
# who may switch what off, and for how long
upstreams:
  "*":
    allow: [failover, pin, replication, sticky]
    max_ttl: 1h
    ttl_none: false
  app:
    allow: [failover, pin]
  forever:
    ttl_none: true
  payments:
    protected: true
EOF

my $conf = <<'EOF';
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream forever {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    upstream payments {
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

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

$t->conf($conf)->run;

my $b2 = '127.0.0.1:' . $t->port('b2');

sub forbidden {
    my ($res, $name, $msg_re) = @_;
    is($res->{status}, 403, "$name: 403");
    is($res->{json}{error}{code}, 'ForbiddenByPolicy',
        "$name: code ForbiddenByPolicy");
    like($res->{json}{error}{message} // '', $msg_re, "$name: says why");
    ok(!exists $res->{headers}{'www-authenticate'},
        "$name: no WWW-Authenticate, the token was fine");
}

###############################################################################
# max_ttl

forbidden($t->api(PUT => 'v1/flags/app', json => {
              failover => JSON::PP::false, ttl => '2h',
              reason => 'too long' }),
          'a ttl over max_ttl', qr/ttl 2h is over the policy's max_ttl of 1h/);

my $ok = $t->api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '30m', reason => 'within policy' });
is($ok->{status}, 200, 'a ttl within max_ttl is accepted');

forbidden($t->api(PATCH => 'v1/flags/app', json => { ttl => '90m' }),
          'a PATCH extending the ttl over max_ttl', qr/max_ttl of 1h/);

my $get = $t->api(GET => 'v1/flags/app')->{json};
is($get->{expires_at}, $ok->{json}{expires_at},
    'the refused PATCH left the expiry alone');

is($t->api(PATCH => 'v1/flags/app', json => { ttl => '45m' })->{status}, 200,
    'a PATCH within max_ttl is accepted');

###############################################################################
# allowed opt-outs

forbidden($t->api(PUT => 'v1/flags/app', json => {
              replication => JSON::PP::false, ttl => '10m',
              reason => 'not allowed here' }),
          'an opt-out the policy does not allow',
          qr/does not allow opting out of "replication" on upstream "app"/);

forbidden($t->api(PATCH => 'v1/flags/app', json => {
              sticky => JSON::PP::true }),
          'a PATCH adding a disallowed opt-out', qr/"sticky"/);

is($t->api(PUT => 'v1/flags/app', json => {
       pin => $b2, ttl => '10m', reason => 'pin is allowed' })->{status},
   200, 'an allowed opt-out (pin) is accepted');

is($t->api(PUT => 'v1/flags/forever', json => {
       replication => JSON::PP::false, ttl => '10m',
       reason => 'the default allows it' })->{status},
   200, 'an upstream not listed gets the "*" defaults');

###############################################################################
# ttl "none"

forbidden($t->api(PUT => 'v1/flags/app', json => {
              failover => JSON::PP::false, ttl => 'none',
              reason => 'forever?' }),
          'ttl none where ttl_none is false',
          qr/ttl "none" is not allowed by policy on upstream "app"/);

my $none = $t->api(PUT => 'v1/flags/forever', json => {
    failover => JSON::PP::false, ttl => 'none', reason => 'allowed here' });
is($none->{status}, 200, 'ttl none is accepted where ttl_none is true');
ok($none->{is_json} && exists $none->{json}{expires_at}
   && !defined $none->{json}{expires_at}, 'a ttl none flag has no expiry');

forbidden($t->api(PUT => 'v1/flags/forever', json => {
              failover => JSON::PP::false, ttl => '3h',
              reason => 'max_ttl still applies' }),
          'max_ttl from "*" still applies next to ttl_none', qr/max_ttl of 1h/);

###############################################################################
# protected

forbidden($t->api(PUT => 'v1/flags/payments', json => {
              failover => JSON::PP::false, ttl => '5m',
              reason => 'quick fix' }),
          'an opt-out on a protected upstream',
          qr/upstream "payments" is protected by policy/);

my $p = $t->api(GET => 'v1/flags/payments');
ok($p->{is_json} && !defined $p->{json}, 'the protected upstream has no flag');

$t->stop;

###############################################################################
# nginx -t reports FILE:LINE:COLUMN

# rejected(NAME, POLICY TEXT, LINE, COLUMN, MESSAGE_RE)

sub rejected {
    my ($name, $text, $line, $col, $msg_re) = @_;

    $t->write_file('policy.yaml', $text);
    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;

    isnt($rc, 0, "nginx -t refuses $name");
    like($out, qr/\[emerg\].*policy \Q$policy\E:$line:$col: .*$msg_re/,
        "$name: reported at $line:$col") or diag $out;
}

rejected('an unknown key', <<'EOF', 4, 5, qr/unknown key "max_tll"/);
upstreams:
  app:
    allow: [failover]
    max_tll: 4h
EOF

rejected('invalid YAML', <<'EOF', 3, 8,
upstreams:
  app: {allow: [failover
windows: []
EOF
    qr/did not find expected .* flow sequence \(which started at 2:16\)/);

rejected('a bad duration', <<'EOF', 3, 14, qr/max_ttl must be a duration/);
upstreams:
  "*":
    max_ttl: forever
EOF

rejected('an unknown opt-out', <<'EOF', 3, 23, qr/unknown opt-out "weight"/);
upstreams:
  app:
    allow: [failover, weight]
EOF

rejected('a window without a reason', <<'EOF', 2, 5, qr/needs a "reason"/);
windows:
  - upstream: app
    every: "sun 02:00-04:00"
    failover: false
EOF

rejected('a bad weekly window', <<'EOF', 3, 12, qr/every must look like/);
windows:
  - upstream: app
    every: "sunday at two"
    failover: false
    reason: "x"
EOF

rejected('a misspelt day', <<'EOF', 3, 12, qr/every must look like/);
windows:
  - upstream: app
    every: "sunnday 02:00-04:00"
    failover: false
    reason: "x"
EOF

rejected('a one-off window that ends before it starts', <<'EOF', 4, 10,
windows:
  - upstream: app
    start: 2026-12-01T03:00:00Z
    end: 2026-12-01T02:00:00Z
    failover: false
    reason: "backwards"
EOF
    qr/end must be after start/);

rejected('a window that opts out of nothing', <<'EOF', 2, 5,
windows:
  - upstream: app
    every: "mon 01:00-02:00"
    reason: "nothing"
EOF
    qr/must opt out of something/);

rejected('a policy for an upstream without ha_optout', <<'EOF', 4, 3,
upstreams:
  app:
    max_ttl: 1h
  nosuch:
    max_ttl: 1h
EOF
    qr/no upstream "nosuch" with "ha_optout"/);

rejected('a window pin that is not a server', <<'EOF', 4, 10,
windows:
  - upstream: app
    every: "sat 23:00-01:00"
    pin: "127.0.0.1:1"
    reason: "hold"
EOF
    qr/pin "127.0.0.1:1" is not a usable server of upstream "app"/);

$t->write_file('policy.yaml', <<'EOF');
windows:
  - upstream: app
    every: "sat 23:00-01:00"
    failover: false
    reason: "a weekly window that passes midnight"
  - upstream: app
    every: "Sunday 22:00-24:00"
    replication: false
    reason: "full day names and 24:00 are fine"
EOF
my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'nginx -t accepts a valid policy') or diag $out;

unlink $policy;
($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'nginx -t refuses a missing policy file');
like($out, qr/policy \Q$policy\E: no such file/, 'and names it');

###############################################################################

done_testing;
