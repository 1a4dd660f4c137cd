# Redis over TLS (DESIGN §15): "timpush_redis ... tls": the server
# certificate always verified (trusted_certificate=, its name or address),
# devices registered and pushed, AUTH inside TLS, a certificate of another
# CA or for another name refused, TLS and plain ports mixed up failing
# cleanly, Redis killed and restarted under traffic.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port);
use Timpush::Push;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep);

# one private Redis: TLS on TEST_NGINX_TLS_PORT (the test CA's server
# certificate, for localhost and 127.0.0.1), plain TCP on
# TEST_NGINX_PLAIN_PORT; "default" needs no password, "pusher" is an ACL
# user with one
$ENV{TEST_NGINX_TLS_PORT} = free_port();
$ENV{TEST_NGINX_PLAIN_PORT} = free_port();

sub start_tls_redis {
    my $certs = $ENV{TEST_NGINX_CERT_DIR};
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        { exec 'redis-server', '--bind', '127.0.0.1',
             '--port', $ENV{TEST_NGINX_PLAIN_PORT},
             '--tls-port', $ENV{TEST_NGINX_TLS_PORT},
             '--tls-cert-file', "$certs/server.crt",
             '--tls-key-file', "$certs/server.key",
             '--tls-ca-cert-file', "$certs/ca.crt",
             '--tls-auth-clients', 'no',
             '--save', '', '--appendonly', 'no', '--dir', '/tmp',
             '--user', 'pusher', 'on', '>pusher-secret', '~*', '+@all' };
        POSIX::_exit(127);
    }
    for (1 .. 100) {
        last if IO::Socket::INET->new("127.0.0.1:$ENV{TEST_NGINX_TLS_PORT}");
        sleep 0.05;
    }
    return $pid;
}

our $redis = start_tls_redis();

# a peer that answers anything with a plain Redis error and hangs up
our $plain = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                   Listen => 16, ReuseAddr => 1)
    or die "listen: $!";
$ENV{TEST_NGINX_ERR_PORT} = $plain->sockport;
our $plain_pid = fork // die "fork: $!";
if ($plain_pid == 0) {
    $SIG{PIPE} = 'IGNORE';
    while (my $s = $plain->accept) {
        my $buf;
        sysread($s, $buf, 4096);
        syswrite($s, "-ERR unknown command\r\n");
        close $s;
    }
    POSIX::_exit(0);
}
close $plain;

END {
    local $?;   # the test's exit status, not Redis's
    if ($redis) { kill 'KILL', $redis; waitpid $redis, 0 }
    if ($plain_pid) { kill 'KILL', $plain_pid; waitpid $plain_pid, 0 }
}

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http =~ /# simulator/) {
        $block->set_value('http_config', $http . Timpush::Push::simulator());
    }

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: devices registered, listed and removed over TLS (the address verified)
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_TLS_PORT prefix=tls1 tls
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt;
--- request eval
["PUT /v1/users/s1/devices/1111111111111111
{\"business_id\":1001}",
"GET /v1/users/s1/devices",
"DELETE /v1/users/s1/devices/1111111111111111"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"token":"1111111111111111"/, qr/^\{"removed":true\}$/]
--- no_error_log
[error]



=== TEST 2: a push over TLS: badge counted in Redis, delivered to the simulator
--- http_config
# simulator
timpush_redis 127.0.0.1:$TEST_NGINX_TLS_PORT prefix=tls2 tls
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt;
--- init
Timpush::Push::clear_log();
my $t = 'cd' x 32;
Timpush::Push::register('s2', $t, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => 's2', from => { user_id => 'denny', nickname => 'Denny' },
    elems => [{ type => 'text', text => 'over tls' }] });
Test::More::is($status, 200, 'push answered 200');
Test::More::is($res->{sent}, 1, 'one sent');
Test::More::is($res->{results}[0]{badge}, 1, 'badge 1, counted by Redis');
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 1, 'the simulator got one notification');
Test::More::is($log->[0]{payload}{aps}{alert}, 'Denny: over tls',
               'the alert');
--- request
GET /v1/users/s2/devices
--- response_body_like chomp
"badge":1,
--- no_error_log
[error]



=== TEST 3: AUTH inside TLS (an ACL user), and the host name verified
--- http_config
timpush_redis localhost:$TEST_NGINX_TLS_PORT prefix=tls3 tls
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt
              user=pusher password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "pusher-secret\n";
close $fh;
chmod 0600, $f;
--- request eval
["PUT /v1/users/s3/devices/3333333333333333
{\"business_id\":1001}",
"GET /v1/users/s3/devices"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"token":"3333333333333333"/]
--- no_error_log
[error]



=== TEST 4: the wrong password inside TLS: 503 store_unavailable, AUTH's refusal logged
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_TLS_PORT prefix=tls4 tls
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt
              user=pusher password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "not-the-secret\n";
close $fh;
chmod 0600, $f;
--- init
Time::HiRes::sleep(0.3);
--- request
GET /v1/users/s4/devices
--- error_code: 503
--- response_body
{"error":{"code":"store_unavailable","message":"Redis is not reachable; retry later"}}
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: AUTH as pusher refused: WRONGPASS/
--- no_error_log
not-the-secret
NOAUTH



=== TEST 5: a server certificate of another CA: refused, 503 store_unavailable, nothing sent
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_TLS_PORT prefix=tls5 tls
              trusted_certificate=$TEST_NGINX_CERT_DIR/backends-ca.crt;
--- request
PUT /v1/users/s5/devices/5555555555555555
{"business_id":1001}
--- error_code: 503
--- response_body
{"error":{"code":"store_unavailable","message":"Redis is not reachable; retry later"}}
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: the server certificate is not trusted: \(\d+:[^)]+\); nothing is sent to it/
--- no_error_log
[crit]
[alert]



=== TEST 6: a server certificate for another name (tls_name=): refused
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_TLS_PORT prefix=tls6 tls
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt
              tls_name=redis.example.com;
--- request
GET /v1/users/s6/devices
--- error_code: 503
--- response_body_like chomp
"store_unavailable"
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: the server certificate is not for "redis\.example\.com"; nothing is sent to it/



=== TEST 7: TLS to a plain port: the handshake fails (Redis waits for a line), said clearly
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_PLAIN_PORT prefix=tls7 tls timeout=300ms
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt;
--- request
GET /v1/users/s7/devices
--- error_code: 503
--- response_body_like chomp
"store_unavailable"
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: TLS handshake (failed|timed out)/
--- no_error_log
[crit]
[alert]



=== TEST 8: TLS to a peer that answers in plain text: the handshake fails, said clearly
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_ERR_PORT prefix=tls7b tls
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt;
--- request
GET /v1/users/s7/devices
--- error_code: 503
--- response_body_like chomp
"store_unavailable"
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: TLS handshake failed/
--- no_error_log
[crit]
[alert]



=== TEST 9: plain TCP to a TLS port: Redis drops the connection, 503, no crash
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_TLS_PORT prefix=tls8 timeout=1s;
--- request
GET /v1/users/s8/devices
--- error_code: 503
--- response_body_like chomp
"store_unavailable"
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: (not a Redis reply: .*\(a TLS port\? see "tls" of timpush_redis\)|connection lost: |no reply within 1000 ms)/
--- no_error_log
[crit]
[alert]



=== TEST 10: Redis killed and restarted under traffic: 503 meanwhile, then TLS again without a reload
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_TLS_PORT prefix=tls9 tls timeout=1s
              trusted_certificate=$TEST_NGINX_CERT_DIR/ca.crt;
--- init
my ($status, $body) = Timpush::Test::api('PUT',
    '/v1/users/s9/devices/9999999999999999', '{"business_id":1001}');
Test::More::is($status, 200, 'registered while Redis is up');
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    # traffic while Redis goes away and comes back
    for (1 .. 40) {
        Timpush::Test::api('GET', '/v1/users/s9/devices');
        Time::HiRes::sleep(0.05);
    }
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.3);
kill 'KILL', $main::redis;
waitpid $main::redis, 0;
($status, $body) = Timpush::Test::api('GET', '/v1/users/s9/devices');
Test::More::is($status, 503, 'Redis down: 503');
Test::More::like($body, qr/"store_unavailable"/,
                 'Redis down: store_unavailable');
$main::redis = main::start_tls_redis();
for (1 .. 100) {
    ($status, $body) = Timpush::Test::api('GET', '/v1/users/s9/devices');
    last if $status == 200;
    Time::HiRes::sleep(0.1);
}
Test::More::is($status, 200, 'Redis back: 200 again, without a reload');
waitpid $pid, 0;
--- request
PUT /v1/users/s9/devices/aaaaaaaaaaaaaaaa
{"business_id":1001}
--- error_code: 200
--- response_body
{"user_id":"s9","token":"aaaaaaaaaaaaaaaa","business_id":1001,"kicked":[]}
--- error_log
connection lost
