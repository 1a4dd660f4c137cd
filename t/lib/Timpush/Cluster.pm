package Timpush::Cluster;

# A Redis Cluster on loopback for the t/cluster/ suites (DESIGN §15):
# 3 masters and 3 replicas by default, on free ports, in a temporary
# directory, no persistence.  Nodes are children of the test process and
# die with it (PR_SET_PDEATHSIG), and stop() runs at exit, also when the
# test dies.
#
#   my $c = Timpush::Cluster->new;             # up, cluster_state:ok
#   my $c = Timpush::Cluster->new(tls => 1);   # TLS only, bus too; the
#                                # CA: $c->ca (a test CA of its own)
#   $c->seeds;                   # "127.0.0.1:P1 127.0.0.1:P2 ..."
#   $c->cmd($port, @argv);       # one command; an error reply dies
#   $c->try_cmd($port, @argv);   # (reply, error text)
#   $c->slot($key);  $c->node_for_key($key);  $c->master_of($slot);
#   $c->masters;  $c->replicas;  $c->id($port);
#   $c->migrate_begin($slot, $from, $to);   # IMPORTING / MIGRATING: held
#   $c->migrate_keys($slot, $from, $to);    # MIGRATE the slot's keys
#   $c->migrate_end($slot, $to);            # SETSLOT NODE on every master
#   $c->move_slot($slot, $from, $to);       # the three above
#   $c->reshard($from, $to, $n);  # redis-cli --cluster reshard, n slots
#   $c->fail_master($port);      # kill -9, wait for a replica promoted
#   $c->replicas_of($port);      # a master's replicas
#   $c->detach($replica);        # cut from its master: it gets no more
#   $c->attach($replica);        # writes (WAIT counts it no more); back
#   $c->restart($port);          # back, as a replica of its successor
#   $c->flushall;  $c->wait_ok;  $c->stop;
#
# Ports are node ports; each node's cluster bus has its own free port
# (cluster-port), not port + 10000.  cluster-node-timeout is 1000 ms, and
# replicas may always take over (cluster-replica-validity-factor 0), so
# a failover takes about 2 s.

use strict;
use warnings;

use Config ();
use File::Temp qw(tempdir);
use File::Path qw(remove_tree);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);

our $NODE_TIMEOUT = 1000;    # ms

my %SYS_prctl = (x86_64 => 157, aarch64 => 167, i386 => 172, i686 => 172);
my $PR_SET_PDEATHSIG = 1;

# every cluster still running, for END
my %running;

END {
    my $status = $?;
    $_->stop for values %running;
    $? = $status;
}

sub new {
    my ($class, %opt) = @_;
    my $self = bless {
        masters  => $opt{masters} // 3,
        replicas => $opt{replicas} // 1,
        tls      => $opt{tls},
        dir      => tempdir('timpush-cluster-XXXXXX', TMPDIR => 1),
        nodes    => {},                 # port => { pid, bus }
        log      => $opt{log},
    }, $class;

    $running{"$self"} = $self;

    # END also on a signal
    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub { exit 128 } if ($SIG{$sig} // 'DEFAULT') eq 'DEFAULT';
    }

    $self->_certs if $self->{tls};

    my $n = $self->{masters} * (1 + $self->{replicas});

    # nor the ports of the suite's nginx and simulators, free between
    # blocks
    my %taken = map { $ENV{$_} => 1 } grep { /^TEST_NGINX_\w*PORT$/ }
                keys %ENV;
    for (1 .. $n) {
        my $port = _free_port(\%taken);
        my $bus = _free_port(\%taken);
        $self->{nodes}{$port} = { bus => $bus };
        push @{ $self->{order} }, $port;
    }

    $self->_spawn($_) for @{ $self->{order} };
    $self->_wait_up($_) for @{ $self->{order} };

    my @out = $self->_cli('--cluster', 'create',
                          (map { "127.0.0.1:$_" } @{ $self->{order} }),
                          '--cluster-replicas', $self->{replicas},
                          '--cluster-yes');
    die "Timpush::Cluster: redis-cli --cluster create failed:\n@out"
        if $?;

    $self->wait_ok;
    $self->_touch;
    $self->wait_ok;

    return $self;
}

sub ports { @{ $_[0]{order} } }

sub seeds {
    my $self = shift;
    return join ' ', map { "127.0.0.1:$_" } $self->masters;
}

sub dir { $_[0]{dir} }

# the CA that signed the nodes' certificate, with tls
sub ca { $_[0]{tls} ? "$_[0]{dir}/tls/ca.crt" : undef }

# A CA and one certificate for every node, for 127.0.0.1 and localhost:
# server and client (the cluster bus asks the connecting node for its
# certificate whatever tls-auth-clients says).
sub _certs {
    my $self = shift;
    my $d = "$self->{dir}/tls";
    mkdir $d;
    open my $ext, '>', "$d/ext.cnf" or die "Timpush::Cluster: $d: $!";
    print {$ext} "[node]\nbasicConstraints = CA:FALSE\n"
        . "keyUsage = digitalSignature, keyEncipherment\n"
        . "extendedKeyUsage = serverAuth, clientAuth\n"
        . "subjectAltName = DNS:localhost, IP:127.0.0.1\n";
    close $ext;
    for my $cmd (
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        . "-keyout $d/ca.key -out $d/ca.crt -days 30 "
        . "-subj '/O=timpush test/CN=timpush cluster CA'",
        "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        . "-keyout $d/node.key -out $d/node.csr "
        . "-subj '/O=timpush test/CN=localhost'",
        "x509 -req -in $d/node.csr -CA $d/ca.crt -CAkey $d/ca.key "
        . "-CAcreateserial -days 30 -extfile $d/ext.cnf -extensions node "
        . "-out $d/node.crt")
    {
        system("openssl $cmd >/dev/null 2>&1") == 0
            or die "Timpush::Cluster: openssl $cmd failed\n";
    }
    $self->{tls} = $d;
}

# the node's command line: no persistence, loopback only, its own bus port
sub _spawn {
    my ($self, $port) = @_;
    my $node = $self->{nodes}{$port};
    my $dir = "$self->{dir}/$port";
    mkdir $dir;

    my @net = ('--port', $port);
    if (my $t = $self->{tls}) {
        @net = ('--port', 0, '--tls-port', $port, '--tls-cluster', 'yes',
                '--tls-replication', 'yes', '--tls-auth-clients', 'no',
                '--tls-cert-file', "$t/node.crt",
                '--tls-key-file', "$t/node.key",
                '--tls-ca-cert-file', "$t/ca.crt");
    }

    my @argv = ('redis-server', @net, '--bind', '127.0.0.1',
                '--cluster-enabled', 'yes',
                '--cluster-port', $node->{bus},
                '--cluster-config-file', "$dir/nodes.conf",
                '--cluster-node-timeout', $NODE_TIMEOUT,
                '--cluster-replica-validity-factor', 0,
                '--save', '', '--appendonly', 'no', '--dir', $dir,
                '--daemonize', 'no', '--logfile', "$dir/redis.log");

    my $parent = $$;
    my $pid = fork // die "Timpush::Cluster: fork: $!";
    if ($pid == 0) {
        my ($arch) = $Config::Config{archname} =~ /^([^-]+)/;
        if (my $nr = $SYS_prctl{$arch}) {
            syscall($nr, $PR_SET_PDEATHSIG, 9, 0, 0, 0);
        }
        POSIX::_exit(0) if getppid() != $parent;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', "$dir/stderr";
        { no warnings 'exec'; exec @argv; }
        POSIX::_exit(127);
    }

    $node->{pid} = $pid;
}

sub _wait_up {
    my ($self, $port) = @_;
    my $until = time + 10;
    while (time < $until) {
        my ($r) = eval { $self->try_cmd($port, 'PING') };
        return if defined $r && $r eq 'PONG';
        my $pid = $self->{nodes}{$port}{pid};
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $self->{nodes}{$port}{pid};
            die "Timpush::Cluster: redis-server on $port exited: "
                . _slurp("$self->{dir}/$port/stderr")
                . _slurp("$self->{dir}/$port/redis.log");
        }
        sleep 0.05;
    }
    die "Timpush::Cluster: redis-server on $port does not answer PING";
}

sub _slurp {
    open my $fh, '<', shift or return '';
    local $/;
    return <$fh> // '';
}

sub _free_port {
    my $taken = shift;
    my $lo = 32768;
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        ($lo) = split ' ', scalar <$fh>;
    }
    for (1 .. 1000) {
        my $port = 10000 + int rand($lo - 10000);
        next if $taken->{$port};
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $port, Listen => 1,
                                      ReuseAddr => 1) or next;
        close $s;
        $taken->{$port} = 1;
        return $port;
    }
    die "Timpush::Cluster: no free port";
}

# redis-cli with the cluster's TLS options; its output, lines
sub _cli {
    my ($self, @args) = @_;
    my @tls;
    if (my $t = $self->{tls}) {
        @tls = ('--tls', '--cacert', "$t/ca.crt");
    }
    my $pid = open(my $fh, '-|') // die "Timpush::Cluster: fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', '/dev/null';
        { no warnings 'exec'; exec 'redis-cli', @tls, @args; }
        POSIX::_exit(127);
    }
    my @out = <$fh>;
    close $fh;
    return @out;
}

# redis-cli's output for one command to one node (-c: following
# redirections as a cluster client), without its trailing newline
sub cli {
    my ($self, $port, @args) = @_;
    my @out = $self->_cli('-h', '127.0.0.1', '-p', $port, @args);
    my $out = join '', @out;
    $out =~ s/\s+\z//;
    return $out;
}

# One command: (reply as Perl data, undef) or (undef, error text).  TLS
# nodes are asked through redis-cli (one code path is enough for a rig),
# plain nodes over a socket.
sub try_cmd {
    my ($self, $port, @a) = @_;

    if ($self->{tls}) {
        my $out = $self->cli($port, '--no-raw', @a);
        return (undef, $1) if $out =~ /^\(error\) (.*)/s;
        return (undef, $out) if $out =~ /^Could not connect/;
        return ($self->_parse_cli($out), undef);
    }

    my @r = $self->pipeline($port, [@a]);
    return @{ $r[0] };
}

# Commands sent together on one connection (ASKING then a command):
# ([reply, error], ...) in order.  Plain nodes only.
sub pipeline {
    my ($self, $port, @cmds) = @_;
    die "Timpush::Cluster: pipeline: not over TLS\n" if $self->{tls};

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                  Timeout => 5)
        or return map { [undef, "connect to $port: $!"] } @cmds;
    binmode $s;
    my $out = '';
    for my $a (@cmds) {
        $out .= '*' . @$a . "\r\n";
        $out .= '$' . length($_) . "\r\n$_\r\n" for @$a;
    }
    print {$s} $out;

    my @replies;
    for (@cmds) {
        my $err;
        my $r = eval { _read($s, \$err) };
        push @replies, $@ ? [undef, $@] : [defined $err ? undef : $r, $err];
        last if $@;
    }
    close $s;
    return @replies;
}

sub _read {
    my ($s, $err) = @_;
    my $line = <$s>;
    die "connection closed\n" unless defined $line;
    $line =~ s/\r\n$//;
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
    return $v if $t eq '+';
    if ($t eq '-') {
        $$err //= $v;
        return undef;
    }
    return 0 + $v if $t eq ':';
    if ($t eq '$') {
        return undef if $v < 0;
        my $d = '';
        read($s, $d, $v + 2 - length $d, length $d) or die "closed\n"
            while length $d < $v + 2;
        return substr($d, 0, $v);
    }
    return undef if $v < 0;
    return [map { _read($s, $err) } 1 .. $v];
}

# redis-cli --no-raw output of the few replies the rig reads over TLS:
# a status or string, an integer, or a flat list
sub _parse_cli {
    my ($self, $out) = @_;
    return undef if $out eq '(nil)';
    return 0 + $1 if $out =~ /^\(integer\) (-?\d+)$/;
    return $out if $out !~ /\n/ && $out !~ /^\d+\) /;
    my @list = map { s/^\s*\d+\) //r =~ s/^"(.*)"$/$1/sr }
               split /\n/, $out;
    return \@list;
}

sub cmd {
    my ($self, $port, @a) = @_;
    my ($r, $err) = $self->try_cmd($port, @a);
    die "Timpush::Cluster: $port: @a: $err\n" if defined $err;
    return $r;
}

sub _info {
    my ($self, $port, $section) = @_;
    my ($r) = $self->try_cmd($port, $section eq 'cluster'
                                    ? ('CLUSTER', 'INFO')
                                    : ('INFO', $section));
    return {} unless defined $r;
    $r = join "\n", @$r if ref $r;
    return { map { /^(\w+):(.*?)\r?$/ ? ($1, $2) : () } split /\n/, $r };
}

# One write on each master: CLUSTER SLOTS lists a replica only once its
# replication offset is not 0 (Redis 7), and an empty master sends
# nothing but a PING every 10 s.
sub _touch {
    my $self = shift;
    for my $m ($self->masters) {
        my $i = 0;
        $i++ until $self->master_of($self->slot("timpush-rig:$i")) == $m;
        $self->cmd($m, 'SET', "timpush-rig:$i", 1);
        $self->cmd($m, 'DEL', "timpush-rig:$i");
    }
}

sub _alive {
    my $self = shift;
    return grep { $self->{nodes}{$_}{pid} } @{ $self->{order} };
}

# Every running node: cluster_state:ok, all slots served, the same view of
# the slots (redis-cli --cluster check), replicas linked to their master
# and known as replicas by every node.
sub wait_ok {
    my ($self, $timeout) = @_;
    my $until = time + ($timeout // 30);
    my $why = '';
    while (time < $until) {
        $why = $self->_not_ok;
        return 1 if $why eq '';
        sleep 0.1;
    }
    die "Timpush::Cluster: not ok after the wait: $why\n";
}

sub _not_ok {
    my $self = shift;
    my @alive = $self->_alive;
    for my $port (@alive) {
        my $i = $self->_info($port, 'cluster');
        return "$port: cluster_state " . ($i->{cluster_state} // '?')
            unless ($i->{cluster_state} // '') eq 'ok';
        return "$port: slots_ok " . ($i->{cluster_slots_ok} // '?')
            unless ($i->{cluster_slots_ok} // 0) == 16384;
        my $r = $self->_info($port, 'replication');
        return "$port: replica link " . ($r->{master_link_status} // '?')
            if ($r->{role} // '') eq 'slave'
               && ($r->{master_link_status} // '') ne 'up';
    }
    # every node knows every linked replica as one (CLUSTER SLOTS lists
    # the replicas a node knows of)
    my @linked = grep {
        ($self->_info($_, 'replication')->{role} // '') eq 'slave'
    } @alive;
    for my $port (@alive) {
        my $n = eval { $self->_nodes($port) } or return "$port: CLUSTER NODES";
        for (@linked) {
            return "$port does not know $_ as a replica"
                unless $n->{$_} && $n->{$_}{flags} =~ /slave/
                       && $n->{$_}{flags} !~ /fail/;
        }
    }
    if (!$self->{tls}) {
        for my $port (@alive) {
            my ($slots) = $self->try_cmd($port, 'CLUSTER', 'SLOTS');
            my %listed = map { map { $_->[1] => 1 } @$_[3 .. $#$_] }
                         @{ $slots // [] };
            return "$port: CLUSTER SLOTS lists " . keys(%listed)
                   . " replicas" if keys %listed != @linked;
        }
    }
    my $out = join '', $self->_cli('--cluster', 'check', "127.0.0.1:$alive[0]");
    return "$alive[0]: redis-cli --cluster check:\n$out"
        if $? || $out !~ /All nodes agree about slots configuration/
              || $out =~ /\[ERR\]|\[WARNING\]/;
    return '';
}

# node id and role of each node, as CLUSTER NODES on one running node
sub _nodes {
    my ($self, $via) = @_;
    $via //= ($self->_alive)[0];
    my $txt = $self->cmd($via, 'CLUSTER', 'NODES');
    $txt = join "\n", @$txt if ref $txt;
    my %n;
    for (split /\n/, $txt) {
        my ($id, $addr, $flags, $master, undef, undef, undef, $link, @slots)
            = split ' ';
        next unless $addr;
        my ($port) = $addr =~ /:(\d+)/;
        $n{$port} = { id => $id, flags => $flags,
                      master => $master, link => $link,
                      slots => [@slots] };
    }
    return \%n;
}

sub id {
    my ($self, $port) = @_;
    return $self->{ids}{$port} //= $self->cmd($port, 'CLUSTER', 'MYID');
}

sub masters {
    my $self = shift;
    my $n = $self->_nodes;
    my @m = sort { $a <=> $b }
           grep { $n->{$_}{flags} =~ /master/ && $n->{$_}{flags} !~ /fail/
                  && @{ $n->{$_}{slots} } } keys %$n;
    return @m;
}

sub replicas {
    my $self = shift;
    my $n = $self->_nodes;
    my @r = sort { $a <=> $b }
            grep { $n->{$_}{flags} =~ /slave/ && $n->{$_}{flags} !~ /fail/ }
            keys %$n;
    return @r;
}

sub slot {
    my ($self, $key) = @_;
    return $self->cmd(($self->_alive)[0], 'CLUSTER', 'KEYSLOT', $key);
}

# the master serving $slot, as CLUSTER SLOTS says
sub master_of {
    my ($self, $slot, $via) = @_;
    my $slots = $self->cmd($via // ($self->_alive)[0], 'CLUSTER', 'SLOTS');
    if (!ref $slots->[0]) {
        # TLS: redis-cli prints the nested reply flat; ask CLUSTER NODES
        my $n = $self->_nodes($via);
        for my $port (keys %$n) {
            next unless $n->{$port}{flags} =~ /master/;
            for (@{ $n->{$port}{slots} }) {
                next if /^\[/;
                my ($s, $e) = split /-/;
                $e //= $s;
                return 0 + $port if $slot >= $s && $slot <= $e;
            }
        }
        return undef;
    }
    for my $r (@$slots) {
        return $r->[2][1] if $slot >= $r->[0] && $slot <= $r->[1];
    }
    return undef;
}

sub node_for_key {
    my ($self, $key) = @_;
    return $self->master_of($self->slot($key));
}

# A migration of $slot from $from to $to, left in the middle: keys not
# yet moved are served by $from, a key missing there gets ASK.
sub migrate_begin {
    my ($self, $slot, $from, $to) = @_;
    $self->cmd($to, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING',
               $self->id($from));
    $self->cmd($from, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING',
               $self->id($to));
}

# MIGRATE up to $count keys of $slot (all by default); how many moved
sub migrate_keys {
    my ($self, $slot, $from, $to, $count) = @_;
    my $moved = 0;
    while (1) {
        my $keys = $self->cmd($from, 'CLUSTER', 'GETKEYSINSLOT', $slot,
                              $count ? $count - $moved : 100);
        last unless $keys && @$keys;
        $self->cmd($from, 'MIGRATE', '127.0.0.1', $to, '', 0, 5000,
                   'KEYS', @$keys);
        $moved += @$keys;
        last if $count && $moved >= $count;
    }
    return $moved;
}

# the slot is $to's: told to the target, then the source, then the others
sub migrate_end {
    my ($self, $slot, $to) = @_;
    my @masters = $self->masters;
    my $id = $self->id($to);
    for my $port ($to, grep { $_ != $to } @masters) {
        $self->cmd($port, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $id);
    }
}

sub move_slot {
    my ($self, $slot, $from, $to) = @_;
    $self->migrate_begin($slot, $from, $to);
    $self->migrate_keys($slot, $from, $to);
    $self->migrate_end($slot, $to);
    $self->wait_ok;
}

# redis-cli --cluster reshard: $n slots from $from to $to, keys moved
sub reshard {
    my ($self, $from, $to, $n) = @_;
    my @out = $self->_cli('--cluster', 'reshard', "127.0.0.1:$from",
                          '--cluster-from', $self->id($from),
                          '--cluster-to', $self->id($to),
                          '--cluster-slots', $n, '--cluster-yes');
    die "Timpush::Cluster: reshard failed:\n@out" if $?;
    $self->wait_ok;
    return join '', @out;
}

# the replicas of a master, as CLUSTER NODES says
sub replicas_of {
    my ($self, $port) = @_;
    my $n = $self->_nodes;
    my $id = $n->{$port}{id};
    return sort { $a <=> $b } grep { $n->{$_}{master} eq $id } keys %$n;
}

# A replica cut from its master (a replica lagging, or a partition between
# them): its link closed, and each attempt to make it again refused (a
# password the master does not have).  It still answers and gossips, so
# the cluster, and CLUSTER SLOTS, keep it as a replica; it gets nothing
# written from now on.  (A replica stopped by SIGSTOP would not do: what
# the master wrote waits in its socket, and it reads it once continued.)
sub detach {
    my ($self, $port) = @_;
    my $master = $self->_info($port, 'replication')->{master_port}
        or die "Timpush::Cluster: $port is not a replica\n";
    $self->cmd($port, 'CONFIG', 'SET', 'masterauth', 'timpush-detached');
    $self->cmd($port, 'CLIENT', 'KILL', 'TYPE', 'master');
    my $until = time + 10;
    while (($self->_info($master, 'replication')->{connected_slaves} // 1)
           > 0)
    {
        die "Timpush::Cluster: $master still has a replica\n"
            if time > $until;
        sleep 0.05;
    }
    $self->{nodes}{$port}{detached} = 1;
}

sub attach {
    my ($self, $port) = @_;
    return unless delete $self->{nodes}{$port}{detached};
    $self->cmd($port, 'CONFIG', 'SET', 'masterauth', '');
}

# kill -9 a master; returns the port of the replica promoted in its place
# (a detached replica of it attached: it takes over with what it had)
sub fail_master {
    my ($self, $port, $timeout) = @_;
    my $n = $self->_nodes;
    my $id = $n->{$port}{id};
    my @mine = grep { $n->{$_}{master} eq $id } keys %$n;
    die "Timpush::Cluster: $port is not a master with a replica\n"
        unless @mine;

    $self->_kill($port);
    $self->attach($_) for @mine;

    my $until = time + ($timeout // 30);
    while (time < $until) {
        my $now = eval { $self->_nodes };
        if ($now) {
            for (@mine) {
                if ($now->{$_}{flags} =~ /master/
                    && $now->{$_}{flags} !~ /fail/
                    && $self->_not_ok eq '')
                {
                    return 0 + $_;
                }
            }
        }
        sleep 0.1;
    }
    die "Timpush::Cluster: no replica of $port promoted\n";
}

sub _kill {
    my ($self, $port) = @_;
    my $pid = delete $self->{nodes}{$port}{pid} or return;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# a node killed, started again with its nodes.conf: a former master
# learns that its replica took over and follows it
sub restart {
    my ($self, $port) = @_;
    return if $self->{nodes}{$port}{pid};
    $self->_spawn($port);
    $self->_wait_up($port);
    $self->wait_ok;
}

sub flushall {
    my $self = shift;
    $self->cmd($_, 'FLUSHALL') for $self->masters;
}

sub stop {
    my $self = shift;
    return unless $running{"$self"};
    for my $port (keys %{ $self->{nodes} }) {
        $self->_kill($port);
    }
    remove_tree($self->{dir}) if $self->{dir} && !$ENV{TIMPUSH_CLUSTER_KEEP};
    delete $running{"$self"};
}

sub DESTROY {
    my $self = shift;
    local ($., $@, $!, $^E, $?);
    $self->stop;
}

1;
