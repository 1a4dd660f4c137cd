# setAPNS: register, list and remove devices; the kick rule; validation of
# the path and the body; wrong methods and paths; body limits.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: register a device (token stored lowercase), then list it
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/vinson/devices/AABBCCDDEEFF00112233445566778899
{\"business_id\":1001}",
"GET /v1/users/vinson/devices"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/^\{"user_id":"vinson","token":"aabbccddeeff00112233445566778899","business_id":1001,"kicked":\[\]\}\n\z/,
qr/^\{"user_id":"vinson","devices":\[\{"token":"aabbccddeeff00112233445566778899","business_id":1001,"badge":0,"foreground":false,"registered_at":1\d{12}\}\]\}\n\z/]
--- response_headers eval
["Content-Type: application/json", "Content-Type: application/json"]
--- no_error_log
[error]



=== TEST 2: registering again is idempotent: one device, nothing kicked
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u2/devices/00112233445566778899aabbccddeeff
{\"business_id\":1001}",
"PUT /v1/users/u2/devices/00112233445566778899AABBCCDDEEFF
{\"business_id\":1001}",
"GET /v1/users/u2/devices"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"kicked":\[\]/,
qr/^\{"user_id":"u2","devices":\[\{"token":"00112233445566778899aabbccddeeff",[^\]]*\}\]\}\n\z/]
--- no_error_log
[error]



=== TEST 3: a second device of the same app kicks the first (devices_per_app 1)
--- config
location /v1/ { timpush_api; }
--- init
my ($status) = Timpush::Test::api('PUT',
    '/v1/users/u3/devices/1111111111111111', '{"business_id":1001}');
Test::More::is($status, 200, 'the first device is registered');
--- request
PUT /v1/users/u3/devices/2222222222222222
{"business_id":1001}
--- error_code: 200
--- response_body
{"user_id":"u3","token":"2222222222222222","business_id":1001,"kicked":["1111111111111111"]}
--- error_log
timpush: user "u3" business_id 1001: device 111111...1111 kicked by the new device 222222...2222
--- no_error_log
[error]



=== TEST 3b: the kicked device is gone from the list
--- config
location /v1/ { timpush_api; }
--- init
for my $token ('1111111111111111', '2222222222222222') {
    my ($status) = Timpush::Test::api('PUT', "/v1/users/u3b/devices/$token",
                                      '{"business_id":1001}');
    Test::More::is($status, 200, "$token is registered");
}
--- request
GET /v1/users/u3b/devices
--- error_code: 200
--- response_body_like
^\{"user_id":"u3b","devices":\[\{"token":"2222222222222222","business_id":1001,"badge":0,"foreground":false,"registered_at":\d+\}\]\}$
--- no_error_log
[error]



=== TEST 4: devices of different apps do not kick each other
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u4/devices/1111111111111111
{\"business_id\":1001}",
"PUT /v1/users/u4/devices/2222222222222222
{\"business_id\":2001}",
"GET /v1/users/u4/devices"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"kicked":\[\]/,
qr/"devices":\[\{"token":"1111111111111111","business_id":1001,.*\},\{"token":"2222222222222222","business_id":2001,.*\}\]\}/]
--- no_error_log
[error]



=== TEST 5: timpush_devices_per_app 2 keeps two, the third kicks the oldest
--- http_config
timpush_devices_per_app 2;
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u5/devices/1111111111111111
{\"business_id\":1001}",
"PUT /v1/users/u5/devices/2222222222222222
{\"business_id\":1001}",
"PUT /v1/users/u5/devices/3333333333333333
{\"business_id\":1001}",
"GET /v1/users/u5/devices"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"kicked":\[\]/,
qr/"token":"3333333333333333","business_id":1001,"kicked":\["1111111111111111"\]/,
qr/"devices":\[\{"token":"2222222222222222".*\},\{"token":"3333333333333333".*\}\]\}/]
--- no_error_log
[error]



=== TEST 6: a token moving to another app is re-registered, not duplicated
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u6/devices/1111111111111111
{\"business_id\":1001}",
"PUT /v1/users/u6/devices/1111111111111111
{\"business_id\":1002}",
"GET /v1/users/u6/devices"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"business_id":1002,"kicked":\[\]/,
qr/^\{"user_id":"u6","devices":\[\{"token":"1111111111111111","business_id":1002,[^\]]*\}\]\}\n\z/]
--- no_error_log
[error]



=== TEST 7: DELETE (setAPNS nil) removes the device, a second DELETE finds nothing
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u7/devices/1111111111111111
{\"business_id\":1001}",
"DELETE /v1/users/u7/devices/1111111111111111",
"DELETE /v1/users/u7/devices/1111111111111111",
"GET /v1/users/u7/devices"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/^\{"removed":true\}$/, qr/^\{"removed":false\}$/,
qr/^\{"user_id":"u7","devices":\[\]\}$/]
--- no_error_log
[error]



=== TEST 8: the user id is percent-decoded: %2F is part of it, UTF-8 is kept
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/team%2Fa%20b%E5%BC%A0/devices/1111111111111111
{\"business_id\":1001}",
"GET /v1/users/team%2Fa%20b%E5%BC%A0/devices"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/^\{"user_id":"team\/a b\x{e5}\x{bc}\x{a0}","token"/,
qr/^\{"user_id":"team\/a b\x{e5}\x{bc}\x{a0}","devices":\[\{"token":"1111111111111111"/]
--- no_error_log
[error]



=== TEST 9: a user id of 128 bytes is fine, 129 is not
--- config
location /v1/ { timpush_api; }
--- request eval
["GET /v1/users/" . ("a" x 128) . "/devices",
"GET /v1/users/" . ("a" x 129) . "/devices"]
--- error_code eval
[200, 400]
--- response_body eval
["{\"user_id\":\"" . ("a" x 128) . "\",\"devices\":[]}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"user_id: must be 1 to 128 bytes\"}}\n"]
--- no_error_log
[error]



=== TEST 10: user ids with control characters or bad UTF-8 (nginx itself refuses bad escapes)
--- config
location /v1/ { timpush_api; }
--- request eval
["GET /v1/users/a%01b/devices",
"GET /v1/users/a%7Fb/devices",
"GET /v1/users/a%C2%85b/devices",
"GET /v1/users/a%FFb/devices",
"GET /v1/users/a%ED%A0%80/devices"]
--- error_code eval
[400, 400, 400, 400, 400]
--- response_body eval
["{\"error\":{\"code\":\"invalid_field\",\"message\":\"user_id: must be UTF-8 without control characters\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"user_id: must be UTF-8 without control characters\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"user_id: must be UTF-8 without control characters\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"user_id: must be UTF-8 without control characters\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"user_id: must be UTF-8 without control characters\"}}\n"]
--- no_error_log
[error]



=== TEST 11: tokens: odd length, too short, too long, not hex
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u11/devices/11111111111111111
{\"business_id\":1001}",
"PUT /v1/users/u11/devices/11111111111111
{\"business_id\":1001}",
"PUT /v1/users/u11/devices/" . ("ab" x 101) . "
{\"business_id\":1001}",
"PUT /v1/users/u11/devices/111111111111111g
{\"business_id\":1001}",
"PUT /v1/users/u11/devices/" . ("ab" x 100) . "
{\"business_id\":1001}"]
--- error_code eval
[400, 400, 400, 400, 200]
--- response_body_like eval
[qr/^\{"error":\{"code":"invalid_field","message":"token: must be an even number of hex digits, 16 to 200"\}\}$/,
qr/^\{"error":\{"code":"invalid_field","message":"token: must be an even number of hex digits, 16 to 200"\}\}$/,
qr/^\{"error":\{"code":"invalid_field","message":"token: must be an even number of hex digits, 16 to 200"\}\}$/,
qr/^\{"error":\{"code":"invalid_field","message":"token: must be hex digits only"\}\}$/,
qr/"kicked":\[\]/]
--- no_error_log
[error]



=== TEST 12: the registration body: missing, wrong type, out of range, unknown
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u12/devices/1111111111111111",
"PUT /v1/users/u12/devices/1111111111111111
{\"business_id\":\"1001\"}",
"PUT /v1/users/u12/devices/1111111111111111
{\"business_id\":1001.5}",
"PUT /v1/users/u12/devices/1111111111111111
{\"business_id\":0}",
"PUT /v1/users/u12/devices/1111111111111111
{\"business_id\":4294967296}",
"PUT /v1/users/u12/devices/1111111111111111
{\"business_id\":9999}",
"PUT /v1/users/u12/devices/1111111111111111
{\"business_id\":1001,\"extra\":[1,2,{}]}"]
--- error_code eval
[400, 400, 400, 400, 400, 400, 200]
--- response_body eval
["{\"error\":{\"code\":\"invalid_field\",\"message\":\"business_id: is required\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"business_id: must be an integer from 1 to 4294967295\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"business_id: must be an integer from 1 to 4294967295\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"business_id: must be an integer from 1 to 4294967295\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"business_id: must be an integer from 1 to 4294967295\"}}\n",
"{\"error\":{\"code\":\"unknown_business_id\",\"message\":\"business_id: 9999 is not a configured credential\"}}\n",
"{\"user_id\":\"u12\",\"token\":\"1111111111111111\",\"business_id\":1001,\"kicked\":[]}\n"]
--- no_error_log
[error]



=== TEST 13: invalid JSON: syntax, not an object, bad UTF-8, a NUL byte
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u13/devices/1111111111111111
{\"business_id\":1001",
"PUT /v1/users/u13/devices/1111111111111111
[1001]",
"PUT /v1/users/u13/devices/1111111111111111
{\"business_id\":1001,\"x\":\"\xff\xfe\"}",
"PUT /v1/users/u13/devices/1111111111111111
{\"business_id\":1001}\0"]
--- error_code eval
[400, 400, 400, 400]
--- response_body eval
["{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body is not valid JSON: parse error: premature EOF\"}}\n",
"{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body must be a JSON object\"}}\n",
"{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body is not valid JSON: lexical error: invalid bytes in UTF8 string.\"}}\n",
"{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body is not valid JSON: NUL byte in the body\"}}\n"]
--- no_error_log
[error]



=== TEST 13b: JSON nested deeper than 32 levels is refused by the parser itself (brackets in strings and comments do not hide any)
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u13b/devices/1111111111111111
" . ("[" x 4000),
"PUT /v1/users/u13b/devices/1111111111111111
{\"business_id\":1001,\"x\":" . ("[" x 32) . ("]" x 32) . "}",
"PUT /v1/users/u13b/devices/1111111111111111
{\"business_id\":1001,\"x\": /*\"*/ " . ("[" x 40) . ("]" x 40) . " /*\"*/ }",
"PUT /v1/users/u13b/devices/1111111111111111
" . ("[" x 200000),
"PUT /v1/users/u13b/devices/1111111111111111
{\"business_id\":1001,\"x\":\"" . ("[\\\"" x 100) . "\"}"]
--- error_code eval
[400, 400, 400, 413, 200]
--- response_body eval
["{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body is not valid JSON: nested deeper than 32 levels\"}}\n",
"{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body is not valid JSON: nested deeper than 32 levels\"}}\n",
"{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body is not valid JSON: lexical error: probable comment found in input text, comments are not enabled.\"}}\n",
"{\"error\":{\"code\":\"body_too_large\",\"message\":\"a device body is at most 4096 bytes\"}}\n",
"{\"user_id\":\"u13b\",\"token\":\"1111111111111111\",\"business_id\":1001,\"kicked\":[]}\n"]
--- no_error_log
[error]



=== TEST 14: a body over client_max_body_size: 413 body_too_large, as JSON
--- config
location /v1/ {
    client_max_body_size 100;
    timpush_api;
}
--- request eval
"PUT /v1/users/u14/devices/1111111111111111
{\"business_id\":1001,\"pad\":\"" . ("x" x 200) . "\"}"
--- error_code: 413
--- response_body
{"error":{"code":"body_too_large","message":"the body is larger than client_max_body_size"}}
--- response_headers
Content-Type: application/json
--- error_log
client intended to send too large body



=== TEST 15: a chunked body over client_max_body_size: 413 body_too_large
--- config
location /v1/ {
    client_max_body_size 100;
    timpush_api;
}
--- raw_request eval
"PUT /v1/users/u15/devices/1111111111111111 HTTP/1.1\r
Host: localhost\r
Connection: close\r
Transfer-Encoding: chunked\r
\r
c8\r
" . ("x" x 200) . "\r
0\r
\r
"
--- error_code: 413
--- response_body
{"error":{"code":"body_too_large","message":"the body is larger than client_max_body_size"}}
--- error_log
client intended to send too large chunked body



=== TEST 16: a chunked body within the limit is read
--- config
location /v1/ { timpush_api; }
--- raw_request eval
"PUT /v1/users/u16/devices/1111111111111111 HTTP/1.1\r
Host: localhost\r
Connection: close\r
Transfer-Encoding: chunked\r
\r
5\r
{\"bus\r
f\r
iness_id\":1001}\r
0\r
\r
"
--- error_code: 200
--- response_body
{"user_id":"u16","token":"1111111111111111","business_id":1001,"kicked":[]}
--- no_error_log
[error]



=== TEST 17: wrong methods get 405 method_not_allowed with Allow
--- config
location /v1/ { timpush_api; }
--- request eval
["POST /v1/users/u17/devices/1111111111111111
{}",
"PUT /v1/users/u17/devices
{}",
"GET /v1/users/u17/logout",
"GET /v1/users/u17/devices/1111111111111111/background",
"DELETE /v1/users/u17/devices/1111111111111111/foreground"]
--- error_code eval
[405, 405, 405, 405, 405]
--- response_body eval
["{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"method POST is not allowed here; allowed: PUT, DELETE\"}}\n",
"{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"method PUT is not allowed here; allowed: GET, HEAD\"}}\n",
"{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"method GET is not allowed here; allowed: POST\"}}\n",
"{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"method GET is not allowed here; allowed: POST\"}}\n",
"{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"method DELETE is not allowed here; allowed: POST\"}}\n"]
--- no_error_log
[error]



=== TEST 18: the Allow header
--- config
location /v1/ { timpush_api; }
--- request
PATCH /v1/users/u18/devices/1111111111111111
--- error_code: 405
--- response_headers
Allow: PUT, DELETE
Content-Type: application/json
--- response_body
{"error":{"code":"method_not_allowed","message":"method PATCH is not allowed here; allowed: PUT, DELETE"}}
--- no_error_log
[error]



=== TEST 19: unknown paths get 404 not_found
--- config
location /v1/ { timpush_api; }
--- request eval
["GET /v1/nothing",
"GET /v1/users",
"GET /v1/users/u19",
"GET /v1/users/u19/devicez",
"GET /v1/users//devices",
"GET /v1/users/u19/devices/",
"POST /v1/users/u19/devices/1111111111111111/sideways",
"GET /v1/users/u19/devices/1111111111111111/background/x"]
--- error_code eval
[404, 404, 404, 404, 404, 404, 404, 404]
--- response_body_like eval
[qr/^\{"error":\{"code":"not_found","message":"no such endpoint: \/v1\/nothing"\}\}$/,
qr/"not_found"/, qr/"not_found"/, qr/"not_found"/, qr/"not_found"/,
qr/"not_found"/, qr/"not_found"/, qr/"not_found"/]
--- no_error_log
[error]



=== TEST 20: the query string is not part of the path
--- config
location /v1/ { timpush_api; }
--- request
GET /v1/users/u20/devices?x=1
--- error_code: 200
--- response_body
{"user_id":"u20","devices":[]}
--- no_error_log
[error]



=== TEST 21: registering a device again keeps its badge (only a new device starts at 0)
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/u21/devices/1111111111111111
{\"business_id\":1001}",
"POST /v1/users/u21/devices/1111111111111111/background
{\"unread\":3}",
"PUT /v1/users/u21/devices/1111111111111111
{\"business_id\":1001}",
"GET /v1/users/u21/devices"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"badge":3/, qr/"kicked":\[\]/,
qr/^\{"user_id":"u21","devices":\[\{"token":"1111111111111111","business_id":1001,"badge":3,"foreground":false,"registered_at":\d+\}\]\}$/]
--- no_error_log
[error]



=== TEST 22: a chunked device body over 4 KiB: 413 body_too_large, whatever client_max_body_size says
--- config
location /v1/ { timpush_api; }
--- raw_request eval
"PUT /v1/users/u22/devices/1111111111111111 HTTP/1.1\r
Host: localhost\r
Connection: close\r
Transfer-Encoding: chunked\r
\r
1001\r
{\"business_id\":1001,\"pad\":\"" . ("x" x 4068) . "\"}\r
0\r
\r
"
--- error_code: 413
--- response_body
{"error":{"code":"body_too_large","message":"a device body is at most 4096 bytes"}}



=== TEST 23: a request from a web page (Origin) is refused 403 forbidden, unless allow_origin= lists that origin
--- config
location /v1/ { timpush_api allow_origin=https://console.example.com; }
--- request eval
["GET /v1/users/u23/devices", "GET /v1/users/u23/devices",
"GET /v1/users/u23/devices"]
--- more_headers eval
["Origin: https://evil.example.com", "Origin: https://console.example.com", ""]
--- error_code eval
[403, 200, 200]
--- response_headers eval
["!Access-Control-Allow-Origin",
"Access-Control-Allow-Origin: https://console.example.com\nVary: Origin",
"!Access-Control-Allow-Origin"]
--- response_body eval
["{\"error\":{\"code\":\"forbidden\",\"message\":\"requests from web pages are refused (Origin header); the API is for backends, see timpush_api allow_origin=\"}}\n",
"{\"user_id\":\"u23\",\"devices\":[]}\n", "{\"user_id\":\"u23\",\"devices\":[]}\n"]
--- no_error_log
[error]
