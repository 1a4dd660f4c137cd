# The runner must see what a test could otherwise pass over: a worker that
# dies under a master process, nginx that does not start in a block that
# ignores the response, an [alert] nobody named, a crash in an nginx a test
# started itself.  Runs t/runner/crashes.t (its fixture) and reads its TAP.
# Only t/lib's runner makes these checks: under OpenResty's Test::Nginx
# (TEST_NGINX_REAL) this file is skipped.

use strict;
use warnings;
use Test::More;

plan skip_all => "checks t/lib's runner, not OpenResty's"
    if $ENV{TEST_NGINX_REAL} || $INC{'Test/Nginx/Socket.pm'};
plan skip_all => "the fixture's crashes cannot pass a valgrind run"
    if $ENV{TEST_NGINX_USE_VALGRIND};

use Cwd qw(abs_path);
my $root = abs_path(($0 =~ s{t/runner\.t$}{}r) || '.');
my $servroot = "$root/t/servroot-runner";

local $ENV{TEST_NGINX_SERVROOT} = $servroot;
my $tap = `prove -v $root/t/runner/crashes.t 2>&1`;
system 'rm', '-rf', $servroot;

my %fail;
for my $line (split /\n/, $tap) {
    $fail{$1} .= "$line\n" if $line =~ /^\s*not ok \d+ - \S+ (TEST \d+):/;
}

my %expect = (
    'TEST 1' => undef,
    'TEST 2' => qr/exited on signal|the workers started are the ones alive/,
    'TEST 3' => qr/nginx is running/,
    'TEST 4' => qr/unexpected in error\.log .*something went wrong/,
    'TEST 5' => undef,
);

for my $test (sort keys %expect) {
    if (defined $expect{$test}) {
        like($fail{$test} // '', $expect{$test}, "$test fails as it must");
    } else {
        ok(!$fail{$test}, "$test passes") or diag($fail{$test});
    }
}

# TEST 6's failures are not named after its block: they come from the init
like($tap, qr/not ok \d+ - nginx \S+: unexpected in error\.log: .*exited on signal/,
     'TEST 6: a crash in an nginx the test started fails');

done_testing();
