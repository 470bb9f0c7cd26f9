#!/usr/bin/perl

# Alerts that reach a team, end to end: a real Prometheus scrapes the
# status location (?format=prometheus) with docs/prometheus-alerts.yml as
# its rule file and sends to a real Alertmanager, which routes to a webhook
# this test runs.  Setting a flag through the admin API makes HaOptoutActive
# arrive there naming the environment, the upstream, who set it and why;
# clearing it makes the webhook receive "resolved".

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes qw(sleep time);
use HaOptout::Test;
use HaOptout::Daemon;

my $PROMETHEUS = HaOptout::Daemon->find_program('prometheus');
my $ALERTMANAGER = HaOptout::Daemon->find_program('prometheus-alertmanager',
                                                  'alertmanager');

plan(skip_all => 'prometheus or alertmanager not found (Debian packages '
               . '"prometheus", "prometheus-alertmanager"; run "make deps")')
    unless $PROMETHEUS && $ALERTMANAGER;

my $RULES = abs_path(dirname(__FILE__) . '/../docs/prometheus-alerts.yml');

my $t = HaOptout::Test->new;
my $dir = $t->testdir;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

$t->conf(<<'EOF')->run;
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_environment staging-e2e;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream idle {
        server 127.0.0.1:%%PORT_b1%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
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

my ($http, $pport, $aport, $hport) =
    map { $t->port($_) } qw(http prometheus alertmanager webhook);

# ------------------------------------------------------------ the webhook

my $hook = HaOptout::Daemon->webhook(port => $hport,
                                     file => "$dir/webhook.log");

# ------------------------------------------------------------ Alertmanager

# the webhook route of docs/status.md, as it is written there (its port
# replaced), and the team route shown beside it checked with amtool

my $DOC = $t->read_file(dirname($RULES) . '/status.md');
my @yaml = $DOC =~ /^```yaml\n(.*?)^```$/msg;
my ($am_conf) = grep { /^route:\n  receiver: team-webhook$/m } @yaml;
my ($am_team) = grep { /^# alertmanager\.yml$/m } @yaml;
ok($am_conf && $am_team, 'docs/status.md shows the two Alertmanager routes')
    or BAIL_OUT('docs/status.md: no Alertmanager routes');

$am_conf =~ s{http://127\.0\.0\.1:9099/}{http://127.0.0.1:$hport/}
    or BAIL_OUT('the webhook route has no http://127.0.0.1:9099/ url');
$t->write_file('alertmanager.yml', $am_conf);

my $AMTOOL = HaOptout::Daemon->find_program('amtool');

SKIP: {
    skip 'no amtool', 4 unless $AMTOOL;

    my $f = $t->write_file('alertmanager-team.yml', $am_team);
    my $out = `$AMTOOL check-config '$f' 2>&1`;
    is($? >> 8, 0, 'amtool accepts the team route of docs/status.md')
        or diag $out;

    my %want = (
        'alertname=HaOptoutActive environment=production severity=info'
            => 'sre-pagerduty,sre-slack',
        'alertname=HaOptoutActive environment=staging severity=info'
            => 'sre-slack',
        'alertname=HaOptoutSuppressedFailoverSpike severity=critical'
            => 'sre-pagerduty,sre-slack',
    );

    for my $labels (sort keys %want) {
        $out = `$AMTOOL config routes test --config.file='$f' $labels 2>/dev/null`;
        chomp $out;
        is($out, $want{$labels}, "the team route sends $labels to $want{$labels}");
    }
}

mkdir "$dir/am-data";
my $am = HaOptout::Daemon->spawn(name => 'alertmanager', log =>
    "$dir/alertmanager.log", cmd => [$ALERTMANAGER,
        "--config.file=$dir/alertmanager.yml",
        "--storage.path=$dir/am-data",
        "--web.listen-address=127.0.0.1:$aport",
        '--cluster.listen-address=',
        '--log.level=info']);

# ------------------------------------------------------------ Prometheus

$t->write_file('prometheus.yml', <<"EOF");
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $RULES
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$aport"]
scrape_configs:
  - job_name: nginx-ha-optout
    metrics_path: /ha-status
    params: {format: [prometheus]}
    static_configs:
      - targets: ["127.0.0.1:$http"]
EOF

mkdir "$dir/prom-data";
my $prom = HaOptout::Daemon->spawn(name => 'prometheus', log =>
    "$dir/prometheus.log", cmd => [$PROMETHEUS,
        "--config.file=$dir/prometheus.yml",
        "--storage.tsdb.path=$dir/prom-data",
        "--web.listen-address=127.0.0.1:$pport",
        '--log.level=info']);

ok($am->wait_http("http://127.0.0.1:$aport/-/ready", 30),
    'alertmanager is ready') or BAIL_OUT("alertmanager:\n" . $am->log_tail);
ok($prom->wait_http("http://127.0.0.1:$pport/-/ready", 30),
    'prometheus is ready') or BAIL_OUT("prometheus:\n" . $prom->log_tail);

my $ua = HTTP::Tiny->new(timeout => 5, proxy => undef, http_proxy => undef,
                         https_proxy => undef);
my $JSON = JSON::PP->new->utf8;

sub prom_api {
    my ($path) = @_;
    my $r = $ua->get("http://127.0.0.1:$pport/api/v1/$path");
    return $r->{success} ? eval { $JSON->decode($r->{content}) } : undef;
}

sub query {
    my ($q) = @_;
    my $r = prom_api('query?query=' . join '',
                     map { sprintf '%%%02X', ord } split //, $q);
    return $r && $r->{status} eq 'success' ? $r->{data}{result} : [];
}

# steady state first: the target scraped, the rules loaded, Alertmanager
# known to Prometheus; nothing fires

ok($t->wait_for(sub {
        @{ query('ha_optout_active{upstream="app"} == 0') } }, 30),
    'prometheus scrapes the status location') or diag $prom->log_tail;

my $groups = prom_api('rules');
my @rules = map { $_->{name} } map { @{ $_->{rules} } }
            @{ $groups->{data}{groups} // [] };
ok((grep { $_ eq 'HaOptoutActive' } @rules),
    'the rules of docs/prometheus-alerts.yml are loaded') or diag "@rules";

ok($t->wait_for(sub {
        my $r = prom_api('alertmanagers');
        @{ $r->{data}{activeAlertmanagers} // [] } }, 20),
    'prometheus knows the alertmanager');

is(scalar(() = $hook->received), 0, 'no notification while no flag is set');

# ------------------------------------------------------------ set a flag

my $REASON = 'INC-5150 "db" failover drill';

# the webhook payload of the notifications of upstream app, decoded
sub notifications {
    my (@n);
    for my $r ($hook->received) {
        my $j = eval { $JSON->decode($r->{body}) } or next;
        for my $a (@{ $j->{alerts} // [] }) {
            next unless ($a->{labels}{alertname} // '') eq 'HaOptoutActive';
            push @n, { time => $r->{time}, status => $j->{status},
                       alert => $a, receiver => $j->{receiver} };
        }
    }
    return @n;
}

sub first_with {
    my ($status, $upstream, $actor) = @_;
    my ($n) = grep { $_->{alert}{status} eq $status
                     && $_->{alert}{labels}{upstream} eq $upstream
                     && (!defined $actor
                         || ($_->{alert}{labels}{actor} // '') eq $actor) }
              notifications();
    return $n;
}

my $t_set = time;
my $r = $t->api(PUT => 'v1/flags/app', token_args => { sub => 'carol' },
                json => { failover => JSON::PP::false, ttl => '10m',
                          reason => $REASON });
is($r->{status}, 200, 'carol switches failover off on app');

my $fired = $t->wait_for(sub { first_with('firing', 'app') }, 30);
ok($fired, 'the webhook receives HaOptoutActive firing')
    or diag join '', $hook->log_text, $am->log_tail, $prom->log_tail;

my $fire_s = $fired ? $fired->{time} - $t_set : undef;
note(sprintf 'PUT to webhook (firing): %.2f s', $fire_s) if $fired;

my $l = $fired ? $fired->{alert}{labels} : {};
my $an = $fired ? $fired->{alert}{annotations} : {};

is($fired && $fired->{receiver}, 'team-webhook', 'routed to the receiver');
is($l->{environment}, 'staging-e2e', 'the alert names the environment');
is($l->{upstream}, 'app', 'the alert names the upstream');
is($l->{actor}, 'carol', 'the alert names who set the flag');
is($l->{reason}, $REASON, 'the alert gives the reason');
is($l->{layer}, 'api', 'and the layer that holds it');
is($l->{severity}, 'info', 'severity info');
is($an->{summary},
    qq{HA suspended on app (staging-e2e) by carol: $REASON},
    'the summary a person reads names them all');
like($an->{description} // '',
    qr/ha-optoutctl clear --upstream app/, 'the description says how to end it');

ok(!first_with('firing', 'idle'), 'the upstream without a flag does not fire');

# ------------------------------------------------------------ replace it

# another person takes over: the alert now names them, carol's resolves

$r = $t->api(PUT => 'v1/flags/app', token_args => { sub => 'dave' },
             json => { failover => JSON::PP::false, ttl => '10m',
                       reason => 'INC-5151 taking over' });
is($r->{status}, 200, 'dave replaces the flag');

ok($t->wait_for(sub { first_with('firing', 'app', 'dave') }, 30),
    'the webhook receives the alert naming dave');
ok($t->wait_for(sub { first_with('resolved', 'app', 'carol') }, 30),
    'and carol\'s alert resolved');

# ------------------------------------------------------------ clear it

my $t_clear = time;
$r = $t->api(DELETE => 'v1/flags/app', token_args => { sub => 'dave' });
is($r->{status}, 200, 'dave clears the flag');

my $resolved = $t->wait_for(sub { first_with('resolved', 'app', 'dave') },
                            30);
ok($resolved, 'the webhook receives HaOptoutActive resolved')
    or diag join '', $hook->log_text, $am->log_tail;

my $resolve_s = $resolved ? $resolved->{time} - $t_clear : undef;
note(sprintf 'DELETE to webhook (resolved): %.2f s', $resolve_s)
    if $resolved;

is($resolved && $resolved->{alert}{labels}{reason}, 'INC-5151 taking over',
    'the resolved alert is the one that fired');
ok($resolved && $resolved->{time} >= $t_clear,
    'and it came after the clear, not before');

ok($fire_s && $fire_s < 20, 'firing arrived within 20 s of the PUT');
ok($resolve_s && $resolve_s < 20, 'resolved arrived within 20 s of the DELETE');

$prom->stop;
$am->stop;
$hook->stop;

ok(!grep({ IO::Socket::INET->new(PeerAddr => "127.0.0.1:$_", Timeout => 1) }
         $pport, $aport, $hport),
    'prometheus, alertmanager and the webhook are stopped');

done_testing;
