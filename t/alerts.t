# docs/prometheus-alerts.yml, the alerts of docs/operations.md: promtool
# accepts the rules, and each alert fires on the series of t/alerts/test.yml
# that should fire it, with the labels and summary written there, and on
# no other (a routine 410, a credential with a year left, a gateway whose
# Redis is up).

use strict;
use warnings;

use Test::More;
use Cwd ();
use File::Basename ();

my $root = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/..');

if (system('sh', '-c', 'command -v promtool >/dev/null') != 0) {
    # make test installs it (Debian's prometheus package, DEB_TEST)
    plan skip_all => 'promtool is not installed (make deps-test)' unless $ENV{CI};
}

my $out = `promtool check rules $root/docs/prometheus-alerts.yml 2>&1`;
is($? >> 8, 0, 'promtool check rules docs/prometheus-alerts.yml') or diag($out);
like($out, qr/SUCCESS: 9 rules found/, 'nine rules');

$out = `cd $root/t/alerts && promtool test rules test.yml 2>&1`;
is($? >> 8, 0, 'promtool test rules: each alert fires where it should, and only there')
    or diag($out);

done_testing();
