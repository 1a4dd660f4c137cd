#
# The gateway on a Redis Cluster (DESIGN §15): a 3-master / 3-replica
# cluster on loopback (t/lib/Timpush/Cluster.pm), nginx given its masters
# as seed nodes.  Registrations spread over every master, listed back,
# pushed to; slots moved and a master killed while pushes run.  What must
# hold: no registration acknowledged is lost, every push is answered once,
# pushes resume within the failover time plus one timeout.
#
# Acknowledged means: the gateway answered 200 after Redis answered.  With
# Redis's asynchronous replication a write acknowledged by a master that is
# killed before its replica got it is lost; the store waits for a replica
# (WAIT, wait=1) before answering, as DESIGN §15 asks: TEST 7 kills a
# master under registrations, TEST 13 with its replica cut off first.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;
use Timpush::Cluster;
use Time::HiRes qw(sleep time);
use File::Temp ();

our $cluster = Timpush::Cluster->new;
$ENV{TEST_NGINX_CLUSTER_SEEDS} = $cluster->seeds;
$ENV{TEST_NGINX_B_PORT} ||= Timpush::Test::free_port();

# the slowest a failover may take here: the node timeout, the election,
# and the map refreshed by the store after its first error
our $FAILOVER_MS = 5 * $Timpush::Cluster::NODE_TIMEOUT;
our $TIMEOUT_MS = 2000;    # timeout= below

our $USERS = 1000;
our @tokens;

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    # the suite's own store, unless the block writes one
    if ($http !~ /timpush_redis/) {
        $http = "timpush_redis_cluster \$TEST_NGINX_CLUSTER_SEEDS "
                . "prefix=tc timeout=${TIMEOUT_MS}ms;\n$http";
    }

    if ($http !~ /timpush_apns_mock/ && $http !~ /no simulator/) {
        $http .= Timpush::Push::simulator();
    }

    $block->set_value('http_config', $http);

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }
});

# every user of register_many('cu', ...) still has exactly its device
sub all_registered {
    my $bad = 0;
    for my $i (0 .. $USERS - 1) {
        my ($status, $json) = Timpush::Push::call('GET',
                                                  "/v1/users/cu$i/devices");
        $bad++ unless $status == 200 && @{ $json->{devices} // [] } == 1
                      && $json->{devices}[0]{token} eq $tokens[$i];
    }
    return $bad;
}

# the masters holding the users' keys
sub masters_used {
    my %m;
    $m{ $cluster->node_for_key("tc:u:{cu$_}") }++ for 0 .. $USERS - 1;
    return scalar keys %m;
}

# n pushes of 50 users each, from children: their answers
sub pushes_while {
    my ($n, $during) = @_;
    my @h;
    for my $k (0 .. $n - 1) {
        my @to = map { 'cu' . (($k * 50 + $_) % $USERS) } 0 .. 49;
        push @h, Timpush::Push::push_async({
            to => \@to, from => { user_id => 'boss', nickname => 'Boss' },
            elems => [{ type => 'text', text => "push $k" }] });
    }
    $during->();
    return map { [Timpush::Push::push_wait($_)] } @h;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: 1000 users registered through the cluster, over every master
--- init
$::cluster->flushall;
@::tokens = Timpush::Push::register_many('cu', $::USERS, 1001);
Test::More::is(::masters_used(), 3, 'the users\' keys are on all 3 masters');
Test::More::is(::all_registered(), 0, 'every user lists its device');
--- request
GET /v1/users/cu999/devices
--- response_body_like eval
qr/"devices":\[\{"token":"0{56}a00003e7"/
--- no_error_log
[error]



=== TEST 2: a push to 1000 users over 3 masters: every device delivered
--- init
Timpush::Push::clear_log();
my ($status, $res) = Timpush::Push::push_message({
    to => [map { "cu$_" } 0 .. $::USERS - 1],
    from => { user_id => 'boss', nickname => 'Boss' },
    elems => [{ type => 'text', text => 'hello all' }] });
Test::More::is($status, 200, 'push answered 200');
Test::More::is($res->{sent}, $::USERS, 'every device sent');
Test::More::is(scalar @{ Timpush::Push::mock_log() }, $::USERS,
               'the simulator got one notification per device');
--- request
GET /v1/users/cu0/devices
--- response_body_like eval
qr/"badge":1,/
--- no_error_log
[error]



=== TEST 3: a held migration: the gateway follows ASK, registers into it
--- init
my $slot = $::cluster->slot('tc:u:{cu7}');
my $from = $::cluster->master_of($slot);
my ($to) = grep { $_ != $from } $::cluster->masters;
$::cluster->migrate_begin($slot, $from, $to);
$::cluster->migrate_keys($slot, $from, $to);
my ($status, $json) = Timpush::Push::call('GET', '/v1/users/cu7/devices');
Test::More::is($status, 200, 'listed while the slot migrates (ASK)');
Test::More::is($json->{devices}[0]{token}, $::tokens[7], 'its device');
Timpush::Push::register('cu7', 'cd' x 32, 1002);
$::cluster->migrate_end($slot, $to);
$::cluster->wait_ok;
($status, $json) = Timpush::Push::call('GET', '/v1/users/cu7/devices');
Test::More::is(scalar @{ $json->{devices} }, 2,
               'the device registered during the migration is there');
Timpush::Push::call('DELETE', '/v1/users/cu7/devices/' . 'cd' x 32);
--- request
GET /v1/users/cu7/devices
--- error_code: 200
--- no_error_log
[error]



=== TEST 4: slots resharded while pushes run: every push answered once
--- init
my ($a, $b) = $::cluster->masters;
my @answers = ::pushes_while(20, sub { $::cluster->reshard($a, $b, 2000) });
Test::More::is(scalar(grep { defined $_->[0] } @answers), 20,
               'every push answered');
Test::More::is(scalar(grep { $_->[0] == 200 } @answers), 20,
               'every push 200: MOVED followed, the map refreshed');
Test::More::is(scalar(grep { ($_->[1]{sent} // 0) == 50 } @answers), 20,
               'every device of every push sent: no command lost to MOVED');
Test::More::is(::all_registered(), 0, 'no registration lost');
--- request
GET /v1/users/cu1/devices
--- error_code: 200
--- no_error_log
[error]



=== TEST 5: a master killed while pushes run: answered, then resumed
--- init
my $victim = $::cluster->node_for_key('tc:u:{cu3}');
my ($t0, $promoted);
my @answers = ::pushes_while(20, sub {
    $t0 = Time::HiRes::time;
    $promoted = $::cluster->fail_master($victim);
});
Test::More::is(scalar(grep { defined $_->[0] } @answers), 20,
               'every push answered (200, or 503 store_unavailable)');
Test::More::is(scalar(grep { $_->[0] != 200 && $_->[0] != 503 } @answers),
               0, 'no other status');
my $until = $t0 + ($::FAILOVER_MS + $::TIMEOUT_MS) / 1000;
my $status;
while (Time::HiRes::time < $until) {
    ($status) = Timpush::Push::push_message({
        to => ['cu3'], from => { user_id => 'boss', nickname => 'Boss' },
        elems => [{ type => 'text', text => 'after' }] });
    last if $status == 200;
    Time::HiRes::sleep 0.1;
}
Test::More::is($status, 200,
               'pushes resume within the failover time plus one timeout');
Test::More::is(::all_registered(), 0, 'no registration lost');
--- request
GET /v1/users/cu3/devices
--- error_code: 200
--- no_error_log eval
# the node killed: refused, lost, the commands that waited for the
# failover until their deadline; no other error
qr/\[error\](?!.*(?:connect failed|connection lost|no reply within))/



=== TEST 6: the old master back as a replica: nothing changes for clients
--- init
my ($victim) = grep { !$::cluster->{nodes}{$_}{pid} } $::cluster->ports;
$::cluster->restart($victim);
Test::More::is(::all_registered(), 0, 'every user still lists its device');
--- request
GET /v1/users/cu3/devices
--- error_code: 200
--- no_error_log eval
# a seed (the old master) refused until it is back: no other error
qr/\[error\](?!.*connect failed)/



=== TEST 7: registrations while a master is killed: none acknowledged lost
--- init
my $victim = $::cluster->node_for_key('tc:u:{cr0}');
my $dir = File::Temp::tempdir('timpush-acked-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    # keep registering until told to stop; one line per 200
    open my $out, '>', "$dir/acked" or die;
    $out->autoflush(1);
    for my $i (0 .. 1999) {
        my ($status) = Timpush::Push::call('PUT',
            "/v1/users/cr$i/devices/" . sprintf('%064x', 0xb0000000 + $i),
            '{"business_id":1001}');
        print $out "$i\n" if $status == 200;
        last if -e "$dir/stop";
    }
    POSIX::_exit(0);
}
Time::HiRes::sleep 0.5;
$::cluster->fail_master($victim);
Time::HiRes::sleep 0.5;
open my $stop, '>', "$dir/stop";
close $stop;
waitpid $pid, 0;
open my $in, '<', "$dir/acked" or die;
my @acked = map { chomp; $_ } <$in>;
my $lost = 0;
for my $i (@acked) {
    my ($status, $json) = Timpush::Push::call('GET',
                                              "/v1/users/cr$i/devices");
    $lost++ unless $status == 200 && @{ $json->{devices} // [] } == 1;
}
Test::More::cmp_ok(scalar @acked, '>', 0, 'registrations acknowledged');
Test::More::is($lost, 0, 'none of them lost in the failover');
--- request
GET /v1/users/cr0/devices
--- error_code: 200
--- no_error_log eval
# the node killed: refused, lost, the commands that waited for the
# failover until their deadline; no other error
qr/\[error\](?!.*(?:connect failed|connection lost|no reply within))/



=== TEST 8: a master killed, no traffic: the map is asked again on the connection's error, timpush_redis_up back to 1
--- config
location /v1/ { timpush_api; }
location = /metrics { timpush_metrics; }
--- init
use Timpush::Metrics;
my $up = sub {
    my ($m) = Timpush::Metrics::scrape($ENV{TEST_NGINX_SERVER_PORT});
    return Timpush::Metrics::value($m, 'timpush_redis_up') // -1;
};
my $poll = sub {
    my ($want, $secs) = @_;
    my $until = Time::HiRes::time() + $secs;
    Time::HiRes::sleep(0.1) until $up->() == $want
                                  || Time::HiRes::time() > $until;
    return $up->();
};
my ($dead) = grep { !$::cluster->{nodes}{$_}{pid} } $::cluster->ports;
$::cluster->restart($dead) if defined $dead;
Test::More::is($poll->(1, 10), 1, 'up: every master connected');
my $victim = $::cluster->node_for_key('tc:u:{cu5}');
$::cluster->fail_master($victim);
Test::More::is($poll->(1, ($::FAILOVER_MS + $::TIMEOUT_MS) / 1000), 1,
               'up again after the failover, with no command sent');
$::cluster->restart($victim);
$::cluster->wait_ok;
--- request
GET /v1/users/cu5/devices
--- error_code: 200
--- no_error_log eval
qr/\[error\](?!.*(?:connect failed|connection lost))/



=== TEST 9: a reply lost with its connection: the command is not sent again (badges counted once)
--- http_config
timpush_redis_cluster $TEST_NGINX_CLUSTER_SEEDS prefix=tc timeout=1000ms;
timpush_devices_per_app 100;
--- init
# 100 devices: the PUSH script's reply (the user's hash) is larger than
# the hard limit of the output buffer set on its node, which closes the
# connection after the script ran (Redis: client-output-buffer-limit)
my $body = '{"business_id":1001}';
for my $i (0 .. 99) {
    my ($status) = Timpush::Push::call('PUT', '/v1/users/big/devices/'
                                       . sprintf('%064x', 0xc0000000 + $i),
                                       $body);
    die "register: $status" unless $status == 200;
}
my $node = $::cluster->node_for_key('tc:u:{big}');
$::cluster->cmd($node, 'CONFIG', 'SET', 'client-output-buffer-limit',
                'normal 1024 1024 0');
my ($status, $res) = Timpush::Push::push_message({
    to => ['big'], from => { user_id => 'boss', nickname => 'Boss' },
    elems => [{ type => 'text', text => 'once' }] });
$::cluster->cmd($node, 'CONFIG', 'SET', 'client-output-buffer-limit',
                'normal 0 0 0');
Test::More::is($status, 200, 'the push answered');
Test::More::is($res->{results}[0]{error}, 'store_unavailable',
               'the user not read: its reply was lost');
my $hash = $::cluster->cmd($node, 'HGETALL', 'tc:u:{big}');
my %h = @$hash;
Test::More::is(join(',', sort { $a <=> $b } map { $h{$_} }
                         grep { /^b:/ } keys %h),
               join(',', (1) x 100),
               'every badge counted once: the script ran once');
--- request
GET /v1/users/big/devices
--- error_code: 200
--- no_error_log eval
qr/\[error\](?!.*connection lost)/



=== TEST 10: timpush_redis and timpush_redis_cluster together: nginx -t fails
--- http_config
timpush_redis 127.0.0.1:$TEST_NGINX_REDIS_PORT;
timpush_redis_cluster $TEST_NGINX_CLUSTER_SEEDS;
--- config
location /v1/ { timpush_api; }
--- must_die
--- error_log
"timpush_redis_cluster" directive cannot be used with "timpush_redis"



=== TEST 11: a seed that is not host:port: nginx -t names it
--- http_config
timpush_redis_cluster 127.0.0.1;
--- config
location /v1/ { timpush_api; }
--- must_die
--- error_log
"timpush_redis_cluster" directive has a seed node that is not host:port "127.0.0.1"



=== TEST 12: a gateway started while a master is dead, before the failover: the map names a node that refuses at once; it is waited for, then its replica used
--- init
my ($dead) = grep { !$::cluster->{nodes}{$_}{pid} } $::cluster->ports;
if (defined $dead) {
    $::cluster->restart($dead);
    $::cluster->wait_ok;
}
my ($victim, $seed) = $::cluster->masters;
my $port = $ENV{TEST_NGINX_B_PORT};
$::cluster->_kill($victim);
my $b = Timpush::Push::start_gateway(master => 1, port => $port,
    store => "timpush_redis_cluster 127.0.0.1:$seed prefix=tc timeout=2000ms;");
$::cluster->wait_ok;
my $http = HTTP::Tiny->new(timeout => 10);
my ($bad, $until) = (1, Time::HiRes::time() + ($::FAILOVER_MS + $::TIMEOUT_MS) / 1000);
while ($bad && Time::HiRes::time() < $until) {
    $bad = grep {
        $http->get("http://127.0.0.1:$port/v1/users/cu$_/devices")->{status}
        != 200
    } 0 .. 29;
    Time::HiRes::sleep(0.1) if $bad;
}
Test::More::is($bad, 0, 'the new gateway reads users of every slot');
my $log = Timpush::Push::slurp("$b->{dir}/logs/error.log");
Test::More::unlike($log, qr/exited on signal|\[alert\]|\[crit\]/,
                   'no worker crashed, no alert');
Timpush::Push::stop_nginx($b);
$::cluster->restart($victim);
$::cluster->wait_ok;
--- request
GET /v1/users/cu9/devices
--- error_code: 200
--- no_error_log eval
qr/\[error\](?!.*(?:connect failed|connection lost|no reply within))/



=== TEST 13: a replica that lags (cut from its master) when its master dies: with wait=1 (the default) a write only the master has is not answered 200, and every registration answered 200 is there after the failover
--- init
$::cluster->wait_ok;
my $victim = $::cluster->node_for_key('tc:u:{cw0}');
my ($replica) = $::cluster->replicas_of($victim);
# users on the victim, and users elsewhere whose token's index is too
my (@on, @off, %tok);
for (my $i = 0; @on < 4 || @off < 4; $i++) {
    my $t = sprintf '%064x', 0xd0000000 + $i;
    if ($::cluster->node_for_key("tc:u:{cw$i}") == $victim) {
        push @on, $i if @on < 4;
    } elsif ($::cluster->node_for_key("tc:t:{$t}") != $victim) {
        push @off, $i if @off < 4;
    }
    $tok{$i} = $t;
}
$::cluster->detach($replica);
# registered at once, from children (a write waits for WAIT): status,
# error and seconds of each, in a file
my $dir = File::Temp::tempdir('timpush-wait-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
my @kids;
for my $i (@on, @off) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $t0 = Time::HiRes::time;
        my ($status, $json) = Timpush::Push::call('PUT',
            "/v1/users/cw$i/devices/$tok{$i}", '{"business_id":1001}');
        open my $out, '>', "$dir/cw$i" or die;
        printf $out "%s %s %.3f\n", $status,
               ref $json && ref $json->{error} ? $json->{error}{code} : '-',
               Time::HiRes::time - $t0;
        close $out;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid $_, 0 for @kids;
my %res;
for my $i (@on, @off) {
    open my $in, '<', "$dir/cw$i" or die "cw$i: no answer";
    $res{$i} = [split ' ', scalar <$in>];
}
for my $i (@on) {
    Test::More::is("$res{$i}[0] $res{$i}[1]", '503 store_unavailable',
                   "cw$i on the master whose replica lags: not acknowledged");
    Test::More::cmp_ok($res{$i}[2], '<', $::TIMEOUT_MS / 1000 + 1,
                       "cw$i answered within the timeout");
}
Test::More::is(scalar(grep { $res{$_}[0] == 200 } @off), scalar @off,
               'users of the other masters registered');
$::cluster->fail_master($victim);
my ($acked, $lost) = (0, 0);
for my $i (@on, @off) {
    next unless $res{$i}[0] == 200;
    $acked++;
    my ($status, $json) = Timpush::Push::call('GET',
                                              "/v1/users/cw$i/devices");
    $lost++ unless $status == 200 && @{ $json->{devices} // [] } == 1
                   && $json->{devices}[0]{token} eq $tok{$i};
}
Test::More::cmp_ok($acked, '>', 0, 'registrations acknowledged');
Test::More::is($lost, 0, 'none of them lost in the failover');
$::cluster->restart($victim);
$::cluster->wait_ok;
--- request
GET /v1/users/cw0/devices
--- error_code: 200
--- error_log eval
qr/\[error\].*Redis 127\.0\.0\.1:\d+: not replicated to 1 replica\(s\) within \d+ ms/
--- no_error_log eval
# the node killed: refused, lost, the commands that waited for the
# failover or behind a WAIT until their deadline; no other error
qr/\[error\](?!.*(?:connect failed|connection lost|no reply within|not replicated to 1 replica))/



=== TEST 14: wait=0: a write is answered on the master's reply, its replica cut from it or not
--- http_config
timpush_redis_cluster $TEST_NGINX_CLUSTER_SEEDS prefix=tc timeout=2000ms wait=0;
--- init
$::cluster->wait_ok;
my $victim = $::cluster->node_for_key('tc:u:{cz0}');
my ($replica) = $::cluster->replicas_of($victim);
$::cluster->detach($replica);
my ($status, $json) = Timpush::Push::call('PUT',
    '/v1/users/cz0/devices/' . 'ef' x 32, '{"business_id":1001}');
$::cluster->attach($replica);
Test::More::is($status, 200, 'registered, its replica cut from it');
$::cluster->wait_ok;
--- request
GET /v1/users/cz0/devices
--- response_body_like eval
qr/"token":"(?:ef){32}"/
--- no_error_log
[error]



=== TEST 15: wait= not a number: nginx -t names it
--- http_config
timpush_redis_cluster $TEST_NGINX_CLUSTER_SEEDS wait=x;
--- config
location /v1/ { timpush_api; }
--- must_die
--- error_log
"timpush_redis_cluster" directive has an invalid "wait=", not a number of replicas (0 or more): "wait=x"



=== TEST 16: wait= negative: nginx -t names it
--- http_config
timpush_redis_cluster $TEST_NGINX_CLUSTER_SEEDS wait=-1;
--- config
location /v1/ { timpush_api; }
--- must_die
--- error_log
"timpush_redis_cluster" directive has an invalid "wait=", not a number of replicas (0 or more): "wait=-1"



=== TEST 17: a replica killed: its master's writes are 503 until the cluster marks it failed, then answered again without it (the map read again after a WAIT that fell short)
--- init
$::cluster->wait_ok;
my $victim = $::cluster->node_for_key('tc:u:{ck0}');
my ($replica) = $::cluster->replicas_of($victim);
$::cluster->_kill($replica);
my ($status, $first, $i) = (0, undef, 0);
my $until = Time::HiRes::time
            + ($::FAILOVER_MS + 3 * $::TIMEOUT_MS) / 1000;
while (Time::HiRes::time < $until) {
    ($status) = Timpush::Push::call('PUT', '/v1/users/ck0/devices/'
                                    . sprintf('%064x', 0xe0000000 + $i++),
                                    '{"business_id":1001}');
    $first //= $status;
    last if $status == 200;
}
Test::More::is($first, 503, 'a write, its master\'s replica dead: 503');
Test::More::is($status, 200,
               'answered again once the cluster marked the replica failed');
$::cluster->restart($replica);
$::cluster->wait_ok;
--- request
GET /v1/users/ck0/devices
--- error_code: 200
--- error_log eval
qr/\[error\].*not replicated to 1 replica\(s\) within \d+ ms/
--- no_error_log eval
# the replica killed may be a seed the gateway is connected to (a former
# master): lost, refused until it is back
qr/\[error\](?!.*(?:not replicated to 1 replica|connection lost|connect failed))/
