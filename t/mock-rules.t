# timpush_apns_mock_rule: injected failures for tokens with a prefix, always
# or the first N times (counted in shared memory), after the request checks
# and before acceptance.

use FindBin;
use lib "$FindBin::Bin/mock";
use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use TimpushMock;

our $T = $TimpushMock::TOKEN;

add_block_preprocessor(sub {
    my $block = shift;

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

=== TEST 1: a rule without times= fails every time; 410 carries a timestamp in ms
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
    timpush_apns_mock_rule dead 410 Unregistered;
}
--- request eval
[map { "POST /3/device/dead$::T
{\"aps\":{}}" } 1 .. 3]
--- error_code eval
[410, 410, 410]
--- response_body_like eval
[(qr/^\{"reason":"Unregistered","timestamp":(\d{13})\}$/) x 3]
--- response_headers_like eval
[("apns-id: [-0-9a-f]{36}") x 3]
--- no_error_log
[error]



=== TEST 2: the timestamp is now
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
    timpush_apns_mock_rule dead 410 Unregistered;
}
--- request eval
"POST /3/device/dead$::T
{\"aps\":{}}"
--- error_code: 410
--- response_body_like eval
my $s = int(time / 100);
qr/^\{"reason":"Unregistered","timestamp":(?:$s|@{[$s + 1]})\d{5}\}$/
--- no_error_log
[error]



=== TEST 3: times=2: the first two fail, the third is accepted; other tokens are not touched
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
    timpush_apns_mock_rule 5030 503 ServiceUnavailable times=2;
}
--- request eval
[(map { "POST /3/device/5030$::T
{\"aps\":{}}" } 1 .. 4), "POST /3/device/$::T
{\"aps\":{}}"]
--- error_code eval
[503, 503, 200, 200, 200]
--- response_body eval
['{"reason":"ServiceUnavailable"}', '{"reason":"ServiceUnavailable"}', '',
'', '']
--- no_error_log
[error]



=== TEST 4: rules in order, the first match wins; prefixes ignore case; a spent rule lets the next one act
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
    timpush_apns_mock_rule AB 429 TooManyRequests times=1;
    timpush_apns_mock_rule abab 500 InternalServerError;
    timpush_apns_mock_rule ab 410 ExpiredToken;
}
--- request eval
[(map { "POST /3/device/$::T
{\"aps\":{}}" } 1 .. 3), "POST /3/device/ac$::T
{\"aps\":{}}"]
--- error_code eval
[429, 500, 500, 200]
--- response_body eval
['{"reason":"TooManyRequests"}', '{"reason":"InternalServerError"}',
'{"reason":"InternalServerError"}', '']
--- no_error_log
[error]



=== TEST 5: rules come after the request checks: an invalid request gets its own reason, and uses no count
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
    timpush_apns_mock_rule dead 503 Shutdown times=1;
}
--- request eval
["POST /3/device/dead$::T
not json",
"POST /3/device/dead$::T
{\"aps\":{}}",
"POST /3/device/dead$::T
{\"aps\":{}}"]
--- more_headers eval
[TimpushMock::expand_jwt("authorization: bearer {{jwt}}\napns-topic: com.example.chat"),
 TimpushMock::expand_jwt("apns-topic: com.example.chat"),
 TimpushMock::expand_jwt("authorization: bearer {{jwt}}\napns-topic: com.example.chat")]
--- error_code eval
[400, 403, 503]
--- response_body eval
['{"reason":"PayloadEmpty"}', '{"reason":"MissingProviderToken"}',
'{"reason":"Shutdown"}']
--- no_error_log
[error]



=== TEST 6: rules at server level are inherited; an empty prefix matches every token
--- config
timpush_apns_mock_rule "" 500 InternalServerError times=1;
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
}
location /other/3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
    timpush_apns_mock_rule ab 400 BadDeviceToken;
}
--- request eval
["POST /3/device/0123456789abcdef
{\"aps\":{}}",
"POST /3/device/$::T
{\"aps\":{}}"]
--- error_code eval
[500, 200]
--- no_error_log
[error]



=== TEST 7: configuration: a token prefix that is not hexadecimal
--- config
location /3/device/ {
    timpush_apns_mock;
    timpush_apns_mock_rule xyz 410 Unregistered;
}
--- must_die
--- error_log
"timpush_apns_mock_rule": token prefix "xyz" is not hexadecimal



=== TEST 8: configuration: a status outside 400-599
--- config
location /3/device/ {
    timpush_apns_mock;
    timpush_apns_mock_rule ab 200 Fine;
}
--- must_die
--- error_log
"timpush_apns_mock_rule": status "200" is not between 400 and 599



=== TEST 9: configuration: a reason that is not one word
--- config
location /3/device/ {
    timpush_apns_mock;
    timpush_apns_mock_rule ab 410 "Un registered";
}
--- must_die
--- error_log
"timpush_apns_mock_rule": reason "Un registered" is not a word



=== TEST 10: configuration: times=0
--- config
location /3/device/ {
    timpush_apns_mock;
    timpush_apns_mock_rule ab 410 Unregistered times=0;
}
--- must_die
--- error_log
"timpush_apns_mock_rule": invalid parameter "times=0"
