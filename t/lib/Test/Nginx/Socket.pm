package Test::Nginx::Socket;

# timpush's stand-in for OpenResty's Test::Nginx::Socket (not packaged in
# Debian): the same interface for the subset the project uses, implemented in
# Test::Nginx::Foreground.  Put the real module's lib first in PERL5LIB and
# the same .t files run under it instead (t/run.sh: TEST_NGINX_REAL=...).
#
# Like the real one this is a Test::Base subclass, so that Test::Base parses
# the blocks and "use Test::Nginx::Socket 'no_plan';" and the Test::More
# functions (is, like, plan...) work as test files expect.  "-Base" applies a
# Spiffy source filter to this file, hence no subs are defined here.

use Test::Base -Base;
# Everything but plan(), which is installed below over Test::More's.
use Test::Nginx::Foreground grep { $_ ne 'plan' } @Test::Nginx::Foreground::EXPORT;

our $VERSION = '0.33';

# What the real module exports, minus what timpush's runner does not do
# (HTTP/2 and HTTP/3 clients, hup reloads, stap, pipelined requests...).
# Our plan() comes first: under valgrind it counts the extra assertion per
# block.
our @EXPORT = qw(
    env_to_nginx is_str plan run_tests run_test
    repeat_each config_preamble worker_connections
    master_process_enabled
    no_long_string workers master_on master_off
    log_level no_shuffle no_root_location
    server_name
    server_addr server_root html_dir server_port server_port_for_client
    timeout check_accum_error_log
    add_block_preprocessor bail_out add_test_cleanup_handler add_cleanup_handler
);

BEGIN {
    # Test::Base imported Test::More's plan() into this package; use ours.
    no warnings 'redefine';
    *plan = \&Test::Nginx::Foreground::plan;
}

1;
