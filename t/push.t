# POST /v1/push through the real path: Redis, HTTP/2 to the APNs simulator
# (in the same nginx), certificates and token keys, several apps, fan-out
# over few connections, GOAWAY, retries, pruning, transport failures.  Each
# case checks that the simulator received exactly what the answer claims.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http !~ /timpush_apns_mock/ && $http !~ /no simulator/) {
        $block->set_value('http_config',
                          $http . Timpush::Push::simulator());
    }

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }
});

# The most attempts the documented backoff allows within $ms milliseconds
# (README, timpush_apns_timeout: 100 ms doubling, at most 2 s): the first
# at once, the k-th retry at least min(100 * 2^(k-1), 2000) ms after the
# attempt before it, and none at or past the deadline.
sub max_attempts {
    my ($ms) = @_;
    my ($n, $at) = (1, 0);
    for (my $k = 1; ; $k++) {
        my $delay = 100 * 2 ** ($k - 1);
        $delay = 2000 if $delay > 2000;
        last if $at + $delay >= $ms;
        ($n, $at) = ($n + 1, $at + $delay);
    }
    return $n;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: certificate auth (.p12, sandbox): delivered, badge counted
--- init
Timpush::Push::clear_log();
my $t = 'ab' x 32;
Timpush::Push::register('vinson', $t, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => 'vinson', from => { user_id => 'denny', nickname => 'Denny' },
    elems => [{ type => 'text', text => 'hello' }] });
Test::More::is($status, 200, 'push answered 200');
Test::More::is($res->{sent}, 1, 'one sent');
Test::More::is($res->{results}[0]{status}, 200, 'APNs said 200');
Test::More::is($res->{results}[0]{badge}, 1, 'badge 1');
Test::More::like($res->{results}[0]{apns_id}, qr/^[0-9a-f-]{36}$/, 'apns_id');
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 1, 'the simulator got one notification');
Test::More::is($log->[0]{headers}{'apns-topic'}, 'com.example.chat',
               'topic from the certificate UID');
Test::More::is($log->[0]{headers}{'apns-id'}, $res->{results}[0]{apns_id},
               'the same apns-id');
Test::More::is($log->[0]{payload}{aps}{alert}, 'Denny: hello', 'the alert');
Test::More::is($log->[0]{payload}{aps}{badge}, 1, 'the badge');
--- request
GET /v1/users/vinson/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 2: token auth (.p8, ES256 JWT), and the badge grows by one per push
--- init
Timpush::Push::clear_log();
my $t = 'cd' x 32;
Timpush::Push::register('zoe', $t, 2001);
Timpush::Push::call('POST', "/v1/users/zoe/devices/$t/background",
                    '{"unread":5}');
for my $n (6, 7) {
    my ($status, $res) = Timpush::Push::push_message({
        to => ['zoe'], elems => [{ type => 'image' }] });
    Test::More::is($res->{results}[0]{status}, 200, "push $n delivered");
    Test::More::is($res->{results}[0]{badge}, $n, "badge $n");
}
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 2, 'two notifications');
Test::More::is($log->[1]{payload}{aps}{badge}, 7, 'badge 7 in the payload');
Test::More::is($log->[1]{headers}{'apns-topic'}, 'com.example.chat', 'topic');
--- request
GET /mock/log
--- response_body_like chomp
"alert":"\[image\]"
--- no_error_log
[error]



=== TEST 3: two apps, sandbox and production side by side, in one request
--- init
Timpush::Push::clear_log();
my ($a, $b) = ('a1' x 32, 'b2' x 32);
Timpush::Push::register('ann', $a, 1001);
Timpush::Push::register('bob', $b, 1002);
my ($status, $res) = Timpush::Push::push_message({
    to => ['ann', 'bob', 'nobody'], elems => [{ type => 'text', text => 'x' }] });
Test::More::is($res->{sent}, 2, 'two sent');
Test::More::is($res->{skipped}, 1, 'one skipped');
Test::More::is($res->{failed}, 0, 'none failed');
Test::More::is($res->{results}[2]{skipped}, 'no_devices', 'nobody has none');
Test::More::is(Timpush::Push::mock_log($a)->[0]{headers}{'apns-topic'},
               'com.example.chat', 'ann: the sandbox app');
Test::More::is(Timpush::Push::mock_log($b)->[0]{headers}{'apns-topic'},
               'com.example.chat2', 'bob: the production app');
Test::More::is(scalar @{Timpush::Push::mock_log()}, 2, 'nothing else');
--- request
GET /v1/users/bob/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 4: foreground devices are skipped, not counted, not sent
--- init
Timpush::Push::clear_log();
my ($a, $b) = ('a3' x 32, 'b4' x 32);
Timpush::Push::register('fg', $a, 1001);
Timpush::Push::register('fg', $b, 2001);
Timpush::Push::call('POST', "/v1/users/fg/devices/$a/foreground");
my ($status, $res) = Timpush::Push::push_message({
    to => 'fg', elems => [{ type => 'text', text => 'y' }] });
Test::More::is($res->{sent}, 1, 'one sent');
Test::More::is($res->{skipped}, 1, 'one skipped');
my ($skip) = grep { $_->{token} eq $a } @{$res->{results}};
Test::More::is($skip->{skipped}, 'foreground', 'skipped: foreground');
Test::More::is(scalar @{Timpush::Push::mock_log($a)}, 0, 'nothing to it');
Test::More::is(scalar @{Timpush::Push::mock_log($b)}, 1, 'one to the other');
--- request
GET /v1/users/fg/devices
--- response_body_like chomp
"token":"a3a3[0-9a-f]*","business_id":1001,"badge":0,"foreground":true
--- no_error_log
[error]



=== TEST 5: fan-out to 1,000 users over at most timpush_apns_connections connections
--- http_config
timpush_apns_connections 2;
--- init
Timpush::Push::clear_log();
my @tokens = Timpush::Push::register_many('fan', 1000, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "fan$_" } 0 .. 999],
    elems => [{ type => 'text', text => 'to all' }] });
Test::More::is($status, 200, 'answered');
Test::More::is($res->{sent}, 1000, '1000 sent');
Test::More::is($res->{failed}, 0, 'none failed');
my $log = Timpush::Push::mock_log();
Test::More::is(scalar @$log, 1000, 'the simulator got 1000');
my %tokens = map { $_->{token} => 1 } @$log;
Test::More::is(scalar keys %tokens, 1000, 'each device once');
my %conns = map { $_->{connection} => 1 } @$log;
Test::More::cmp_ok(scalar keys %conns, '<=', 2, 'over at most 2 connections');
--- request
GET /v1/users/fan999/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 6: GOAWAY from the peer mid-burst (keepalive_requests 50): every notification delivered once
--- http_config eval
Timpush::Push::simulator(extra => 'keepalive_requests 50;')
. "timpush_apns_connections 1;\n"
--- init
Timpush::Push::clear_log();
my @tokens = Timpush::Push::register_many('ga', 300, 2001);
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "ga$_" } 0 .. 299],
    elems => [{ type => 'text', text => 'goaway' }] });
Test::More::is($res->{sent}, 300, '300 sent');
my $log = Timpush::Push::mock_log();
Test::More::is(scalar @$log, 300, 'the simulator got 300');
my %tokens = map { $_->{token} => 1 } @$log;
Test::More::is(scalar keys %tokens, 300, 'each device once');
my %conns = map { $_->{connection} => 1 } @$log;
Test::More::cmp_ok(scalar keys %conns, '>=', 6, 'over new connections after each GOAWAY');
--- request
GET /v1/users/ga0/devices
--- response_body_like chomp
"badge":1,
--- error_log
GOAWAY
--- no_error_log
[error]



=== TEST 7: 503, 500, 429 (times=1, 2, 3): retried with backoff (100 ms doubling), each delivered at its first accepted attempt
--- http_config eval
Timpush::Push::simulator(rules => '
        timpush_apns_mock_rule 5031 503 ServiceUnavailable times=1;
        timpush_apns_mock_rule 5002 500 InternalServerError times=2;
        timpush_apns_mock_rule 4293 429 TooManyRequests times=3;')
--- init
Timpush::Push::clear_log();
# refused n times, then accepted: a rule counts every attempt, so one
# notification in the log means exactly n + 1 attempts (an attempt more
# would be accepted too); and the n retries waited at least
# 100 + 200 + ... ms, 100 * (2^n - 1), after the push was asked for
my %refused = (r503 => 1, r500 => 2, r429 => 3);
my %token = (r503 => '5031' . ('0' x 60), r500 => '5002' . ('0' x 60),
             r429 => '4293' . ('0' x 60));
Timpush::Push::register($_, $token{$_}, 1001) for sort keys %token;
my $t0 = int(Time::HiRes::time() * 1000);
my ($status, $res) = Timpush::Push::push_message({
    to => ['r503', 'r500', 'r429'], elems => [{ type => 'text', text => 'again' }] });
Test::More::is($res->{sent}, 3, 'all three delivered in the end');
for my $r (@{$res->{results}}) {
    my $u = $r->{user_id};
    my $n = $refused{$u};
    Test::More::is($r->{status}, 200, "$u: delivered");
    Test::More::is($r->{badge}, 1, "$u: counted once");
    my $log = Timpush::Push::mock_log($token{$u});
    Test::More::is(scalar @$log, 1, "$u: accepted once: " . ($n + 1) . ' attempts');
    # the clocks are read to the millisecond: a little less per retry
    Test::More::cmp_ok($log->[0]{time} - $t0, '>=', 100 * (2 ** $n - 1) - 2 * $n,
                       "$u: $n " . ($n == 1 ? 'retry' : 'retries')
                       . ' spaced by the backoff');
}
--- request
GET /v1/users/r429/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 7b: 503 at every attempt the backoff allows before the deadline: no attempt more, answered 503 ServiceUnavailable, kept
--- http_config eval
# the deadline in ms: "1s" is 1000
(my $ms = Timpush::Push::short_timeout()) =~ s/s$/000/;
Timpush::Push::simulator(rules => 'timpush_apns_mock_rule 5039 503 '
                                  . 'ServiceUnavailable times='
                                  . ::max_attempts($ms) . ';')
. "timpush_apns_timeout " . Timpush::Push::short_timeout() . ";\n"
--- init
Timpush::Push::clear_log();
# the rule refuses as many attempts as the backoff allows in the deadline:
# one attempt more would be accepted
my $t = '5039' . ('0' x 60);
Timpush::Push::register('r503all', $t, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => 'r503all', elems => [{ type => 'text', text => 'in vain' }] });
Test::More::is($res->{failed}, 1, 'failed');
Test::More::is($res->{results}[0]{status}, 503, 'the last answer: 503');
Test::More::is($res->{results}[0]{reason}, 'ServiceUnavailable',
               'ServiceUnavailable');
Test::More::ok(!exists $res->{results}[0]{removed}, 'not pruned');
Test::More::is(scalar @{Timpush::Push::mock_log($t)}, 0,
               'no attempt beyond what the backoff allows');
--- request
GET /v1/users/r503all/devices
--- response_body_like chomp
"token":"5039
--- no_error_log
[error]



=== TEST 8: 410 Unregistered: not retried, the token is pruned
--- http_config eval
Timpush::Push::simulator(rules => 'timpush_apns_mock_rule dead 410 Unregistered times=1;')
--- init
Timpush::Push::clear_log();
my $t = 'dead' . ('0' x 60);
Timpush::Push::register('gone', $t, 1002);
my ($status, $res) = Timpush::Push::push_message({
    to => 'gone', elems => [{ type => 'text', text => 'z' }] });
Test::More::is($res->{failed}, 1, 'one failed');
Test::More::is($res->{results}[0]{status}, 410, 'status 410');
Test::More::is($res->{results}[0]{reason}, 'Unregistered', 'Unregistered');
Test::More::like($res->{results}[0]{timestamp}, qr/^1\d{12}$/,
                 "APNs' timestamp, in ms");
Test::More::ok($res->{results}[0]{removed}, 'removed');
# the rule refuses once: a retry would have been accepted
Test::More::is(scalar @{Timpush::Push::mock_log($t)}, 0, 'not retried');
--- request
GET /v1/users/gone/devices
--- response_body
{"user_id":"gone","devices":[]}
--- error_log eval
qr/user "gone" business_id 1002 \(production\): device dead00\.\.\.0000 removed: Unregistered/



=== TEST 9: 400 BadDeviceToken: not retried, pruned, with the sandbox/production hint
--- http_config eval
Timpush::Push::simulator(rules => 'timpush_apns_mock_rule bad0 400 BadDeviceToken times=1;')
--- init
Timpush::Push::clear_log();
my $t = 'bad0' . ('1' x 60);
Timpush::Push::register('badtok', $t, 2001);
my ($status, $res) = Timpush::Push::push_message({
    to => 'badtok', elems => [{ type => 'text', text => 'z' }] });
Test::More::is($res->{results}[0]{status}, 400, 'status 400');
Test::More::is($res->{results}[0]{reason}, 'BadDeviceToken', 'BadDeviceToken');
Test::More::ok($res->{results}[0]{removed}, 'removed');
Test::More::is(scalar @{Timpush::Push::mock_log($t)}, 0, 'not retried');
--- request
GET /v1/users/badtok/devices
--- response_body
{"user_id":"badtok","devices":[]}
--- error_log
device bad011...1111 removed: BadDeviceToken (a sandbox token sent to production, or the reverse?)



=== TEST 9b: 410 ExpiredToken and 400 DeviceTokenNotForTopic: not retried, pruned
--- http_config eval
Timpush::Push::simulator(rules => '
        timpush_apns_mock_rule e7e7 410 ExpiredToken times=1;
        timpush_apns_mock_rule 7070 400 DeviceTokenNotForTopic times=1;')
--- init
Timpush::Push::clear_log();
my ($exp, $topic) = ('e7e7' . ('0' x 60), '7070' . ('0' x 60));
Timpush::Push::register('expired', $exp, 1001);
Timpush::Push::register('alien', $topic, 2001);
my ($status, $res) = Timpush::Push::push_message({
    to => ['expired', 'alien'], elems => [{ type => 'text', text => 'z' }] });
Test::More::is($res->{failed}, 2, 'two failed');
my ($e, $a) = @{$res->{results}};
Test::More::is("$e->{status} $e->{reason}", '410 ExpiredToken', '410 ExpiredToken');
Test::More::like($e->{timestamp}, qr/^1\d{12}$/, "APNs' timestamp, in ms");
Test::More::ok($e->{removed}, 'ExpiredToken: removed');
Test::More::is("$a->{status} $a->{reason}", '400 DeviceTokenNotForTopic',
               '400 DeviceTokenNotForTopic');
Test::More::ok($a->{removed}, 'DeviceTokenNotForTopic: removed');
my (undef, $list) = Timpush::Push::call('GET', '/v1/users/expired/devices');
Test::More::is_deeply($list->{devices}, [], 'expired: no device left');
Test::More::is(scalar @{Timpush::Push::mock_log()}, 0, 'not retried');
--- request
GET /v1/users/alien/devices
--- response_body
{"user_id":"alien","devices":[]}
--- error_log eval
[qr/user "expired" business_id 1001 \(sandbox\): device e7e700\.\.\.0000 removed: ExpiredToken,/,
 qr/user "alien" business_id 2001 \(production\): device 707000\.\.\.0000 removed: DeviceTokenNotForTopic,/]



=== TEST 9c: other refusals (400, 403, 413): not retried, not pruned
--- http_config eval
Timpush::Push::simulator(rules => '
        timpush_apns_mock_rule 4001 400 BadCollapseId times=1;
        timpush_apns_mock_rule 4031 403 BadCertificateEnvironment times=1;
        timpush_apns_mock_rule 4131 413 PayloadTooLarge times=1;')
--- init
Timpush::Push::clear_log();
# each rule refuses once: a retry would have been accepted
my %want = (k400 => ['4001', '400 BadCollapseId'],
            k403 => ['4031', '403 BadCertificateEnvironment'],
            k413 => ['4131', '413 PayloadTooLarge']);
my @users = sort keys %want;
Timpush::Push::register($_, $want{$_}[0] . ('0' x 60), 1001) for @users;
my ($status, $res) = Timpush::Push::push_message({
    to => \@users, elems => [{ type => 'text', text => 'no' }] });
Test::More::is($res->{failed}, 3, 'three failed');
for my $r (@{$res->{results}}) {
    my $u = $r->{user_id};
    Test::More::is("$r->{status} $r->{reason}", $want{$u}[1], "$u: $want{$u}[1]");
    Test::More::ok(!exists $r->{removed}, "$u: not removed");
    my (undef, $list) = Timpush::Push::call('GET', "/v1/users/$u/devices");
    Test::More::is(scalar @{$list->{devices}}, 1, "$u: still registered");
}
Test::More::is(scalar @{Timpush::Push::mock_log()}, 0, 'none retried');
--- request
GET /v1/users/k413/devices
--- response_body_like chomp
"token":"4131
--- no_error_log
removed:



=== TEST 9d: a token registered after APNs' 410 timestamp (or since the push started, for 400) is kept
--- http_config eval
Timpush::Push::simulator(rules => '
        timpush_apns_mock_rule dead 410 Unregistered;
        timpush_apns_mock_rule e7e7 410 ExpiredToken;
        timpush_apns_mock_rule bad0 400 BadDeviceToken;')
. "timpush_redis 127.0.0.1:\$TEST_NGINX_REDIS_PORT prefix=tprereg$$ timeout="
. ($ENV{TEST_NGINX_USE_VALGRIND} ? '30s' : '2s') . ";\n"
--- init
# The simulator's timestamp is the time of its answer; a registration time
# an hour ahead stands for the app registering the token again after APNs
# found it dead: the prune must leave such a token alone.
my %want = (again410 => ['dead', '410 Unregistered'],
            againexp => ['e7e7', '410 ExpiredToken'],
            again400 => ['bad0', '400 BadDeviceToken']);
my @users = sort keys %want;
my $later = int(Time::HiRes::time() * 1000) + 3600 * 1000;
for my $u (@users) {
    my $t = $want{$u}[0] . ('2' x 60);
    Timpush::Push::register($u, $t, 1001);
    system('redis-cli', '-p', $ENV{TEST_NGINX_REDIS_PORT}, 'HSET',
           "tprereg$$:u:{$u}", "r:$t", $later) == 0 or die "redis-cli failed";
}
my ($status, $res) = Timpush::Push::push_message({
    to => \@users, elems => [{ type => 'text', text => 'z' }] });
for my $r (@{$res->{results}}) {
    my $u = $r->{user_id};
    Test::More::is("$r->{status} $r->{reason}", $want{$u}[1], "$u: $want{$u}[1]");
    Test::More::ok(!exists $r->{removed}, "$u: not removed");
    my (undef, $list) = Timpush::Push::call('GET', "/v1/users/$u/devices");
    Test::More::is_deeply([map { $_->{registered_at} } @{$list->{devices}}],
                          [$later], "$u: still registered");
}
--- request
GET /v1/users/again410/devices
--- response_body_like chomp
"token":"dead2222
--- no_error_log
removed:



=== TEST 10: APNs unreachable: 502 ConnectionFailed within the timeout, nothing lost silently
--- http_config eval
"# no simulator
upstream nowhere { server 127.0.0.1:\$TEST_NGINX_APNS_PORT; }
timpush_apns_upstream sandbox nowhere;
timpush_apns_upstream production nowhere;
timpush_apns_timeout " . Timpush::Push::short_timeout() . ";\n"
--- init
Timpush::Push::register('off', 'ee' x 32, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => 'off', elems => [{ type => 'text', text => 'z' }] });
Test::More::is($status, 200, 'answered');
Test::More::is($res->{failed}, 1, 'failed');
Test::More::is($res->{results}[0]{status}, 502, 'status 502');
Test::More::is($res->{results}[0]{reason}, 'ConnectionFailed', 'ConnectionFailed');
--- request
GET /v1/users/off/devices
--- response_body_like chomp
"badge":1,
--- error_log
cannot connect to 127.0.0.1
ConnectionFailed



=== TEST 11: a server certificate that does not verify: nothing is sent
--- http_config eval
Timpush::Push::simulator(cert => 'untrusted')
. "timpush_apns_timeout " . Timpush::Push::short_timeout() . ";\n"
--- init
Timpush::Push::clear_log();
Timpush::Push::register('untr', 'ef' x 32, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => 'untr', elems => [{ type => 'text', text => 'secret' }] });
Test::More::is($res->{results}[0]{status}, 502, 'status 502');
Test::More::is($res->{results}[0]{reason}, 'CertificateNotTrusted',
               'CertificateNotTrusted');
Test::More::is(scalar @{Timpush::Push::mock_log()}, 0, 'nothing delivered');
--- request
GET /mock/log
--- response_body
{"notifications":[]}
--- error_log
the server certificate is not trusted



=== TEST 12: the server allows 4 concurrent streams: 200 notifications still all delivered
--- http_config eval
Timpush::Push::simulator(extra => 'http2_max_concurrent_streams 4; keepalive_requests 100000;')
. "timpush_apns_connections 1;\n"
--- init
Timpush::Push::clear_log();
Timpush::Push::register_many('mcs', 200, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "mcs$_" } 0 .. 199], elems => [{ type => 'text', text => 'm' }] });
Test::More::is($res->{sent}, 200, '200 sent');
my $log = Timpush::Push::mock_log();
my %tokens = map { $_->{token} => 1 } @$log;
Test::More::is(scalar keys %tokens, 200, 'each device once');
Test::More::is(scalar @$log, 200, 'nothing doubled');
--- request
GET /v1/users/mcs0/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 13: the queue is full (timpush_apns_queue 10): the rest are answered 503 Overloaded, not lost
--- http_config eval
Timpush::Push::simulator() . "timpush_apns_queue 10;\n"
--- init
Timpush::Push::clear_log();
Timpush::Push::register_many('q', 50, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "q$_" } 0 .. 49], elems => [{ type => 'text', text => 'q' }] });
my @r = @{$res->{results}};
Test::More::is(scalar @r, 50, 'one result per device');
Test::More::is($res->{sent} + $res->{failed}, 50, 'every device answered');
# The first 32 users are read at once, and the first notification opens
# the connection: none is ready for them, so 10 wait in the queue (and
# are delivered) and 22 are refused.  The last 18 find room or not.
Test::More::is_deeply([map { $_->{status} } @r[0 .. 9]], [(200) x 10],
                      'the 10 that waited in the queue: delivered');
Test::More::is_deeply([map { "$_->{status} $_->{reason}" } @r[10 .. 31]],
                      [('503 Overloaded') x 22],
                      'the 22 others of the first batch: 503 Overloaded');
my @delivered = grep { ($_->{status} // 0) == 200 } @r;
Test::More::is(scalar(grep { ($_->{status} // 0) == 200
                             || "$_->{status} $_->{reason}" eq '503 Overloaded' }
                      @r[32 .. 49]), 18,
               'the 18 after: delivered or 503 Overloaded');
Test::More::is($res->{sent}, scalar @delivered, '"sent" counts the ones delivered');
my %got;
$got{$_->{token}}++ for @{Timpush::Push::mock_log()};
Test::More::is_deeply(\%got, { map { $_->{token} => 1 } @delivered },
                      'the simulator got exactly the ones delivered, once');
--- request
GET /v1/users/q0/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 14: ExpiredProviderToken for a token made just now: not made again (APNs allows one per 20 minutes), one clear log line
--- http_config eval
Timpush::Push::simulator(rules => 'timpush_apns_mock_rule 0e0e 403 ExpiredProviderToken;')
--- init
my $t = '0e0e' . ('2' x 60);
Timpush::Push::register('exp', $t, 2001);
my ($status, $res) = Timpush::Push::push_message({
    to => 'exp', elems => [{ type => 'text', text => 'e' }] });
Test::More::is($res->{results}[0]{status}, 403, 'status 403');
Test::More::is($res->{results}[0]{reason}, 'ExpiredProviderToken',
               'reason ExpiredProviderToken');
Test::More::ok(!$res->{results}[0]{removed}, 'the device is kept');
--- request
GET /v1/users/exp/devices
--- response_body_like chomp
"token":"0e0e2222
--- error_log eval
qr/credential 2001: APNs says the token made \d+ s ago expired; is the clock right\?/



=== TEST 15: the answer is valid JSON for user ids with quotes, backslashes and UTF-8
--- init
my $user = "q\"u\\o \x{5f20}";
my $path = 'q%22u%5Co%20%E5%BC%A0';
my $t = 'a5' x 32;
Timpush::Push::register($path, $t, 1001);
my ($status, $res, $raw) = Timpush::Push::push_message({
    to => [$user, "n\"o\\body"], elems => [{ type => 'text', text => 'x' }] });
Test::More::is($status, 200, 'answered');
Test::More::ok($res, 'valid JSON') or Test::More::diag($raw);
Test::More::is($res->{results}[0]{user_id}, $user, 'the user id, escaped');
Test::More::is($res->{results}[0]{status}, 200, 'delivered');
Test::More::is($res->{results}[1]{user_id}, "n\"o\\body", 'the other one');
Test::More::is($res->{results}[1]{skipped}, 'no_devices', 'no devices');
--- request
GET /mock/log
--- response_body_like chomp
"token":"a5a5
--- no_error_log
[error]



=== TEST 16: Redis is read a window at a time (2 streams, 1 connection): every device once, results in the order asked, devices oldest first
--- http_config eval
Timpush::Push::simulator(extra => 'http2_max_concurrent_streams 2; keepalive_requests 100000;')
. "timpush_apns_connections 1;\n"
--- init
Timpush::Push::clear_log();
my @tokens = Timpush::Push::register_many('win', 1000, 1001);
# win500 gets two more devices, registered later: listed after its first
my ($t2, $t3) = ('c3' x 32, 'c2' x 32);
Time::HiRes::sleep(0.01);
Timpush::Push::register('win500', $t2, 2001);
Time::HiRes::sleep(0.01);
Timpush::Push::register('win500', $t3, 1002);
# win700's device is in the foreground
Timpush::Push::call('POST', "/v1/users/win700/devices/$tokens[700]/foreground");
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "win$_" } 0 .. 999], elems => [{ type => 'text', text => 'w' }] });
Test::More::is($status, 200, 'answered');
Test::More::is($res->{sent}, 1001, '1001 sent');
Test::More::is($res->{skipped}, 1, 'one skipped');
Test::More::is($res->{failed}, 0, 'none failed');
my @r = @{$res->{results}};
Test::More::is(scalar @r, 1002, 'one result per device');
my @users = map { $_->{user_id} } @r;
my @want = map { ("win$_") x ($_ == 500 ? 3 : 1) } 0 .. 999;
Test::More::is_deeply(\@users, \@want, 'results in the order of "to"');
Test::More::is_deeply([map { $_->{token} } @r[500 .. 502]],
                      [$tokens[500], $t2, $t3], 'win500: oldest first');
Test::More::is($r[702]{skipped}, 'foreground', 'win700: foreground');
Test::More::is(scalar(grep { ($_->{badge} // 0) == 1 } @r), 1001, 'badge 1 each');
my $log = Timpush::Push::mock_log();
my %seen;
$seen{$_->{token}}++ for @$log;
Test::More::is(scalar @$log, 1001, 'the simulator got 1001');
Test::More::is(scalar keys %seen, 1001, 'each device once');
Test::More::ok(!$seen{$tokens[700]}, 'none to the foreground device');
--- request
GET /v1/users/win500/devices
--- response_body_like chomp
"badge":1,.*"badge":1,.*"badge":1,
--- no_error_log
[error]



=== TEST 17: APNs unreachable during a fan-out: one deadline for the whole push; users not read by then are not pushed
--- http_config eval
"# no simulator
upstream nowhere { server 127.0.0.1:\$TEST_NGINX_APNS_PORT; }
timpush_apns_upstream sandbox nowhere;
timpush_apns_upstream production nowhere;
timpush_apns_connections 1;
timpush_apns_timeout " . Timpush::Push::short_timeout() . ";\n"
--- init
Timpush::Push::register_many('unr', 1000, 1001);
my $t0 = Time::HiRes::time();
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "unr$_" } 0 .. 999], elems => [{ type => 'text', text => 'u' }] });
my $took = Time::HiRes::time() - $t0;
(my $timeout = Timpush::Push::short_timeout()) =~ s/s$//;
Test::More::is($status, 200, 'answered');
Test::More::is($res->{failed}, 1000, 'all 1000 failed');
my @refused = grep { ($_->{status} // 0) == 502
                     && $_->{reason} eq 'ConnectionFailed' } @{$res->{results}};
my @unread = grep { ($_->{error} // '') eq 'timeout' } @{$res->{results}};
Test::More::cmp_ok(scalar @refused, '>', 0, 'those read: 502 ConnectionFailed');
Test::More::is(@refused + @unread, 1000, 'the others not read: "timeout"');
# one deadline for the whole push, not one per window read after it
Test::More::cmp_ok($took, '<', 1.8 * $timeout, 'within one deadline')
    or Test::More::diag("took $took s");
--- request
GET /v1/users/unr0/devices
--- response_body_like chomp
"badge":1,
--- error_log
cannot connect to 127.0.0.1



=== TEST 18: a user's hash with fields it should not have (written by hand): read safely
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT prefix=tpodd timeout=2s;
--- init
my ($a, $b, $c) = ('d1' x 32, 'd2' x 32, 'd3' x 32);
my @cli = ('redis-cli', '-p', $ENV{TEST_NGINX_REDIS_PORT});
system(@cli, 'DEL', 'tpodd:u:{odd}') == 0 or die "redis-cli failed";
system(@cli, 'HSET', 'tpodd:u:{odd}',
       "t:$a", '1001', "r:$a", 'not a time', "b:$a", '7',
       "t:$b", 'not a number', "r:$b", '5', "b:$b", '1',
       "t:$c", '2001', "r:$c", '9', "f:$c", '1', "b:$c", '2',
       'b:orphan', '3', 'f:orphan2', '1', 'x:foo', 'bar', 'z', '1',
       "n:$a", 'not ours') == 0
    or die "redis-cli failed";
# in the same call: a key that is not a hash, and a badge that is no number
my $e = 'e1' x 32;
system(@cli, 'DEL', 'tpodd:u:{str}', 'tpodd:u:{nan}') == 0 or die;
system(@cli, 'SET', 'tpodd:u:{str}', 'a string') == 0 or die;
system(@cli, 'HSET', 'tpodd:u:{nan}', "t:$e", '1001', "r:$e", '1',
       "b:$e", 'many') == 0 or die;
Timpush::Push::clear_log();
my ($status, $res) = Timpush::Push::push_message({
    to => ['odd', 'str', 'nan'], elems => [{ type => 'text', text => 'o' }] });
Test::More::is($status, 200, 'answered');
Test::More::is(scalar @{$res->{results}}, 5, 'three devices (t: fields), two more users');
my @r = @{$res->{results}};
Test::More::is($r[3]{user_id}, 'str', 'the key that is not a hash');
Test::More::is($r[3]{error}, 'store_unavailable', 'is an error of that user only');
Test::More::is($r[4]{status}, 200, 'a badge that is no number: delivered');
Test::More::is($r[4]{badge}, 1, 'starting again at 1');
Test::More::is($r[0]{token}, $a, 'a registration time that is not a number counts as 0');
Test::More::is($r[0]{status}, 200, 'delivered');
Test::More::is($r[0]{badge}, 8, 'badge 7 + 1');
Test::More::is($r[1]{token}, $b, 'then the one of time 5');
Test::More::is($r[1]{error}, 'unknown_business_id', 'a business_id that is not a number');
Test::More::is($r[2]{skipped}, 'foreground', 'the foreground one');
Test::More::is(scalar @{Timpush::Push::mock_log()}, 2, 'two notifications');
my $orphan = `redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} HGET 'tpodd:u:{odd}' b:orphan`;
Test::More::is($orphan, "3\n", 'a badge without a device is left alone');
--- request
GET /mock/log
--- response_body_like chomp
"badge":8
--- no_error_log
[error]



=== TEST 19: Redis has no room for a while (max_pending=8, every device refused 410): the push waits for it to read users and to prune: no user failed, every token removed
--- http_config eval
Timpush::Push::simulator(rules => 'timpush_apns_mock_rule 0000 410 Unregistered;')
. "timpush_redis 127.0.0.1:\$TEST_NGINX_REDIS_PORT prefix=tpbusy$$ timeout=30s max_pending=8;\n"
--- init
Timpush::Push::clear_log();
my @tokens = Timpush::Push::register_many('busy', 600, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "busy$_" } 0 .. 599], elems => [{ type => 'text', text => 'b' }] });
Test::More::is($status, 200, 'answered');
Test::More::is($res->{failed}, 600, 'all 600 refused by APNs');
my @errors = grep { $_->{error} } @{$res->{results}};
Test::More::is(scalar @errors, 0, 'no user failed for want of room in Redis')
    or Test::More::diag(JSON::PP::encode_json($errors[0]));
Test::More::is(scalar(grep { ($_->{status} // 0) == 410 } @{$res->{results}}),
               600, 'each answered 410');
# A prune that finds no room in Redis waits for it, as reads do: every
# token is removed, the answer says so, and Redis agrees, token by token
my @r = @{$res->{results}};
Test::More::is(scalar(grep { $_->{removed} } @r), 600, 'all 600 removed');
open my $cli, '-|', 'sh', '-c',
    "printf '%s\\n' \"\$@\" | redis-cli -p $ENV{TEST_NGINX_REDIS_PORT}", 'sh',
    map { "HEXISTS tpbusy$$:u:{$_->{user_id}} t:$_->{token}" } @r
    or die "redis-cli: $!";
chomp(my @kept = <$cli>);
close $cli or die "redis-cli failed";
Test::More::is_deeply(\@kept, [map { $_->{removed} ? 0 : 1 } @r],
                      'removed as the answer says, kept otherwise');
--- request
GET /mock/log
--- response_body
{"notifications":[]}
--- no_error_log
[alert]



=== TEST 20: out of time in the middle of a fan-out: the users not read are not pushed, nothing is called a connection failure
--- http_config eval
# one stream: the push reads a batch of users only when the one before is
# answered, so that 1,500 users take several times the deadline; valgrind
# slows all of it about 15 times, and the deadline with it
Timpush::Push::simulator(extra => 'http2_max_concurrent_streams 1; keepalive_requests 100000;')
. "timpush_apns_connections 1;\n"
. "timpush_apns_timeout " . ($ENV{TEST_NGINX_USE_VALGRIND} ? '1500ms' : '100ms') . ";\n"
--- init
Timpush::Push::clear_log();
Timpush::Push::register_many('late', 1500, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "late$_" } 0 .. 1499], elems => [{ type => 'text', text => 'l' }] });
Test::More::is($status, 200, 'answered');
my @r = @{$res->{results}};
Test::More::is(scalar @r, 1500, 'one result per user');
Test::More::is_deeply([map { $_->{user_id} } @r], [map { "late$_" } 0 .. 1499],
                      'in the order asked');
Test::More::is($res->{sent} + $res->{failed} + $res->{skipped}, 1500, 'counted');
my @sent = grep { ($_->{status} // 0) == 200 } @r;
my @late = grep { ($_->{status} // 0) == 504 && $_->{reason} eq 'Timeout' } @r;
my @unread = grep { ($_->{error} // '') eq 'timeout' } @r;
Test::More::is(@sent + @late + @unread, 1500,
               'each delivered, 504 Timeout, or not read ("timeout")');
Test::More::is($res->{sent}, scalar @sent, '"sent" counts the ones delivered');
Test::More::cmp_ok(scalar @unread, '>', 0, 'some users were not read in time')
    or Test::More::diag("sent " . @sent . ", late " . @late);
# users are read in order: once one is not, none after it is
my $read = @r - @unread;
Test::More::is_deeply([map { $_->{error} // '' } @r[$read .. $#r]],
                      [('timeout') x @unread], 'the users not read: the last ones');
Test::More::is(scalar(grep { exists $_->{token} } @unread), 0,
               'an unread user has no device entry');
my %got;
$got{$_->{token}}++ for @{Timpush::Push::mock_log()};
Test::More::is(scalar(grep { $_ != 1 } values %got), 0,
               'the simulator got each notification once');
Test::More::is(scalar(grep { !$got{$_->{token}} } @sent), 0,
               'it got every one delivered');
my %sent_or_late = map { $_->{token} => 1 } @sent, @late;
Test::More::is(scalar(grep { !$sent_or_late{$_} } keys %got), 0,
               'and nothing it was not asked for in time');
# the badge is counted when a user is read, and only then
for my $i (0, $read - 1, $read, 1499) {
    next if $i < 0;
    my (undef, $list) = Timpush::Push::call('GET', "/v1/users/late$i/devices");
    Test::More::is($list->{devices}[0]{badge}, $i < $read ? 1 : 0,
                   "late$i: badge " . ($i < $read ? 1 : 0));
}
--- request
GET /v1/users/late1499/devices
--- response_body_like chomp
"badge":0,
--- no_error_log
[error]



=== TEST 21: ignore_badge: no badge sent and none counted; the next push counts on from the stored one
--- init
Timpush::Push::clear_log();
my $t = 'a6' x 32;
Timpush::Push::register('nobadge', $t, 1001);
Timpush::Push::call('POST', "/v1/users/nobadge/devices/$t/background",
                    '{"unread":5}');
my ($status, $res) = Timpush::Push::push_message({
    to => 'nobadge', elems => [{ type => 'text', text => 'quiet' }],
    offline_push => { ignore_badge => JSON::PP::true } });
Test::More::is($res->{results}[0]{status}, 200, 'delivered');
Test::More::ok(!exists $res->{results}[0]{badge}, 'no badge in the answer');
my (undef, $list) = Timpush::Push::call('GET', '/v1/users/nobadge/devices');
Test::More::is($list->{devices}[0]{badge}, 5, 'the stored badge is still 5');
($status, $res) = Timpush::Push::push_message({
    to => 'nobadge', elems => [{ type => 'text', text => 'loud' }] });
Test::More::is($res->{results}[0]{badge}, 6, 'the next push: 6');
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 2, 'two notifications');
Test::More::ok(!exists $log->[0]{payload}{aps}{badge}, 'the first without badge');
Test::More::is($log->[1]{payload}{aps}{badge}, 6, 'the second with 6');
--- request
GET /v1/users/nobadge/devices
--- response_body_like chomp
"badge":6,
--- no_error_log
[error]



=== TEST 22: a user named several times in "to" is pushed once
--- init
Timpush::Push::clear_log();
my $t = 'a7' x 32;
Timpush::Push::register('twice', $t, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => ['twice', 'nobody22', 'twice', 'nobody22'],
    elems => [{ type => 'text', text => 'once' }] });
Test::More::is_deeply([map { $_->{user_id} } @{$res->{results}}],
                      ['twice', 'nobody22'], 'one result each, first order kept');
Test::More::is($res->{results}[0]{badge}, 1, 'counted once');
Test::More::is(scalar @{Timpush::Push::mock_log($t)}, 1, 'one notification');
--- request
GET /v1/users/twice/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]
