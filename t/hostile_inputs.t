#!/usr/bin/perl

# Hostile inputs (issue 11, items 1, 9 and 10; SPEC section 8): no flag
# text breaks out of its place.  A pin_selector or pin holding CR/LF or
# non-ASCII is refused wherever it comes from (API 400 JSON, nginx -t for
# ha_optout_flag and policy windows, a state file entry dropped and
# audited); sub and reason keep their UTF-8 but cannot forge an error_log
# line; every status output keeps a record on its line; an unknown field
# of multibyte characters is a 400 JSON, not an HTML 500.

use strict;
use warnings;

use Test::More;
use Encode ();
use JSON::PP ();
use HaOptout::Test;

my $t = HaOptout::Test->new;

$t->backend('b1');
$t->backend('b2');
$t->secret_file;

my $dir = $t->state_dir;
my $state = "$dir/ha-optout.state";

my $conf = <<'EOF';
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/audit.jsonl;

    upstream app {
        server 127.0.0.1:%%PORT_b1%%;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout selector=$http_x_case;
    }

    # a reason in Latin-1, as an old nginx.conf may hold it
    upstream latin1 {
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    ha_optout_flag latin1 failover=off "reason=caf%%E9%% run";

    server {
        listen 127.0.0.1:%%PORT_http%%;

        location / {
            proxy_pass http://app;
            proxy_set_header X-Seen "$ha_optout_app";
            ha_optout_header on;
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
$conf =~ s/%%E9%%/\xe9/;

$t->conf($conf)->run;

my $b1 = '127.0.0.1:' . $t->port('b1');
my $inject = "x\r\nSet-Cookie: a=b";

my $U = JSON::PP->new->utf8->canonical;

# the API with UTF-8 bodies both ways
sub api {
    my ($method, $path, %o) = @_;
    $o{body} = $U->encode(delete $o{json}) if exists $o{json};
    $o{headers} = { 'Content-Type' => 'application/json' };
    my $r = $t->api($method, $path, %o);
    $r->{json} = eval { $U->decode($r->{body}) };
    $r->{is_json} = defined $r->{json};
    return $r;
}

sub flag { api(GET => 'v1/flags/app')->{json} }

# what a client and the backend see for a request with selector $case
sub seen {
    my ($case) = @_;
    $t->reset_hits;
    my $r = $t->get('/', headers => { 'X-Case' => $case });
    return ($r, join("\n", $t->hit_log('b1'), $t->hit_log('b2')));
}

###############################################################################
# item 1: the API refuses header-breaking pin_selector and pin

my $r = api(PUT => 'v1/flags/app', json => {
    pin => $b1, pin_selector => $inject, ttl => '5m',
    reason => 'attack' });
is($r->{status}, 400, 'PUT pin_selector "x\r\nSet-Cookie: a=b": 400');
ok($r->{is_json}, 'answered as JSON');
is($r->{json}{error}{code}, 'InvalidField', 'code InvalidField');
like($r->{json}{error}{message}, qr/pin_selector must be printable ASCII/,
     'the message says why');
is(flag(), undef, 'nothing was stored');

my ($resp) = seen($inject);
ok(!exists $resp->{headers}{'set-cookie'}, 'no Set-Cookie reaches a client');
ok(!exists $resp->{headers}{'x-ha-optout'}, 'no X-HA-Optout either');

for my $bad ("a\nb", "caf\x{e9}", "tab\there", "nul\0x", "del\x7f",
             "\x{202e}evil")
{
    (my $shown = $bad) =~ s/([^\x20-\x7e])/sprintf '\\x{%x}', ord $1/ge;
    $r = api(PUT => 'v1/flags/app', json => {
        pin => $b1, pin_selector => $bad, ttl => '5m', reason => 'attack' });
    is($r->{status}, 400, "pin_selector \"$shown\": 400");
}

# printable, but a field of its own: "x; failover=off; sticky=on" would
# read as pin_selector=x; failover=off; sticky=on in X-HA-Optout

for my $bad ('x; failover=off; sticky=on', 'a,b', 'k=v', 'q"uote',
             'back\\slash', ' lead', 'trail ')
{
    $r = api(PUT => 'v1/flags/app', json => {
        pin => $b1, pin_selector => $bad, ttl => '5m', reason => 'r' });
    is($r->{status}, 400, "pin_selector '$bad': 400");
    is($r->{json}{error}{code}, 'InvalidField', '... InvalidField');
}

is(flag(), undef, 'no forged field was stored');
($resp) = seen('x; failover=off; sticky=on');
ok(!exists $resp->{headers}{'x-ha-optout'}, 'no X-HA-Optout is forged');

$r = api(PUT => 'v1/flags/app', json => {
    pin => "$b1; sticky=on", ttl => '5m', reason => 'attack' });
is($r->{status}, 400, 'a pin with "; sticky=on": 400');

$r = api(PUT => 'v1/flags/app', json => {
    pin => "$b1\r\nX-Evil: 1", ttl => '5m', reason => 'attack' });
is($r->{status}, 400, 'a pin with CR/LF: 400');
is($r->{json}{error}{code}, 'InvalidField', 'code InvalidField');

# a PATCH of a good flag cannot smuggle it in either

$r = api(PUT => 'v1/flags/app', json => {
    pin => $b1, pin_selector => 'INC-1', ttl => '5m',
    reason => "caf\x{e9} \x{1f600} reasons keep their UTF-8" });
is($r->{status}, 200, 'a good flag with a UTF-8 reason is accepted');
is($r->{json}{reason}, "caf\x{e9} \x{1f600} reasons keep their UTF-8",
   'the reason keeps its UTF-8');

$r = api(PATCH => 'v1/flags/app', json => { pin_selector => $inject });
is($r->{status}, 400, 'PATCH pin_selector with CR/LF: 400');
is(flag()->{pin_selector}, 'INC-1', 'the flag is unchanged');

my $log;
($resp, $log) = seen('INC-1');
is($resp->{headers}{'x-ha-optout'}, "pin=$b1; pin_selector=INC-1",
   'the header is the flag, on its line');
like($log, qr/x-seen=pin=\Q$b1\E; pin_selector=INC-1$/m,
     '$ha_optout_app reaches the backend as one header');
ok(!exists $resp->{headers}{'set-cookie'}, 'no Set-Cookie');

###############################################################################
# item 10: an unknown field of multibyte characters is a 400 JSON

for my $ch ("\x{e9}", "\x{20ac}", "\x{1f600}") {
    my $name = $ch x 300;
    $r = api(PUT => 'v1/flags/app', json => {
        $name => 1, failover => JSON::PP::false, ttl => '5m',
        reason => 'x' });
    my $n = length(Encode::encode('UTF-8', $ch));
    is($r->{status}, 400, "an unknown field of 300 $n-byte characters: 400");
    ok($r->{is_json}, '... answered JSON, not HTML')
        or diag substr($r->{body}, 0, 200);
    is($r->{json}{error}{code}, 'UnknownField', '... code UnknownField');
    like($r->{json}{error}{message}, qr/^unknown field "\Q$ch\E+\.\.\."$/,
         '... the name shown cut on a character boundary');
}

$r = api(PUT => 'v1/flags/app', json => {
    "a\nb\x{202e}" => 1, failover => JSON::PP::false, ttl => '5m',
    reason => 'x' });
is($r->{json}{error}{message}, 'unknown field "a\nb\u202e"',
   'control bytes and bidi overrides in a field name are escaped');

# a reason that is not UTF-8 (nginx -t accepts it, as it always did) does
# not break the JSON that shows it

$r = api(GET => 'v1/flags/latin1');
is($r->{status}, 200, 'GET of a flag with a Latin-1 reason: 200');
is($r->{json}{reason}, "caf\x{fffd} run", '... the byte shown as U+FFFD');
$r = $t->get('/ha-status');
is($r->{status}, 200, 'the JSON status page too');
ok($r->{is_json}, '... is JSON');

###############################################################################
# item 9: sub and reason cannot forge an error_log line

my $forged = "\n2026/12/01 00:00:00 [emerg] 1#1: forged";

$r = api(PUT => 'v1/flags/app', token_args => { sub => "mallory$forged" },
             json => { failover => JSON::PP::false, ttl => '5m',
                       reason => "\e[31mred\e[0m\r$forged by reason" });
is($r->{status}, 200, 'a flag set by sub "mallory\n... [emerg] forged"');
is(api(DELETE => 'v1/flags/app',
           token_args => { sub => "mallory$forged" })->{status}, 200,
   'and cleared by it');

my $errlog = $t->error_log;
unlike($errlog, qr/^\S+ \S+ \[emerg\] 1#1: forged/m,
       'error_log holds no forged [emerg] line');
like($errlog, qr/suspended on "app" by "mallory\\n2026\/12\/01 00:00:00 \[emerg\] 1#1: forged"/,
     'the sub is in the warn line, escaped');
like($errlog, qr/reason "\\x1b\[31mred\\x1b\[0m\\r\\n2026/,
     'the reason is escaped: ESC, CR and LF visible, not acted on');
my @lines = grep { /forged/ } split /\n/, $errlog;
ok(@lines >= 2 && !grep({ !/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d \[warn\] / }
                        @lines),
   'every line that mentions it is a [warn] line of nginx')
    or diag explain \@lines;

###############################################################################
# every status output keeps one record on one line

$r = api(PUT => 'v1/flags/app', json => {
    failover => JSON::PP::false, ttl => '5m',
    reason => "line one\n</dd><b>two</b>\r\n# HELP forged\nha_optout_active 9" });
is($r->{status}, 200, 'a flag whose reason holds newlines and markup');

my $html = $t->get('/ha-status', headers => { Accept => 'text/html' })->{body};
my ($dd) = $html =~ /<dd class="reason">(.*?)<\/dd>/s;
ok(defined $dd, 'the HTML page shows the reason');
unlike($dd // "\n", qr/[\r\n]/, 'HTML: the reason stays on its line');
like($dd // '', qr/line one\\n&lt;\/dd&gt;&lt;b&gt;two/,
     'HTML: newline shown as \n, markup escaped');

my $prom = $t->get('/ha-status?format=prometheus')->{body};
my @bad = grep { !/^(#\s(HELP|TYPE)\s\S+\s.*|[a-z_]+(\{[^\n]*\})? \S+)$/ }
          split /\n/, $prom;
is(scalar @bad, 0, 'Prometheus: every line a comment or a sample')
    or diag explain \@bad;
ok(!grep({ /^(# HELP forged|ha_optout_active 9)/ } split /\n/, $prom),
   'the reason forges no line of it');
like($prom, qr/^ha_optout_flag_info\{[^\n]*reason="line one\\n<\/dd><b>two<\/b>\?\\n# HELP forged\\nha_optout_active 9"\} 1$/m,
     'it is one label value of ha_optout_flag_info, newlines escaped, the CR written ?');

my $json = $t->get('/ha-status')->{body};
is(scalar(() = $json =~ /\n/g), 1, 'JSON: one line');

api(DELETE => 'v1/flags/app');

###############################################################################
# item 1: a hostile state file entry is dropped and audited

$r = api(PUT => 'v1/flags/app', json => {
    pin => $b1, pin_selector => 'INC-7', ttl => '10m', reason => 'saved' });
is($r->{status}, 200, 'a flag to be saved');
$t->stop;

my $text = $t->read_file($state);
ok($text =~ s/pin_selector: "INC-7"/pin_selector: "x\\r\\nSet-Cookie: a=b"/,
   'the state file is edited to hold a CR/LF pin_selector');
$t->write_file($state, $text, 0600);
chown((getpwnam('nobody'))[2, 3], $state);

$t->run;

is($t->wait_for(sub { $t->read_file('audit.jsonl') =~ /restore_rejected/ },
                5) ? 1 : 0, 1, 'the restart audits restore_rejected');
is(flag(), undef, 'the hostile flag is not restored');
($resp, $log) = seen($inject);
ok(!exists $resp->{headers}{'set-cookie'}, 'no Set-Cookie reaches a client');
ok(!exists $resp->{headers}{'x-ha-optout'}, 'no X-HA-Optout');
unlike($log, qr/x-seen=\S/, 'the backend sees no opt-out');
like($t->error_log,
     qr/saved flag of "app" dropped: its pin or pin_selector holds control/,
     'error_log says why it was dropped');
my ($rej) = grep { /restore_rejected/ }
            split /\n/, $t->read_file('audit.jsonl');
like($rej // '', qr/"pin_selector": "x\\r\\nSet-Cookie: a=b"/,
     'the audit line records it, escaped, on one line');

$t->stop;

###############################################################################
# item 1: nginx -t refuses ha_optout_flag and policy windows that would

sub refused {
    my ($name, $conf, $line_re, $msg_re) = @_;
    $t->conf($conf);
    my ($rc, $out) = $t->nginx_t;
    my $file = $t->testdir . '/nginx.conf';
    my $line = $t->conf_line($line_re) // 0;
    isnt($rc, 0, "nginx -t refuses $name");
    like($out, qr/\[emerg\] .*$msg_re.* in \Q$file\E:$line$/m,
         "$name: the message names $file:$line") or diag $out;
}

(my $flagconf = $conf) =~ s/^(\s*server \{)/    ha_optout_flag app pin=$b1 "pin_selector=x\x01Set-Cookie: a=b";\n\n$1/m;
refused('ha_optout_flag pin_selector with a control byte', $flagconf,
        qr/ha_optout_flag app/, qr/must be printable ASCII/);

($flagconf = $conf) =~ s/^(\s*server \{)/    ha_optout_flag app "pin=$b1\x{c3}\x{a9}";\n\n$1/m;
refused('ha_optout_flag pin with non-ASCII', $flagconf,
        qr/ha_optout_flag app/, qr/must be printable ASCII/);

my $policy = $t->write_file('policy.yaml', <<"EOF");
upstreams:
  app:
    allow: [pin]
windows:
  - upstream: app
    every: "mon 02:00-03:00"
    pin: "$b1"
    pin_selector: "x\\r\\nSet-Cookie: a=b"
    reason: nightly
EOF

(my $polconf = $conf) =~ s/^(\s*ha_optout_zone .*)$/$1\n    ha_optout_policy %%TESTDIR%%\/policy.yaml;/m;
$t->conf($polconf);
my ($rc, $out) = $t->nginx_t;
isnt($rc, 0, 'nginx -t refuses a policy window with a CR/LF pin_selector');
like($out, qr/\[emerg\] .*policy \Q$policy\E:5:\d+: pin and pin_selector must be printable ASCII/,
     'naming the policy file, line and column') or diag $out;

###############################################################################

done_testing;
