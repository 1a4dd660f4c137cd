#!/usr/bin/env perl
# Unit tests of the Redis Cluster routing: builds build/unit/cluster_test
# with t/unit/Makefile (if a source changed) and passes its TAP through.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);

my $root = abs_path(dirname(__FILE__) . '/../..');

if (!-f "$root/build/objs/ngx_auto_config.h") {
    print "1..0 # SKIP build/objs/ngx_auto_config.h is missing: make build\n";
    exit 0;
}

my $log = `make -s -f '$root/t/unit/Makefile' '$root/build/unit/cluster_test' 2>&1`;
if ($? != 0) {
    print "1..1\nnot ok 1 - build build/unit/cluster_test\n";
    print "# $_\n" for split /\n/, $log;
    exit 1;
}

exec "$root/build/unit/cluster_test"
    or die "cannot run $root/build/unit/cluster_test: $!\n";
