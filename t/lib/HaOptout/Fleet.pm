package HaOptout::Fleet;

# One member of a fleet for the tests: an nginx with the module (its own
# HaOptout::Test, two backends, an admin location, an audit log) and the
# "ha-optoutctl agent" beside it, talking to an HaOptout::Etcd cluster.

use strict;
use warnings;

use JSON::PP;
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);

use HaOptout::Test;
use HaOptout::Etcd;

our $VERSION = '0.1';


# new(etcd => E, host => 'lb1', trust => [FILES], state => 1, etcd_args => [])
sub new {
    my ($class, %o) = @_;

    my $t = HaOptout::Test->new(workers => $o{workers} // 1);
    $t->backend('b1');
    $t->backend('b2');
    my $key = $t->secret_file('admin.key');
    $t->state_dir;

    my $state = $o{state}
        ? "    ha_optout_state_file %%TESTDIR%%/state/ha-optout.state;\n" : '';

    $t->conf(<<"EOF");
http {
    ha_optout_zone ha_optout 1m;
    ha_optout_environment prod;
    ha_optout_audit_log %%TESTDIR%%/state/audit.jsonl;
$state
    upstream app {
        server 127.0.0.1:%%PORT_b1%% max_fails=1 fail_timeout=30s;
        server 127.0.0.1:%%PORT_b2%%;
        ha_optout;
    }

    upstream other {
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
            ha_optout_admin_key hs256 %%TESTDIR%%/admin.key;
        }

        location = /ha-status {
            ha_optout_status;
        }
    }
}
EOF

    $t->run;

    my $self = bless { t => $t, etcd => $o{etcd}, host => $o{host},
                       key => $key, trust => $o{trust} // [],
                       etcd_args => $o{etcd_args} // [],
                       config => $o{config} }, $class;
    $self->start_agent unless $o{no_agent};
    return $self;
}


sub t { $_[0]{t} }
sub host { $_[0]{host} }
sub admin_url { 'http://127.0.0.1:' . $_[0]{t}->port('http') . '/ha-optout/' }


sub start_agent {
    my ($self) = @_;
    my $e = $self->{etcd};
    $self->{agent_n}++;

    # config => CODE: the agent's YAML from (admin url, admin key)
    if ($self->{config}) {
        my $f = $self->{t}->write_file('agent.yaml',
            $self->{config}->($self->admin_url, $self->{key}), 0600);
        $self->{agent} = $e->cli_start("agent-$self->{host}", 'agent',
                                       '--config', $f);
        return $self->{agent};
    }

    $self->{agent} = $e->cli_start("agent-$self->{host}", 'agent',
        '--etcd', $e->urls, '--environment', 'prod',
        '--url', $self->admin_url, '--key', $self->{key},
        (map { ('--trust-key', $_) } @{ $self->{trust} }),
        '--host', $self->{host}, @{ $self->{etcd_args} });
    return $self->{agent};
}


sub stop_agent {
    my ($self, $sig) = @_;
    return unless $self->{agent};
    my $rc = $self->{etcd}->cli_stop($self->{agent}, $sig // 'TERM');
    $self->{agent} = undef;
    return $rc;
}


sub agent_pid { $_[0]{agent} }

sub agent_log { $_[0]{etcd}->log_of("agent-$_[0]{host}.err") }


# the fleet layer of an upstream as nginx's status shows it (or undef)
sub fleet_layer {
    my ($self, $up) = @_;
    my $s = $self->{t}->status or return undef;
    return $s->{upstreams}{$up // 'app'}{layers}{fleet};
}


sub acting {
    my ($self, $up) = @_;
    my $s = $self->{t}->status or return undef;
    return $s->{upstreams}{$up // 'app'}{flag};
}


sub audit_lines {
    my ($self) = @_;
    my $text = $self->{t}->read_file('state/audit.jsonl');
    return map { JSON::PP->new->decode($_) } grep { /\S/ } split /\n/, $text;
}


# the agent's report in etcd, decoded (undef while there is none)
sub report {
    my ($self) = @_;
    my $v = $self->{etcd}->get("/ha-optout/prod/agents/$self->{host}");
    return defined $v ? eval { decode_json($v) } : undef;
}


# "2026-12-01T10:00:00Z" -> unix time
sub iso_time {
    my ($s) = @_;
    my ($y, $m, $d, $H, $M, $S) = $s =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)/
        or return undef;
    return timegm($S, $M, $H, $d, $m - 1, $y);
}


sub stop {
    my ($self) = @_;
    $self->stop_agent;
    $self->{t}->stop;
}


1;
