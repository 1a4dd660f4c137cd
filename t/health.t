# GET /v1/health (DESIGN §13) as a load balancer sees it: 200 while Redis
# is up and a credential can send; 503 "failing" with Redis down, with only
# expired certificates, with APNs unreachable; and the log variables, which
# keep whole device tokens out of an access log.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port start_redis stop_redis);
use Timpush::Push;

our $C = $ENV{TEST_NGINX_CERT_DIR};
our $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

$ENV{TEST_NGINX_PRIVATE_REDIS} ||= free_port();
$ENV{TEST_NGINX_DEAD_PORT} ||= free_port();

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';
    $block->set_value('http_config', $http . Timpush::Push::simulator(
                          rules => 'timpush_apns_mock_rule dead 410 Unregistered;'))
        unless $http =~ /timpush_apns_upstream/;
    $block->set_value('config', <<'CONF') unless defined $block->config;
location /v1/ { timpush_api; }
CONF
});

# the health answer, decoded, and its status
sub health {
    my ($status, $json, $raw) = Timpush::Push::call('GET', '/v1/health');
    return ($status, $json, $raw);
}

# polls until the health status is $want, at most $secs: the last answer
sub health_until {
    my ($want, $secs) = @_;
    my $until = Time::HiRes::time() + $secs;
    my @h;
    while (1) {
        @h = health();
        return @h if $h[0] == $want || Time::HiRes::time() > $until;
        Time::HiRes::sleep(0.1);
    }
}

sub apns_of {
    my ($json) = @_;
    return join ' ', map { "$_->{business_id}:$_->{apns}" }
                     @{ $json->{credentials} };
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: all well: 200 ok, Redis up, each credential's state (ready after a push, unused before)
--- init
Timpush::Push::register('h1', 'a1' x 32, 1001);
my ($status, $json, $raw) = ::health();
Test::More::is($status, 200, 'before any push: 200');
Test::More::is(::apns_of($json), '1001:unused 1002:unused 2001:unused', 'nothing used yet');
Timpush::Push::push_message({ to => 'h1', elems => [{ type => 'text', text => 'x' }] });
($status, $json, $raw) = ::health();
Test::More::is(::apns_of($json), '1001:ready 1002:unused 2001:unused', 'after a push: ready');
Test::More::like($raw, qr/^\{"status":"ok","redis":"up","credentials":\[\{"business_id":1001,"env":"sandbox","expires_at":\d{10},"apns":"ready"\},\{"business_id":1002,"env":"production","expires_at":\d{10},"apns":"unused"\},\{"business_id":2001,"env":"production","apns":"unused"\}\]\}\n\z/,
                 'the whole answer; a token key has no expires_at');
my $end = `openssl x509 -noout -enddate -in $::C/dev.crt`;
$end =~ s/^notAfter=//;
chomp $end;
my $t = `date -u -d '$end' +%s`;
chomp $t;
Test::More::is($json->{credentials}[0]{expires_at}, $t, 'expires_at: the certificate\'s notAfter');
--- request
HEAD /v1/health
--- error_code: 200
--- response_headers
Content-Type: application/json
--- no_error_log
[error]



=== TEST 2: only GET and HEAD
--- request
POST /v1/health
--- error_code: 405
--- response_headers
Allow: GET, HEAD
--- response_body_like chomp
"code":"method_not_allowed"
--- no_error_log
[error]



=== TEST 3: Redis down: 503 failing, "redis":"down"; back up: 200
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_PRIVATE_REDIS prefix=h3 timeout=1s;
--- init
our $redis = Timpush::Test::start_redis($ENV{TEST_NGINX_PRIVATE_REDIS});
my ($status, $json) = ::health_until(200, 5 * $::SLOW);
Test::More::is($status, 200, 'Redis up: 200');
Timpush::Test::stop_redis($redis);
($status, $json) = ::health_until(503, 5 * $::SLOW);
Test::More::is($status, 503, 'Redis killed: 503');
Test::More::is("$json->{status} $json->{redis}", 'failing down', 'failing, redis down');
$redis = Timpush::Test::start_redis($ENV{TEST_NGINX_PRIVATE_REDIS});
($status, $json) = ::health_until(200, 10 * $::SLOW);
Test::More::is($status, 200, 'Redis back: 200 again');
Timpush::Test::stop_redis($redis);
--- request
GET /v1/users/nobody/devices
--- error_code: 503
--- error_log
connection lost
--- no_error_log
[crit]



=== TEST 4: every certificate expired: 503 failing, "apns":"expired"; with a valid one beside it: 200
--- http_config eval
"timpush_credential 1003 certificate=$::C/expired.p12
                        password_file=$::C/expired.pass env=sandbox
                        topic=com.example.chat;
"
--- init
my ($status, $json, $raw) = ::health();
Test::More::is($status, 503, 'only an expired certificate: 503');
Test::More::like($raw, qr/^\{"status":"failing","redis":"up","credentials":\[\{"business_id":1003,"env":"sandbox","expires_at":\d+,"apns":"expired"\}\]\}/,
                 'failing, expired');
Test::More::cmp_ok($json->{credentials}[0]{expires_at}, '<', time, 'expires_at is in the past');
--- request
GET /v1/health
--- error_code: 503
--- error_log eval
qr/\[alert\] .*timpush_credential 1003: the certificate in "[^"]*expired\.p12" expired/
--- no_error_log
[error]



=== TEST 5: an expired certificate beside a valid one: 200, each with its state
--- http_config eval
"timpush_credential 1001 certificate=$::C/dev.p12 password_file=$::C/dev.pass
                        env=sandbox;
timpush_credential 1003 certificate=$::C/expired.p12
                        password_file=$::C/expired.pass env=sandbox
                        topic=com.example.chat;
"
--- request
GET /v1/health
--- error_code: 200
--- response_body_like chomp
^\{"status":"ok","redis":"up","credentials":\[\{"business_id":1001,[^}]*"apns":"unused"\},\{"business_id":1003,[^}]*"apns":"expired"\}\]\}$
--- error_log eval
qr/\[alert\] .*timpush_credential 1003: .*expired/
--- no_error_log
[error]



=== TEST 6: APNs unreachable: after a push fails, "apns":"failing" and 503 (its only credential)
--- http_config eval
"upstream nowhere { server 127.0.0.1:$ENV{TEST_NGINX_DEAD_PORT}; }
timpush_apns_upstream sandbox nowhere;
timpush_apns_upstream production nowhere;
timpush_apns_timeout 1s;
timpush_credential 1001 certificate=$::C/dev.p12 password_file=$::C/dev.pass
                        env=sandbox;
"
--- init
Timpush::Push::register('h6', 'a6' x 32, 1001);
my ($status, $json) = ::health();
Test::More::is("$status " . ::apns_of($json), '200 1001:unused', 'before: unused, 200');
my (undef, $res) = Timpush::Push::push_message({ to => 'h6', elems => [{ type => 'text', text => 'x' }] });
Test::More::is($res->{results}[0]{reason}, 'ConnectionFailed', 'the push: ConnectionFailed');
($status, $json) = ::health();
Test::More::is("$status $json->{status} " . ::apns_of($json), '503 failing 1001:failing',
               'after: 503, failing');
--- request
GET /v1/health
--- error_code: 503
--- error_log
cannot connect to
--- no_error_log
[crit]



=== TEST 7: log variables: counts of a push, its msg_id, the user and a shortened token; never a whole token
--- http_config
log_format timpush '$request_method u=$timpush_user tok=$timpush_token_short '
                   'r=$timpush_recipients s=$timpush_sent f=$timpush_failed '
                   'k=$timpush_skipped m=$timpush_msg_id';
--- config
location /v1/ {
    timpush_api;
    access_log logs/timpush.log timpush;
}
--- init
my $t = 'c0ffee' . ('00' x 27) . '0001';
my $dead = 'dead' . ('00' x 28);
Timpush::Push::register('al%20ice', $t, 1001);
Timpush::Push::register('al%20ice', 'c0ffee' . ('00' x 27) . '0002', 2001);
Timpush::Push::register('bob', $dead, 1001);
Timpush::Push::push_message({ to => ['al ice', 'bob', 'zed'], msg_id => 'm-7',
                              elems => [{ type => 'text', text => 'x' }] });
Timpush::Push::call('POST', '/v1/users/bob/logout', "{\"token\":\"$t\"}");
Timpush::Push::call('PUT', '/v1/users/x/devices/12', '{"business_id":1001}');
Time::HiRes::sleep(0.2);
my $log = Timpush::Push::slurp(::server_root() . '/logs/timpush.log');
Test::More::is($log, <<"LOG", 'the access log');
PUT u=al ice tok=c0ffee...0001 r=- s=- f=- k=- m=-
PUT u=al ice tok=c0ffee...0002 r=- s=- f=- k=- m=-
PUT u=bob tok=dead00...0000 r=- s=- f=- k=- m=-
POST u=- tok=- r=3 s=2 f=1 k=1 m=m-7
POST u=bob tok=c0ffee...0001 r=- s=- f=- k=- m=-
PUT u=x tok=- r=- s=- f=- k=- m=-
LOG
Test::More::unlike($log, qr/c0ffee0000|dead0000/, 'no whole token in it');
--- request
GET /v1/users/al%20ice/devices
--- response_body_like chomp
"token":"c0ffee
--- no_error_log
[error]
