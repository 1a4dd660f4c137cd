package TimpushMock;

# What the APNs simulator's suites (t/mock-*.t) share:
#  - $TEST_NGINX_MOCK_PORT, a second port for the simulator's TLS + HTTP/2
#    server (the test client speaks plain HTTP/1.1 to $TEST_NGINX_SERVER_PORT);
#  - every block runs the simulator alone: http_config names timpush_redis
#    and timpush_credential in a comment, so Timpush::Test adds neither;
#  - "{{jwt ...}}" in --- more_headers becomes a fresh provider token;
#  - helpers for "--- init" code, which both runners evaluate outside main:
#    call them as TimpushMock::h2(...), TimpushMock::log_get(...).

use strict;
use warnings;

use Test::Nginx::Socket ();
use File::Temp qw(tempfile);
use FindBin ();
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();

our $TOKEN = 'ab' x 32;
our $MOCK_DIR = "$FindBin::Bin/mock";

sub env {
    my $name = shift;
    my $v = $ENV{$name};
    die "TimpushMock: environment variable $name is not set (run the "
        . "suites with t/run.sh or make test)\n" unless defined $v;
    return $v;
}

# the port after nginx's, or the next one free
sub mock_port {
    my $base = env('TEST_NGINX_SERVER_PORT');
    my $redis = $ENV{TEST_NGINX_REDIS_PORT} // 0;
    for my $p ($base + 1 .. $base + 50) {
        next if $p == $redis;
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $p, Listen => 1,
                                      ReuseAddr => 1) or next;
        close $s;
        return $p;
    }
    die "TimpushMock: no free port after $base\n";
}

$ENV{TEST_NGINX_MOCK_PORT} ||= mock_port();

# jwt(kid => ..., key => ..., iss => ..., iat => ..., alg => ...):
# key is the .p8's key id, iat an offset from now when it starts with + or -
sub jwt {
    my %o = @_;
    my $certs = env('TEST_NGINX_CERT_DIR');
    my $kid = $o{kid} // 'ABC123DEFG';
    my $key = $o{key} // $kid;
    my $iss = $o{iss} // 'TEAM123456';
    my $iat = $o{iat} // '+0';
    my $alg = $o{alg} // 'ES256';
    $iat = time() + $iat if $iat =~ /^[-+]/;
    my $cmd = "perl $MOCK_DIR/jwt.pl $certs/AuthKey_$key.p8"
              . " $kid $iss $iat $alg";
    my $jwt = `$cmd`;
    die "TimpushMock: jwt.pl failed\n" if $? || !$jwt;
    chomp $jwt;
    return $jwt;
}

sub expand_jwt {
    my $text = shift;
    $text =~ s{\{\{jwt((?:\s+\w+=\S+?)*)\s*\}\}}
              {jwt(map { split /=/, $_, 2 } split ' ', $1)}ge;
    return $text;
}

Test::Nginx::Socket::add_block_preprocessor(sub {
    my $block = shift;

    my $http = $block->http_config // '';
    $block->set_value('http_config',
        "# the simulator alone: no timpush_redis, no timpush_credential\n"
        . $http);

    my $h = $block->more_headers;
    if (defined $h) {
        $block->set_value('more_headers',
                          ref $h ? [map { expand_jwt($_) } @$h]
                                 : expand_jwt($h));
    }
});

# h2(path => '/3/device/..', cert => 'dev', headers => [...], body => ...,
#    method => 'POST'): one request to the simulator's TLS + HTTP/2 server
# with curl; returns { status, version, headers => {lowercase name}, body }
sub h2 {
    my %o = @_;
    my $certs = env('TEST_NGINX_CERT_DIR');
    my $port = env('TEST_NGINX_MOCK_PORT');
    my (undef, $hfile) = tempfile(UNLINK => 1);
    my (undef, $bfile) = tempfile(UNLINK => 1);

    my @cmd = ('curl', '-s', '--http2', '--max-time', '60',
               '--cacert', "$certs/ca.crt", '-D', $hfile, '-o', $bfile,
               '-w', '%{http_code} %{http_version}');
    push @cmd, '--cert', "$certs/$o{cert}.crt", '--key', "$certs/$o{cert}.key"
        if $o{cert};
    push @cmd, '-H', $_ for @{ $o{headers} || [] };
    push @cmd, '-X', $o{method} if $o{method};

    if (defined $o{body}) {
        my ($fh, $dfile) = tempfile(UNLINK => 1);
        print $fh $o{body};
        close $fh;
        push @cmd, '--data-binary', "\@$dfile";
    }

    push @cmd, "https://127.0.0.1:$port" . ($o{path} // "/3/device/$TOKEN");

    open(my $out, '-|', @cmd) or die "curl: $!";
    my $w = do { local $/; <$out> } // '';
    close $out;

    my ($status, $version) = split ' ', $w;
    my %headers;
    for (split /\r?\n/, slurp($hfile)) {
        $headers{lc $1} = $2 if /^([^:\s]+):\s*(.*)$/;
    }

    return { status => $status, version => $version, headers => \%headers,
             body => slurp($bfile) };
}

# several streams on one HTTP/2 connection: nghttp, each path once
sub h2_multiplexed {
    my %o = @_;
    my $certs = env('TEST_NGINX_CERT_DIR');
    my $port = env('TEST_NGINX_MOCK_PORT');
    my ($fh, $dfile) = tempfile(UNLINK => 1);
    print $fh $o{body};
    close $fh;

    my @cmd = ('nghttp', '-n', '-s', '-d', $dfile, '-t', '60');
    push @cmd, "--cert=$certs/$o{cert}.crt", "--key=$certs/$o{cert}.key"
        if $o{cert};
    push @cmd, '-H', $_ for @{ $o{headers} || [] };
    push @cmd, map { "https://127.0.0.1:$port$_" } @{ $o{paths} };

    return system(@cmd) == 0;
}

# the log location on the plain HTTP server: the decoded answer
sub log_get {
    my ($query) = @_;
    my $port = env('TEST_NGINX_SERVER_PORT');
    my $res = HTTP::Tiny->new(timeout => 60)->get(
        "http://127.0.0.1:$port/log" . ($query // ''));
    die "TimpushMock: GET /log: $res->{status} $res->{content}\n"
        unless $res->{status} == 200;
    return JSON::PP->new->decode($res->{content});
}

sub slurp {
    my $file = shift;
    open(my $fh, '<', $file) or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

# payload($n): a valid notification of exactly $n bytes
sub payload {
    my $n = shift;
    return '{"aps":{"alert":"' . ('x' x ($n - 20)) . '"}}';
}

1;
