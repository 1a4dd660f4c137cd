# "nginx -t": the example configurations pass; every broken credential or
# directive fails with a message that names the directive and the cause,
# and no secret is ever printed.

use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);
use Cwd qw(abs_path);

my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $module = $ENV{TEST_NGINX_MODULE} or die "TEST_NGINX_MODULE is not set\n";
my $mock = $ENV{TEST_NGINX_MOCK_MODULE}
    or die "TEST_NGINX_MOCK_MODULE is not set\n";
my $certs = $ENV{TEST_NGINX_CERT_DIR} or die "TEST_NGINX_CERT_DIR is not set\n";
my $root = abs_path(__FILE__ =~ s{t/config\.t$}{}r || '.');
my $dir = tempdir(CLEANUP => 1);

mkdir "$dir/logs";

sub nginx_t {
    my $conf = shift;
    open my $fh, '>', "$dir/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;
    my $out = `$nginx -p $dir/ -c $dir/nginx.conf -t 2>&1`;
    return ($? >> 8, $out);
}

sub conf {
    my ($http, $extra) = @_;
    $extra //= '';
    return <<"CONF";
load_module $module;
error_log $dir/logs/error.log;
pid $dir/logs/nginx.pid;
events {}
http {
    timpush_redis 127.0.0.1:6379;
    upstream apns { server 127.0.0.1:443; }
    timpush_apns_upstream sandbox apns;
    timpush_apns_upstream production apns;
    $http
    server {
        listen 127.0.0.1:1;
        location /v1/ { $extra timpush_api; }
    }
}
CONF
}

# The production examples as they are, laid out as the README installs
# them (Debian: /etc/nginx/ and the modules under the prefix): modules/
# beside the prefix holds the built .so files, timpush/ beside the
# configuration the test PKI, with the names the examples use, and
# timpush-errors.conf (the include) is copied beside it.  The one rewrite:
# no DNS here, so Apple's hosts become a local address.
my $ex = tempdir(CLEANUP => 1);
mkdir "$ex/modules";
symlink $module, "$ex/modules/ngx_http_timpush_module.so" or die $!;
symlink $mock, "$ex/modules/ngx_http_timpush_mock_module.so" or die $!;
symlink $certs, "$ex/timpush" or die $!;
{
    open my $in, '<', "$root/conf-examples/timpush-errors.conf" or die $!;
    open my $out, '>', "$ex/timpush-errors.conf" or die $!;
    print $out do { local $/; <$in> };
}

for my $example (glob "$root/conf-examples/*.conf") {
    my $name = $example =~ s{.*/}{}r;
    open my $fh, '<', $example or die $!;
    my $conf = do { local $/; <$fh> };

    # an include (timpush-errors.conf) is checked by the files including it
    next unless $conf =~ /^load_module /m;

    if ($name eq 'quickstart.conf') {
        # run from the repository root by conf-examples/run.sh: the
        # module and the PKI of this checkout, its logs in build/run/
        $conf =~ s{^load_module \S*ngx_http_timpush_module\.so;}{load_module $module;}m;
        $conf =~ s{^load_module \S*ngx_http_timpush_mock_module\.so;}{load_module $mock;}m;
        $conf =~ s{(?<![\w.])\.\./t/cert/out/}{$certs/}g;
        $conf =~ s{(pid|error_log|access_log) build/run/}{$1 $dir/logs/}g;
        $conf =~ s{_temp_path build/run/}{_temp_path $dir/}g;
        my ($rc, $out) = nginx_t($conf);
        is($rc, 0, "nginx -t accepts conf-examples/$name") or diag($out);
        next;
    }

    like($conf, qr{^load_module modules/ngx_http_timpush_module\.so;}m,
         "$name loads the module from the modules path");
    unlike($conf, qr/mock/, "$name does not load the APNs simulator");
    like($conf, qr/^\s*include timpush-errors\.conf;/m,
         "$name answers nginx's own errors as JSON");

    $conf =~ s{api(?:\.sandbox)?\.push\.apple\.com:443}{127.0.0.1:443}g;
    open $fh, '>', "$ex/nginx.conf" or die $!;
    print $fh $conf;
    close $fh;
    my $out = `$nginx -t -p $ex/ -c $ex/nginx.conf -e $ex/error.log 2>&1`;
    is($? >> 8, 0, "nginx -t accepts conf-examples/$name") or diag($out);
    unlike($out, qr/\[(?:warn|alert|crit|emerg)\]/,
           "nginx -t has no warning for conf-examples/$name") or diag($out);
}

my @bad = (
    [ "timpush_credential 1001 certificate=$certs/dev.p12 "
      . "password_file=$certs/wrong.pass env=sandbox;",
      qr/timpush_credential 1001: wrong password for "[^"]*dev\.p12"/,
      'wrong .p12 password' ],
    [ "timpush_credential 1001 certificate=$certs/none.p12 "
      . "password_file=$certs/dev.pass env=sandbox;",
      qr/timpush_credential 1001: cannot read certificate "[^"]*none\.p12" \(2: No such file/,
      'missing .p12' ],
    [ "timpush_credential 1001 certificate=$certs/dev.p12 "
      . "password_file=$certs/none.pass env=sandbox;",
      qr/timpush_credential 1001: cannot read password_file "[^"]*none\.pass"/,
      'missing password file' ],
    [ "timpush_credential 1001 certificate=$certs/dev.crt "
      . "password_file=$certs/dev.pass env=sandbox;",
      qr/timpush_credential 1001: "[^"]*dev\.crt" is not a PKCS#12/,
      'not a .p12' ],
    [ "timpush_credential 1001 certificate=$certs/nouid.p12 "
      . "password_file=$certs/nouid.pass env=sandbox;",
      qr/timpush_credential 1001: the certificate in "[^"]*" has no UID.*set "topic="/,
      'certificate without UID and no topic=' ],
    [ "timpush_credential 1001 certificate=$certs/dev.p12 env=sandbox;",
      qr/timpush_credential 1001: "password_file=" is required/,
      'no password_file' ],
    [ "timpush_credential 1001 certificate=$certs/dev.p12 "
      . "password_file=$certs/dev.pass;",
      qr/timpush_credential 1001: "env=sandbox" or "env=production" is required/,
      'no env' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_P384KEY001.p8 "
      . "team_id=TEAM123456 topic=a.b env=production;",
      qr/timpush_credential 2001: the key in "[^"]*AuthKey_P384KEY001\.p8" is not a P-256/,
      'P-384 key' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_RSAKEY0001.p8 "
      . "team_id=TEAM123456 topic=a.b env=production;",
      qr/timpush_credential 2001: the key in "[^"]*" is not a P-256/,
      'RSA key' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_GARBAGE001.p8 "
      . "team_id=TEAM123456 topic=a.b env=production;",
      qr/timpush_credential 2001: "[^"]*AuthKey_GARBAGE001\.p8" is not an unencrypted PEM private key/,
      'not a key' ],
    [ "timpush_credential 2001 key=$certs/none.p8 key_id=ABC123DEFG "
      . "team_id=TEAM123456 topic=a.b env=production;",
      qr/timpush_credential 2001: cannot read key "[^"]*none\.p8"/,
      'missing key file' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8 "
      . "topic=a.b env=production;",
      qr/timpush_credential 2001: "team_id=" is required/,
      'no team_id' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8 "
      . "team_id=TEAM123456 env=production;",
      qr/timpush_credential 2001: "topic=" \(the app's bundle id\) is required/,
      'no topic with a key' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8 "
      . "key_id=BAD-ID team_id=TEAM123456 topic=a.b env=production;",
      qr/timpush_credential 2001: "key_id=" is required/,
      'malformed key_id' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8 "
      . "certificate=$certs/dev.p12 team_id=TEAM123456 topic=a.b "
      . "env=production;",
      qr/timpush_credential 2001: either "certificate=" \(\.p12\) or "key=" \(\.p8\) is required/,
      'both certificate= and key=' ],
    [ "timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8 "
      . "team_id=TEAM123456 topic=a.b env=production colour=blue;",
      qr/timpush_credential 2001: invalid parameter "colour=blue"/,
      'unknown parameter' ],
    [ "timpush_credential 0 key=$certs/AuthKey_ABC123DEFG.p8 "
      . "team_id=TEAM123456 topic=a.b env=production;",
      qr/timpush_credential: invalid business_id "0"/,
      'business_id 0' ],
    [ ("timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8 "
      . "team_id=TEAM123456 topic=a.b env=production;\n") x 2,
      qr/timpush_credential: business_id 2001 is configured twice/,
      'duplicate business_id' ],
    [ "timpush_devices_per_app 0;",
      qr/"timpush_devices_per_app" directive must be a number from 1 to 100/,
      'devices_per_app 0' ],
);

for my $case (@bad) {
    my $pattern = $case->[-2];
    my $name = $case->[-1];
    my $http = join '', @$case[0 .. $#$case - 2];
    my ($rc, $out) = nginx_t(conf($http));
    isnt($rc, 0, "nginx -t fails: $name");
    like($out, $pattern, "the message names the directive: $name");
    unlike($out, qr/dev-secret|prod secret|not the password/,
           "no secret in the message: $name");
}

# timpush_redis: names resolved now, known parameters, and needed by the API
my @redis = (
    [ 'timpush_redis redis.invalid:6379;',
      qr/timpush_redis: cannot use "redis\.invalid:6379": host not found/ ],
    [ "timpush_redis 127.0.0.1:6379 password_file=$certs/none.pass;",
      qr/timpush_redis: cannot read password_file "[^"]*none\.pass"/ ],
    [ 'timpush_redis 127.0.0.1:6379 user=admin;',
      qr/"timpush_redis" directive has "user=" without "password_file="/ ],
    [ 'timpush_redis 127.0.0.1:6379 "prefix=a{b";',
      qr/"timpush_redis" directive has an invalid "prefix="/ ],
    [ 'timpush_redis 127.0.0.1:6379 timeout=soon;',
      qr/"timpush_redis" directive has an invalid "timeout="/ ],
    [ 'timpush_redis 127.0.0.1:6379 max_pending=0;',
      qr/"timpush_redis" directive has an invalid "max_pending="/ ],
    [ 'timpush_redis 127.0.0.1:6379 colour=blue;',
      qr/invalid parameter "colour=blue"/ ],
    [ "timpush_redis 127.0.0.1:6379 trusted_certificate=$certs/ca.crt;",
      qr/"timpush_redis" directive has "trusted_certificate=" or "tls_name=" without "tls"/ ],
    [ 'timpush_redis unix:/tmp/redis.sock tls;',
      qr/"timpush_redis" directive has "tls" on a unix socket without "tls_name="/ ],
    [ "timpush_redis 127.0.0.1:6379 tls trusted_certificate=$certs/none.crt;",
      qr/timpush_redis: cannot use trusted_certificate="[^"]*none\.crt"/ ],
    [ 'timpush_redis 127.0.0.1:6379 tls tls_name=;',
      qr/"timpush_redis" directive has an empty "tls_name="/ ],
    [ '',
      qr/"timpush_api" needs "timpush_redis" in the http block/ ],
);

for my $case (@redis) {
    my $conf = conf('');
    $conf =~ s/    timpush_redis 127\.0\.0\.1:6379;\n/    $case->[0]\n/;
    my ($rc, $out) = nginx_t($conf);
    isnt($rc, 0, "nginx -t fails: '$case->[0]'");
    like($out, $case->[1], "the message says why: '$case->[0]'");
}

# what each credential resolved to: the topic of a .p12 is its subject UID
my ($rc, $out) = nginx_t(conf(
    "timpush_credential 1001 certificate=$certs/dev.p12 "
    . "password_file=$certs/dev.pass env=sandbox;\n"
    . "timpush_credential 1002 certificate=$certs/nouid.p12 "
    . "password_file=$certs/nouid.pass env=production topic=com.x.y;\n"
    . "timpush_credential 2002 key=$certs/AuthKey_XYZ987WVUT.p8 "
    . "team_id=TEAM654321 topic=com.example.chat2 env=sandbox;"));
is($rc, 0, 'nginx -t accepts three credentials') or diag($out);
like($out, qr/timpush_credential 1001: certificate, topic com\.example\.chat, sandbox, expires in \d+ days/,
     'the topic of a .p12 is the UID of its certificate');
like($out, qr/timpush_credential 1002: certificate, topic com\.x\.y, production/,
     'topic= is used for a certificate without UID');
like($out, qr/timpush_credential 2002: token key XYZ987WVUT of team TEAM654321, topic com\.example\.chat2, sandbox/,
     'key_id= comes from the AuthKey_<key id>.p8 file name');
unlike($out, qr/dev-secret|nouid\n|BEGIN/, 'no secret in the output');

($rc, $out) = nginx_t(conf('', 'client_max_body_size 0;'));
isnt($rc, 0, 'nginx -t fails: timpush_api with client_max_body_size 0');
like($out, qr/needs client_max_body_size between 1 and 64m/,
     'the message says why: client_max_body_size 0');

($rc, $out) = nginx_t(conf('timpush_redis [::1]:6379;') =~
                      s/    timpush_redis 127\.0\.0\.1:6379;\n//r);
is($rc, 0, 'nginx -t accepts an IPv6 Redis address') or diag($out);

done_testing();
