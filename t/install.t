# make install and make uninstall, into a staging directory (DESTDIR):
# exactly the files of README "Installing" go in, with Debian's layout for
# a module (the .so, a modules-available snippet, its modules-enabled
# link); nginx -t loads the installed module through the snippet with a
# configuration that uses it; make uninstall leaves none of them.  The
# system itself is never touched.

use strict;
use warnings;

use Test::More;
use Cwd ();
use File::Basename ();
use File::Temp ();

my $root = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');
my $module = $ENV{TEST_NGINX_MODULE} || "$root/build/objs/ngx_http_timpush_module.so";
my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $certs = $ENV{TEST_NGINX_CERT_DIR} || "$root/t/cert/out";

plan skip_all => "$module is not built (make build)" unless -f $module;

my $dest = File::Temp::tempdir(CLEANUP => 1);
my $work = File::Temp::tempdir(CLEANUP => 1);

# the module under test, without building anything ("-o build")
sub make {
    my $out = `make -s --no-print-directory -C $root -o build @_ DESTDIR=$dest MODULE=$module 2>&1`;
    return ($? >> 8, $out);
}

sub files {
    my @f = `cd $dest && find . \\( -type f -o -type l \\) -printf '%P\\n' | LC_ALL=C sort`;
    chomp @f;
    return @f;
}

my ($rc, $out) = make('install');
is($rc, 0, 'make install DESTDIR=...') or diag($out);

my @docs = map { "usr/share/doc/timpush/$_" }
           'LICENSE', 'README.md',
           (map { s{^\Q$root\E/}{}r } grep { -f } glob("$root/docs/*")),
           (map { s{^\Q$root\E/}{}r } glob("$root/conf-examples/*.conf"));

my @want = sort +(
    'etc/nginx/modules-enabled/50-mod-http-timpush.conf',
    'usr/lib/nginx/modules/ngx_http_timpush_module.so',
    'usr/local/sbin/timpush-reindex',
    'usr/share/nginx/modules-available/mod-http-timpush.conf',
    @docs);

is_deeply([files()], \@want, 'these files, and no other (no simulator)')
    or diag(join "\n", files());

is(readlink("$dest/etc/nginx/modules-enabled/50-mod-http-timpush.conf"),
   '/usr/share/nginx/modules-available/mod-http-timpush.conf',
   'modules-enabled links to the snippet, as Debian\'s module packages do');

open my $fh, '<', "$dest/usr/share/nginx/modules-available/mod-http-timpush.conf"
    or die $!;
is(do { local $/; <$fh> }, "load_module modules/ngx_http_timpush_module.so;\n",
   'the snippet loads the module from nginx\'s modules directory');
close $fh;

ok(-x "$dest/usr/local/sbin/timpush-reindex", 'timpush-reindex is executable');
is(system('cmp', '-s', $module,
          "$dest/usr/lib/nginx/modules/ngx_http_timpush_module.so"), 0,
   'the module installed is the one built');

# nginx -t, prefix in the staging directory: "modules/" resolves there
# through the link nginx-common makes (/usr/share/nginx/modules)
symlink '../../lib/nginx/modules', "$dest/usr/share/nginx/modules" or die $!;

open $fh, '>', "$work/nginx.conf" or die $!;
print $fh <<"CONF";
include $dest/usr/share/nginx/modules-available/mod-http-timpush.conf;
error_log $work/error.log;
pid $work/nginx.pid;
events {}
http {
    access_log off;
    timpush_redis 127.0.0.1:6379 prefix=timpush timeout=2s;
    timpush_credential 1001 certificate=$certs/dev.p12
                            password_file=$certs/dev.pass env=sandbox;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    upstream apns { server 127.0.0.1:8443; }
    timpush_apns_upstream sandbox apns;
    timpush_apns_upstream production apns;
    timpush_apns_trusted_certificate $certs/ca.crt;
    server {
        listen 127.0.0.1:8080;
        include $dest/usr/share/doc/timpush/conf-examples/timpush-errors.conf;
        location /v1/ {
            client_max_body_size 1m;
            timpush_api;
        }
    }
}
CONF
close $fh;

$out = `$nginx -t -p $dest/usr/share/nginx/ -c $work/nginx.conf -e $work/error.log 2>&1`;
is($? >> 8, 0, 'nginx -t loads the installed module through the snippet')
    or diag($out);
like($out . `cat $work/error.log`, qr/timpush_credential 1001: certificate/,
     'and reads the timpush directives');

unlink "$dest/usr/share/nginx/modules";

($rc, $out) = make('uninstall');
is($rc, 0, 'make uninstall DESTDIR=...') or diag($out);
is_deeply([files()], [], 'nothing installed is left') or diag(join "\n", files());
ok(!-e "$dest/usr/share/doc/timpush", 'nor the documentation directory');
ok(!-e "$dest/usr/lib/nginx", 'nor the modules directory it made');

done_testing();
