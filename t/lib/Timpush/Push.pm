package Timpush::Push;

# Helpers for the push suites: the APNs simulator server block, bulk
# registration, and reading the simulator's log.  Called fully qualified
# from "--- init" code (which runs in the runner's own package).

use strict;
use warnings;

use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();

my $http = HTTP::Tiny->new(timeout => 60, keep_alive => 1);

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
# pipelined requests on one connection; returns the tokens
sub register_many {
    my ($prefix, $n, $business_id) = @_;
    my $port = $ENV{TEST_NGINX_SERVER_PORT} || 1984;
    my $body = "{\"business_id\":$business_id}";
    my (@tokens, $out);

    for my $i (0 .. $n - 1) {
        my $token = sprintf '%064x', 0xa0000000 + $i;
        push @tokens, $token;
        $out .= "PUT /v1/users/$prefix$i/devices/$token HTTP/1.1\r\n"
                . "Host: localhost\r\nContent-Length: " . length($body)
                . ($i == $n - 1 ? "\r\nConnection: close" : '')
                . "\r\n\r\n$body";
    }

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Timeout => 10) or die "connect: $!";
    print $s $out;
    local $/;
    my $in = <$s>;
    close $s;

    my $ok = () = $in =~ m{^HTTP/1\.1 200 }mg;
    die "register_many: $ok of $n registered" unless $ok == $n;

    return @tokens;
}

sub push_message {
    my ($body) = @_;
    return call('POST', '/v1/push', JSON::PP::encode_json($body));
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

1;
