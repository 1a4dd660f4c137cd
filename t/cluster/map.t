#
# The slot map of the store on a Redis Cluster (DESIGN §15), as an
# operator meets it: a gateway given one seed answers its first request
# (the seed still connecting is asked all the same), and a master that
# dies does not make the gateway ask for the map in a loop while its
# replica is elected (each command parked for it used to ask again as soon
# as the map came back: thousands of CLUSTER SLOTS a second per worker).
# A 3-master / 3-replica cluster on loopback (t/lib/Timpush/Cluster.pm).

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;
use Timpush::Cluster;
use HTTP::Tiny;
use Time::HiRes ();

our $cluster = Timpush::Cluster->new;
$ENV{TEST_NGINX_CLUSTER_SEEDS} = $cluster->seeds;

our $TIMEOUT_MS = 2000;    # timeout= below

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http !~ /timpush_redis/) {
        $http = "timpush_redis_cluster \$TEST_NGINX_CLUSTER_SEEDS "
                . "prefix=tm timeout=${TIMEOUT_MS}ms;\n$http";
    }

    $http .= Timpush::Push::simulator() if $http !~ /timpush_apns_mock/;
    $block->set_value('http_config', $http);

    if (!defined $block->config) {
        $block->set_value('config', "location /v1/ { timpush_api; }\n");
    }
});

# a gateway of its own on $port, given $seeds
sub gateway {
    my ($port, $seeds) = @_;
    return Timpush::Push::start_gateway(port => $port,
        store => "timpush_redis_cluster $seeds prefix=tm "
                 . "timeout=${TIMEOUT_MS}ms;");
}

# CLUSTER SLOTS calls counted by the nodes on @ports since their RESETSTAT
sub slots_calls {
    my $n = 0;
    for my $port (@_) {
        my ($info) = $cluster->try_cmd($port, 'INFO', 'commandstats');
        $n += $1 if ($info // '') =~ /^cmdstat_cluster\|slots:calls=(\d+)/m;
    }
    return $n;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: one seed: the first request after a start is answered from the cluster (three starts)
--- init
$::cluster->flushall;
Timpush::Push::register_many('mu', 10, 1001);
my ($seed) = $::cluster->masters;
my $http = HTTP::Tiny->new(timeout => 10);
my @status;
for my $try (1 .. 3) {
    my $port = Timpush::Test::free_port();
    my $b = ::gateway($port, "127.0.0.1:$seed");
    my $r = $http->get("http://127.0.0.1:$port/v1/users/mu1/devices");
    push @status, $r->{status};
    my $log = Timpush::Push::slurp("$b->{dir}/logs/error.log");
    Timpush::Push::stop_nginx($b);
    Test::More::unlike($log, qr/exited on signal|\[alert\]|\[crit\]/,
                       "start $try: no crash, no alert");
}
Test::More::is("@status", '200 200 200',
               'the first request of each start: 200, not 503');
--- request
GET /v1/users/mu1/devices
--- error_code: 200
--- no_error_log
[error]



=== TEST 2: a master killed, one request waiting for its slots: the map asked a few times, not in a loop; the replica then used
--- init
$::cluster->flushall;
Timpush::Push::register_many('mu', 10, 1001);
# the suite's gateway has its map: a request went through
my ($status) = Timpush::Push::call('GET', '/v1/users/mu0/devices');
Test::More::is($status, 200, 'the gateway is up');
my $victim = $::cluster->node_for_key('tm:u:{mu5}');
my @others = grep { $_ != $victim } $::cluster->ports;
$::cluster->_kill($victim);
Time::HiRes::sleep(0.3);
$::cluster->try_cmd($_, 'CONFIG', 'RESETSTAT') for @others;
($status) = Timpush::Push::call('GET', '/v1/users/mu5/devices');
my $n = ::slots_calls(@others);
Test::More::ok($status == 503 || $status == 200,
               "the request answered ($status)");
# each ask follows one that did not help by 50 ms doubling to 1 s, and
# one per failed reconnection to the dead master: about 10 in 2 s
Test::More::cmp_ok($n, '<', 60,
                   "CLUSTER SLOTS asked $n times while the request waited");
$::cluster->wait_ok;
my $until = Time::HiRes::time() + 10;
do {
    ($status) = Timpush::Push::call('GET', '/v1/users/mu5/devices');
    Time::HiRes::sleep(0.1) if $status != 200;
} while ($status != 200 && Time::HiRes::time() < $until);
Test::More::is($status, 200, 'then the promoted replica answers');
$::cluster->restart($victim);
$::cluster->wait_ok;
--- request
GET /v1/users/mu5/devices
--- error_code: 200
--- no_error_log eval
# the node killed: refused, lost, the request that waited for the
# failover until its deadline; no other error
qr/\[error\](?!.*(?:connect failed|connection lost|no reply within))/
