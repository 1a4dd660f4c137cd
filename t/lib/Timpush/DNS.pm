package Timpush::DNS;

# A tiny DNS server for t/resolve.t: one name, A records the test sets and
# changes, a TTL, and ways to fail.  Written with pack/unpack (RFC 1035),
# no DNS library.  Called fully qualified from "--- init" code:
#
#   my $d = Timpush::DNS::start(port => $port, name => 'apns.test',
#                               addrs => ['127.0.0.1'], ttl => 1);
#   Timpush::DNS::set($d, addrs => ['127.0.0.2']);    # or mode => ...
#   Timpush::DNS::queries($d [, 'A'])    how many queries came (of a type)
#   Timpush::DNS::stop($d)               also done when the handle goes
#
# It listens on UDP 127.0.0.1:port in a forked process, which reads the
# settings again for every query (a file the test process rewrites), so a
# change applies to the next query.  Modes:
#   answer    the name's A query: the addresses, with the TTL; its AAAA
#             query: no record (NOERROR, empty); another name: NXDOMAIN
#   silent    no reply at all
#   nxdomain  NXDOMAIN for the name
#   servfail  SERVFAIL
#   garbage   broken replies, every one of @GARBAGE to each query, one
#             after another: random bytes, a header alone, a question cut
#             short, an answer cut short, a compression pointer to itself
#             and one past the end, a record longer than the packet, more
#             records counted than sent, an A record of 3 bytes, the TC bit
# Each query is logged, one line "TYPE name" per query, to a file.

use strict;
use warnings;

use File::Temp ();
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

my %TYPES = (1 => 'A', 28 => 'AAAA');

# the broken replies of the garbage mode (below)
our @GARBAGE;

sub start {
    my (%o) = @_;
    die "Timpush::DNS::start: port is required\n" unless $o{port};
    my $h = bless {
        owner => $$,
        state => File::Temp->new(TEMPLATE => 'dns-state-XXXXXX', TMPDIR => 1),
        log => File::Temp->new(TEMPLATE => 'dns-log-XXXXXX', TMPDIR => 1),
        name => lc($o{name} // 'apns.test'),
        addrs => $o{addrs} // ['127.0.0.1'],
        ttl => $o{ttl} // 1,
        mode => $o{mode} // 'answer',
    }, __PACKAGE__;
    write_state($h);

    my $sock = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => $o{port}, Proto => 'udp')
        or die "Timpush::DNS::start: cannot bind UDP $o{port}: $!\n";

    my $pid = fork // die "Timpush::DNS::start: fork: $!\n";
    if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT HUP CHLD TERM);
        eval { serve($sock, $h->{state}->filename, $h->{log}->filename) };
        warn "Timpush::DNS: $@" if $@;
        POSIX::_exit(0);
    }
    close $sock;
    $h->{pid} = $pid;
    return $h;
}

sub set {
    my ($h, %o) = @_;
    $h->{$_} = $o{$_} for keys %o;
    write_state($h);
}

sub write_state {
    my ($h) = @_;
    # written aside and renamed: the server never reads half of it
    my $file = $h->{state}->filename;
    open my $fh, '>', "$file.new" or die "Timpush::DNS: $file.new: $!\n";
    print {$fh} join(' ', $h->{mode}, $h->{ttl}, $h->{name},
                     join(',', @{$h->{addrs}})), "\n";
    close $fh;
    rename "$file.new", $file or die "Timpush::DNS: rename: $!\n";
}

sub queries {
    my ($h, $type) = @_;
    open my $fh, '<', $h->{log}->filename or return 0;
    my @lines = <$fh>;
    return scalar grep { !defined $type || /^\Q$type\E / } @lines;
}

sub stop {
    my ($h) = @_;
    return unless $h->{pid};
    kill 'KILL', $h->{pid};
    waitpid $h->{pid}, 0;
    delete $h->{pid};
}

sub DESTROY {
    my ($h) = @_;
    stop($h) if $h->{owner} == $$;
}


# ---------------------------------------------------------------- the server

sub serve {
    my ($sock, $state, $log) = @_;

    while (1) {
        my $from = $sock->recv(my $query, 512);
        next unless defined $from && length $query >= 12;

        open my $fh, '<', $state or next;
        my ($mode, $ttl, $name, $addrs) = split ' ', scalar(<$fh>) // '';
        close $fh;
        my @addrs = split /,/, $addrs // '';

        my ($id, $flags, $qd) = unpack 'n n n', $query;
        my ($qname, $end) = read_name($query, 12);
        next unless defined $qname && $qd == 1 && length $query >= $end + 4;
        my ($qtype, $qclass) = unpack 'n n', substr $query, $end, 4;
        my $question = substr $query, 12, $end + 4 - 12;

        if (open my $lf, '>>', $log) {
            syswrite $lf, ($TYPES{$qtype} // $qtype) . " $qname\n";
            close $lf;
        }

        my $reply;
        if ($mode eq 'silent') {
            next;
        } elsif ($mode eq 'garbage') {
            $sock->send($_->($id, $question), 0, $from) for @GARBAGE;
            next;
        } elsif ($mode eq 'servfail') {
            $reply = header($id, 2, 0) . $question;
        } elsif ($mode eq 'nxdomain' || lc $qname ne $name) {
            $reply = header($id, 3, 0) . $question;
        } elsif ($qtype == 1) {
            $reply = header($id, 0, scalar @addrs) . $question
                   . join '', map { a_record($ttl, $_) } @addrs;
        } else {
            $reply = header($id, 0, 0) . $question;
        }

        $sock->send($reply, 0, $from);
    }
}

sub read_name {
    my ($pkt, $pos) = @_;
    my @labels;
    while (1) {
        return if $pos >= length $pkt;
        my $len = ord substr $pkt, $pos, 1;
        $pos++;
        last if $len == 0;
        return if $len > 63 || $pos + $len > length $pkt;
        push @labels, substr $pkt, $pos, $len;
        $pos += $len;
    }
    return (join('.', @labels), $pos);
}

# a reply's header: QR, RD, RA, rcode; one question; ancount records
sub header {
    my ($id, $rcode, $an, $flags) = @_;
    return pack 'n n n n n n', $id, ($flags // 0x8180) | $rcode, 1, $an, 0, 0;
}

# an A record whose name points at the question's (offset 12)
sub a_record {
    my ($ttl, $addr) = @_;
    return pack('n n n N n', 0xc00c, 1, 1, $ttl, 4)
         . pack('C4', split /\./, $addr);
}

@GARBAGE = (
    # random bytes, fewer than a header
    sub { join '', map { chr int rand 256 } 1 .. 5 },
    # a header alone, claiming a question and an answer
    sub { header($_[0], 0, 1) },
    # the question cut in the middle of its name
    sub { header($_[0], 0, 1) . substr $_[1], 0, 3 },
    # an answer cut in the middle of its record
    sub { header($_[0], 0, 1) . $_[1] . substr a_record(1, '127.0.0.1'), 0, 7 },
    # an answer whose name is a compression pointer to itself
    sub {
        my $at = 12 + length $_[1];
        header($_[0], 0, 1) . $_[1]
            . pack('n n n N n', 0xc000 | $at, 1, 1, 1, 4) . pack 'C4', 127, 0, 0, 1;
    },
    # a record longer than the packet
    sub { header($_[0], 0, 1) . $_[1] . pack('n n n N n', 0xc00c, 1, 1, 1, 200)
          . pack 'C4', 127, 0, 0, 1 },
    # 50 answers counted, one sent
    sub { header($_[0], 0, 50) . $_[1] . a_record(1, '127.0.0.1') },
    # an A record of 3 bytes
    sub { header($_[0], 0, 1) . $_[1] . pack('n n n N n', 0xc00c, 1, 1, 1, 3)
          . pack 'C3', 127, 0, 0 },
    # truncated (TC), as a UDP answer too large would be
    sub { header($_[0], 0, 0, 0x8380) . $_[1] },
    # a pointer past the end of the packet
    sub { header($_[0], 0, 1) . $_[1]
          . pack('n n n N n', 0xc000 | 4000, 1, 1, 1, 4) . pack 'C4', 127, 0, 0, 1 },
);

1;
