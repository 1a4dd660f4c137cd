# docs/openapi.yaml, checked: it is a valid OpenAPI 3.1 document whose
# schemas compile and whose examples match them, and every example request
# in it, sent to a gateway (this nginx, with the APNs simulator as in
# t/push.t), gets the answer of its example: the status, and a body that
# the response schema of that status accepts and that equals the example
# (members the document names volatile compared by type).  The checks are
# t/openapi/check.js (node, with the packages of t/openapi/package.json,
# installed by "make deps-test"); each of its lines is a test here.
#
# The examples need three gateways (x-timpush-gateway): "default" (the
# quickstart's two credentials, timpush-errors.conf included), "redis_down"
# (timpush_redis on a port nobody listens on) and "max_pending_1".

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;
use Cwd ();
use POSIX ();
use File::Basename ();

our $ROOT = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
our $DOC = "$ROOT/docs/openapi.yaml";
our $CHECK = "$ROOT/t/openapi/check.js";

# the credentials of conf-examples/quickstart.conf, in the test PKI
our $CREDENTIALS = <<"CONF";
timpush_credential 1001 certificate=$ENV{TEST_NGINX_CERT_DIR}/dev.p12
                        password_file=$ENV{TEST_NGINX_CERT_DIR}/dev.pass
                        env=sandbox;
timpush_credential 2001 key=$ENV{TEST_NGINX_CERT_DIR}/AuthKey_ABC123DEFG.p8
                        key_id=ABC123DEFG team_id=TEAM123456
                        topic=com.example.chat env=production;
CONF

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    $block->set_value('http_config', $CREDENTIALS . $http
        . Timpush::Push::simulator(
              rules => 'timpush_apns_mock_rule dead 410 Unregistered;'));

    if (!defined $block->config) {
        $block->set_value('config', <<"CONF");
include $ROOT/conf-examples/timpush-errors.conf;
location /v1/ {
    client_max_body_size 1m;
    timpush_api;
}
location / {
    return 404;
}
CONF
    }
});

# check.js COMMAND ARGS: each "ok"/"not ok" line it prints becomes a test
sub check {
    my @args = @_;

    # "make test" installs them (deps-test); a copy of the tree without
    # them (t/mutants/run.sh's) skips, CI never does
    if (!-d "$ROOT/t/openapi/node_modules/\@seriousme/openapi-schema-validator") {
        my $why = "t/openapi/node_modules is not installed (make deps-test)";
        Test::More::fail($why) if $ENV{CI};
        SKIP: { Test::More::skip($why, 1) }
        return;
    }

    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        { exec 'node', $CHECK, @args };
        POSIX::_exit(127);
    }

    my ($name, $ok, @diag, $tests);
    my $flush = sub {
        return unless defined $name;
        Test::More::ok($ok, $name) or Test::More::diag(join "\n", @diag);
        ($name, @diag) = (undef);
        $tests++;
    };

    while (my $line = <$fh>) {
        chomp $line;
        if ($line =~ /^(not )?ok - (.*)$/) {
            $flush->();
            ($ok, $name) = (!$1, $2);
        } elsif ($line =~ /^# ?(.*)$/ && defined $name) {
            push @diag, $1;
        } else {
            push @diag, $line;
            Test::More::diag($line) unless defined $name;
        }
    }
    $flush->();
    close $fh;

    my $rc = $? >> 8;
    my $ran = Test::More::ok($tests && $rc <= 1,
                             "check.js $args[0] ran and reported");
    Test::More::diag("exit status $rc") unless $ran;
    return $ran;
}

sub base {
    return 'http://127.0.0.1:' . ($ENV{TEST_NGINX_SERVER_PORT} || 1984);
}

no_shuffle();
no_root_location();
run_tests();

__DATA__

=== TEST 1: docs/openapi.yaml is OpenAPI 3.1, its schemas compile, its examples match them; the gateways it needs are these blocks'
--- init
if (::check('validate', $::DOC)) {
    my $g = `node $::CHECK gateways $::DOC 2>&1`;
    chomp $g;
    Test::More::is($g, 'default max_pending_1 redis_down',
                   'the examples need the gateways of this file\'s blocks');
}
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}



=== TEST 2: every example request of the gateway "default", sent: the answer of its example
--- init
::check('send', $::DOC, 'default', ::base());
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}



=== TEST 3: every example request of the gateway "redis_down"
--- http_config eval
my $port = Timpush::Test::free_port();
"timpush_redis 127.0.0.1:$port prefix=down timeout=1s;\n"
--- init
::check('send', $::DOC, 'redis_down', ::base());
--- request
GET /v1/users/nobody/devices
--- error_code: 503



=== TEST 4: every example request of the gateway "max_pending_1"
--- http_config eval
"timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=mp$$ max_pending=1;\n"
--- init
::check('send', $::DOC, 'max_pending_1', ::base());
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
