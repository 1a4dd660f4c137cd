# timpush_apns_mock_log: the accepted notifications from shared memory,
# oldest first, with their token, connection, time, apns-* headers and
# payload; ?token= filters, DELETE clears; the ring keeps the newest.

use FindBin;
use lib "$FindBin::Bin/mock";
use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use TimpushMock;

our $T = $TimpushMock::TOKEN;

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->http_config) {
        $block->set_value('http_config', <<'CONF');
server {
    listen 127.0.0.1:$TEST_NGINX_MOCK_PORT ssl http2;
    ssl_certificate $TEST_NGINX_CERT_DIR/server.crt;
    ssl_certificate_key $TEST_NGINX_CERT_DIR/server.key;
    ssl_verify_client optional_no_ca;
    ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    keepalive_requests 100000;
    location /3/device/ {
        timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                          key_id=ABC123DEFG team_id=TEAM123456
                          topic=com.example.chat;
        timpush_apns_mock_rule dead 410 Unregistered;
    }
}
CONF
    }

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location = /log { timpush_apns_mock_log; }
CONF
    }
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: nothing accepted yet
--- request
GET /log
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body
{"notifications":[]}
--- no_error_log
[error]



=== TEST 2: an entry: token, connection, time, every apns-* header, the payload as JSON; rejected ones are not kept
--- init
my $jwt = TimpushMock::jwt();
my $t2 = 'cd' x 32;
my $payload = '{"aps":{"alert":"Denny: hi","badge":1,"sound":"default"},'
              . '"ext":"{\"k\":[1,2]}"}';
my @headers = ('apns-push-type: alert', 'apns-priority: 10',
               'apns-expiration: 0', 'apns-collapse-id: a"b\\c',
               'apns-id: 123e4567-e89b-12d3-a456-426614174000',
               'apns-topic: com.example.chat', 'apns-x-custom: yes');
my $before = int(Time::HiRes::time() * 1000);
my $r = TimpushMock::h2(body => $payload,
                        headers => ["authorization: bearer $jwt", @headers]);
Test::More::is($r->{status}, 200, 'first accepted');
$r = TimpushMock::h2(body => '{"aps":1}',
                     headers => ["authorization: bearer $jwt",
                                 'apns-topic: com.example.chat']);
Test::More::is($r->{status}, 400, 'a bad payload is refused');
$r = TimpushMock::h2(path => "/3/device/dead$::T", body => '{"aps":{}}',
                     headers => ["authorization: bearer $jwt",
                                 'apns-topic: com.example.chat']);
Test::More::is($r->{status}, 410, 'a rule refuses one');
$r = TimpushMock::h2(path => "/3/device/$t2", cert => 'dev',
                     body => "{\"aps\":{}}\n");
Test::More::is($r->{status}, 200, 'second accepted');
my $after = int(Time::HiRes::time() * 1000) + 1;

my $log = TimpushMock::log_get()->{notifications};
Test::More::is(scalar @$log, 2, 'two entries');
my ($e1, $e2) = @$log;
Test::More::is($e1->{token}, $::T, 'first token');
Test::More::is_deeply($e1->{headers}, {
    'apns-push-type' => 'alert', 'apns-priority' => '10',
    'apns-expiration' => '0', 'apns-collapse-id' => 'a"b\\c',
    'apns-id' => '123e4567-e89b-12d3-a456-426614174000',
    'apns-topic' => 'com.example.chat', 'apns-x-custom' => 'yes'},
    'first headers');
Test::More::is_deeply($e1->{payload}, {
    aps => {alert => 'Denny: hi', badge => 1, sound => 'default'},
    ext => '{"k":[1,2]}'}, 'first payload');
Test::More::ok($e1->{time} >= $before && $e1->{time} <= $after,
               'first time, in ms');
Test::More::like($e1->{connection}, qr/^\d+$/, 'a connection number');
Test::More::is($e2->{token}, $t2, 'second token');
Test::More::is_deeply($e2->{headers}, {}, 'no apns-* header: none logged');
Test::More::is_deeply($e2->{payload}, {aps => {}}, 'second payload');
Test::More::isnt($e2->{connection}, $e1->{connection},
                 'two curl runs, two connections');
Test::More::ok($e2->{time} >= $e1->{time}, 'oldest first');
--- request eval
"GET /log?token=" . uc('cd' x 32)
--- response_body_like: ^\{"notifications":\[\{"token":"(cd){32}","connection":\d+,"time":\d{13},"headers":\{\},"payload":\{"aps":\{\}\}\n\}\]\}\n\z
--- no_error_log
[error]



=== TEST 3: ?token= with no entry, DELETE clears, other methods are refused
--- init
my $jwt = TimpushMock::jwt();
for (1 .. 3) {
    TimpushMock::h2(body => '{"aps":{}}',
                    headers => ["authorization: bearer $jwt",
                                'apns-topic: com.example.chat']);
}
Test::More::is(scalar @{ TimpushMock::log_get()->{notifications} }, 3,
               'three entries');
Test::More::is(scalar @{ TimpushMock::log_get('?token=0011223344556677')
                         ->{notifications} }, 0, 'an unknown token: none');
--- request eval
["DELETE /log", "GET /log", "POST /log
{}", "PUT /log
{}", "HEAD /log"]
--- error_code eval
[204, 200, 405, 405, 200]
--- response_body eval
['', "{\"notifications\":[]}\n", '{"reason":"MethodNotAllowed"}',
'{"reason":"MethodNotAllowed"}', '']
--- no_error_log
[error]



=== TEST 4: multiplexing: streams of one HTTP/2 connection share its number
--- init
my $jwt = TimpushMock::jwt();
my @tokens = map { sprintf '%032x', $_ } 1 .. 5;
Test::More::ok(TimpushMock::h2_multiplexed(
    body => '{"aps":{"alert":"m"}}',
    headers => ["authorization: bearer $jwt", 'apns-topic: com.example.chat'],
    paths => [map { "/3/device/$_" } @tokens]), 'nghttp: five streams');
Test::More::ok(TimpushMock::h2_multiplexed(
    body => '{"aps":{"alert":"m"}}', cert => 'dev',
    paths => ["/3/device/$tokens[0]", "/3/device/$tokens[1]"]),
    'nghttp: two more streams, another connection');
my $log = TimpushMock::log_get()->{notifications};
Test::More::is(scalar @$log, 7, 'seven entries');
my %first = map { $_->{connection} => 1 } @$log[0 .. 4];
my %second = map { $_->{connection} => 1 } @$log[5, 6];
Test::More::is(scalar keys %first, 1, 'the first five on one connection');
Test::More::is(scalar keys %second, 1, 'the last two on one connection');
Test::More::isnt((keys %first)[0], (keys %second)[0], 'two connections');
Test::More::is_deeply([sort map { $_->{token} } @$log[0 .. 4]], \@tokens,
                      'every stream logged');
--- request eval
"GET /log?token=" . sprintf('%032x', 1)
--- response_body_like: ^\{"notifications":\[\{[^\]]+\},\{[^\]]+\}\]\}\n\z
--- no_error_log
[error]



=== TEST 5: the ring keeps the newest entries, at least 1024 of 4 KiB, oldest first
--- timeout: 120
--- init
my $jwt = TimpushMock::jwt();
my $port = $ENV{TEST_NGINX_MOCK_PORT};
my $n = 3000;
my ($fh, $urls) = File::Temp::tempfile(UNLINK => 1);
print $fh map { sprintf "https://127.0.0.1:%d/3/device/%064x\n", $port, $_ }
          1 .. $n;
close $fh;
my ($ph, $pfile) = File::Temp::tempfile(UNLINK => 1);
print $ph TimpushMock::payload(4096);
close $ph;
my $out = `h2load -n $n -c 1 -m 20 -i $urls -d $pfile -H 'authorization: bearer $jwt' -H 'apns-topic: com.example.chat' 2>&1`;
Test::More::like($out, qr/status codes: $n 2xx/, 'h2load: all accepted')
    or Test::More::diag($out);
my $log = TimpushMock::log_get()->{notifications};
my $kept = scalar @$log;
Test::More::ok($kept >= 1024 && $kept < $n, "$kept entries kept");
my @seq = map { hex $_->{token} } @$log;
Test::More::is_deeply(\@seq, [$n - $kept + 1 .. $n],
                      'the newest, in order, none lost in between');
Test::More::is(length $log->[-1]{payload}{aps}{alert}, 4076,
               'payloads whole');
--- request
GET /log?token=0000000000000000000000000000000000000000000000000000000000000001
--- response_body
{"notifications":[]}
--- no_error_log
[error]



=== TEST 6: size= makes a bigger zone; below 10m it is refused
--- config
location = /log { timpush_apns_mock_log size=16m; }
--- request
GET /log
--- response_body
{"notifications":[]}
--- no_error_log
[error]



=== TEST 7: configuration: a zone too small for 1024 notifications
--- config
location = /log { timpush_apns_mock_log size=1m; }
--- must_die
--- error_log
"timpush_apns_mock_log": "size=1m" is not a size of at least 10m
