# timpush_metrics (DESIGN §13): what /metrics says, checked against what
# was done.  Every block counts what it sent and compares: exact counts
# per label set (an extra series fails as a missing one does), sums over
# two workers, counters kept by "nginx -s reload" while the gauges of the
# workers that left go with them, labels a hostile APNs cannot multiply,
# gauges that follow APNs and Redis going away, certificate expiries from
# the files themselves, one provider token per key for the instance;
# promtool and a real Prometheus server read the text.
#
# nginx runs with a master and two workers: every count is a sum over
# workers (TEST 3 makes sure both served).

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port start_redis stop_redis);
use Timpush::Push;
use Timpush::H2Peer;
use Timpush::Metrics;
use Timpush::Prometheus;

# valgrind makes nginx 10 to 50 times slower: the waits of the blocks grow
our $VG = $ENV{TEST_NGINX_USE_VALGRIND};
our $SLOW = $VG ? 10 : 1;

$ENV{TEST_NGINX_RP_PORT} ||= free_port();          # a reuseport listener
$ENV{TEST_NGINX_PRIVATE_REDIS} ||= free_port();    # a Redis to kill
$ENV{TEST_NGINX_EXT_PORT} ||= free_port();         # a simulator of its own
$ENV{TEST_NGINX_EXT_LOG_PORT} ||= free_port();
$ENV{TEST_NGINX_GW_PORT} ||= free_port();          # a gateway to reload
$ENV{TEST_NGINX_DEADLINE} = $VG ? '40s' : '4s';

# what a block started and must not leave behind, even if it dies
our ($REDIS_PID, %GATEWAYS);
END {
    local $?;
    Timpush::Test::stop_redis($REDIS_PID) if $REDIS_PID;
    Timpush::Push::stop_nginx($_) for values %GATEWAYS;
}

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    # the simulator of the same nginx is the APNs, unless the block has
    # its own: tokens "dead..." are gone (410), "bad0..." refused
    # (BadDeviceToken), "fa11..." a bad request (not pruned), "5030..."
    # unavailable the first 20 times (retried).  No GOAWAY after 1,000
    # streams: TEST 11 is about GOAWAY.
    if ($http !~ /h2peer|timpush_apns_upstream/) {
        $block->set_value('http_config', $http . Timpush::Push::simulator(
            extra => 'keepalive_requests 1000000;',
            rules => 'timpush_apns_mock_rule dead 410 Unregistered;
                      timpush_apns_mock_rule bad0 400 BadDeviceToken;
                      timpush_apns_mock_rule fa11 400 BadExpirationDate;
                      timpush_apns_mock_rule 5030 503 ServiceUnavailable times=20;'));
    }

    $block->set_value('config', <<'CONF') unless defined $block->config;
location /v1/ { timpush_api; }
location = /metrics { timpush_metrics; }
location = /mock/log { timpush_apns_mock_log; }
CONF
});

master_on();
workers(2);
log_level('info');
no_shuffle();
run_tests();


# ---- helpers for the blocks (their init code runs in the runner's package)

sub scrape {
    my ($port) = @_;
    return Timpush::Metrics::scrape($port);
}

# a value, or "none" when no such series is there (so that is() says so)
sub val {
    my ($m, $name, %labels) = @_;
    return Timpush::Metrics::value($m, $name, %labels) // 'none';
}

# calls $code until it returns true, at most $secs seconds: its last value
sub poll {
    my ($secs, $code) = @_;
    my $until = Time::HiRes::time() + $secs;
    while (1) {
        my $v = $code->();
        return $v if $v || Time::HiRes::time() > $until;
        Time::HiRes::sleep(0.1);
    }
}

# waits a moment (1 s; 10 under valgrind) for $cond->(scrape) to hold: a
# gauge is set at the end of the event loop's turn that answered, so a
# scrape served by the other worker may come just before it
sub settled {
    my ($cond) = @_;
    return poll(1 * $SLOW, sub { my ($m) = scrape(); $cond->($m) });
}

sub msg {
    return { elems => [{ type => 'text', text => 'metrics' }], @_ };
}

# a push that must be answered 200; its answer
sub push_ok {
    my ($body, $port) = @_;
    my ($status, $res, $raw) = Timpush::Push::push_message($body, $port);
    die "push: $status " . substr($raw // '', 0, 300) unless $status == 200;
    return $res;
}

# one request on a connection of its own ("Connection: close"): the status
sub fresh_request {
    my ($port, $method, $path, $body) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 60)
        or die "connect $port: $!";
    $body //= '';
    print $s "$method $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
             . "Content-Length: " . length($body) . "\r\n\r\n$body";
    local $/;
    my $in = <$s> // '';
    close $s;
    my ($status) = $in =~ m{^HTTP/1\.1 (\d+)};
    return ($status // 0, $in);
}

# the worker pids of an access log written with '$pid ...', and how many
# lines each wrote
sub pids_in_log {
    my ($file, $re) = @_;
    my %n;
    for (split /\n/, Timpush::Push::slurp($file)) {
        next if $re && !/$re/;
        $n{$1}++ if /^(\d+) /;
    }
    return %n;
}

# the child processes of $pid (an nginx master's workers)
sub children_of {
    my ($pid) = @_;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $in, '<', $stat or next;
        my $line = <$in> // '';
        close $in;
        push @kids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $pid;
    }
    return sort { $a <=> $b } @kids;
}

# a certificate's notAfter, in seconds since the epoch, read by openssl
sub not_after {
    my ($name) = @_;
    my $dir = $ENV{TEST_NGINX_CERT_DIR};
    my $end = `openssl pkcs12 -in $dir/$name.p12 -passin file:$dir/$name.pass -nokeys 2>/dev/null | openssl x509 -noout -enddate`;
    $end =~ s/^notAfter=//;
    chomp $end;
    die "not_after $name: no date" unless $end;
    my $t = `date -u -d '$end' +%s`;
    chomp $t;
    return $t;
}

__DATA__

=== TEST 1: promtool check metrics finds nothing to say on a scrape after a push to 10,000 recipients over 3 credentials, with failures
--- init
my $per = 3300;
my @users;
# 3,300 users on each credential (register_many: tokens 000..a0000000+i)
for my $c ([1001, 'pa', 0xa0000000], [1002, 'pb', 0xb0000000], [2001, 'pc', 0xc0000000]) {
    Timpush::Push::register_many($c->[1], $per, $c->[0], undef, $c->[2]);
    push @users, map { "$c->[1]$_" } 0 .. $per - 1;
}
# and 80 that fail at first, 10 in the foreground, 10 without devices
my %fail = (dead => 30, bad0 => 30, fa11 => 10, 5030 => 10);
my $i = 0;
for my $prefix (sort keys %fail) {
    for (1 .. $fail{$prefix}) {
        my $bid = (1001, 1002, 2001)[$i % 3];
        my $t = $prefix . sprintf('%060x', ++$i);
        Timpush::Push::register("f$i", $t, $bid);
        push @users, "f$i";
    }
}
for (1 .. 10) {
    my $t = sprintf '%064x', 0xf0000000 + $_;
    Timpush::Push::register("fg$_", $t, 1001);
    my ($st) = Timpush::Push::call('POST', "/v1/users/fg$_/devices/$t/foreground");
    die "foreground: $st" unless $st == 200;
    push @users, "fg$_";
}
push @users, map { "nobody$_" } 1 .. 10;
Test::More::is(scalar @users, 10000, '10,000 recipients');

my $res = ::push_ok(::msg(to => \@users));
Test::More::is("$res->{sent} $res->{failed} $res->{skipped}", '9910 70 20',
               'the push: 9,910 sent (the 503s retried), 70 failed, 20 skipped');

my ($m, $raw) = ::scrape();
my ($rc, $out) = Timpush::Metrics::promtool($raw);
Test::More::is($out, '', 'promtool check metrics: nothing to say');
Test::More::is($rc, 0, 'promtool check metrics: exit status 0');
my $series = Timpush::Metrics::series($m);
Test::More::diag("metrics: a scrape after a 10,000-recipient push with failures "
                 . "over 3 credentials has $series series ("
                 . length($raw) . " bytes)");
Test::More::cmp_ok($series, '<=', 300, 'a bounded number of series');
Test::More::is(::val($m, 'timpush_notifications_total'), 9980,
               'notifications: one per device not skipped');
Test::More::is(::val($m, 'timpush_notifications_total', status => 200), 9910, '9,910 of them 200');
Test::More::is(::val($m, 'timpush_tokens_removed_total', reason => '410'), 30, '30 removed: 410');
Test::More::is(::val($m, 'timpush_tokens_removed_total', reason => 'BadDeviceToken'), 30,
               '30 removed: BadDeviceToken');
Test::More::is(::val($m, 'timpush_skipped_total', reason => 'foreground'), 10, '10 foreground');
Test::More::is(::val($m, 'timpush_skipped_total', reason => 'no_devices'), 10, '10 without devices');
Test::More::is(::val($m, 'timpush_apns_request_duration_seconds_count'), 9980 + 20,
               'APNs request durations: one per answer, the 20 refused 503s too');
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_pushes_total\{outcome="pushed"\} 1$
--- no_error_log
[error]



=== TEST 2: exact counts: notifications by business_id, env, status and reason; tokens removed by reason; pushes by outcome; skipped by reason; API requests by endpoint and status; the push duration histogram
--- config
location /v1/ { client_max_body_size 2k; timpush_api; }
location = /metrics { timpush_metrics; }
--- init
my %api;
my $call = sub {
    my ($endpoint, $want, $method, $path, $body) = @_;
    my ($status, undef, $raw) = Timpush::Push::call($method, $path, $body);
    Test::More::is($status, $want, "$method $path: $want") or Test::More::diag($raw);
    $api{"endpoint=$endpoint,status=$status"}++;
    return $raw;
};
my %tok = (e1 => 'a1' x 32, e2 => 'b2' x 32, e3 => 'c3' x 32,
           edead => 'dead' . 'd1' x 30, ebad => 'bad0' . 'e5' x 30,
           efa => 'fa11' . 'f6' x 30, efg => 'f0' x 32);
my %bid = (e1 => 1001, e2 => 1002, e3 => 2001, edead => 1001, ebad => 2001,
           efa => 1002, efg => 1001);
$call->('register', 200, 'PUT', "/v1/users/$_/devices/$tok{$_}",
        "{\"business_id\":$bid{$_}}") for sort keys %tok;
$call->('foreground', 200, 'POST', "/v1/users/efg/devices/$tok{efg}/foreground");

my $push = sub {
    my ($want, $body) = @_;
    my $raw = $call->('push', $want, 'POST', '/v1/push',
                      ref $body ? JSON::PP::encode_json($body) : $body);
    return eval { JSON::PP::decode_json($raw) };
};
my $res = $push->(200, ::msg(to => [qw(e1 e2 e3 edead ebad efa efg enobody)]));
Test::More::is("$res->{sent} $res->{failed} $res->{skipped}", '3 3 2', 'the push: 3 sent, 3 failed, 2 skipped');
$push->(200, ::msg(to => 'e1', msg_id => 'm-1'));
$res = $push->(200, ::msg(to => 'e1', msg_id => 'm-1'));
Test::More::is($res->{results}[0]{skipped}, 'duplicate', 'the same msg_id: a duplicate');
$res = $push->(200, ::msg(to => 'e1', offline_push => { disable => JSON::PP::true }));
Test::More::is($res->{reason}, 'disabled', 'disabled');
$res = $push->(200, ::msg(to => 'e1', online_user_only => JSON::PP::true));
Test::More::is($res->{reason}, 'online_only', 'online_only');
$res = $push->(200, { to => 'e1', elems => [] });
Test::More::is($res->{reason}, 'no_content', 'no_content');
$push->(400, '{"to":');

# a login on another phone kicks e1's; e2's phone moves to e9; unset;
# logout
$call->('register', 200, 'PUT', '/v1/users/e1/devices/' . 'a2' x 32, '{"business_id":1001}');
$call->('register', 200, 'PUT', "/v1/users/e9/devices/$tok{e2}", '{"business_id":1002}');
$call->('unregister', 200, 'DELETE', "/v1/users/e3/devices/$tok{e3}");
$call->('logout', 200, 'POST', '/v1/users/efa/logout');
$call->('background', 404, 'POST', '/v1/users/e1/devices/' . '99' x 32 . '/background', '{"unread":1}');
$call->('list', 200, 'GET', '/v1/users/e1/devices');
$call->('health', 200, 'GET', '/v1/health');
$call->('unknown', 404, 'GET', '/v1/nope');
$call->('push', 405, 'DELETE', '/v1/push');
# over client_max_body_size: nginx answers 413 itself, before any
# endpoint is known
my ($st) = ::fresh_request($ENV{TEST_NGINX_SERVER_PORT}, 'POST', '/v1/push', 'x' x 3000);
Test::More::is($st, 413, 'a body over client_max_body_size: 413 from nginx');

my ($m, $raw) = ::scrape();
Test::More::is(Timpush::Metrics::dump($m, 'timpush_notifications_total'), join("\n", sort
    'business_id=1001,env=sandbox,reason=none,status=200 2',
    'business_id=1001,env=sandbox,reason=Unregistered,status=410 1',
    'business_id=1002,env=production,reason=none,status=200 1',
    'business_id=1002,env=production,reason=BadExpirationDate,status=400 1',
    'business_id=2001,env=production,reason=none,status=200 1',
    'business_id=2001,env=production,reason=BadDeviceToken,status=400 1'),
    'timpush_notifications_total: each series, exactly');
Test::More::is(Timpush::Metrics::dump($m, 'timpush_tokens_removed_total'), join("\n", sort
    'business_id=1001,reason=410 1', 'business_id=2001,reason=BadDeviceToken 1',
    'business_id=1001,reason=kicked 1', 'business_id=1002,reason=moved 1',
    'business_id=2001,reason=unset 1', 'business_id=1002,reason=logout 1'),
    'timpush_tokens_removed_total: 410, BadDeviceToken, kicked, moved, unset, logout');
Test::More::is(Timpush::Metrics::dump($m, 'timpush_pushes_total'), join("\n", sort
    'outcome=pushed 3', 'outcome=disabled 1', 'outcome=online_only 1',
    'outcome=no_content 1', 'outcome=invalid 1'),
    'timpush_pushes_total by outcome');
Test::More::is(Timpush::Metrics::dump($m, 'timpush_skipped_total'), join("\n", sort
    'reason=foreground 1', 'reason=no_devices 1', 'reason=duplicate 1'),
    'timpush_skipped_total by reason');

# nginx's own 413 is one request of that location, of no endpoint the
# handler knew: "unknown" (or "push", its path), never another endpoint.
# (The header filter that makes nginx's 413 JSON creates the request's
# context zeroed, and op 0 is "register".)
my @n413 = Timpush::Metrics::samples($m, 'timpush_api_requests_total', status => 413);
Test::More::like(join(' ', map { "$_->{labels}{endpoint}=$_->{value}" } @n413), qr/^(?:unknown|push)=1$/,
                 'the 413 nginx answered itself to POST /v1/push: endpoint="unknown" (or "push"), counted once');
my $want_api = join "\n", sort map { "$_ $api{$_}" } keys %api;
my $got_api = join "\n", grep { !/,status=413 / } split /\n/,
                   Timpush::Metrics::dump($m, 'timpush_api_requests_total');
Test::More::is($got_api, $want_api, 'timpush_api_requests_total: every request of the API, by endpoint and status');

Test::More::is(::val($m, 'timpush_push_duration_seconds_count'), 3,
               'push durations: one per push answered');
Test::More::is(join(', ', Timpush::Metrics::histogram_problems($m, 'timpush_push_duration_seconds')), '',
               'push duration: buckets monotonic, +Inf == _count');
my %apns = (1001 => 3, 1002 => 2, 2001 => 2);
for my $b (sort keys %apns) {
    Test::More::is(::val($m, 'timpush_apns_request_duration_seconds_count', business_id => $b),
                   $apns{$b}, "APNs request durations of $b: one per answer");
    Test::More::is(join(', ', Timpush::Metrics::histogram_problems($m,
                   'timpush_apns_request_duration_seconds', business_id => $b)), '',
                   "APNs request duration of $b: a whole histogram");
}
Test::More::cmp_ok(::val($m, 'timpush_push_duration_seconds_sum'), '>', 0, 'the durations add up to more than 0');
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_skipped_total\{reason="duplicate"\} 1$
--- no_error_log eval
[qr/\[error\](?!.*client intended to send too large body: 3000 bytes)/]



=== TEST 3: summed over two workers: 200 pushes, each on a connection of its own to a reuseport listener, 4 clients at once; the counters are what was sent, and each worker's gauges add up
--- http_config
timpush_apns_connections 1;
log_format bypid '$pid $status $request_uri';
server {
    listen 127.0.0.1:$TEST_NGINX_RP_PORT reuseport;
    location /v1/ { timpush_api; access_log logs/bypid.log bypid; }
    location = /metrics { timpush_metrics; }
}
--- init
my $port = $ENV{TEST_NGINX_RP_PORT};
Timpush::Push::register('w1', 'a1' x 32, 1001);
Timpush::Push::register('w2', 'b2' x 32, 2001);
my $body = JSON::PP::encode_json(::msg(to => ['w1', 'w2']));
my ($clients, $each) = (4, $::VG ? 10 : 50);

my @kids;
for my $c (1 .. $clients) {
    my $file = File::Temp->new;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my ($ok, $other) = (0, '');
        for (1 .. $each) {
            my ($st, $in) = ::fresh_request($port, 'POST', '/v1/push', $body);
            if ($st == 200 && $in =~ /"sent":2,/) { $ok++ } else { $other = "$st $in" }
        }
        open my $fh, '>', $file->filename;
        print $fh "$ok\n$other";
        close $fh;
        POSIX::_exit(0);
    }
    push @kids, [$pid, $file];
}
my $ok = 0;
for (@kids) {
    waitpid $_->[0], 0;
    my ($n, $other) = split /\n/, Timpush::Push::slurp($_->[1]->filename), 2;
    $ok += $n;
    Test::More::diag("a push not sent whole: $other") if $other;
}
my $n = $clients * $each;
Test::More::is($ok, $n, "$n pushes answered, each sent to 2 devices");

my %pids = ::pids_in_log(main::server_root() . '/logs/bypid.log', qr{ /v1/push$});
Test::More::is(scalar keys %pids, 2, 'both workers served pushes: '
               . join(', ', map { "$_: $pids{$_}" } sort keys %pids));

::settled(sub { ::val($_[0], 'timpush_apns_streams_in_flight') == 0 });
my ($m, $raw) = ::scrape($port);
Test::More::is(::val($m, 'timpush_pushes_total', outcome => 'pushed'), $n, "pushed: $n");
Test::More::is(::val($m, 'timpush_notifications_total', business_id => 1001, status => 200), $n,
               "1001 notifications 200: $n");
Test::More::is(::val($m, 'timpush_notifications_total', business_id => 2001, status => 200), $n,
               "2001 notifications 200: $n");
Test::More::is(::val($m, 'timpush_notifications_total'), 2 * $n, 'no other notification');
Test::More::is(::val($m, 'timpush_api_requests_total', endpoint => 'push', status => 200), $n,
               "API push 200: $n");
Test::More::is(::val($m, 'timpush_api_requests_total', endpoint => 'register', status => 200), 2,
               'API register 200: 2 (the other listener, the same zone)');
Test::More::is(::val($m, 'timpush_push_duration_seconds_count'), $n, "push durations: $n");
Test::More::is(::val($m, 'timpush_apns_request_duration_seconds_count'), 2 * $n,
               'APNs request durations: one per notification');
Test::More::is(join(', ', Timpush::Metrics::histogram_problems($m, 'timpush_push_duration_seconds')), '',
               'the push duration histogram is whole');
# gauges: each worker has its one connection per credential it pushed to
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1001, state => 'ready'), 2,
               'ready connections of 1001: one per worker, summed');
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 2001, state => 'ready'), 2,
               'ready connections of 2001: one per worker, summed');
Test::More::is(::val($m, 'timpush_apns_streams_in_flight'), 0, 'no stream in flight');
Test::More::is(::val($m, 'timpush_apns_queue_length'), 0, 'nothing waits');
Test::More::is(::val($m, 'timpush_provider_token_renewals_total', business_id => 2001), 1,
               'one provider token for the instance, not one per worker');
Test::More::is(::val($m, 'timpush_redis_up'), 1, 'Redis up for every worker');
my %seen;
my @twice = grep { $seen{$_->{line} =~ s/ \S+$//r}++ } @{$m->{samples}};
Test::More::is(scalar @twice, 0, 'no series twice (two workers made none twice)')
    or Test::More::diag(join "\n", map { $_->{line} } @twice);
my ($rc, $out) = Timpush::Metrics::promtool($raw);
Test::More::is("$rc $out", '0 ', 'promtool: nothing to say');
my ($m2) = ::scrape();
Test::More::is(Timpush::Metrics::dump($m2, 'timpush_pushes_total'),
               Timpush::Metrics::dump($m, 'timpush_pushes_total'),
               'the same numbers from the other listener');
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_apns_connections\{business_id="1001",env="sandbox",state="ready"\} 2$
--- no_error_log
[error]



=== TEST 4: kept across nginx -s reload: counters go on (N + M), the old worker's gauges go once it has exited, a credential added by the reload gets its series; a worker killed (SIGKILL) takes its gauges with it
--- config
location = /metrics { timpush_metrics; }
--- init
my ($sport, $slog) = ($ENV{TEST_NGINX_EXT_PORT}, $ENV{TEST_NGINX_EXT_LOG_PORT});
my $gw_port = $ENV{TEST_NGINX_GW_PORT};
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my $sim = Timpush::Push::start_simulator($sport, $slog);
$::GATEWAYS{sim} = $sim;
my $gw = Timpush::Push::start_nginx(master => 1, port => $gw_port,
    expect => [qr/worker process \d+ exited on signal 9/], http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=rl$$ timeout=" . ($::VG ? '30s' : '2s') . ";
    upstream ext { server 127.0.0.1:$sport; }
    timpush_apns_upstream sandbox ext;
    timpush_apns_upstream production ext;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_connections 1;
    timpush_apns_timeout $ENV{TEST_NGINX_DEADLINE};
    timpush_credential 1001 certificate=$certs/dev.p12
                            password_file=$certs/dev.pass env=sandbox;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    # RELOAD: credential 1003
    server {
        listen 127.0.0.1:$gw_port;
        location /v1/ { timpush_api; }
        location = /metrics { timpush_metrics; }
    }");
$::GATEWAYS{gw} = $gw;

Timpush::Push::register_many('rl', 2, 1001, $gw_port, 0xa0);
Timpush::Push::register_many('rt', 1, 2001, $gw_port, 0xb0);
my ($n, $m_) = (7, 5);
for (1 .. $n) {
    my $res = ::push_ok(::msg(to => ['rl0', 'rl1', 'rt0']), $gw_port);
    die "push: sent $res->{sent}" unless $res->{sent} == 3;
}
my ($m) = ::scrape($gw_port);
Test::More::is(::val($m, 'timpush_pushes_total', outcome => 'pushed'), $n, "before: $n pushes");
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1001, state => 'ready'), 1,
               'before: the worker has its connection to APNs');
my @old = ::children_of($gw->{pid});
Test::More::is(scalar @old, 1, 'one worker');

# the reload adds a credential
my $conf = Timpush::Push::slurp("$gw->{dir}/nginx.conf");
$conf =~ s{# RELOAD: credential 1003}{timpush_credential 1003 certificate=$certs/soon.p12 password_file=$certs/soon.pass env=production;}
    or die 'no RELOAD mark';
open my $fh, '>', "$gw->{dir}/nginx.conf" or die $!;
print $fh $conf;
close $fh;
Timpush::Push::signal_nginx($gw, 'HUP');
my $swapped = ::poll(30 * $::SLOW, sub {
    my @now = ::children_of($gw->{pid});
    return @now == 1 && $now[0] != $old[0] && !kill(0, $old[0]);
});
Test::More::ok($swapped, 'the old worker exited, a new one runs');

($m) = ::scrape($gw_port);
Test::More::is(::val($m, 'timpush_pushes_total', outcome => 'pushed'), $n, "after the reload: still $n");
Test::More::is(::val($m, 'timpush_notifications_total', status => 200), 3 * $n, 'notifications kept');
Test::More::is(::val($m, 'timpush_apns_connections', state => 'ready'), 0,
               "the old worker's connections are no longer counted");
Test::More::is(::val($m, 'timpush_credential_expiry_timestamp_seconds', business_id => 1003),
               ::not_after('soon'), 'the new credential 1003: its expiry');
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1003), 0,
               'the new credential 1003: its connection series, at 0');
my $up = ::poll(10 * $::SLOW, sub { my ($x) = ::scrape($gw_port); ::val($x, 'timpush_redis_up') == 1 });
Test::More::ok($up, 'the new worker is up with Redis');

for (1 .. $m_) {
    my $res = ::push_ok(::msg(to => ['rl0', 'rl1', 'rt0']), $gw_port);
    die "push: sent $res->{sent}" unless $res->{sent} == 3;
}
($m) = ::scrape($gw_port);
my $all = $n + $m_;
Test::More::is(::val($m, 'timpush_pushes_total', outcome => 'pushed'), $all, "N + M = $all pushes");
Test::More::is(::val($m, 'timpush_notifications_total', business_id => 1001, status => 200), 2 * $all,
               '1001: 2 (N + M) notifications');
Test::More::is(::val($m, 'timpush_notifications_total', business_id => 2001, status => 200), $all,
               '2001: N + M notifications');
Test::More::is(::val($m, 'timpush_api_requests_total', endpoint => 'push', status => 200), $all,
               'API push requests: N + M');
Test::More::is(::val($m, 'timpush_api_requests_total', endpoint => 'register', status => 200), 3,
               'API register requests: the 3 before the reload');
Test::More::is(::val($m, 'timpush_push_duration_seconds_count'), $all, 'push durations: N + M');
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1001, state => 'ready'), 1,
               'ready connections of 1001: the new worker\'s one, not 2');
Test::More::is(::val($m, 'timpush_provider_token_renewals_total', business_id => 2001), 1,
               'one provider token: the new worker uses the old one\'s (kept by the reload)');
my ($rc, $out) = Timpush::Metrics::promtool((::scrape($gw_port))[1]);
Test::More::is("$rc $out", '0 ', 'promtool: nothing to say');

# a worker that dies without exiting (SIGKILL) takes its gauges with it
my @before = ::children_of($gw->{pid});
kill 'KILL', $before[0];
my $respawned = ::poll(30 * $::SLOW, sub {
    my @now = ::children_of($gw->{pid});
    return @now == 1 && $now[0] != $before[0];
});
Test::More::ok($respawned, 'the killed worker was replaced');
($m) = ::scrape($gw_port);
Test::More::is(::val($m, 'timpush_apns_connections', state => 'ready'), 0,
               "the killed worker's connections are no longer counted");
Test::More::is(::val($m, 'timpush_pushes_total', outcome => 'pushed'), $all, 'the counters are kept');
$up = ::poll(10 * $::SLOW, sub { my ($x) = ::scrape($gw_port); ::val($x, 'timpush_redis_up') == 1 });
Test::More::ok($up, 'timpush_redis_up: the live worker\'s, 1');

# the new worker took a free slot; it pushes, is killed in turn, and its
# replacement takes that slot (its pid is dead): it starts from zero
::push_ok(::msg(to => ['rl0']), $gw_port);
($m) = ::scrape($gw_port);
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1001, state => 'ready'), 1,
               'the new worker pushed: its connection counted');
@before = ::children_of($gw->{pid});
kill 'KILL', $before[0];
$respawned = ::poll(30 * $::SLOW, sub {
    my @now = ::children_of($gw->{pid});
    return @now == 1 && $now[0] != $before[0];
});
Test::More::ok($respawned, 'killed again, replaced again');
($m) = ::scrape($gw_port);
Test::More::is(::val($m, 'timpush_apns_connections', state => 'ready'), 0,
               'the slot of a killed worker, taken by its replacement: its gauges start from zero');
Test::More::is(::val($m, 'timpush_pushes_total', outcome => 'pushed'), $all + 1, 'the counters are kept');
Test::More::unlike(Timpush::Push::slurp("$gw->{dir}/logs/error.log"), qr/\[error\]/,
                   'the gateway logged no error');
Timpush::Push::stop_nginx(delete $::GATEWAYS{gw});
Timpush::Push::stop_nginx(delete $::GATEWAYS{sim});
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_redis_up 1$
--- no_error_log
[error]



=== TEST 5: a hostile APNs cannot make series: 200 distinct random reasons and odd statuses (299, 599, 418, 999, 099) end in reason="other" (a status APNs does not answer is "other" too); the series do not grow with the reasons
--- http_config
upstream h2peer { server 127.0.0.1:$TEST_NGINX_APNS_PORT; }
timpush_apns_upstream sandbox h2peer;
timpush_apns_upstream production h2peer;
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my @status = qw(400 299 599 418 999 099 410 403 400);
my @odd = ('', '"}', 'Unregistered2', 'unregistered', 'BadDeviceTokenX', "Evil\\", 'a' x 3000,
           "\x{e6}\x{b6}\x{88}", 'Evil with spaces', 'Evil"quoted');
my $n = 0;
my (%want, %reject);
my $round = sub {
    my ($count) = @_;
    my (@users, %r);
    for (1 .. $count) {
        $n++;
        my $status = $status[$n % @status];
        my $reason = $n % 7 == 0 ? $odd[$n % @odd]
                   : 'Evil' . join '', map { ('A' .. 'Z', 'a' .. 'z', 0 .. 9)[rand 62] } 1 .. 1 + rand 40;
        my $token = sprintf '%064x', 0xe0000000 + $n;
        $reject{$token} = "$status $reason";
        Timpush::Push::register("h$n", $token, 1001);
        push @users, "h$n";
        # the statuses APNs answers (and ours) are labels; any other is "other"
        my $label = $status =~ /^(200|400|403|404|405|410|413|429|500|502|503|504)$/
                    ? $status : 'other';
        $want{$label}++;
    }
    # one known reason among them: kept as it is
    $n++;
    my $token = sprintf '%064x', 0xe0000000 + $n;
    $reject{$token} = '400 PayloadEmpty';
    Timpush::Push::register("h$n", $token, 1001);
    push @users, "h$n";
    my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                      mode => 'normal', reject => {%reject});
    my $res = ::push_ok(::msg(to => \@users));
    Timpush::H2Peer::stop($peer);
    Test::More::is($res->{failed}, $count + 1, "round of $count: each refused");
    return ::scrape();
};

my ($m1, $raw1) = $round->(40);
my $s1 = Timpush::Metrics::series($m1);
my ($m2, $raw2) = $round->(160);
my $s2 = Timpush::Metrics::series($m2);
Test::More::is($s2, $s1, "as many series after 200 hostile reasons as after 40 ($s1)");

my @notif = Timpush::Metrics::samples($m2, 'timpush_notifications_total');
Test::More::is(join(' ', sort map { "$_->{labels}{status}:$_->{labels}{reason}" } @notif),
               '400:PayloadEmpty 400:other 403:other 410:other other:other',
               'every hostile reason is "other"; statuses APNs does not answer are "other"');
for my $st (sort keys %want) {
    Test::More::is(::val($m2, 'timpush_notifications_total', status => $st, reason => 'other'),
                   $want{$st}, "status=\"$st\": $want{$st}");
}
Test::More::is(::val($m2, 'timpush_notifications_total', status => 400, reason => 'PayloadEmpty'), 2,
               'a reason Apple has: as it is');
Test::More::is(::val($m2, 'timpush_tokens_removed_total'), 'none', 'no token removed by a look-alike reason');
Test::More::unlike($raw2, qr/Evil|nregistered2|a{100}/, 'no hostile text in the scrape');
my ($rc, $out) = Timpush::Metrics::promtool($raw2);
Test::More::is("$rc $out", '0 ', 'promtool: nothing to say');
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_notifications_total\{business_id="1001",env="sandbox",status="other",reason="other"\} \d+$
--- no_error_log
[error]



=== TEST 6: a real Prometheus server scrapes /metrics every second and its query API answers the exact count
--- init
my $prom = Timpush::Prometheus::start(target => "127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}",
                                      interval => $::VG ? '5s' : '1s');
Timpush::Push::register("pr$_", sprintf('%064x', 0xd0 + $_), 1001) for 1 .. 3;
Timpush::Push::register('pr9', 'dead' . '09' x 30, 1001);
Timpush::Push::register('pr8', sprintf('%064x', 0xd8), 2001);
my $pushes = 4;
for (1 .. $pushes) {
    ::push_ok(::msg(to => [map { "pr$_" } 1 .. 3, 8]));
}
::push_ok(::msg(to => 'pr9'));
my $q = 'sum(timpush_notifications_total{business_id="1001",status="200"})';
my ($json, $raw) = Timpush::Prometheus::wait_value($prom, $q, 3 * $pushes, 30 * $::SLOW);
Test::More::diag("prometheus: GET /api/v1/query?query=$q: $raw");
Test::More::is(Timpush::Prometheus::scalar_value($json), 3 * $pushes,
               "Prometheus: $q = " . 3 * $pushes);
($json) = Timpush::Prometheus::query($prom,
    'timpush_notifications_total{business_id="1001",status="410",reason="Unregistered"}');
Test::More::is(Timpush::Prometheus::scalar_value($json), 1, 'Prometheus: the 410, with its labels');
($json) = Timpush::Prometheus::query($prom, 'timpush_push_duration_seconds_count');
Test::More::is(Timpush::Prometheus::scalar_value($json), $pushes + 1, 'Prometheus: the histogram\'s count');
($json) = Timpush::Prometheus::query($prom,
    'histogram_quantile(0.5, sum by (le) (timpush_push_duration_seconds_bucket))');
my $q50 = Timpush::Prometheus::scalar_value($json);
Test::More::ok(defined $q50 && $q50 > 0 && $q50 <= 10, 'Prometheus: a median push duration from the buckets (' . ($q50 // 'none') . ' s)');
($json) = Timpush::Prometheus::api($prom, 'targets');
my ($target) = @{ $json->{data}{activeTargets} || [] };
Test::More::is(($target->{health} // 'none') . ' "' . ($target->{lastError} // '') . '"', 'up ""',
               'the target is up, no scrape error');
($json) = Timpush::Prometheus::query($prom, 'scrape_samples_scraped{job="timpush"}');
my ($m) = ::scrape();
Test::More::is(Timpush::Prometheus::scalar_value($json), Timpush::Metrics::series($m),
               'Prometheus took every sample of the scrape');
Timpush::Prometheus::stop($prom);
Test::More::ok(!Timpush::Prometheus::running($prom), 'Prometheus stopped');
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_notifications_total\{business_id="1001",env="sandbox",status="200",reason="none"\} 12$
--- no_error_log
[error]



=== TEST 7: APNs gauges: ready after a push; the peer gone: no ready connection, notifications queued while it is down, backoff; the queue empty again once the push is answered
--- http_config
upstream h2peer { server 127.0.0.1:$TEST_NGINX_APNS_PORT; }
timpush_apns_upstream sandbox h2peer;
timpush_apns_upstream production h2peer;
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT}, mode => 'normal');
Timpush::Push::register_many('g', 5, 1001);
my ($m) = ::scrape();
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1001), 0, 'before any push: no connection');
my $res = ::push_ok(::msg(to => 'g0'));
Test::More::is($res->{results}[0]{status}, 200, 'delivered');
# the answer may leave before the gauges are set, at the end of the same
# turn of the worker's event loop: a moment is allowed, not seconds
::settled(sub { ::val($_[0], 'timpush_apns_streams_in_flight', business_id => 1001) == 0 });
($m) = ::scrape();
my @want = ((map { "business_id=1001,env=sandbox,state=$_ " . ($_ eq 'ready' ? 1 : 0) } qw(connecting ready draining backoff)),
            (map { "business_id=1002,env=production,state=$_ 0" } qw(connecting ready draining backoff)),
            (map { "business_id=2001,env=production,state=$_ 0" } qw(connecting ready draining backoff)));
Test::More::is(Timpush::Metrics::dump($m, 'timpush_apns_connections'), join("\n", sort @want),
               'after a push: one ready connection for 1001, nothing else');
Test::More::is(::val($m, 'timpush_apns_streams_in_flight', business_id => 1001), 0, 'no stream in flight');
Test::More::is(::val($m, 'timpush_apns_queue_length', business_id => 1001), 0, 'nothing queued');

Timpush::H2Peer::stop($peer);
my $gone = ::poll(5 * $::SLOW, sub {
    my ($x) = ::scrape();
    ::val($x, 'timpush_apns_connections', business_id => 1001, state => 'ready') == 0 });
Test::More::ok($gone, 'the peer gone: no ready connection');

my $push = Timpush::Push::push_async(::msg(to => [map { "g$_" } 0 .. 4]));
my $down = ::poll(5 * $::SLOW, sub {
    my ($x) = ::scrape();
    ::val($x, 'timpush_apns_connections', business_id => 1001, state => 'backoff') > 0
        && ::val($x, 'timpush_apns_queue_length', business_id => 1001) == 5 });
($m) = ::scrape();
Test::More::ok($down, 'a push to the peer gone: backoff and 5 notifications queued')
    or Test::More::diag(Timpush::Metrics::dump($m, 'timpush_apns_connections') . "\n"
                        . Timpush::Metrics::dump($m, 'timpush_apns_queue_length'));
my ($status, $answer) = Timpush::Push::push_wait($push);
Test::More::is(join(' ', map { "$_->{status} $_->{reason}" } @{$answer->{results}}),
               join(' ', ('502 ConnectionFailed') x 5), 'each 502 ConnectionFailed');
# the deadline took the 5 out of the queue: the gauge says so then, not
# at the connection's next attempt (seconds later, up to a minute)
::settled(sub { ::val($_[0], 'timpush_apns_queue_length', business_id => 1001) == 0 });
($m) = ::scrape();
Test::More::is(::val($m, 'timpush_apns_queue_length', business_id => 1001), 0,
               'the push answered: nothing queued any more');
Test::More::is(::val($m, 'timpush_apns_streams_in_flight', business_id => 1001), 0,
               'no stream in flight');
Test::More::cmp_ok(::val($m, 'timpush_apns_connections', business_id => 1001, state => 'backoff'), '>', 0,
                   'still in backoff');
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1001, state => 'ready'), 0,
               'still nothing ready');
Test::More::is(::val($m, 'timpush_notifications_total', business_id => 1001, status => 502,
                     reason => 'ConnectionFailed'), 5, 'five 502 ConnectionFailed counted');
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_notifications_total\{business_id="1001",env="sandbox",status="502",reason="ConnectionFailed"\} 5$
--- no_error_log eval
[qr/\[error\](?!.*(?:cannot connect to|Connection refused))/]



=== TEST 8: timpush_redis_up is 1, then 0 within seconds of the gateway's Redis killed, with redis_errors_total{kind="connect"} growing; 1 again once Redis is back
--- http_config eval
"timpush_redis 127.0.0.1:\$TEST_NGINX_PRIVATE_REDIS prefix=m8 timeout=" . ($::VG ? '10s' : '1s') . ";\n"
--- init
my $port = $ENV{TEST_NGINX_PRIVATE_REDIS};
$::REDIS_PID = Timpush::Test::start_redis($port);
my $up = sub { my ($m) = ::scrape(); ::val($m, 'timpush_redis_up') };
Test::More::ok(::poll(10 * $::SLOW, sub { $up->() eq '1' }), 'Redis started: timpush_redis_up 1');
Timpush::Push::register('r8', 'a8' x 32, 1001);
my ($m) = ::scrape();
my $errors = ::val($m, 'timpush_redis_errors_total', kind => 'connect');
Test::More::like($errors, qr/^\d+$/, "connect errors so far: $errors");
Timpush::Test::stop_redis($::REDIS_PID);
$::REDIS_PID = undef;
my $t0 = Time::HiRes::time();
Test::More::ok(::poll(5 * $::SLOW, sub { $up->() eq '0' }), 'Redis killed: timpush_redis_up 0');
Test::More::diag(sprintf 'timpush_redis_up 0 after %.2f s', Time::HiRes::time() - $t0);
($m) = ::scrape();
Test::More::cmp_ok(::val($m, 'timpush_redis_errors_total', kind => 'connect'), '>', $errors,
                   'redis_errors_total{kind="connect"} grew');
my ($st) = Timpush::Push::call('GET', '/v1/users/r8/devices');
Test::More::is($st, 503, 'the API says so too: 503');
$::REDIS_PID = Timpush::Test::start_redis($port);
Test::More::ok(::poll(10 * $::SLOW, sub { $up->() eq '1' }), 'Redis back: timpush_redis_up 1');
Timpush::Test::stop_redis($::REDIS_PID);
$::REDIS_PID = undef;
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_redis_errors_total\{kind="connect"\} [1-9]\d*$
--- no_error_log eval
[qr/\[error\](?!.*Redis 127\.0\.0\.1:\d+: (?:connect failed|connection lost))/]



=== TEST 9: timpush_credential_expiry_timestamp_seconds is each certificate's notAfter as openssl reads it from the .p12 (an expired one and one expiring soon too), whatever the clock did meanwhile; none for a token key
--- http_config
timpush_credential 1001 certificate=$TEST_NGINX_CERT_DIR/dev.p12
                        password_file=$TEST_NGINX_CERT_DIR/dev.pass env=sandbox;
timpush_credential 1003 certificate=$TEST_NGINX_CERT_DIR/soon.p12
                        password_file=$TEST_NGINX_CERT_DIR/soon.pass env=production;
timpush_credential 1004 certificate=$TEST_NGINX_CERT_DIR/expired.p12
                        password_file=$TEST_NGINX_CERT_DIR/expired.pass env=production;
timpush_credential 2001 key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                        team_id=TEAM123456 topic=com.example.chat env=production;
--- init
my ($m) = ::scrape();
my %want = (1001 => ::not_after('dev'), 1003 => ::not_after('soon'), 1004 => ::not_after('expired'));
Test::More::is(Timpush::Metrics::dump($m, 'timpush_credential_expiry_timestamp_seconds'),
               join("\n", map { "business_id=$_ $want{$_}" } sort keys %want),
               'the notAfter of each certificate, none for the token key: '
               . join(', ', map { "$_: $want{$_}" } sort keys %want));
my $crt = `openssl x509 -noout -enddate -in $ENV{TEST_NGINX_CERT_DIR}/dev.crt`;
$crt =~ s/^notAfter=//;
chomp $crt;
Test::More::is(::val($m, 'timpush_credential_expiry_timestamp_seconds', business_id => 1001),
               `date -u -d '$crt' +%s` + 0, 'dev.crt says the same');
my (undef, $health) = Timpush::Push::call('GET', '/v1/health');
Test::More::is(join(' ', map { "$_->{business_id}=" . ($_->{expires_at} // '-') } @{$health->{credentials}}),
               "1001=$want{1001} 1003=$want{1003} 1004=$want{1004} 2001=-",
               '/v1/health says the same');
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1004), 0,
               'the expired credential has its (empty) connection series');

# The same, from a gateway whose clock runs 200 times faster (libfaketime):
# a start that takes 10 ms takes 2 s by that clock.  The expiry is a date
# written in the certificate: how long nginx took to start, or how fast
# its clock runs, changes nothing to it.
my $port = Timpush::Test::free_port();
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my $gw = Timpush::Push::start_nginx(master => 1, port => $port,
    expect => [qr/timpush_credential 1004: the certificate in "[^"]*expired\.p12" expired/],
    env => { LD_PRELOAD => '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
             FAKETIME => '+0 x200', DONT_FAKE_MONOTONIC => 1 },
    http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=ft$$;
    upstream nowhere { server 127.0.0.1:$ENV{TEST_NGINX_EXT_PORT}; }
    timpush_apns_upstream sandbox nowhere;
    timpush_apns_upstream production nowhere;
    timpush_credential 1004 certificate=$certs/expired.p12
                            password_file=$certs/expired.pass env=production;
    timpush_credential 1003 certificate=$certs/soon.p12
                            password_file=$certs/soon.pass env=production;
    timpush_credential 1001 certificate=$certs/dev.p12
                            password_file=$certs/dev.pass env=sandbox;
    server {
        listen 127.0.0.1:$port;
        location = /metrics { timpush_metrics; }
    }");
$::GATEWAYS{ft} = $gw;
my ($fm) = ::scrape($port);
Test::More::is(Timpush::Metrics::dump($fm, 'timpush_credential_expiry_timestamp_seconds'),
               join("\n", map { "business_id=$_ $want{$_}" } sort keys %want),
               'a clock 200 times faster: the same notAfter, to the second');
Timpush::Push::stop_nginx(delete $::GATEWAYS{ft});
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_credential_expiry_timestamp_seconds\{business_id="1004"\} 1609459200$
--- error_log eval
[qr/\[alert\] .*timpush_credential 1004: the certificate in "[^"]*expired\.p12" expired \d+ days ago/,
 qr/\[warn\] .*timpush_credential 1003: the certificate in "[^"]*soon\.p12" expires in \d+ days/]
--- no_error_log
[error]



=== TEST 10: timpush_provider_token_renewals_total: 0 before any push, 1 after many pushes with the token key from one worker (reused across connections), still 1 once the other worker pushed too (one provider token per key for the instance); none for certificates
--- http_config
log_format bypid '$pid $status $request_uri';
server {
    listen 127.0.0.1:$TEST_NGINX_RP_PORT reuseport;
    location /v1/ { timpush_api; access_log logs/bypid.log bypid; }
}
--- config
location /v1/ { timpush_api; access_log logs/main-bypid.log bypid; }
location = /metrics { timpush_metrics; }
--- init
my $jwt = sub { my ($m) = ::scrape(); return ::val($m, 'timpush_provider_token_renewals_total', @_) };
Test::More::is($jwt->(business_id => 2001), 0, 'before any push: 0');
Test::More::is(::val((::scrape())[0], 'timpush_provider_token_renewals_total'), 0,
               'a series for the token key only, at 0');
Timpush::Push::register('j1', 'a1' x 32, 2001);
Timpush::Push::register('j2', 'b2' x 32, 2001);
# one keep-alive connection: one worker
for (1 .. 5) {
    my $res = ::push_ok(::msg(to => ['j1', 'j2']));
    die "push: sent $res->{sent}" unless $res->{sent} == 2;
}
my %pids = ::pids_in_log(main::server_root() . '/logs/main-bypid.log', qr{ /v1/push$});
Test::More::is(scalar keys %pids, 1, 'the pushes came through one worker');
Test::More::is($jwt->(business_id => 2001), 1, '5 pushes from one worker: 1 provider token');
my ($m) = ::scrape();
Test::More::is(Timpush::Metrics::dump($m, 'timpush_provider_token_renewals_total'), 'business_id=2001 1',
               'no series for the certificates');
# fresh connections to the reuseport listener until the other worker pushed
my $body = JSON::PP::encode_json(::msg(to => ['j1', 'j2']));
my $port = $ENV{TEST_NGINX_RP_PORT};
for (1 .. 200) {
    my ($st) = ::fresh_request($port, 'POST', '/v1/push', $body);
    die "push: $st" unless $st == 200;
    my %p = ::pids_in_log(main::server_root() . '/logs/bypid.log', qr{ /v1/push$});
    %pids = (%pids, %p);
    last if keys %pids == 2 && $_ >= 10;
}
Test::More::is(scalar keys %pids, 2, 'then both workers pushed');
Test::More::is($jwt->(business_id => 2001), 1, 'the other worker used the same token: still 1');
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_provider_token_renewals_total\{business_id="2001"\} 1$
--- no_error_log
[error]



=== TEST 11: a graceful GOAWAY (NO_ERROR) mid-flight: the connection is counted "draining" while its last answers come, then goes without an error; the streams above its last-stream-id go to a new connection
--- http_config
upstream h2peer { server 127.0.0.1:$TEST_NGINX_APNS_PORT; }
timpush_apns_upstream sandbox h2peer;
timpush_apns_upstream production h2peer;
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
--- init
# the peer holds the answers until 10 streams have arrived, then says
# GOAWAY (last stream: the 5th), answers the 5 below it 2 s later and
# ignores the others, which the gateway sends again elsewhere.  Once the
# last of them is answered, nghttp2 wants neither to read nor to write:
# the end of a graceful drain, which is no protocol error.
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'goaway_midflight', conns => 1, after => 10,
    answer_after => 2 * $::SLOW);
Timpush::Push::register_many('gw', 10, 1001);
my $push = Timpush::Push::push_async(::msg(to => [map { "gw$_" } 0 .. 9]));
Test::More::ok(Timpush::H2Peer::wait_for($peer, sub { grep { $_->{ev} eq 'goaway_sent' } @_ }, 10 * $::SLOW),
               'the peer said GOAWAY');
my $draining = ::poll(2 * $::SLOW, sub {
    my ($x) = ::scrape();
    ::val($x, 'timpush_apns_connections', business_id => 1001, state => 'draining') == 1 });
my ($m) = ::scrape();
Test::More::ok($draining, 'the connection that got GOAWAY is counted "draining"')
    or Test::More::diag(Timpush::Metrics::dump($m, 'timpush_apns_connections'));
Test::More::cmp_ok(::val($m, 'timpush_apns_streams_in_flight', business_id => 1001), '>=', 5,
                   'its streams below last-stream-id are in flight');
my ($status, $res) = Timpush::Push::push_wait($push);
Test::More::is($res->{sent}, 10, 'all 10 delivered');
my $settled = ::poll(3 * $::SLOW, sub {
    my ($x) = ::scrape();
    ::val($x, 'timpush_apns_connections', business_id => 1001, state => 'draining') == 0
        && ::val($x, 'timpush_apns_streams_in_flight') == 0 });
($m) = ::scrape();
Test::More::ok($settled, 'then no connection draining')
    or Test::More::diag(Timpush::Metrics::dump($m, 'timpush_apns_connections'));
Test::More::is(::val($m, 'timpush_apns_connections', business_id => 1001, state => 'backoff'), 0,
               'a graceful GOAWAY is no failure: no backoff');
Test::More::is(::val($m, 'timpush_notifications_total', business_id => 1001, status => 200), 10,
               '10 notifications 200, each counted once');
Test::More::is(::val($m, 'timpush_apns_streams_in_flight'), 0, 'nothing in flight');
Timpush::H2Peer::stop($peer);
--- request
GET /metrics
--- response_body_like chomp
(?m)^timpush_notifications_total\{business_id="1001",env="sandbox",status="200",reason="none"\} 10$
--- no_error_log
ended by a protocol error
exited on signal
