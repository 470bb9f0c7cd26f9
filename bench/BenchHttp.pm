# bench/BenchHttp.pm: a tiny HTTP/1.1 client for the bench helpers (core Perl
# only): one request per call, on a given socket or a new connection.

package BenchHttp;

use strict;
use warnings;
use IO::Socket::INET;

sub connect_to {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 5)
        or die "connect 127.0.0.1:$port: $!\n";
    return $s;
}

# request($sock_or_port, $method, $path, \%headers, $body)
# -> { status, headers => {lc name => value}, body }
sub request {
    my ($s, $method, $path, $h, $body) = @_;
    my $close = !ref $s;
    $s = connect_to($s) if $close;
    $body //= '';
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    $req .= "Connection: close\r\n" if $close;
    $req .= "$_: $h->{$_}\r\n" for sort keys %{ $h || {} };
    $req .= "Content-Length: " . length($body) . "\r\n"
        if length $body || $method =~ /^(PUT|PATCH|POST)$/;
    $req .= "\r\n$body";
    print $s $req;

    my $buf = '';
    while ($buf !~ /\r\n\r\n/) {
        my $n = sysread($s, $buf, 65536, length $buf);
        die "connection closed in headers\n" unless $n;
    }
    my ($head, $rest) = split /\r\n\r\n/, $buf, 2;
    my ($status) = $head =~ m{^HTTP/1\.\d (\d+)};
    my %hd;
    for (split /\r\n/, $head) {
        $hd{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    my $len = $hd{'content-length'};
    if (defined $len) {
        while (length $rest < $len) {
            my $n = sysread($s, $rest, 65536, length $rest);
            last unless $n;
        }
    } elsif (($hd{'transfer-encoding'} // '') =~ /chunked/i) {
        my $out = '';
        for (;;) {
            while ($rest !~ /^([0-9a-fA-F]+)\r\n/) {
                sysread($s, $rest, 65536, length $rest) or last;
            }
            my ($sz) = $rest =~ /^([0-9a-fA-F]+)\r\n/ or last;
            $sz = hex $sz;
            $rest =~ s/^[0-9a-fA-F]+\r\n//;
            while (length $rest < $sz + 2) {
                sysread($s, $rest, 65536, length $rest) or last;
            }
            $out .= substr($rest, 0, $sz);
            $rest = substr($rest, $sz + 2);
            last if $sz == 0;
        }
        $rest = $out;
    }
    close $s if $close;
    return { status => $status, headers => \%hd, body => $rest };
}

1;
