#!/usr/bin/perl
# How fast Timpush::H2Peer answers with the gateway as its client: one
# POST /v1/push to 10,000 users (one device each) through a gateway (its
# own nginx, one worker, timpush_apns_connections 2, token auth) whose APNs
# is the peer, in mode normal and in mode settings_flap; 5% of the tokens
# are answered 410 in both (in settings_flap each such answer is followed
# by SETTINGS MAX_CONCURRENT_STREAMS=1, each 200 by 1000).  Not a
# test of the gateway (bench/ measures that): it says whether the peer is
# fast enough for suites that push thousands of notifications through it.
#
#   t/run.sh -v t/h2peer/bench.pl          (run.sh starts Redis, sets the
#                                           TEST_NGINX_* variables)
#   H2PEER_BENCH_N=20000 H2PEER_BENCH_ROUNDS=5 t/run.sh -v t/h2peer/bench.pl

use strict;
use warnings;

use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Test::More;
use Time::HiRes ();
use Timpush::H2Peer;
use Timpush::Push;
use Timpush::Test qw(free_port);

my $n = $ENV{H2PEER_BENCH_N} || 10000;
my $rounds = $ENV{H2PEER_BENCH_ROUNDS} || 3;
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my $apns = free_port();
my $gw = free_port();

my $nginx = Timpush::Push::start_nginx(port => $gw, http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=h2bench$$ timeout=30s;
    upstream h2peer { server 127.0.0.1:$apns; }
    timpush_apns_upstream sandbox h2peer;
    timpush_apns_upstream production h2peer;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_connections 2;
    timpush_apns_timeout 60s;
    timpush_max_recipients $n;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    server {
        listen 127.0.0.1:$gw;
        location /v1/ { client_max_body_size 10m; timpush_api; }
    }");

my $dead = int($n / 20);
my @users = map { "b$_" } 0 .. $n - 1;
my $body = JSON::PP::encode_json(
    { to => \@users, elems => [{ type => 'text', text => 'bench' }] });
my $http = HTTP::Tiny->new(timeout => 120);
Timpush::Push::register_many('b', $n - $dead, 2001, $gw);

for my $mode ('normal', 'settings_flap') {
    my $peer = Timpush::H2Peer::start(port => $apns, mode => $mode,
        reject => { dead => '410 Unregistered' });

    # The first notification waits for the connections: made on demand,
    # and after the previous peer's end only once the backoff has passed.
    # A push to one user first, untimed, brings them up.
    my ($warm) = Timpush::Push::push_message(
        { to => 'b0', elems => [{ type => 'text', text => 'warm-up' }] }, $gw);
    is($warm, 200, "$mode: warm-up push");

    my @rates;
    for my $round (1 .. $rounds) {
        # the 410 ones are removed by each push: registered again
        register_dead($n - $dead, $n - 1);
        my $peer_cpu = cpu(sub { $_[1] == $peer->{pid} });
        my $gw_cpu = cpu(sub { $_[0] == $nginx->{pid} });
        # timed until the answer is in: decoding it (JSON::PP, 1.5 MB) is
        # no part of the push
        my $t0 = Time::HiRes::time();
        my $answer = $http->post("http://127.0.0.1:$gw/v1/push",
                                 { content => $body });
        my $took = Time::HiRes::time() - $t0;
        $peer_cpu = cpu(sub { $_[1] == $peer->{pid} }) - $peer_cpu;
        $gw_cpu = cpu(sub { $_[0] == $nginx->{pid} }) - $gw_cpu;
        my $res = JSON::PP::decode_json($answer->{content});

        is($answer->{status}, 200, "$mode round $round: answered");
        is($res->{sent}, $n - $dead, "$mode round $round: sent");
        is($res->{failed}, $dead, "$mode round $round: the 410s failed");
        push @rates, $n / $took;
        diag(sprintf '%s round %d: %d notifications in %.2f s: %.0f/s; '
                     . 'CPU: the peer %.2f s (%.0f us a notification), '
                     . 'the gateway %.2f s',
                     $mode, $round, $n, $took, $n / $took, $peer_cpu,
                     $peer_cpu / $n * 1e6, $gw_cpu);
    }

    Timpush::H2Peer::stop($peer);
    my @sorted = sort { $a <=> $b } @rates;
    diag(sprintf '%s: median %.0f notifications/s over %d rounds',
                 $mode, $sorted[$#sorted / 2], $rounds);
}

Timpush::Push::stop_nginx($nginx);
done_testing();

# CPU seconds used so far by the processes $which->(pid, parent pid) picks,
# from /proc: figures the other loads of a shared machine change less than
# the rate
sub cpu {
    my ($which) = @_;
    my $ticks = 0;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        my ($pid) = $line =~ /^(\d+)/;
        # the fields after "(comm)": state ppid ... utime stime (14th, 15th)
        my @f = split ' ', substr $line, rindex($line, ')') + 2;
        $ticks += $f[11] + $f[12] if $which->($pid, $f[1]);
    }
    return $ticks / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

# users b<first>..b<last> get a token starting with "dead": pipelined on
# one connection (one request at a time waits for delayed ACKs)
sub register_dead {
    my ($first, $last) = @_;
    my $body = '{"business_id":2001}';
    my $out = '';
    for my $i ($first .. $last) {
        $out .= "PUT /v1/users/b$i/devices/" . sprintf('dead%060x', $i)
                . " HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                . length($body) . ($i == $last ? "\r\nConnection: close" : '')
                . "\r\n\r\n$body";
    }
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$gw", Timeout => 10)
        or die "connect: $!";
    print $s $out;
    local $/;
    my $in = <$s>;
    my $ok = () = $in =~ m{^HTTP/1\.1 200 }mg;
    die "register_dead: $ok of " . ($last - $first + 1) . " registered"
        unless $ok == $last - $first + 1;
}
