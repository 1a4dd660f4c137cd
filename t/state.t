# The app's state: background (badge base), foreground, proactive logout.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: background sets the badge base and turns pushes on
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/s1/devices/1111111111111111
{\"business_id\":1001}",
"POST /v1/users/s1/devices/1111111111111111/background
{\"unread\":5}",
"GET /v1/users/s1/devices"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/,
qr/^\{"user_id":"s1","token":"1111111111111111","badge":5,"foreground":false\}$/,
qr/^\{"user_id":"s1","devices":\[\{"token":"1111111111111111","business_id":1001,"badge":5,"foreground":false,"registered_at":\d+\}\]\}$/]
--- no_error_log
[error]



=== TEST 2: foreground marks the device, the next background clears it
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/s2/devices/1111111111111111
{\"business_id\":1001}",
"POST /v1/users/s2/devices/1111111111111111/foreground",
"GET /v1/users/s2/devices",
"POST /v1/users/s2/devices/1111111111111111/background
{\"unread\":0}",
"GET /v1/users/s2/devices"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/,
qr/^\{"user_id":"s2","token":"1111111111111111","foreground":true\}$/,
qr/"badge":0,"foreground":true,/,
qr/^\{"user_id":"s2","token":"1111111111111111","badge":0,"foreground":false\}$/,
qr/"badge":0,"foreground":false,/]
--- no_error_log
[error]



=== TEST 3: background and foreground of a device that is not registered
--- config
location /v1/ { timpush_api; }
--- request eval
["POST /v1/users/s3/devices/1111111111111111/background
{\"unread\":1}",
"POST /v1/users/s3/devices/1111111111111111/foreground"]
--- error_code eval
[404, 404]
--- response_body eval
["{\"error\":{\"code\":\"not_found\",\"message\":\"token: not registered for this user_id\"}}\n",
"{\"error\":{\"code\":\"not_found\",\"message\":\"token: not registered for this user_id\"}}\n"]
--- no_error_log
[error]



=== TEST 4: the unread count: required, an integer from 0 to 99999
--- config
location /v1/ { timpush_api; }
--- request eval
["POST /v1/users/s4/devices/1111111111111111/background",
"POST /v1/users/s4/devices/1111111111111111/background
{\"unread\":-1}",
"POST /v1/users/s4/devices/1111111111111111/background
{\"unread\":100000}",
"POST /v1/users/s4/devices/1111111111111111/background
{\"unread\":\"5\"}",
"POST /v1/users/s4/devices/1111111111111111/background
{\"unread\":true}",
"POST /v1/users/s4/devices/1111111111111111/background
unread=5"]
--- error_code eval
[400, 400, 400, 400, 400, 400]
--- response_body eval
["{\"error\":{\"code\":\"invalid_field\",\"message\":\"unread: is required\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"unread: must be an integer from 0 to 99999\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"unread: must be an integer from 0 to 99999\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"unread: must be an integer from 0 to 99999\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"unread: must be an integer from 0 to 99999\"}}\n",
"{\"error\":{\"code\":\"invalid_json\",\"message\":\"the body is not valid JSON: lexical error: invalid char in json text.\"}}\n"]
--- no_error_log
[error]



=== TEST 5: the badge base is kept per device
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/s5/devices/1111111111111111
{\"business_id\":1001}",
"PUT /v1/users/s5/devices/2222222222222222
{\"business_id\":2001}",
"POST /v1/users/s5/devices/2222222222222222/background
{\"unread\":99999}",
"GET /v1/users/s5/devices"]
--- error_code eval
[200, 200, 200, 200]
--- response_body_like eval
[qr/kicked/, qr/kicked/, qr/"badge":99999/,
qr/"token":"1111111111111111","business_id":1001,"badge":0,.*"token":"2222222222222222","business_id":2001,"badge":99999,/]
--- no_error_log
[error]



=== TEST 6: logout removes every device of the user
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/s6/devices/1111111111111111
{\"business_id\":1001}",
"PUT /v1/users/s6/devices/2222222222222222
{\"business_id\":2001}",
"POST /v1/users/s6/logout",
"GET /v1/users/s6/devices",
"POST /v1/users/s6/logout"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[qr/kicked/, qr/kicked/, qr/^\{"removed":2\}$/,
qr/^\{"user_id":"s6","devices":\[\]\}$/, qr/^\{"removed":0\}$/]
--- no_error_log
[error]



=== TEST 7: logout of one token keeps the others
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/s7/devices/1111111111111111
{\"business_id\":1001}",
"PUT /v1/users/s7/devices/2222222222222222
{\"business_id\":2001}",
"POST /v1/users/s7/logout
{\"token\":\"2222222222222222\"}",
"GET /v1/users/s7/devices",
"POST /v1/users/s7/logout
{\"token\":\"2222222222222222\"}"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[qr/kicked/, qr/kicked/, qr/^\{"removed":1\}$/,
qr/^\{"user_id":"s7","devices":\[\{"token":"1111111111111111",[^\]]*\}\]\}$/,
qr/^\{"removed":0\}$/]
--- no_error_log
[error]



=== TEST 8: logout with a bad token field
--- config
location /v1/ { timpush_api; }
--- request eval
["POST /v1/users/s8/logout
{\"token\":12}",
"POST /v1/users/s8/logout
{\"token\":\"xyz\"}",
"POST /v1/users/s8/logout
{\"token\":null}"]
--- error_code eval
[400, 400, 200]
--- response_body eval
["{\"error\":{\"code\":\"invalid_field\",\"message\":\"token: must be a string\"}}\n",
"{\"error\":{\"code\":\"invalid_field\",\"message\":\"token: must be an even number of hex digits, 16 to 200\"}}\n",
"{\"removed\":0}\n"]
--- no_error_log
[error]



=== TEST 9: a kicked device keeps no state behind (its badge is gone too)
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/s9/devices/1111111111111111
{\"business_id\":1001}",
"POST /v1/users/s9/devices/1111111111111111/background
{\"unread\":7}",
"PUT /v1/users/s9/devices/2222222222222222
{\"business_id\":1001}",
"POST /v1/users/s9/devices/1111111111111111/foreground",
"PUT /v1/users/s9/devices/1111111111111111
{\"business_id\":1001}",
"GET /v1/users/s9/devices"]
--- error_code eval
[200, 200, 200, 404, 200, 200]
--- response_body_like eval
[qr/kicked/, qr/"badge":7/, qr/"kicked":\["1111111111111111"\]/,
qr/not_found/, qr/"kicked":\["2222222222222222"\]/,
qr/^\{"user_id":"s9","devices":\[\{"token":"1111111111111111","business_id":1001,"badge":0,"foreground":false,/]
--- no_error_log
[error]



=== TEST 10: a device kicked in the foreground and registered again starts with pushes on (no state kept behind)
--- config
location /v1/ { timpush_api; }
--- request eval
["PUT /v1/users/s10/devices/1111111111111111
{\"business_id\":1001}",
"POST /v1/users/s10/devices/1111111111111111/foreground",
"PUT /v1/users/s10/devices/2222222222222222
{\"business_id\":1001}",
"PUT /v1/users/s10/devices/1111111111111111
{\"business_id\":1001}",
"GET /v1/users/s10/devices"]
--- error_code eval
[200, 200, 200, 200, 200]
--- response_body_like eval
[qr/"kicked":\[\]/, qr/"foreground":true/,
qr/"kicked":\["1111111111111111"\]/, qr/"kicked":\["2222222222222222"\]/,
qr/^\{"user_id":"s10","devices":\[\{"token":"1111111111111111","business_id":1001,"badge":0,"foreground":false,"registered_at":\d+\}\]\}$/]
--- no_error_log
[error]
