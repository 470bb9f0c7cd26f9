package HaOptout::Interop;

# Tokens minted by libraries no one here wrote: PyJWT (Debian python3-jwt,
# run by /usr/bin/python3, not whatever python3 comes first on PATH) and
# node's jose (t/interop/node_modules, installed by "make deps" with npm ci
# from t/interop/package-lock.json).  The tools are t/interop/*_tool.*.
#
#   pyjwt_missing()/jose_missing()    why the library cannot run, or undef
#   pyjwt($dir, @args)                run pyjwt_tool.py, die on failure
#   pyjwt_mint($dir, @specs)          the tokens, in order
#   jose($dir, @args), jose_mint($dir, @specs)   the same with jose_tool.mjs
#   bearer_reason($response)          "signature" of "bearer token
#                                     rejected: signature", or the status

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP ();
use POSIX ();

use Exporter 'import';
our @EXPORT = qw(pyjwt_missing pyjwt pyjwt_mint jose_missing jose jose_mint
                 bearer_reason);

my $INTEROP = abs_path(dirname(__FILE__) . '/../../interop');
my $PYTHON = '/usr/bin/python3';
my $JSON = JSON::PP->new->canonical;


sub _run {
    my ($dir, $stdin, @cmd) = @_;
    my $in = "$dir/interop-in.json";
    my $out = "$dir/interop-out.txt";

    open my $fh, '>', $in or die "$in: $!\n";
    print $fh $stdin // '';
    close $fh;

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', $in;
        open STDOUT, '>', $out;
        open STDERR, '>&', \*STDOUT;
        chdir $INTEROP;
        exec @cmd or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $rc = $?;

    open $fh, '<', $out or die "$out: $!\n";
    local $/;
    my $text = <$fh> // '';
    die "@cmd failed ($rc): $text\n" if $rc;
    return $text;
}


sub pyjwt_missing {
    return "$PYTHON is not installed (make deps)" unless -x $PYTHON;
    my $v = `$PYTHON -c 'import jwt, cryptography; print(jwt.__version__)' 2>&1`;
    return "PyJWT or cryptography missing: $v (make deps installs "
        . "python3-jwt python3-cryptography)" if $?;
    return undef;
}


sub pyjwt {
    my ($dir, @args) = @_;
    return _run($dir, undef, $PYTHON, "$INTEROP/pyjwt_tool.py", @args);
}


sub pyjwt_mint {
    my ($dir, @specs) = @_;
    my $out = _run($dir, $JSON->encode(\@specs), $PYTHON,
                   "$INTEROP/pyjwt_tool.py", 'mint', $dir);
    my @t = split /\n/, $out;
    die "pyjwt mint: " . @t . " tokens for " . @specs . " specs: $out\n"
        unless @t == @specs;
    return wantarray ? @t : $t[0];
}


# installs jose from the lock file when make deps has not (yet) done it
sub jose_missing {
    my $node = (grep { -x "$_/node" } split /:/, $ENV{PATH})[0];
    return 'node is not installed (make deps installs nodejs)' unless $node;

    unless (-f "$INTEROP/node_modules/jose/package.json") {
        my $out = `cd $INTEROP && npm ci --no-audit --no-fund 2>&1`;
        return "npm ci in t/interop failed: $out" if $?;
    }

    return undef;
}


sub jose {
    my ($dir, @args) = @_;
    return _run($dir, undef, 'node', "$INTEROP/jose_tool.mjs", @args);
}


sub jose_mint {
    my ($dir, @specs) = @_;
    my $out = _run($dir, $JSON->encode(\@specs), 'node',
                   "$INTEROP/jose_tool.mjs", 'mint', $dir);
    my @t = split /\n/, $out;
    die "jose mint: " . @t . " tokens for " . @specs . " specs: $out\n"
        unless @t == @specs;
    return wantarray ? @t : $t[0];
}


sub bearer_reason {
    my ($r) = @_;
    my $m = ref $r->{json} eq 'HASH' ? $r->{json}{error}{message} // '' : '';
    return $1 if $r->{status} == 401 && $m =~ /^bearer token rejected: (\w+)/;
    return "$r->{status} $m";
}


1;
