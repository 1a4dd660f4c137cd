# One device, one account (DESIGN §12, README "Devices and accounts"): a
# token registered by another user moves to it, and the reverse index
# "<prefix>:t:{<token>}" stays exact on every path that adds or removes a
# token: registration, kick, unset, logout, prune, races, a registration
# cut short, and data written before the index existed.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(redis_cmd);
use Timpush::Push;
use IO::Socket::INET;
use FindBin;

our $Root = "$FindBin::Bin/..";

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http !~ /timpush_apns_mock/) {
        $block->set_value('http_config', $http . Timpush::Push::simulator(
            rules => 'timpush_apns_mock_rule dead 410 Unregistered;
                      timpush_apns_mock_rule bad0 400 BadDeviceToken;
                      timpush_apns_mock_rule f0e0 400 DeviceTokenNotForTopic;'));
    }

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }
});

# the reverse index of a token: the holder, then users still to clean
# the index without its last line, "\x01<ms>": the stamp of the last
# registration claimed (undef: no index)
sub index_of {
    my $v = redis_cmd('GET', "$Timpush::Test::prefix:t:{$_[0]}");
    $v =~ s/\n?\x01\d+$// if defined $v;
    return $v;
}

# the tokens a user holds, as GET /v1/users/<user>/devices lists them
sub tokens_of {
    my ($status, $json) = Timpush::Push::call('GET', "/v1/users/$_[0]/devices");
    die "GET devices of $_[0]: $status" unless $status == 200;
    return join ',', map { $_->{token} } @{ $json->{devices} };
}

# Two PUTs of one token by two users, from two connections, written at
# once; their (status, answer) pairs, in the order of the users given.
sub race {
    my ($token, @users) = @_;
    my $port = $ENV{TEST_NGINX_SERVER_PORT} || 1984;
    my @s = map {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 10)
            or die "connect: $!"
    } @users;
    my $body = '{"business_id":1001}';
    for my $i (0 .. $#users) {
        $s[$i]->autoflush(1);
        $s[$i]->print("PUT /v1/users/$users[$i]/devices/$token HTTP/1.1\r\n"
                      . "Host: x\r\nConnection: close\r\nContent-Length: "
                      . length($body) . "\r\n\r\n$body");
    }
    my @out;
    for my $i (0 .. $#users) {
        local $/;
        my $in = readline $s[$i];
        my ($status) = $in =~ m{^HTTP/1\.1 (\d+)};
        my ($json) = $in =~ m{\r\n\r\n(.*)}s;
        push @out, [$status, JSON::PP::decode_json($json)];
    }
    return @out;
}

master_on();
workers(2);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: an account switch: eve registers the token bob had; bob's pushes no longer reach it
--- init
Timpush::Push::clear_log();
my $t = 'ab' x 32;
Timpush::Push::register('bob', $t, 1001);
Test::More::is(::index_of($t), 'bob', 'the index names bob');
my ($status, $res) = Timpush::Push::call('PUT', "/v1/users/eve/devices/$t",
                                         '{"business_id":1001}');
Test::More::is($status, 200, 'eve registers it: 200');
Test::More::is($res->{moved_from}, 'bob', 'moved_from bob');
Test::More::is(::index_of($t), 'eve', 'the index names eve');
Test::More::is(::tokens_of('bob'), '', 'bob lists no device');
Test::More::is(::tokens_of('eve'), $t, 'eve lists it');
($status, $res) = Timpush::Push::push_message({ to => ['bob', 'eve'],
    from => { nickname => 'Denny' }, elems => [{ type => 'text', text => 'hi' }] });
Test::More::is($res->{sent}, 1, 'a push to both: one notification');
Test::More::is_deeply($res->{results}[0], { user_id => 'bob', skipped => 'no_devices' },
                      'bob has no device');
Test::More::is($res->{results}[1]{user_id}, 'eve', 'the device is eve\'s');
($status, $res) = Timpush::Push::push_message({ to => 'bob',
    elems => [{ type => 'text', text => 'for bob only' }] });
Test::More::is($res->{sent}, 0, 'a push to bob: nothing sent');
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 1, 'the phone got one notification in all');
Test::More::is($log->[0]{payload}{aps}{alert}, 'Denny: hi', 'eve\'s');
--- request
GET /v1/users/eve/devices
--- response_body_like chomp
"token":"abab
--- error_log eval
qr/\[info\] .*device ababab\.\.\.abab moved from user "bob" to user "eve"/
--- no_error_log
[error]



=== TEST 2: registering again for the same user moves nothing; a third user takes it from the holder, not from an earlier one
--- init
my $t = 'cd' x 16;
Timpush::Push::register('u1', $t, 1001);
my $r = Timpush::Push::register('u1', $t, 1001);
Test::More::ok(!exists $r->{moved_from}, 'the same user again: no moved_from');
$r = Timpush::Push::register('u2', $t, 1001);
Test::More::is($r->{moved_from}, 'u1', 'u2 takes it from u1');
$r = Timpush::Push::register('u3', $t, 2001);
Test::More::is($r->{moved_from}, 'u2', 'u3 takes it from u2, under another app');
Test::More::is(::index_of($t), 'u3', 'the index names u3');
Test::More::is(::tokens_of('u1') . '|' . ::tokens_of('u2') . '|' . ::tokens_of('u3'),
               "||$t", 'only u3 lists it');
--- request
GET /v1/users/u3/devices
--- response_body_like chomp
"business_id":2001
--- no_error_log
[error]



=== TEST 3: unset releases the index; an unset by a former holder leaves the new holder alone
--- init
my ($t, $t2) = ('e1' x 16, 'e2' x 16);
Timpush::Push::register('a3', $t, 1001);
Timpush::Push::register('a3', $t2, 2001);
my ($status, $res) = Timpush::Push::call('DELETE', "/v1/users/a3/devices/$t");
Test::More::is($res->{removed}, JSON::PP::true, 'unset: removed');
Test::More::ok(!defined ::index_of($t), 'its index is gone');
Test::More::is(::index_of($t2), 'a3', 'the other device\'s stays');
Timpush::Push::register('b3', $t2, 2001);
($status, $res) = Timpush::Push::call('DELETE', "/v1/users/a3/devices/$t2");
Test::More::is($res->{removed}, JSON::PP::false, 'a3 unsets a token it lost: nothing removed');
Test::More::is(::index_of($t2), 'b3', 'the index still names b3');
Test::More::is(::tokens_of('b3'), $t2, 'b3 keeps the device');
--- request
GET /v1/users/a3/devices
--- response_body
{"user_id":"a3","devices":[]}
--- no_error_log
[error]



=== TEST 4: logout of one device and of every device releases their indexes, not another holder's
--- init
my @t = map { sprintf '%02x', $_ } 0xa1 .. 0xa4;
@t = map { $_ x 16 } @t;
Timpush::Push::register('a4', $_, $_ eq $t[1] ? 2001 : 1001) for @t[0, 1];
Timpush::Push::register('a4', $t[2], 1002);
Timpush::Push::register('b4', $t[3], 1001);
my ($status, $res) = Timpush::Push::call('POST', '/v1/users/a4/logout',
                                         "{\"token\":\"$t[0]\"}");
Test::More::is($res->{removed}, 1, 'logout of one device: 1 removed');
Test::More::ok(!defined ::index_of($t[0]), 'its index is gone');
Test::More::is(::index_of($t[1]), 'a4', 'the others stay');
($status, $res) = Timpush::Push::call('POST', '/v1/users/a4/logout');
Test::More::is($res->{removed}, 2, 'logout of every device: 2 removed');
Test::More::ok(!defined ::index_of($t[1]) && !defined ::index_of($t[2]),
               'their indexes are gone');
Test::More::is(::index_of($t[3]), 'b4', 'another user\'s index stays');
--- request
GET /v1/users/a4/devices
--- response_body
{"user_id":"a4","devices":[]}
--- no_error_log
[error]



=== TEST 5: a device kicked by timpush_devices_per_app loses its index; the new one has its own
--- http_config
timpush_devices_per_app 1;
--- init
my ($t1, $t2) = ('5a' x 16, '5b' x 16);
Timpush::Push::register('a5', $t1, 1001);
my $r = Timpush::Push::register('a5', $t2, 1001);
Test::More::is_deeply($r->{kicked}, [$t1], 'the first device is kicked');
Test::More::ok(!defined ::index_of($t1), 'its index is gone');
Test::More::is(::index_of($t2), 'a5', 'the new one is indexed');
$r = Timpush::Push::register('b5', $t1, 1001);
Test::More::ok(!exists $r->{moved_from}, 'the kicked token registered elsewhere: from nobody');
--- request
GET /v1/users/a5/devices
--- response_body_like chomp
"token":"5b5b
--- no_error_log
[error]



=== TEST 6: a prune (410 Unregistered, 400 BadDeviceToken, 400 DeviceTokenNotForTopic) releases the index
--- http_config
timpush_devices_per_app 10;
--- init
my @t = ('dead' . 'aa' x 14, 'bad0' . 'bb' x 14, 'f0e0' . 'cc' x 14, 'a6' x 16);
Timpush::Push::register('a6', $_, 1001) for @t;
my ($status, $res) = Timpush::Push::push_message({ to => 'a6',
    elems => [{ type => 'text', text => 'x' }] });
Test::More::is($res->{sent}, 1, 'one delivered') or Test::More::diag(JSON::PP::encode_json($res));
Test::More::is(scalar(grep { $_->{removed} } @{ $res->{results} }), 3, 'three removed')
    or Test::More::diag(JSON::PP::encode_json($res));
Test::More::ok(!defined ::index_of($t[$_]), "token $_: index gone") for 0 .. 2;
Test::More::is(::index_of($t[3]), 'a6', 'the live one keeps its index');
Test::More::is(::tokens_of('a6'), $t[3], 'the user keeps the live one');
--- request
GET /v1/users/a6/devices
--- response_body_like chomp
"token":"a6a6
--- no_error_log
[error]



=== TEST 7: two registrations of one token racing from two connections (two workers), 60 times: the last claim keeps it, never both
--- init
my ($both, $lost, $inconsistent) = (0, 0, 0);
for my $i (1 .. 60) {
    my $t = sprintf '%032x', 0x7000 + $i;
    my @u = ("ra$i", "rb$i");
    my @a = ::race($t, @u);
    my @hold = grep { ::tokens_of($u[$_]) eq $t } 0, 1;
    my $holder = ::index_of($t) // '';
    if (@hold != 1) {
        $both++;
        Test::More::diag("round $i: held by " . scalar(@hold) . " users: "
                         . join(' ', map { "$_->[0] " . JSON::PP::encode_json($_->[1]) } @a));
        next;
    }
    my ($w, $l) = ($hold[0], 1 - $hold[0]);
    $inconsistent++, Test::More::diag("round $i: index '$holder', held by $u[$w]")
        if $holder ne $u[$w];
    # the winner was answered 200; the loser 200 before it (then the
    # winner's answer names it) or 409 conflict naming the winner
    if ($a[$w][0] != 200) {
        $inconsistent++;
        Test::More::diag("round $i: the holder was answered $a[$w][0]");
    } elsif ($a[$l][0] == 409) {
        $lost++;
        $inconsistent++ unless $a[$l][1]{error}{code} eq 'conflict'
                               && $a[$l][1]{error}{message} =~ /"\Q$u[$w]\E"/;
    } elsif ($a[$l][0] == 200) {
        $inconsistent++, Test::More::diag("round $i: both 200, the winner's answer: "
                                          . JSON::PP::encode_json($a[$w][1]))
            unless ($a[$w][1]{moved_from} // '') eq $u[$l];
    } else {
        $inconsistent++;
        Test::More::diag("round $i: the other was answered $a[$l][0]");
    }
}
Test::More::is($both, 0, 'never both users (nor none) hold the token');
Test::More::is($inconsistent, 0, 'the index and the answers agree with who holds it');
Test::More::diag("$lost of 60 rounds answered 409 conflict to one of them");
--- request
GET /v1/users/ra1/devices
--- response_body_like chomp
"user_id":"ra1"
--- no_error_log
[error]



=== TEST 7b: the gateway that registered the token first runs its clock 5 s ahead: the registration that claimed it after (from a gateway on time) still takes it; registrations are ordered by their claims, not by the clocks of the workers that made them
--- init
my $t = 'c7' x 32;
my $port = Timpush::Test::free_port();
my $certs = $ENV{TEST_NGINX_CERT_DIR};
my $ahead = Timpush::Push::start_nginx(master => 1, port => $port,
    env => { LD_PRELOAD => '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
             FAKETIME => '+5', DONT_FAKE_MONOTONIC => 1 },
    http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=$Timpush::Test::prefix;
    upstream nowhere { server 127.0.0.1:1; }
    timpush_apns_upstream sandbox nowhere;
    timpush_apns_upstream production nowhere;
    timpush_credential 1001 certificate=$certs/dev.p12
                            password_file=$certs/dev.pass env=sandbox;
    server {
        listen 127.0.0.1:$port;
        location /v1/ { timpush_api; }
    }");
my $r = HTTP::Tiny->new->request('PUT', "http://127.0.0.1:$port/v1/users/fast7/devices/$t",
                                 { content => '{"business_id":1001}' });
Test::More::is($r->{status}, 200, 'registered by fast7 through the gateway 5 s ahead');
my ($status, $res);
Timpush::Push::stop_nginx($ahead);
($status, $res) = Timpush::Push::call('PUT', "/v1/users/late7/devices/$t", '{"business_id":1001}');
Test::More::is("$status " . ($res->{moved_from} // '-'), '200 fast7', 'then by late7: 200, moved_from fast7');
Test::More::is(::tokens_of('fast7'), '', 'fast7 no longer holds it');
Test::More::is(::tokens_of('late7'), $t, 'late7 does');
Test::More::is(::index_of($t), 'late7', 'the index names late7');
--- request
GET /v1/users/late7/devices
--- response_body_like chomp
"token":"c7c7
--- no_error_log
[error]



=== TEST 8: a registration cut short (the index still lists users to clean): the next one cleans them
--- init
my $t = '88' x 16;
my $p = $Timpush::Test::prefix;
Timpush::Push::register('a8', $t, 1001);
Timpush::Push::register('b8', $t, 1001);
# as a sequence stopped after its claim and REGISTER leaves it: b8 holds
# the index, a8 is still to clean and still has the token
my $now = int(Time::HiRes::time() * 1000) - 1000;
::redis_cmd('HSET', "$p:u:{a8}", "t:$t", 1001, "r:$t", $now, "b:$t", 0);
::redis_cmd('SET', "$p:t:{$t}", "b8\na8");
Test::More::is(::tokens_of('a8'), $t, 'a8 holds it again (the cut-short state)');
# a8 removing the token it still has does not touch b8's hold on it
my ($status, $res) = Timpush::Push::call('DELETE', "/v1/users/a8/devices/$t");
Test::More::is($res->{removed}, JSON::PP::true, 'a8 unsets it');
Test::More::like(::index_of($t), qr/^b8(\n|$)/, 'the index still names b8');
Test::More::is(::tokens_of('b8'), $t, 'b8 still holds it');
::redis_cmd('HSET', "$p:u:{a8}", "t:$t", 1001, "r:$t", $now, "b:$t", 0);
::redis_cmd('SET', "$p:t:{$t}", "b8\na8");
my $r = Timpush::Push::register('c8', $t, 1001);
Test::More::is(::tokens_of('a8') . '|' . ::tokens_of('b8'), '|', 'a8 and b8 are both cleaned');
Test::More::like($r->{moved_from}, qr/^[ab]8$/, 'moved_from names one of them');
Test::More::is(::index_of($t), 'c8', 'the index names c8 alone');
--- request
GET /v1/users/c8/devices
--- response_body_like chomp
"token":"8888
--- no_error_log
[error]



=== TEST 9: data written before the index existed: nothing lost, indexed when next registered or by tools/timpush-reindex
--- init
my $p = $Timpush::Test::prefix;
open my $fh, '<', "$::Root/t/data/layout-1.dump" or die "layout-1.dump: $!";
while (<$fh>) {
    next if /^#/;
    chomp;
    my ($key, $hex) = split /\t/;
    ::redis_cmd('RESTORE', "$p$key", 0, pack('H*', $hex));
}
my ($t1, $t2, $tx, $td) = ('a1' x 16, 'a2' x 16, 'cc' x 16, 'dd' x 16);
# as it was: every device listed, badges and foreground kept
Test::More::is(::tokens_of('alice'), "$t1,$t2", 'alice\'s two devices');
my ($status, $res) = Timpush::Push::push_message({ to => ['alice', 'dave'],
    elems => [{ type => 'text', text => 'after the upgrade' }] });
Test::More::is($res->{sent}, 2, 'a push reaches alice\'s two devices');
my %badge = map { ($_->{token} // '') => $_->{badge} } @{ $res->{results} };
Test::More::is($badge{$t2}, 4, 'the badge goes on from 3');
Test::More::is($res->{results}[2]{skipped}, 'foreground', 'dave is still in the foreground');
# a re-registration indexes the token
Timpush::Push::register('dave', $td, 2001);
Test::More::is(::index_of($td), 'dave', 'registered again: indexed');
# the one-off command: every token indexed, bob and carol no longer share one
my $out = `perl $::Root/tools/timpush-reindex --redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} --prefix $p 2>&1`;
Test::More::is($?, 0, 'timpush-reindex: exit 0') or Test::More::diag($out);
Test::More::like($out, qr/$tx: kept by "carol" \(registered last\), removed from "bob"/,
                 'it says what it settled');
Test::More::like($out, qr/4 users, 5 devices: 3 newly indexed, 1 removed/, 'and counts');
Test::More::is(::index_of($_), 'alice', 'alice\'s indexed') for $t1, $t2;
Test::More::is(::index_of($tx), 'carol', 'the shared token: carol, who registered it last');
Test::More::is(::tokens_of('bob') . '|' . ::tokens_of('carol'), "|$tx", 'bob lost it');
my $again = `perl $::Root/tools/timpush-reindex --redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} --prefix $p 2>&1`;
Test::More::like($again, qr/: 0 newly indexed, 0 removed/, 'a second run changes nothing');
# and a switch away from an old token now works
my $r = Timpush::Push::register('eve', $tx, 1001);
Test::More::is($r->{moved_from}, 'carol', 'eve takes it from carol');
--- request
GET /v1/users/carol/devices
--- response_body
{"user_id":"carol","devices":[]}
--- no_error_log
[error]
