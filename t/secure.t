# The access-control recipes of conf-examples/, run for real (DESIGN §10):
# mutual TLS (production-certificate.conf), allow/deny on a private
# listener (production-token.conf), auth_request (multi-app.conf), and
# timpush-errors.conf, which they all include: every error nginx answers
# itself in an API server is the API's JSON.  Each recipe is the http block
# of its file, with only these rewritten: the listen ports, the Redis
# address (a prefix per nginx), Apple's hosts (a closed local port), the
# files (the test PKI, the include of this checkout), and for some cases a
# variant said where it is made (a closed auth service, tiny limits, two
# test-only locations behind which a proxied service fails).
#
# Not in Test::Nginx::Socket's block format: the recipes need TLS clients
# with and without certificates and requests from several source addresses
# (127.0.0.0/8 is all local on Linux), which that runner does not make.
# Each nginx is started by Timpush::Push::start_nginx.

use strict;
use warnings;

use Cwd qw(abs_path);
use IO::Socket::INET;
use IO::Socket::SSL qw(SSL_VERIFY_PEER);
use Test::More;
use Time::HiRes qw(sleep);
use Timpush::Push;

my $certs = $ENV{TEST_NGINX_CERT_DIR} or die "TEST_NGINX_CERT_DIR is not set\n";
my $redis = $ENV{TEST_NGINX_REDIS_PORT}
    or die "TEST_NGINX_REDIS_PORT is not set\n";
my $root = abs_path(__FILE__ =~ s{t/secure\.t$}{}r || '.');
my $examples = "$root/conf-examples";

my $seq = 0;
my %used;

# a TCP port nobody listens on, below the ephemeral range
sub free_port {
    my $lo = 32768;
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        ($lo) = split ' ', scalar <$fh>;
    }
    for (1 .. 1000) {
        my $port = 10000 + int rand($lo - 10000);
        next if $used{$port};
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $port, Listen => 1,
                                      ReuseAddr => 1) or next;
        close $s;
        $used{$port} = 1;
        return $port;
    }
    die "free_port: no free port";
}

sub prefix { sprintf 'tsec%d_%d', $$, ++$seq }

# Apple is never called here (no push is sent): its hosts are a port
# nobody listens on
my $apns = free_port();

# The http block of a conf-example, as the recipe runs here.
sub recipe {
    my ($file, %o) = @_;
    my $conf = Timpush::Push::slurp("$examples/$file")
        or die "cannot read $examples/$file";
    my ($http) = $conf =~ /^http \{\n(.*)^\}\s*\z/ms
        or die "$file: no http block";

    $http =~ s{^(\s*)listen \S+( ssl)?;}
              {"$1listen 127.0.0.1:$o{port}" . ($2 // '') . ';'}me
        or die "$file: no listen";
    $http =~ s{^(\s*)timpush_redis [^;]*;}
              {$1timpush_redis 127.0.0.1:$redis prefix=$o{prefix} timeout=2s;}m
        or die "$file: no timpush_redis";
    $http =~ s{api(?:\.sandbox)?\.push\.apple\.com:443}{127.0.0.1:$apns}g;
    $http =~ s{(?<=[\s=])timpush/}{$certs/}g;
    $http =~ s{include timpush-errors\.conf;}
              {include $examples/timpush-errors.conf;}g;
    $o{edit}->($http) if $o{edit};
    return $http;
}

sub start {
    my ($port, $http, @expect) = @_;
    return Timpush::Push::start_nginx(port => $port, http => $http,
                                      expect => \@expect);
}

# ---- the client: one request per connection, raw HTTP/1.1 ---------------

# $c: { port, tls => 1, cert => 'backend' (a name in the PKI), from => a
# local address to connect from }
sub connect_to {
    my ($c) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $c->{port},
                                  ($c->{from} ? (LocalAddr => $c->{from})
                                              : ()),
                                  Timeout => 10)
        or die "connect to $c->{port}: $!";
    return $s unless $c->{tls};
    IO::Socket::SSL->start_SSL($s,
        SSL_verify_mode => SSL_VERIFY_PEER,
        SSL_ca_file => "$certs/ca.crt",
        SSL_hostname => 'localhost',
        SSL_verifycn_name => 'localhost',
        SSL_verifycn_scheme => 'http',
        ($c->{cert} ? (SSL_cert_file => "$certs/$c->{cert}.crt",
                       SSL_key_file => "$certs/$c->{cert}.key") : ()),
        Timeout => 10)
        or die "TLS to $c->{port}: $IO::Socket::SSL::SSL_ERROR";
    return $s;
}

sub exchange {
    my ($c, $raw) = @_;
    my $s = connect_to($c);
    my $in = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 15;
        while (length $raw) {
            my $n = syswrite $s, $raw;
            last unless $n;     # the server may answer and close early
            substr $raw, 0, $n, '';
        }
        while (1) {
            my $n = sysread $s, my $buf, 65536;
            last unless $n;
            $in .= $buf;
        }
        alarm 0;
    };
    alarm 0;
    close $s;
    return parse($in);
}

sub parse {
    my ($in) = @_;
    my ($head, $body) = split /\r\n\r\n/, $in, 2;
    my ($status_line, @lines) = split /\r\n/, $head // '';
    my ($status) = ($status_line // '') =~ m{^HTTP/1\.[01] (\d{3}) };
    my %h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = $v;
    }
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $plain = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $plain .= substr $body, 0, $n, '';
            $body =~ s/^\r\n//;
        }
        $body = $plain;
    }
    return { status => $status // 0, headers => \%h, body => $body // '',
             raw => $in };
}

sub request {
    my ($c, $method, $path, $body, @headers) = @_;
    my $raw = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
              . "Connection: close\r\n";
    $raw .= "$_\r\n" for @headers;
    $raw .= 'Content-Length: ' . length($body) . "\r\n" if defined $body;
    return exchange($c, $raw . "\r\n" . ($body // ''));
}

# ---- what the answers must be -------------------------------------------

sub json_error {
    my ($code, $message) = @_;
    return qq({"error":{"code":"$code","message":"$message"}}\n);
}

sub is_answer {
    my ($res, $status, $body, $name) = @_;
    is($res->{status}, $status, "$name: $status");
    is($res->{body}, $body, "$name: body")
        or diag($res->{raw});
    like($res->{headers}{'content-type'} // '', qr{^application/json$},
         "$name: application/json");
}

sub is_error {
    my ($res, $status, $code, $message, $name) = @_;
    is_answer($res, $status, json_error($code, $message), $name);
}

my $token = 'aabbccddeeff0011';

sub register_ok {
    my ($c, $user, $bid, $name, @headers) = @_;
    my $res = request($c, 'PUT', "/v1/users/$user/devices/$token",
                      qq({"business_id":$bid}), @headers);
    is_answer($res, 200, qq({"user_id":"$user","token":"$token",)
                         . qq("business_id":$bid,"kicked":[]}\n),
              "$name: registered");
}

sub devices {
    my ($c, $user, @headers) = @_;
    return request($c, 'GET', "/v1/users/$user/devices", undef, @headers);
}

sub has_device {
    my ($c, $user, $bid, $name, @headers) = @_;
    my $res = devices($c, $user, @headers);
    is($res->{status}, 200, "$name: the device is listed (200)");
    like($res->{body}, qr/^\{"user_id":"$user","devices":\[\{"token":"$token","business_id":$bid,"badge":0,"foreground":false,"registered_at":\d+\}\]\}\n\z/,
         "$name: the device is listed");
}

sub stored_nothing {
    my ($c, $user, $name, @headers) = @_;
    my $res = devices($c, $user, @headers);
    is($res->{status}, 200, "$name: nothing stored (200)");
    is($res->{body}, qq({"user_id":"$user","devices":[]}\n),
       "$name: nothing stored for $user");
}

# a refused registration: the answer, then nothing in Redis for that user
sub refused {
    my ($c, $user, $status, $code, $message, $name, %o) = @_;
    my $res = request($c, 'PUT', "/v1/users/$user/devices/$token",
                      '{"business_id":' . ($o{bid} // 1001) . '}',
                      @{ $o{headers} || [] });
    is_error($res, $status, $code, $message, $name);
    stored_nothing($o{reader} || $c, $user, $name,
                   @{ $o{reader_headers} || [] });
    return $res;
}

# the users' keys under a prefix, straight from Redis
sub redis_keys {
    my ($prefix) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$redis",
                                  Timeout => 5) or die "redis: $!";
    my $pattern = "$prefix:u:*";
    print $s "*2\r\n\$4\r\nKEYS\r\n\$" . length($pattern) . "\r\n"
             . "$pattern\r\n";
    my $n = <$s>;
    $n =~ /^\*(\d+)/ or die "redis: $n";
    my @keys;
    for (1 .. $1) {
        <$s>;
        my $k = <$s>;
        $k =~ s/\r\n\z//;
        push @keys, $k;
    }
    close $s;
    return sort @keys;
}

my $origin_message = 'requests from web pages are refused (Origin header); '
                     . 'the API is for backends, see timpush_api allow_origin=';


# ==== mutual TLS: production-certificate.conf =============================

{
    my $port = free_port();
    my $prefix = prefix();
    my $ngx = start($port, recipe('production-certificate.conf',
                                  port => $port, prefix => $prefix));

    my $good = { port => $port, tls => 1, cert => 'backend' };
    my $none = { port => $port, tls => 1 };
    my $other = { port => $port, tls => 1, cert => 'dev' };

    register_ok($good, 'alice', 1001, 'mTLS, a backend certificate');
    has_device($good, 'alice', 1001, 'mTLS, a backend certificate');

    refused($none, 'mallory', 400, 'certificate_required',
            'a client certificate is required',
            'mTLS, no client certificate (496)', reader => $good);

    # dev.crt is valid, but from another CA than the backends'
    refused($other, 'mallory', 400, 'certificate_required',
            'the client certificate was not accepted',
            'mTLS, a certificate of another CA (495)', reader => $good);

    refused({ port => $port }, 'mallory', 400, 'bad_request',
            'plain HTTP was sent to the HTTPS port',
            'mTLS, plain HTTP to the TLS port (497)', reader => $good);

    refused($good, 'mallory', 403, 'forbidden', $origin_message,
            'mTLS, a good certificate from a web page (Origin)',
            headers => ['Origin: https://evil.example']);

    is_error(request($good, 'GET', '/'), 404, 'not_found',
             'no such endpoint', 'mTLS, outside /v1/');

    is_deeply([redis_keys($prefix)], ["$prefix:u:{alice}"],
              'mTLS: Redis holds the one user let in');

    Timpush::Push::stop_nginx($ngx);
}


# ==== allow/deny: production-token.conf ===================================
# and every error nginx answers itself on a plain listener

{
    my $port = free_port();
    my $prefix = prefix();
    my $closed = free_port();
    my $blackhole_port = free_port();

    # accepts connections (the kernel does) and never answers
    my $blackhole = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                          LocalPort => $blackhole_port,
                                          Listen => 16, ReuseAddr => 1)
        or die "blackhole: $!";

    # test-only locations: nothing in the recipe proxies, so a service
    # that fails (502) or does not answer (504) is put behind two
    my $test_locations = <<"CONF";
        location = /_test/502 {
            proxy_pass http://127.0.0.1:$closed;
        }

        location = /_test/504 {
            proxy_pass http://127.0.0.1:$blackhole_port;
            proxy_read_timeout 300ms;
        }

CONF

    my $http = recipe('production-token.conf', port => $port,
                      prefix => $prefix, edit => sub {
        $_[0] =~ s{^(        # nothing else is served here\n)}
                  {$test_locations$1}m or die 'no location /';
    });
    my $ngx = start($port, $http);

    # the recipe allows 127.0.0.1 and a private network; 127.0.0.2 is
    # another address of this host, and denied
    my $ok = { port => $port };
    my $denied = { port => $port, from => '127.0.0.2' };

    register_ok($ok, 'bob', 2001, 'allow/deny, an allowed address');
    has_device($ok, 'bob', 2001, 'allow/deny, an allowed address');

    refused($denied, 'mallory', 403, 'forbidden', 'access is denied',
            'allow/deny, a denied address', bid => 2001, reader => $ok);
    is_error(devices($denied, 'bob'), 403, 'forbidden', 'access is denied',
             'allow/deny, a denied address reads nothing');

    refused($ok, 'mallory', 403, 'forbidden', $origin_message,
            'allow/deny, an allowed address from a web page (Origin)',
            bid => 2001, headers => ['Origin: https://evil.example']);

    # ---- every error nginx answers itself, as JSON ----

    is_error(exchange($ok, "PUT /v1/users/mallory/devices/%zz HTTP/1.1\r\n"
                           . "Host: localhost\r\nContent-Length: 2\r\n\r\n{}"),
             400, 'bad_request', 'the request is malformed',
             'a malformed request line (400)');
    is_error(exchange($ok, "GET /v1/users/bob/devices HTTP/1.1\r\n\r\n"),
             400, 'bad_request', 'the request is malformed',
             'HTTP/1.1 without Host (400)');
    is_error(exchange($ok, "NOT A REQUEST\r\n\r\n"),
             400, 'bad_request', 'the request is malformed',
             'garbage (400)');
    is_error(request($ok, 'GET', '/v1/users/bob/devices', undef,
                     'X-Big: ' . ('x' x 5000)),
             400, 'bad_request', 'the request headers are too large',
             'a header over large_client_header_buffers (494)');
    is_error(request($ok, 'GET', '/v1/users/' . ('u' x 5000) . '/devices'),
             414, 'uri_too_long', 'the request URI is too long',
             'a URI over large_client_header_buffers (414)');
    is_error(request($ok, 'TRACE', '/v1/users/bob/devices'),
             405, 'method_not_allowed', 'this method is not allowed',
             'TRACE, refused by nginx (405)');
    is_error(request($ok, 'GET', '/'), 404, 'not_found', 'no such endpoint',
             'outside /v1/ (404)');
    is_error(request($ok, 'GET', '/_timpush_error/400'), 404, 'not_found',
             'no such endpoint', 'the error pages are internal (404)');
    is_error(exchange($ok, "POST /v1/push HTTP/1.1\r\nHost: localhost\r\n"
                           . "Content-Length: 2000000\r\n\r\n{"),
             413, 'body_too_large', 'the body is too large',
             'a push over client_max_body_size (413)');
    is_error(exchange($ok, "PUT /v1/users/mallory/devices/$token HTTP/1.1\r\n"
                           . "Host: localhost\r\n"
                           . "Transfer-Encoding: chunked\r\n\r\n"
                           . "1400\r\n" . ('{' x 5120) . "\r\n0\r\n\r\n"),
             413, 'body_too_large', 'the body is too large',
             'a chunked device body over 4 KiB (413)');
    stored_nothing($ok, 'mallory', 'a chunked device body over 4 KiB');
    is_error(exchange($ok, "POST /v1/push HTTP/1.1\r\nHost: localhost\r\n"
                           . "Transfer-Encoding: gzip\r\n\r\n"),
             501, 'not_implemented',
             'this Transfer-Encoding is not supported',
             'an unknown Transfer-Encoding (501)');
    is_error(request($ok, 'GET', '/_test/502'), 502, 'internal_error',
             'a service behind the gateway failed',
             'a proxied service refused the connection (502)');
    is_error(request($ok, 'GET', '/_test/504'), 504, 'internal_error',
             'a service behind the gateway timed out',
             'a proxied service did not answer (504)');

    # ---- the API's own errors are untouched by the error pages ----

    is_error(request($ok, 'PUT', "/v1/users/mallory/devices/$token",
                     '{"business_id":2001,"pad":"' . ('x' x 5000) . '"}'),
             413, 'body_too_large', 'a device body is at most 4096 bytes',
             "the API's own 413");
    my $res = request($ok, 'PATCH', "/v1/users/bob/devices/$token");
    is_error($res, 405, 'method_not_allowed',
             'method PATCH is not allowed here; allowed: PUT, DELETE',
             "the API's own 405");
    is($res->{headers}{allow}, 'PUT, DELETE', "the API's own 405: Allow");
    is_error(request($ok, 'GET', '/v1/nothing'), 404, 'not_found',
             'no such endpoint: /v1/nothing', "the API's own 404");

    stored_nothing($ok, 'mallory', 'allow/deny: after every refusal');
    is_deeply([redis_keys($prefix)], ["$prefix:u:{bob}"],
              'allow/deny: Redis holds the one user let in');

    Timpush::Push::stop_nginx($ngx);
    close $blackhole;
}


# ==== auth_request: multi-app.conf ========================================

{
    my $port = free_port();
    my $auth_port = free_port();
    my $prefix = prefix();

    # the auth service: yes to one bearer token, 403 to another, 401 to
    # the rest; a second server in the same nginx
    my $auth_service = <<"CONF";
    server {
        listen 127.0.0.1:$auth_port;
        location = /check {
            if (\$http_authorization = "Bearer backend-secret") {
                return 204;
            }
            if (\$http_authorization = "Bearer retired-secret") {
                return 403;
            }
            return 401;
        }
    }
CONF

    my $http = recipe('multi-app.conf', port => $port, prefix => $prefix,
                      edit => sub {
        $_[0] =~ s{server 127\.0\.0\.1:9000;}{server 127.0.0.1:$auth_port;}
            or die 'no auth upstream';
        $_[0] .= $auth_service;
    });
    my $ngx = start($port, $http);

    my $c = { port => $port, tls => 1 };
    my @yes = ('Authorization: Bearer backend-secret');

    register_ok($c, 'carol', 1001, 'auth_request, the service says yes',
                @yes);
    has_device($c, 'carol', 1001, 'auth_request, the service says yes',
               @yes);

    refused($c, 'mallory', 401, 'unauthorized', 'authentication is required',
            'auth_request, no credentials (401)', reader_headers => \@yes);
    refused($c, 'mallory', 401, 'unauthorized', 'authentication is required',
            'auth_request, a wrong token (401)', reader_headers => \@yes,
            headers => ['Authorization: Bearer guess']);
    refused($c, 'mallory', 403, 'forbidden', 'access is denied',
            'auth_request, the service says no (403)',
            reader_headers => \@yes,
            headers => ['Authorization: Bearer retired-secret']);
    refused($c, 'mallory', 403, 'forbidden', $origin_message,
            'auth_request, allowed, from a web page (Origin)',
            reader_headers => \@yes,
            headers => [@yes, 'Origin: https://evil.example']);
    is_error(request($c, 'GET', '/_timpush_auth', undef, @yes), 404,
             'not_found', 'no such endpoint',
             'auth_request, the subrequest location is internal');

    # the auth service down: the same recipe, its upstream a closed port;
    # nobody gets in (500), and the gateway above reads what was stored
    {
        my $down_port = free_port();
        my $closed = free_port();
        my $down = start($down_port, recipe('multi-app.conf',
            port => $down_port, prefix => $prefix, edit => sub {
                $_[0] =~ s{server 127\.0\.0\.1:9000;}
                          {server 127.0.0.1:$closed;} or die;
            }));
        refused({ port => $down_port, tls => 1 }, 'mallory', 500,
                'internal_error', 'internal error',
                'auth_request, the auth service is down (500)',
                headers => \@yes, reader => $c, reader_headers => \@yes);
        Timpush::Push::stop_nginx($down);
    }

    # limit_req made tiny: 1 request a minute per address, a burst of 1
    {
        my $lim_port = free_port();
        my $lim = start($lim_port, recipe('multi-app.conf',
            port => $lim_port, prefix => $prefix, edit => sub {
                $_[0] =~ s{server 127\.0\.0\.1:9000;}
                          {server 127.0.0.1:$auth_port;} or die;
                $_[0] =~ s{rate=\d+r/s}{rate=1r/m} or die;
                $_[0] =~ s{burst=\d+}{burst=1} or die;
            }));

        my $flood = { port => $lim_port, tls => 1, from => '127.0.0.3' };
        for my $i (1, 2) {
            is(devices($flood, 'carol', @yes)->{status}, 200,
               "limit_req: request $i of the burst passes");
        }
        refused($flood, 'mallory', 503, 'overloaded',
                'too many requests or connections; retry later',
                'limit_req exceeded (503)', headers => \@yes,
                reader => $c, reader_headers => \@yes);

        like(Timpush::Push::slurp("$lim->{dir}/logs/error.log"),
             qr/limiting requests, excess: [\d.]+ by zone "timpush_req", client: 127\.0\.0\.3/,
             'limit_req: the refusal is logged');
        Timpush::Push::stop_nginx($lim);
    }

    # limit_conn made tiny: 1 connection per address.  One connection of
    # 127.0.0.4 holds a request (its body half sent); once nginx counts it
    # (a GET on a second connection is refused), a registration is refused
    # too.
    {
        my $lim_port = free_port();
        my $lim = start($lim_port, recipe('multi-app.conf',
            port => $lim_port, prefix => $prefix, edit => sub {
                $_[0] =~ s{server 127\.0\.0\.1:9000;}
                          {server 127.0.0.1:$auth_port;} or die;
                $_[0] =~ s{limit_conn timpush_conn \d+;}
                          {limit_conn timpush_conn 1;} or die;
            }));

        my $held = { port => $lim_port, tls => 1, from => '127.0.0.4' };
        my $s = connect_to($held);
        print $s "PUT /v1/users/dave/devices/$token HTTP/1.1\r\n"
                 . "Host: localhost\r\nAuthorization: Bearer backend-secret\r\n"
                 . "Content-Length: 20\r\n\r\n{\"busi";
        my $status = 0;
        for (1 .. 100) {
            $status = devices($held, 'carol', @yes)->{status};
            last if $status == 503;
            sleep 0.05;
        }
        is($status, 503, 'limit_conn: a second connection is refused');
        refused($held, 'mallory', 503, 'overloaded',
                'too many requests or connections; retry later',
                'limit_conn exceeded (503)', headers => \@yes,
                reader => $c, reader_headers => \@yes);
        close $s;

        like(Timpush::Push::slurp("$lim->{dir}/logs/error.log"),
             qr/limiting connections by zone "timpush_conn", client: 127\.0\.0\.4/,
             'limit_conn: the refusal is logged');
        Timpush::Push::stop_nginx($lim);
    }

    stored_nothing($c, 'dave', 'limit_conn: the held request', @yes);
    is_deeply([redis_keys($prefix)], ["$prefix:u:{carol}"],
              'auth_request: Redis holds the one user let in');

    Timpush::Push::stop_nginx($ngx);
}

done_testing();
