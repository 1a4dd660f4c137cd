package Test::Nginx::Foreground;

# The engine behind t/lib/Test/Nginx/Socket.pm: a compatible implementation
# of the subset of OpenResty's Test::Nginx::Socket (and its Test::Nginx::Util)
# that timpush's suites use.  OpenResty's module is not packaged in Debian,
# so the project ships this one; the .t files must also pass unchanged under
# the real module (put its lib first in PERL5LIB, see t/run.sh).
#
# Semantics follow test-nginx 0.33 (lib/Test/Nginx/{Socket,Util}.pm): block
# order, request building, assertion names and counts, the incremental error
# log reading, repeat_each, init timing.  The one deliberate difference is the
# process model: the real module daemonizes nginx and finds it again through
# the pid file; this one runs nginx in the FOREGROUND as its own child
# ("daemon off"), waits until it listens, and stops and reaps it at the end
# of every block.  That makes failures to start visible per block, makes
# valgrind reports attributable to a block, and needs no reaping by PID 1.
#
# This file is deliberately a plain module: Socket.pm has to be a Test::Base
# subclass ("use Test::Base -Base"), which runs a Spiffy source filter over
# the file that would rewrite the subs below.

use strict;
use warnings;

use Exporter 'import';
use Config ();
use Errno qw(EAGAIN EWOULDBLOCK EINTR EINPROGRESS);
use File::Path qw(remove_tree make_path);
use File::Spec ();
use HTTP::Response ();
use IO::Select ();
use IO::Socket::INET ();
use List::Util qw(shuffle min);
use POSIX qw(:sys_wait_h SIGQUIT SIGKILL SIGTERM);
use Test::Builder ();
use Test::LongString ();
use Test::More ();
use Time::HiRes qw(sleep time);

our @EXPORT = qw(
    run_tests run_test plan repeat_each workers worker_connections
    master_on master_off master_process_enabled log_level no_shuffle
    no_long_string no_root_location env_to_nginx config_preamble
    add_block_preprocessor add_cleanup_handler add_test_cleanup_handler
    bail_out is_str timeout server_name server_addr server_root html_dir
    server_port server_port_for_client check_accum_error_log
);

# Settings: the same environment variables and defaults as the real module.
our $ServerAddr          = '127.0.0.1';
our $ServerName          = 'localhost';
our $ServerPort          = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $NginxBinary         = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $Workers             = 1;
our $WorkerConnections   = 64;
our $LogLevel            = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $NoRootLocation      = 0;
our $NoLongString;
our $NoShuffle           = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $RepeatEach          = 1;
our $Timeout             = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $TestNginxSleep      = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $UseValgrind         = $ENV{TEST_NGINX_USE_VALGRIND};
our $Verbose             = $ENV{TEST_NGINX_VERBOSE};
our $CheckAccumErrLog    = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $LoadModules         = $ENV{TEST_NGINX_LOAD_MODULES};
our $EventType           = $ENV{TEST_NGINX_EVENT_TYPE};
our $WorkerUser          = $ENV{TEST_NGINX_WORKER_USER};
our $ConfigPreamble      = '';

# valgrind slows nginx down by an order of magnitude: give it longer to start,
# to answer (client timeouts are multiplied) and to run its leak check at exit.
our $ValgrindTimeoutScale = 3;
our $StartTimeout         = $UseValgrind ? 60 : 10;
our $StopTimeout          = $UseValgrind ? 30 : 5;

our (@EnvToNginx, @BlockPreprocessors, @CleanupHandlers, @TestCleanupHandlers);

our $ServRoot = $ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot');
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
our $LogDir     = "$ServRoot/logs";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";
our $CacheDir   = "$ServRoot/cache";
# nginx's stderr (valgrind's report goes there too); inside logs/ so that it
# is wiped with the rest of the server root before the next block.
our $StderrFile = "$LogDir/nginx.stderr";

our $ErrLogFilePos = 0;
our $SeriousPos = 0;    # how far the error log was scanned for crashes
our %SeriousSeen;       # lines already failed, with check_accum_error_log
our @Workers;           # the workers a master started, at the block's start
our $RandPorts = {};
our $ChildPid;          # the nginx (or valgrind) process of the current block
our $ChildStatus;       # its wait status, once reaped
our $ChildOwner;        # the perl process that started it (forks must not stop it)

# ---------------------------------------------------------------- settings

sub repeat_each (@) { $RepeatEach = shift if @_; return $RepeatEach }
sub workers (@) { if (@_) { $Workers = shift } else { return $Workers } }
sub worker_connections (@) {
    if (@_) { $WorkerConnections = shift } else { return $WorkerConnections }
}
sub log_level (@) { if (@_) { $LogLevel = shift } else { return $LogLevel } }
sub master_on ()  { $MasterProcessEnabled = 'on' }
sub master_off () { $MasterProcessEnabled = 'off' }
sub master_process_enabled (@) {
    if (@_) { $MasterProcessEnabled = shift() ? 'on' : 'off' }
    else { return $MasterProcessEnabled }
}
sub no_shuffle ()       { $NoShuffle = 1 }
sub no_long_string ()   { $NoLongString = 1 }
sub no_root_location () { $NoRootLocation = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub config_preamble ($) { $ConfigPreamble = shift }
sub timeout (@) { if (@_) { $Timeout = shift } else { return $Timeout } }
sub server_name (@) { if (@_) { $ServerName = shift } else { return $ServerName } }
sub server_addr (@) { if (@_) { $ServerAddr = shift } else { return $ServerAddr } }
sub server_port (@) { if (@_) { $ServerPort = shift } else { return $ServerPort } }
sub server_port_for_client (@) {
    if (@_) { $ServerPortForClient = shift } else { return $ServerPortForClient }
}
sub server_root () { return $ServRoot }
sub html_dir ()    { return $HtmlDir }

sub env_to_nginx (@) {
    Carp::croak("env_to_nginx: no arguments specified") unless @_;
    for my $v (@_) {
        Carp::croak("env_to_nginx: bad argument value: $v")
            if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

# The real module unshifts: the preprocessor added last runs first.
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($)      { unshift @CleanupHandlers, shift }
sub add_test_cleanup_handler ($) { unshift @TestCleanupHandlers, shift }

# Under valgrind every block gets one more assertion (the valgrind verdict,
# nginx runs once per block whatever repeat_each says), so the usual
# "plan tests => repeat_each() * N * blocks()" is raised by the number of
# blocks here; "--- must_die" blocks run without valgrind, as in the real
# module, and get no verdict.
sub plan {
    my @args = @_;
    if ($UseValgrind && @args >= 2 && $args[0] eq 'tests') {
        $args[1] += grep { !defined $_->must_die } Test::Base::blocks();
    }
    return Test::More::plan(@args);
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    return Test::More::like($got, $expected, $desc)
        if ref $expected && ref $expected eq 'Regexp';
    return Test::More::is($got, $expected, $desc) if $NoLongString;
    return Test::LongString::is_string($got, $expected, $desc);
}

# ---------------------------------------------------------------- helpers

sub parse_time ($) {
    my $tm = shift;
    if (defined $tm) {
        $tm =~ s/^\s+|\s+$//g;
        if ($tm =~ s/([^_a-zA-Z])ms$/$1/) {
            $tm = $tm / 1000;
        } else {
            $tm =~ s/([^_a-zA-Z])s$/$1/;
        }
    }
    return $tm;
}

sub trim ($) {
    my $s = shift;
    return undef if !defined $s;
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\n/ /gs;
    $s =~ s/\s{2,}/ /gs;
    return $s;
}

sub fmt_str ($) {
    my $str = shift;
    chomp $str;
    $str =~ s/"/\\"/g;
    $str =~ s/\r/\\r/g;
    $str =~ s/\n/\\n/g;
    return $str;
}

sub tcp_port_listening ($) {
    my $port = shift;
    my $seen_proc;
    for my $file ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $in, '<', $file or next;
        $seen_proc = 1;
        while (<$in>) {
            # "sl local_address rem_address st": 0A is TCP_LISTEN
            if (/^\s*\d+:\s+[0-9A-F]+:([0-9A-F]{4})\s+\S+\s+0A\s/ && hex($1) == $port) {
                return 1;
            }
        }
    }
    return 0 if $seen_proc;
    # No /proc: fall back to probing with a connection.
    my $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr, PeerPort => $port,
                                     Proto => 'tcp', Timeout => 0.2);
    return $sock ? 1 : 0;
}

sub gen_rand_port ($) {
    my $used = shift;
    for (1 .. 1000) {
        my $port = int(rand 63547) + 1988;
        next if $used->{$port};
        my $sock = IO::Socket::INET->new(LocalAddr => $ServerAddr, LocalPort => $port,
                                         Proto => 'tcp', Listen => 5, Reuse => 1);
        if ($sock) { close $sock; return $port }
    }
    return undef;
}

# $TEST_NGINX_FOO -> $ENV{TEST_NGINX_FOO}; an unset variable stops the run,
# as in the real module: a config with a hole in it is never what is meant.
sub expand_env_in_text ($$) {
    my ($text, $name) = @_;
    return undef if !defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        my $val;
        if ($var =~ /^TEST_NGINX_RAND_PORT_[0-9]+$/) {
            $val = $RandPorts->{$var} //= do {
                my %used = ($ServerPort => 1, map { $_ => 1 } values %$RandPorts);
                gen_rand_port(\%used)
                    // bail_out("$name - Cannot find an available listening port for $var.\n");
            };
        } else {
            defined $ENV{$var}
                or bail_out("$name - No environment $var defined.\n");
            $val = $ENV{$var};
        }
        $val;
    }ge;
    return $text;
}

sub parse_headers ($) {
    my $s = shift;
    my %headers;
    for (split /\n/, $s) {
        s/^\s+|\s+$//g;
        next if $_ eq '';
        if (s/^!\s*//) {
            $headers{$_} = undef;
        } else {
            my ($key, $val) = split /\s*:\s*/, $_, 2;
            $headers{$key} = $val;
        }
    }
    return \%headers;
}

# prctl(2) through syscall(): Debian's perl ships no .ph for it.
my %PrctlSyscall = (x86_64 => 157, aarch64 => 167, i386 => 172, i686 => 172);
sub prctl ($$) {
    my ($option, $arg) = @_;
    my ($arch) = $Config::Config{archname} =~ /^([^-]+)/;
    my $nr = $PrctlSyscall{$arch} or return -1;
    return syscall($nr, $option, $arg, 0, 0, 0);
}

# ---------------------------------------------------------------- server root

sub setup_server_root () {
    if (-d $ServRoot) {
        # Remove only what we create, as the real module does, so that a
        # mistaken TEST_NGINX_SERVROOT cannot wipe real data.
        remove_tree($ConfDir, $CacheDir, $HtmlDir, $LogDir,
                    glob("$ServRoot/*_cache"), glob("$ServRoot/*_temp"));
        rmdir $ServRoot
            or bail_out("Can't remove $ServRoot (not empty?): $!");
    }
    make_path($ServRoot, $LogDir, $HtmlDir, $ConfDir);
    -d $ConfDir or bail_out("Failed to create $ConfDir: $!");
    open my $out, '>', "$HtmlDir/index.html"
        or bail_out("Can't open $HtmlDir/index.html for writing: $!");
    print $out '<html><head><title>It works!</title></head><body>It works!</body></html>';
    close $out;
}

sub write_user_files ($) {
    my $block = shift;
    my $name = $block->name;
    my $files = $block->user_files or return;
    if (!ref $files) {
        my @list;
        my ($fname, $body);
        for my $line (split /^/, $files) {
            if ($line =~ /^>>> (\S+)/) {
                push @list, [$fname, $body] if defined $fname;
                ($fname, $body) = ($1, '');
            } else {
                $body .= $line;
            }
        }
        push @list, [$fname, $body] if defined $fname;
        $files = \@list;
    }
    for my $f (@$files) {
        my ($fname, $body) = @$f;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        (my $dir = $path) =~ s{/[^/]*$}{};
        make_path($dir) unless -d $dir;
        open my $out, '>', $path or bail_out("$name - Cannot open $path for writing: $!");
        binmode $out;
        print $out expand_env_in_text($body // '', $name);
        close $out;
    }
}

sub write_config_file ($$) {
    my ($block, $config) = @_;
    my $name = $block->name;

    my $http_config = expand_env_in_text($block->http_config // '', $name);
    my $main_config = $block->main_config // '';
    if ($LoadModules) {
        my @modules = map { "load_module $_;" } grep { $_ } split /\s+/, $LoadModules;
        $main_config = join ' ', @modules, $main_config if @modules;
    }
    $main_config = expand_env_in_text($main_config, $name);
    my $post_main_config = expand_env_in_text($block->post_main_config // '', $name);
    my $server_name = $block->server_name // $ServerName;
    (my $quoted_server_name = $server_name) =~ s/\\/\\\\/g;
    $quoted_server_name =~ s/'/\\'/g;

    # Debian's compiled-in temp paths (/var/lib/nginx/...) may not exist:
    # keep every temp path inside the server root.
    my $temp_paths = join ' ', map { "${_}_temp_path $ServRoot/${_}_temp;" }
        grep {
            !($_ eq 'proxy' && $http_config =~ /\bproxy_temp_path\b/)
            && !($_ eq 'client_body' && $http_config =~ /\bclient_body_temp_path\b/)
        } qw(client_body proxy fastcgi scgi uwsgi);

    my $env = join '', map { my $v = /\s/ ? "'$_'" : $_; "env $v;\n" } @EnvToNginx;
    my $root_location = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_
    my $use_event = $EventType ? "    use $EventType;\n" : '';
    # nginx only switches user when the master runs as root; the real module
    # then asks for root so that workers can read the test's files.
    my $user = defined $WorkerUser ? "user $WorkerUser;\n"
             : $> == 0             ? "user root;\n"
             : '';

    open my $out, '>', $ConfFile or bail_out("Can't open $ConfFile for writing: $!");
    print $out <<"_EOC_";
worker_processes  $Workers;
daemon off;
master_process $MasterProcessEnabled;
error_log $ErrLogFile $LogLevel;
pid       $PidFile;
env LD_PRELOAD;
env LD_LIBRARY_PATH;
env ASAN_OPTIONS;
$env
$main_config

http {
    access_log $AccLogFile; $temp_paths

    default_type text/plain;
    keepalive_timeout  68000ms;

$http_config
    server {
        listen          $ServerAddr:$ServerPort;
        server_name     '$quoted_server_name';
        client_max_body_size 30M;

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

$root_location    }
}

$post_main_config

events {
    accept_mutex off;
    worker_connections  $WorkerConnections;
$use_event}

$user
_EOC_
    close $out or bail_out("Failed to write $ConfFile: $!");
}

# ---------------------------------------------------------------- nginx process

sub nginx_command () {
    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile, '-e', $ErrLogFile);
    return @cmd unless $UseValgrind;

    if ($UseValgrind =~ /^\d+$/) {
        # The options of the real module (Util.pm), plus our suppressions.
        my @opts = qw(--num-callers=100 -q --tool=memcheck --leak-check=full
                      --keep-debuginfo=yes --show-possibly-lost=no
                      --gen-suppressions=all);
        push @opts, '--suppressions=' . File::Spec->rel2abs('valgrind.suppress')
            if -f 'valgrind.suppress';
        return ('valgrind', @opts, @cmd);
    }
    # A non-numeric TEST_NGINX_USE_VALGRIND is the option string itself.
    return ('valgrind', '-q', split(' ', $UseValgrind), @cmd);
}

sub can_run ($) {
    my $cmd = shift;
    return -f $cmd && -x _ ? $cmd : undef if $cmd =~ m{/};
    for my $dir (split /:/, $ENV{PATH} // '') {
        next if $dir eq '';
        return "$dir/$cmd" if -f "$dir/$cmd" && -x _;
    }
    return undef;
}

# Starts nginx in the foreground and waits until it listens.
# Returns undef on success, or a message saying why it is not running.
sub start_nginx ($) {
    my $name = shift;

    can_run($NginxBinary)
        or bail_out("$name - Cannot find the nginx executable '$NginxBinary' "
                    . "(set TEST_NGINX_BINARY or PATH)");

    # Something else on our port would answer in nginx's place.
    my $until = time + 3;
    while (tcp_port_listening($ServerPort)) {
        return "port $ServerPort is already in use by another process"
            if time > $until;
        sleep 0.05;
    }

    my @cmd = nginx_command();
    warn "$name\n" if $UseValgrind;     # the real module shows progress this way
    warn "command: @cmd\n" if $Verbose;

    my $pid = fork;
    bail_out("$name - fork() failed: $!") unless defined $pid;
    if ($pid == 0) {
        # Own process group: a stuck master and its workers die together.
        setpgrp(0, 0);
        # PR_SET_PDEATHSIG(SIGKILL): no stray nginx holding the port if this
        # test process is killed without a chance to clean up.
        prctl(1, SIGKILL);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $StderrFile;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        print STDERR "cannot exec $cmd[0]: $!\n";
        POSIX::_exit(127);      # never run the parent's END blocks here
    }
    ($ChildPid, $ChildOwner, $ChildStatus) = ($pid, $$, undef);

    # nginx writes its pid file once the configuration is loaded and the
    # listening sockets are open, just before serving (daemonized or not):
    # the moment the real module's "nginx" command returns.  Polling a file
    # is cheap; scanning /proc/net/tcp every few ms slows valgrind down.
    my $deadline = time + $StartTimeout;
    while (1) {
        if (child_exited()) {
            return "nginx exited during startup (" . describe_status($ChildStatus) . ")";
        }
        if (-s $PidFile) {
            my $written = read_file($PidFile);
            return undef if $written =~ /^\s*$pid\s*$/;
        }
        if (time > $deadline) {
            stop_nginx(0);
            return "nginx did not finish starting (no pid file) within $StartTimeout s";
        }
        sleep 0.01;
    }
}

sub describe_status ($) {
    my $status = shift;
    return "exec failed" if $status == -1;
    return "killed by signal " . ($status & 127)
        . (($status & 128) ? ", core dumped" : '') if $status & 127;
    return "exit code " . ($status >> 8);
}

# Reaps nginx if it has exited; keeps its status for finish_nginx().
sub child_exited () {
    return 1 if !defined $ChildPid;
    return 0 if waitpid($ChildPid, WNOHANG) != $ChildPid;
    $ChildStatus = $?;
    undef $ChildPid;
    return 1;
}

# Stops the block's nginx: QUIT (graceful, so valgrind's leak check runs at
# exit), then KILL on the whole process group if it does not go away.
# Returns (wait status, whether we had to kill it).
sub stop_nginx ($) {
    my $graceful = shift;
    my $pid = $ChildPid;
    return ($ChildStatus // 0, 0) unless defined $pid;
    return (0, 0) if $ChildOwner != $$;

    if ($graceful) {
        kill SIGQUIT, $pid;
        my $deadline = time + $StopTimeout;
        while (time < $deadline) {
            return ($ChildStatus, 0) if child_exited();
            sleep 0.02;
        }
        warn "WARNING: nginx (pid $pid) did not exit within $StopTimeout s "
             . "after SIGQUIT; killing it\n";
    }
    kill SIGKILL, -$pid;
    kill SIGKILL, $pid;
    waitpid($pid, 0);
    $ChildStatus = $?;
    undef $ChildPid;
    return ($ChildStatus, 1);
}

sub read_file ($) {
    my $file = shift;
    open my $in, '<', $file or return '';
    local $/;
    my $data = <$in>;
    return $data // '';
}

sub cleanup () {
    $_->() for @CleanupHandlers;
    @CleanupHandlers = ();
    stop_nginx(0) if defined $ChildPid;
}

# Leave no nginx behind when prove is interrupted.
for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub { stop_nginx(0) if defined $ChildPid; exit 130 };
}

END {
    # Only the perl process that started nginx may stop it.
    stop_nginx(0) if defined $ChildPid;
}

# ---------------------------------------------------------------- the run

sub run_tests () {
    srand($$ + Time::HiRes::time() * 1000000);
    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort
        if !defined $ENV{TEST_NGINX_SERVER_PORT};

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;

    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value('name', "$0 " . $block->name);
        run_test($block);
        $_->($block) for @TestCleanupHandlers;
    }
    cleanup();
}

sub run_test ($) {
    my $block = shift;
    return if defined $block->SKIP;

    my $name = $block->name;
    $RandPorts = {};
    # A block without "--- config" gets an empty one (the real module would
    # keep the previous block's nginx running instead).
    my $config = expand_env_in_text($block->config // '', $name);

    local $LogLevel = $block->log_level if $block->log_level;
    my $block_timeout = parse_time($block->timeout);

    setup_server_root();
    if (defined(my $code = $block->post_setup_server_root)) {
        eval $code;
        bail_out("$name - post_setup_server_root failed: $@") if $@;
    }
    write_user_files($block);
    write_config_file($block, $config);

    return run_must_die($block) if defined $block->must_die;

    ($SeriousPos, %SeriousSeen) = (0);
    my $problem = start_nginx($name);
    if ($problem) {
        # Keep going: the block fails here, whatever it checks (even with
        # --- ignore_response), and the next blocks still run.
        my $stderr = read_file($StderrFile);
        my $errlog = read_file($ErrLogFile);
        my @tail = (split /\n/, $errlog)[-20 .. -1];
        Test::More::fail("$name - nginx is running");
        Test::More::diag("$name - $problem\n--- nginx stderr:\n$stderr"
            . "--- last lines of error.log:\n" . join("\n", grep { defined } @tail));
    } else {
        sleep $TestNginxSleep;
        @Workers = $MasterProcessEnabled eq 'on' ? wait_workers($name) : ();
    }

    # Run once, after nginx has started and before all the repeated requests
    # (Util.pm run_test, label "request:").  Test::Nginx evaluates this in its
    # own package (Test::Nginx::Util, strict, its helpers but not Test::More's
    # functions), not in main; so do we, here: call Test::More::is() etc. fully
    # qualified and the block behaves the same under both runners.
    if (defined(my $code = $block->init)) {
        eval $code;
        bail_out("$name - init failed: $@") if $@;
    }

    # Error log checks read only what was logged since the previous check.
    $ErrLogFilePos = 0;
    for my $i (0 .. $RepeatEach - 1) {
        write_user_files($block) if $i > 0;
        run_test_helper($block, $problem, $i, $block_timeout);
    }

    finish_nginx($block, $problem);
}

# "--- must_die [exit code]": nginx must refuse to start; no requests, only
# the error log checks (Util.pm's must_die branch; no valgrind there either).
sub run_must_die ($) {
    my $block = shift;
    my $name = $block->name;
    my $must_die = $block->must_die;
    local $UseValgrind;
    local $StartTimeout = 10;

    ($ErrLogFilePos, $SeriousPos, %SeriousSeen) = (0, 0);
    for my $i (0 .. $RepeatEach - 1) {
        my $problem = start_nginx($name);
        if (!$problem) {
            warn "WARNING: $name - nginx must die but it does not; killing it (req $i)\n";
            stop_nginx(1);
            Test::More::fail("$name - die as expected");
        } else {
            my $status = $ChildStatus // -1;
            my $exit_code = $status >= 0 ? $status >> 8 : undef;
            if ($status == -1) {
                Test::More::fail("$name - failed to execute the nginx command line: $problem");
            } elsif ($status & 128) {
                Test::More::fail("$name - nginx core dumped");
            } elsif ($must_die =~ /^\s*\d+\s*$/) {
                Test::More::is($must_die + 0, $exit_code,
                               "$name - die with the expected exit code");
            } else {
                Test::More::isnt($status, 0, "$name - die as expected");
            }
        }
        check_error_log($block, $i);
    }
}

# Stops nginx after the block; under valgrind, reports its verdict.
sub finish_nginx ($$) {
    my ($block, $start_problem) = @_;
    my $name = $block->name;

    # A worker that died was replaced by its master: the block may have
    # passed with the new one, but the crash is a failure.
    if (@Workers && !$start_problem) {
        my @now = worker_pids();
        Test::More::is("@now", "@Workers",
                       "$name - the workers started are the ones alive");
    }
    @Workers = ();

    my ($status, $killed) = stop_nginx(1);
    my $stderr = read_file($StderrFile);

    # What was logged while nginx stopped is checked too.
    check_serious_lines($block, 'after nginx stopped');

    my $abnormal;
    if (!$start_problem && !$killed && $status != 0) {
        $abnormal = "nginx exited abnormally (" . describe_status($status) . ")";
    }

    if ($UseValgrind) {
        # Any memcheck line is a finding, except valgrind's own notice about
        # big mmap()s (shared memory zones), which says nothing about nginx.
        my @report = grep { /^==\d+==/ && !/^==\d+== Warning: set address range perms/ }
                     split /\n/, $stderr;
        # Killed nginx never ran valgrind's leak check: that is no pass.
        $abnormal //= "nginx had to be killed: no leak check was run" if $killed;
        my $ok = !@report && !$abnormal;
        Test::More::ok($ok, "$name - valgrind: no memory errors or definite leaks")
            or Test::More::diag($start_problem ? "(nginx failed to start: see above)"
                                : ($abnormal ? "$abnormal\n" : '') . $stderr);
        return;
    }

    if ($abnormal) {
        Test::More::fail("$name - $abnormal");
        Test::More::diag($stderr) if $stderr ne '';
    } elsif (!$start_problem && $stderr ne '') {
        # What the real module's daemonized nginx would have printed.
        warn $stderr;
    }
}

# ---------------------------------------------------------------- requests

sub parse_more_headers ($) {
    my $in = shift;
    my ($out, $is_chunked) = ('', undef);
    for my $header (split /\n+/, $in) {
        next if $header =~ /^\s*\#/;
        my ($key, $val) = split /:\s*/, $header, 2;
        $val //= '';
        $is_chunked = 1 if lc($key) eq 'transfer-encoding' && $val eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $is_chunked);
}

# "METH [URL [VERSION]]\nbody" -> raw HTTP/1.x request, as Socket.pm's
# parse_request + build_request_from_packets do for a one-packet request.
sub build_request ($$$) {
    my ($name, $request, $more_headers) = @_;
    my ($hdr, $is_chunked) = parse_more_headers($more_headers);

    my ($first, $content) = $request =~ /\A([^\n]*\n?)(.*)\z/s;
    if (!defined $first || $first eq '') {
        bail_out("$name - Request line should be non-empty");
    }
    $first =~ /^\s*(\S+) *(?:(\S+) *)?(?:(\S+) *)?\s*$/
        or bail_out("$name - Request line is not valid. Should be "
                    . "'meth [url [version]]' but got \"$first\".");
    my ($meth, $url, $ver) = ($1, $2 // '/', $3 // 'HTTP/1.1');

    my $len_header = '';
    if (!$is_chunked && $content ne '' && $hdr !~ /(?:^|\n)Content-Length:/) {
        # The real module trims the body and counts what is left.
        $content =~ s/^\s+|\s+$//gs;
        $len_header = 'Content-Length: ' . length($content) . "\r\n";
    }

    $hdr =~ s/(?<!\r)\n/\r\n/gs;
    my $headers = '';
    $headers .= "Host: $ServerName\r\n" if $hdr !~ /(?:^|\n)Host:/msi;
    $headers .= "Connection: close\r\n" if $hdr !~ /(?:^|\n)Connection/msi;
    $headers .= "$hdr$len_header\r\n";

    return "$meth $url $ver\r\n$headers$content";
}

# One raw request string per connection.
sub get_req_from_block ($) {
    my $block = shift;
    my $name = $block->name;

    if (defined $block->raw_request) {
        my $raw = $block->raw_request;
        return [ref $raw eq 'ARRAY' ? join('', @$raw) : $raw];
    }
    bail_out("$name - --- pipelined_requests is not supported by t/lib's Test::Nginx")
        if defined $block->pipelined_requests;

    my $request = $block->request;
    bail_out("$name - request empty") if !defined $request;
    my $more_headers = $block->more_headers // '';

    my $headers_for = sub {
        my $i = shift;
        return $more_headers unless ref $more_headers eq 'ARRAY';
        my $h = $more_headers->[$i];
        bail_out("--- more_headers lacks data for the ${i}th request") if !defined $h;
        return $h;
    };

    if (!ref $request) {
        1 while $request =~ s/^\s*\#[^\n]+\s+|^\s+//gs;
        return [build_request($name, $request, $headers_for->(0))];
    }
    if (ref $request eq 'ARRAY') {
        my @list;
        for my $i (0 .. $#$request) {
            my $one = $request->[$i];
            bail_out("$name - requests split into packets are not supported by "
                     . "t/lib's Test::Nginx") if ref $one;
            push @list, build_request($name, $one, $headers_for->($i));
        }
        return \@list;
    }
    bail_out("$name - invalid ---request : MUST be string or array of requests");
}

# Sends one request on a new connection and reads until the server closes
# it (requests say "Connection: close"), like the real module.
# Returns (raw response, problem or undef).
sub send_request ($$) {
    my ($raw_req, $timeout) = @_;

    local $SIG{PIPE} = 'IGNORE';

    my $sock;
    my $connect_deadline = time + $timeout;
    while (1) {
        $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr,
                                      PeerPort => $ServerPortForClient,
                                      Proto => 'tcp', Timeout => $timeout);
        last if $sock;
        my $err = "$!";
        if (child_exited()) {
            return (undef, "can't connect to $ServerAddr:$ServerPortForClient: "
                           . "$err (nginx is gone: " . describe_status($ChildStatus // 0) . ")");
        }
        return (undef, "can't connect to $ServerAddr:$ServerPortForClient: $err")
            if time > $connect_deadline;
        sleep 0.05;
    }
    $sock->blocking(0);

    my ($resp, $off) = ('', 0);
    my $writing = 1;
    my $sel = IO::Select->new($sock);
    # Idle timeout per wait (as the real module), plus an overall cap so that
    # a server trickling bytes cannot hold the run forever.
    my $hard_deadline = time + 10 * $timeout;

    while (1) {
        return ($resp, "client socket timed out after ${timeout}s overall cap")
            if time > $hard_deadline;
        my ($r, $w) = IO::Select->select($sel, $writing ? $sel : undef, undef, $timeout);
        if (!$r && !$w) {
            next if $!{EINTR};
            close $sock;
            return ($resp, "client socket timed out (no activity for ${timeout}s, "
                           . length($resp) . " bytes received)");
        }
        if ($writing && $w && @$w) {
            my $n = syswrite($sock, $raw_req, length($raw_req) - $off, $off);
            if (defined $n) {
                $off += $n;
                $writing = 0 if $off >= length $raw_req;
            } elsif (!$!{EAGAIN} && !$!{EWOULDBLOCK} && !$!{EINTR}) {
                # The server may have answered and closed early (e.g. 413):
                # stop writing and read what it said.
                $writing = 0;
            }
        }
        if ($r && @$r) {
            my $n = sysread($sock, my $buf, 65536);
            if (defined $n) {
                if ($n == 0) { close $sock; return ($resp, undef) }
                $resp .= $buf;
            } elsif (!$!{EAGAIN} && !$!{EWOULDBLOCK} && !$!{EINTR}) {
                my $err = "$!";
                close $sock;
                # A reset after a complete answer is still an answer.
                return ($resp, $resp eq '' ? "HTTP response read failure: $err" : undef);
            }
        }
    }
}

# As Socket.pm's parse_response: HTTP::Response plus chunked decoding and
# Content-Length trimming.  Returns (response, raw headers, extra bytes).
sub parse_response ($$$) {
    my ($name, $raw_resp, $head_req) = @_;
    my $left;
    my $raw_headers = '';
    $raw_headers = $1 if $raw_resp =~ /(.*?\r\n)\r\n/s;

    my $res = HTTP::Response->parse($raw_resp);
    my $code = $res->code;
    if ($code && $code !~ /^\d+$/) {
        undef $code;
        $res->code(undef);
    }
    return ($res, $raw_headers) if $code && ($code == 304 || $code == 101);

    my $enc = $res->header('Transfer-Encoding');
    my $len = $res->header('Content-Length');

    if (defined $enc && $enc eq 'chunked') {
        my $raw = $res->content // '';
        my $decoded = '';
        while (1) {
            if ($raw =~ /\G 0 [\ \t]* \r\n (?: [^\r\n]+ \r\n )* \r\n /gcsx) {
                $left = $1 if $raw =~ /\G(.+)/gcs;
                last;
            }
            if ($raw =~ /\G [\ \t]* ([A-Fa-f0-9]+) [\ \t]* (?:;[^\r\n]*)? \r\n /gcsx) {
                my $size = hex $1;
                if (length($raw) - pos($raw) < $size + 2
                    || substr($raw, pos($raw) + $size, 2) ne "\r\n")
                {
                    Test::More::diag("$name - invalid chunked data received "
                                     . "(truncated chunk)");
                    $decoded .= substr($raw, pos($raw));
                    last;
                }
                $decoded .= substr($raw, pos($raw), $size);
                pos($raw) += $size + 2;
                next;
            }
            Test::More::diag("$name - invalid chunked body or no last chunk: "
                             . substr($raw, pos($raw) // 0, 200));
            last;
        }
        $res->content($decoded);
    } elsif (defined $len && $len =~ /^\d+$/) {
        my $raw = $res->content;
        if (length $raw < $len) {
            warn "WARNING: $name - response body truncated: $len expected, "
                 . "but got " . length($raw) . "\n" unless $head_req;
        } elsif (length $raw > $len) {
            $left = substr $raw, $len;
            $res->content(substr $raw, 0, $len);
        }
    }
    return ($res, $raw_headers, $left);
}

sub get_indexed_value ($$$$) {
    my ($name, $value, $req_idx, $need_array) = @_;
    if ($need_array) {
        return $value->[$req_idx] if ref $value && ref $value eq 'ARRAY';
        bail_out("$name - You asked for many requests, the expected results "
                 . "should be arrays as well.");
    }
    if (ref $value && ref $value eq 'ARRAY') {
        return $value->[0];
    }
    return $value;
}

sub run_test_helper ($$$$) {
    my ($block, $dead, $rep_idx, $block_timeout) = @_;
    my $name = $block->name;

    my $reqs = get_req_from_block($block);
    bail_out("$name - request empty") unless @$reqs;

    my $timeout = $block_timeout // $Timeout;
    $timeout *= $ValgrindTimeoutScale if $UseValgrind;

    my $need_array = @$reqs > 1;
    my $res;
    for my $req_idx (0 .. $#$reqs) {
        my ($raw_resp, $problem);
        if ($dead) {
            ($raw_resp, $problem) = ('', 'no request sent: nginx is not running');
        } else {
            ($raw_resp, $problem) = send_request($reqs->[$req_idx], $timeout);
        }
        if ($problem) {
            # The checks below then fail on an empty response; say why.
            Test::More::diag("$name - $problem (req $req_idx, repeated req $rep_idx)"
                . (defined $raw_resp && $raw_resp ne ''
                   ? "\n--- partial response:\n" . substr($raw_resp, 0, 2000) : ''));
            $raw_resp = '';
        }
        warn "!!! resp: [$raw_resp]\n" if $Verbose;

        if (!defined $block->ignore_response) {
            my $head_req = $reqs->[$req_idx] =~ /^\s*HEAD\s+/ ? 1 : 0;
            my ($raw_headers, $left);
            ($res, $raw_headers, $left) = parse_response($name, $raw_resp, $head_req);
            if (defined $left && $left ne '') {
                (my $l = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
                warn "WARNING: $name - unexpected extra bytes after last chunk in "
                     . "response: \"$l\"\n";
            }
            check_error_code($block, $res, $req_idx, $need_array);
            check_raw_response_headers($block, $raw_headers, $req_idx, $need_array);
            check_response_headers($block, $res, $raw_headers, $req_idx, $need_array);
            check_response_body($block, $res, $req_idx, $rep_idx, $need_array);
        }

        if ($req_idx < $#$reqs) {
            sleep $block->wait if $block->wait;
            check_error_log($block, $rep_idx);
        }
    }

    sleep $block->wait if $block->wait;
    check_error_log($block, $rep_idx);
}

# ---------------------------------------------------------------- checks

sub check_error_code ($$$$) {
    my ($block, $res, $req_idx, $need_array) = @_;
    my $name = $block->name;
    my $got = ($res && $res->code) || '';
    if (defined $block->error_code_like) {
        my $val = get_indexed_value($name, $block->error_code_like, $req_idx, $need_array);
        Test::More::like($got, qr/$val/sm, "$name - status code ok");
    } elsif (defined $block->error_code) {
        Test::More::is($got, get_indexed_value($name, $block->error_code, $req_idx,
                                               $need_array),
                       "$name - status code ok");
    } else {
        Test::More::is($got, 200, "$name - status code ok");
    }
}

sub check_raw_response_headers ($$$$) {
    my ($block, $raw_headers, $req_idx, $need_array) = @_;
    my $name = $block->name;
    if (defined $block->raw_response_headers_like) {
        my $exp = get_indexed_value($name, $block->raw_response_headers_like,
                                    $req_idx, $need_array);
        Test::More::like($raw_headers, qr/$exp/s, "$name - raw resp headers like");
    }
    if (defined $block->raw_response_headers_unlike) {
        my $exp = get_indexed_value($name, $block->raw_response_headers_unlike,
                                    $req_idx, $need_array);
        Test::More::unlike($raw_headers, qr/$exp/s, "$name - raw resp headers unlike");
    }
}

sub check_response_headers ($$$$$) {
    my ($block, $res, $raw_headers, $req_idx, $need_array) = @_;
    my $name = $block->name;
    if (defined $block->response_headers) {
        my $headers = parse_headers(get_indexed_value($name, $block->response_headers,
                                                      $req_idx, $need_array));
        while (my ($key, $val) = each %$headers) {
            if (!defined $val) {
                Test::More::unlike($raw_headers, qr/^\s*\Q$key\E\s*:/ms,
                                   "$name - header $key not present in the raw headers");
                next;
            }
            $val =~ s/\$ServerPort\b/$ServerPort/g;
            $val =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
            my $actual = $res ? $res->header($key) : undef;
            Test::More::is($actual // '', $val, "$name - header $key ok");
        }
    } elsif (defined $block->response_headers_like) {
        my $headers = parse_headers(get_indexed_value($name, $block->response_headers_like,
                                                      $req_idx, $need_array));
        while (my ($key, $val) = each %$headers) {
            my $actual = $res ? $res->header($key) : undef;
            $val //= '';
            Test::More::like($actual // '', qr/^$val$/, "$name - header $key like ok");
        }
    }
}

sub check_response_body ($$$$$) {
    my ($block, $res, $req_idx, $rep_idx, $need_array) = @_;
    my $name = $block->name;

    if (defined $block->response_body) {
        my $content = $res ? $res->content : undef;
        my $expected = get_indexed_value($name, $block->response_body, $req_idx,
                                         $need_array);
        if (defined $expected && !ref $expected) {
            $expected =~ s/\$ServerPort\b/$ServerPort/g;
            $expected =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
            $expected = expand_env_in_text($expected, $name);
        }
        my $desc = "(repeated req $rep_idx, req $req_idx)";
        if (ref $expected) {
            Test::More::like($content, $expected, "$name - response_body - like $desc");
        } elsif ($NoLongString) {
            Test::More::is($content, $expected,
                           "$name - response_body - response is expected $desc");
        } else {
            Test::LongString::is_string($content, $expected,
                                        "$name - response_body - response is expected $desc");
        }
    } elsif (defined $block->response_body_like || defined $block->response_body_unlike) {
        my ($patterns, $type) = defined $block->response_body_like
            ? ($block->response_body_like, 'like')
            : ($block->response_body_unlike, 'unlike');
        my $content = $res ? $res->content : undef;
        my $pat = get_indexed_value($name, $patterns, $req_idx, $need_array);
        $pat =~ s/\$ServerPort\b/$ServerPort/g;
        $pat =~ s/\$ServerPortForClient\b/$ServerPortForClient/g;
        my $summary = trim($content) // '';
        # The real module puts the whole body in the name; keep TAP readable.
        $summary = substr($summary, 0, 200) . '...' if length $summary > 200;
        my $desc = "$name - response_body_$type - response is expected ($summary)";
        if ($type eq 'like') {
            Test::More::like($content, qr/$pat/s, $desc);
        } else {
            Test::More::unlike($content, qr/$pat/s, $desc);
        }
    }
}

sub error_log_data () {
    # Let the log phase (after the connection closed) reach the file.
    sleep $TestNginxSleep * 3;
    open my $in, '<', $ErrLogFile or return [];
    seek $in, $ErrLogFilePos, 0 if !$CheckAccumErrLog && $ErrLogFilePos > 0;
    my @lines = <$in>;
    $ErrLogFilePos = tell($in) if !$CheckAccumErrLog;
    close $in;
    return \@lines;
}

# A crash ("exited on signal") or an [alert], [crit] or [emerg] line fails
# the block unless one of its --- error_log patterns names that line: the
# real module only warns, and so a SIGSEGV after the answer went unseen.
# Read from where the previous scan stopped, whatever check_error_log had
# read, so that nothing logged between two checks or at exit is missed.
sub check_serious_lines ($$) {
    my ($block, $when) = @_;
    my $name = $block->name;

    open my $in, '<', $ErrLogFile or return;
    seek $in, $SeriousPos, 0;
    my @lines = <$in>;
    # a line still being written is read next time
    pop @lines if @lines && $lines[-1] !~ /\n\z/;
    $SeriousPos += length $_ for @lines;
    close $in;

    my @named = map { @{ log_patterns($_) } }
                grep { defined } $block->error_log, $block->grep_error_log;

    for my $line (@lines) {
        next unless $line =~ /exited on signal|\[(?:alert|crit|emerg)\]/;
        next if grep { defined $_ && (ref $_ ? $line =~ $_ : index($line, $_) >= 0) }
                @named;
        next if $SeriousSeen{$line}++;
        Test::Builder->new->no_ending(1);
        Test::More::fail("$name - unexpected in error.log ($when): " . fmt_str($line));
    }
}

# The worker processes of the block's nginx master, sorted.
sub worker_pids () {
    my $master = $ChildPid or return ();
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $in, '<', $stat or next;
        my $line = <$in> // '';
        close $in;
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        push @pids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $master;
    }
    return sort { $a <=> $b } @pids;
}

sub wait_workers ($) {
    my $name = shift;
    my $deadline = time + $StartTimeout;
    while (time < $deadline) {
        my @pids = worker_pids();
        return @pids if @pids >= $Workers;
        sleep 0.01;
    }
    Test::More::fail("$name - $Workers worker processes started");
    return worker_pids();
}

sub log_patterns ($) {
    my $pats = shift;
    if (!ref $pats) {
        chomp $pats;
        return [split /\n+/, $pats];
    }
    return [$pats] if ref $pats eq 'Regexp';
    return [@$pats];
}

sub check_error_log ($$) {
    my ($block, $rep_idx) = @_;
    my $name = $block->name;
    my $lines;

    my $grep_pat = $block->grep_error_log;
    if (defined $grep_pat) {
        $grep_pat = $grep_pat->[$rep_idx] if ref $grep_pat eq 'ARRAY';
        my $expected = $block->grep_error_log_out;
        bail_out("$name - No --- grep_error_log_out defined but --- grep_error_log is defined")
            if !defined $expected;
        $expected = $expected->[$rep_idx] if ref $expected eq 'ARRAY';
        $expected = expand_env_in_text($expected, $name) if !ref $expected;
        $lines ||= error_log_data();
        my $matched = '';
        for my $line (@$lines) {
            if (ref $grep_pat && $line =~ /$grep_pat/ || $line =~ /\Q$grep_pat\E/) {
                $matched .= "$&\n" if $& !~ /\n/;
            }
        }
        my $desc = "$name - grep_error_log_out (req $rep_idx)";
        if (ref $expected eq 'Regexp') { Test::More::like($matched, $expected, $desc) }
        elsif ($NoLongString) { Test::More::is($matched, $expected, $desc) }
        else { Test::LongString::is_string($matched, $expected, $desc) }
    }

    if (defined $block->error_log) {
        my $pats = log_patterns($block->error_log);
        $lines ||= error_log_data();
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next if !defined $pat;
                if (ref $pat && $line =~ /$pat/ || $line =~ /\Q$pat\E/) {
                    Test::More::pass("$name - pattern \"$pat\" matches a line in "
                                     . "error.log (req $rep_idx)");
                    undef $pat;
                }
            }
        }
        for my $pat (@$pats) {
            next if !defined $pat;
            Test::More::fail("$name - pattern \"$pat\" should match a line in "
                             . "error.log (req $rep_idx)");
        }
    }

    if (defined $block->no_error_log) {
        my $pats = log_patterns($block->no_error_log);
        $lines ||= error_log_data();
        my %found;
        for my $i (0 .. $#$lines) {
            my $line = $lines->[$i];
            for my $pat (@$pats) {
                next if !defined $pat;
                if ((ref $pat && $line =~ /$pat/) || $line =~ /\Q$pat\E/) {
                    # Each extra match is one more (failing) assertion than
                    # planned, as in the real module: do not also complain
                    # about the count.
                    Test::Builder->new->no_ending(1) if $found{$pat}++;
                    my @more = @$lines[$i + 1 .. min($i + 9, $#$lines)];
                    Test::More::fail("$name - pattern \"" . fmt_str($pat)
                        . "\" should not match any line in error.log but matches line \""
                        . fmt_str($line) . "\" (req $rep_idx)\n" . join('', @more));
                }
            }
        }
        for my $pat (@$pats) {
            next if !defined $pat || $found{$pat};
            Test::More::pass("$name - pattern \"" . fmt_str($pat)
                             . "\" does not match a line in error.log (req $rep_idx)");
        }
    }

    check_serious_lines($block, "req $rep_idx");
    for my $line (@{ $lines || [] }) {
        if ($line =~ /\bAssertion .*?failed\b/) {
            Test::Builder->new->no_ending(1);
            chomp(my $l = $line);
            Test::More::fail("$name - $l\n");
        }
    }
}

1;
