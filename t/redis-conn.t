# The Redis connection against a hostile or broken peer (DESIGN §15,
# redis.c): a fake Redis in Perl answers garbage on the first connection
# (an invalid type byte, a bulk string of 2^40 bytes, a reply for no
# command, a reply cut short) and honestly on the next ones.  The worker
# never crashes, the caller gets 503 store_unavailable, and the
# connection is made again.  A reply split byte by byte is read whole.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port);
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(sleep);

# a user's hash as HGETALL gives it: one device
our $HASH = "*4\r\n\$18\r\nt:1111111111111111\r\n\$4\r\n1001\r\n"
            . "\$18\r\nr:1111111111111111\r\n\$13\r\n1700000000000\r\n";

# the commands of a client, as Redis reads them (arrays of bulk strings)
sub read_command {
    my ($s, $buf) = @_;
    for (;;) {
        if ($$buf =~ /\A\*(\d+)\r\n/) {
            my ($n, $pos, @argv) = ($1, length($&));
            my $ok = 1;
            for (1 .. $n) {
                if (substr($$buf, $pos) =~ /\A\$(\d+)\r\n/
                    && length($$buf) >= $pos + length($&) + $1 + 2)
                {
                    push @argv, substr($$buf, $pos + length($&), $1);
                    $pos += length($&) + $1 + 2;
                } else {
                    $ok = 0;
                    last;
                }
            }
            if ($ok) {
                substr($$buf, 0, $pos) = '';
                return \@argv;
            }
        }
        my $n = sysread($s, $$buf, 65536, length $$buf);
        return undef unless $n;
    }
}

# an honest answer: AUTH is accepted, a script returns the user's hash:
# user "h" has 1111111111111111, user "p<n>" the token n in hex
sub answer {
    my $argv = shift;
    return "+OK\r\n" if uc $argv->[0] eq 'AUTH';
    if (uc $argv->[0] =~ /^EVAL/) {
        return $HASH unless ($argv->[3] // '') =~ /\{p(\d+)\}$/;
        my $t = sprintf '%016x', $1;
        return "*2\r\n\$18\r\nt:$t\r\n\$4\r\n1001\r\n";
    }
    return "+OK\r\n";
}

# A fake Redis on $port: the first connection is served by $bad (every
# one if $always), the others honestly.  Connections one at a time, as one
# worker makes them.
sub fake_redis {
    my ($port, $bad, $always) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $port, Listen => 16,
                                  ReuseAddr => 1) or die "listen: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{PIPE} = 'IGNORE';
        my $n = 0;
        while (my $s = $l->accept) {
            binmode $s;
            $s->autoflush(1);
            my $buf = '';
            if ($n++ == 0 || $always) {
                $bad->($s, \$buf);
            } else {
                while (my $argv = read_command($s, \$buf)) {
                    print {$s} answer($argv);
                }
            }
            close $s;
        }
        POSIX::_exit(0);
    }
    close $l;
    return $pid;
}

our @fakes;
$ENV{TEST_NGINX_AUTH_GO} = "/tmp/timpush-test-auth-go-$$";
unlink $ENV{TEST_NGINX_AUTH_GO};
my %bad = (
    TYPE => sub {
        my ($s, $buf) = @_;
        read_command($s, $buf) or return;
        print {$s} "%3\r\n";
        sleep 0.5;
    },
    HUGE => sub {
        my ($s, $buf) = @_;
        read_command($s, $buf) or return;
        print {$s} "\$1099511627776\r\nabc";
        sleep 0.5;
    },
    CUT => sub {
        my ($s, $buf) = @_;
        read_command($s, $buf) or return;
        print {$s} substr($HASH, 0, 30);
    },
    SPLIT => sub {
        my ($s, $buf) = @_;
        while (my $argv = read_command($s, $buf)) {
            for my $c (split //, answer($argv)) {
                print {$s} $c;
                sleep 0.002;
            }
        }
    },
    # the commands read in a batch and answered together, in order
    BATCH => sub {
        my ($s, $buf) = @_;
        while (my $argv = read_command($s, $buf)) {
            my @cmds = ($argv);
            sleep 0.1;
            while ($$buf =~ /\A\*/ || IO::Select->new($s)->can_read(0)) {
                my $next = read_command($s, $buf) or last;
                push @cmds, $next;
                sleep 0.02;
            }
            print {$s} join '', map { answer($_) } @cmds;
        }
    },
    # AUTH answered only once the test says so; a command written
    # before that is an error (a server that takes AUTH first, strictly)
    AUTHWAIT => sub {
        my ($s, $buf) = @_;
        read_command($s, $buf) or return;
        sleep 0.02 until -e $ENV{TEST_NGINX_AUTH_GO};
        if (IO::Select->new($s)->can_read(0) || length $$buf) {
            print {$s} "-ERR a command before AUTH was answered\r\n";
            return;
        }
        print {$s} "+OK\r\n";
        while (my $argv = read_command($s, $buf)) {
            print {$s} answer($argv);
        }
    },
    DEEP => sub {
        my ($s, $buf) = @_;
        read_command($s, $buf) or return;
        print {$s} ("*1\r\n" x 20) . ":1\r\n";
        sleep 0.5;
    },
);

for my $name (keys %bad) {
    my $port = free_port();
    $ENV{"TEST_NGINX_${name}_PORT"} = $port;
    push @fakes, fake_redis($port, $bad{$name});
}

# every connection: AUTH answered twice, the second for no command
$ENV{TEST_NGINX_EXTRA_PORT} = free_port();
push @fakes, fake_redis($ENV{TEST_NGINX_EXTRA_PORT}, sub {
    my ($s, $buf) = @_;
    read_command($s, $buf) or return;
    print {$s} "+OK\r\n+OK\r\n";
    sleep 0.2;
}, 1);

END {
    local $?;
    for (@fakes) { kill 'KILL', $_; waitpid $_, 0 }
    unlink $ENV{TEST_NGINX_AUTH_GO};
}

# the request that meets the bad connection, then until the connection is
# made again (a caller's 200)
sub bad_then_good {
    my ($status, $body) = Timpush::Test::api('GET', '/v1/users/h/devices');
    Test::More::is($status, 503, 'the bad reply: 503');
    Test::More::like($body, qr/"store_unavailable"/,
                     'the bad reply: store_unavailable');
    for (1 .. 100) {
        ($status, $body) = Timpush::Test::api('GET', '/v1/users/h/devices');
        last if $status == 200;
        Time::HiRes::sleep(0.1);
    }
    Test::More::is($status, 200, 'connected again: 200');
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: an invalid RESP type byte: 503, the connection made again
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_TYPE_PORT timeout=2s;
--- config
location /v1/ { timpush_api; }
--- init
main::bad_then_good();
--- request
GET /v1/users/h/devices
--- error_code: 200
--- response_body_like chomp
"token":"1111111111111111","business_id":1001
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: not a Redis reply: Protocol error, got "%" as reply type byte/



=== TEST 2: a bulk string of 2^40 bytes: refused at its length, 503, made again
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_HUGE_PORT timeout=2s;
--- config
location /v1/ { timpush_api; }
--- init
main::bad_then_good();
--- request
GET /v1/users/h/devices
--- error_code: 200
--- response_body_like chomp
"token":"1111111111111111"
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: a reply of more than 67108864 bytes/



=== TEST 3: a reply cut short by the peer closing: 503, made again
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_CUT_PORT timeout=2s;
--- config
location /v1/ { timpush_api; }
--- init
main::bad_then_good();
--- request
GET /v1/users/h/devices
--- error_code: 200
--- response_body_like chomp
"token":"1111111111111111"
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: connection lost: closed by the server/



=== TEST 4: replies nested deeper than the reader takes: 503, made again
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_DEEP_PORT timeout=2s;
--- config
location /v1/ { timpush_api; }
--- init
main::bad_then_good();
--- request
GET /v1/users/h/devices
--- error_code: 200
--- response_body_like chomp
"token":"1111111111111111"
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: not a Redis reply: No support for nested multi bulk replies/



=== TEST 5: replies split byte by byte: read whole, in order
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_SPLIT_PORT timeout=5s;
--- config
location /v1/ { timpush_api; }
--- request eval
["GET /v1/users/h/devices", "GET /v1/users/h/devices"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/"token":"1111111111111111","business_id":1001/,
 qr/"token":"1111111111111111","business_id":1001/]
--- no_error_log
[error]



=== TEST 6: a reply for no command (AUTH answered twice): the connection dropped each time, 503
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_EXTRA_PORT timeout=2s
              password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- config
location /v1/ { timpush_api; }
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "whatever\n";
close $fh;
chmod 0600, $f;
--- init
Time::HiRes::sleep(0.3);
--- request
GET /v1/users/h/devices
--- error_code: 503
--- response_body
{"error":{"code":"store_unavailable","message":"Redis is not reachable; retry later"}}
--- error_log eval
qr/\[error\] .*timpush: Redis 127\.0\.0\.1:\d+: a reply to no command sent/



=== TEST 7: pipelined commands: each reply to its own command, in order
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_BATCH_PORT timeout=5s;
--- config
location /v1/ { timpush_api; }
--- init
my @kids;
for my $n (1 .. 12) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my ($status, $body) = Timpush::Test::api('GET',
                                                 "/v1/users/p$n/devices");
        my $t = sprintf '%016x', $n;
        POSIX::_exit($status == 200 && $body =~ /"token":"$t"/
                     && $body =~ /"user_id":"p$n"/ ? 0 : 1);
    }
    push @kids, $pid;
}
my $ok = 0;
for (@kids) {
    waitpid $_, 0;
    $ok++ if $? == 0;
}
Test::More::is($ok, 12, 'every caller got its own user\'s devices');
--- request
GET /v1/users/p99/devices
--- error_code: 200
--- response_body_like chomp
"token":"0000000000000063"
--- no_error_log
[error]



=== TEST 8: AUTH first, and nothing written until Redis has accepted it
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_AUTHWAIT_PORT timeout=5s
              password_file=$TEST_NGINX_SERVER_ROOT/html/redis.pass;
--- config
location /v1/ { timpush_api; }
--- post_setup_server_root
my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/html/redis.pass";
open my $fh, '>', $f or die "$f: $!";
print $fh "whatever\n";
close $fh;
chmod 0600, $f;
--- init
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    my ($status, $body) = Timpush::Test::api('GET', '/v1/users/h/devices');
    POSIX::_exit($status == 200 ? 0 : 1);
}
Time::HiRes::sleep(0.5);
open my $go, '>', $ENV{TEST_NGINX_AUTH_GO} or die $!;
close $go;
waitpid $pid, 0;
Test::More::is($?, 0, 'the command queued during AUTH: 200 once accepted');
--- request
GET /v1/users/h/devices
--- error_code: 200
--- response_body_like chomp
"token":"1111111111111111"
--- no_error_log
[error]
