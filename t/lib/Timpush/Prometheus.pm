package Timpush::Prometheus;

# A real Prometheus server (Debian's /usr/bin/prometheus) scraping the
# gateway, for t/metrics.t.  Called fully qualified from "--- init" code:
#
#   my $p = Timpush::Prometheus::start(target => "127.0.0.1:$port");
#   my ($json, $raw) = Timpush::Prometheus::query($p, 'sum(x)');
#   Timpush::Prometheus::stop($p);
#
# start() writes a configuration scraping target's /metrics every interval
# (default 1s), keeps its TSDB in a temporary directory, listens on a free
# port of 127.0.0.1 and returns once /-/ready says so (dies otherwise).
# Nothing is left behind, whatever happens to the test: the server gets
# SIGKILL from the kernel if the perl process that started it dies
# (PR_SET_PDEATHSIG), stop() is also called by DESTROY and by an END block
# for every server still running, and the temporary directory goes with
# the handle.

use strict;
use warnings;

use Config ();
use File::Temp ();
use HTTP::Tiny;
use JSON::PP ();
use POSIX ();
use Time::HiRes ();
use URI::Escape ();

use Timpush::Test ();

my %LIVE;                 # pid => handle, for the END block

my %SYS_prctl = (x86_64 => 157, aarch64 => 167, i386 => 172, i686 => 172);
my $PR_SET_PDEATHSIG = 1;

sub start {
    my (%o) = @_;
    my $target = $o{target} or die "Timpush::Prometheus::start: no target\n";
    my $interval = $o{interval} // '1s';
    my $timeout = $o{scrape_timeout} // $interval;
    my $bin = $o{binary} // '/usr/bin/prometheus';
    die "Timpush::Prometheus::start: $bin is not installed\n" unless -x $bin;

    my $dir = File::Temp->newdir('prometheus-XXXXXX', TMPDIR => 1);
    my $port = Timpush::Test::free_port();

    open my $fh, '>', "$dir/prometheus.yml" or die "$dir: $!";
    print $fh <<"YML";
global:
  scrape_interval: $interval
  scrape_timeout: $timeout
  evaluation_interval: $interval
scrape_configs:
  - job_name: timpush
    metrics_path: /metrics
    static_configs:
      - targets: ['$target']
YML
    close $fh;

    my $parent = $$;
    my $pid = fork // die "Timpush::Prometheus::start: fork: $!\n";
    if ($pid == 0) {
        my ($arch) = $Config::Config{archname} =~ /^([^-]+)/;
        if (my $nr = $SYS_prctl{$arch}) {
            syscall($nr, $PR_SET_PDEATHSIG, 9, 0, 0, 0);
        }
        # the parent may have died before prctl: then go at once
        POSIX::_exit(1) if getppid() != $parent;
        open STDOUT, '>', "$dir/prometheus.log";
        open STDERR, '>&', \*STDOUT;
        { exec $bin, "--config.file=$dir/prometheus.yml",
               "--storage.tsdb.path=$dir/data",
               "--web.listen-address=127.0.0.1:$port",
               '--web.console.templates=' . "$dir/none",
               '--web.console.libraries=' . "$dir/none",
               '--log.level=info' };
        POSIX::_exit(127);
    }

    my $h = bless { pid => $pid, port => $port, dir => $dir, owner => $$ },
                  __PACKAGE__;
    $LIVE{$pid} = $h;

    my $http = HTTP::Tiny->new(timeout => 2);
    my $until = Time::HiRes::time() + ($o{start_timeout} // 30);
    while (1) {
        my $res = $http->get("http://127.0.0.1:$port/-/ready");
        return $h if $res->{status} == 200;
        if (waitpid($pid, POSIX::WNOHANG()) > 0) {
            delete $h->{pid};
            delete $LIVE{$pid};
            die "Timpush::Prometheus::start: prometheus exited: "
                . log_text($h) . "\n";
        }
        if (Time::HiRes::time() > $until) {
            stop($h);
            die "Timpush::Prometheus::start: not ready on $port: "
                . log_text($h) . "\n";
        }
        Time::HiRes::sleep(0.1);
    }
}

sub log_text {
    my ($h) = @_;
    open my $fh, '<', "$h->{dir}/prometheus.log" or return '';
    local $/;
    return <$fh> // '';
}

# GET /api/v1/<what>?<query string>: (decoded JSON, raw)
sub api {
    my ($h, $what, %params) = @_;
    my $qs = join '&', map { "$_=" . URI::Escape::uri_escape($params{$_}) }
                       sort keys %params;
    my $res = HTTP::Tiny->new(timeout => 10)
        ->get("http://127.0.0.1:$h->{port}/api/v1/$what" . ($qs ? "?$qs" : ''));
    my $json = eval { JSON::PP::decode_json($res->{content}) };
    return ($json, $res->{content});
}

sub query {
    my ($h, $q) = @_;
    return api($h, 'query', query => $q);
}

# the value of an instant query with one result (undef if none)
sub scalar_value {
    my ($json) = @_;
    return undef unless $json && ($json->{status} // '') eq 'success';
    my $r = $json->{data}{result} || [];
    return undef unless @$r == 1;
    return 0 + $r->[0]{value}[1];
}

# polls query $q until its single value is $want, at most $secs: the last
# (json, raw)
sub wait_value {
    my ($h, $q, $want, $secs) = @_;
    my $until = Time::HiRes::time() + $secs;
    my ($json, $raw);
    while (1) {
        ($json, $raw) = query($h, $q);
        my $v = scalar_value($json);
        return ($json, $raw) if defined $v && $v == $want;
        return ($json, $raw) if Time::HiRes::time() > $until;
        Time::HiRes::sleep(0.25);
    }
}

sub stop {
    my ($h) = @_;
    my $pid = $h->{pid} or return;
    return unless $h->{owner} == $$;
    # from an END block or DESTROY: the test's exit status stays
    local $?;
    delete $h->{pid};
    delete $LIVE{$pid};
    kill 'TERM', $pid;
    for (1 .. 200) {
        return if waitpid($pid, POSIX::WNOHANG()) > 0;
        Time::HiRes::sleep(0.05);
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

sub running {
    my ($h) = @_;
    return $h->{pid} && kill(0, $h->{pid});
}

sub DESTROY {
    my ($h) = @_;
    stop($h) if $h->{owner} == $$;
}

END {
    # forks of the test process (push_async...) leave the servers alone
    for my $h (values %LIVE) {
        stop($h) if $h->{owner} == $$;
    }
}

1;
