#!/usr/bin/perl

# ha_optout_status, Prometheus text format: valid for promtool, every metric
# of SPEC section 6 with its labels and values, changes seen by the next
# scrape; and the alert rules in docs/ load and behave.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP ();
use Time::HiRes qw(time);
use HaOptout::Test;

my $PROMTOOL = (grep { -x "$_/promtool" } split /:/, $ENV{PATH})[0];
plan(skip_all => 'promtool not found (Debian package "prometheus"; '
               . 'run "make deps")') unless $PROMTOOL;
$PROMTOOL .= '/promtool';

my $DOCS = abs_path(dirname(__FILE__) . '/../docs');

my $t = HaOptout::Test->new;

$t->backend('good');
$t->dead_port('dead');
$t->secret_file;

# an environment with a quote, a backslash and a newline: label escaping;
# a reason in Latin-1, not UTF-8, as an old nginx.conf may have it
$t->conf(<<'EOF' =~ s/%%E9%%/\xe9/r);
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_environment "eu \"west\" \\ 1\nb";

    ha_optout_flag reporting failover=off "reason=nightly batch window";
    ha_optout_flag latin1 failover=off "reason=caf%%E9%% run";

    upstream app {
        zone app 64k;
        server 127.0.0.1:%%PORT_dead%% max_fails=0;
        server 127.0.0.1:%%PORT_good%% max_fails=0;
        ha_optout;
    }

    upstream reporting {
        server 127.0.0.1:%%PORT_good%%;
        ha_optout;
    }

    upstream idle {
        server 127.0.0.1:%%PORT_good%%;
        ha_optout;
    }

    upstream latin1 {
        server 127.0.0.1:%%PORT_good%%;
        ha_optout;
    }

    server {
        listen 127.0.0.1:%%PORT_http%%;

        proxy_next_upstream error timeout;

        location /app/ {
            proxy_pass http://app;
        }

        location = /gate {
            ha_optout_mirror_gate app;
            proxy_pass http://app;
        }

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

$t->run;

my $ENVIRONMENT = qq{eu "west" \\ 1\nb};
my $dead = '127.0.0.1:' . $t->port('dead');
my $good = '127.0.0.1:' . $t->port('good');

my %LABELS = (
    ha_optout_active => [qw(environment upstream)],
    ha_optout_layer_active => [qw(environment layer upstream)],
    ha_optout_flag_expiry_timestamp_seconds => [qw(upstream)],
    ha_optout_failover_suppressed_total => [qw(server upstream)],
    ha_optout_pinned_requests_total => [qw(server upstream)],
    ha_optout_replication_bypassed_total => [qw(upstream)],
    ha_optout_admin_requests_total => [qw(code method)],
    ha_optout_auth_failures_total => [qw(reason)],
    ha_optout_changes_total => [qw(action upstream)],
    ha_optout_flag_info => [qw(actor environment layer reason upstream)],
);

my %TYPE = map { $_ => /_total$/ ? 'counter' : 'gauge' } keys %LABELS;

# {name => [{labels => {...}, value => N}], type => {}, help => {}}
sub parse {
    my ($text) = @_;
    my %m = (samples => {}, type => {}, help => {});

    for my $line (split /\n/, $text) {
        if ($line =~ /^# HELP (\S+) (.+)$/) {
            $m{help}{$1} = $2;

        } elsif ($line =~ /^# TYPE (\S+) (\S+)$/) {
            $m{type}{$1} = $2;

        } elsif ($line =~ /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/) {
            my ($name, $l, $v) = ($1, $2 // '', $3);
            my %l;
            while ($l =~ /\G([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)",?/gc) {
                my ($k, $s) = ($1, $2);
                $s =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
                $l{$k} = $s;
            }
            push @{ $m{samples}{$name} }, { labels => \%l, value => $v };

        } else {
            $m{bad}++;
        }
    }

    return \%m;
}

# the value of the one sample with exactly these labels, or undef
sub value {
    my ($m, $name, %l) = @_;
    for my $s (@{ $m->{samples}{$name} // [] }) {
        my $sl = $s->{labels};
        next unless keys %$sl == keys %l;
        next if grep { !defined $sl->{$_} || $sl->{$_} ne $l{$_} } keys %l;
        return $s->{value};
    }
    return undef;
}

sub scrape {
    my (%o) = @_;
    my $r = $t->get($o{path} // '/ha-status?format=prometheus',
                    headers => $o{headers} // {});
    return ($r, parse($r->{body}));
}

sub promtool_ok {
    my ($text, $what) = @_;
    my $f = $t->write_file('metrics.txt', $text);
    my $out = `$PROMTOOL check metrics < '$f' 2>&1`;
    is($? >> 8, 0, $what) or diag $out;
    grouped_ok($text, $what);
}

# what promtool lets pass and OpenMetrics parsers refuse: a family's HELP,
# TYPE and samples in one group, never interleaved with another family's,
# and no control byte but the line ends
sub grouped_ok {
    my ($text, $what) = @_;
    my (%done, $cur, @bad);
    for my $line (split /\n/, $text) {
        my ($name) = $line =~ /^# (?:HELP|TYPE) (\S+)/;
        ($name) = $line =~ /^([a-zA-Z_:][\w:]*)/ unless defined $name;
        next unless defined $name;
        if (!defined $cur || $name ne $cur) {
            push @bad, $name if $done{$name}++;
            $cur = $name;
        }
    }
    is("@bad", '', "$what: every family in one group");
    ok($text !~ /[\x00-\x09\x0b-\x1f\x7f]/,
        "$what: no control byte but newline");
}

my %admin;      # "METHOD code" => requests we made

sub api {
    my $r = $t->api(@_);
    $admin{"$_[0] $r->{status}"}++;
    return $r;
}

###############################################################################

my ($r, $m) = scrape();

is($r->{status}, 200, 'metrics answer 200');
is($r->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8',
    'metrics carry the Prometheus text content type');
promtool_ok($r->{body}, 'promtool accepts the idle exposition');
ok(!$m->{bad}, 'every line is a comment or a sample');

for my $name (sort keys %LABELS) {
    is($m->{type}{$name}, $TYPE{$name}, "$name has TYPE $TYPE{$name}");
    ok($m->{help}{$name}, "$name has HELP");
}

is(value($m, 'ha_optout_active', environment => $ENVIRONMENT,
         upstream => 'idle'), 0, 'an upstream without a flag is not active');
is(value($m, 'ha_optout_active', environment => $ENVIRONMENT,
         upstream => 'reporting'), 1,
    'a config flag makes its upstream active, environment label escaped');
ok(!defined value($m, 'ha_optout_flag_expiry_timestamp_seconds',
                  upstream => 'reporting'),
    'a flag without a TTL has no expiry timestamp');
is(value($m, 'ha_optout_flag_info', environment => $ENVIRONMENT,
         upstream => 'reporting', layer => 'config', actor => 'config',
         reason => 'nightly batch window'), 1,
    'flag_info names the config flag\'s layer, actor and reason');
is(value($m, 'ha_optout_flag_info', environment => $ENVIRONMENT,
         upstream => 'latin1', layer => 'config', actor => 'config',
         reason => 'caf'), 1,
    'a reason that is not UTF-8 ends before the first invalid byte');
is(scalar @{ $m->{samples}{ha_optout_flag_info} }, 2,
    'flag_info has a series only for the acting flags');
is(value($m, 'ha_optout_failover_suppressed_total', upstream => 'app',
         server => $_), 0, "suppressed failovers start at 0 for $_")
    for $dead, $good;
is(value($m, 'ha_optout_replication_bypassed_total', upstream => 'idle'), 0,
    'replication bypass starts at 0');
is(value($m, 'ha_optout_changes_total', upstream => 'app', action => $_), 0,
    "changes_total{action=$_} starts at 0")
    for qw(set update clear expire window_start window_end restore
           restore_rejected denied);

# accept negotiation: what a Prometheus server sends

($r) = scrape(path => '/ha-status', headers => { Accept =>
    'application/openmetrics-text;version=1.0.0,application/openmetrics-text;'
    . 'version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1' });
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
    'a Prometheus scraper\'s Accept gets the text format');
($r) = scrape(path => '/ha-status', headers => { Accept => 'text/plain' });
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
    'Accept: text/plain gets the text format');

# pin: requests counted per server; the flag's expiry is exported

my $before = int time;

$r = api(PUT => 'v1/flags/app', json => {
    pin => $good, ttl => '10m', reason => 'INC-20 hold good' });
is($r->{status}, 200, 'pin set on app');

my @r = $t->spray(4, sub { "/app/pin/$_[0]" });
is(scalar(grep { $_ eq '200 good' } @r), 4, 'pinned requests reach good')
    or diag "@r";

($r, $m) = scrape();
is(value($m, 'ha_optout_pinned_requests_total', upstream => 'app',
         server => $good), 4, 'pinned_requests_total counts the pinned server');
is(value($m, 'ha_optout_pinned_requests_total', upstream => 'app',
         server => $dead), 0, 'and nothing for the other');
is(value($m, 'ha_optout_active', environment => $ENVIRONMENT,
         upstream => 'app'), 1, 'the api flag shows in the next scrape');
my $exp = value($m, 'ha_optout_flag_expiry_timestamp_seconds',
                upstream => 'app');
ok(defined $exp && $exp >= $before + 600 && $exp <= time + 600 + 1,
    'expiry timestamp is set_at + ttl, in Unix seconds') or diag $exp;
is(value($m, 'ha_optout_changes_total', upstream => 'app', action => 'set'),
    1, 'changes_total counts the set');

# every suspension is also in error_log at warn

my $warn = 'ha_optout: availability protections suspended on "app" by "alice"';
like($t->error_log, qr/\[warn\].*\Q$warn\E/,
    'the suspension is in error_log at warn');

# failover and replication off: suppressed failovers and bypassed copies

$r = api(PATCH => 'v1/flags/app', json => { ttl => '20m' });
is($r->{status}, 200, 'pin extended');

$r = api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, replication => JSON::PP::false,
    ttl => '10m', reason => 'INC-21 let errors through' });
is($r->{status}, 200, 'failover and replication switched off on app');

@r = $t->spray(8, sub { "/app/nofail/$_[0]" });
my $errors = grep { /^502 / } @r;
ok($errors > 0, 'the dead server\'s errors reach clients') or diag "@r";
is($t->get('/gate')->{status}, 204, 'the mirror gate bypasses the copy');
is($t->get('/gate')->{status}, 204, 'twice');

($r, $m) = scrape();
promtool_ok($r->{body}, 'promtool accepts the busy exposition');
is(value($m, 'ha_optout_failover_suppressed_total', upstream => 'app',
         server => $dead), $errors,
    'failover_suppressed_total counts each failover from the dead server');
is(value($m, 'ha_optout_failover_suppressed_total', upstream => 'app',
         server => $good), 0, 'none from the good one');
is(value($m, 'ha_optout_replication_bypassed_total', upstream => 'app'), 2,
    'replication_bypassed_total counts the bypassed copies');
is(value($m, 'ha_optout_changes_total', upstream => 'app',
         action => 'update'), 1, 'changes_total counts the update (PATCH)');
is(value($m, 'ha_optout_changes_total', upstream => 'app', action => 'set'),
    2, 'changes_total counts both sets (PUT)');

is(value($m, 'ha_optout_flag_info', environment => $ENVIRONMENT,
         upstream => 'app', layer => 'api', actor => 'alice',
         reason => 'INC-21 let errors through'), 1,
    'flag_info follows the replacing flag (actor and reason from the API)');
ok(!grep({ $_->{labels}{reason} eq 'INC-20 hold good' }
         @{ $m->{samples}{ha_optout_flag_info} }),
    'and the replaced flag\'s series is gone');

# a reason that needs escaping, longer than the label keeps: cut at 128
# bytes on a character boundary (7 ASCII bytes, then 2-byte characters)

my $odd = qq{q"b\\n\n } . ("\x{e9}" x 80);
$r = api(PUT => 'v1/flags/idle',
    body => JSON::PP->new->utf8->encode({
        failover => JSON::PP::false, ttl => '5m', reason => $odd }),
    headers => { 'Content-Type' => 'application/json' },
    token_args => { sub => "ops \"bot\"" });
is($r->{status}, 200, 'a flag whose reason and actor need escaping') or diag $r->{body};

($r, $m) = scrape();
promtool_ok($r->{body}, 'promtool accepts the escaped, cut reason');
my $cut = substr($odd, 0, 7 + 60);
utf8::encode($cut);
is(length $cut, 127, '(the cut reason is 127 bytes, the 128th would split)');
is(value($m, 'ha_optout_flag_info', environment => $ENVIRONMENT,
         upstream => 'idle', layer => 'api', actor => 'ops "bot"',
         reason => $cut), 1,
    'flag_info escapes quote, backslash, newline and cuts on a UTF-8 boundary')
    or diag join "\n", grep { /flag_info/ } split /\n/, $r->{body};

$r = api(DELETE => 'v1/flags/idle');
is($r->{status}, 200, 'idle flag cleared');

# a reason with a CR, an ESC and a tab (reasons keep any UTF-8): the text
# format has no escape for them, so they become "?" and the line stays one

$r = api(PUT => 'v1/flags/idle',
    body => JSON::PP->new->utf8->encode({
        failover => JSON::PP::false, ttl => '5m',
        reason => "INC-22\rforged 1\x1b[2J\tend" }),
    headers => { 'Content-Type' => 'application/json' });
is($r->{status}, 200, 'a flag whose reason carries CR, ESC and tab')
    or diag $r->{body};

($r, $m) = scrape();
promtool_ok($r->{body}, 'promtool accepts the reason with control bytes');
is(value($m, 'ha_optout_flag_info', environment => $ENVIRONMENT,
         upstream => 'idle', layer => 'api', actor => 'alice',
         reason => 'INC-22?forged 1?[2J?end'), 1,
    'flag_info writes "?" for CR, ESC and tab')
    or diag join "\n", grep { /flag_info/ } split /\n/, $r->{body};

$r = api(DELETE => 'v1/flags/idle');
is($r->{status}, 200, 'idle flag cleared again');

# admin requests and auth failures

api(GET => 'v1/flags');
api(GET => 'v1/flags', token => undef);
api(GET => 'v1/flags', token => $t->token(signature => 'AAAA'));
api(GET => 'v1/flags', token => $t->token(iat => time - 900, ttl => 300));

# clearing shows at once

$r = api(DELETE => 'v1/flags/app');
is($r->{status}, 200, 'app flag cleared');

($r, $m) = scrape();
promtool_ok($r->{body}, 'promtool accepts the exposition after a clear');

for my $k (sort keys %admin) {
    my ($method, $code) = split / /, $k;
    is(value($m, 'ha_optout_admin_requests_total', method => $method,
             code => $code), $admin{$k},
        "admin_requests_total{method=$method,code=$code}");
}

is(scalar @{ $m->{samples}{ha_optout_admin_requests_total} },
    scalar keys %admin, 'no admin request series we did not cause');

my %auth = (missing => 1, signature => 1, expired => 1);
for my $reason (qw(missing malformed algorithm unknown_kid signature expired
                   not_yet_valid lifetime audience replay scope))
{
    is(value($m, 'ha_optout_auth_failures_total', reason => $reason),
        $auth{$reason} // 0, "auth_failures_total{reason=$reason}");
}

is(value($m, 'ha_optout_active', environment => $ENVIRONMENT,
         upstream => 'app'), 0, 'the clear shows in the next scrape');
ok(!defined value($m, 'ha_optout_flag_expiry_timestamp_seconds',
                  upstream => 'app'), 'the expiry timestamp is gone');
is(value($m, 'ha_optout_changes_total', upstream => 'app', action => 'clear'),
    1, 'changes_total counts the clear');
like($t->error_log,
    qr/\[warn\].*ha_optout: availability protections restored on "app"/,
    'the restoration is in error_log at warn');

# labels: exactly the documented ones, on every sample

for my $name (sort keys %LABELS) {
    my @bad = grep { join(',', sort keys %{ $_->{labels} })
                     ne join(',', @{ $LABELS{$name} }) }
              @{ $m->{samples}{$name} // [] };
    ok(@{ $m->{samples}{$name} // [] } || $name =~ /expiry/,
        "$name has samples");
    is(scalar @bad, 0, "$name has labels " . join(',', @{ $LABELS{$name} }));
}

# ?format=prometheus beats a browser's Accept

($r) = scrape(headers => { Accept => 'text/html' });
like($r->{headers}{'content-type'}, qr{^text/plain}, '?format=prometheus wins');

# the alert rules shipped in docs/

my $out = `$PROMTOOL check rules '$DOCS/prometheus-alerts.yml' 2>&1`;
is($? >> 8, 0, 'promtool check rules accepts docs/prometheus-alerts.yml')
    or diag $out;

$out = `cd '$DOCS' && $PROMTOOL test rules prometheus-alerts.test.yml 2>&1`;
is($? >> 8, 0, 'the alert rules fire as their unit tests expect')
    or diag $out;

# every query of the Grafana dashboard parses (as a recording rule)

my $dash = JSON::PP->new->decode($t->read_file("$DOCS/grafana-dashboard.json"));
my @exprs = map { $_->{expr} } grep { $_->{expr} }
            (map { @{ $_->{targets} // [] } } @{ $dash->{panels} }),
            @{ $dash->{annotations}{list} };
ok(@exprs >= 8, 'the dashboard has its queries');

my %used;
$used{$_}++ for map { /\b(ha_optout_\w+)/g } @exprs;
ok($used{$_}, "the dashboard charts $_") for grep { !/_info$/ } sort keys %LABELS;

my $i = 0;
my $rules = "groups:\n  - name: dashboard\n    rules:\n";
for my $e (@exprs) {
    (my $q = $e) =~ s/\$__rate_interval/5m/g;
    $q =~ s/\$\w+/.*/g;
    $q =~ s/'/''/g;
    $rules .= "      - record: dashboard:query_" . $i++ . "\n"
        . "        expr: '$q'\n";
}
my $rf = $t->write_file('dashboard-rules.yml', $rules);
$out = `$PROMTOOL check rules '$rf' 2>&1`;
is($? >> 8, 0, 'every dashboard query is valid PromQL') or diag $out;

###############################################################################

done_testing;
