# Hostile bodies (DESIGN §10), sent while a 2,000-device push runs in the
# same worker: each answers 400 or 413 with a JSON error naming the
# problem, nothing is stored, the worker never dies (the runner checks the
# worker alive at the end is the one started), and the push in flight is
# delivered whole.  The first case is the one that crashed a worker: a
# '"' inside a comment hid 300,000 levels of brackets from the old depth
# check, and yajl's tree freed them by recursion.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;
use HTTP::Tiny;
use IO::Socket::INET;

master_on();
workers(1);

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', ($block->http_config // '')
                      . "timpush_apns_connections 2;\n"
                      . Timpush::Push::simulator(
                            extra => 'keepalive_requests 1000000;'));
    $block->set_value('config', <<'CONF');
location /v1/ { client_max_body_size 1m; timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
});

# one raw request on its own connection: (status, body)
sub Timpush::Push::raw {
    my ($req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                                  Timeout => 30) or die "connect: $!";
    local $SIG{PIPE} = 'IGNORE';
    print $s $req;
    local $/;
    my $res = <$s> // '';
    close $s;
    my ($status) = $res =~ m{^HTTP/1\.1 (\d+)};
    my ($body) = $res =~ m{\r\n\r\n(.*)\z}s;
    return ($status // 0, $body // '');
}

sub Timpush::Push::req {
    my ($method, $path, $body, @headers) = @_;
    return "$method $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           . join('', map { "$_\r\n" } @headers)
           . (defined $body ? "Content-Length: " . length($body) . "\r\n\r\n$body"
                            : "\r\n");
}

sub Timpush::Push::chunked {
    my ($method, $path, $body) = @_;
    return "$method $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           . "Transfer-Encoding: chunked\r\n\r\n"
           . join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) }
                      unpack('(a1000)*', $body))
           . "0\r\n\r\n";
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the crash reproduction and 27 other hostile requests, during a push: 400/413 each, nothing stored, the push whole
--- init
my $T = 'ab' x 32;
my $n = 2000;
Timpush::Push::clear_log();
Timpush::Push::register_many('hp', $n, 1001);
Timpush::Push::register('victim', $T, 1001);
my $push = Timpush::Push::push_async({
    to => [map { "hp$_" } 0 .. $n - 1],
    elems => [{ type => 'text', text => 'under attack' }] });

my $dev = "/v1/users/victim/devices/$T";
my $deep = '{"business_id":1001,"x": /*"*/ ' . ('[' x 300000)
           . (']' x 300000) . ' /*"*/ }';
my $deep_small = '{"business_id":1001,"x": /*"*/ ' . ('[' x 40)
                 . (']' x 40) . ' /*"*/ }';
my $flat = '{"business_id":1001,"x":[' . join(',', (1) x 470000) . ']}';
my $big = '{"business_id":1001,"x":"' . ('a' x 5000) . '"}';
my $push_deep = '{"to":"victim","x":' . ('[' x 300000) . (']' x 300000) . '}';
my $push_many = '{"to":[' . join(',', map { "\"u$_\"" } 0 .. 10000) . ']}';
my $push_elems = '{"to":"victim","elems":['
                 . join(',', ('{"type":"image"}') x 10001) . ']}';
my $msg = '{"to":"victim","elems":[{"type":"text","text":"x"}]}';

my $R = \&Timpush::Push::req;
my @cases = (
    # [ name, raw request, status, error code, message like ]
    [ 'the crash: 300,000 levels hidden by a comment, 600 KB',
      $R->('PUT', $dev, $deep), 413, 'body_too_large', qr/device body/ ],
    [ 'the same trick at 40 levels, under 4 KiB',
      $R->('PUT', $dev, $deep_small), 400, 'invalid_json', qr/comment/ ],
    [ 'the trick to logout', $R->('POST', '/v1/users/victim/logout',
      '{"token":"' . $T . '" /*"*/}'), 400, 'invalid_json',
      qr/a string left open/ ],
    [ 'the trick to background', $R->('POST', "$dev/background",
      '{"unread":1 /*"*/ }'), 400, 'invalid_json', qr/a string left open/ ],
    [ '300,000 levels to the push', $R->('POST', '/v1/push', $push_deep),
      400, 'invalid_json', qr/nested deeper than 32 levels/ ],
    [ '33 levels', $R->('PUT', $dev, '{"business_id":1001,"x":'
      . ('[' x 32) . (']' x 32) . '}'), 400, 'invalid_json',
      qr/nested deeper than 32 levels/ ],
    [ 'a 940 KB flat array to a device endpoint', $R->('PUT', $dev, $flat),
      413, 'body_too_large', qr/device body is at most 4096 bytes/ ],
    [ '5,000 bytes with Content-Length', $R->('PUT', $dev, $big),
      413, 'body_too_large', qr/4096/ ],
    [ '5,000 bytes chunked', Timpush::Push::chunked('PUT', $dev, $big),
      413, 'body_too_large', qr// ],
    [ 'logout of "<T>\u0000zz"', $R->('POST', '/v1/users/victim/logout',
      '{"token":"' . $T . '\u0000zz"}'), 400, 'invalid_json',
      qr/\\u0000 in a string/ ],
    [ 'a raw NUL byte', $R->('PUT', $dev, "{\"business_id\":1001}\0"),
      400, 'invalid_json', qr/NUL byte/ ],
    [ 'overlong UTF-8', $R->('PUT', $dev, "{\"business_id\":1001,\"x\":\"\xc0\xaf\"}"),
      400, 'invalid_json', qr/UTF-8/ ],
    [ 'a lone surrogate', $R->('PUT', $dev, '{"business_id":1001,"x":"\udc00"}'),
      400, 'invalid_json', qr/a low surrogate escape without a high one/ ],
    [ 'a high surrogate hiding \u0000', $R->('PUT', $dev,
      '{"business_id":1001,"x":"\ud800\u0000"}'), 400, 'invalid_json',
      qr/a high surrogate escape without a low one/ ],
    [ '\v as whitespace', $R->('PUT', $dev, "{\"business_id\":1001}\x0b"),
      400, 'invalid_json', qr/outside a string/ ],
    [ 'trailing garbage', $R->('PUT', $dev, '{"business_id":1001} x'),
      400, 'invalid_json', qr// ],
    [ 'two documents', $R->('PUT', $dev, '{"business_id":1001}{}'),
      400, 'invalid_json', qr// ],
    [ 'an array body', $R->('PUT', $dev, '[1001]'), 400, 'invalid_json',
      qr/must be a JSON object/ ],
    [ 'business_id as a string', $R->('PUT', $dev, '{"business_id":"1001"}'),
      400, 'invalid_field', qr/^business_id: / ],
    [ 'business_id 1e3', $R->('PUT', $dev, '{"business_id":1e3}'),
      400, 'invalid_field', qr/^business_id: / ],
    [ 'business_id of 30 digits', $R->('PUT', $dev,
      '{"business_id":' . ('9' x 30) . '}'), 400, 'invalid_field',
      qr/^business_id: / ],
    [ 'unread -1', $R->('POST', "$dev/background", '{"unread":-1}'),
      400, 'invalid_field', qr/^unread: / ],
    [ 'a 300-digit token to logout', $R->('POST', '/v1/users/victim/logout',
      '{"token":"' . ('a' x 300) . '"}'), 400, 'invalid_field', qr/^token: / ],
    [ 'a user id of 129 bytes', $R->('PUT', '/v1/users/' . ('u' x 129)
      . "/devices/$T", '{"business_id":1001}'), 400, 'invalid_field',
      qr/^user_id: / ],
    [ '10,001 recipients', $R->('POST', '/v1/push', $push_many), 400,
      'invalid_field', qr/^to: at most 10000 recipients/ ],
    [ '10,001 elements', $R->('POST', '/v1/push', $push_elems), 400,
      'invalid_field', qr/^elems: at most 10000 elements/ ],
    [ 'a web page: Origin, text/plain', $R->('POST', '/v1/push', $msg,
      'Origin: http://evil.example', 'Content-Type: text/plain'),
      403, 'forbidden', qr/Origin/ ],
    [ 'a web page logging the victim out', $R->('POST',
      '/v1/users/victim/logout', '', 'Origin: http://evil.example'),
      403, 'forbidden', qr/Origin/ ],
);

for my $c (@cases) {
    my ($name, $req, $status, $code, $like) = @$c;
    my ($got, $body) = Timpush::Push::raw($req);
    Test::More::is($got, $status, "$name: $status");
    my $json = eval { JSON::PP::decode_json($body) } // {};
    Test::More::is($json->{error}{code}, $code, "$name: $code");
    Test::More::like($json->{error}{message} // '', $like, "$name: message");
}

# nothing stored: the victim has its one device, as registered, badge 0
my ($status, $dev_list) = Timpush::Push::call('GET', '/v1/users/victim/devices');
Test::More::is(scalar @{$dev_list->{devices}}, 1, 'the victim still has its device');
Test::More::is($dev_list->{devices}[0]{badge}, 0, 'its badge untouched');

my ($pstatus, $res) = Timpush::Push::push_wait($push);
Test::More::is($pstatus, 200, 'the push in flight was answered');
Test::More::is($res->{sent}, $n, 'every device of it sent');
my $log = Timpush::Push::mock_log();
my %tokens = map { $_->{token} => 1 } @$log;
Test::More::is(scalar @$log, $n, "the simulator got $n");
Test::More::is(scalar keys %tokens, $n, 'each once');
--- request
GET /v1/users/victim/devices
--- response_body_like chomp
^\{"user_id":"victim","devices":\[\{"token":"(?:ab){32}","business_id":1001,"badge":0,"foreground":false,"registered_at":\d+\}\]\}$
--- timeout: 60
--- no_error_log
[error]
exited on signal
