#!/usr/bin/env perl
# The Redis Cluster rig itself (t/lib/Timpush/Cluster.pm), before any
# gateway test relies on it: the cluster comes up whole, slots move with
# their keys, a held migration answers ASK, a killed master is replaced by
# its replica and comes back as a replica, TLS nodes work, and nothing is
# left running when a test dies.

use strict;
use warnings;

use lib 't/lib';
use Test::More;
use Timpush::Cluster;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);

my $c = Timpush::Cluster->new;

# --- up: 6 nodes, 3 masters with a replica each, every slot served

my @masters = $c->masters;
my @replicas = $c->replicas;
is(scalar $c->ports, 6, '6 nodes');
is(scalar @masters, 3, '3 masters');
is(scalar @replicas, 3, '3 replicas');
is($c->seeds, join(' ', map { "127.0.0.1:$_" } @masters),
   'seeds: the masters');

my $slots = $c->cmd($masters[0], 'CLUSTER', 'SLOTS');
my ($covered, %owner) = (0);
for my $r (@$slots) {
    $covered += $r->[1] - $r->[0] + 1;
    $owner{ $r->[2][1] }++;
    is(scalar @$r, 4, "range $r->[0]-$r->[1]: a master and one replica");
}
is($covered, 16384, 'CLUSTER SLOTS covers 16384 slots');
is_deeply([sort { $a <=> $b } keys %owner], \@masters,
          'each master serves slots');

for my $port ($c->ports) {
    my $info = $c->cmd($port, 'CLUSTER', 'INFO');
    like($info, qr/^cluster_state:ok\r?$/m, "$port: cluster_state:ok");
    like($info, qr/^cluster_known_nodes:6\r?$/m, "$port: knows 6 nodes");
}

# --- keys: the slot Redis computes is the one the C code computes
# (t/unit/cluster_test.c has the same vectors)

is($c->slot('123456789'), 12739, 'CLUSTER KEYSLOT 123456789');
is($c->slot('timpush:u:{alice}'), 749, 'CLUSTER KEYSLOT of a user key');
is($c->slot('foo{{bar}}zap'), 4015, 'hash tag: first { to first }');

my $home = $c->node_for_key('timpush:u:{alice}');
my ($other) = grep { $_ != $home } @masters;
is($c->cmd($home, 'SET', 'timpush:u:{alice}', 'a'), 'OK',
   'SET on the node for the key');
my (undef, $err) = $c->try_cmd($other, 'GET', 'timpush:u:{alice}');
is($err, "MOVED 749 127.0.0.1:$home", 'another master answers MOVED');

# --- many keys, written through redis-cli -c, for the moves below

my %keys = map { ("timpush:u:{user$_}" => "v$_") } 1 .. 200;
for my $k (keys %keys) {
    $c->cmd($c->node_for_key($k), 'SET', $k, $keys{$k});
}

sub all_keys_readable {
    my $bad = 0;
    for my $k (keys %keys) {
        my ($v) = $c->try_cmd($c->node_for_key($k), 'GET', $k);
        $bad++ unless defined $v && $v eq $keys{$k};
    }
    return $bad;
}

is(all_keys_readable(), 0, '200 keys, each on the master for its slot');

# --- a held migration: ASK for keys already moved

my $slot = $c->slot('timpush:u:{user1}');
my $from = $c->master_of($slot);
my ($to) = grep { $_ != $from } @masters;

$c->cmd($from, 'SET', 'timpush:u:{user1}:b', 'b');
$c->migrate_begin($slot, $from, $to);
is($c->cmd($from, 'GET', 'timpush:u:{user1}'), 'v1',
   'migrating: a key not moved yet is served by the source');
(undef, $err) = $c->try_cmd($from, 'GET', 'timpush:u:{user1}:none');
is($err, "ASK $slot 127.0.0.1:$to",
   'migrating: a key the source does not have gets ASK');

is($c->migrate_keys($slot, $from, $to, 1), 1, 'one of the slot\'s 2 keys '
   . 'migrated');
(undef, $err) = $c->try_cmd($from, 'MGET', 'timpush:u:{user1}',
                            'timpush:u:{user1}:b');
like($err, qr/^TRYAGAIN /, 'migrating: keys on both sides get TRYAGAIN');
is($c->migrate_keys($slot, $from, $to), 1, 'the other migrated');
is($c->cli($from, 'GET', 'timpush:u:{user1}'), "ASK $slot 127.0.0.1:$to",
   'redis-cli sees ASK for the moved key');
is($c->cli($from, '-c', 'GET', 'timpush:u:{user1}'), 'v1',
   'redis-cli -c follows ASK');
(undef, $err) = $c->try_cmd($to, 'GET', 'timpush:u:{user1}');
is($err, "MOVED $slot 127.0.0.1:$from",
   'importing: without ASKING the target sends back to the source');
my @r = $c->pipeline($to, ['ASKING'], ['GET', 'timpush:u:{user1}']);
is_deeply(\@r, [['OK', undef], ['v1', undef]],
          'importing: ASKING then GET is served by the target');
is($c->master_of($slot), $from, 'held: the map has not changed');

$c->migrate_end($slot, $to);
$c->wait_ok;
is($c->master_of($slot), $to, 'migration ended: the slot is the target\'s');
(undef, $err) = $c->try_cmd($from, 'GET', 'timpush:u:{user1}');
is($err, "MOVED $slot 127.0.0.1:$to", 'the source answers MOVED');
is(all_keys_readable(), 0, 'every key still readable');

# --- redis-cli --cluster reshard: 100 slots and their keys

sub count_slots {
    my $port = shift;
    my $n = 0;
    for my $r (@{ $c->cmd($masters[0], 'CLUSTER', 'SLOTS') }) {
        $n += $r->[1] - $r->[0] + 1 if $r->[2][1] == $port;
    }
    return $n;
}

my ($a, $b) = @masters[0, 1];
my ($na, $nb) = (count_slots($a), count_slots($b));
$c->reshard($a, $b, 100);
is(count_slots($a), $na - 100, 'reshard: 100 slots fewer on the source');
is(count_slots($b), $nb + 100, 'reshard: 100 slots more on the target');
is(all_keys_readable(), 0, 'reshard: every key still readable');

# --- failover: a master killed, its replica takes over, keys kept

my $victim = $c->node_for_key('timpush:u:{alice}');
is($c->cmd($victim, 'WAIT', 1, 5000), 1, 'the replica has every write');
my $promoted = $c->fail_master($victim);
ok($promoted && $promoted != $victim, "replica $promoted promoted");
is($c->node_for_key('timpush:u:{alice}'), $promoted,
   'the killed master\'s slots are the promoted replica\'s');
is($c->cmd($promoted, 'GET', 'timpush:u:{alice}'), 'a',
   'a key written before the kill is there');
is(all_keys_readable(), 0, 'every key still readable');
is(scalar $c->masters, 3, 'still 3 masters');

$c->restart($victim);
my $role = $c->cmd($victim, 'ROLE');
is($role->[0], 'slave', 'the old master came back as a replica');
is($role->[2], $promoted, '... of the node that replaced it');
is(scalar $c->replicas, 3, '3 replicas again');

# --- flushall

$c->flushall;
is((grep { $c->cmd($_, 'DBSIZE') != 0 } $c->masters), 0,
   'flushall: every master empty');

my @ports = $c->ports;
my $dir = $c->dir;
$c->stop;
is((grep { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$_") } @ports), 0,
   'stop: no node listens');
ok(!-e $dir, 'stop: its directory is gone');

# --- TLS: 3 masters, TLS only, bus too

my $t = Timpush::Cluster->new(tls => 1, replicas => 0);
my @tm = $t->masters;
is(scalar @tm, 3, 'TLS: 3 masters');
ok(-f $t->ca, 'TLS: its CA');
is($t->cli($tm[0], '-c', 'SET', 'timpush:u:{bob}', 'b'), 'OK',
   'TLS: SET through redis-cli --tls -c');
is($t->cli($tm[1], '-c', 'GET', 'timpush:u:{bob}'), 'b',
   'TLS: GET from another node, following MOVED');
my $plain = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$tm[0]");
print {$plain} "PING\r\n";
my $line = <$plain>;
ok(!defined $line || $line !~ /PONG/, 'TLS: no plain-text answer');
$t->stop;

# --- a test that dies, or is killed, leaves no node behind

sub child_cluster {
    my ($how) = @_;
    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $rd;
        open STDERR, '>', '/dev/null';
        my $k = Timpush::Cluster->new(replicas => 0);
        print {$wr} join(' ', $k->dir, $k->ports), "\n";
        close $wr;
        die "on purpose\n" if $how eq 'die';
        sleep 60;
        POSIX::_exit(0);
    }
    close $wr;
    my $got = <$rd>;
    close $rd;
    kill 'KILL', $pid if $how eq 'kill';
    waitpid $pid, 0;
    my ($d, @p) = split ' ', $got // '';
    return ($d, @p);
}

sub listening {
    my @p = @_;
    my $until = time + 10;
    while (time < $until) {
        my @up = grep { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$_") }
                 @p;
        return scalar @up unless @up;
        sleep 0.1;
    }
    return scalar grep { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$_") }
                  @p;
}

my ($d, @p) = child_cluster('die');
is(scalar @p, 3, 'a dying test had its cluster');
is(listening(@p), 0, 'a test that died: its nodes are gone');
ok($d && !-e $d, 'a test that died: its directory is gone');

($d, @p) = child_cluster('kill');
is(listening(@p), 0, 'a test killed with SIGKILL: its nodes are gone');
system('rm', '-rf', $d) if $d && $d =~ m{/timpush-cluster-\w+$};

done_testing();
