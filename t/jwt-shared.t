# Provider tokens shared by the workers (DESIGN §15): one JWT per key
# (key_id and team_id) for the whole nginx instance, kept in shared memory,
# whatever the number of workers and connections; renewed once for the
# instance after ExpiredProviderToken; kept by "nginx -s reload".
#
# TESTs 1-3 run a gateway of their own with several workers and a
# reuseport listener, and push over fresh connections so that every worker
# pushes (checked from an access log of worker pids); TEST 4 pushes
# through the block's own nginx, so that valgrind watches the shared
# tokens' code.  Timpush::H2Peer is APNs: its log holds each request's
# "authorization" header, so the tokens APNs saw are counted there.  Two
# credentials (2001, 2002) share one key; 3001 has another.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port);
use Timpush::Push;
use Timpush::H2Peer;

our $VG = $ENV{TEST_NGINX_USE_VALGRIND};

$ENV{TEST_NGINX_GW_PORT} ||= free_port();

# what a block started and must not leave behind, even if it dies
our %GATEWAYS;
END {
    local $?;
    Timpush::Push::stop_nginx($_) for values %GATEWAYS;
}

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('config', "location /v1/ { timpush_api; }\n")
        unless defined $block->config;
});

master_on();
workers(1);
log_level('info');
no_shuffle();
run_tests();


# ---- helpers for the blocks (their init code runs in the runner's package)

# a gateway of $o{workers} workers toward the peer; its $o{env}
sub gateway {
    my (%o) = @_;
    my $port = $ENV{TEST_NGINX_GW_PORT};
    my $certs = $ENV{TEST_NGINX_CERT_DIR};
    my $key = $o{key} // "$certs/AuthKey_ABC123DEFG.p8";
    my $gw = Timpush::Push::start_nginx(master => 1, port => $port,
        workers => $o{workers}, env => $o{env}, http => "
    timpush_redis 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT} prefix=$o{prefix}
                  timeout=" . ($VG ? '30s' : '5s') . ";
    upstream peer { server 127.0.0.1:$ENV{TEST_NGINX_APNS_PORT}; }
    timpush_apns_upstream production peer;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_connections 2;
    timpush_apns_timeout " . ($VG ? 60 : 10) . "s;
    timpush_credential 2001 key=$key
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    timpush_credential 2002 key=$key
                            team_id=TEAM123456 topic=com.example.other
                            env=production;
    timpush_credential 3001 key=$certs/AuthKey_XYZ987WVUT.p8
                            team_id=TEAM654321 topic=com.example.chat2
                            env=production;
    log_format bypid '\$pid \$status \$request_uri';
    server {
        listen 127.0.0.1:$port reuseport;
        location /v1/ { timpush_api; access_log logs/bypid.log bypid; }
    }");
    $GATEWAYS{gw} = $gw;
    return $gw;
}

# $n devices of each credential: users <p>2001_i, <p>2002_i, <p>3001_i
sub register_all {
    my ($p, $n) = @_;
    my %base = (2001 => 0xa0000000, 2002 => 0xb0000000, 3001 => 0xc0000000);
    for my $id (sort keys %base) {
        Timpush::Push::register_many("$p${id}_", $n, $id,
                                     $ENV{TEST_NGINX_GW_PORT}, $base{$id});
    }
}

# $k pushes at once, each over a connection of its own, push i to the
# users <p>*_j for j in [i * $each, (i + 1) * $each); each must be answered
# 200 with every device sent to once
sub push_spread {
    my ($p, $k, $each) = @_;
    my @h;
    for my $i (0 .. $k - 1) {
        my @to = map { my $id = $_; map { "$p${id}_$_" } $i * $each .. ($i + 1) * $each - 1 }
                 2001, 2002, 3001;
        push @h, Timpush::Push::push_async(
            { to => \@to, elems => [{ type => 'text', text => "push $i" }] },
            $ENV{TEST_NGINX_GW_PORT});
    }
    my ($ok, $devices) = (0, 0);
    for my $h (@h) {
        my ($status, $res) = Timpush::Push::push_wait($h);
        next unless $status == 200;
        $ok++;
        my %once;
        $once{$_->{token}}++ for @{$res->{results} || []};
        $devices += grep { $_ == 1 } values %once;
        $devices -= grep { $_->{status} != 200 } @{$res->{results} || []};
    }
    Test::More::is($ok, $k, "$k pushes answered 200");
    Test::More::is($devices, 3 * $k * $each, 'every device answered once, 200');
}

# the pids that answered /v1/push in the gateway's access log
sub push_pids {
    my ($gw) = @_;
    my %pids;
    for (split /\n/, Timpush::Push::slurp("$gw->{dir}/logs/bypid.log")) {
        $pids{$1}++ if m{^(\d+) \d+ /v1/push$};
    }
    return %pids;
}

sub kid_of {
    my ($jwt) = @_;
    my ($head) = $jwt =~ /^bearer ([^.]+)\./ or return '';
    $head =~ tr{-_}{+/};
    $head .= '=' x (-length($head) % 4);
    require MIME::Base64;
    my $json = eval { JSON::PP::decode_json(MIME::Base64::decode_base64($head)) };
    return $json ? $json->{kid} : '';
}

# kid => {authorization value => requests}, and connections, of the
# requests the peer answered $status (any status without one)
sub tokens_seen {
    my ($peer, $status) = @_;
    my (%answer, %tokens, %conns);
    for my $e (Timpush::H2Peer::events($peer)) {
        $answer{"$e->{conn} $e->{stream}"} = $e->{status} if $e->{ev} eq 'resp';
    }
    for my $e (Timpush::H2Peer::events($peer)) {
        next unless $e->{ev} eq 'req';
        next if defined $status
                && ($answer{"$e->{conn} $e->{stream}"} // 0) != $status;
        my $jwt = $e->{headers}{authorization} // '';
        $tokens{kid_of($jwt)}{$jwt}++;
        $conns{$e->{conn}} = 1;
    }
    return (\%tokens, scalar keys %conns);
}

# the gateway's workers: its master's children
sub workers_of {
    my ($gw) = @_;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $in, '<', $stat or next;
        my $line = <$in> // '';
        close $in;
        push @kids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $gw->{pid};
    }
    return @kids;
}

# does the token's signature verify with the public part of $key?
sub signed_by {
    my ($jwt, $key) = @_;
    my ($input, $sig) = $jwt =~ /^bearer ([^.]+\.[^.]+)\.([^.]+)$/ or return 0;
    require MIME::Base64;
    $sig =~ tr{-_}{+/};
    $sig = MIME::Base64::decode_base64($sig . '=' x (-length($sig) % 4));
    return 0 unless length $sig == 64;
    # JWS's R || S as the DER that openssl reads
    my $der = join '', map {
        (my $n = $_) =~ s/^\0+//;
        $n = "\0$n" if ord($n) >= 0x80;
        "\x02" . chr(length $n) . $n
    } substr($sig, 0, 32), substr($sig, 32);
    $der = "\x30" . chr(length $der) . $der;
    my $dir = File::Temp::tempdir(CLEANUP => 1);
    for ([sig => $der], [in => $input]) {
        open my $fh, '>', "$dir/$_->[0]" or die;
        binmode $fh;
        print $fh $_->[1];
        close $fh;
    }
    system("openssl pkey -in $key -pubout -out $dir/pub.pem 2>/dev/null") == 0
        or return 0;
    return system("openssl dgst -sha256 -verify $dir/pub.pem -signature "
                  . "$dir/sig $dir/in >/dev/null 2>&1") == 0;
}

sub made {
    my ($gw, $ids) = @_;
    my $log = Timpush::Push::slurp("$gw->{dir}/logs/error.log");
    return scalar(() = $log =~ /credential (?:$ids): new provider token/g);
}

__DATA__

=== TEST 1: 4 workers, 2 connections each: APNs sees one token per key, made once for the instance (two credentials of one key share it), whatever worker and connection sends
--- init
my $gw = ::gateway(workers => 4, prefix => "js1_$$");
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                  mode => 'normal');
my ($k, $each) = (16, 10);
::register_all('a', $k * $each);
::push_spread('a', $k, $each);
my %pids = ::push_pids($gw);
Test::More::cmp_ok(scalar keys %pids, '>=', 3, 'the pushes came through several workers: '
                   . join(', ', map { "$_: $pids{$_}" } sort keys %pids));

my ($tokens, $conns) = ::tokens_seen($peer);
Test::More::cmp_ok($conns, '>=', 3, "requests over several connections ($conns)");
Test::More::is(join(',', sort keys %$tokens), 'ABC123DEFG,XYZ987WVUT',
               'every request had a token of one of the two keys');
Test::More::is(scalar keys %{$tokens->{ABC123DEFG}}, 1,
               'one token for key ABC123DEFG (credentials 2001 and 2002)');
Test::More::is(scalar keys %{$tokens->{XYZ987WVUT}}, 1,
               'one token for key XYZ987WVUT (credential 3001)');
Test::More::is((values %{$tokens->{ABC123DEFG}})[0], 2 * $k * $each,
               'it carried every notification of 2001 and 2002');
Test::More::is(::made($gw, '2001|2002'), 1, 'made once for 2001 and 2002');
Test::More::is(::made($gw, '3001'), 1, 'made once for 3001');
Timpush::H2Peer::stop($peer);

my $log = Timpush::Push::slurp("$gw->{dir}/logs/error.log");
Test::More::unlike($log, qr/bearer|eyJhbGciOiJFUzI1NiIs/, 'no token in the error log');
Timpush::Push::stop_nginx(delete $::GATEWAYS{gw});
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
[error]



=== TEST 2: ExpiredProviderToken seen by every worker: every notification refused goes again once, with one new token for the instance, not one per worker
--- init
# The gateway's clock runs 200 times faster (libfaketime; its timers keep
# the real monotonic clock): 7 s later its tokens are 23 minutes old,
# still used (tokens live 50 minutes) and old enough to be made again
# (20); the peer then calls them expired.  The pushes after that take a
# few seconds (less than 27 minutes of the gateway's clock).
my $gw = ::gateway(workers => 2, prefix => "js2_$$",
    env => { LD_PRELOAD => '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
             FAKETIME => '+0 x200', DONT_FAKE_MONOTONIC => 1 });
my ($k, $each) = (16, 4);
::register_all('e', $k * $each);

my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                  mode => 'normal');
::push_spread('e', $k, $each);
my %before = ::push_pids($gw);
my ($tokens) = ::tokens_seen($peer);
my ($first) = keys %{$tokens->{ABC123DEFG}};
Test::More::is(scalar keys %{$tokens->{ABC123DEFG}}, 1, 'first: one token for ABC123DEFG');
my ($iat) = sort { $b <=> $a } map { $_->{iat} }
            grep { $_->{ev} eq 'resp' && defined $_->{iat} }
            Timpush::H2Peer::events($peer);
Timpush::H2Peer::stop($peer);
Time::HiRes::sleep(7);

# every token made before now is expired
$peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
    mode => 'normal', hold => 0.3, expire_before => $iat + 1);
::push_spread('e', $k, $each);
my %all = ::push_pids($gw);
my %after = map { $_ => ($all{$_} - ($before{$_} // 0)) } keys %all;
Test::More::is(scalar(grep { $_ > 0 } values %after), 2,
               'both workers pushed after the expiry: '
               . join(', ', map { "$_: $after{$_}" } sort keys %after));

my ($refused) = ::tokens_seen($peer, 403);
my ($ok) = ::tokens_seen($peer, 200);
Test::More::is(join(' ', keys %{$refused->{ABC123DEFG}}), $first,
               'the old token of ABC123DEFG refused');
Test::More::is((values %{$refused->{ABC123DEFG}})[0], 2 * $k * $each,
               'for each notification of 2001 and 2002, once');
Test::More::is(scalar keys %{$ok->{ABC123DEFG}}, 1,
               'one new token for ABC123DEFG took them all');
Test::More::is((values %{$ok->{ABC123DEFG}})[0], 2 * $k * $each,
               'each accepted once');
Test::More::isnt((keys %{$ok->{ABC123DEFG}})[0], $first, 'a new one');
Test::More::is(scalar keys %{$ok->{XYZ987WVUT}}, 1, 'one new token for XYZ987WVUT');
Test::More::is(::made($gw, '2001|2002'), 2, 'ABC123DEFG: two tokens made in all: the first, one renewal');
Test::More::is(::made($gw, '3001'), 2, 'XYZ987WVUT: the first, one renewal');
Timpush::H2Peer::stop($peer);

my $log = Timpush::Push::slurp("$gw->{dir}/logs/error.log");
Test::More::unlike($log, qr/is the clock right/, 'no word of the clock');
Timpush::Push::stop_nginx(delete $::GATEWAYS{gw});
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
[error]



=== TEST 3: nginx -s reload: the new workers use the token the old ones made (the zone is kept), none is made
--- init
my $gw = ::gateway(workers => 2, prefix => "js3_$$");
my ($k, $each) = (12, 4);
::register_all('r', $k * $each);
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                  mode => 'normal');
::push_spread('r', $k, $each);
my ($before) = ::tokens_seen($peer);
my %old = ::push_pids($gw);
my %workers = map { $_ => 1 } ::workers_of($gw);
Timpush::H2Peer::stop($peer);

Timpush::Push::signal_nginx($gw, 'HUP');
my $until = Time::HiRes::time() + ($::VG ? 120 : 20);
my $swapped;
while (!$swapped && Time::HiRes::time() < $until) {
    my @now = ::workers_of($gw);
    $swapped = @now == 2 && !grep { $workers{$_} } @now;
    Time::HiRes::sleep(0.1);
}
Test::More::ok($swapped, 'the old workers exited, two new ones run');

$peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                               mode => 'normal');
::push_spread('r', $k, $each);
my %all = ::push_pids($gw);
my @new = grep { !$old{$_} } keys %all;
Test::More::cmp_ok(scalar @new, '>=', 1, 'new workers pushed');
my ($after) = ::tokens_seen($peer);
for my $kid (qw(ABC123DEFG XYZ987WVUT)) {
    Test::More::is(scalar keys %{$after->{$kid}}, 1, "$kid: one token after the reload");
    Test::More::is(join(' ', keys %{$after->{$kid}}), join(' ', keys %{$before->{$kid}}),
                   "$kid: the one of before the reload");
}
Test::More::is(::made($gw, '2001|2002|3001'), 2, 'two tokens made in all, before the reload');
Timpush::H2Peer::stop($peer);
Timpush::Push::stop_nginx(delete $::GATEWAYS{gw});
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
[error]



=== TEST 4: the block's own nginx (so under valgrind too): two credentials of one key, pushed to together and again, share one token made once
--- http_config
upstream h2peer { server 127.0.0.1:$TEST_NGINX_APNS_PORT; }
timpush_apns_upstream production h2peer;
timpush_apns_connections 2;
timpush_credential 2001 key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                        team_id=TEAM123456 topic=com.example.chat
                        env=production;
timpush_credential 2002 key=$TEST_NGINX_CERT_DIR/AuthKey_ABC123DEFG.p8
                        team_id=TEAM123456 topic=com.example.other
                        env=production;
--- init
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                  mode => 'normal');
my $n = 20;
Timpush::Push::register_many('o2001_', $n, 2001, undef, 0xa0000000);
Timpush::Push::register_many('o2002_', $n, 2002, undef, 0xb0000000);
my @to = map { ("o2001_$_", "o2002_$_") } 0 .. $n - 1;
for my $i (1 .. 2) {
    my ($status, $res) = Timpush::Push::push_message(
        { to => \@to, elems => [{ type => 'text', text => "push $i" }] });
    Test::More::is($status, 200, "push $i: 200");
    Test::More::is($res->{sent}, 2 * $n, "push $i: every device sent to");
}
my ($tokens) = ::tokens_seen($peer, 200);
Test::More::is(join(',', keys %$tokens), 'ABC123DEFG', 'tokens of the one key');
Test::More::is(scalar keys %{$tokens->{ABC123DEFG}}, 1, 'one token');
Test::More::is((values %{$tokens->{ABC123DEFG}})[0], 4 * $n,
               'it carried every notification');
my $log = Timpush::Push::slurp(main::server_root() . '/logs/error.log');
my $made = () = $log =~ /credential 200[12]: new provider token/g;
Test::More::is($made, 1, 'made once');
Timpush::H2Peer::stop($peer);
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
is the clock right
no room for its key



=== TEST 5: nginx -s reload after the key file of a key_id was replaced (a wrong .p8 fixed): the token of the old key is not kept, one of the new key is made; the other key's is kept
--- init
my $dir = File::Temp::tempdir(CLEANUP => 1);
my $key = "$dir/AuthKey_ABC123DEFG.p8";
system("cp $ENV{TEST_NGINX_CERT_DIR}/AuthKey_ABC123DEFG.p8 $key") == 0 or die;
my $gw = ::gateway(workers => 2, prefix => "js5_$$", key => $key);
my ($k, $each) = (4, 2);
::register_all('n', $k * $each);
my $peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                                  mode => 'normal');
::push_spread('n', $k, $each);
my ($before) = ::tokens_seen($peer);
my ($old) = keys %{$before->{ABC123DEFG}};
Test::More::ok(::signed_by($old, $key), 'the first token is signed by the first key');
my %workers = map { $_ => 1 } ::workers_of($gw);
Timpush::H2Peer::stop($peer);

system("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
       . "-out $key.new 2>/dev/null") == 0 or die "openssl genpkey";
rename "$key.new", $key or die;
Test::More::ok(!::signed_by($old, $key), 'the new key is another');

Timpush::Push::signal_nginx($gw, 'HUP');
my $until = Time::HiRes::time() + ($::VG ? 120 : 20);
my $swapped;
while (!$swapped && Time::HiRes::time() < $until) {
    my @now = ::workers_of($gw);
    $swapped = @now == 2 && !grep { $workers{$_} } @now;
    Time::HiRes::sleep(0.1);
}
Test::More::ok($swapped, 'the old workers exited, two new ones run');

$peer = Timpush::H2Peer::start(port => $ENV{TEST_NGINX_APNS_PORT},
                               mode => 'normal');
::push_spread('n', $k, $each);
my ($after) = ::tokens_seen($peer);
my @new = keys %{$after->{ABC123DEFG}};
Test::More::is(scalar @new, 1, 'ABC123DEFG: one token after the reload');
Test::More::ok(::signed_by($new[0], $key), 'signed by the new key');
Test::More::is(join(' ', keys %{$after->{XYZ987WVUT}}),
               join(' ', keys %{$before->{XYZ987WVUT}}),
               'XYZ987WVUT: the one of before the reload');
Test::More::is(::made($gw, '2001|2002'), 2, 'ABC123DEFG: made before and after');
Test::More::is(::made($gw, '3001'), 1, 'XYZ987WVUT: made once');
Timpush::H2Peer::stop($peer);
Timpush::Push::stop_nginx(delete $::GATEWAYS{gw});
--- request
GET /v1/users/nobody/devices
--- response_body
{"user_id":"nobody","devices":[]}
--- no_error_log
[error]
