# Not a suite: the fixture of t/runner.t, which runs it and expects the
# blocks marked FAIL to fail.  Each one plays a crash or a serious log
# line that the runner (t/lib/Test/Nginx/Foreground.pm) must not let pass.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;

master_on();
workers(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: PASS: a quiet block
--- config
location = /ok { return 200 "ok\n"; }
--- request
GET /ok
--- response_body
ok



=== TEST 2: FAIL: a worker dies under the master, which starts another
--- config
location = /ok { return 200 "ok\n"; }
--- init
my @w = Test::Nginx::Foreground::worker_pids();
kill 'SEGV', @w;
Time::HiRes::sleep(0.3);
--- request
GET /ok
--- response_body
ok



=== TEST 3: FAIL: nginx does not start, and the block ignores the response
--- config
location = /ok { no_such_directive; }
--- request
GET /ok
--- ignore_response



=== TEST 4: FAIL: an [alert] that the block does not name
--- config
location = /ok { return 200 "ok\n"; }
--- init
open my $fh, '>>', "$Test::Nginx::Foreground::ErrLogFile" or die;
print $fh "2026/01/01 00:00:00 [alert] 1#1: something went wrong\n";
close $fh;
--- request
GET /ok
--- response_body
ok



=== TEST 5: PASS: the same [alert], named by the block
--- config
location = /ok { return 200 "ok\n"; }
--- init
open my $fh, '>>', "$Test::Nginx::Foreground::ErrLogFile" or die;
print $fh "2026/01/01 00:00:00 [alert] 1#1: something went wrong\n";
close $fh;
--- request
GET /ok
--- response_body
ok
--- error_log
something went wrong



=== TEST 6: FAIL: a worker of an nginx the test started itself dies
--- config
location = /ok { return 200 "ok\n"; }
--- init
my $port = Timpush::Test::free_port();
my $h = Timpush::Push::start_nginx(master => 1, port => $port, http =>
    "server { listen 127.0.0.1:$port; location / { return 200; } }");
Time::HiRes::sleep(0.2);
for my $stat (glob '/proc/[0-9]*/stat') {
    open my $in, '<', $stat or next;
    my $line = <$in> // '';
    kill 'SEGV', $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $h->{pid};
}
Time::HiRes::sleep(0.3);
Timpush::Push::stop_nginx($h);
--- request
GET /ok
--- response_body
ok
