# APNs host names resolved again with nginx's resolver (DESIGN.md §15):
# the gateway's APNs is "apns.test:PORT", a name only Timpush::DNS
# (t/lib/Timpush/DNS.pm, a DNS server on a loopback UDP port) knows, and
# nginx has "resolver 127.0.0.1:<that port> valid=1s".  nginx's resolver
# keeps an answer while ngx_time() (whole seconds) is not past the second
# it was given plus valid=, i.e. up to 2 s: the blocks wait 2.5 s for an
# answer to age out.  The APNs peers are
# Timpush::H2Peer, on 127.0.0.1 and 127.0.0.2, with a certificate for
# apns.test made here from the test CA.  Each block checks:
#  - every push is answered 200 within the notification deadline, every
#    device in the results exactly once, delivered or failed with a reason;
#  - no worker crashed.
#
# nginx runs with a master process, so that a worker that crashes is logged
# ("worker process ... exited on signal"), replaced, and the checks after
# it still run.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;
use Timpush::Checks;
use Timpush::H2Peer;
use Timpush::DNS;
use File::Temp ();

# the notification deadline; valgrind makes nginx about 20 times slower
our $DEADLINE = $ENV{TEST_NGINX_USE_VALGRIND} ? 30 : 3;
$ENV{TEST_NGINX_DEADLINE} = "${DEADLINE}s";

# how much later than the deadline the push answer may come
our $MARGIN = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;

# how long a block waits for pushes to be delivered once DNS answers
our $RECOVER = $ENV{TEST_NGINX_USE_VALGRIND} ? 150 : 20;

$ENV{TEST_NGINX_DNS_PORT} ||= Timpush::Test::free_port();

# the APNs peers' certificate: apns.test, from the test CA
our $CERTS = File::Temp::tempdir(CLEANUP => 1);
{
    my $ca = $ENV{TEST_NGINX_CERT_DIR} // die "TEST_NGINX_CERT_DIR is not set\n";
    open my $fh, '>', "$CERTS/ext.cnf" or die $!;
    print {$fh} "subjectAltName = DNS:apns.test\n"
              . "extendedKeyUsage = serverAuth\n";
    close $fh;
    system("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
           . "-keyout $CERTS/server.key -out $CERTS/server.csr "
           . "-subj /CN=apns.test >/dev/null 2>&1") == 0
        or die "openssl req failed\n";
    system("openssl x509 -req -in $CERTS/server.csr -CA $ca/ca.crt "
           . "-CAkey $ca/ca.key -set_serial 4242 -days 30 "
           . "-extfile $CERTS/ext.cnf -out $CERTS/server.crt "
           . ">/dev/null 2>&1") == 0
        or die "openssl x509 failed\n";
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', <<'CONF' . ($block->http_config // ''));
resolver 127.0.0.1:$TEST_NGINX_DNS_PORT valid=1s;
timpush_apns_upstream sandbox apns.test:$TEST_NGINX_APNS_PORT;
timpush_apns_upstream production apns.test:$TEST_NGINX_APNS_PORT;
timpush_apns_connections 1;
timpush_apns_timeout $TEST_NGINX_DEADLINE;
CONF
    $block->set_value('config', "location /v1/ { timpush_api; }\n")
        unless defined $block->config;
});

master_on();
workers(1);
log_level('info');
no_shuffle();
run_tests();


# ---- helpers for the blocks (their init code runs in the runner's package)

sub error_log {
    return Timpush::Push::slurp(server_root() . '/logs/error.log');
}

sub dns {
    return Timpush::DNS::start(port => $ENV{TEST_NGINX_DNS_PORT},
                               name => 'apns.test', ttl => 1, @_);
}

sub peer {
    return Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                  certs => $CERTS, mode => 'normal', @_);
}

# users <prefix>0.. with one device each under $business_id
sub devices {
    my ($prefix, $n, $business_id) = @_;
    my @users = map { "$prefix$_" } 0 .. $n - 1;
    my @tokens = Timpush::Push::register_many($prefix, $n, $business_id);
    return (\@users, \@tokens);
}

# One push to $users, checked as every block does (Timpush::Checks):
# answered 200 within the deadline, one result per device of $tokens and
# no other, no worker crashed.  Returns token => result.
sub push_checked {
    my ($users, $tokens) = @_;
    return Timpush::Checks::push_checked($users, $tokens,
                                         deadline => $DEADLINE,
                                         margin => $MARGIN,
                                         text => 'resolve');
}

# pushes, each checked, until one is delivered to every device or
# $seconds have passed: true if one was
sub push_until_delivered {
    my ($users, $tokens, $seconds) = @_;
    my $until = Time::HiRes::time() + $seconds;
    while (Time::HiRes::time() < $until) {
        my %r = push_checked($users, $tokens);
        return 1 unless grep { !delivered($_) } values %r;
        Time::HiRes::sleep(0.5);
    }
    return 0;
}

sub no_crash { Timpush::Checks::no_crash() }
sub check_results { Timpush::Checks::check_results(@_) }
sub delivered { Timpush::Checks::delivered(@_) }
sub failed_5xx { Timpush::Checks::failed_5xx(@_) }

sub accepted {
    my ($peer) = @_;
    my %a = Timpush::H2Peer::accepted($peer);
    return scalar keys %a;
}

# "nginx -t" of the block's configuration: (exit code, output)
sub nginx_t {
    my ($conf) = @_;
    my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
    my $root = server_root();
    $conf //= "$root/conf/nginx.conf";
    my $out = `$nginx -t -p $root/ -c $conf -e $root/logs/nginx-t.log 2>&1`;
    return ($? >> 8, $out);
}

# a configuration of its own for "nginx -t": $http in the http block
sub conf_file {
    my ($http) = @_;
    my $root = server_root();
    my $file = "$root/conf/t.conf";
    open my $fh, '>', $file or die "$file: $!";
    print {$fh} <<"CONF";
load_module $ENV{TEST_NGINX_MODULE};
pid $root/logs/t.pid;
events {}
http {
    timpush_redis 127.0.0.1:6379;
    timpush_apns_trusted_certificate $ENV{TEST_NGINX_CERT_DIR}/ca.crt;
    timpush_credential 1002 certificate=$ENV{TEST_NGINX_CERT_DIR}/prod.p12
                            password_file=$ENV{TEST_NGINX_CERT_DIR}/prod.pass
                            env=production;
    $http
    server {
        listen 127.0.0.1:1;
        location /v1/ { timpush_api; }
    }
}
CONF
    close $fh;
    return $file;
}

__DATA__

=== TEST 1: the name resolved again once its TTL is over: 127.0.0.1 first, then 127.0.0.2; a new connection goes to the new address
--- init
my $dns = main::dns(addrs => ['127.0.0.1']);
my $a = main::peer();
my $b = main::peer(addr => '127.0.0.2');
my ($users, $tokens) = main::devices('ra', 5, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, 'delivered through 127.0.0.1');
Test::More::is(main::accepted($a), 5, 'the peer on 127.0.0.1 took them');
Test::More::is(Timpush::H2Peer::connections($b), 0, 'none went to 127.0.0.2');
# the name moves; the old server goes, with the gateway's connection to it
Timpush::DNS::set($dns, addrs => ['127.0.0.2']);
Timpush::H2Peer::stop($a);
Time::HiRes::sleep(2.5);
%r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, 'delivered through 127.0.0.2');
Test::More::is(main::accepted($b), 5, 'the peer on 127.0.0.2 took them');
Test::More::cmp_ok(Timpush::DNS::queries($dns, 'A'), '>=', 2,
                   'the name was asked for again');
# two addresses: a new connection goes to either
Timpush::DNS::set($dns, addrs => ['127.0.0.1', '127.0.0.2']);
Timpush::H2Peer::stop($b);
$a = main::peer();
$b = main::peer(addr => '127.0.0.2');
Time::HiRes::sleep(2.5);
%r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, 'delivered with two addresses');
Test::More::is(main::accepted($a) + main::accepted($b), 5, 'by one or the other');
Timpush::H2Peer::stop($_) for $a, $b;
--- request
GET /v1/users/ra0/devices
--- response_body_like chomp
"badge":3,
--- error_log
"apns.test" resolved to 1 address(es), 127.0.0.1:
"apns.test" resolved to 1 address(es), 127.0.0.2:
"apns.test" resolved to 2 address(es)
--- no_error_log
exited on signal
[alert]



=== TEST 2: the DNS server silent at start: nginx starts with a [warn], pushes fail in time with a reason; once it answers, pushes are delivered without a reload
--- init
my ($rc, $out) = main::nginx_t();
Test::More::is($rc, 0, 'nginx -t passes');
Test::More::like($out, qr/\[warn\] .*"apns\.test:\d+" for the (sandbox|production) credentials cannot be resolved yet \([^)]*\), resolving when connecting/,
                 'a [warn]: resolving when connecting');
Test::More::unlike($out, qr/\[emerg\]/, 'no [emerg]');
my $dns = main::dns(mode => 'silent');
my $a = main::peer();
my ($users, $tokens) = main::devices('rs', 3, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::failed_5xx, 'each failed with a 5xx and a reason');
Test::More::is(Timpush::H2Peer::connections($a), 0, 'nothing dialled');
Test::More::cmp_ok(Timpush::DNS::queries($dns, 'A'), '>=', 1, 'the name was asked for');
Timpush::DNS::set($dns, mode => 'answer', addrs => ['127.0.0.1']);
Test::More::ok(main::push_until_delivered($users, $tokens, $main::RECOVER),
               'delivered once the DNS server answers');
Timpush::H2Peer::stop($a);
--- request
GET /v1/users/rs0/devices
--- response_body_like chomp
"token":
--- error_log
"apns.test" could not be resolved (110: Operation timed out): no address yet
--- no_error_log
exited on signal
[alert]



=== TEST 3: NXDOMAIN at start: pushes fail in time with a reason; once the name exists, pushes are delivered without a reload
--- init
my $dns = main::dns(mode => 'nxdomain');
my $a = main::peer();
my ($users, $tokens) = main::devices('rn', 3, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::failed_5xx, 'each failed with a 5xx and a reason');
Test::More::is(Timpush::H2Peer::connections($a), 0, 'nothing dialled');
Timpush::DNS::set($dns, mode => 'answer', addrs => ['127.0.0.1']);
Test::More::ok(main::push_until_delivered($users, $tokens, $main::RECOVER),
               'delivered once the name exists');
Timpush::H2Peer::stop($a);
--- request
GET /v1/users/rn0/devices
--- response_body_like chomp
"token":
--- error_log
"apns.test" could not be resolved (3: Host not found)
--- no_error_log
exited on signal
[alert]



=== TEST 4: a DNS server that answers garbage (short, cut, looping, lying packets): no crash, pushes fail in time; then it answers and pushes are delivered
--- init
my $dns = main::dns(mode => 'garbage');
my $a = main::peer();
my ($users, $tokens) = main::devices('rg', 3, 1001);
my $until = Time::HiRes::time() + 8;
while (Time::HiRes::time() < $until) {
    my %r = main::push_checked($users, $tokens);
    main::check_results(\%r, \&main::failed_5xx, 'each failed with a 5xx and a reason');
}
Test::More::cmp_ok(Timpush::DNS::queries($dns, 'A'), '>=', 1,
                   'garbage was sent');
Test::More::is(Timpush::H2Peer::connections($a), 0, 'nothing dialled');
Timpush::DNS::set($dns, mode => 'answer', addrs => ['127.0.0.1']);
Test::More::ok(main::push_until_delivered($users, $tokens, $main::RECOVER),
               'delivered once the DNS server answers');
Timpush::H2Peer::stop($a);
--- request
GET /v1/users/rg0/devices
--- response_body_like chomp
"token":
--- no_error_log
exited on signal
[alert]



=== TEST 5: a DNS server that fails after a good answer: the last good addresses are used, with a [warn]
--- init
my $dns = main::dns(addrs => ['127.0.0.1']);
my $a = main::peer();
my ($users, $tokens) = main::devices('rl', 3, 1001);
my %r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, 'delivered');
Timpush::DNS::set($dns, mode => 'servfail');
# the connection goes; the next one asks again, past the TTL
Timpush::H2Peer::stop($a);
$a = main::peer();
Time::HiRes::sleep(2.5);
%r = main::push_checked($users, $tokens);
main::check_results(\%r, \&main::delivered, 'delivered to the last good address');
Test::More::is(main::accepted($a), 3, 'through a new connection');
Test::More::cmp_ok(Timpush::DNS::queries($dns, 'A'), '>=', 2,
                   'the name was asked for again');
Timpush::H2Peer::stop($a);
--- request
GET /v1/users/rl0/devices
--- response_body_like chomp
"badge":2,
--- error_log
"apns.test" could not be resolved (2: Server failure): its last addresses are used
--- no_error_log
exited on signal
[alert]



=== TEST 6: "host:port" without a resolver is resolved at start, and nginx -t fails on a name that does not resolve, naming the directive; a bad host fails too
--- init
my ($rc, $out) = main::nginx_t(main::conf_file(
    'timpush_apns_upstream production apns.test:443;'));
Test::More::isnt($rc, 0, 'nginx -t fails without a resolver');
Test::More::like($out, qr/\[emerg\] .*cannot resolve "apns\.test:443" for the production credentials .*"timpush_apns_upstream production" or nginx's "resolver"/,
                 'the [emerg] says what to set');
($rc, $out) = main::nginx_t(main::conf_file(
    'timpush_apns_upstream production 127.0.0.1:8443;'));
Test::More::is($rc, 0, 'an address and a port: fine') or Test::More::diag($out);
($rc, $out) = main::nginx_t(main::conf_file(
    'timpush_apns_upstream production apns.test:99999;'));
Test::More::like($out, qr/\[emerg\] .*timpush_apns_upstream production: invalid host "apns\.test:99999": invalid port/,
                 'a bad port: [emerg] naming the directive');
($rc, $out) = main::nginx_t(main::conf_file(
    "resolver 127.0.0.1:$ENV{TEST_NGINX_DNS_PORT};\n"
    . 'timpush_apns_upstream production apns.test:443;'));
Test::More::is($rc, 0, 'with a resolver: nginx -t passes') or Test::More::diag($out);
Test::More::like($out, qr/\[warn\] .*cannot be resolved yet/, 'with a [warn]');
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
exited on signal
[alert]



=== TEST 7: a name with an address that refuses connections: connections go to the other address in turn, pushes delivered within the deadline
--- init
my $dns = main::dns(addrs => ['127.0.0.3', '127.0.0.2']);
my $b = main::peer(addr => '127.0.0.2');
my ($users, $tokens) = main::devices('rr', 3, 1001);
for my $round (1 .. 3) {
    my %r = main::push_checked($users, $tokens);
    main::check_results(\%r, \&main::delivered, "round $round: delivered");
    Test::More::is(main::accepted($b), 3, "round $round: through 127.0.0.2");
    # the connection goes: the next one picks an address again
    Timpush::H2Peer::stop($b);
    $b = main::peer(addr => '127.0.0.2');
}
Timpush::H2Peer::stop($b);
--- request
GET /v1/users/rr0/devices
--- response_body_like chomp
"badge":3,
--- error_log
"apns.test" resolved to 2 address(es)
connect() to 127.0.0.3:
--- no_error_log
exited on signal
[alert]
