# The simulator with two workers: a rule's times= count and the log are
# shared, whichever worker takes a connection.

use FindBin;
use lib "$FindBin::Bin/mock";
use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use TimpushMock;

our $T = $TimpushMock::TOKEN;

master_on();
workers(2);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 40 connections at once, times=5: five failures in all, 35 entries
--- config
location /3/device/ {
    timpush_apns_mock key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                      key_id=ABC123DEFG team_id=TEAM123456
                      topic=com.example.chat;
    timpush_apns_mock_rule 5030 503 ServiceUnavailable times=5;
}
location = /log { timpush_apns_mock_log; }
--- init
my $jwt = TimpushMock::jwt();
my $port = $ENV{TEST_NGINX_SERVER_PORT};
my @cmd = ('curl', '-s', '--http1.1', '--parallel', '--parallel-max', '40',
           '--max-time', '60', '-o', '/dev/null', '-w', ' %{http_code} ',
           '-H', "authorization: bearer $jwt",
           '-H', 'apns-topic: com.example.chat', '-d', '{"aps":{}}',
           map { "http://127.0.0.1:$port/3/device/5030$::T" } 1 .. 40);
open(my $out, '-|', @cmd) or die "curl: $!";
my @codes = split ' ', do { local $/; <$out> };
close $out;
Test::More::is(scalar(grep { $_ eq '503' } @codes), 5, 'five 503');
Test::More::is(scalar(grep { $_ eq '200' } @codes), 35, 'thirty-five 200');
for (1 .. 4) {
    Test::More::is(scalar @{ TimpushMock::log_get()->{notifications} }, 35,
                   "GET $_: 35 entries");
}
--- request
GET /log?token=0011223344556677
--- response_body
{"notifications":[]}
--- no_error_log
[error]
