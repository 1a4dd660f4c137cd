# The APNs simulator's authentication: provider tokens (ES256 JWT) over the
# test client, client certificates over TLS and HTTP/2 with curl, and the
# configuration errors that stop nginx -t.

use FindBin;
use lib "$FindBin::Bin/mock";
use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use TimpushMock;

our $T = $TimpushMock::TOKEN;

# the simulator over TLS for the certificate blocks, as in the quickstart
our $TLS = <<'CONF';
server {
    listen 127.0.0.1:$TEST_NGINX_MOCK_PORT ssl http2;
    ssl_certificate $TEST_NGINX_CERT_DIR/server.crt;
    ssl_certificate_key $TEST_NGINX_CERT_DIR/server.key;
    ssl_verify_client optional_no_ca;
    ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    location /3/device/ { timpush_apns_mock MOCK_ARGS; }
}
CONF

add_block_preprocessor(sub {
    my $block = shift;

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
}
CONF
    }

    if (defined(my $args = $block->tls)) {
        chomp $args;
        (my $tls = $TLS) =~ s/MOCK_ARGS/$args/;
        $block->set_value('http_config', $tls);
    }
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a token signed with the configured key, kid and team: accepted
--- request eval
"POST /3/device/$::T
{\"aps\":{}}"
--- more_headers
authorization: bearer {{jwt}}
apns-topic: com.example.chat
--- error_code: 200
--- response_body
--- no_error_log
[error]



=== TEST 2: "bearer" in any case; a token of 59 minutes or from 1 minute ahead is still good
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 3]
--- more_headers eval
[TimpushMock::expand_jwt("authorization: Bearer {{jwt}}\napns-topic: com.example.chat"),
TimpushMock::expand_jwt("authorization: bearer {{jwt iat=-3540}}\napns-topic: com.example.chat"),
TimpushMock::expand_jwt("authorization: bearer {{jwt iat=+60}}\napns-topic: com.example.chat")]
--- error_code eval
[200, 200, 200]
--- no_error_log
[error]



=== TEST 3: issued more than an hour ago: 403 ExpiredProviderToken
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 2]
--- more_headers eval
[TimpushMock::expand_jwt("authorization: bearer {{jwt iat=-3700}}\napns-topic: com.example.chat"),
TimpushMock::expand_jwt("authorization: bearer {{jwt iat=-86400}}\napns-topic: com.example.chat")]
--- error_code eval
[403, 403]
--- response_body eval
['{"reason":"ExpiredProviderToken"}', '{"reason":"ExpiredProviderToken"}']
--- no_error_log
[error]



=== TEST 4: anything else wrong with the token: 403 InvalidProviderToken
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 10]
--- more_headers eval
my $good = TimpushMock::jwt();
my ($h, $c, $s) = split /\./, $good;
(my $tampered = $c) =~ tr/A-Za-z/B-ZAb-za/;
[map { "authorization: $_\napns-topic: com.example.chat" }
 'bearer ' . TimpushMock::jwt(kid => 'XYZ987WVUT', key => 'ABC123DEFG'),
 'bearer ' . TimpushMock::jwt(key => 'XYZ987WVUT'),
 'bearer ' . TimpushMock::jwt(iss => 'TEAM999999'),
 'bearer ' . TimpushMock::jwt(alg => 'HS256'),
 'bearer ' . TimpushMock::jwt(iat => '+900'),
 "bearer $h.$tampered.$s",
 "bearer $h.$c",
 "bearer $good.x",
 'bearer not-a-token',
 "Basic $good"]
--- error_code eval
[(403) x 10]
--- response_body eval
[('{"reason":"InvalidProviderToken"}') x 10]
--- no_error_log
[error]



=== TEST 5: no certificate and no token: 403 MissingProviderToken
--- request eval
"POST /3/device/$::T
{\"aps\":{}}"
--- more_headers
apns-topic: com.example.chat
--- error_code: 403
--- response_body: {"reason":"MissingProviderToken"}
--- no_error_log
[error]



=== TEST 6: a simulator without key= refuses every token
--- config
location /3/device/ { timpush_apns_mock; }
--- request eval
"POST /3/device/$::T
{\"aps\":{}}"
--- more_headers
authorization: bearer {{jwt}}
apns-topic: com.example.chat
--- error_code: 403
--- response_body: {"reason":"InvalidProviderToken"}
--- no_error_log
[error]



=== TEST 7: the same token many times (verified once per worker) and after it a bad one
--- request eval
[(map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 5), "POST /3/device/$::T
{\"aps\":{}}"]
--- more_headers eval
my $good = TimpushMock::jwt();
my $other = TimpushMock::jwt(key => 'XYZ987WVUT');
[("authorization: bearer $good\napns-topic: com.example.chat") x 5,
 "authorization: bearer $other\napns-topic: com.example.chat"]
--- error_code eval
[200, 200, 200, 200, 200, 403]
--- no_error_log
[error]



=== TEST 8: certificates over HTTP/2: the topic is the certificate's UID, bare or suffixed, or absent
--- tls
--- config
location = /log { timpush_apns_mock_log; }
--- init
my @cases = (
    [dev => undef, 200, ''],
    [dev => 'com.example.chat', 200, ''],
    [dev => 'com.example.chat.voip', 200, ''],
    [dev => 'com.example.chat.complication', 200, ''],
    [dev => 'com.example.chat2', 400, '{"reason":"BadTopic"}'],
    [dev => 'com.example', 400, '{"reason":"BadTopic"}'],
    [prod => 'com.example.chat2', 200, ''],
    [prod => undef, 200, ''],
    [prod => 'com.example.chat', 400, '{"reason":"BadTopic"}'],
);
for my $c (@cases) {
    my ($cert, $topic, $status, $body) = @$c;
    my $what = "$cert certificate, topic " . ($topic // 'absent');
    my $r = TimpushMock::h2(cert => $cert, body => '{"aps":{}}',
                            headers => [$topic ? "apns-topic: $topic" : ()]);
    Test::More::is($r->{version}, '2', "$what: HTTP/2");
    Test::More::is($r->{status}, $status, "$what: status");
    Test::More::is($r->{body}, $body, "$what: body");
    Test::More::like($r->{headers}{'apns-id'} // '', qr/^[-0-9a-f]{36}$/,
                     "$what: apns-id");
}
--- request
GET /log
--- response_body_like: ^\{"notifications":\[(\{"token":"[^"]+","connection":\d+,"time":\d+,"headers":\{[^}]*\},"payload":\{"aps":\{\}\}\},?){6}\]\}$
--- no_error_log
[error]



=== TEST 9: certificates: an untrusted one is 403 BadCertificate; without one, MissingProviderToken
--- tls
--- config
location = /log { timpush_apns_mock_log; }
--- init
my $r = TimpushMock::h2(cert => 'untrusted', body => '{"aps":{}}');
Test::More::is($r->{status}, 403, 'untrusted certificate: 403');
Test::More::is($r->{body}, '{"reason":"BadCertificate"}',
               'untrusted certificate: BadCertificate');
$r = TimpushMock::h2(body => '{"aps":{}}',
                     headers => ['apns-topic: com.example.chat']);
Test::More::is($r->{status}, 403, 'no certificate: 403');
Test::More::is($r->{body}, '{"reason":"MissingProviderToken"}',
               'no certificate: MissingProviderToken');
--- request
GET /log
--- response_body
{"notifications":[]}
--- no_error_log
[error]



=== TEST 10: a certificate without UID uses topic=, else the topic is missing
--- tls
topic=com.example.chat
--- config
location /3/device/ { timpush_apns_mock; }
--- init
my $r = TimpushMock::h2(cert => 'nouid', body => '{"aps":{}}');
Test::More::is($r->{status}, 200, 'no UID, topic= configured: 200');
$r = TimpushMock::h2(cert => 'nouid', body => '{"aps":{}}',
                     headers => ['apns-topic: com.example.chat2']);
Test::More::is($r->{body}, '{"reason":"BadTopic"}', 'another topic: BadTopic');
--- request eval
"POST /3/device/$::T
{\"aps\":{}}"
--- more_headers
apns-topic: com.example.chat
--- error_code: 403
--- response_body: {"reason":"MissingProviderToken"}
--- no_error_log
[error]



=== TEST 11: a certificate without UID and no topic=: MissingTopic, or BadTopic with one
--- tls
--- config
location = /log { timpush_apns_mock_log; }
--- init
my $r = TimpushMock::h2(cert => 'nouid', body => '{"aps":{}}');
Test::More::is($r->{body}, '{"reason":"MissingTopic"}', 'no topic: MissingTopic');
$r = TimpushMock::h2(cert => 'nouid', body => '{"aps":{}}',
                     headers => ['apns-topic: com.example.chat']);
Test::More::is($r->{body}, '{"reason":"BadTopic"}', 'a topic: BadTopic');
--- request
GET /log
--- response_body
{"notifications":[]}
--- no_error_log
[error]



=== TEST 12: with a certificate the authorization header is not used; tokens work over HTTP/2 too
--- tls
key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8 key_id=ABC123DEFG team_id=TEAM123456 topic=com.example.chat
--- config
location = /log { timpush_apns_mock_log; }
--- init
my $bad = TimpushMock::jwt(key => 'XYZ987WVUT');
my $good = TimpushMock::jwt();
my $r = TimpushMock::h2(cert => 'dev', body => '{"aps":{}}',
                        headers => ["authorization: bearer $bad"]);
Test::More::is($r->{status}, 200, 'certificate and a bad token: 200');
$r = TimpushMock::h2(body => '{"aps":{}}',
                     headers => ["authorization: bearer $good",
                                 'apns-topic: com.example.chat.voip']);
Test::More::is($r->{status}, 200, 'token over HTTP/2: 200');
$r = TimpushMock::h2(body => '{"aps":{}}',
                     headers => ["authorization: bearer $bad",
                                 'apns-topic: com.example.chat']);
Test::More::is($r->{body}, '{"reason":"InvalidProviderToken"}',
               'bad token over HTTP/2: InvalidProviderToken');
--- request
GET /log
--- response_body_like chomp
^\{"notifications":\[\{"token":"(?:ab){32}","connection":\d+,"time":\d+,"headers":\{\},"payload":\{"aps":\{\}\}\},\{"token":"(?:ab){32}","connection":\d+,"time":\d+,"headers":\{"apns-topic":"com\.example\.chat\.voip"[^{}]*\},"payload":\{"aps":\{\}\}\}\]\}$
--- no_error_log
[error]



=== TEST 13: configuration: a P-384 key
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_P384KEY001.p8
                      key_id=P384KEY001 team_id=TEAM123456;
}
--- must_die
--- error_log
"timpush_apns_mock": the key in
is not a P-256 (ES256) key



=== TEST 14: configuration: an RSA key
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_RSAKEY0001.p8
                      key_id=RSAKEY0001 team_id=TEAM123456;
}
--- must_die
--- error_log
is not a P-256 (ES256) key



=== TEST 15: configuration: not a key, no file
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_GARBAGE001.p8
                      key_id=GARBAGE001 team_id=TEAM123456;
}
location /x/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_NOPE000000.p8
                      key_id=NOPE000000 team_id=TEAM123456;
}
--- must_die
--- error_log
"timpush_apns_mock": no private key in



=== TEST 16: configuration: a missing key file
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_NOPE000000.p8
                      key_id=NOPE000000 team_id=TEAM123456;
}
--- must_die
--- error_log
"timpush_apns_mock": cannot read key file



=== TEST 17: configuration: a key_id that is not the file's
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=XYZ987WVUT team_id=TEAM123456;
}
--- must_die
--- error_log
"timpush_apns_mock": key_id="XYZ987WVUT" does not match the key file



=== TEST 18: configuration: a malformed key_id
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=abc123defg team_id=TEAM123456;
}
--- must_die
--- error_log
"timpush_apns_mock": key_id="abc123defg" is not 10 letters and digits



=== TEST 19: configuration: key= without team_id=
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG;
}
--- must_die
--- error_log
"timpush_apns_mock": team_id="" is not 10 letters and digits



=== TEST 20: configuration: key_id= without key=
--- config
location /3/device/ { timpush_apns_mock key_id=ABC123DEFG team_id=TEAM123456; }
--- must_die
--- error_log
"timpush_apns_mock": key_id= and team_id= go with key=



=== TEST 21: configuration: an unknown parameter
--- config
location /3/device/ { timpush_apns_mock topic=com.example.chat env=sandbox; }
--- must_die
--- error_log
"timpush_apns_mock": invalid parameter "env=sandbox"



=== TEST 22: configuration: twice in one location
--- config
location /3/device/ { timpush_apns_mock; timpush_apns_mock; }
--- must_die
--- error_log
"timpush_apns_mock" directive is duplicate
