package HaOptout::Docs;

# The fenced examples of docs/*.md and README.md, as t/docs.t runs them.
#
# Every fence carries a marker: an HTML comment on the line right before
# its opening ``` line (GitHub renders nothing for it):
#
#   <!-- runnable: nginx main|http|server|location -->
#                         an nginx.conf fragment, embedded at that level of
#                         a generated config and checked with nginx -t
#   <!-- runnable: policy -->
#                         a YAML policy, loaded with ha_optout_policy and
#                         checked with nginx -t
#   <!-- runnable: sh -->
#                         a shell block, run by bash against a started
#                         nginx ($URL, $TOKEN, $KEY as the demo sets them);
#                         the blocks of one file share one shell
#   <!-- runnable: sh; output in comments -->
#                         as sh, and each run of "# ..." lines after a
#                         command is that command's expected output
#   <!-- output -->       the expected output of the runnable block before
#   <!-- fragment: WHY --> not run: placeholders, real hosts, destructive
#
# Expected output matches when each of its lines, in order, matches a line
# of the actual output (later lines may be left out, other lines may come
# between); "..." in an expected line stands for any text.  Both sides are
# normalised first: times, Unix times, hex hashes, versions, durations.

use strict;
use warnings;

our $VERSION = '0.1';


sub blocks {
    my ($file) = @_;

    open my $fh, '<', $file or die "$file: $!\n";
    my @lines = <$fh>;
    close $fh;

    my (@blocks, $cur, $fence);

    for my $i (0 .. $#lines) {
        my $l = $lines[$i];

        if ($cur) {
            if ($l =~ /^\s*\Q$fence\E\s*$/) {
                push @blocks, $cur;
                undef $cur;
                next;
            }
            $cur->{text} .= $l;
            next;
        }

        next unless $l =~ /^(\s*)(```+)\s*(\S*)/;

        $fence = $2;
        my $marker = '';
        if ($i > 0 && $lines[$i - 1] =~ /^\s*<!--\s*(.*?)\s*-->\s*$/) {
            $marker = $1;
        }

        my ($kind, $arg) = ('', '');
        if ($marker =~ /^runnable:\s*(\w+)\s*(.*)$/) {
            ($kind, $arg) = ($1, $2);
        } elsif ($marker =~ /^(output|fragment)\b:?\s*(.*)$/) {
            ($kind, $arg) = ($1, $2);
        }

        $cur = { file => $file, line => $i + 1, lang => $3,
                 marker => $marker, kind => $kind, arg => $arg,
                 text => '' };
    }

    die "$file: fence opened at line $cur->{line} is never closed\n"
        if $cur;

    # an output block belongs to the runnable block before it
    for my $i (1 .. $#blocks) {
        next unless $blocks[$i]{kind} eq 'output';
        $blocks[$i - 1]{output} = $blocks[$i]{text};
        $blocks[$i]{of} = $blocks[$i - 1];
    }

    return @blocks;
}


sub normalise {
    my ($t) = @_;

    $t =~ s/\r//g;
    $t =~ s/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z/<TIME>/g;
    $t =~ s/\b1[6-9]\d{8}\b/<UNIXTIME>/g;
    $t =~ s/\b[0-9a-f]{16,}\b/<HEX>/g;
    $t =~ s/\b[0-9a-f]{4,}\.\.\./<HEX>/g;
    $t =~ s/\b\d+\.\d+\.\d+\b(?!\.\d)/<VERSION>/g;
    $t =~ s/\b(?:\d+h)?(?:\d+m)?\d+s\b/<DURATION>/g;
    $t =~ s/\b\d+ m \d+ s\b/<DURATION>/g;
    $t =~ s/[ \t]+/ /g;
    $t =~ s/^ //mg;
    $t =~ s/ $//mg;

    return $t;
}


sub _glob_re {
    my ($line) = @_;
    my @parts = split /\.\.\./, $line, -1;
    my $re = join '.*', map { quotemeta } @parts;
    return qr/^$re$/;
}


# undef when it matches, else the first expected line that did not
sub match {
    my ($expected, $actual) = @_;

    my @exp = grep { /\S/ } split /\n/, normalise($expected);
    my @act = split /\n/, normalise($actual);
    my $j = 0;

    for my $e (@exp) {
        my $re = _glob_re($e);
        $j++ while $j < @act && $act[$j] !~ $re;
        return $e if $j >= @act;
        $j++;
    }

    return undef;
}


1;
