# The APNs transport against peers that misbehave (DESIGN.md §11): each
# block runs Timpush::H2Peer (t/lib/Timpush/H2Peer.pm), a raw-frame HTTP/2
# server, in one of its modes as the gateway's APNs, pushes, and checks what
# §11.10 promises:
#  - the push is answered 200 within the notification deadline
#    (timpush_apns_timeout, short here), with a small margin;
#  - every device is in the results exactly once, 200 where the peer
#    accepted it, an error status with a reason where it did not;
#  - the peer accepted (answered 200) each notification at most once, and
#    exactly once those the gateway calls delivered: a stream above a
#    GOAWAY's last-stream-id or refused was not received;
#  - requests and connections stay bounded (§11.4: at most 3 re-sends of
#    a notification);
#  - no worker crashed.
#
# nginx runs with a master process, so that a worker that crashes is logged
# ("worker process ... exited on signal"), replaced, and the checks after
# it still run.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;
use Timpush::Checks;
use Timpush::H2Peer;

# the notification deadline of most blocks; valgrind makes nginx about 20
# times slower
our $DEADLINE = $ENV{TEST_NGINX_USE_VALGRIND} ? 30 : 3;
$ENV{TEST_NGINX_DEADLINE} = "${DEADLINE}s";

# how much later than the deadline the push answer may come: the answer is
# written once the last notification's deadline has fired
our $MARGIN = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', <<'CONF' . ($block->http_config // ''));
# no simulator: the APNs is Timpush::H2Peer, started by the block
upstream h2peer { server 127.0.0.1:$TEST_NGINX_APNS_PORT; }
timpush_apns_upstream sandbox h2peer;
timpush_apns_upstream production h2peer;
CONF
    $block->set_value('config', "location /v1/ { timpush_api; }\n")
        unless defined $block->config;
});

master_on();
workers(1);
log_level('info');
no_shuffle();
run_tests();


# ---- helpers for the blocks (their init code runs in the runner's package)

sub error_log {
    return Timpush::Push::slurp(server_root() . '/logs/error.log');
}

# How many times a notification that keeps failing is sent within $d
# seconds: retried with backoff, 100 ms doubling to at most 2 s (README,
# timpush_apns_timeout).
sub max_sends {
    my ($d) = @_;
    my ($t, $delay, $n) = (0, 0.1, 0);
    while ($t <= $d) {
        $n++;
        $t += $delay;
        $delay = $delay * 2 > 2 ? 2 : $delay * 2;
    }
    return $n;
}

# How many connections one slot makes within $d seconds when each fails:
# made again with backoff, 1 s doubling (README, timpush_apns_connections).
sub max_connects {
    my ($d) = @_;
    my ($t, $delay, $n) = (0, 1, 0);
    while ($t <= $d) {
        $n++;
        $t += $delay;
        $delay *= 2;
    }
    return $n;
}

# users <prefix>0.. with one device each under $business_id, and $dead more
# (<prefix>dead0..) whose tokens start with "dead"; returns (users, tokens)
sub devices {
    my ($prefix, $n, $business_id, $dead) = @_;
    my @users = map { "$prefix$_" } 0 .. $n - 1;
    my @tokens = $n ? Timpush::Push::register_many($prefix, $n, $business_id)
                    : ();
    for my $i (0 .. ($dead // 0) - 1) {
        my $token = sprintf 'dead%060x', $i;
        Timpush::Push::register("${prefix}dead$i", $token, $business_id);
        push @users, "${prefix}dead$i";
        push @tokens, $token;
    }
    return (\@users, \@tokens);
}

# One push to $users, and what every block checks of it
# (Timpush::Checks): answered 200 within $deadline, one result per device
# of $tokens and no other, no worker crashed.  Returns token => result.
sub push_checked {
    my ($users, $tokens, $deadline) = @_;
    return Timpush::Checks::push_checked($users, $tokens,
                                         deadline => $deadline // $DEADLINE,
                                         margin => $MARGIN,
                                         text => 'transport');
}

sub no_crash { Timpush::Checks::no_crash() }
sub check_results { Timpush::Checks::check_results(@_) }
sub delivered { Timpush::Checks::delivered(@_) }
sub failed_5xx { Timpush::Checks::failed_5xx(@_) }

# The peer accepted each notification the gateway calls delivered exactly
# once, and no other at all.
sub check_accepted {
    my ($peer, $results) = @_;
    my %accepted = Timpush::H2Peer::accepted($peer);
    my @wrong = grep { ($accepted{$_} // 0) != (delivered($results->{$_}) ? 1 : 0) }
                keys %$results;
    push @wrong, grep { !$results->{$_} } keys %accepted;
    Test::More::is(scalar @wrong, 0,
                   'the peer accepted each delivered notification once, no other')
        or Test::More::diag(join "\n", map {
               "$_: accepted " . ($accepted{$_} // 0) . " time(s), result "
               . JSON::PP::encode_json($results->{$_} // {}) }
               @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);
}

# each device's token was sent exactly once (one stream), no other token
sub check_sent_once {
    my ($peer, $results) = @_;
    my %requests = Timpush::H2Peer::requests($peer);
    my @wrong = grep { ($requests{$_} // 0) != 1 } keys %$results;
    push @wrong, grep { !$results->{$_} } keys %requests;
    Test::More::is(scalar @wrong, 0, 'each notification sent once')
        or Test::More::diag(join ' ', map { "$_: " . ($requests{$_} // 0) }
                                      @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);
}

# no token sent more than $max times (streams opened for it)
sub check_sent_at_most {
    my ($peer, $max, $name) = @_;
    my %requests = Timpush::H2Peer::requests($peer);
    my @over = grep { $requests{$_} > $max } sort keys %requests;
    Test::More::is(scalar @over, 0, $name)
        or Test::More::diag(join ' ', map { "$_: $requests{$_}" } @over);
}

sub events_of {
    my ($peer, $ev) = @_;
    return grep { $_->{ev} eq $ev } Timpush::H2Peer::events($peer);
}

__DATA__
=== TEST 1: normal: 1,000 devices over 2 connections, 20 answered 410 Unregistered: each answered once, the 410s pruned
--- http_config
timpush_apns_connections 2;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'normal', reject => { dead => '410 Unregistered' });
my ($users, $tokens) = main::devices('nor', 1000, 1001, 20);
my %r = main::push_checked($users, $tokens);
main::check_results({ map { $_ => $r{$_} } grep { !/^dead/ } keys %r },
                    \&main::delivered, '1,000 delivered');
main::check_results({ map { $_ => $r{$_} } grep { /^dead/ } keys %r },
    sub { $_[0]{status} == 410 && $_[0]{reason} eq 'Unregistered'
          && $_[0]{removed} }, '20 answered 410 Unregistered and removed');
main::check_accepted($peer, \%r);
main::check_sent_once($peer, \%r);
Test::More::is(Timpush::H2Peer::connections($peer), 2, 'over 2 connections');
my %ids = map { $_->{token} => $_->{apns_id} } main::events_of($peer, 'req');
Test::More::is(scalar(grep { ($ids{$_} // '') ne ($r{$_}{apns_id} // '') }
                      grep { !/^dead/ } keys %r), 0,
               'the apns-id of each result is the one the peer received');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/nordead0/devices
--- response_body
{"user_id":"nordead0","devices":[]}
--- no_error_log
exited on signal
[alert]



=== TEST 2: early_answer: 200 and END_STREAM as soon as the HEADERS arrive, while the DATA waits for window (16 bytes): each answered at once
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'early_answer', window => 16);
my ($users, $tokens) = main::devices('ea', 21, 1001);
# a first push opens the connection: the 16-byte window holds from then on
my %first = main::push_checked([$users->[0]], [$tokens->[0]]);
main::check_results(\%first, \&main::delivered, 'the first one delivered');
my %r = main::push_checked([@$users[1 .. 20]], [@$tokens[1 .. 20]]);
main::check_results(\%r, \&main::delivered, '20 delivered');
my %early = map { $_->{token} => $_->{complete} } main::events_of($peer, 'req');
Test::More::is(scalar(grep { $early{$_} } @$tokens[1 .. 20]), 0,
               'the peer answered each before its request was over');
main::check_accepted($peer, { %first, %r });
main::check_sent_once($peer, { %first, %r });
Test::More::is(Timpush::H2Peer::connections($peer), 1, 'one connection');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/ea20/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 3: forbidden_header: every answer carries "connection: close", nghttp2 resets the stream itself: each device answered once, in time
--- http_config
timpush_apns_connections 2;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'forbidden_header');
my ($users, $tokens) = main::devices('fh', 10, 1001);
my %r = main::push_checked($users, $tokens);
# The peer said 200 in an answer nghttp2 refuses: whether the gateway
# takes the 200 or counts a protocol error, it says so per device.  If it
# sends again, the peer accepts again: at least once by nature, so only
# bounded here, by the retries of a transport error within the deadline.
main::check_results(\%r, sub { main::delivered($_[0]) || main::failed_5xx($_[0]) },
                    'each delivered or failed with a reason');
main::check_sent_at_most($peer, main::max_sends($main::DEADLINE),
                         'sent again at most as often as retries allow');
my @rst = main::events_of($peer, 'rst');
Test::More::is(scalar(grep { $_->{error} == 1 } @rst), scalar(main::events_of($peer, 'resp')),
               'nghttp2 reset each stream answered (PROTOCOL_ERROR)');
Test::More::is(Timpush::H2Peer::connections($peer), 2,
               'no connection made again: streams failed, not connections');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/fh0/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 4: zero_window_update: WINDOW_UPDATE 0 after the first answer; nghttp2 ends the session: it is closed and the rest go over a new connection
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'zero_window_update', conns => 1);
my ($users, $tokens) = main::devices('zw', 20, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, '20 delivered');
main::check_accepted($peer, \%r);
my ($goaway) = grep { $_->{conn} == 1 } main::events_of($peer, 'goaway');
Test::More::is($goaway && $goaway->{error}, 1,
               'nghttp2 said GOAWAY PROTOCOL_ERROR on the first connection');
Test::More::is(Timpush::H2Peer::connections($peer), 2,
               'the finished session was closed and one new connection made');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/zw19/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 5: refuse_all: RST_STREAM REFUSED_STREAM on every stream: each notification re-sent at most 3 times, then failed with a reason
--- http_config
timpush_apns_connections 2;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'refuse_all');
my ($users, $tokens) = main::devices('rf', 5, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::failed_5xx, 'each failed with a 5xx and a reason');
main::check_accepted($peer, \%r);
main::check_sent_at_most($peer, 4, 'each notification sent at most 4 times (3 re-sends)');
Test::More::is(Timpush::H2Peer::connections($peer), 2,
               'refused streams are no connection failure: the 2 connections stay');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/rf0/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 6: goaway_midflight: GOAWAY with last-stream-id in the middle of 100 streams, more queued: those above it re-sent on a new connection, each accepted once
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
# A small receive buffer and a pause before the GOAWAY: the gateway's
# later requests back up, so that some may still be queued in nghttp2 when
# the GOAWAY arrives (nghttp2 refuses those inside
# nghttp2_session_mem_send).
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'goaway_midflight', conns => 1, after => 100, pause => 0.3,
    rcvbuf => 4096);
my ($users, $tokens) = main::devices('gm', 600, 2001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, '600 delivered');
# what the first connection ignored (above last-stream-id) is not counted
# as received: the one acceptance of each is on the second connection
main::check_accepted($peer, \%r);
my @above = grep { $_->{conn} == 1 && $_->{ignored} } main::events_of($peer, 'req');
Test::More::ok(scalar main::events_of($peer, 'goaway_sent') && @above,
               'the peer sent GOAWAY and ignored streams above it');
Test::More::is(Timpush::H2Peer::connections($peer), 2,
               'a new connection took over the drained one');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/gm599/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 7: goaway_midflight, one connection slot, the answers below last-stream-id 1 s after the GOAWAY: those above it re-sent at once on a new connection, not once the old one has drained
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
# Until the answers come, the first connection has nothing to read: a
# stream nghttp2 ended (above last-stream-id, or refused inside
# nghttp2_session_mem_send) must not wait for that (§11.1), nor for the
# old connection to close (§11.4: re-sent on another connection).
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'goaway_midflight', conns => 1, after => 100, pause => 0.3,
    answer_after => 1, rcvbuf => 4096);
my ($users, $tokens) = main::devices('gl', 600, 2001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, '600 delivered');
main::check_accepted($peer, \%r);
my @ev = Timpush::H2Peer::events($peer);
my ($first_answer) = map { $_->{ms} } grep { $_->{ev} eq 'resp' && $_->{conn} == 1 } @ev;
my @late = grep { $_->{ev} eq 'req' && $_->{conn} > 1 && $_->{ms} >= ($first_answer // 0) } @ev;
Test::More::is(scalar @late, 0, 'every notification above last-stream-id '
               . 're-sent before the first connection had answers to read')
    or Test::More::diag(scalar(@late) . ' re-sent only then');
Test::More::is(Timpush::H2Peer::connections($peer), 2,
               'one new connection took over the draining one');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/gl599/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 8: settings_flap: MAX_CONCURRENT_STREAMS 1 after each 410, 1000 after each 200 (Apple bug 27870881): 1,000 devices, 50 rejected, each answered once
--- http_config
timpush_apns_connections 2;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'settings_flap', reject => { dead => '410 Unregistered' });
my ($users, $tokens) = main::devices('sf', 950, 2001, 50);
my %r = main::push_checked($users, $tokens);
main::check_results({ map { $_ => $r{$_} } grep { !/^dead/ } keys %r },
                    \&main::delivered, '950 delivered');
main::check_results({ map { $_ => $r{$_} } grep { /^dead/ } keys %r },
    sub { $_[0]{status} == 410 && $_[0]{reason} eq 'Unregistered'
          && $_[0]{removed} }, '50 answered 410 Unregistered and removed');
main::check_accepted($peer, \%r);
main::check_sent_once($peer, \%r);
Test::More::is(scalar main::events_of($peer, 'rst_sent'), 0,
               'no stream over the limit in force');
Test::More::is(Timpush::H2Peer::connections($peer), 2, 'over 2 connections');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/sfdead49/devices
--- response_body
{"user_id":"sfdead49","devices":[]}
--- no_error_log
exited on signal
[alert]



=== TEST 9: token_start_1: a token connection starts at 1 stream, 1000 once a bearer token was accepted: 300 devices delivered, the limit always kept
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'token_start_1');
my ($users, $tokens) = main::devices('ts', 300, 2001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, '300 delivered');
main::check_accepted($peer, \%r);
my @raised = grep { ($_->{values}{MAX_CONCURRENT_STREAMS} // 0) == 1000 }
             main::events_of($peer, 'settings_sent');
Test::More::is(scalar @raised, 1, 'the peer raised the limit once');
Test::More::is(scalar main::events_of($peer, 'rst_sent'), 0,
               'no stream over the limit in force');
Test::More::is(Timpush::H2Peer::connections($peer), 1, 'one connection');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/ts299/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 10: no_max_streams: SETTINGS without MAX_CONCURRENT_STREAMS counts as 1000 (§11.9), not unbounded: 1,500 devices, at most 1,000 streams open at once
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
# answers held until no new stream came for 0.3 s: the streams open at
# once are as many as the gateway allows itself
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'no_max_streams', hold => 0.3);
my ($users, $tokens) = main::devices('nm', 1500, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, '1,500 delivered');
main::check_accepted($peer, \%r);
my ($open) = sort { $b <=> $a } map { $_->{open} } main::events_of($peer, 'req');
# a busy connection is refilled once an eighth of its streams is free: it
# uses more than 875 of the 1,000, never more
Test::More::cmp_ok($open, '<=', 1000, 'at most 1,000 streams open at once');
Test::More::cmp_ok($open, '>', 875, 'and nearly that many used, not 100');
Test::More::is(Timpush::H2Peer::connections($peer), 1, 'one connection');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/nm1499/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 11: silence: after the SETTINGS exchange the peer answers nothing, not even PING: PINGed after timpush_apns_read_timeout (5 s), closed, re-sent on a new connection
--- http_config eval
"timpush_apns_connections 1;
timpush_apns_timeout " . ($ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 15) . "s;\n"
--- init
my $deadline = $ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 15;
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'silence', conns => 1);
my ($users, $tokens) = main::devices('si', 5, 1001);
my %r = main::push_checked($users, $tokens, $deadline);
main::check_results(\%r, \&main::delivered, '5 delivered over the next connection');
main::check_accepted($peer, \%r);
Test::More::ok(scalar(grep { $_->{conn} == 1 } main::events_of($peer, 'ping')),
               'the silent connection was PINGed');
Test::More::ok(Timpush::H2Peer::wait_for($peer, sub {
                   grep { $_->{ev} eq 'close' && $_->{conn} == 1 } @_ }),
               'and closed by the gateway');
Test::More::is(Timpush::H2Peer::connections($peer), 2, 'one new connection');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/si4/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 12: slow_trickle: everything sent 5 bytes at a time, 20 ms apart: each delivered once, in time
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'slow_trickle', chunk => 5, delay => 0.02);
my ($users, $tokens) = main::devices('st', 5, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, '5 delivered');
main::check_accepted($peer, \%r);
main::check_sent_once($peer, \%r);
Test::More::is(Timpush::H2Peer::connections($peer), 1,
               'a slow connection is not a dead one');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/st4/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 13: reset_midframe: half an answer's HEADERS frame, then a TCP reset: the notifications go over a new connection, each accepted once
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'reset_midframe', conns => 1);
my ($users, $tokens) = main::devices('rm', 10, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, '10 delivered');
main::check_accepted($peer, \%r);
Test::More::is(Timpush::H2Peer::connections($peer), 2, 'one new connection');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/rm9/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 14: close_after_handshake, every time: nothing can be sent; each device fails with a reason in time, connections made again with backoff only
--- http_config
timpush_apns_connections 2;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'close_after_handshake');
my ($users, $tokens) = main::devices('ch', 3, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::failed_5xx, 'each failed with a 5xx and a reason');
Test::More::is(scalar main::events_of($peer, 'req'), 0, 'no request reached the peer');
# a connection closed before it answered anything has failed: made again
# 1 s later, then 2 s, per slot
Test::More::cmp_ok(Timpush::H2Peer::connections($peer), '<=',
                   2 * main::max_connects($main::DEADLINE),
                   'connections made again with backoff (1 s doubling)');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/ch0/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 15: answers' header blocks in a HEADERS and 16-byte CONTINUATION frames: each delivered once
--- http_config
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'normal', continuation => 16, reject => { dead => '410 Unregistered' });
my ($users, $tokens) = main::devices('co', 20, 1001, 2);
my %r = main::push_checked($users, $tokens);
main::check_results({ map { $_ => $r{$_} } grep { !/^dead/ } keys %r },
                    \&main::delivered, '20 delivered');
main::check_results({ map { $_ => $r{$_} } grep { /^dead/ } keys %r },
    sub { $_[0]{status} == 410 && $_[0]{reason} eq 'Unregistered' },
    '2 answered 410 Unregistered');
main::check_accepted($peer, \%r);
main::check_sent_once($peer, \%r);
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/co19/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
exited on signal
[alert]



=== TEST 16: ExpiredProviderToken (§11.7): every notification sent with the token APNs refuses goes again once with one new token, made once
--- init
# The gateway's clock runs 200 times faster (libfaketime; its timers keep
# the real monotonic clock): 7 s later its token is 23 minutes old, still
# used (tokens live 50 minutes) and old enough to be made again (20); the
# peer then calls it expired.
my $gw_port = Timpush::Test::free_port();
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my $gw = Timpush::Push::start_nginx(master => 1, port => $gw_port,
    env => { LD_PRELOAD => '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
             FAKETIME => '+0 x200', DONT_FAKE_MONOTONIC => 1 },
    http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=ex$$ timeout=30s;
    upstream peer { server 127.0.0.1:$ENV{TEST_NGINX_APNS_PORT}; }
    timpush_apns_upstream production peer;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_connections 1;
    timpush_apns_timeout " . ($ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 10) . "s;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    server {
        listen 127.0.0.1:$gw_port;
        location /v1/ { timpush_api; }
    }");
my $n = 100;
my @tokens = Timpush::Push::register_many('ex', $n, 2001, $gw_port);

my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                  mode => 'normal');
my ($status, $res) = Timpush::Push::push_message(
    { to => 'ex0', elems => [{ type => 'text', text => 'first' }] }, $gw_port);
Test::More::is($res->{results}[0]{status}, 200, 'a token is made, accepted');
my ($first) = map { $_->{iat} } main::events_of($peer, 'resp');
Timpush::H2Peer::stop($peer);
Time::HiRes::sleep(7);

$peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'normal', hold => 0.3, expire_before => $first + 1);
($status, $res) = Timpush::Push::push_message(
    { to => [map { "ex$_" } 0 .. $n - 1],
      elems => [{ type => 'text', text => 'later' }] }, $gw_port);
Test::More::is($res->{sent}, $n, "$n sent, none failed 403");
my %refused;
my %ok;
for my $e (main::events_of($peer, 'resp')) {
    ($e->{status} == 403 ? $refused{$e->{token}} : $ok{$e->{token}})++;
}
Test::More::is(scalar keys %refused, $n, 'the old token refused for each');
Test::More::is(scalar(grep { $_ != 1 } values %refused), 0, 'once each');
Test::More::is(scalar(grep { ($ok{$_} // 0) == 1 } @tokens), $n,
               'each accepted once with the new token');
my %iat = map { $_->{iat} => 1 } grep { $_->{status} == 200 }
          main::events_of($peer, 'resp');
Test::More::is(scalar keys %iat, 1, 'one new token for all of them');
Timpush::H2Peer::stop($peer);

my $log = Timpush::Push::slurp("$gw->{dir}/logs/error.log");
my $made = () = $log =~ /credential 2001: new provider token/g;
Test::More::is($made, 2, 'two tokens made in all: the first, one renewal');
Test::More::unlike($log, qr/is the clock right/, 'no word of the clock');
Timpush::Push::stop_nginx($gw);
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
