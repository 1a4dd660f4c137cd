package TimpushSubreaper;

# Makes the perl process running a test file a "child subreaper"
# (prctl(PR_SET_CHILD_SUBREAPER, 1)).  Only needed with OpenResty's real
# Test::Nginx::Socket, which daemonizes nginx: the daemon is an orphan, and
# where PID 1 reaps orphans slowly (as in our containers) the real module
# waits ~2 s per block for the dead nginx to disappear.  As a subreaper, the
# test process inherits the daemon and its waitpid() reaps it at once.
# Load it with PERL5OPT=-MTimpushSubreaper (t/run.sh does, for TEST_NGINX_REAL).
# Our own runner (t/lib/Test/Nginx/Socket.pm) keeps nginx as a direct child
# and does not need this.

use strict;
use warnings;
use Config ();

# prctl's syscall number per architecture (Debian's perl ships no syscall.ph).
my %SYS_prctl = (x86_64 => 157, aarch64 => 167, i386 => 172, i686 => 172);
my $PR_SET_CHILD_SUBREAPER = 36;

my ($arch) = $Config::Config{archname} =~ /^([^-]+)/;
if (my $nr = $SYS_prctl{$arch}) {
    syscall($nr, $PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        or warn "TimpushSubreaper: prctl(PR_SET_CHILD_SUBREAPER) failed: $!\n";
} else {
    warn "TimpushSubreaper: unknown prctl syscall number on $arch; not a subreaper\n";
}

1;
