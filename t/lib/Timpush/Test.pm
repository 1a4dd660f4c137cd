package Timpush::Test;

# What every timpush suite shares, on top of Test::Nginx::Socket (ours in
# t/lib, or OpenResty's when its lib comes first in PERL5LIB):
#  - main_config gets "load_module" lines for the gateway and the APNs
#    simulator ($TEST_NGINX_MODULE, $TEST_NGINX_MOCK_MODULE);
#  - http_config gets a timpush_redis line with a prefix of its own for each
#    block (so blocks never see each other's data) and the test credentials,
#    unless the block writes its own (a comment naming the directive is
#    enough to opt out);
#  - helpers for the perl code in "--- init" sections.

use strict;
use warnings;

use Test::Nginx::Socket ();
use IO::Socket::INET;
use HTTP::Tiny;
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(free_port api start_redis stop_redis redis_cmd);

# the key prefix of the block running (the Redis keys it writes)
our $prefix;

my $seq = 0;

# the ports free_port() handed out
my %handed_out;

# the port of the APNs simulator a block may run (see t/push*.t)
$ENV{TEST_NGINX_APNS_PORT} ||= free_port();

sub import {
    my ($class, @names) = @_;
    my $caller = caller;

    no strict 'refs';
    for my $n (@names) {
        *{"${caller}::$n"} = \&{"Timpush::Test::$n"};
    }
}

sub env {
    my $name = shift;
    my $v = $ENV{$name};
    die "Timpush::Test: environment variable $name is not set (run the "
        . "suites with t/run.sh or make test)\n" unless defined $v;
    return $v;
}

Test::Nginx::Socket::add_block_preprocessor(sub {
    my $block = shift;
    my $module = env('TEST_NGINX_MODULE');
    my $mock = env('TEST_NGINX_MOCK_MODULE');
    my $certs = env('TEST_NGINX_CERT_DIR');
    my $redis = env('TEST_NGINX_REDIS_PORT');

    my $main = $block->main_config // '';
    $block->set_value('main_config',
                      "load_module $module;\nload_module $mock;\n$main");

    my $http = $block->http_config // '';
    my $prefix = sprintf 't%d_%d_%d', $$, int(time * 1000) % 100000000,
                         ++$seq;
    my $head = '';

    # valgrind makes everything ~50 times slower: the deadlines of blocks
    # that do not test deadlines grow accordingly
    my $slow = $ENV{TEST_NGINX_USE_VALGRIND};

    $Timpush::Test::prefix = undef;

    if ($http !~ /timpush_redis/) {
        $Timpush::Test::prefix = $prefix;
        $head .= "timpush_redis 127.0.0.1:$redis prefix=$prefix timeout="
                 . ($slow ? '30s' : '2s') . ";\n";
    }

    if ($slow && $http !~ /timpush_apns_timeout/) {
        $head .= "timpush_apns_timeout 60s;\n";
    }

    # APNs: the simulator of the block (if it has one) on TEST_NGINX_APNS_PORT
    if ($http !~ /timpush_apns_upstream/) {
        my $apns = env('TEST_NGINX_APNS_PORT');
        $head .= <<"CONF";
upstream timpush_test_apns { server 127.0.0.1:$apns; }
timpush_apns_upstream sandbox timpush_test_apns;
timpush_apns_upstream production timpush_test_apns;
CONF
    }

    if ($http !~ /timpush_apns_trusted_certificate/) {
        $head .= "timpush_apns_trusted_certificate $certs/ca.crt;\n";
    }

    if ($http !~ /timpush_credential/) {
        $head .= <<"CONF";
timpush_credential 1001 certificate=$certs/dev.p12
                        password_file=$certs/dev.pass env=sandbox;
timpush_credential 1002 certificate=$certs/prod.p12
                        password_file=$certs/prod.pass env=production;
timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                        team_id=TEAM123456 topic=com.example.chat
                        env=production;
CONF
    }

    $block->set_value('http_config', $head . $http);
});

# A TCP port nobody listens on now, below the ephemeral range, so that no
# outgoing connection can take it as its local port in the meantime.  Never
# one this process handed out already, nor the port of the nginx under test
# (t/run.sh chose it, but nginx listens on it only while a block runs).
sub free_port {
    my $lo = 32768;
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        ($lo) = split ' ', scalar <$fh>;
    }
    for (1 .. 1000) {
        my $port = 10000 + int rand($lo - 10000);
        next if $handed_out{$port}
                || $port == ($ENV{TEST_NGINX_SERVER_PORT} // 0);
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $port, Listen => 1,
                                      ReuseAddr => 1) or next;
        close $s;
        $handed_out{$port} = 1;
        return $port;
    }
    die "free_port: no free port";
}

# one API call to the nginx under test: returns (status, body)
sub api {
    my ($method, $path, $body) = @_;
    my $port = $ENV{TEST_NGINX_SERVER_PORT} || 1984;
    my $res = HTTP::Tiny->new(timeout => 10)->request(
        $method, "http://127.0.0.1:$port$path",
        defined $body ? { content => $body } : {});
    return ($res->{status}, $res->{content});
}

# One command to the suite's Redis (or $ENV{TIMPUSH_REDIS_PORT} given as
# the first argument "port=N"): the reply, as Perl data (an error dies).
sub redis_cmd {
    my @a = @_;
    my $port = env('TEST_NGINX_REDIS_PORT');
    $port = $1 if @a && $a[0] =~ /^port=(\d+)$/ && shift @a;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")
        or die "redis_cmd: connect to $port: $!";
    binmode $s;
    my $out = '*' . @a . "\r\n";
    $out .= '$' . length($_) . "\r\n$_\r\n" for @a;
    print {$s} $out;
    my $read;
    $read = sub {
        my $line = <$s>;
        die "redis_cmd: connection closed" unless defined $line;
        $line =~ s/\r\n$//;
        my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
        return $v if $t eq '+';
        die "redis_cmd @a: $v\n" if $t eq '-';
        return 0 + $v if $t eq ':';
        if ($t eq '$') {
            return undef if $v < 0;
            my $d = '';
            read($s, $d, $v + 2 - length $d, length $d) while length $d < $v + 2;
            return substr($d, 0, $v);
        }
        return undef if $v < 0;
        return [map { $read->() } 1 .. $v];
    };
    my $r = $read->();
    close $s;
    return $r;
}

# a private redis-server on $port (and the unix socket $socket, if given),
# for the tests that stop and restart it
sub start_redis {
    my ($port, $socket) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec 'redis-server', '--port', $port, '--bind', '127.0.0.1',
             '--save', '', '--appendonly', 'no', '--dir', '/tmp',
             $socket ? ('--unixsocket', $socket, '--unixsocketperm', '777')
                     : ();
        exit 127;
    }
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        if ($s) {
            close $s;
            return $pid;
        }
        sleep 0.05;
    }
    die "redis-server did not start on port $port";
}

sub stop_redis {
    my $pid = shift;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

1;
