# A credential's life (DESIGN §10): a certificate that has expired, or is
# not valid yet, never stops nginx; its devices get 403 CertificateExpired
# and nothing is sent; the error log says so at [alert] when the
# configuration is read and again every timpush_credential_recheck; one
# that expires within 30 days is a [warn], at most once a day.  A .p12
# exported by older Keychain Access (RC2-40, 3DES) loads and pushes.
# Secret files that others may read are loaded with a [warn].

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;

our $C = $ENV{TEST_NGINX_CERT_DIR};

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', ($block->http_config // '')
                                     . Timpush::Push::simulator());
    $block->set_value('config', <<'CONF') unless defined $block->config;
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: expired and not-yet-valid certificates: nginx starts, [alert], 403 CertificateExpired, nothing sent
--- http_config eval
"timpush_credential 1001 certificate=$::C/dev.p12 password_file=$::C/dev.pass
                        env=sandbox;
timpush_credential 1003 certificate=$::C/expired.p12
                        password_file=$::C/expired.pass env=sandbox
                        topic=com.example.chat;
timpush_credential 1004 certificate=$::C/notyet.p12
                        password_file=$::C/notyet.pass env=sandbox;
"
--- init
Timpush::Push::clear_log();
my ($ok, $old, $new) = ('a1' x 32, 'a3' x 32, 'a4' x 32);
Timpush::Push::register('cx', $ok, 1001);
Timpush::Push::register('cx', $old, 1003);
Timpush::Push::register('cx', $new, 1004);
my ($status, $res) = Timpush::Push::push_message({
    to => 'cx', elems => [{ type => 'text', text => 'hi' }] });
Test::More::is($status, 200, 'the push is answered');
Test::More::is($res->{sent}, 1, 'one sent');
Test::More::is($res->{failed}, 2, 'two failed');
my %by = map { $_->{token} => $_ } @{$res->{results}};
Test::More::is($by{$ok}{status}, 200, 'the valid certificate: delivered');
for my $t ($old, $new) {
    Test::More::is($by{$t}{status}, 403, "business_id $by{$t}{business_id}: 403");
    Test::More::is($by{$t}{reason}, 'CertificateExpired',
                   "business_id $by{$t}{business_id}: CertificateExpired");
}
my $log = Timpush::Push::mock_log();
Test::More::is(scalar @$log, 1, 'the simulator got exactly one');
Test::More::is($log->[0]{token}, $ok, 'the valid one');
--- request
GET /v1/users/cx/devices
--- response_body_like chomp
"business_id":1003
--- error_log eval
[qr/\[alert\] .*timpush_credential 1003: the certificate in "[^"]*expired\.p12" expired \d+ days ago: nothing is sent for this app/,
 qr/\[alert\] .*timpush_credential 1004: the certificate in "[^"]*notyet\.p12" is not valid yet/]
--- no_error_log
[error]
[emerg]



=== TEST 2: checked again every timpush_credential_recheck: [alert] each time, [warn] once a day
--- http_config eval
"timpush_credential_recheck 300ms;
timpush_credential 1003 certificate=$::C/expired.p12
                        password_file=$::C/expired.pass env=sandbox;
timpush_credential 1005 certificate=$::C/soon.p12
                        password_file=$::C/soon.pass env=sandbox;
"
--- init
Time::HiRes::sleep($ENV{TEST_NGINX_USE_VALGRIND} ? 5 : 1.5);
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- grep_error_log eval
qr/\[(?:alert|warn)\] .*timpush_credential 100[35]: the certificate in "[^"]*" (?:expired \d+ days ago|expires in \d+ days)/
--- grep_error_log_out eval
qr/\A(?:[^\n]*\[alert\][^\n]*1003[^\n]*\n)*[^\n]*\[warn\][^\n]*1005[^\n]*expires in [89] days\n(?:[^\n]*\[alert\][^\n]*1003[^\n]*expired \d+ days ago\n){2,}\z/
--- error_log
expired
expires in
--- no_error_log
[error]



=== TEST 3: a .p12 with legacy encryption (RC2-40, 3DES) loads and pushes
--- http_config eval
"timpush_credential 1001 certificate=$::C/legacy.p12
                        password_file=$::C/legacy.pass env=sandbox;
"
--- init
Timpush::Push::clear_log();
my $t = 'b5' x 32;
Timpush::Push::register('legacy', $t, 1001);
my ($status, $res) = Timpush::Push::push_message({
    to => 'legacy', elems => [{ type => 'text', text => 'old file' }] });
Test::More::is($res->{results}[0]{status}, 200, 'delivered');
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 1, 'the simulator got it');
Test::More::is($log->[0]{payload}{aps}{alert}, 'old file', 'the alert');
--- request
GET /v1/users/legacy/devices
--- response_body_like chomp
"badge":1,
--- error_log eval
qr/\[notice\] .*timpush_credential 1001: "[^"]*legacy\.p12" uses legacy encryption \(RC2, 3DES\), read with OpenSSL's legacy provider/
--- no_error_log
[error]
may be read by



=== TEST 4: secret files the group or others may read: [warn] naming each, and nginx starts
--- post_setup_server_root
my $dir = "$ENV{TEST_NGINX_SERVER_ROOT}/html/secrets";
mkdir $dir;
for my $f ('dev.p12', 'dev.pass', 'AuthKey_ABC123DEFG.p8') {
    system('cp', "$ENV{TEST_NGINX_CERT_DIR}/$f", "$dir/$f") == 0 or die;
}
chmod 0644, "$dir/dev.p12", "$dir/AuthKey_ABC123DEFG.p8";
chmod 0640, "$dir/dev.pass";
--- http_config eval
"timpush_credential 1001 certificate=\$TEST_NGINX_SERVER_ROOT/html/secrets/dev.p12
                        password_file=\$TEST_NGINX_SERVER_ROOT/html/secrets/dev.pass
                        env=sandbox;
timpush_credential 2001 key=\$TEST_NGINX_SERVER_ROOT/html/secrets/AuthKey_ABC123DEFG.p8
                        team_id=TEAM123456 topic=com.example.chat
                        env=production;
"
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- error_log eval
[qr/\[warn\] .*timpush_credential 1001: certificate "[^"]*secrets\/dev\.p12" may be read by anyone \(mode 0644\): make it readable by its owner only/,
 qr/\[warn\] .*timpush_credential 1001: password_file "[^"]*secrets\/dev\.pass" may be read by its group \(mode 0640\)/,
 qr/\[warn\] .*timpush_credential 2001: key "[^"]*secrets\/AuthKey_ABC123DEFG\.p8" may be read by anyone \(mode 0644\)/]
--- no_error_log
[error]
