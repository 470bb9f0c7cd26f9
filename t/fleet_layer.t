#!/usr/bin/perl

# The fleet layer in the module (SPEC section 11), without etcd: the
# agent's endpoint v1/fleet/{upstream} needs scope ha:fleet and goes the
# API layer's way (validation, policy, If-Match, audit, state file); a
# revision applied twice changes nothing and writes no second audit line;
# precedence api > fleet > window > config; refusals are audited "denied"
# through v1/fleet/{upstream}/denied; status shows the layer everywhere.

use strict;
use warnings;

use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep time);
use HaOptout::Test;

my $t = HaOptout::Test->new(workers => 2);
$t->backend('b1');
$t->backend('b2');
$t->secret_file;
$t->state_dir;

$t->write_file('policy.yaml', <<'EOF');
upstreams:
  "*":
    allow: [failover, pin, replication, sticky]
    max_ttl: 1h
  payments:
    allow: [pin]
EOF

$t->conf(<<'EOF')->run;
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_environment prod;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/state/audit.jsonl;

    ha_optout_flag app replication=off "reason=config beneath";

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream payments {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            ha_optout_header on;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

my %agent = (token_args => { sub => 'lb1', scope => 'ha:fleet' });
my $b2 = '127.0.0.1:' . $t->port('b2');

sub fleet {
    my ($method, $path, %o) = @_;
    return $t->api($method, "v1/fleet$path", %agent, %o);
}

sub audit {
    return map { decode_json($_) } grep { /\S/ }
           split /\n/, $t->read_file('state/audit.jsonl');
}

sub layers { $t->status->{upstreams}{$_[0] // 'app'}{layers} }

my %rec = (failover => JSON::PP::false, pin => $b2, ttl => '30m',
           reason => 'INC-9 fleet hold', revision => 41, actor => 'alice',
           via => 'lb1');

# ---- scope
my $r = $t->api(PUT => 'v1/fleet/app', json => \%rec);
is($r->{status}, 403, 'PUT v1/fleet with an ha:write token: 403');
is($r->{json}{error}{code}, 'InsufficientScope', '... InsufficientScope');
like($r->{json}{error}{message}, qr/ha:fleet/, '... naming ha:fleet');

$r = fleet(PUT => '/app', json => { %rec }, token_args =>
           { sub => 'lb1', scope => 'ha:read' });
is($r->{status}, 403, 'an ha:read token cannot write the fleet layer');

$r = $t->api(PUT => 'v1/flags/app', %agent, json => { failover =>
             JSON::PP::false, ttl => '5m', reason => 'x' });
is($r->{status}, 403, 'an ha:fleet token cannot write the API layer');

# ---- validation, as the API layer's
my %bad = %rec;
delete $bad{revision};
is(fleet(PUT => '/app', json => \%bad)->{status}, 400,
   'PUT without revision: 400');
%bad = %rec;
delete $bad{actor};
is(fleet(PUT => '/app', json => \%bad)->{status}, 400,
   'PUT without actor: 400');
is(fleet(PUT => '/app', json => { %rec, revision => 'x' })->{status}, 400,
   'a revision that is not a number: 400');
$r = fleet(PUT => '/app', json => { %rec, color => 'red' });
is($r->{status}, 400, 'an unknown field: 400');
is(fleet(PUT => '/app', json => { %rec, ttl => '2h' })->{status}, 403,
   'a ttl over the policy\'s max_ttl: 403');
is(fleet(PUT => '/payments', json => { %rec, pin => undef })->{status}, 403,
   'an opt-out the policy does not allow there: 403');
is(fleet(PUT => '/app', json => { %rec, pin => '127.0.0.1:1' })->{status},
   409, 'a pin naming no server: 409');
is(fleet(PUT => '/nope', json => \%rec)->{status}, 404,
   'an unknown upstream: 404');
is(fleet(POST => '/app', json => \%rec)->{status}, 405, 'POST: 405');
ok(!layers()->{fleet}, 'nothing of it was stored');

# ---- set
$r = fleet(PUT => '/app', json => \%rec);
is($r->{status}, 200, 'PUT v1/fleet/app with an ha:fleet token');
is_deeply([ @{ $r->{json} }{qw(source actor via revision pin)} ],
          [ 'fleet', 'alice', 'lb1', 41, $b2 ],
          'stored: source fleet, the record\'s actor, via the token subject, '
          . 'the revision');
my $etag = $r->{headers}{etag};
ok($etag, 'an ETag');
is($t->get('/')->{headers}{'x-backend'}, 'b2', 'the fleet pin acts');
is($t->status->{upstreams}{app}{flag}{source}, 'fleet',
   'status: the acting flag is the fleet flag');
is(layers()->{fleet}{revision}, 41, 'status layers: fleet');
is(layers()->{config}{reason}, 'config beneath', 'the config flag beneath');

my @a = grep { ($_->{layer} // '') eq 'fleet' } audit();
is(scalar @a, 1, 'one audit line');
is_deeply([ @{ $a[0] }{qw(action layer revision via actor)} ],
          [ 'set', 'fleet', 41, 'lb1', 'alice' ],
          'audit: set, layer fleet, revision, via, the signed actor');

# ---- the same revision again: nothing changes, no audit line
$r = fleet(PUT => '/app', json => { %rec, ttl => '20m' });
is($r->{status}, 200, 'the same revision again: 200');
is($r->{headers}{etag}, $etag, '... the same version');
is(scalar(grep { ($_->{layer} // '') eq 'fleet' } audit()), 1,
   '... and no second audit line');

$r = fleet(PUT => '/app', json => { %rec, revision => 42 },
           headers => { 'If-Match' => '"999"' });
is($r->{status}, 412, 'If-Match that does not match: 412');

# ---- GET
$r = fleet(GET => '');
is($r->{status}, 200, 'GET v1/fleet');
is($r->{json}{app}{revision}, 41, '... app\'s fleet flag');
ok(exists $r->{json}{payments} && !defined $r->{json}{payments},
   '... payments: null');
$r = $t->api(GET => 'v1/fleet/app');
is($r->{json}{revision}, 41, 'GET v1/fleet/app with ha:read');

# ---- precedence: api > fleet; DELETE of the API flag reveals the fleet
$r = $t->api(PUT => 'v1/flags/app', json => { sticky => JSON::PP::true,
             ttl => '5m', reason => 'local hold' });
is($r->{status}, 200, 'an API flag on top');
is($t->status->{upstreams}{app}{flag}{source}, 'api', 'the API flag acts');
$r = $t->api(DELETE => 'v1/flags/app');
is($r->{json}{source}, 'fleet', 'DELETE of the API flag reveals the fleet');
is($t->get('/')->{headers}{'x-backend'}, 'b2', 'and the fleet pin acts');

# ---- Prometheus and HTML
my $p = $t->get('/ha-status?format=prometheus')->{body};
like($p, qr/^ha_optout_flag_info\{[^}]*upstream="app",layer="fleet"/m,
     'Prometheus: flag_info layer="fleet"');
like($p, qr/^ha_optout_layer_active\{environment="prod",upstream="app",layer="fleet"\} 1$/m,
     'Prometheus: ha_optout_layer_active layer="fleet" 1');
like($p, qr/^ha_optout_layer_active\{environment="prod",upstream="app",layer="api"\} 0$/m,
     '... layer="api" 0 after its DELETE');
like($p, qr/^ha_optout_layer_active\{environment="prod",upstream="app",layer="config"\} 1$/m,
     '... layer="config" 1 beneath');
my $h = $t->get('/ha-status?format=html')->{body};
like($h, qr/class="layer">fleet/, 'HTML: the layer is fleet');
like($h, qr/a config flag lies beneath/, 'HTML: ... and what lies beneath');

# ---- a newer revision replaces; PATCH keeps the actor
$r = fleet(PUT => '/app', json => { %rec, revision => 50, ttl => '10m' });
is($r->{json}{revision}, 50, 'a newer revision replaces the flag');
$r = fleet(PATCH => '/app', json => { ttl => '15m' });
is($r->{status}, 200, 'PATCH v1/fleet/app');
is($r->{json}{actor}, 'alice', '... keeps the signed actor');

# ---- denied: the agent refused a record
$r = fleet(POST => '/app/denied', json => { revision => 77,
           reason => "the signature does not verify" });
is($r->{status}, 200, 'POST v1/fleet/app/denied');
my ($den) = grep { $_->{action} eq 'denied' && ($_->{layer} // '') eq 'fleet' }
            audit();
ok($den, 'audited "denied"');
is_deeply([ @{ $den }{qw(layer revision via)} ], [ 'fleet', 77, 'lb1' ],
          '... with layer fleet, the revision and the agent');
like($den->{reason}, qr/fleet record refused: the signature does not verify/,
     '... and why');
is(layers()->{fleet}{revision}, 50, 'a denial changes nothing');
is($t->api(POST => 'v1/fleet/app/denied', json => { revision => 1 })
   ->{status}, 403, 'denied needs ha:fleet too');

# ---- the state file keeps the fleet layer
my $state = $t->read_file('state/ha-optout.state');
like($state, qr/^fleet:\n  app:\n(?:    .*\n)*    revision: 50\n/m,
     'the state file has the fleet layer with its revision')
    or diag($state);
$t->stop;
$t->run;
ok($t->wait_for(sub { (layers()->{fleet}{revision} // 0) == 50 }, 5),
   'restarted: the fleet flag is restored from the state file');
is(layers()->{fleet}{via}, 'lb1', '... with its via');
ok(grep({ $_->{action} eq 'restore' && ($_->{layer} // '') eq 'fleet' }
        audit()), '... and audited "restore"');
my $n = grep { ($_->{layer} // '') eq 'fleet' } audit();
is(fleet(PUT => '/app', json => { %rec, revision => 50 })->{status}, 200,
   'the agent sends the same revision after the restart');
is(scalar(grep { ($_->{layer} // '') eq 'fleet' } audit()), $n,
   '... no audit line');

# ---- DELETE restores HA (down to the config flag)
$r = fleet(DELETE => '/app');
is($r->{status}, 200, 'DELETE v1/fleet/app');
ok(!layers()->{fleet}, 'the fleet layer is empty');
is($t->status->{upstreams}{app}{flag}{source}, 'config',
   'the config flag acts again');

# ---- expiry
$r = fleet(PUT => '/app', json => { %rec, revision => 60, ttl => '1s' });
is($r->{status}, 200, 'a fleet flag of 1s');
ok($t->wait_for(sub { grep { $_->{action} eq 'expire'
                             && ($_->{layer} // '') eq 'fleet' } audit() }, 5),
   'expires and is audited "expire" with layer fleet');
ok(!layers()->{fleet}, 'the fleet layer is empty again');

done_testing();
