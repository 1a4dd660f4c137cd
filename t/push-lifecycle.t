# The transport's life: APNs going away and coming back; nginx reloaded and
# stopped while notifications are in flight.  The simulator (and, for the
# reload, the gateway) run as nginx processes of their own, so that they
# can be stopped; each case compares the answer with what the simulator
# received: nothing lost, nothing doubled.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port);
use Timpush::Push;

$ENV{TEST_NGINX_EXT_PORT} = free_port();
$ENV{TEST_NGINX_EXT_LOG_PORT} = free_port();
$ENV{TEST_NGINX_GW_PORT} = free_port();

no_shuffle();
run_tests();

__DATA__

=== TEST 1: APNs stops: 502 ConnectionFailed; APNs is back: delivered again, no reload
--- http_config eval
"# no simulator here
upstream ext { server 127.0.0.1:\$TEST_NGINX_EXT_PORT; }
timpush_apns_upstream sandbox ext;
timpush_apns_upstream production ext;
timpush_apns_timeout " . ($ENV{TEST_NGINX_USE_VALGRIND} ? '60s' : '4s') . ";\n"
--- config
location /v1/ { timpush_api; }
--- init
my ($port, $log) = ($ENV{TEST_NGINX_EXT_PORT}, $ENV{TEST_NGINX_EXT_LOG_PORT});
my $t = 'c1' x 32;
my $msg = { to => 'back', elems => [{ type => 'text', text => 'ping' }] };
my $sim = Timpush::Push::start_simulator($port, $log);
Timpush::Push::register('back', $t, 1001);
my ($status, $res) = Timpush::Push::push_message($msg);
Test::More::is($res->{results}[0]{status}, 200, 'delivered while APNs is up');
Timpush::Push::stop_nginx($sim);
($status, $res) = Timpush::Push::push_message($msg);
Test::More::is($status, 200, 'APNs down: still answered');
Test::More::is($res->{results}[0]{status}, 502, 'APNs down: status 502');
Test::More::is($res->{results}[0]{reason}, 'ConnectionFailed',
               'APNs down: ConnectionFailed');
$sim = Timpush::Push::start_simulator($port, $log);
($status, $res) = Timpush::Push::push_message($msg);
Test::More::is($res->{results}[0]{status}, 200, 'APNs back: delivered');
my $got = Timpush::Push::simulator_log($log);
Test::More::is(scalar @$got, 1, 'the new simulator got exactly that one');
Timpush::Push::stop_nginx($sim);
--- request
GET /v1/users/back/devices
--- response_body_like chomp
"badge":3,
--- error_log
cannot connect to 127.0.0.1



=== TEST 2: nginx -s reload, then -s quit, during a 2,000-device push: every notification answered, none lost or doubled
--- config
location /v1/ { timpush_api; }
--- init
my ($port, $log) = ($ENV{TEST_NGINX_EXT_PORT}, $ENV{TEST_NGINX_EXT_LOG_PORT});
my $gw_port = $ENV{TEST_NGINX_GW_PORT};
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my $n = 2000;
my $sim = Timpush::Push::start_simulator($port, $log, rate => 1000);
my $gw = Timpush::Push::start_nginx(master => 1, port => $gw_port, http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=lc$$ timeout=30s;
    upstream ext { server 127.0.0.1:$port; }
    timpush_apns_upstream sandbox ext;
    timpush_apns_upstream production ext;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_timeout 60s;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    server {
        listen 127.0.0.1:$gw_port;
        location /v1/ { timpush_api; }
    }");
Timpush::Push::register_many('lc', $n, 2001, $gw_port);
my $msg = { to => [map { "lc$_" } 0 .. $n - 1],
            elems => [{ type => 'text', text => 'in flight' }] };

for my $sig ('HUP', 'QUIT') {
    Timpush::Push::clear_simulator_log($log);
    my $push = Timpush::Push::push_async($msg, $gw_port);

    # the simulator answers 1,000 a second: signal once the first are in,
    # and check that most were still to come
    my $got;
    for (1 .. 2000) {
        $got = scalar @{Timpush::Push::simulator_log($log)};
        last if $got > 0;
        Time::HiRes::sleep(0.005);
    }
    Timpush::Push::signal_nginx($gw, $sig);
    Test::More::cmp_ok($got, '>', 0, "$sig: the push had started");
    Test::More::cmp_ok($got, '<', $n / 2, "$sig: the push was in flight");

    my ($status, $res) = Timpush::Push::push_wait($push);
    Test::More::is($status, 200, "$sig: the push was answered");
    Test::More::is($res->{sent}, $n, "$sig: every notification sent")
        or Test::More::diag(JSON::PP::encode_json($res->{results}[0]));
    my @new = @{Timpush::Push::simulator_log($log)};
    my %tokens = map { $_->{token} => 1 } @new;
    Test::More::is(scalar @new, $n, "$sig: the simulator got $n");
    Test::More::is(scalar keys %tokens, $n, "$sig: each device once");
    if ($sig eq 'HUP') {
        Timpush::Push::wait_port($gw_port);
    }
}

Test::More::ok(Timpush::Push::wait_port($gw_port, 1), 'QUIT: nginx is gone');
Timpush::Push::stop_nginx($gw);
Timpush::Push::stop_nginx($sim);
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
[error]



=== TEST 3: -s reload, then -s quit, during a 2,000-device push with APNs refusing connections: connection attempts bounded, every device answered, the old worker exits
--- config
location /v1/ { timpush_api; }
--- init
my $dead = $ENV{TEST_NGINX_EXT_PORT};   # nothing listens there now
my $gw_port = $ENV{TEST_NGINX_GW_PORT};
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my $n = 2000;
my $gw = Timpush::Push::start_nginx(master => 1, port => $gw_port, http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=lr$$ timeout=30s;
    upstream dead { server 127.0.0.1:$dead; }
    timpush_apns_upstream sandbox dead;
    timpush_apns_upstream production dead;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_connections 2;
    timpush_apns_timeout 3s;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    server {
        listen 127.0.0.1:$gw_port;
        location /v1/ { timpush_api; }
    }");
Timpush::Push::register_many('lr', $n, 2001, $gw_port);
my $msg = { to => [map { "lr$_" } 0 .. $n - 1],
            elems => [{ type => 'text', text => 'nobody there' }] };

for my $sig ('HUP', 'QUIT') {
    my $t0 = Time::HiRes::time();
    my $push = Timpush::Push::push_async($msg, $gw_port);
    Time::HiRes::sleep(0.5);
    Timpush::Push::signal_nginx($gw, $sig);
    my ($status, $res) = Timpush::Push::push_wait($push);
    my $took = Time::HiRes::time() - $t0;
    Test::More::is($status, 200, "$sig: the push was answered");
    Test::More::is(scalar @{$res->{results}}, $n, "$sig: one result each");
    # the users read before the deadline: 502 ConnectionFailed; the
    # others were never read (the push reads while APNs keeps up)
    my %why;
    $why{defined $_->{status} ? "$_->{status} $_->{reason}" : $_->{error}}++
        for @{$res->{results}};
    Test::More::is(join(',', sort keys %why), '502 ConnectionFailed,timeout',
                   "$sig: each 502 ConnectionFailed, or not read in time");
    Test::More::cmp_ok($why{'502 ConnectionFailed'}, '>', 0,
                       "$sig: some were read and failed");
    Test::More::cmp_ok($took, '<', 3 + 2, "$sig: within the deadline");
    Timpush::Push::wait_port($gw_port) if $sig eq 'HUP';
}

Test::More::ok(Timpush::Push::wait_port($gw_port, 1), 'QUIT: nginx is gone');
Time::HiRes::sleep(0.5);
my @tries = grep { /connect\(\) to 127\.0\.0\.1:$dead failed/ }
            split /\n/, Timpush::Push::slurp("$gw->{dir}/logs/error.log");
# two workers' lives (the reload), each at most two connections dialling
# with backoff 1 s, 2 s: a handful, not thousands
Test::More::cmp_ok(scalar @tries, '>', 0, 'connections were tried');
Test::More::cmp_ok(scalar @tries, '<=', 16, 'connection attempts bounded: '
                                            . scalar @tries);
Timpush::Push::stop_nginx($gw);
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
[alert]
