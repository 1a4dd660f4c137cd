# Secrets out of core dumps (DESIGN §10): a core of the gateway's master
# and of a worker that has pushed with a .p12 and a .p8 holds neither
# private key, nor the .p12's password, nor Redis's, nor the provider
# token.  The cores are taken with gdb's gcore, which leaves out what the
# process marked MADV_DONTDUMP (OpenSSL's secure heap, nghttp2's frame
# buffers), as the kernel does for a crash.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port);
use Timpush::Push;
use POSIX ();
use IO::Socket::INET;

$ENV{TEST_NGINX_GW_PORT} = free_port();
$ENV{TEST_NGINX_SIM_PORT} = free_port();
$ENV{TEST_NGINX_SIMLOG_PORT} = free_port();
$ENV{TEST_NGINX_SECRET_REDIS} = free_port();

our $redis = fork // die "fork: $!";
if ($redis == 0) {
    open STDOUT, '>', '/dev/null';
    open STDERR, '>', '/dev/null';
    { exec 'redis-server', '--port', $ENV{TEST_NGINX_SECRET_REDIS},
           '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
           '--requirepass', 'redis-core-secret-7f3a' };
    POSIX::_exit(127);
}
for (1 .. 100) {
    last if IO::Socket::INET->new("127.0.0.1:$ENV{TEST_NGINX_SECRET_REDIS}");
    Time::HiRes::sleep(0.05);
}

END {
    local $?;
    if ($redis) { kill 'KILL', $redis; waitpid $redis, 0 }
}

# the bytes to look for: the keys' private parts, from openssl's own dump
sub Timpush::Push::key_bytes {
    my ($file, $from, $to) = @_;
    my $text = `openssl pkey -in $file -text -noout 2>/dev/null`;
    my ($hex) = $text =~ /^$from:\n(.*?)^$to:/ms or die "no $from in $file";
    $hex =~ s/[\s:]//g;
    $hex =~ s/^00//;
    return pack 'H*', $hex;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: cores of the master and of a worker that pushed hold no private key, password or provider token
--- config
location /v1/ { timpush_api; }
--- init
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my ($gw_port, $sim_port) = ($ENV{TEST_NGINX_GW_PORT}, $ENV{TEST_NGINX_SIM_PORT});
my $dir = File::Temp::tempdir(CLEANUP => 1);
open my $fh, '>', "$dir/redis.pass" or die;
print $fh "redis-core-secret-7f3a\n";
close $fh;
chmod 0600, "$dir/redis.pass";

my $sim = Timpush::Push::start_simulator($sim_port, $ENV{TEST_NGINX_SIMLOG_PORT});
my $gw = Timpush::Push::start_nginx(master => 1, port => $gw_port, http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_SECRET_REDIS} prefix=sec
                  password_file=$dir/redis.pass;
    upstream sim { server 127.0.0.1:$sim_port; }
    timpush_apns_upstream sandbox sim;
    timpush_apns_upstream production sim;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_credential 1001 certificate=$certs/dev.p12
                            password_file=$certs/dev.pass env=sandbox;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    server {
        listen 127.0.0.1:$gw_port;
        location /v1/ { timpush_api; }
    }");

Timpush::Push::register_many('sc', 2, 1001, $gw_port);
Timpush::Push::register_many('sk', 2, 2001, $gw_port, 0xb0000000);
my ($status, $res) = Timpush::Push::push_message({
    to => ['sc0', 'sc1', 'sk0', 'sk1'],
    elems => [{ type => 'text', text => 'secret keeping' }] }, $gw_port);
Test::More::is($res->{sent}, 4, 'pushed with the certificate and the token');

my %needles = (
    'the .p8 private key' =>
        Timpush::Push::key_bytes("$certs/AuthKey_ABC123DEFG.p8", 'priv', 'pub'),
    "the .p12's private exponent" =>
        substr(Timpush::Push::key_bytes("$certs/dev.key", 'privateExponent',
                                        'prime1'), 0, 32),
    "the .p12's first prime" =>
        Timpush::Push::key_bytes("$certs/dev.key", 'prime1', 'prime2'),
    "the .p12's password" => 'dev-secret',
    "Redis's password" => 'redis-core-secret-7f3a',
    # {"alg":"ES256","kid":"ABC123DEFG"}: the head of every provider token
    'a provider token' => 'eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ',
);

my ($worker) = grep { /^\d+$/ } split /\s+/, `pgrep -P $gw->{pid}`;
for my $who ([master => $gw->{pid}], [worker => $worker]) {
    my ($name, $pid) = @$who;
    system("gcore -o $dir/core $pid >/dev/null 2>&1");
    my $core = Timpush::Push::slurp("$dir/core.$pid");
    Test::More::cmp_ok(length $core, '>', 1_000_000, "a core of the $name");
    for my $what (sort keys %needles) {
        Test::More::is(index($core, $needles{$what}), -1,
                       "the ${name}'s core holds not $what");
    }
    unlink "$dir/core.$pid";
}

Timpush::Push::stop_nginx($gw);
Timpush::Push::stop_nginx($sim);
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
