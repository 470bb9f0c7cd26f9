package HaOptout::Approvals;

# What the two-person rule's tests (t/approvals.t, t/approvals_attack.t,
# t/approvals_restore.t) share: two backends, the admin key, a state dir
# and a policy (setup), an nginx with upstreams under that policy, its
# state file, its audit log and the admin API (conf), and the audit lines
# as JSON (audit).

use strict;
use warnings;

use JSON::PP ();

our $VERSION = '0.1';


# setup($t, POLICY): backends b1 and b2, the key ha-optout.key (kid ops),
# policy.yaml; answers the state dir
sub setup {
    my ($t, $policy) = @_;

    $t->backend('b1');
    $t->backend('b2');
    $t->secret_file;
    my $dir = $t->state_dir;
    $t->write_file('policy.yaml', $policy) if defined $policy;

    return $dir;
}


# conf(upstreams => [NAME => [BACKEND, ...], ...], admin => LINES,
#      server => LINES): the http{} block; admin goes into the admin
# location after its key, server into the server after the admin location
sub conf {
    my (%o) = @_;

    my @up = @{ $o{upstreams} };
    my $ups = '';

    while (my ($name, $backends) = splice @up, 0, 2) {
        $ups .= "    upstream $name {\n"
              . join('', map { "        server 127.0.0.1:%%PORT_$_%%;\n" }
                             @$backends)
              . "        ha_optout;\n"
              . "    }\n\n";
    }

    my $admin = $o{admin} // '';
    my $server = $o{server} // '';

    return <<"EOF";
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_policy %%TESTDIR%%/policy.yaml;
    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;
    ha_optout_audit_log %%TESTDIR%%/state/audit.jsonl;

${ups}    server {
        listen 127.0.0.1:%%PORT_http%%;

        location /ha-optout/ {
            ha_optout_admin;
            ha_optout_admin_key hs256 %%TESTDIR%%/ha-optout.key kid=ops;
${admin}        }
${server}    }
}
EOF
}


# the lines of state/audit.jsonl, decoded (none while there is no file)
sub audit {
    my ($t) = @_;

    return () unless -e $t->testdir . '/state/audit.jsonl';
    return map { JSON::PP->new->decode($_) }
           grep { /\S/ } split /\n/, $t->read_file('state/audit.jsonl');
}


1;
