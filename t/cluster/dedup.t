# msg_id on a Redis Cluster (DESIGN §12, §15): the marks of a msg_id are
# kept per slot, "<prefix>:m:{<tag>}<msg_id>" with a tag that hashes to the
# slot of the users pushed to in the same call, so a push and its repeats
# find them in one script call.  The rules of t/dedup.t hold: a repeat
# skips every device sent, badges are counted once, a push to more users
# sends only the new ones.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test;
use Timpush::Push;
use Timpush::Cluster;

our $cluster = Timpush::Cluster->new;
$ENV{TEST_NGINX_CLUSTER_SEEDS} = $cluster->seeds;

our $USERS = 300;
our $Text = { from => { user_id => 'boss', nickname => 'Boss' },
              elems => [{ type => 'text', text => 'lunch?' }] };

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http !~ /timpush_redis/) {
        $http = "timpush_redis_cluster \$TEST_NGINX_CLUSTER_SEEDS "
                . "prefix=tc timeout=2000ms;\n$http";
    }

    $http .= Timpush::Push::simulator() if $http !~ /timpush_apns_mock/;
    $block->set_value('http_config', $http);

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }
});

sub push_ {
    my (%o) = @_;
    my ($status, $res, $raw) = Timpush::Push::push_message({ %$::Text, %o });
    die "push: $status $raw" unless $status == 200;
    return $res;
}

# the marks keys of a msg_id found in the slots of the users' keys, and
# the state of every device marked: ({ key => 1 }, { state => count })
sub marks {
    my ($msg_id, @users) = @_;
    my (%keys, %slots, %states, $misplaced);
    for my $u (@users) {
        my $slot = $cluster->slot("tc:u:{$u}");
        next if $slots{$slot}++;
        my $node = $cluster->master_of($slot);
        my @k = grep { /^tc:m:\{[0-9a-z]+\}\Q$msg_id\E\z/ }
                @{ $cluster->cmd($node, 'CLUSTER', 'GETKEYSINSLOT', $slot,
                                 1000) };
        $misplaced++ unless @k == 1;
        for my $k (@k) {
            $keys{$k}++;
            my $st = Timpush::Push::mark_states_of(
                         { @{ $cluster->cmd($node, 'HGETALL', $k) } });
            $states{ $_ =~ /^bad/ ? 'bad' : $_ }++ for values %$st;
        }
    }
    return (\%keys, \%states, $misplaced // 0);
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a push with a msg_id to users over every master: marks per slot, in the users' slots
--- init
$::cluster->flushall;
Timpush::Push::register_many('du', $::USERS, 1001);
my @to = map { "du$_" } 0 .. $::USERS - 1;
my $res = ::push_(to => \@to, msg_id => 'm1');
Test::More::is($res->{sent}, $::USERS, 'every device sent');
my ($keys, $states, $misplaced) = ::marks('m1', @to);
Test::More::is($misplaced, 0, 'one marks key in the slot of each user');
Test::More::is_deeply($states, { sent => $::USERS },
                      'every device marked sent');
--- request
GET /v1/users/du0/devices
--- response_body_like eval
qr/"badge":1,/
--- no_error_log
[error]



=== TEST 2: the repeat: every device skipped, no badge counted again
--- init
my @to = map { "du$_" } 0 .. $::USERS - 1;
Timpush::Push::clear_log();
my $res = ::push_(to => \@to, msg_id => 'm1');
Test::More::is("$res->{sent}/$res->{skipped}", "0/$::USERS",
               'the repeat: every device skipped');
Test::More::is(scalar @{ Timpush::Push::mock_log() }, 0,
               'nothing reached APNs');
--- request
GET /v1/users/du299/devices
--- response_body_like eval
qr/"badge":1,/
--- no_error_log
[error]



=== TEST 3: a msg_id pushed to some users, then to more: only the new ones sent
--- init
my $res = ::push_(to => [map { "du$_" } 0 .. 99], msg_id => 'm2');
Test::More::is($res->{sent}, 100, 'the first 100 sent');
$res = ::push_(to => [map { "du$_" } 0 .. $::USERS - 1], msg_id => 'm2');
Test::More::is("$res->{sent}/$res->{skipped}", ($::USERS - 100) . '/100',
               'then only the others');
my (undef, $states) = ::marks('m2', map { "du$_" } 0 .. $::USERS - 1);
Test::More::is_deeply($states, { sent => $::USERS },
                      'every device marked sent once');
--- request
GET /v1/users/du0/devices
--- response_body_like eval
qr/"badge":2,/
--- no_error_log
[error]
