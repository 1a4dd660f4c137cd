# A push that can be sent twice without counting twice (DESIGN §12, README
# "Devices and accounts"): a recipient that already got a msg_id is not
# pushed again and its badge not counted again; devices that failed are;
# a push still in flight is not doubled by its retry; msg_id is checked.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(redis_cmd free_port);
use Timpush::Push;
use Timpush::H2Peer;

$ENV{TEST_NGINX_PEER_PORT} ||= free_port();
# TEST 5's timpush_dedup_window: two pushes must fit in it, and under
# valgrind one push can take over a second
our $Window = $ENV{TEST_NGINX_USE_VALGRIND} ? 5 : 1;
$ENV{TEST_NGINX_DEDUP_WINDOW} = "${Window}s";

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http !~ /h2peer|timpush_apns_mock/) {
        $block->set_value('http_config', $http . Timpush::Push::simulator(
            rules => 'timpush_apns_mock_rule fa11 400 BadExpirationDate times=3;'));
    }

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }
});

our $MkPrefix = sprintf 'mk%d_%d', $$, int(rand 1e9);

our $Text = { from => { nickname => 'Denny' },
              elems => [{ type => 'text', text => 'lunch?' }] };

sub push_ {
    my (%o) = @_;
    my ($status, $res, $raw) = Timpush::Push::push_message({ %$::Text, %o });
    die "push: $status $raw" unless $status == 200;
    return $res;
}

sub badges {
    my ($user) = @_;
    my (undef, $json) = Timpush::Push::call('GET', "/v1/users/$user/devices");
    return join ',', map { $_->{badge} } @{ $json->{devices} };
}

sub mark_states { Timpush::Push::mark_states(@_) }

sub count_states {
    my ($mkey, $state) = @_;
    return scalar grep { $_ eq $state } values %{ ::mark_states($mkey) };
}

# the entries of an answer by user (and token), without apns_id
sub entries {
    my ($res) = @_;
    return join ' ', map {
        my $e = $_;
        join(':', $e->{user_id}, $e->{token} ? substr($e->{token}, 0, 4) : (),
             $e->{skipped} // $e->{status} // $e->{error})
        . (defined $e->{badge} ? "=$e->{badge}" : '')
    } @{ $res->{results} };
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the same msg_id twice: the second is not sent and counts no badge; msg_id is the apns-collapse-id
--- init
Timpush::Push::clear_log();
my $t = 'a1' x 32;
Timpush::Push::register('m1', $t, 1001);
my $res = ::push_(to => 'm1', msg_id => 'msg-1');
Test::More::is(::entries($res), 'm1:a1a1:200=1', 'the first: sent, badge 1');
$res = ::push_(to => 'm1', msg_id => 'msg-1');
Test::More::is_deeply($res->{results}, [{ user_id => 'm1', skipped => 'duplicate' }],
                      'the second: {"user_id":"m1","skipped":"duplicate"}');
Test::More::is("$res->{sent} $res->{failed} $res->{skipped}", '0 0 1', 'counted as skipped');
Test::More::is(::badges('m1'), '1', 'the badge is still 1');
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 1, 'the phone got it once');
Test::More::is($log->[0]{headers}{'apns-collapse-id'}, 'msg-1', 'apns-collapse-id: the msg_id');
--- request
GET /v1/users/m1/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 2: the other recipients of the same push are pushed as usual; another msg_id reaches everyone
--- init
my ($t1, $t2) = ('b1' x 32, 'b2' x 32);
Timpush::Push::register('m2a', $t1, 1001);
Timpush::Push::register('m2b', $t2, 2001);
my $res = ::push_(to => 'm2a', msg_id => 'g:7');
$res = ::push_(to => ['m2a', 'm2b'], msg_id => 'g:7');
Test::More::is(::entries($res), 'm2a:duplicate m2b:b2b2:200=1', 'm2a skipped, m2b sent');
$res = ::push_(to => ['m2a', 'm2b'], msg_id => 'g:8');
Test::More::is(::entries($res), 'm2a:b1b1:200=2 m2b:b2b2:200=2', 'a new msg_id: both, badges 2');
$res = ::push_(to => ['m2a', 'm2b']);
Test::More::is(::entries($res), 'm2a:b1b1:200=3 m2b:b2b2:200=3', 'no msg_id: sent again, as before');
--- request
GET /v1/users/m2b/devices
--- response_body_like chomp
"badge":3,
--- no_error_log
[error]



=== TEST 3: a retried push, three times, while half of its devices fail the first time: each device once, each badge once
--- http_config
timpush_devices_per_app 10;
--- init
Timpush::Push::clear_log();
my %tok = (r1 => ['fa11' . '01' x 30], r2 => ['fa11' . '02' x 30],
           r3 => ['0e' . '03' x 31], r4 => ['0e' . '04' x 31],
           r5 => ['fa11' . '05' x 30, '0e' . '05' x 31]);
for my $u (sort keys %tok) {
    Timpush::Push::register($u, $tok{$u}[$_], $_ ? 2001 : 1001) for 0 .. $#{ $tok{$u} };
}
my @to = sort keys %tok;
# APNs refuses the three fa11 devices once (the simulator's rule)
my $res = ::push_(to => \@to, msg_id => 'im-42');
Test::More::is(::entries($res),
    'r1:fa11:400 r2:fa11:400 r3:0e03:200=1 r4:0e04:200=1 r5:fa11:400 r5:0e05:200=1',
    'first: 3 sent, 3 failed, every badge counted');
# the caller sends the same push again, twice
$res = ::push_(to => \@to, msg_id => 'im-42');
Test::More::is(::entries($res),
    'r1:fa11:200=1 r2:fa11:200=1 r3:duplicate r4:duplicate r5:fa11:200=1 r5:0e05:duplicate',
    'second: the failed ones sent, badge still 1; the others skipped');
$res = ::push_(to => \@to, msg_id => 'im-42');
Test::More::is(::entries($res),
    'r1:duplicate r2:duplicate r3:duplicate r4:duplicate r5:duplicate',
    'third: every recipient skipped');
Test::More::is($res->{sent}, 0, 'nothing sent');
my %got;
$got{$_->{token}}++ for @{ Timpush::Push::mock_log() };
Test::More::is_deeply(\%got, { map { $_ => 1 } map { @$_ } values %tok },
                      'the phones got each notification exactly once');
Test::More::is(join(' ', map { $_->{payload}{aps}{badge} } @{ Timpush::Push::mock_log() }),
               '1 1 1 1 1 1', 'each with badge 1');
Test::More::is(join(' ', map { ::badges($_) } @to), '1 1 1 1 1,1',
               'every badge counted once');
--- request
GET /v1/users/r5/devices
--- response_body_like chomp
"badge":1,.*"badge":1,
--- no_error_log
[error]



=== TEST 4: the caller's retry while the first push is still in flight: skipped, not doubled
--- http_config
upstream h2peer { server 127.0.0.1:$TEST_NGINX_PEER_PORT; }
timpush_apns_upstream sandbox h2peer;
timpush_apns_upstream production h2peer;
--- init
my $port = $ENV{TEST_NGINX_PEER_PORT};
my @t = map { sprintf '%064x', 0x4400 + $_ } 1 .. 4;
Timpush::Push::register("f$_", $t[$_ - 1], 1001) for 1 .. 4;
# APNs answers only once no new stream came for 1.5 s
my $peer = Timpush::H2Peer::start(port => $port, mode => 'normal', hold => 1.5);
my $first = Timpush::Push::push_async({ %$::Text, to => [map { "f$_" } 1 .. 4],
                                       msg_id => 'slow-1' });
# (the peer logs a held request only when it answers it: in flight is
# read from the marks, each "being sent" until answered)
my $mkey = "$Timpush::Test::prefix:m:{slow-1}";
my $claimed = sub { 4 == ::count_states($mkey, 'sending') };
my $until = Time::HiRes::time() + 5;
Time::HiRes::sleep(0.01) until $claimed->() || Time::HiRes::time() > $until;
Test::More::ok($claimed->(), 'the first push: its 4 devices claimed, none answered');
# claimed, nothing answered yet: the marks already expire (a push cut
# short here leaves nothing that lives for ever)
my $pttl = ::redis_cmd('PTTL', $mkey);
Test::More::ok($pttl > 0, "the claims expire ($pttl ms)");
my $t0 = Time::HiRes::time();
my $res = ::push_(to => [map { "f$_" } 1 .. 4], msg_id => 'slow-1');
Test::More::cmp_ok(Time::HiRes::time() - $t0, '<', 1.2, 'the retry is answered at once');
Test::More::ok($claimed->(), 'the first push was still in flight then');
Test::More::is(::entries($res), 'f1:duplicate f2:duplicate f3:duplicate f4:duplicate',
               'the retry: every recipient skipped');
my ($status, $r1) = Timpush::Push::push_wait($first);
Test::More::is($r1->{sent}, 4, 'the first push: 4 sent');
my %req = Timpush::H2Peer::requests($peer);
Timpush::H2Peer::stop($peer);
Test::More::is_deeply(\%req, { map { $_ => 1 } @t }, 'APNs got each device once');
--- request
GET /v1/users/f1/devices
--- response_body_like chomp
"badge":1,
--- no_error_log eval
[qr/\[error\](?!.*(?:ConnectionFailed|Connection refused))/]



=== TEST 5: after timpush_dedup_window, the same msg_id is a new message
--- http_config
timpush_dedup_window $TEST_NGINX_DEDUP_WINDOW;
--- init
my $t = 'c5' x 32;
Timpush::Push::register('m5', $t, 1001);
my $res = ::push_(to => 'm5', msg_id => 'w');
$res = ::push_(to => 'm5', msg_id => 'w');
Test::More::is(::entries($res), 'm5:duplicate', 'within the window: skipped');
select undef, undef, undef, $main::Window + 0.2;
$res = ::push_(to => 'm5', msg_id => 'w');
Test::More::is(::entries($res), 'm5:c5c5:200=2', 'after it: sent, counted');
my $ttl = ::redis_cmd('PTTL', "$Timpush::Test::prefix:m:{w}");
# the window, then a lease: timpush_apns_timeout and Redis's timeout
# (10 s and 2 s; 60 s and 30 s under valgrind, see Timpush::Test)
my $lease = $ENV{TEST_NGINX_USE_VALGRIND} ? 90000 : 12000;
Test::More::ok($ttl > 0 && $ttl <= $main::Window * 1000 + $lease,
               "the marks expire ($ttl ms)");
--- request
GET /v1/users/m5/devices
--- response_body_like chomp
"badge":2,
--- no_error_log
[error]



=== TEST 6: the marks: being sent (within its lease, or past it), failed, sent, absent, past the window; as this version writes them (a digit per device in its claim's, or one for all), as the one before did (the claim's number, devices' own marks) and as earlier ones did
--- http_config
timpush_dedup_window 1h;
--- init
my $p = $Timpush::Test::prefix;
my @all = qw(a6 b6 c6 d6 e6 f6 g6 h6 i6 j6 k6 l6 m6 n6 o6 p6);
my %hex = (g6 => '06', h6 => '16', i6 => '26', j6 => '36', k6 => '46', l6 => '56',
           m6 => '66', n6 => '76', o6 => '86', p6 => '96');
my %t = map { $_ => sprintf('%s%062x', $hex{$_} // $_, 6) } @all;
Timpush::Push::register("s$_", $t{$_}, 1001) for @all;
my $now = int(Time::HiRes::time() * 1000);
my $mk = "$p:m:{k6}";
my $f = sub { "$t{$_[0]}:$p:u:{s$_[0]}" };
# a device's own mark: 4 * ms + state
my %mark = (a6 => ($now + 60000) * 4 + 1,    # being sent, lease ahead
            b6 => ($now - 1000) * 4 + 1,     # being sent, lease over
            c6 => ($now - 1000) * 4 + 2,     # failed
            d6 => ($now - 1000) * 4,         # sent
            k6 => ($now - 7200000) * 4);     # sent, before the window
# this version: claim 7 (lease ahead) and 8 (lease over), 9 (before the
# window); each device its place in its claim
%mark = (%mark, e6 => -(7 * 1048576 + 1),    # being sent, lease ahead
                f6 => -(8 * 1048576 + 1),    # being sent, lease over
                g6 => -(8 * 1048576 + 2),    # failed
                h6 => -(7 * 1048576 + 3),    # sent
                i6 => -(9 * 1048576 + 1));   # sent, before the window
# the version before: the claim's number, the claim being sent (3: lease
# ahead, 4: lease over), sent (5), or sent before the window (6)
%mark = (%mark, l6 => 3, m6 => 4, n6 => 5, o6 => 6, p6 => 5);
::redis_cmd('HSET', $mk, $f->($_), $mark{$_}) for keys %mark;
::redis_cmd('HSET', $mk, 'n', 9, 'l:7', ($now - 1000) . ':' . ($now + 60000) . ':021',
            'l:8', ($now - 10000) . ':' . ($now - 1000) . ':02',
            'l:9', ($now - 7200000) . ':' . ($now - 7190000) . ':1',
            'l:3', ($now - 1000) . ':' . ($now + 60000) . ':0',
            'l:4', ($now - 10000) . ':' . ($now - 1000) . ':0',
            'l:5', ($now - 1000) . ':' . ($now - 500) . ':1',
            'l:6', ($now - 7200000) . ':' . ($now - 7190000) . ':1');
# p6: its claim says sent, its own mark (written over the claim's) failed
::redis_cmd('HSET', $mk, $f->('p6'), ($now - 1000) * 4 + 2);
::redis_cmd('HSET', "$p:u:{s$_}", "b:$t{$_}", 5) for @all;
my $res = ::push_(to => [map { "s$_" } @all], msg_id => 'k6');
Test::More::is(::entries($res),
               'sa6:duplicate sb6:b600:200=5 sc6:c600:200=5 sd6:duplicate '
               . 'se6:duplicate sf6:f600:200=5 sg6:0600:200=5 sh6:duplicate '
               . 'si6:2600:200=6 sj6:3600:200=6 sk6:4600:200=6 '
               . 'sl6:duplicate sm6:6600:200=5 sn6:duplicate so6:8600:200=6 sp6:9600:200=5',
               'in flight and sent: skipped; lease over and failed: sent, no badge counted; '
               . 'absent or past the window: sent and counted');
my $st = ::mark_states($mk);
Test::More::is(join(' ', map { $st->{$f->($_)} } @all),
               'sending sent sent sent sending sent sent sent sent sent sent '
               . 'sending sent sent sent sent',
               'then: in flight as it was, the others marked sent');
Test::More::is(::redis_cmd('HGET', $mk, 'n'), 10, 'one claim more');
Test::More::like(::redis_cmd('HGET', $mk, 'l:10'), qr/^\d+:\d+:1{10}$/,
                 'its devices, all answered and sent: a digit each');
Test::More::is(join(' ', sort { $a <=> $b } grep { $_ < -10 * 1048576 && $_ > -11 * 1048576 }
                         map { ::redis_cmd('HGET', $mk, $f->($_)) } @all),
               join(' ', map { -(10 * 1048576 + $_) } reverse 1 .. 10),
               'its ten devices, each with the claim and its place in it as its mark');
--- request
GET /v1/users/sc6/devices
--- response_body_like chomp
"badge":5,
--- no_error_log
[error]



=== TEST 7: apns-collapse-id: the msg_id up to 64 bytes, none beyond; offline_push.collapse_id wins
--- init
Timpush::Push::clear_log();
my $t = 'c7' x 32;
Timpush::Push::register('m7', $t, 1001);
::push_(to => 'm7', msg_id => 'x' x 64);
::push_(to => 'm7', msg_id => 'y' x 65);
::push_(to => 'm7', msg_id => 'z', offline_push => { collapse_id => 'thread-9' });
my $log = Timpush::Push::mock_log($t);
Test::More::is(join(' ', map { $_->{headers}{'apns-collapse-id'} // '-' } @$log),
               ('x' x 64) . ' - thread-9', 'the headers');
--- request
GET /v1/users/m7/devices
--- response_body_like chomp
"badge":3,
--- no_error_log
[error]



=== TEST 8: a bad msg_id: 400 invalid_field naming msg_id; null is absent; 128 bytes, UTF-8, are fine
--- request eval
[map { "POST /v1/push\n{\"to\":\"m8\",\"elems\":[{\"type\":\"text\",\"text\":\"x\"}],\"msg_id\":$_}" }
 '""', '"' . ('m' x 129) . '"', '"a\\u0001b"', '"a\\nb"', '"\\u007f"', '42', '{"id":1}', '["a"]', 'true',
 'null', '"' . ('m' x 128) . '"', "\"\x{e6}\x{b6}\x{88}\x{e6}\x{81}\x{af}-1\""]
--- error_code eval
[400, 400, 400, 400, 400, 400, 400, 400, 400, 200, 200, 200]
--- response_body_like eval
[qr/"invalid_field","message":"msg_id: must be 1 to 128 bytes"/,
 qr/"invalid_field","message":"msg_id: must be 1 to 128 bytes"/,
 qr/"invalid_field","message":"msg_id: must be UTF-8 without control characters"/,
 qr/"invalid_field","message":"msg_id: must be UTF-8 without control characters"/,
 qr/"invalid_field","message":"msg_id: must be UTF-8 without control characters"/,
 qr/"invalid_field","message":"msg_id: must be a string"/,
 qr/"invalid_field","message":"msg_id: must be a string"/,
 qr/"invalid_field","message":"msg_id: must be a string"/,
 qr/"invalid_field","message":"msg_id: must be a string"/,
 qr/"skipped":"no_devices"/, qr/"skipped":"no_devices"/, qr/"skipped":"no_devices"/]
--- no_error_log
[error]



=== TEST 9: with ignore_badge, a msg_id still keeps a device from getting it twice
--- init
my $t = 'c9' x 32;
Timpush::Push::register('m9', $t, 1001);
my $res = ::push_(to => 'm9', msg_id => 'nb', offline_push => { ignore_badge => JSON::PP::true });
Test::More::is(::entries($res), 'm9:c9c9:200', 'sent without a badge');
$res = ::push_(to => 'm9', msg_id => 'nb', offline_push => { ignore_badge => JSON::PP::true });
Test::More::is(::entries($res), 'm9:duplicate', 'then skipped');
--- request
GET /v1/users/m9/devices
--- response_body_like chomp
"badge":0,
--- no_error_log
[error]



=== TEST 10: a device in the foreground is not marked: once in the background, the same msg_id reaches it
--- init
my ($t1, $t2) = ('d1' x 32, 'd2' x 32);
Timpush::Push::register('m10', $t1, 1001);
Timpush::Push::register('m10', $t2, 2001);
Timpush::Push::call('POST', "/v1/users/m10/devices/$t1/foreground");
my $res = ::push_(to => 'm10', msg_id => 'fg');
Test::More::is(::entries($res), 'm10:d1d1:foreground m10:d2d2:200=1', 'foreground: skipped');
Timpush::Push::call('POST', "/v1/users/m10/devices/$t1/background", '{"unread":0}');
$res = ::push_(to => 'm10', msg_id => 'fg');
Test::More::is(::entries($res), 'm10:d1d1:200=1 m10:d2d2:duplicate', 'background: it gets it');
--- request
GET /v1/users/m10/devices
--- response_body_like chomp
"badge":1,.*"badge":1,
--- no_error_log
[error]



=== TEST 11: Redis full (max_pending) when a push's last marks are written: the push waits for room, none is lost: every device marked sent
--- http_config eval
"timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=$::MkPrefix"
. " timeout=" . ($ENV{TEST_NGINX_USE_VALGRIND} ? '30s' : '3s') . " max_pending=2;\n"
. "upstream h2peer { server 127.0.0.1:$ENV{TEST_NGINX_PEER_PORT}; }\n"
. "timpush_apns_upstream sandbox h2peer;\ntimpush_apns_upstream production h2peer;\n"
--- init
my $port = $ENV{TEST_NGINX_PEER_PORT};
my @t = Timpush::Push::register_many('mb', 32, 1001, undef, 0xb1000000);
my $mkey = "$::MkPrefix:m:{busy-1}";
my $claimed = sub { 32 == ::count_states($mkey, 'sending') };
# APNs answers 1 s after the last stream
my $peer = Timpush::H2Peer::start(port => $port, mode => 'normal', hold => 1);
my $t0 = Time::HiRes::time();
my $first = Timpush::Push::push_async({ %$::Text, to => [map { "mb$_" } 0 .. 31],
                                       msg_id => 'busy-1' });
my $until = $t0 + ($ENV{TEST_NGINX_USE_VALGRIND} ? 30 : 5);
Time::HiRes::sleep(0.01) until $claimed->() || Time::HiRes::time() > $until;
Test::More::ok($claimed->(), 'the first push: 32 devices claimed, none answered');
# Redis takes no write for 1.5 s, and two registrations take both of the
# worker's places (max_pending=2) meanwhile: the answers of APNs come
# while there is no room for their marks
::redis_cmd('CLIENT', 'PAUSE', 1500, 'WRITE');
my @reg = map {
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}")
        or die "connect: $!";
    my $b = '{"business_id":1001}';
    print $s "PUT /v1/users/mr$_/devices/" . sprintf('%064x', 0xb2000000 + $_)
             . " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
             . "Content-Length: " . length($b) . "\r\n\r\n$b";
    $s;
} 1 .. 2;
my ($status, $r1) = Timpush::Push::push_wait($first);
Test::More::is("$status $r1->{sent}", '200 32', 'the first push: 32 sent');
for my $s (@reg) {
    local $/;
    my $in = <$s>;
    Test::More::like($in, qr{^HTTP/1\.1 200 }, 'a registration made while Redis was paused');
}
# every device marked sent once answered: none left "being sent" (which a
# repeat after the lease would send again)
Test::More::is(::count_states($mkey, 'sent'), 32, 'every device marked sent');
my $res = ::push_(to => [map { "mb$_" } 0 .. 31], msg_id => 'busy-1');
Test::More::is($res->{sent} . '/' . $res->{skipped}, '0/32',
               'the repeat: every device skipped');
my %req = Timpush::H2Peer::requests($peer);
Timpush::H2Peer::stop($peer);
Test::More::is_deeply(\%req, { map { $_ => 1 } @t }, 'APNs got each device once');
--- request
GET /v1/users/mb7/devices
--- response_body_like chomp
"badge":1,
--- no_error_log eval
[qr/\[error\](?!.*(?:ConnectionFailed|Connection refused))/, 'could not be kept']



=== TEST 12: two pushes of one msg_id taking turns (APNs slow, a push read a few users at a time): the later one claims what the first has not reached, and the first then skips those; each device once, each badge once
--- http_config
upstream h2peer { server 127.0.0.1:$TEST_NGINX_PEER_PORT; }
timpush_apns_upstream sandbox h2peer;
timpush_apns_upstream production h2peer;
timpush_apns_connections 1;
--- init
my $port = $ENV{TEST_NGINX_PEER_PORT};
my $n = 320;
my @t = Timpush::Push::register_many('tt', $n, 1001, undef, 0xc1000000);
my @to = map { "tt$_" } 0 .. $n - 1;
my $mkey = "$Timpush::Test::prefix:m:{turns-1}";
# 16 streams at a time, answered once none came for 0.2 s: a push reads
# 256 users at once (8 calls of the script), then the next ones only as its
# notifications are answered
my $peer = Timpush::H2Peer::start(port => $port, mode => 'normal', hold => 0.2,
                                  max_streams => 16);
# the connection open first (before its SETTINGS, a connection counts as
# 100 streams): one push to another user
Timpush::Push::register('ttw', sprintf('%064x', 0xc2000000), 1001);
::push_(to => 'ttw');
my $first = Timpush::Push::push_async({ %$::Text, to => \@to, msg_id => 'turns-1' });
my $some = sub { my $c = ::count_states($mkey, 'sending'); $c > 0 && $c < $n };
my $until = Time::HiRes::time() + ($ENV{TEST_NGINX_USE_VALGRIND} ? 30 : 5);
Time::HiRes::sleep(0.01) until $some->() || Time::HiRes::time() > $until;
Test::More::ok($some->(), 'the first push: some of its devices claimed, not all');
my $res = ::push_(to => \@to, msg_id => 'turns-1');
my ($status, $r1) = Timpush::Push::push_wait($first);
Test::More::ok($res->{sent} > 0 && $r1->{sent} > 0,
               "each push sent some ($r1->{sent} and $res->{sent})");
Test::More::is($r1->{sent} + $res->{sent}, $n, "$n sent in all");
my %req = Timpush::H2Peer::requests($peer);
Timpush::H2Peer::stop($peer);
Test::More::is_deeply(\%req, { map { $_ => 1 } @t, sprintf('%064x', 0xc2000000) },
                      'APNs got each device once');
Test::More::is(join(' ', grep { $_ ne '1' } map { ::badges($_) } @to), '',
               'every badge counted once');
Test::More::is(::redis_cmd('HGET', $mkey, 'o'), '',
               'the marks are no longer the first push\'s own');
--- request
GET /v1/users/tt0/devices
--- response_body_like chomp
"badge":1,
--- no_error_log eval
[qr/\[error\](?!.*(?:ConnectionFailed|Connection refused))/]



=== TEST 13: a device is marked sent soon after its answer, not once the rest of its claim is answered: a push cut short leaves only what was in flight "being sent"
--- http_config eval
"limit_req_zone \$server_port zone=apns13:1m rate=20r/s;\n"
. Timpush::Push::simulator(extra => 'limit_req zone=apns13 burst=1000000;')
--- init
# APNs answers 20 a second: the push's one claim (10 devices) is answered
# over half a second
my @t = Timpush::Push::register_many('sm', 10, 1001, undef, 0xd1000000);
my $mkey = "$Timpush::Test::prefix:m:{soon-1}";
my $h = Timpush::Push::push_async({ %$::Text, to => [map { "sm$_" } 0 .. 9],
                                   msg_id => 'soon-1' });
my ($partial, $polls, %c) = (0, 0);
my $end = Time::HiRes::time() + ($ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 10);
while (Time::HiRes::time() < $end) {
    %c = ();
    $c{$_}++ for values %{ ::mark_states($mkey) };
    $polls++;
    $partial++ if ($c{sent} // 0) && ($c{sending} // 0);
    last if ($c{sent} // 0) == 10;
    Time::HiRes::sleep(0.005);
}
my ($status, $res) = Timpush::Push::push_wait($h);
Test::More::is("$status $res->{sent}", '200 10', 'the push: 10 sent');
Test::More::is(::redis_cmd('HGET', $mkey, 'n'), 1, 'in one claim');
Test::More::ok($partial, "some marked sent while others of the claim were being sent "
                         . "($partial of $polls looks)");
Test::More::is($c{sent}, 10, 'in the end, all 10 sent');
--- request
GET /v1/users/sm0/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 14: a failed device sent again by a repeat while the first push is still being answered: the first push's end does not mark it failed again over the repeat's claim, so a third push skips it
--- http_config eval
"limit_req_zone \$server_port zone=apns14:1m rate=20r/s;\n"
. Timpush::Push::simulator(extra => 'limit_req zone=apns14 burst=1000000;',
                           rules => 'timpush_apns_mock_rule fa14 400 BadExpirationDate times=1;')
--- init
# APNs answers 20 a second, and refuses the fa14 device once: the first
# push's claim (10 devices) is answered over half a second, the refusal
# first
Timpush::Push::clear_log();
my @t = Timpush::Push::register_many('sf', 9, 1001, undef, 0xd2000000);
my $f = 'fa14' . ('14' x 30);
Timpush::Push::register('sfx', $f, 1001);
my @to = ('sfx', map { "sf$_" } 0 .. 8);
my $mkey = "$Timpush::Test::prefix:m:{again-14}";
my $fkey = "$f:$Timpush::Test::prefix:u:{sfx}";
my $first = Timpush::Push::push_async({ %$::Text, to => \@to, msg_id => 'again-14' });
my $end = Time::HiRes::time() + ($ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 10);
Time::HiRes::sleep(0.005)
    until (::mark_states($mkey)->{$fkey} // '') eq 'failed' || Time::HiRes::time() > $end;
# (the others are answered 50 ms apart: several are still out)
my $st = ::mark_states($mkey);
my $out = grep { $_ eq 'sending' } values %$st;
Test::More::ok(($st->{$fkey} // '-') eq 'failed' && $out >= 3,
               "the first push: its refusal marked, $out devices still out");
my $res = ::push_(to => \@to, msg_id => 'again-14');
Test::More::is(::entries($res), 'sfx:fa14:200=1 ' . join(' ', map { "sf$_:duplicate" } 0 .. 8),
               'the repeat: the refused device sent, no badge counted; the others skipped');
my ($status, $r1) = Timpush::Push::push_wait($first);
Test::More::is("$status $r1->{sent} $r1->{failed}", '200 9 1', 'the first push: 9 sent, 1 failed');
$res = ::push_(to => \@to, msg_id => 'again-14');
Test::More::is("$res->{sent} $res->{skipped}", '0 10', 'a third push: every recipient skipped');
my %got;
$got{ substr($_->{token}, 0, 4) }++ for @{ Timpush::Push::mock_log() };
Test::More::is($got{fa14}, 1, 'the refused device got it once, from the repeat');
--- request
GET /v1/users/sfx/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 15: the claim lists of a push still the key's own, as this version and the one before wrote them: another push turns them into a device's place in its claim (a digit each, or one for all), and keeps a device's own mark
--- http_config
timpush_dedup_window 1h;
--- init
my $p = $Timpush::Test::prefix;
my @all = map { "q$_" } 1 .. 6;
my %t = map { $all[$_ - 1] => sprintf('%02x%062x', 0xe0 + $_, 15) } 1 .. 6;
Timpush::Push::register("s$_", $t{$_}, 1001) for @all;
::redis_cmd('HSET', "$p:u:{s$_}", "b:$t{$_}", 5) for @all;
my $now = int(Time::HiRes::time() * 1000);
my $mk = "$p:m:{k15}";
my $f = sub { "$t{$_[0]}:$p:u:{s$_[0]}" };
# a push that is not this one owns the key; claim 1 (the version before):
# one digit for all, "sent", and q2's own mark "failed" over it; claim 2
# (this version): q4 sent, q5 failed, q6 being sent (lease ahead)
::redis_cmd('HSET', $mk, 'o', 'another.1.2.3.4', 'n', 2,
            'c:1', join("\n", map { $f->($_) } qw(q1 q2 q3)) . "\n",
            'l:1', ($now - 1000) . ':' . ($now + 60000) . ':1',
            $f->('q2'), ($now - 1000) * 4 + 2,
            'c:2', join("\n", map { $f->($_) } qw(q4 q5 q6)) . "\n",
            'l:2', ($now - 1000) . ':' . ($now + 60000) . ':120');
my $res = ::push_(to => [map { "s$_" } @all], msg_id => 'k15');
Test::More::is(::entries($res),
               'sq1:duplicate sq2:e200:200=5 sq3:duplicate '
               . 'sq4:duplicate sq5:e500:200=5 sq6:duplicate',
               'sent and being sent: skipped; failed: sent again, its badge not counted again');
my $st = ::mark_states($mk);
Test::More::is(join(' ', map { $st->{$f->($_)} } @all), 'sent sent sent sent sent sending',
               'then: the one being sent as it was, the others sent');
Test::More::is(join(' ', grep { /^[co]:|^o$/ } sort keys %{ { @{ ::redis_cmd('HGETALL', $mk) } } }),
               'o', 'the lists are gone; "o" is kept');
Test::More::is(::redis_cmd('HGET', $mk, 'o'), '', 'and says: no push owns the key now');
Test::More::is(::redis_cmd('HGET', $mk, $f->('q6')), -(2 * 1048576 + 3),
               'q6: its claim (2) and its place in it (3)');
--- request
GET /v1/users/sq2/devices
--- response_body_like chomp
"badge":5,
--- no_error_log
[error]
