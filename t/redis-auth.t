# Redis with credentials (DESIGN §10): AUTH on every connection, with
# requirepass or an ACL user; a refused password is 503 store_unavailable
# and an [error] that names the cause, never the password; a host name is
# resolved when the configuration is read.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port);
use POSIX ();
use Time::HiRes qw(sleep);
use IO::Socket::INET;

$ENV{TEST_NGINX_AUTH_PORT} = free_port();

# a private Redis: "default" needs a password, "pusher" is an ACL user
our $redis = fork // die "fork: $!";
if ($redis == 0) {
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', '/dev/null';
    { exec 'redis-server', '--port', $ENV{TEST_NGINX_AUTH_PORT},
         '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
         '--requirepass', 'the default secret',
         '--user', 'pusher', 'on', '>pusher-secret', '~*', '+@all' };
    POSIX::_exit(127);
}
for (1 .. 100) {
    last if IO::Socket::INET->new("127.0.0.1:$ENV{TEST_NGINX_AUTH_PORT}");
    sleep 0.05;
}

END {
    local $?;   # the test's exit status, not Redis's
    if ($redis) { kill 'KILL', $redis; waitpid $redis, 0 }
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: requirepass: the password from password_file= is sent, the API works
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "the default secret\n";
close $fh;
chmod 0600, $f;
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_AUTH_PORT prefix=auth1
              password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/a1/devices/1111111111111111
{\"business_id\":1001}",
"GET /v1/users/a1/devices"]
--- error_code eval
[200, 200]
--- response_body_like eval
['"kicked":\[\]', '"token":"1111111111111111","business_id":1001']
--- no_error_log
[error]
[warn]



=== TEST 2: an ACL user (user= and password_file=)
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "pusher-secret\n";
close $fh;
chmod 0600, $f;
--- http_config
timpush_redis localhost:$TEST_NGINX_AUTH_PORT prefix=auth2 user=pusher
              password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/a2/devices/2222222222222222
{\"business_id\":1001}",
"GET /v1/users/a2/devices"]
--- error_code eval
[200, 200]
--- response_body_like eval
['"kicked":\[\]', '"token":"2222222222222222","business_id":1001']
--- no_error_log
[error]



=== TEST 3: a wrong password: 503 store_unavailable, the cause logged, never the password
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "not-the-secret-at-all\n";
close $fh;
chmod 0600, $f;
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_AUTH_PORT prefix=auth3
              password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- config
location /v1/ { timpush_api; }
--- init
Time::HiRes::sleep(0.3);
--- request
PUT /v1/users/a3/devices/3333333333333333
{"business_id":1001}
--- error_code: 503
--- response_body
{"error":{"code":"store_unavailable","message":"Redis is not reachable; retry later"}}
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: AUTH refused: WRONGPASS/
--- no_error_log
not-the-secret-at-all
NOAUTH



=== TEST 4: an ACL user with the wrong password
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "the default secret\n";
close $fh;
chmod 0600, $f;
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_AUTH_PORT prefix=auth4 user=pusher
              password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- config
location /v1/ { timpush_api; }
--- init
Time::HiRes::sleep(0.3);
--- request
GET /v1/users/a4/devices
--- error_code: 503
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: AUTH as pusher refused: WRONGPASS/
--- no_error_log
the default secret



=== TEST 5: a password file others may read: [warn] naming it
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "the default secret\n";
close $fh;
chmod 0644, $f;
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_AUTH_PORT prefix=auth5
              password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- config
location /v1/ { timpush_api; }
--- request
GET /v1/users/a5/devices
--- response_body
{"user_id":"a5","devices":[]}
--- error_log eval
qr/\[warn\] .*timpush_redis: password_file "[^"]*redis\.pass" may be read by anyone \(mode 0644\)/
--- no_error_log
[error]
