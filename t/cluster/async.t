# Asynchronous pushes on a Redis Cluster (DESIGN §14, §15): the stream
# "<prefix>:pushes" and each push's hash "<prefix>:p:{<id>}" are in other
# slots, so queueing, finishing and reading a push are steps of one key
# each.  Two gateway instances consume the one stream: every push queued
# on one is done once, readable from either; a push queued is "queued"
# before a consumer takes it.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port);
use Timpush::Push;
use Timpush::Cluster;

our $cluster = Timpush::Cluster->new;
$ENV{TEST_NGINX_CLUSTER_SEEDS} = $cluster->seeds;
$ENV{TEST_NGINX_B_PORT} ||= free_port();

our $USERS = 100;

# longer than timpush_apns_timeout and the Redis timeout (60 s and 30 s
# under valgrind, Timpush::Test)
our $VG = $ENV{TEST_NGINX_USE_VALGRIND};
our $CLAIM = $VG ? '120s' : '15s';
our $WAIT = $VG ? 120 : 20;
our $Text = { from => { user_id => 'boss', nickname => 'Boss' },
              elems => [{ type => 'text', text => 'later' }] };

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http !~ /timpush_redis/) {
        $http = "timpush_redis_cluster \$TEST_NGINX_CLUSTER_SEEDS "
                . "prefix=ta timeout=2000ms;\n"
                . "timpush_async on;\ntimpush_async_claim $CLAIM;\n$http";
    }

    $http .= Timpush::Push::simulator() if $http !~ /timpush_apns_mock/;
    $block->set_value('http_config', $http);

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }
});

# the second instance: the same cluster and prefix, the suite's simulator
sub instance_b {
    my (%o) = @_;
    return Timpush::Push::start_gateway(master => 1,
        port => $ENV{TEST_NGINX_B_PORT},
        store => "timpush_redis_cluster $ENV{TEST_NGINX_CLUSTER_SEEDS} "
                 . "prefix=ta timeout=2000ms;",
        http => "timpush_async " . ($o{async} // 'on') . ";\n"
                . "timpush_async_claim 15s;");
}

# the state of a push as an instance reads it
sub state_of {
    my ($id, $port) = @_;
    $port //= $ENV{TEST_NGINX_SERVER_PORT};
    my $res = HTTP::Tiny->new(timeout => 10)
                        ->get("http://127.0.0.1:$port/v1/pushes/$id");
    return $res->{status} unless $res->{status} == 200;
    return JSON::PP::decode_json($res->{content})->{state} // '?';
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: two instances consume one stream: every push done once, read from either
--- init
$::cluster->flushall;
Timpush::Push::register_many('au', $::USERS, 1001);
Timpush::Push::clear_log();
my $b = ::instance_b();
my @ids;
for my $k (0 .. 19) {
    my ($status, $json) = Timpush::Push::call('POST', '/v1/push',
        JSON::PP::encode_json({ %$::Text, async => JSON::PP::true,
                                to => [map { 'au' . (($k * 5 + $_) % $::USERS) }
                                       0 .. 4] }));
    Test::More::is($status, 202, "push $k queued") or last;
    push @ids, $json->{push_id};
}
my $until = Time::HiRes::time() + $::WAIT;
my @left = @ids;
while (@left && Time::HiRes::time() < $until) {
    @left = grep { ::state_of($_, $ENV{TEST_NGINX_B_PORT}) ne 'done' } @left;
    Time::HiRes::sleep(0.1) if @left;
}
Test::More::is(scalar @left, 0, 'every push done, as the other instance reads it');
my ($status, $json) = Timpush::Push::call('GET', "/v1/pushes/$ids[0]");
Test::More::is("$status $json->{state} $json->{sent}", '200 done 5',
               'a push read from the instance that queued it');
Test::More::is(scalar @{ Timpush::Push::mock_log() }, 100,
               'each device of each push got it once');
Timpush::Push::stop_nginx($b);
--- request
GET /v1/users/au0/devices
--- error_code: 200
--- no_error_log
[error]



=== TEST 2: no consumer: a push is read as queued (from the stream), and an unknown id is 404
--- http_config
timpush_redis_cluster $TEST_NGINX_CLUSTER_SEEDS prefix=ta timeout=2000ms;
timpush_async off;
--- init
my ($status, $json) = Timpush::Push::call('POST', '/v1/push',
    JSON::PP::encode_json({ %$::Text, async => JSON::PP::true,
                            to => ['au1'] }));
Test::More::is($status, 202, 'queued with no consumer');
Test::More::is(::state_of($json->{push_id}), 'queued', 'read as queued');
$::cluster->cmd($::cluster->node_for_key("ta:p:{$json->{push_id}}"), 'DEL',
                "ta:p:{$json->{push_id}}");
Test::More::is(::state_of($json->{push_id}), 'queued',
               'queued from the stream alone (its hash not written yet)');
Test::More::is(::state_of('1-0'), 404, 'an unknown push: 404');
--- request
GET /v1/users/au1/devices
--- error_code: 200
--- no_error_log
[error]



=== TEST 3: the stream's master with its replica cut off: a push only that master has is not answered 202 (wait=1): 503 store_unavailable; 202 once the replica is back
--- http_config
timpush_redis_cluster $TEST_NGINX_CLUSTER_SEEDS prefix=ta timeout=2000ms;
timpush_async off;
--- init
my $master = $::cluster->node_for_key('ta:pushes');
my ($replica) = $::cluster->replicas_of($master);
my $body = JSON::PP::encode_json({ %$::Text, async => JSON::PP::true,
                                   to => ['au1'] });
$::cluster->detach($replica);
my ($status, $json) = Timpush::Push::call('POST', '/v1/push', $body);
$::cluster->attach($replica);
Test::More::is("$status " . (ref $json && ref $json->{error}
                             ? $json->{error}{code} : '-'),
               '503 store_unavailable',
               'not queued: its stream entry is on no replica');
$::cluster->wait_ok;
($status) = Timpush::Push::call('POST', '/v1/push', $body);
Test::More::is($status, 202, 'queued once the replica is back');
--- request
GET /v1/users/au1/devices
--- error_code: 200
--- error_log eval
qr/\[error\].*Redis 127\.0\.0\.1:\d+: not replicated to 1 replica\(s\) within \d+ ms/
--- no_error_log eval
qr/\[error\](?!.*not replicated to 1 replica)/
