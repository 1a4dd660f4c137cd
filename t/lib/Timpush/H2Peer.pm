package Timpush::H2Peer;

# An APNs peer that misbehaves on purpose, for t/transport.t (DESIGN.md
# §11): HTTP/2 over TLS, written frame by frame here rather than through an
# HTTP/2 library, so that it can send what a library refuses to: answers
# before the request is over, a forbidden header, a zero WINDOW_UPDATE, half
# a frame.  Called fully qualified from "--- init" code:
#
#   my $h = Timpush::H2Peer::start(port => $port, mode => 'normal', %options);
#   ... register devices, push through the gateway ...
#   my %got = Timpush::H2Peer::accepted($h);     # token => answers of 200
#   Timpush::H2Peer::stop($h);
#
#   events($h)        every event so far (below), as hashes, oldest first
#   connections($h)   how many connections were accepted
#   requests($h)      token => how many streams carried it
#   accepted($h [, status])   token => how many answers of that status
#                     (200: what APNs accepted)
#   wait_for($h, sub { my @events = @_; ... }, seconds)   true once the
#                     code is true of the events, false after the seconds
#   stop($h)          also done when the handle goes away
#
# start() listens on 127.0.0.1:port, with the test server certificate
# ($TEST_NGINX_CERT_DIR/server.crt, for 127.0.0.1 and localhost) and ALPN
# "h2", and forks an acceptor; the acceptor forks one process per
# connection, numbered from 1 in accept order.  Each process appends what
# happens to one event file, one JSON object per line; lines are written by
# single write(2)s on O_APPEND descriptors, so lines of different
# connections never mix, and the events of an answer are written before the
# answer itself, so whatever the gateway has read is already in the file.
#
# Events (each also has ms, the time in milliseconds since the epoch):
#   conn           {conn}                      a TCP connection accepted
#   settings       {conn, values}              the client's SETTINGS (name => value)
#   settings_sent  {conn, values}              ours
#   req            {conn, stream, token, apns_id, headers, body, complete,
#                   open, [ignored]}
#                  one per stream the client opens: logged when the peer
#                  acts on it (an early answer, a refusal) or when it is
#                  complete or ends unfinished.  open: the streams open on
#                  the connection when it arrived, itself included;
#                  ignored: never answered (above our GOAWAY's last stream,
#                  or on a connection the mode has given up on)
#   resp           {conn, stream, token, status, [reason]}   an answer
#   rst            {conn, stream, error}       RST_STREAM from the client
#   rst_sent       {conn, stream, token, error, [reason]}
#   end            {conn, stream}              the client's END_STREAM on a
#                                              stream already answered
#   ping           {conn}                      PING from the client
#   goaway         {conn, last_stream, error}  GOAWAY from the client
#   goaway_sent    {conn, last_stream, error}
#   window_update_sent {conn, stream, increment}   only the mode's zero one
#   error          {conn, what}                the client broke the protocol
#   close          {conn, by, [reason]}        by: "client" (end of stream),
#                                              "peer", or "error"
#
# Modes (option mode), with the options each reads:
#   normal               answer each complete request: 200 and apns-id
#                        (echoed), or an error from reject
#   early_answer         advertise INITIAL_WINDOW_SIZE window (default 16)
#                        and answer as soon as the HEADERS arrive, with
#                        END_STREAM, before the request's DATA is over (RFC
#                        9113 §8.1); the client's DATA still flows, as
#                        WINDOW_UPDATEs give it room
#   forbidden_header     answers carry "connection: close", which nghttp2
#                        must reject (it then resets the stream itself)
#   zero_window_update   answer the first request, then send WINDOW_UPDATE
#                        0 on stream 0 (nghttp2 answers GOAWAY
#                        PROTOCOL_ERROR and reads no more); from then on
#                        send nothing on that connection and keep it open
#   refuse_all           RST_STREAM REFUSED_STREAM on every stream
#   goaway_midflight     hold the answers until after (default 10) streams
#                        have arrived; then stop reading for pause seconds
#                        (default 0), send GOAWAY NO_ERROR with last-stream-id
#                        last (default: the (after/2)-th stream), answer the
#                        streams at or below it (answer_after seconds later,
#                        default 0), ignore those above, and close once those
#                        are answered and the client has not closed within
#                        2 s
#   settings_flap        as normal; after each answer that is not 200,
#                        SETTINGS MAX_CONCURRENT_STREAMS=1, after each 200
#                        max_streams, as Apple's servers are reported to do
#                        (Apple bug 27870881); give it reject
#   token_start_1        MAX_CONCURRENT_STREAMS=1 in the first SETTINGS,
#                        max_streams once a request with "authorization:
#                        bearer ..." has been answered
#   no_max_streams       a SETTINGS frame without MAX_CONCURRENT_STREAMS
#   silence              finish the TLS handshake and the SETTINGS exchange,
#                        then read and never send anything, not even a PING
#                        answer
#   slow_trickle         everything sent chunk bytes (default 4) at a time,
#                        delay seconds (default 0.05) apart
#   reset_midframe       on the first complete request, send half of the
#                        answer's HEADERS frame, then reset the TCP
#                        connection (SO_LINGER 0 and close)
#   close_after_handshake  close right after the TLS handshake
#
# Options of every mode:
#   port         (required) where to listen, on 127.0.0.1
#   addr         another loopback address to listen on (all of 127/8 is
#                local on Linux), e.g. 127.0.0.2
#   certs        the directory of server.crt and server.key (default
#                $TEST_NGINX_CERT_DIR)
#   conns        the mode applies to the first conns connections only; the
#                later ones are normal (default: all of them)
#   max_streams  the SETTINGS_MAX_CONCURRENT_STREAMS we advertise (1000)
#   reject       {token_prefix => "410 Unregistered", ...}: tokens starting
#                with a prefix are answered with that status and
#                {"reason":...} ({"reason","timestamp"} for 410)
#   expire_before  unix seconds: a request whose bearer token was issued
#                (its "iat") before then is answered 403
#                {"reason":"ExpiredProviderToken"}, as APNs answers a token
#                older than an hour
#   headers      [name, value, ...]: more response headers, sent as given
#   hold         seconds: complete requests are answered only once no new
#                stream has arrived for that long, so that the "open" field
#                of req shows how many streams the client keeps open at once
#   continuation bytes: answers' header blocks are cut into a HEADERS and
#                CONTINUATION frames of that size.  Not with slow_trickle:
#                Debian 12's libnghttp2 (1.52 with the CVE-2024-28182 fix)
#                may count a CONTINUATION that arrives in pieces more than
#                once, and then ends the connection ("Too many CONTINUATION
#                frames following a HEADER frame")
#   rcvbuf       SO_RCVBUF of the listening socket (so of every connection)
#
# HTTP/2 as a server does it: the client's header blocks (HEADERS and
# CONTINUATION) are decoded with HPACK's static and dynamic tables and
# Huffman code (RFC 7541); answers are encoded as literals without indexing,
# without Huffman.  DATA we send honours the client's connection and stream
# windows; DATA we receive is acknowledged with WINDOW_UPDATEs once half a
# window is used, as nghttp2 does.  SETTINGS and PING are acknowledged.  A
# stream that would exceed the MAX_CONCURRENT_STREAMS the client has
# acknowledged is refused (REFUSED_STREAM), as a strict server does.

use strict;
use warnings;

use Fcntl qw(O_APPEND O_CREAT O_WRONLY);
use File::Temp ();
use IO::Socket::INET;
use IO::Socket::SSL qw(SSL_VERIFY_NONE);
use JSON::PP ();
use POSIX ();
use Socket qw(SOL_SOCKET SO_LINGER SO_RCVBUF IPPROTO_TCP TCP_NODELAY);
use Time::HiRes ();

# frame types and flags (RFC 9113 §6)
use constant {
    DATA => 0, HEADERS => 1, RST_STREAM => 3, SETTINGS => 4,
    PUSH_PROMISE => 5, PING => 6, GOAWAY => 7, WINDOW_UPDATE => 8,
    CONTINUATION => 9,
};
use constant {
    END_STREAM => 0x1, ACK => 0x1, END_HEADERS => 0x4, PADDED => 0x8,
    PRIORITY_FLAG => 0x20,
};
use constant {
    NO_ERROR => 0, PROTOCOL_ERROR => 1, FRAME_SIZE_ERROR => 6,
    REFUSED_STREAM => 7, COMPRESSION_ERROR => 9,
};

my %SETTING_NAME = (
    1 => 'HEADER_TABLE_SIZE', 2 => 'ENABLE_PUSH',
    3 => 'MAX_CONCURRENT_STREAMS', 4 => 'INITIAL_WINDOW_SIZE',
    5 => 'MAX_FRAME_SIZE', 6 => 'MAX_HEADER_LIST_SIZE',
    8 => 'ENABLE_CONNECT_PROTOCOL',
);
my %SETTING_ID = reverse %SETTING_NAME;

my %MODES = map { $_ => 1 } qw(normal early_answer forbidden_header
    zero_window_update refuse_all goaway_midflight settings_flap
    token_start_1 no_max_streams silence slow_trickle reset_midframe
    close_after_handshake);

my $PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

# the default window of a connection and of a stream, and frame size
my $WINDOW = 65535;
my $FRAME = 16384;

# our SETTINGS_HEADER_TABLE_SIZE: the default, never changed
my $TABLE_SIZE = 4096;


# ---------------------------------------------------------------- HPACK

# RFC 7541 Appendix A: [name, value], from index 1
my @STATIC = (undef, map { my ($name, $value) = split / /, $_, 2; [$name, $value // ''] }
    ':authority', ':method GET', ':method POST', ':path /',
    ':path /index.html', ':scheme http', ':scheme https', ':status 200',
    ':status 204', ':status 206', ':status 304', ':status 400',
    ':status 404', ':status 500', 'accept-charset',
    'accept-encoding gzip, deflate', 'accept-language', 'accept-ranges',
    'accept', 'access-control-allow-origin', 'age', 'allow',
    'authorization', 'cache-control', 'content-disposition',
    'content-encoding', 'content-language', 'content-length',
    'content-location', 'content-range', 'content-type', 'cookie', 'date',
    'etag', 'expect', 'expires', 'from', 'host', 'if-match',
    'if-modified-since', 'if-none-match', 'if-range',
    'if-unmodified-since', 'last-modified', 'link', 'location',
    'max-forwards', 'proxy-authenticate', 'proxy-authorization', 'range',
    'referer', 'refresh', 'retry-after', 'server', 'set-cookie',
    'strict-transport-security', 'transfer-encoding', 'user-agent', 'vary',
    'via', 'www-authenticate');

# RFC 7541 Appendix B: the code of each byte value, then its length in bits
# (the EOS symbol, 256, is 30 ones, never decoded: it only pads)
my @HUFFMAN_CODE = map { hex } qw(
    1ff8 7fffd8 fffffe2 fffffe3 fffffe4 fffffe5 fffffe6 fffffe7
    fffffe8 ffffea 3ffffffc fffffe9 fffffea 3ffffffd fffffeb fffffec
    fffffed fffffee fffffef ffffff0 ffffff1 ffffff2 3ffffffe ffffff3
    ffffff4 ffffff5 ffffff6 ffffff7 ffffff8 ffffff9 ffffffa ffffffb
    14 3f8 3f9 ffa 1ff9 15 f8 7fa 3fa 3fb f9 7fb fa 16 17 18
    0 1 2 19 1a 1b 1c 1d 1e 1f 5c fb 7ffc 20 ffb 3fc
    1ffa 21 5d 5e 5f 60 61 62 63 64 65 66 67 68 69 6a
    6b 6c 6d 6e 6f 70 71 72 fc 73 fd 1ffb 7fff0 1ffc 3ffc 22
    7ffd 3 23 4 24 5 25 26 27 6 74 75 28 29 2a 7
    2b 76 2c 8 9 2d 77 78 79 7a 7b 7ffe 7fc 3ffd 1ffd ffffffc
    fffe6 3fffd2 fffe7 fffe8 3fffd3 3fffd4 3fffd5 7fffd9
    3fffd6 7fffda 7fffdb 7fffdc 7fffdd 7fffde ffffeb 7fffdf
    ffffec ffffed 3fffd7 7fffe0 ffffee 7fffe1 7fffe2 7fffe3
    7fffe4 1fffdc 3fffd8 7fffe5 3fffd9 7fffe6 7fffe7 ffffef
    3fffda 1fffdd fffe9 3fffdb 3fffdc 7fffe8 7fffe9 1fffde
    7fffea 3fffdd 3fffde fffff0 1fffdf 3fffdf 7fffeb 7fffec
    1fffe0 1fffe1 3fffe0 1fffe2 7fffed 3fffe1 7fffee 7fffef
    fffea 3fffe2 3fffe3 3fffe4 7ffff0 3fffe5 3fffe6 7ffff1
    3ffffe0 3ffffe1 fffeb 7fff1 3fffe7 7ffff2 3fffe8 1ffffec
    3ffffe2 3ffffe3 3ffffe4 7ffffde 7ffffdf 3ffffe5 fffff1 1ffffed
    7fff2 1fffe3 3ffffe6 7ffffe0 7ffffe1 3ffffe7 7ffffe2 fffff2
    1fffe4 1fffe5 3ffffe8 3ffffe9 ffffffd 7ffffe3 7ffffe4 7ffffe5
    fffec fffff3 fffed 1fffe6 3fffe9 1fffe7 1fffe8 7ffff3
    3fffea 3fffeb 1ffffee 1ffffef fffff4 fffff5 3ffffea 7ffff4
    3ffffeb 7ffffe6 3ffffec 3ffffed 7ffffe7 7ffffe8 7ffffe9 7ffffea
    7ffffeb ffffffe 7ffffec 7ffffed 7ffffee 7ffffef 7fffff0 3ffffee);
my @HUFFMAN_LENGTH = qw(
    13 23 28 28 28 28 28 28 28 24 30 28 28 30 28 28
    28 28 28 28 28 28 30 28 28 28 28 28 28 28 28 28
     6 10 10 12 13  6  8 11 10 10  8 11  8  6  6  6
     5  5  5  6  6  6  6  6  6  6  7  8 15  6 12 10
    13  6  7  7  7  7  7  7  7  7  7  7  7  7  7  7
     7  7  7  7  7  7  7  7  8  7  8 13 19 13 14  6
    15  5  6  5  6  5  6  6  6  5  7  7  6  6  6  5
     6  7  6  5  5  6  7  7  7  7  7 15 11 14 13 28
    20 22 20 20 22 22 22 23 22 23 23 23 23 23 24 23
    24 24 22 23 24 23 23 23 23 21 22 23 22 23 23 24
    22 21 20 22 22 23 23 21 23 22 22 24 21 22 23 23
    21 21 22 21 23 22 23 23 20 22 22 22 23 22 22 23
    26 26 20 19 22 23 22 25 26 26 26 27 27 26 24 25
    19 21 26 27 27 26 27 24 21 21 26 26 28 27 27 27
    20 24 20 21 22 21 21 23 22 22 25 25 24 24 26 23
    26 27 26 26 27 27 27 27 27 28 27 27 27 27 27 26);

# The code as a binary tree: $HUFFMAN_TREE[node] = [child for 0, child
# for 1], a child being another node or, negative, -(symbol + 1).  Node 0
# is the root, so 0 as a child means none yet.
my @HUFFMAN_TREE = ([0, 0]);
for my $sym (0 .. 256) {
    my ($code, $len) = $sym == 256 ? (0x3fffffff, 30)
                                   : ($HUFFMAN_CODE[$sym], $HUFFMAN_LENGTH[$sym]);
    my $node = 0;
    for my $i (reverse 0 .. $len - 1) {
        my $bit = ($code >> $i) & 1;
        if ($i == 0) {
            $HUFFMAN_TREE[$node][$bit] = -($sym + 1);
        } else {
            if (!$HUFFMAN_TREE[$node][$bit]) {
                push @HUFFMAN_TREE, [0, 0];
                $HUFFMAN_TREE[$node][$bit] = $#HUFFMAN_TREE;
            }
            $node = $HUFFMAN_TREE[$node][$bit];
        }
    }
}

# Where a string may end: at the root, or within at most 7 bits of padding,
# which are the first bits of EOS, all ones (RFC 7541 §5.2).
my %HUFFMAN_END = (0 => 1);
{
    my $node = 0;
    for (1 .. 7) {
        $node = $HUFFMAN_TREE[$node][1];
        $HUFFMAN_END{$node} = 1;
    }
}

# Decoding goes a byte at a time: from a node, a byte leads to another node
# ($HUFFMAN_NEXT[node * 256 + byte]) and emits some symbols
# ($HUFFMAN_EMIT[...]).  Each (node, byte) is worked out bit by bit the
# first time it is met, then kept: header values keep to few bytes.
my (@HUFFMAN_NEXT, @HUFFMAN_EMIT);

sub huffman_step {
    my ($i) = @_;
    my ($node, $byte) = (int($i / 256), $i % 256);
    my $out = '';
    for my $bit (reverse 0 .. 7) {
        my $next = $HUFFMAN_TREE[$node][($byte >> $bit) & 1];
        if ($next < 0) {
            die "EOS in a Huffman string\n" if $next == -257;
            $out .= chr(-$next - 1);
            $node = 0;
        } else {
            $node = $next;
        }
    }
    ($HUFFMAN_NEXT[$i], $HUFFMAN_EMIT[$i]) = ($node, $out);
}

# Some literals come Huffman-coded in every request: nghttp2 never indexes
# "authorization" (a secret), and names sent never-indexed are literals
# too.  Their decoding is kept, keyed by the code (and forgotten when too
# many are kept).
my %HUFFMAN_DECODED;

sub huffman_decode {
    %HUFFMAN_DECODED = () if keys %HUFFMAN_DECODED > 10000;
    return $HUFFMAN_DECODED{$_[0]} //= huffman_decode_bytes($_[0]);
}

sub huffman_decode_bytes {
    my $node = 0;
    my $out = '';
    for my $byte (unpack 'C*', $_[0]) {
        my $i = $node * 256 + $byte;
        huffman_step($i) unless defined $HUFFMAN_NEXT[$i];
        $out .= $HUFFMAN_EMIT[$i];
        $node = $HUFFMAN_NEXT[$i];
    }
    die "bad Huffman padding\n" unless $HUFFMAN_END{$node};
    return $out;
}

# an integer with an n-bit prefix (RFC 7541 §5.1) at offset $$p of $_[0]
sub hpack_int {
    my (undef, $p, $n) = @_;
    my $max = (1 << $n) - 1;
    die "truncated header block\n" if $$p >= length $_[0];
    my $v = ord(substr $_[0], $$p++, 1) & $max;
    return $v if $v < $max;
    for (my $shift = 0; $shift <= 28; $shift += 7) {
        die "truncated header block\n" if $$p >= length $_[0];
        my $b = ord substr $_[0], $$p++, 1;
        $v += ($b & 0x7f) << $shift;
        return $v unless $b & 0x80;
    }
    die "integer too large in header block\n";
}

sub hpack_string {
    my (undef, $p) = @_;
    die "truncated header block\n" if $$p >= length $_[0];
    my $huffman = ord(substr $_[0], $$p, 1) & 0x80;
    my $len = hpack_int($_[0], $p, 7);
    die "truncated header block\n" if $$p + $len > length $_[0];
    my $s = substr $_[0], $$p, $len;
    $$p += $len;
    return $huffman ? huffman_decode($s) : $s;
}

sub hpack_entry {
    my ($c, $i) = @_;
    return @{$STATIC[$i]} if $i >= 1 && $i <= 61;
    my $e = $c->{table}[$i - 62] or die "header index $i out of range\n";
    return @$e;
}

sub hpack_insert {
    my ($c, $name, $value) = @_;
    unshift @{$c->{table}}, [$name, $value];
    $c->{table_size} += length($name) + length($value) + 32;
    hpack_evict($c);
}

sub hpack_evict {
    my ($c) = @_;
    while ($c->{table_size} > $c->{table_max}) {
        my $e = pop @{$c->{table}};
        $c->{table_size} -= length($e->[0]) + length($e->[1]) + 32;
    }
}

# a header block into [name, value] pairs, updating the dynamic table
sub hpack_decode {
    my ($c, $block) = @_;
    my @fields;
    my $p = 0;

    while ($p < length $block) {
        my $b = ord substr $block, $p, 1;

        if ($b > 0x80 && $b < 0xbe) {
            # most fields of a request: one byte, a static entry
            push @fields, $STATIC[$b & 0x7f];
            $p++;

        } elsif ($b & 0x80) {
            push @fields, [hpack_entry($c, hpack_int($block, \$p, 7))];

        } elsif ($b & 0x40 || !($b & 0x20)) {
            # a literal: with incremental indexing (01), without indexing
            # (0000) or never indexed (0001)
            my $i = hpack_int($block, \$p, $b & 0x40 ? 6 : 4);
            my $name = $i ? (hpack_entry($c, $i))[0]
                          : hpack_string($block, \$p);
            my $value = hpack_string($block, \$p);
            push @fields, [$name, $value];
            hpack_insert($c, $name, $value) if $b & 0x40;

        } else {
            my $size = hpack_int($block, \$p, 5);
            die "table size $size over our $TABLE_SIZE\n" if $size > $TABLE_SIZE;
            $c->{table_max} = $size;
            hpack_evict($c);
        }
    }

    return \@fields;
}

sub hpack_int_encode {
    my ($v, $n, $high) = @_;
    my $max = (1 << $n) - 1;
    return chr($high | $v) if $v < $max;
    my $s = chr($high | $max);
    $v -= $max;
    while ($v >= 128) {
        $s .= chr(($v & 0x7f) | 0x80);
        $v >>= 7;
    }
    return $s . chr $v;
}

# literals without indexing, no Huffman: any name or value goes out as given
sub hpack_encode {
    my @h = @_;
    my $out = '';
    while (my ($name, $value) = splice @h, 0, 2) {
        # ":status" is static entry 8: its name by index
        $out .= $name eq ':status' ? hpack_int_encode(8, 4, 0)
              : "\x00" . hpack_int_encode(length $name, 7, 0) . $name;
        $out .= hpack_int_encode(length $value, 7, 0) . $value;
    }
    return $out;
}


# ---------------------------------------------------------------- events

# fields that stay JSON strings even when they look like numbers (a token
# may be all digits)
my %STRING_FIELD = map { $_ => 1 } qw(ev token apns_id body reason by what);

# JSON strings of the arguments.  Bytes outside printable ASCII are escaped
# one by one (\u00XX), so that decoding gives back the very bytes received,
# whatever they are.  Most header names and values repeat from request to
# request: their JSON is kept (and forgotten when too many are kept).
my %JSON_STRING;

sub json_strings {
    %JSON_STRING = () if keys %JSON_STRING > 10000;
    return map {
        $JSON_STRING{$_} //= do {
            (my $s = $_) =~ s/([^\x20-\x21\x23-\x5b\x5d-\x7e])/sprintf '\u%04x', ord $1/ge;
            qq("$s");
        }
    } @_;
}

# an event line; the keys are ours, plain words
sub event {
    my ($c, undef, $ev, @kv) = @_;
    my $line = qq({"ev":"$ev","conn":$c->{n},"ms":) . int(now() * 1000);
    while (my ($k, $v) = splice @kv, 0, 2) {
        my $json = !defined $v ? 'null'
            : ref $v eq 'HASH'
            ? do {
                my @s = json_strings(%$v);
                '{' . join(',', map { "$s[2 * $_]:$s[2 * $_ + 1]" } 0 .. @s / 2 - 1) . '}'
            }
            : !$STRING_FIELD{$k} && $v =~ /^-?[0-9]+\z/ ? $v
            : (json_strings($v))[0];
        $line .= qq(,"$k":$json);
    }
    push @{$c->{events}}, "$line}\n";
}

sub flush_events {
    my ($c) = @_;
    return unless @{$c->{events}};
    my $lines = join '', @{$c->{events}};
    @{$c->{events}} = ();
    # one write: the lines of this connection stay whole among the others'
    syswrite $c->{log}, $lines;
}


# ---------------------------------------------------------------- the API

sub start {
    my (%o) = @_;
    die "Timpush::H2Peer::start: port is required\n" unless $o{port};
    $o{mode} //= 'normal';
    die "Timpush::H2Peer::start: no mode \"$o{mode}\"\n" unless $MODES{$o{mode}};
    $o{max_streams} //= 1000;
    $o{certs} //= $ENV{TEST_NGINX_CERT_DIR}
        // die "Timpush::H2Peer::start: TEST_NGINX_CERT_DIR is not set\n";

    my $file = File::Temp->new(TEMPLATE => 'h2peer-XXXXXX', TMPDIR => 1);
    my $listen = IO::Socket::INET->new(
        LocalAddr => $o{addr} // '127.0.0.1', LocalPort => $o{port},
        Proto => 'tcp',
        Listen => 128, ReuseAddr => 1)
        or die "Timpush::H2Peer::start: cannot listen on $o{port}: $!\n";
    if ($o{rcvbuf}) {
        setsockopt $listen, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf}
            or die "Timpush::H2Peer::start: SO_RCVBUF: $!\n";
    }

    my $pid = fork // die "Timpush::H2Peer::start: fork: $!\n";
    if ($pid == 0) {
        # whatever happens, the test process's END blocks never run here
        eval { acceptor($listen, \%o, $file->filename) };
        warn "Timpush::H2Peer: $@" if $@;
        POSIX::_exit(0);
    }
    close $listen;

    return bless { pid => $pid, file => $file, owner => $$ }, __PACKAGE__;
}

sub stop {
    my ($h) = @_;
    return unless $h->{pid};
    kill 'TERM', $h->{pid};
    for (1 .. 100) {
        return delete $h->{pid}
            if waitpid($h->{pid}, POSIX::WNOHANG()) > 0;
        Time::HiRes::sleep(0.05);
    }
    kill 'KILL', $h->{pid};
    waitpid $h->{pid}, 0;
    delete $h->{pid};
}

# A block that dies half way leaves no peer behind; forks of the test
# process (Timpush::Push::push_async) leave it alone.
sub DESTROY {
    my ($h) = @_;
    stop($h) if $h->{owner} == $$;
}

sub events {
    my ($h) = @_;
    my $name = $h->{file}->filename;

    # decoded again only when the file has grown (JSON::PP is slow)
    return @{$h->{cache}[1]} if $h->{cache} && $h->{cache}[0] == (-s $name // 0);

    open my $fh, '<', $name or return ();
    my $text = do { local $/; <$fh> } // '';
    # a line being written as we read is left for the next call
    $text = substr $text, 0, rindex($text, "\n") + 1;
    my $json = JSON::PP->new;
    $h->{cache} = [length $text, [map { $json->decode($_) } split /\n/, $text]];
    return @{$h->{cache}[1]};
}

# connections accepted
sub connections {
    my ($h) = @_;
    return scalar grep { $_->{ev} eq 'conn' } events($h);
}

# token => streams that carried it (each stream the client opened)
sub requests {
    my ($h) = @_;
    my %n;
    $n{$_->{token} // ''}++ for grep { $_->{ev} eq 'req' } events($h);
    return %n;
}

# token => answers of that status (200 by default): what APNs accepted
sub accepted {
    my ($h, $status) = @_;
    $status //= 200;
    my %n;
    $n{$_->{token} // ''}++
        for grep { $_->{ev} eq 'resp' && $_->{status} == $status } events($h);
    return %n;
}

# waits until $cond->(@events) is true, at most $timeout seconds; returns
# whether it became true
sub wait_for {
    my ($h, $cond, $timeout) = @_;
    my $until = Time::HiRes::time() + ($timeout // 5);
    while (1) {
        return 1 if $cond->(events($h));
        return 0 if Time::HiRes::time() > $until;
        Time::HiRes::sleep(0.05);
    }
}


# ---------------------------------------------------------------- processes

sub acceptor {
    my ($listen, $o, $file) = @_;
    my ($stop, $n, %kids) = (0, 0);

    # what the test process had set up is not ours (its handlers would stop
    # its nginx and run its END blocks)
    $SIG{$_} = 'DEFAULT' for qw(INT HUP CHLD);
    $SIG{PIPE} = 'IGNORE';
    $SIG{TERM} = sub { $stop = 1 };

    while (!$stop) {
        while ((my $pid = waitpid -1, POSIX::WNOHANG()) > 0) {
            delete $kids{$pid};
        }
        my $rin = '';
        vec($rin, fileno $listen, 1) = 1;
        next unless select(my $rout = $rin, undef, undef, 0.2) > 0;
        my $sock = $listen->accept or next;
        $n++;
        my $pid = fork;
        if (!defined $pid) {
            close $sock;
            next;
        }
        if ($pid == 0) {
            close $listen;
            $SIG{TERM} = 'DEFAULT';
            eval { connection($sock, $n, $o, $file) };
            warn "Timpush::H2Peer: connection $n: $@" if $@;
            POSIX::_exit(0);
        }
        $kids{$pid} = 1;
        close $sock;
    }

    kill 'TERM', keys %kids;
    waitpid $_, 0 for keys %kids;
}

sub now { Time::HiRes::time() }

sub connection {
    my ($sock, $n, $o, $file) = @_;
    my $mode = $o->{conns} && $n > $o->{conns} ? 'normal' : $o->{mode};

    sysopen my $log, $file, O_WRONLY | O_APPEND | O_CREAT
        or die "H2Peer: $file: $!";

    my $c = {
        n => $n, o => $o, mode => $mode, log => $log, sock => $sock,
        events => [], in => '', out => '',
        table => [], table_size => 0, table_max => $TABLE_SIZE,
        streams => {}, last_id => 0, open => 0, arrived => [],
        # what the client lets us send, and its frame size
        send_window => $WINDOW, stream_window => $WINDOW, frame => $FRAME,
        data_queue => [],
        # what we let the client send: per stream, per connection
        window => $mode eq 'early_answer' ? $o->{window} // 16 : $WINDOW,
        recv_unacked => 0, unacked_streams => {},
        # MAX_CONCURRENT_STREAMS values sent and not yet acknowledged, in
        # order (undef: the SETTINGS had none), and the one in force
        mcs_sent => [], mcs_acked => undef,
        held => [], last_arrival => 0,
    };

    event($c, ev => 'conn');
    flush_events($c);

    setsockopt $sock, IPPROTO_TCP, TCP_NODELAY, 1;
    my $ok = IO::Socket::SSL->start_SSL($sock,
        SSL_server => 1,
        SSL_cert_file => "$o->{certs}/server.crt",
        SSL_key_file => "$o->{certs}/server.key",
        SSL_alpn_protocols => ['h2'],
        SSL_verify_mode => SSL_VERIFY_NONE,
        Timeout => 10);
    if (!$ok) {
        event($c, ev => 'close', by => 'error',
              reason => "TLS handshake: $IO::Socket::SSL::SSL_ERROR");
        flush_events($c);
        return;
    }
    if (($sock->alpn_selected // '') ne 'h2') {
        event($c, ev => 'close', by => 'error', reason => 'no ALPN h2');
        flush_events($c);
        return;
    }

    if ($mode eq 'close_after_handshake') {
        event($c, ev => 'close', by => 'peer', reason => 'after handshake');
        flush_events($c);
        # no TLS close_notify: the connection just goes
        POSIX::close(fileno $sock);
        return;
    }

    # our preface: SETTINGS, at once, before the client's
    my %settings;
    $settings{MAX_CONCURRENT_STREAMS} =
        $mode eq 'token_start_1' ? 1 : $o->{max_streams}
        unless $mode eq 'no_max_streams';
    $settings{INITIAL_WINDOW_SIZE} = $c->{window}
        if $c->{window} != $WINDOW;
    # Apple's servers send this one too; it keeps the frame non-empty
    $settings{MAX_HEADER_LIST_SIZE} = 8000 if $mode eq 'no_max_streams';
    send_settings($c, %settings);

    run($c);

    # streams the client opened and never finished
    for my $s (sort { $a->{id} <=> $b->{id} } values %{$c->{streams}}) {
        log_request($c, $s);
    }
    event($c, ev => 'close', %{$c->{closed} // { by => 'client' }});
    flush_events($c);
}

sub run {
    my ($c) = @_;
    my $sock = $c->{sock};
    my $preface = 0;

    write_out($c);

    until ($c->{closed}) {
        if ($c->{goaway_due}) {
            # goaway_midflight's pause: nothing is read, so the client's
            # writes back up
            my $left = $c->{goaway_due} - now();
            Time::HiRes::sleep($left) if $left > 0;

        } else {
            my $due = next_due($c);
            my $wait = defined $due ? $due - now() : undef;
            $wait = 0 if defined $wait && $wait < 0;

            if ($sock->pending || readable($sock, $wait)) {
                read_some($c);

                if (!$preface) {
                    next if length $c->{in} < length $PREFACE && !$c->{closed};
                    if (substr($c->{in}, 0, length $PREFACE) ne $PREFACE) {
                        $c->{closed} //= { by => 'error',
                                           reason => 'no client preface' };
                        return;
                    }
                    substr($c->{in}, 0, length $PREFACE, '');
                    $preface = 1;
                }
                frames($c);
                if ($c->{closed}) {
                    # our GOAWAY for a protocol error still goes out; to a
                    # client that has gone, nothing does
                    write_out($c) if $c->{broken};
                    return;
                }
            }
        }

        timers($c);
        acknowledge_data($c);
        write_out($c);
    }
}

sub readable {
    my ($sock, $wait) = @_;
    my $rin = '';
    vec($rin, fileno $sock, 1) = 1;
    return select(my $rout = $rin, undef, undef, $wait) > 0;
}

# what has arrived, up to 256 KiB (one batch of answers for many
# requests); at the end of the connection, $c->{closed} says how it ended
sub read_some {
    my ($c) = @_;
    my $sock = $c->{sock};
    my $total = 0;

    while ($total < 262144) {
        my $n = $sock->sysread(my $buf, 65536);
        if (!defined $n) {
            next if $!{EINTR};
            $c->{closed} = { by => 'error', reason => 'read: '
                             . ($! || $IO::Socket::SSL::SSL_ERROR) };
            return;
        }
        if ($n == 0) {
            $c->{closed} = { by => 'client' };
            return;
        }
        $c->{in} .= $buf;
        $total += $n;
        last unless $sock->pending || readable($sock, 0);
    }
}

sub write_out {
    my ($c) = @_;

    # the events of what goes out are in the file before it goes
    flush_events($c);

    return if $c->{out} eq '';
    my $out = $c->{out};
    $c->{out} = '';

    if ($c->{mode} eq 'slow_trickle') {
        my $chunk = $c->{o}{chunk} // 4;
        for (my $off = 0; $off < length $out; $off += $chunk) {
            Time::HiRes::sleep($c->{o}{delay} // 0.05) if $off;
            write_all($c, substr $out, $off, $chunk) or return;
        }
        return;
    }

    write_all($c, $out);
}

sub write_all {
    my ($c, $data) = @_;
    my $off = 0;
    while ($off < length $data) {
        my $n = $c->{sock}->syswrite($data, length($data) - $off, $off);
        if (!defined $n) {
            next if $!{EINTR};
            $c->{closed} //= { by => 'error', reason => "write: $!" };
            return 0;
        }
        $off += $n;
    }
    return 1;
}

# frames out, into the buffer written at the end of each turn
sub frame {
    my ($c, $type, $flags, $id, $payload) = @_;
    # a mode that has gone silent sends nothing more
    return if $c->{mute};
    my $len = length $payload;
    $c->{out} .= pack('CnCCN', $len >> 16, $len & 0xffff, $type, $flags, $id)
                 . $payload;
}

sub send_settings {
    my ($c, %values) = @_;
    frame($c, SETTINGS, 0, 0, join '', map { pack 'nN', $SETTING_ID{$_}, $values{$_} }
                                          sort keys %values);
    push @{$c->{mcs_sent}}, $values{MAX_CONCURRENT_STREAMS};
    event($c, ev => 'settings_sent', values => \%values);
}

sub send_goaway {
    my ($c, $last, $error) = @_;
    frame($c, GOAWAY, 0, 0, pack 'NN', $last, $error);
    event($c, ev => 'goaway_sent', last_stream => $last, error => $error);
}

sub send_rst {
    my ($c, $s, $error, $reason) = @_;
    log_request($c, $s);
    frame($c, RST_STREAM, 0, $s->{id}, pack 'N', $error);
    event($c, ev => 'rst_sent', stream => $s->{id}, token => $s->{token},
          error => $error, $reason ? (reason => $reason) : ());
    close_stream($c, $s);
}

# the client broke the protocol: GOAWAY, and the connection ends
sub connection_error {
    my ($c, $error, $what) = @_;
    event($c, ev => 'error', what => $what);
    send_goaway($c, $c->{last_id}, $error);
    $c->{broken} = 1;
    $c->{closed} = { by => 'peer', reason => $what };
}


# ---------------------------------------------------------------- frames in

sub frames {
    my ($c) = @_;
    my $pos = 0;
    my $len = length $c->{in};

    # a mode may stop reading (goaway_midflight's pause): what is left
    # stays in the buffer; after a protocol error nothing more is read
    while ($len - $pos >= 9 && !$c->{stop_reading} && !$c->{broken}) {
        my ($hi, $lo, $type, $flags, $id) = unpack 'CnCCN', substr $c->{in}, $pos, 9;
        my $flen = ($hi << 16) | $lo;
        last if $len - $pos < 9 + $flen;
        my $payload = substr $c->{in}, $pos + 9, $flen;
        $pos += 9 + $flen;
        $id &= 0x7fffffff;

        if ($flen > $FRAME) {
            connection_error($c, FRAME_SIZE_ERROR, "a frame of $flen bytes");
        } elsif ($c->{continuation} && $type != CONTINUATION) {
            connection_error($c, PROTOCOL_ERROR,
                             'a frame in the middle of a header block');
        } elsif ($type == DATA) {
            on_data($c, $flags, $id, $payload);
        } elsif ($type == HEADERS) {
            on_headers($c, $flags, $id, $payload);
        } elsif ($type == CONTINUATION) {
            on_continuation($c, $flags, $id, $payload);
        } elsif ($type == RST_STREAM) {
            on_rst($c, $id, unpack 'N', $payload);
        } elsif ($type == SETTINGS) {
            on_settings($c, $flags, $payload);
        } elsif ($type == PING) {
            if (!($flags & ACK)) {
                event($c, ev => 'ping');
                frame($c, PING, ACK, 0, $payload);
            }
        } elsif ($type == GOAWAY) {
            my ($last, $error) = unpack 'NN', $payload;
            event($c, ev => 'goaway', last_stream => $last & 0x7fffffff,
                  error => $error);
        } elsif ($type == WINDOW_UPDATE) {
            on_window_update($c, $id, unpack 'N', $payload);
        } elsif ($type == PUSH_PROMISE) {
            connection_error($c, PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
        }
        # PRIORITY and unknown types: nothing to do
    }

    substr($c->{in}, 0, $pos, '');
}

# a payload without its padding (and the priority fields of HEADERS)
sub unpad {
    my ($c, $flags, $payload, $priority) = @_;
    my $pad = 0;
    if ($flags & PADDED) {
        $pad = ord $payload;
        substr($payload, 0, 1, '');
    }
    substr($payload, 0, 5, '') if $priority;
    if ($pad > length $payload) {
        connection_error($c, PROTOCOL_ERROR, 'padding longer than the frame');
        return undef;
    }
    return substr $payload, 0, length($payload) - $pad;
}

sub on_data {
    my ($c, $flags, $id, $payload) = @_;

    # flow control counts every byte, padding and closed streams included
    $c->{recv_unacked} += length $payload;

    my $s = $c->{streams}{$id} or return;
    return if $s->{end_remote};
    $s->{recv_unacked} += length $payload;
    $c->{unacked_streams}{$id} = 1;
    my $data = unpad($c, $flags, $payload) // return;
    $s->{body} .= $data;
    request_complete($c, $s) if $flags & END_STREAM;
}

sub on_headers {
    my ($c, $flags, $id, $payload) = @_;
    my $block = unpad($c, $flags, $payload, $flags & PRIORITY_FLAG) // return;

    if ($flags & END_HEADERS) {
        header_block($c, $id, $block, $flags & END_STREAM);
    } else {
        $c->{continuation} = { id => $id, block => $block,
                               end_stream => $flags & END_STREAM };
    }
}

sub on_continuation {
    my ($c, $flags, $id, $payload) = @_;
    my $cont = $c->{continuation};
    if (!$cont || $cont->{id} != $id) {
        connection_error($c, PROTOCOL_ERROR, 'an unexpected CONTINUATION');
        return;
    }
    $cont->{block} .= $payload;
    return unless $flags & END_HEADERS;
    delete $c->{continuation};
    header_block($c, $id, $cont->{block}, $cont->{end_stream});
}

sub header_block {
    my ($c, $id, $block, $end_stream) = @_;

    # decoded whatever the stream: the dynamic table must stay in step
    my $fields = eval { hpack_decode($c, $block) };
    if (!$fields) {
        chomp(my $why = $@);
        connection_error($c, COMPRESSION_ERROR, "HPACK: $why");
        return;
    }

    if ($id % 2 == 0 || $id <= $c->{last_id}) {
        # trailers, or a stream we no longer know: nothing to answer
        my $s = $c->{streams}{$id} or return;
        request_complete($c, $s) if $end_stream && !$s->{end_remote};
        return;
    }

    $c->{last_id} = $id;
    my %h;
    $h{$_->[0]} = exists $h{$_->[0]} ? "$h{$_->[0]}, $_->[1]" : $_->[1]
        for @$fields;
    my ($token) = ($h{':path'} // '') =~ m{^/3/device/([^/?]+)};
    my $s = {
        id => $id, headers => \%h, token => $token, apns_id => $h{'apns-id'},
        body => '', recv_unacked => 0, send_window => $c->{stream_window},
    };
    $c->{streams}{$id} = $s;
    $c->{open}++;
    $s->{open} = $c->{open};
    push @{$c->{arrived}}, $id;
    $c->{last_arrival} = now();

    my $mode = $c->{mode};

    if (defined $c->{goaway_last} && $id > $c->{goaway_last}) {
        # above our GOAWAY's last stream: never processed
        $s->{ignored} = 1;

    } elsif ($c->{given_up}) {
        $s->{ignored} = 1;

    } elsif (over_limit($c)) {
        send_rst($c, $s, REFUSED_STREAM, 'over MAX_CONCURRENT_STREAMS');
        return;

    } elsif ($mode eq 'refuse_all') {
        send_rst($c, $s, REFUSED_STREAM);
        return;

    } elsif ($mode eq 'early_answer') {
        log_request($c, $s);
        answer($c, $s);

    } elsif ($mode eq 'goaway_midflight' && !defined $c->{goaway_last}
             && @{$c->{arrived}} == ($c->{o}{after} // 10)) {
        # the rest of what was read waits until after the GOAWAY
        $c->{stop_reading} = 1;
        $c->{goaway_due} = now() + ($c->{o}{pause} // 0);
    }

    request_complete($c, $s) if $end_stream;
}

# would this new stream exceed the limit the client knows of?  Until it
# acknowledges a lower value the higher one still holds; a raised one holds
# as soon as it is sent
sub over_limit {
    my ($c) = @_;
    # before its first acknowledgement, the client may take it as unbounded
    my $limit = $c->{mcs_acked} // return 0;
    for my $v (grep { defined } @{$c->{mcs_sent}}) {
        $limit = $v if $v > $limit;
    }
    return $c->{open} > $limit;
}

sub request_complete {
    my ($c, $s) = @_;
    $s->{end_remote} = 1;
    delete $c->{unacked_streams}{$s->{id}};

    if ($s->{answered}) {
        event($c, ev => 'end', stream => $s->{id});
        close_stream($c, $s);
        return;
    }

    my $mode = $c->{mode};

    if ($s->{ignored} || $mode eq 'silence') {
        log_request($c, $s);

    } elsif ($mode eq 'goaway_midflight'
             && (!defined $c->{goaway_last} || $c->{answer_due})) {
        # answered once the GOAWAY has said which streams count, and
        # answer_after has passed
        push @{$c->{held}}, $s;

    } elsif ($c->{o}{hold}) {
        push @{$c->{held}}, $s;

    } elsif ($mode eq 'reset_midframe') {
        reset_midframe($c, $s);

    } else {
        log_request($c, $s);
        answer($c, $s);
    }
}

sub log_request {
    my ($c, $s) = @_;
    return if $s->{logged}++;
    event($c, ev => 'req', stream => $s->{id}, token => $s->{token},
          apns_id => $s->{apns_id}, headers => $s->{headers},
          complete => $s->{end_remote} ? 1 : 0, body => $s->{body},
          open => $s->{open}, $s->{ignored} ? (ignored => 1) : ());
}

sub close_stream {
    my ($c, $s) = @_;
    return unless delete $c->{streams}{$s->{id}};
    delete $c->{unacked_streams}{$s->{id}};
    $c->{open}--;
}

sub on_rst {
    my ($c, $id, $error) = @_;
    # also for a stream already over on our side (an answer the client
    # rejected)
    my $s = $c->{streams}{$id};
    log_request($c, $s) if $s;
    event($c, ev => 'rst', stream => $id, error => $error);
    return unless $s;
    @{$c->{held}} = grep { $_ != $s } @{$c->{held}};
    close_stream($c, $s);
}

sub on_settings {
    my ($c, $flags, $payload) = @_;

    if ($flags & ACK) {
        my $v = shift @{$c->{mcs_sent}};
        $c->{mcs_acked} = $v if defined $v;
        return;
    }

    my %values;
    for my $entry (unpack '(a6)*', $payload) {
        my ($id, $v) = unpack 'nN', $entry;
        $values{$SETTING_NAME{$id} // $id} = $v;

        if ($id == 4) {
            # a new initial window moves every open stream's (§6.9.2)
            my $delta = $v - $c->{stream_window};
            $_->{send_window} += $delta for values %{$c->{streams}};
            $c->{stream_window} = $v;
        } elsif ($id == 5) {
            $c->{frame} = $v;
        }
    }
    event($c, ev => 'settings', values => \%values);
    frame($c, SETTINGS, ACK, 0, '');
    send_data($c);

    # silence: the SETTINGS exchange is done, nothing more is ever sent
    $c->{mute} = 1 if $c->{mode} eq 'silence';
}

sub on_window_update {
    my ($c, $id, $increment) = @_;
    $increment &= 0x7fffffff;
    if ($increment == 0) {
        event($c, ev => 'error', what => "WINDOW_UPDATE 0 on stream $id");
        return;
    }
    if ($id == 0) {
        $c->{send_window} += $increment;
    } elsif (my $s = $c->{streams}{$id}) {
        $s->{send_window} += $increment;
    }
    send_data($c);
}


# ---------------------------------------------------------------- answers

sub reject_status {
    my ($c, $token) = @_;
    my $reject = $c->{o}{reject} or return;
    for my $prefix (sort { length $b <=> length $a } keys %$reject) {
        return split ' ', $reject->{$prefix}, 2
            if defined $token && index($token, $prefix) == 0;
    }
    return;
}

# the "iat" of a request's bearer token, if it has one
sub token_iat {
    my ($s) = @_;
    my ($claims) = ($s->{headers}{authorization} // '')
                   =~ /^bearer [^.]+\.([^.]+)\./i or return;
    $claims =~ tr{-_}{+/};
    $claims .= '=' x (-length($claims) % 4);
    require MIME::Base64;
    my $json = eval { JSON::PP::decode_json(MIME::Base64::decode_base64($claims)) };
    return $json ? $json->{iat} : undef;
}

sub answer {
    my ($c, $s) = @_;
    my ($status, $reason) = reject_status($c, $s->{token});
    my $iat = token_iat($s);
    if (!defined $status && defined $c->{o}{expire_before} && defined $iat
        && $iat < $c->{o}{expire_before})
    {
        ($status, $reason) = (403, 'ExpiredProviderToken');
    }
    $status //= 200;

    my $body = '';
    if (defined $reason) {
        $body = $status == 410
            ? sprintf('{"reason":"%s","timestamp":%d}', $reason, now() * 1000)
            : sprintf('{"reason":"%s"}', $reason);
    }

    my @headers = (':status' => $status,
                   'apns-id' => $s->{apns_id} // uuid(),
                   $body ne '' ? ('content-type' => 'application/json') : (),
                   # a connection-specific header, forbidden in HTTP/2
                   # (RFC 9113 §8.2.2)
                   $c->{mode} eq 'forbidden_header' ? (connection => 'close') : (),
                   @{$c->{o}{headers} || []});

    event($c, ev => 'resp', stream => $s->{id}, token => $s->{token},
          status => $status, defined $reason ? (reason => $reason) : (),
          defined $iat ? (iat => $iat) : ());
    send_headers($c, $s->{id}, hpack_encode(@headers), $body eq '');
    $s->{answered} = 1;
    if ($body ne '') {
        push @{$s->{pending}}, $body;
        push @{$c->{data_queue}}, $s;
        send_data($c);
    }
    close_stream($c, $s) if $s->{end_remote} && $body eq '';

    my $mode = $c->{mode};

    if ($mode eq 'settings_flap') {
        send_settings($c, MAX_CONCURRENT_STREAMS =>
                      $status == 200 ? $c->{o}{max_streams} : 1);

    } elsif ($mode eq 'token_start_1' && !$c->{raised}
             && ($s->{headers}{authorization} // '') =~ /^bearer /i) {
        $c->{raised} = 1;
        send_settings($c, MAX_CONCURRENT_STREAMS => $c->{o}{max_streams});

    } elsif ($mode eq 'zero_window_update') {
        frame($c, WINDOW_UPDATE, 0, 0, pack 'N', 0);
        event($c, ev => 'window_update_sent', stream => 0, increment => 0);
        # nghttp2 ends the session: nothing more is answered or sent here
        $c->{given_up} = 1;
        $c->{mute} = 1;
        $_->{ignored} = 1 for values %{$c->{streams}};
    }
}

sub send_headers {
    my ($c, $id, $block, $end_stream) = @_;
    my $size = $c->{o}{continuation} || $c->{frame};
    my @parts = unpack "(a$size)*", $block;
    my $flags = ($end_stream ? END_STREAM : 0) | (@parts == 1 ? END_HEADERS : 0);
    frame($c, HEADERS, $flags, $id, shift @parts);
    while (@parts) {
        my $part = shift @parts;
        frame($c, CONTINUATION, @parts ? 0 : END_HEADERS, $id, $part);
    }
}

# queued DATA out, as far as the client's windows let it
sub send_data {
    my ($c) = @_;
    my @waiting;

    for my $s (@{$c->{data_queue}}) {
        while (@{$s->{pending}}) {
            my $data = $s->{pending}[0];
            my $n = length $data;
            $n = $c->{send_window} if $n > $c->{send_window};
            $n = $s->{send_window} if $n > $s->{send_window};
            $n = $c->{frame} if $n > $c->{frame};
            last if $n <= 0;
            my $last = $n == length $data;
            frame($c, DATA, $last ? END_STREAM : 0, $s->{id}, substr $data, 0, $n);
            $c->{send_window} -= $n;
            $s->{send_window} -= $n;
            if ($last) {
                shift @{$s->{pending}};
            } else {
                substr($s->{pending}[0], 0, $n, '');
            }
        }
        if (@{$s->{pending}}) {
            push @waiting, $s;
        } elsif ($s->{end_remote}) {
            close_stream($c, $s);
        }
    }

    $c->{data_queue} = \@waiting;
}

# WINDOW_UPDATEs for what was received, once half a window is used
sub acknowledge_data {
    my ($c) = @_;

    if ($c->{recv_unacked} >= $WINDOW / 2) {
        frame($c, WINDOW_UPDATE, 0, 0, pack 'N', $c->{recv_unacked});
        $c->{recv_unacked} = 0;
    }

    my $half = $c->{window} / 2;
    for my $id (keys %{$c->{unacked_streams}}) {
        my $s = $c->{streams}{$id};
        next unless $s && $s->{recv_unacked} >= $half;
        frame($c, WINDOW_UPDATE, 0, $id, pack 'N', $s->{recv_unacked});
        $s->{recv_unacked} = 0;
        delete $c->{unacked_streams}{$id};
    }
}

sub reset_midframe {
    my ($c, $s) = @_;
    log_request($c, $s);
    my $block = hpack_encode(':status' => 200, 'apns-id' => $s->{apns_id} // uuid());
    frame($c, HEADERS, END_STREAM | END_HEADERS, $s->{id}, $block);
    my $out = $c->{out};
    $c->{out} = substr $out, 0, length($out) - int((9 + length $block) / 2);
    event($c, ev => 'close', by => 'peer', reason => 'reset in the middle of a frame');
    write_out($c);
    # SO_LINGER 0: close() sends a TCP RST
    setsockopt $c->{sock}, SOL_SOCKET, SO_LINGER, pack 'ii', 1, 0;
    POSIX::close(fileno $c->{sock});
    POSIX::_exit(0);
}

sub uuid {
    my @b = map { int rand 256 } 1 .. 16;
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    return sprintf '%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-'
                   . '%02x%02x%02x%02x%02x%02x', @b;
}


# ---------------------------------------------------------------- timers

sub next_due {
    my ($c) = @_;
    return $c->{answer_due} if $c->{answer_due};
    return $c->{drained} + 2 if $c->{drained};
    return $c->{last_arrival} + $c->{o}{hold}
        if $c->{o}{hold} && @{$c->{held}} && $c->{mode} ne 'goaway_midflight';
    return undef;
}

sub timers {
    my ($c) = @_;
    my $now = now();

    if ($c->{goaway_due} && $now >= $c->{goaway_due}) {
        goaway_midflight($c);
    }

    if ($c->{answer_due} && $now >= $c->{answer_due}) {
        delete $c->{answer_due};
        for my $s (splice @{$c->{held}}) {
            log_request($c, $s);
            answer($c, $s);
        }
    }

    if ($c->{o}{hold} && $c->{mode} ne 'goaway_midflight' && @{$c->{held}}
        && $now >= $c->{last_arrival} + $c->{o}{hold})
    {
        for my $s (splice @{$c->{held}}) {
            log_request($c, $s);
            answer($c, $s);
        }
    }

    if (defined $c->{goaway_last} && !$c->{drained}
        && !grep { $_->{id} <= $c->{goaway_last} } values %{$c->{streams}})
    {
        $c->{drained} = $now;
    }

    if ($c->{drained} && $now >= $c->{drained} + 2) {
        $c->{closed} = { by => 'peer', reason => 'drained after GOAWAY' };
    }
}

sub goaway_midflight {
    my ($c) = @_;
    my $after = $c->{o}{after} // 10;
    my $last = $c->{o}{last} // $c->{arrived}[int(($after + 1) / 2) - 1];

    delete $c->{goaway_due};
    $c->{goaway_last} = $last;
    send_goaway($c, $last, NO_ERROR);

    $_->{ignored} = 1 for grep { $_->{id} > $last } values %{$c->{streams}};
    for my $s (grep { $_->{ignored} } @{$c->{held}}) {
        log_request($c, $s);
    }
    @{$c->{held}} = grep { !$_->{ignored} } @{$c->{held}};

    # the streams at or below last: answered now, or answer_after later
    # (timers())
    $c->{answer_due} = now() + ($c->{o}{answer_after} // 0);

    # and now what was left unread
    $c->{stop_reading} = 0;
    frames($c);
}

1;
