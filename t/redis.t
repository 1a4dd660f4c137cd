# The store: Redis down, stalled, restarted under a running nginx; the
# bound on waiting commands; Lua scripts forgotten by Redis.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port api start_redis stop_redis);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep);

# a port where nothing listens: connection refused
$ENV{TEST_NGINX_DEAD_PORT} = free_port();

# a "Redis" that accepts connections and never answers
our $stalled = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                     LocalPort => 0, Listen => 64,
                                     ReuseAddr => 1) or die "listen: $!";
$ENV{TEST_NGINX_STALL_PORT} = $stalled->sockport;

# a private Redis that the tests stop and start again
$ENV{TEST_NGINX_REDIS2_PORT} = free_port();
$ENV{TEST_NGINX_REDIS_SOCKET} = "/tmp/timpush-test-redis-$$.sock";
our $redis2 = start_redis($ENV{TEST_NGINX_REDIS2_PORT},
                          $ENV{TEST_NGINX_REDIS_SOCKET});
our @children;

END {
    stop_redis($redis2) if $redis2;
    waitpid($_, 0) for @children;
    unlink $ENV{TEST_NGINX_REDIS_SOCKET};
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: Redis down: 503 store_unavailable at once, no hang
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_DEAD_PORT timeout=2s;
--- config
location /v1/ { timpush_api; }
--- request eval
["GET /v1/users/r1/devices",
"PUT /v1/users/r1/devices/1111111111111111
{\"business_id\":1001}"]
--- error_code eval
[503, 503]
--- response_body eval
["{\"error\":{\"code\":\"store_unavailable\",\"message\":\"Redis is not reachable; retry later\"}}\n",
"{\"error\":{\"code\":\"store_unavailable\",\"message\":\"Redis is not reachable; retry later\"}}\n"]
--- error_log eval
qr/timpush: Redis 127\.0\.0\.1:\d+: connect failed: Connection refused/



=== TEST 2: Redis stalled: 503 store_unavailable after the deadline
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_STALL_PORT timeout=300ms;
--- config
location /v1/ { timpush_api; }
--- request
GET /v1/users/r2/devices
--- error_code: 503
--- response_body
{"error":{"code":"store_unavailable","message":"Redis did not answer in time; retry later"}}
--- error_log
no reply within 300 ms
not answering, reconnecting



=== TEST 3: Redis stopped and started again: requests fail, then succeed, without a reload
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_REDIS2_PORT timeout=1s;
--- config
location /v1/ { timpush_api; }
--- init
my ($status, $body) = Timpush::Test::api('PUT',
    '/v1/users/r3/devices/1111111111111111', '{"business_id":1001}');
Test::More::is($status, 200, 'registered while Redis is up');
Timpush::Test::stop_redis($main::redis2);
($status, $body) = Timpush::Test::api('GET', '/v1/users/r3/devices');
Test::More::is($status, 503, 'Redis down: 503');
Test::More::like($body, qr/"store_unavailable"/,
                 'Redis down: store_unavailable');
$main::redis2 = Timpush::Test::start_redis($ENV{TEST_NGINX_REDIS2_PORT},
                                           $ENV{TEST_NGINX_REDIS_SOCKET});
for (1 .. 100) {
    ($status, $body) = Timpush::Test::api('GET', '/v1/users/r3/devices');
    last if $status == 200;
    Time::HiRes::sleep(0.1);
}
Test::More::is($status, 200, 'Redis back: 200 again, without a reload');
--- request
PUT /v1/users/r3/devices/2222222222222222
{"business_id":1001}
--- error_code: 200
--- response_body
{"user_id":"r3","token":"2222222222222222","business_id":1001,"kicked":[]}
--- error_log
timpush: Redis 127.0.0.1
connection lost



=== TEST 4: too many commands waiting for Redis: 503 overloaded
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_STALL_PORT timeout=1s max_pending=1;
--- config
location /v1/ { timpush_api; }
--- init
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    Timpush::Test::api('GET', '/v1/users/r4a/devices');
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.3);
push @main::children, $pid;
--- request
GET /v1/users/r4/devices
--- error_code: 503
--- response_body
{"error":{"code":"overloaded","message":"too many requests are waiting for Redis; retry later"}}
--- wait: 1.5
--- error_log
no reply within 1000 ms



=== TEST 5: Redis forgot the scripts (SCRIPT FLUSH): EVAL is used and they come back
--- config
location /v1/ { timpush_api; }
--- init
system('redis-cli', '-p', $ENV{TEST_NGINX_REDIS_PORT}, 'SCRIPT', 'FLUSH') == 0
    or die "redis-cli failed";
--- request eval
["PUT /v1/users/r5/devices/1111111111111111
{\"business_id\":1001}",
"GET /v1/users/r5/devices"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"token":"1111111111111111"/]
--- no_error_log
[error]



=== TEST 6: timpush_redis on a unix socket
--- http_config
timpush_redis unix:$TEST_NGINX_REDIS_SOCKET timeout=2s;
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/r6/devices/1111111111111111
{\"business_id\":1001}",
"DELETE /v1/users/r6/devices/1111111111111111"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/^\{"removed":true\}$/]
--- no_error_log
[error]
