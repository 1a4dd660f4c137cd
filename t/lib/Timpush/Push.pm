package Timpush::Push;

# Helpers for the push suites: the APNs simulator server block, bulk
# registration, and reading the simulator's log.  Called fully qualified
# from "--- init" code (which runs in the runner's own package).

use strict;
use warnings;

use File::Temp ();
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Time::HiRes ();

# longer than any deadline a test sets (60 s under valgrind)
my $http = HTTP::Tiny->new(timeout => 180, keep_alive => 1);

# the simulator, in the same nginx as the gateway
sub simulator {
    my (%o) = @_;
    my $certs = $ENV{TEST_NGINX_CERT_DIR};
    my $cert = $o{cert} // 'server';
    my $extra = $o{extra} // '';
    my $rules = $o{rules} // '';
    return <<"CONF";
server {
    listen 127.0.0.1:\$TEST_NGINX_APNS_PORT ssl http2;
    ssl_certificate $certs/$cert.crt;
    ssl_certificate_key $certs/$cert.key;
    ssl_verify_client optional_no_ca;
    ssl_client_certificate $certs/ca.crt;
    $extra
    location /3/device/ {
        timpush_apns_mock key=$certs/AuthKey_ABC123DEFG.p8
                          key_id=ABC123DEFG team_id=TEAM123456
                          topic=com.example.chat;
        $rules
    }
}
CONF
}

# a deadline for the blocks that wait for one: short, unless under valgrind
sub short_timeout {
    return $ENV{TEST_NGINX_USE_VALGRIND} ? '20s' : '1s';
}

sub url {
    my $port = $ENV{TEST_NGINX_SERVER_PORT} || 1984;
    return "http://127.0.0.1:$port$_[0]";
}

sub call {
    my ($method, $path, $body) = @_;
    my $res = $http->request($method, url($path),
                             defined $body ? { content => $body } : {});
    my $json = eval { JSON::PP::decode_json($res->{content}) };
    return ($res->{status}, $json, $res->{content});
}

sub register {
    my ($user, $token, $business_id) = @_;
    my ($status, $json, $raw) = call('PUT', "/v1/users/$user/devices/$token",
                                     "{\"business_id\":$business_id}");
    die "register $user: $status $raw" unless $status == 200;
    return $json;
}

# n users <prefix>0..<prefix>(n-1), one device each, registered with
# pipelined requests, 500 per connection (nginx closes a connection after
# keepalive_requests); returns the tokens, base + i in hex (a token is
# one user's: two calls for different users need different bases)
sub register_many {
    my ($prefix, $n, $business_id, $port, $base) = @_;
    $port ||= $ENV{TEST_NGINX_SERVER_PORT} || 1984;
    $base //= 0xa0000000;
    my $body = "{\"business_id\":$business_id}";
    my @tokens = map { sprintf '%064x', $base + $_ } 0 .. $n - 1;

    for (my $first = 0; $first < $n; $first += 500) {
        my $last = $first + 499 < $n - 1 ? $first + 499 : $n - 1;
        my $out = '';

        for my $i ($first .. $last) {
            $out .= "PUT /v1/users/$prefix$i/devices/$tokens[$i] HTTP/1.1\r\n"
                    . "Host: localhost\r\nContent-Length: " . length($body)
                    . ($i == $last ? "\r\nConnection: close" : '')
                    . "\r\n\r\n$body";
        }

        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                      Timeout => 10) or die "connect: $!";
        print $s $out;
        local $/;
        my $in = <$s>;
        close $s;

        my $ok = () = $in =~ m{^HTTP/1\.1 200 }mg;
        die "register_many: $ok of " . ($last - $first + 1) . " registered"
            unless $ok == $last - $first + 1;
    }

    return @tokens;
}


sub push_message {
    my ($body, $port) = @_;
    if ($port) {
        my $res = HTTP::Tiny->new(timeout => 180)->post(
            "http://127.0.0.1:$port/v1/push",
            { content => JSON::PP::encode_json($body) });
        return ($res->{status}, eval { JSON::PP::decode_json($res->{content}) },
                $res->{content});
    }
    return call('POST', '/v1/push', JSON::PP::encode_json($body));
}

# a push from a child process, while the caller does something else;
# push_wait() gives its (status, answer)
sub push_async {
    my ($body, $port) = @_;
    my $file = File::Temp->new;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my ($status, undef, $raw) = push_message($body, $port);
        open my $fh, '>', $file->filename;
        print $fh "$status\n", $raw // '';
        close $fh;
        POSIX::_exit(0);
    }
    return { pid => $pid, file => $file };
}

sub push_wait {
    my ($h) = @_;
    waitpid $h->{pid}, 0;
    my ($status, $raw) = split /\n/, slurp($h->{file}->filename), 2;
    return ($status, eval { JSON::PP::decode_json($raw) });
}

# The marks of a msg_id (the PUSH script in store.c): each device's field
# "<token>:<user key>" = -(claim * 2^20 + i), i its place in the claim (or,
# while the key is one push's own, the device listed i-th in "c:<claim>"),
# and each claim's "l:<claim>" = "<claimed at>:<until>:<states>" (ms): a
# digit per device, or one for all of them (0 being sent, 1 sent, 2
# failed).  Read too, as earlier versions wrote them: the claim's number
# alone, and the device's own mark, 4 * ms + state (0 sent, 1 being sent,
# 2 failed).  Returns { field => 'sending' | 'sent' | 'failed' }; @port:
# "port=N" for another Redis than the suite's.  (Timpush::Test, which the
# suites load, talks to Redis)
sub mark_states {
    my ($mkey, @port) = @_;
    return mark_states_of(
        { @{ Timpush::Test::redis_cmd(@port, 'HGETALL', $mkey) || [] } });
}

# the same, of the marks key's fields and values as a hash
sub mark_states_of {
    my ($m) = @_;
    my %m = %$m;
    my %st;
    # the claims of a key still one push's own: their devices listed
    for my $c (grep { /^c:\d+$/ } keys %m) {
        my ($claim, $x) = (substr($c, 2), 0);
        for (split /\n/, $m{$c}) {
            $x++;
            $m{$_} //= -($claim * 1048576 + $x);
        }
    }
    for my $f (grep { !/^(?:n|o|[lc]:\d+)$/ } keys %m) {
        my $v = $m{$f};
        if ($v < 0 || ($v > 0 && $v < 4294967296)) {
            # its claim and place, or the claim's number alone
            my ($claim, $i) = $v < 0 ? (int(-$v / 1048576), -$v % 1048576) : ($v, 1);
            my (undef, undef, $states) = split /:/, $m{"l:$claim"} // '';
            $i = 1 if length($states // '') == 1;
            my $d = substr($states // '', $i - 1, 1);
            $st{$f} = { 0 => 'sending', 1 => 'sent', 2 => 'failed' }->{$d} // "bad($v)";
        } else {
            $st{$f} = (qw(sent sending failed bad))[$v % 4];
        }
    }
    return \%st;
}


sub mock_log {
    my ($token) = @_;
    my (undef, $json) = call('GET', '/mock/log'
                                    . ($token ? "?token=$token" : ''));
    return $json->{notifications};
}

sub clear_log {
    call('DELETE', '/mock/log');
}

# Another nginx, beside the one of the block: a simulator that can be
# stopped, or a gateway to reload.  The http block is given; the rest is
# made here.  Returns a handle for stop_nginx() and signal_nginx();
# expect => [qr/.../] names the serious error-log lines the caller wants;
# env => {NAME => value} is nginx's environment besides ours (its workers
# keep those names too); workers => N its worker processes (1).
sub start_nginx {
    my (%o) = @_;
    my $workers = $o{workers} // 1;
    my $env = join '', map { "env $_;\n" } sort keys %{$o{env} || {}};
    my $dir = File::Temp::tempdir(CLEANUP => 1);
    my $module = $ENV{TEST_NGINX_MODULE};
    my $mock = $ENV{TEST_NGINX_MOCK_MODULE};
    my $master = $o{master} ? 'on' : 'off';

    mkdir "$dir/logs";
    open my $fh, '>', "$dir/nginx.conf" or die "$dir: $!";
    print $fh <<"CONF";
load_module $module;
load_module $mock;
$env
daemon off;
master_process $master;
worker_processes $workers;
error_log $dir/logs/error.log info;
pid $dir/logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    $o{http}
}
CONF
    close $fh;

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/logs/stdout";
        open STDERR, '>', "$dir/logs/stderr";
        my $bin = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
        @ENV{keys %{$o{env}}} = values %{$o{env}} if $o{env};
        { exec $bin, '-p', "$dir/", '-c', "$dir/nginx.conf" };
        POSIX::_exit(127);
    }

    my $h = { pid => $pid, dir => $dir, expect => $o{expect} };
    wait_port($o{port}) or die "nginx did not start: "
                                . slurp("$dir/logs/stderr");
    return $h;
}

# Another gateway instance (start_nginx): the store line $o{store}, the
# suite's simulator (TEST_NGINX_APNS_PORT) as APNs with the test
# certificate of business id 1001, the API on 127.0.0.1:$o{port}; $o{http}
# more http-level lines.  Other options go to start_nginx (master, ...).
sub start_gateway {
    my (%o) = @_;
    my $certs = $ENV{TEST_NGINX_CERT_DIR};
    my $port = delete $o{port};
    my $store = delete $o{store};
    my $more = delete $o{http} // '';
    return start_nginx(%o, port => $port, http => "
    $store
    $more
    upstream ext { server 127.0.0.1:$ENV{TEST_NGINX_APNS_PORT}; }
    timpush_apns_upstream sandbox ext;
    timpush_apns_upstream production ext;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_credential 1001 certificate=$certs/dev.p12
                            password_file=$certs/dev.pass env=sandbox;
    server {
        listen 127.0.0.1:$port;
        location /v1/ { timpush_api; }
    }");
}

sub wait_port {
    my ($port, $gone) = @_;
    for (1 .. 600) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        close $s if $s;
        return 1 if $gone ? !$s : $s;
        Time::HiRes::sleep(0.05);
    }
    return 0;
}

sub signal_nginx {
    my ($h, $sig) = @_;
    kill $sig, $h->{pid};
}

# Stops an nginx of start_nginx() and fails the test if it did not end
# well: a non-zero exit, a signal, or a crash, [alert], [crit] or [emerg]
# in its error log that start_nginx(expect => [patterns]) did not name.
sub stop_nginx {
    my ($h) = @_;
    return unless $h && $h->{pid};
    my $pid = delete $h->{pid};
    kill 'QUIT', $pid;
    my $status;
    for (1 .. 200) {
        if (waitpid($pid, POSIX::WNOHANG()) > 0) {
            $status = $?;
            last;
        }
        Time::HiRes::sleep(0.05);
    }
    if (!defined $status) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        Test::More::fail("nginx $h->{dir} exits within 10 s of QUIT");
    } elsif ($status != 0) {
        Test::More::fail("nginx $h->{dir} exits with status 0 (got "
                         . ($status & 127 ? 'signal ' . ($status & 127)
                                          : 'exit ' . ($status >> 8)) . ')');
        Test::More::diag(slurp("$h->{dir}/logs/stderr"));
    }
    check_log($h);
}

sub check_log {
    my ($h) = @_;
    my @expect = @{ $h->{expect} || [] };
    for my $line (split /\n/, slurp("$h->{dir}/logs/error.log")) {
        next unless $line =~ /exited on signal|\[(?:alert|crit|emerg)\]/;
        next if grep { $line =~ $_ } @expect;
        Test::More::fail("nginx $h->{dir}: unexpected in error.log: $line");
    }
}

sub slurp {
    open my $fh, '<', $_[0] or return '';
    local $/;
    return <$fh>;
}

# a standalone simulator on $port, its log on plain HTTP at $log_port;
# rate => N answers at most N notifications a second (the others wait), so
# that a push is still in flight when a test signals the gateway
sub start_simulator {
    my ($port, $log_port, %o) = @_;
    my $extra = 'keepalive_requests 1000000;';
    my $zone = '';
    if ($o{rate}) {
        $zone = "limit_req_zone \$server_port zone=apns:1m rate=$o{rate}r/s;";
        $extra .= ' limit_req zone=apns burst=1000000;';
    }
    my $server = simulator(extra => $extra);
    $server =~ s/\$TEST_NGINX_APNS_PORT/$port/;
    return start_nginx(port => $port, http => <<"CONF");
$zone
$server
server {
    listen 127.0.0.1:$log_port;
    location = /mock/log { timpush_apns_mock_log; }
}
CONF
}

sub clear_simulator_log {
    my ($log_port) = @_;
    $http->request('DELETE', "http://127.0.0.1:$log_port/mock/log");
}

sub simulator_log {
    my ($log_port) = @_;
    my $res = $http->get("http://127.0.0.1:$log_port/mock/log");
    return JSON::PP::decode_json($res->{content})->{notifications};
}

1;
