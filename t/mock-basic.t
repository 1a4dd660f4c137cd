# The APNs simulator's request checks, each reason from the check that
# names it, and Apple's order of precedence.  The simulator also answers
# HTTP/1.1, so these blocks use the test client directly, with a provider
# token; t/mock-auth.t and t/mock-log.t go through TLS and HTTP/2.

use FindBin;
use lib "$FindBin::Bin/mock";
use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use TimpushMock;

our $T = $TimpushMock::TOKEN;

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

    if (!defined $block->more_headers) {
        $block->set_value('more_headers', TimpushMock::expand_jwt(<<'H'));
authorization: bearer {{jwt}}
apns-topic: com.example.chat
H
    }
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: accepted: 200, the request's apns-id echoed, an empty body
--- request eval
"POST /3/device/$::T
{\"aps\":{\"alert\":\"hi\"}}"
--- more_headers
authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-id: 123E4567-E89B-12D3-A456-426614174000
--- error_code: 200
--- response_headers
apns-id: 123E4567-E89B-12D3-A456-426614174000
Content-Length: 0
Content-Type:
--- response_body
--- no_error_log
[error]



=== TEST 2: without apns-id the answer carries a fresh version 4 UUID
--- request eval
"POST /3/device/$::T
{\"aps\":{\"alert\":\"hi\"}}"
--- error_code: 200
--- response_headers_like
apns-id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}
--- no_error_log
[error]



=== TEST 3: only POST: 405 MethodNotAllowed, as JSON with an apns-id
--- request eval
["GET /3/device/$::T",
"PUT /3/device/$::T
{\"aps\":{}}",
"DELETE /3/device/$::T"]
--- error_code eval
[405, 405, 405]
--- response_body eval
['{"reason":"MethodNotAllowed"}', '{"reason":"MethodNotAllowed"}',
'{"reason":"MethodNotAllowed"}']
--- response_headers_like eval
["Content-Type: application/json\napns-id: [-0-9a-f]{36}",
"apns-id: [-0-9a-f]{36}", "apns-id: [-0-9a-f]{36}"]
--- no_error_log
[error]



=== TEST 4: a path other than /3/device/<token>: 404 BadPath
--- config
location /3/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456;
}
--- request eval
["POST /3/devices/$::T
{\"aps\":{}}",
"POST /3/Device/$::T
{\"aps\":{}}",
"POST /3/device
{\"aps\":{}}"]
--- error_code eval
[404, 404, 404]
--- response_body eval
['{"reason":"BadPath"}', '{"reason":"BadPath"}', '{"reason":"BadPath"}']
--- no_error_log
[error]



=== TEST 5: no token: 400 MissingDeviceToken
--- request
POST /3/device/
{"aps":{}}
--- error_code: 400
--- response_body: {"reason":"MissingDeviceToken"}
--- no_error_log
[error]



=== TEST 6: tokens: hex, even length, 16 to 200 digits, any case
--- request eval
["POST /3/device/zz$::T
{\"aps\":{}}",
"POST /3/device/a$::T
{\"aps\":{}}",
"POST /3/device/0123456789abcd
{\"aps\":{}}",
"POST /3/device/" . ('ab' x 101) . "
{\"aps\":{}}",
"POST /3/device/0123456789abcdef
{\"aps\":{}}",
"POST /3/device/" . ('AB' x 100) . "
{\"aps\":{}}"]
--- error_code eval
[400, 400, 400, 400, 200, 200]
--- response_body eval
['{"reason":"BadDeviceToken"}', '{"reason":"BadDeviceToken"}',
'{"reason":"BadDeviceToken"}', '{"reason":"BadDeviceToken"}', '', '']
--- no_error_log
[error]



=== TEST 7: an apns-* header twice, known or not: 400 DuplicateHeaders
--- request eval
["POST /3/device/$::T
{\"aps\":{}}",
"POST /3/device/$::T
{\"aps\":{}}",
"POST /3/device/$::T
{\"aps\":{}}"]
--- more_headers eval
[TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-priority: 10
apns-priority: 10"),
TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-topic: com.example.chat"),
TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-whatever: 1
apns-whatever: 2")]
--- error_code eval
[400, 400, 400]
--- response_body eval
['{"reason":"DuplicateHeaders"}', '{"reason":"DuplicateHeaders"}',
'{"reason":"DuplicateHeaders"}']
--- no_error_log
[error]



=== TEST 8: apns-push-type: Apple's nine types, else 400 InvalidPushType
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 11]
--- more_headers eval
[map { TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-push-type: $_") }
qw(alert background voip complication fileprovider mdm location
   liveactivity pushtotalk Alert widget)]
--- error_code eval
[(200) x 9, 400, 400]
--- response_body eval
[('') x 9, '{"reason":"InvalidPushType"}', '{"reason":"InvalidPushType"}']
--- no_error_log
[error]



=== TEST 9: apns-priority: 10, 5 or 1, else 400 BadPriority
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 7]
--- more_headers eval
[map { TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-priority: $_") } qw(10 5 1 0 11 high 010)]
--- error_code eval
[200, 200, 200, 400, 400, 400, 400]
--- response_body eval
['', '', '', ('{"reason":"BadPriority"}') x 4]
--- no_error_log
[error]



=== TEST 10: apns-expiration: an integer, else 400 BadExpirationDate
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 5]
--- more_headers eval
[map { TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-expiration: $_") } qw(0 1767225600 -1 1.5 tomorrow)]
--- error_code eval
[200, 200, 400, 400, 400]
--- response_body eval
['', '', ('{"reason":"BadExpirationDate"}') x 3]
--- no_error_log
[error]



=== TEST 11: apns-collapse-id: at most 64 bytes, else 400 BadCollapseId
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 2]
--- more_headers eval
[map { TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-collapse-id: " . ('c' x $_)) } (64, 65)]
--- error_code eval
[200, 400]
--- response_body eval
['', '{"reason":"BadCollapseId"}']
--- no_error_log
[error]



=== TEST 12: apns-id: a UUID, else 400 BadMessageId with a fresh apns-id
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 3]
--- more_headers eval
[map { TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat
apns-id: $_") }
('not-a-uuid', '123e4567-e89b-12d3-a456-42661417400',
 '123e4567-e89b-12d3-a456-42661417400g')]
--- error_code eval
[400, 400, 400]
--- response_body eval
[('{"reason":"BadMessageId"}') x 3]
--- response_headers_like eval
[("apns-id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}") x 3]
--- no_error_log
[error]



=== TEST 13: with a token, apns-topic is required: 400 MissingTopic
--- request eval
"POST /3/device/$::T
{\"aps\":{}}"
--- more_headers
authorization: bearer {{jwt}}
--- error_code: 400
--- response_body: {"reason":"MissingTopic"}
--- no_error_log
[error]



=== TEST 14: with a token, the topic is topic= or its suffixed forms, else 400 DeviceTokenNotForTopic
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 8]
--- more_headers eval
[map { TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: $_") }
qw(com.example.chat com.example.chat.voip com.example.chat.complication
   com.example.chat.pushkit.fileprovider com.example.chat2
   com.example.cha com.example.chat.bogus com.example.chat.voip.voip)]
--- error_code eval
[200, 200, 200, 200, 400, 400, 400, 400]
--- response_body eval
['', '', '', '', ('{"reason":"DeviceTokenNotForTopic"}') x 4]
--- no_error_log
[error]



=== TEST 15: a key without topic= serves every topic of the team, but one is still required
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456;
}
--- request eval
[map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 3]
--- more_headers eval
[TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat"),
TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: org.other.app"),
TimpushMock::expand_jwt("authorization: bearer {{jwt}}")]
--- error_code eval
[200, 200, 400]
--- response_body eval
['', '', '{"reason":"MissingTopic"}']
--- no_error_log
[error]



=== TEST 16: the payload: a JSON object with an aps dictionary, else 400 PayloadEmpty
--- request eval
["POST /3/device/$::T",
"POST /3/device/$::T
not json",
"POST /3/device/$::T
{\"aps\":{}",
"POST /3/device/$::T
{\"alert\":\"hi\"}",
"POST /3/device/$::T
{\"aps\":\"hi\"}",
"POST /3/device/$::T
[{\"aps\":{}}]",
"POST /3/device/$::T
{\"aps\":{}} {}",
"POST /3/device/$::T
{\"aps\":{\"alert\":\"\xff\xfe\"}}",
"POST /3/device/$::T
{\"aps\":{},\"ext\":[1,{\"a\":null}]}"]
--- error_code eval
[(400) x 8, 200]
--- response_body eval
[('{"reason":"PayloadEmpty"}') x 8, '']
--- no_error_log
[error]



=== TEST 17: 4096 bytes at most, 5120 for voip, else 413 PayloadTooLarge
--- request eval
[map { "POST /3/device/$::T
" . TimpushMock::payload($_) } (4096, 4097, 5120, 5121, 4097)]
--- more_headers eval
[map { TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat$_") }
('', '', ".voip\napns-push-type: voip", ".voip\napns-push-type: voip",
 "\napns-push-type: alert")]
--- error_code eval
[200, 413, 200, 413, 413]
--- response_body eval
['', '{"reason":"PayloadTooLarge"}', '', '{"reason":"PayloadTooLarge"}',
'{"reason":"PayloadTooLarge"}']
--- no_error_log
[error]



=== TEST 18: a chunked body past the limit is 413 too, and never goes to a file
--- raw_request eval
my $jwt = TimpushMock::jwt();
my $body = TimpushMock::payload(30000);
my $ok = TimpushMock::payload(300);
["POST /3/device/$::T HTTP/1.1\r
Host: localhost\r
Connection: close\r
authorization: bearer $jwt\r
apns-topic: com.example.chat\r
Transfer-Encoding: chunked\r
\r
" . join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
              unpack('(a1000)*', $body)) . "0\r\n\r\n",
"POST /3/device/$::T HTTP/1.1\r
Host: localhost\r
Connection: close\r
authorization: bearer $jwt\r
apns-topic: com.example.chat\r
Transfer-Encoding: chunked\r
\r
" . sprintf("%x\r\n%s\r\n", length $ok, $ok) . "0\r\n\r\n"]
--- error_code eval
[413, 200]
--- response_body eval
['{"reason":"PayloadTooLarge"}', '']
--- no_error_log
[error]
buffered to a temporary file



=== TEST 19: precedence: method, path, token, headers, auth, topic, payload
--- config
location /3/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
}
--- request eval
["GET /3/nowhere",
"POST /3/nowhere/zz",
"POST /3/device/zz
not json",
"POST /3/device/$::T
not json",
"POST /3/device/$::T
not json",
"POST /3/device/$::T
not json",
"POST /3/device/$::T
not json"]
--- more_headers eval
["apns-priority: 7",
"apns-priority: 7",
"apns-priority: 7",
"apns-priority: 7\napns-topic: org.other",
"apns-topic: org.other",
TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: org.other"),
TimpushMock::expand_jwt("authorization: bearer {{jwt}}
apns-topic: com.example.chat")]
--- error_code eval
[405, 404, 400, 400, 403, 400, 400]
--- response_body eval
['{"reason":"MethodNotAllowed"}', '{"reason":"BadPath"}',
'{"reason":"BadDeviceToken"}', '{"reason":"BadPriority"}',
'{"reason":"MissingProviderToken"}', '{"reason":"DeviceTokenNotForTopic"}',
'{"reason":"PayloadEmpty"}']
--- no_error_log
[error]



=== TEST 20: a declared length over the limit is answered without reading the body
--- request eval
"POST /3/device/$::T
" . TimpushMock::payload(100000)
--- error_code: 413
--- response_body: {"reason":"PayloadTooLarge"}
--- no_error_log
[error]
