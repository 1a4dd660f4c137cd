# Durable asynchronous pushes (DESIGN §14): "async": true, the stream
# <prefix>:pushes consumed by group "timpush", GET /v1/pushes/{id}, the
# feedback stream <prefix>:feedback.  Each block is written as an adversary
# would: a consumer killed (-9) or quitting in the middle of a fan-out,
# APNs gone for 30 s, Redis restarted under load, many clients and two
# gateways at once; and each counts every device at the APNs simulator
# (the notifications of an async push without msg_id or collapse_id carry
# its push_id as apns-collapse-id), so that a notification lost or doubled
# is seen, not inferred.
#
# The light blocks (1 to 3) run the gateway under test as the block's own
# nginx (valgrind sees the consumer there); the others start their gateways
# (two instances sharing one Redis prefix: two consumers) and a simulator
# with Timpush::Push::start_nginx, outside valgrind, and keep the block's
# nginx as a bystander.

use Test::Nginx::Socket 'no_plan';
use Timpush::Test qw(free_port redis_cmd);
use Timpush::Push;
use File::Temp ();
use HTTP::Tiny;
use JSON::PP ();
use POSIX ();
use Time::HiRes ();

$ENV{TEST_NGINX_SIM_PORT} = free_port();
$ENV{TEST_NGINX_SIM_LOG_PORT} = free_port();
$ENV{TEST_NGINX_GW1_PORT} = free_port();
$ENV{TEST_NGINX_GW2_PORT} = free_port();
$ENV{TEST_NGINX_AOF_PORT} = free_port();

our $VG = $ENV{TEST_NGINX_USE_VALGRIND};

# a gateway with timpush_async on refuses to start unless timpush_async_claim
# > timpush_apns_timeout + the Redis timeout: 60 s + 30 s under valgrind
# (Timpush::Test), 10 s + 2 s otherwise (the default 30 s then)
our $CLAIM = $VG ? "timpush_async_claim 120s;\n" : '';

add_block_preprocessor(sub {
    my $block = shift;
    my $http = $block->http_config // '';

    if ($http !~ /no simulator/) {
        $block->set_value('http_config', $http . Timpush::Push::simulator(
            rules => 'timpush_apns_mock_rule dead 410 Unregistered;
                      timpush_apns_mock_rule bad0 400 BadDeviceToken;
                      timpush_apns_mock_rule 5e 503 ServiceUnavailable;'));
    }

    if (!defined $block->config) {
        $block->set_value('config', <<'CONF');
location /v1/ { client_max_body_size 64k; timpush_api; }
location = /mock/log { timpush_apns_mock_log; }
CONF
    }

    if (!defined $block->request) {
        # the blocks whose gateways are their own: a bystander's answer
        $block->set_value('request', "GET /v1/pushes/0-0\n");
        $block->set_value('error_code', 404);
        $block->set_value('response_body_like',
                          qr/"code":"not_found"/);
    }
});

no_shuffle();
run_tests();


# ---- helpers for the blocks (their init code runs in the runner's package)

our @Started;     # the nginx instances a block started, stopped at the end

sub now_ms { int(Time::HiRes::time() * 1000) }

# the standalone APNs simulator: its log holds 10,000s of notifications;
# 128 concurrent streams per connection (at most 256 in flight per worker);
# rate => N answers N a second (the others wait, their streams open)
sub sim_start {
    my (%o) = @_;
    my $port = $ENV{TEST_NGINX_SIM_PORT};
    my $log = $ENV{TEST_NGINX_SIM_LOG_PORT};
    my $extra = 'keepalive_requests 1000000; http2_max_concurrent_streams 128;';
    my $zone = '';
    if ($o{rate}) {
        $zone = "limit_req_zone \$server_port zone=apns:1m rate=$o{rate}r/s;";
        $extra .= ' limit_req zone=apns burst=1000000;';
    }
    my $server = Timpush::Push::simulator(extra => $extra,
                                          rules => $o{rules} // '');
    $server =~ s/\$TEST_NGINX_APNS_PORT/$port/;
    my $h = Timpush::Push::start_nginx(port => $port, http => <<"CONF");
$zone
$server
server {
    listen 127.0.0.1:$log;
    location = /mock/log { timpush_apns_mock_log size=64m; }
}
CONF
    push @Started, $h;
    return $h;
}

# A gateway instance: a master and one worker, consumer of the stream of
# prefix=$o{prefix} with timpush_async on (async => 'off' for none).
sub gateway {
    my (%o) = @_;
    my $certs = $ENV{TEST_NGINX_CERT_DIR};
    my $redis = $o{redis} // $ENV{TEST_NGINX_REDIS_PORT};
    my $apns = $o{apns} // $ENV{TEST_NGINX_SIM_PORT};
    my $h = Timpush::Push::start_nginx(master => 1, port => $o{port},
                                       expect => $o{expect}, http => "
    timpush_redis 127.0.0.1:$redis prefix=$o{prefix} timeout="
        . ($o{redis_timeout} // '1s') . ";
    upstream ext { server 127.0.0.1:$apns; }
    timpush_apns_upstream sandbox ext;
    timpush_apns_upstream production ext;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_timeout " . ($o{apns_timeout} // '1s') . ";
    timpush_async " . ($o{async} // 'on') . ";
    timpush_async_claim " . ($o{claim} // '3s') . ";
    timpush_async_retry " . ($o{retry} // '2m') . ";
    timpush_max_recipients 10000;
    timpush_devices_per_app 10;
    timpush_credential 1001 certificate=$certs/dev.p12
                            password_file=$certs/dev.pass env=sandbox;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    server {
        listen 127.0.0.1:$o{port};
        keepalive_requests 100000;
        location /v1/ { client_max_body_size 1m; timpush_api; }
    }");
    $h->{port} = $o{port};
    push @Started, $h;
    return $h;
}

sub stop_all {
    Timpush::Push::stop_nginx($_) for grep { $_->{pid} } reverse @Started;
    @Started = ();
}

END {
    for my $h (@Started) {
        next unless $h->{pid};
        kill 'KILL', $h->{pid};
        waitpid $h->{pid}, 0;
    }
}

# the worker of an instance (its master's only child)
sub worker_of {
    my ($h) = @_;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $in, '<', $stat or next;
        my $line = <$in> // '';
        return $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $h->{pid};
    }
    return undef;
}

sub http {
    my ($method, $port, $path, $body) = @_;
    my $res = HTTP::Tiny->new(timeout => 60)->request(
        $method, "http://127.0.0.1:$port$path",
        defined $body ? { content => ref $body ? JSON::PP::encode_json($body)
                                               : $body } : {});
    return ($res->{status}, scalar eval { JSON::PP::decode_json($res->{content}) },
            $res->{content}, $res);
}

# an async push: its push_id (undef, and a failed test, if not a 202)
sub async_push {
    my ($port, $body) = @_;
    my ($status, $json, $raw) = http('POST', $port, '/v1/push',
                                     { %$body, async => JSON::PP::true() });
    return $json->{push_id} if $status == 202 && $json->{push_id};
    Test::More::fail("async push answered 202 (got $status $raw)");
    return undef;
}

# GET /v1/pushes/{id} until done (or $secs): the last answer
sub wait_done {
    my ($port, $id, $secs) = @_;
    my $end = Time::HiRes::time() + $secs;
    my $json;
    while (1) {
        (undef, $json) = http('GET', $port, "/v1/pushes/$id");
        last if ($json->{state} // '') eq 'done' || Time::HiRes::time() > $end;
        Time::HiRes::sleep(0.05);
    }
    return $json;
}

# GET each push until all are done (or $secs): {id => when it was seen done}
sub wait_all_done {
    my ($port, $ids, $secs) = @_;
    my $end = Time::HiRes::time() + $secs;
    my %done;
    while (keys %done < @$ids && Time::HiRes::time() < $end) {
        for my $id (grep { !$done{$_} } @$ids) {
            my (undef, $json) = http('GET', $port, "/v1/pushes/$id");
            $done{$id} = Time::HiRes::time() if ($json->{state} // '') eq 'done';
        }
        Time::HiRes::sleep(0.02);
    }
    return \%done;
}

# XLEN and XPENDING of a stream are both 0 (or $secs pass): the two
sub wait_drained {
    my ($rport, $prefix, $secs) = @_;
    my $end = Time::HiRes::time() + $secs;
    my ($len, $pending);
    while (1) {
        $len = eval { redis_cmd("port=$rport", 'XLEN', "$prefix:pushes") } // -1;
        $pending = eval { redis_cmd("port=$rport", 'XPENDING', "$prefix:pushes",
                                    'timpush')->[0] } // -1;
        last if ($len == 0 && $pending == 0) || Time::HiRes::time() > $end;
        Time::HiRes::sleep(0.1);
    }
    return ($len, $pending);
}

# the consumer holding a push (XPENDING): its pid, once one took it
sub holder {
    my ($prefix, $id, $secs) = @_;
    my $end = Time::HiRes::time() + $secs;
    while (Time::HiRes::time() < $end) {
        my $p = redis_cmd('XPENDING', "$prefix:pushes", 'timpush', '-', '+', 100);
        for my $e (@$p) {
            return $1 if $e->[0] eq $id && $e->[1] =~ /:(\d+)$/;
        }
        Time::HiRes::sleep(0.002);
    }
    return undef;
}

# The standalone simulator's log, read without JSON::PP (too slow for
# 30,000 entries): [{token, time, collapse, badge}], oldest first.
sub sim_entries {
    my $res = HTTP::Tiny->new(timeout => 120)->get(
        "http://127.0.0.1:$ENV{TEST_NGINX_SIM_LOG_PORT}/mock/log");
    die "the simulator's log: $res->{status}\n" unless $res->{success};
    my @out;
    for my $chunk (split /(?=\{"token":")/, $res->{content}) {
        next unless $chunk =~ /^\{"token":"([0-9a-f]+)"/;
        my %e = (token => $1);
        $e{time} = $1 if $chunk =~ /"time":(\d+)/;
        $e{collapse} = $1 if $chunk =~ /"apns-collapse-id":"([^"\\]*)"/;
        $e{badge} = $1 if $chunk =~ /"badge":(\d+)/;
        push @out, \%e;
    }
    return \@out;
}

# {collapse id => {token => times}} of the simulator's log
sub by_push {
    my %c;
    $c{$_->{collapse} // ''}{$_->{token}}++ for @{ sim_entries() };
    return \%c;
}

# the tokens of a push never received ($missing) and received more than
# once ($extra, counting each one past the first)
sub delivery {
    my ($got, $tokens) = @_;
    my ($missing, $extra) = (0, 0);
    for my $t (@$tokens) {
        my $n = $got->{$t} // 0;
        $missing++ if $n == 0;
        $extra += $n - 1 if $n > 1;
    }
    return ($missing, $extra);
}

# the stored badges of [user, token] pairs: {badge => how many}
sub stored_badges {
    my ($rport, $prefix, $pairs) = @_;
    my %b;
    for (my $i = 0; $i < @$pairs; $i += 2000) {
        my @part = @$pairs[$i .. ($i + 1999 < $#$pairs ? $i + 1999 : $#$pairs)];
        my $r = redis_cmd("port=$rport", 'EVAL',
            "local r = {}\n"
            . "for i = 1, #ARGV, 2 do\n"
            . "  r[#r + 1] = redis.call('HGET', KEYS[1] .. ARGV[i] .. '}',\n"
            . "                         'b:' .. ARGV[i + 1]) or '-'\n"
            . "end\n"
            . "return r\n",
            1, "$prefix:u:{", map { @$_ } @part);
        $b{$_}++ for @$r;
    }
    return \%b;
}

sub error_log {
    my ($h) = @_;
    return Timpush::Push::slurp("$h->{dir}/logs/error.log");
}

sub hist {
    my ($h) = @_;
    return join ' ', map { "$_=$h->{$_}" }
                     sort { ($a =~ /^\d+$/ && $b =~ /^\d+$/) ? $a <=> $b : $a cmp $b } keys %$h;
}

__DATA__

=== TEST 1: refused at once (400, 413) with nothing queued; "pushed":false at once; a valid one is queued (202) and shows "queued" until a consumer starts; unknown and malformed ids are 404
--- http_config
# no timpush_async here: nobody consumes until the block starts a gateway
timpush_max_recipients 3;
--- init
my $p = $Timpush::Test::prefix;
my $port = $ENV{TEST_NGINX_SERVER_PORT};
my $t = 'a1' x 32;
Timpush::Push::register('a1', $t, 1001);
my $text = [{ type => 'text', text => 'hi' }];
my @refused = (
    [400, 'invalid_field', 'to: is required', '{"async":true}'],
    [400, 'invalid_field', 'elems[0].type: must be one of',
     '{"to":"a1","elems":[{"type":"sticker"}],"async":true}'],
    [400, 'invalid_field', 'async: must be true or false',
     '{"to":"a1","elems":[{"type":"text","text":"x"}],"async":"yes"}'],
    [400, 'invalid_field', 'async: must be true or false',
     '{"to":"a1","elems":[{"type":"text","text":"x"}],"async":1}'],
    [400, 'invalid_field', 'msg_id: must be 1 to 128 bytes',
     '{"to":"a1","elems":[{"type":"text","text":"x"}],"msg_id":"","async":true}'],
    [400, 'invalid_field', 'to: at most 3 recipients',
     '{"to":["a1","a2","a3","a4"],"elems":[{"type":"text","text":"x"}],"async":true}'],
    [400, 'invalid_json', '', '{"to":"a1","async":true'],
    [400, 'invalid_field', 'expiration: must be an integer',
     '{"to":"a1","elems":[{"type":"text","text":"x"}],"expiration":-1,"async":true}'],
    [413, 'payload_too_large', '',
     '{"to":"a1","elems":[{"type":"text","text":"x"}],"offline_push":{"ext":"'
     . ('e' x 5000) . '"},"async":true}'],
    [413, 'body_too_large', '',
     '{"to":"a1","elems":[{"type":"text","text":"' . ('b' x 70000) . '"}],"async":true}'],
);
my $t0 = Time::HiRes::time();
for my $r (@refused) {
    my ($status, $json, $raw) = ::http('POST', $port, '/v1/push', $r->[3]);
    Test::More::is($status, $r->[0], "refused: $r->[0] $r->[1] $r->[2]");
    Test::More::is($json->{error}{code}, $r->[1], "  code $r->[1]")
        or Test::More::diag(substr($raw, 0, 300));
    Test::More::like($json->{error}{message} // '', qr/^\Q$r->[2]\E/, '  message')
        if $r->[2];
}
# not pushed at all: answered at once as a synchronous push, not queued
for my $o ([disabled => '"offline_push":{"disable":true}'],
           [online_only => '"online_user_only":true'],
           [no_content => '"elems":[{"type":"custom","data":1}]']) {
    my $body = '{"to":"a1",' . ($o->[0] eq 'no_content' ? '' : '"elems":[{"type":"text","text":"x"}],')
               . "$o->[1],\"async\":true}";
    my ($status, $json) = ::http('POST', $port, '/v1/push', $body);
    Test::More::is("$status " . ($json->{reason} // ''), "200 $o->[0]",
                   "not pushed ($o->[0]): 200 at once");
}
Test::More::cmp_ok(Time::HiRes::time() - $t0, '<', $::VG ? 60 : 2, 'every refusal answered at once');
Test::More::is(::redis_cmd('EXISTS', "$p:pushes"), 0, 'nothing was queued: no stream');
Test::More::is(scalar @{ ::redis_cmd('KEYS', "$p:p:*") }, 0, 'nothing was queued: no push kept');
Test::More::is(scalar @{ Timpush::Push::mock_log() }, 0, 'nothing was sent');

# a valid one: 202, in the stream, "queued" while nobody consumes
my ($status, $json, $raw, $res) = ::http('POST', $port, '/v1/push',
    { to => ['a1', 'nobody'], elems => $text, async => JSON::PP::true() });
Test::More::is($status, 202, 'a valid async push: 202');
Test::More::like($raw, qr/^\{"push_id":"\d+-\d+"\}\n?$/, '{"push_id":"<ms>-<seq>"} and nothing else');
Test::More::like($res->{headers}{'content-type'}, qr{^application/json}, 'JSON');
my $id = $json->{push_id} // 'none';
Test::More::is(::redis_cmd('XLEN', "$p:pushes"), 1, 'it is in the stream');
Time::HiRes::sleep($::VG ? 2 : 0.3);
($status, undef, $raw) = ::http('GET', $port, "/v1/pushes/$id");
Test::More::is("$status $raw",
    qq{200 {"push_id":"$id","state":"queued","sent":0,"failed":0,"skipped":0,"results":[]}\n},
    'GET: queued, no results (no consumer)');
($status, undef, $raw) = ::http('HEAD', $port, "/v1/pushes/$id");
Test::More::is("$status " . ($raw // ''), '200 ', 'HEAD: 200, no body');
for my $m ('POST', 'DELETE') {
    my (undef, undef, undef, $r) = ::http($m, $port, "/v1/pushes/$id");
    Test::More::is("$r->{status} " . ($r->{headers}{allow} // ''), '405 GET, HEAD', "$m: 405, Allow: GET, HEAD");
}

# not ids, or ids nobody was given: 404 not_found
my ($ms, $seq) = split /-/, $id;
my @bad = ('0-0', '1-1', ($ms + 1) . "-$seq", "$ms-" . ($seq + 1), "0$id",
           "$ms-0$seq", '99999999999999999999999-0', 'abc', "$ms", "$ms-",
           "-$seq", "$id-1", "$ms--$seq", "$ms.0-$seq", '%2B', '-', '+', '$',
           "$id%2F1", '1-' . ('1' x 63), "$id%20", "%20$id");
for my $b (@bad) {
    my ($s, $j) = ::http('GET', $port, "/v1/pushes/$b");
    Test::More::is("$s " . ($j->{error}{code} // ''), '404 not_found', "GET /v1/pushes/$b: 404 not_found");
}

# a consumer starts (another instance, same prefix): the push is done
my $gw = ::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p,
                   apns => $ENV{TEST_NGINX_APNS_PORT},
                   redis_timeout => $::VG ? '30s' : '2s',
                   apns_timeout => $::VG ? '30s' : '5s', claim => '120s');
my $done = ::wait_done($port, $id, $::VG ? 120 : 20);
Test::More::is($done->{state}, 'done', 'a consumer came: done');
Test::More::is(JSON::PP->new->canonical->encode([map { $_->{status} // $_->{skipped} } @{ $done->{results} || [] }]),
               '[200,"no_devices"]', 'its results: a1 sent, nobody without devices');
my $log = Timpush::Push::mock_log($t);
Test::More::is(scalar @$log, 1, 'a1 got it once');
Test::More::is($log->[0]{headers}{'apns-collapse-id'}, $id, 'apns-collapse-id: the push_id');
::stop_all();
--- request
GET /v1/users/a1/devices
--- response_body_like chomp
"badge":1,
--- no_error_log eval
[qr/\[error\](?!.*client intended to send too large body)/]



=== TEST 2: the results of an async push are a synchronous push's, entry for entry; the feedback stream gets removals and final failures, field by field
--- http_config eval
"timpush_async on;
timpush_devices_per_app 10;
$::CLAIM"
--- init
my $p = $Timpush::Test::prefix;
my $port = $ENV{TEST_NGINX_SERVER_PORT};
my %tok = (s1 => 'a1' x 32, s2a => 'ff' x 32, s2b => '11' x 32,
           fg => 'f0' x 32, d1 => 'dead' . '01' x 30, b1 => 'bad0' . '01' x 30,
           unk => 'c4' x 32, esc => 'e5' x 32);
my $esc = "q\"\\\x{c3}\x{a9}";                   # q"\é, as UTF-8 bytes
(my $esc_path = $esc) =~ s/([^A-Za-z0-9])/sprintf '%%%02X', ord $1/ge;
my $setup = sub {
    # the same state before each push: badges 5, fg in the foreground,
    # the removed tokens registered again
    Timpush::Push::register('s1', $tok{s1}, 1001);
    Timpush::Push::register('s2', $tok{s2a}, 1001);   # first: the oldest
    Timpush::Push::register('s2', $tok{s2b}, 2001);
    Timpush::Push::register('fg', $tok{fg}, 2001);
    Timpush::Push::register('d1', $tok{d1}, 1001);
    Timpush::Push::register('b1', $tok{b1}, 1001);
    Timpush::Push::register($esc_path, $tok{esc}, 1001);
    for ([s1 => 's1'], [s2 => 's2a'], [s2 => 's2b'], [$esc_path => 'esc']) {
        Timpush::Push::call('POST', "/v1/users/$_->[0]/devices/$tok{$_->[1]}/background",
                            '{"unread":5}');
    }
    Timpush::Push::call('POST', "/v1/users/fg/devices/$tok{fg}/foreground");
    # a device of a business_id this configuration does not have
    ::redis_cmd('HSET', "$p:u:{unk}", "t:$tok{unk}", 4242, "r:$tok{unk}", ::now_ms() - 1000);
};
my $to = ['s1', 's2', 'fg', 'd1', 'b1', 'unk', 'nobody', $esc, "n\"\\\x{c3}\x{a9}"];
my $body = '{"to":' . JSON::PP->new->encode($to) . ',"from":{"nickname":"Denny"},"elems":[{"type":"text","text":"lunch?"}]';
my $t0 = ::now_ms();
$setup->();
my ($status, $sync, $raw) = ::http('POST', $port, '/v1/push', "$body}");
Test::More::is($status, 200, 'the synchronous push: 200') or Test::More::diag($raw);
$setup->();
($status, my $json) = ::http('POST', $port, '/v1/push', "$body,\"async\":true}");
Test::More::is($status, 202, 'the async push: 202');
my $async = ::wait_done($port, $json->{push_id} // 'none', $::VG ? 120 : 15);
Test::More::is($async->{state}, 'done', 'the async push: done');
my $t1 = ::now_ms();

# apns_id (made anew) and 410's timestamp (APNs' time) differ: checked, then left out
my $norm = sub {
    my ($res, $what) = @_;
    for my $e (@{ $res->{results} || [] }) {
        if (exists $e->{apns_id}) {
            Test::More::like(delete $e->{apns_id}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
                             "$what: $e->{user_id}: apns_id a UUID");
        }
        if (exists $e->{timestamp}) {
            my $ts = delete $e->{timestamp};
            Test::More::ok($ts >= $t0 && $ts <= $t1 + 1000, "$what: $e->{user_id}: 410 timestamp ($ts)");
        }
    }
    return $res->{results} || [];
};
my ($rs, $ra) = ($norm->($sync, 'sync'), $norm->($async, 'async'));
my $enc = JSON::PP->new->canonical;
Test::More::is("$async->{sent} $async->{failed} $async->{skipped}", "$sync->{sent} $sync->{failed} $sync->{skipped}",
               "the same counts: $sync->{sent} sent, $sync->{failed} failed, $sync->{skipped} skipped");
Test::More::is("$sync->{sent} $sync->{failed} $sync->{skipped}", '4 3 3', 'which are the expected ones');
Test::More::is(join(',', map { $_->{user_id} } @$ra), join(',', map { $_->{user_id} } @$rs),
               'the entries in the same order of users ("to")');
my $by_user = sub {
    my @r = @_;
    return $enc->encode([sort { $a->{user_id} cmp $b->{user_id} || ($a->{token} // '') cmp ($b->{token} // '') } @r]);
};
Test::More::is($by_user->(@$ra), $by_user->(@$rs), 'the same entries, field for field (badges 6)')
    or Test::More::diag("sync:  " . $enc->encode($rs) . "\nasync: " . $enc->encode($ra));
Test::More::is(join(' ', map { substr($_->{token} // '-', 0, 4) } @$ra),
               join(' ', map { substr($_->{token} // '-', 0, 4) } @$rs),
               "a user's devices in the same order too (the oldest registration first)");
my (undef, undef, $araw) = ::http('GET', $port, "/v1/pushes/$json->{push_id}");
for my $u ('q', 'n') {
    my ($e) = $raw =~ /("user_id":"$u\\"(?:[^"\\]|\\.)*")/;
    Test::More::ok($e && index($araw, $e) >= 0, "the user id $u\"\\\x{e9} written the same way: " . ($e // '?'));
}

# the feedback: each push's removals (410, BadDeviceToken) and final failure
# (unknown_business_id); nothing for what was sent or skipped
my $fb = ::redis_cmd('XRANGE', "$p:feedback", '-', '+');
my @fields = map { my %h = @{ $_->[1] }; $h{_names} = join(',', @{ $_->[1] }[map { 2 * $_ } 0 .. $#{ $_->[1] } / 2]); \%h } @$fb;
Test::More::is(join(' ', sort map { "$_->{user_id}:$_->{status}" } @fields),
               'b1:400 b1:400 d1:410 d1:410 unk:0 unk:0', 'feedback: 3 entries per push, the same ones');
for my $f (@fields) {
    Test::More::is($f->{_names}, 'user_id,token,business_id,env,status,reason,time',
                   "feedback $f->{user_id}: the documented fields, in order");
    Test::More::ok($f->{time} >= $t0 && $f->{time} <= $t1 + 1000, "feedback $f->{user_id}: time in ms ($f->{time})");
}
my %want = (d1 => "$tok{d1} 1001 sandbox 410 Unregistered",
            b1 => "$tok{b1} 1001 sandbox 400 BadDeviceToken");
for my $f (grep { $want{$_->{user_id}} } @fields) {
    Test::More::is("$f->{token} $f->{business_id} $f->{env} $f->{status} $f->{reason}", $want{$f->{user_id}},
                   "feedback $f->{user_id}: token, business_id, env, status, reason");
}
--- request
GET /v1/users/s1/devices
--- response_body_like chomp
"badge":6,
--- no_error_log
[error]



=== TEST 3: a failure that passes (503) is tried again until timpush_async_retry, then given up: final in the results and in the feedback; what was sent is not sent again
--- http_config eval
"timpush_async on;
timpush_async_retry 3s;
timpush_async_keep 3s;
timpush_apns_timeout " . ($::VG ? '10s' : '1s') . ";
$::CLAIM"
--- init
my $p = $Timpush::Test::prefix;
my $port = $ENV{TEST_NGINX_SERVER_PORT};
my @users = map { "a-user-with-a-long-name-$_" } 1 .. 20;
my %tok = map { ($users[$_ - 1] => sprintf('5e%062x', $_)) } 1 .. 20;   # 503, always
Timpush::Push::register($_, $tok{$_}, 1001) for @users;
my $ok = 'a3' x 32;
Timpush::Push::register('fine', $ok, 2001);
# and a device of the same user that fails: each later try lists the one
# that got it as a duplicate, which must not replace its 200 in the results
my $bad = sprintf('5e%062x', 99);
$tok{fine} = $bad;
Timpush::Push::register('fine', $bad, 1001);
my $t0 = Time::HiRes::time();
my $id = ::async_push($port, { to => [@users, 'fine'], elems => [{ type => 'text', text => 'x' }] });
my $res = ::wait_done($port, $id // 'none', $::VG ? 120 : 15);
my $took = Time::HiRes::time() - $t0;
Test::More::is($res->{state}, 'done', 'done');
Test::More::is("$res->{sent} $res->{failed} $res->{skipped}", '1 21 0', '1 sent, 21 failed');
Test::More::is(join(',', sort { $a cmp $b } map { ($_->{status} // '') . ($_->{reason} // '') } @{ $res->{results} }),
               join(',', '200', ('503ServiceUnavailable') x 21), 'the failures: 503 ServiceUnavailable');
Test::More::is(join(' ', map { $_->{token} . ':' . ($_->{status} // $_->{skipped}) }
                         grep { $_->{user_id} eq 'fine' } @{ $res->{results} }),
               "$ok:200 $bad:503", 'the device delivered in the first try keeps its 200');
if (!$::VG) {
    # timpush_async_retry is 3 s from when it was queued; each try lasts
    # its timpush_apns_timeout (1 s) and waits 1 s before the next
    Test::More::ok($took > 2.5 && $took < 6, sprintf('tried for about 3 s (%.1f s)', $took));
}
my $log = Timpush::Push::mock_log();
Test::More::is(join(' ', map { $_->{token} } @$log), $ok, 'the device that got it got it once; the others never');
my @fb = map { [@{ $_->[1] }] } @{ ::redis_cmd('XRANGE', "$p:feedback", '-', '+') };
Test::More::is(scalar @fb, 21, 'feedback: one entry per final failure');
my %seen;
for my $f (@fb) {
    my %h = @$f;
    $seen{$h{user_id}}++;
    my $want = "$h{user_id},$tok{$h{user_id}},1001,sandbox,503,ServiceUnavailable";
    Test::More::is(join(',', @h{qw(user_id token business_id env status reason)}), $want,
                   "feedback $h{user_id}: its own user, token, status and reason");
}
Test::More::is(scalar keys %seen, 21, 'each failing device once in the feedback');
# kept timpush_async_keep (3 s) after it was done, then forgotten
my $t_done = Time::HiRes::time();
my ($s1) = ::http('GET', $port, "/v1/pushes/$id");
Test::More::is($s1, 200, 'kept after it was done');
Time::HiRes::sleep(3.3 - (Time::HiRes::time() - $t_done));
my ($s2, $j2) = ::http('GET', $port, "/v1/pushes/$id");
Test::More::is("$s2 " . ($j2->{error}{code} // ''), '404 not_found', 'timpush_async_keep later: 404 not_found');
--- request
GET /v1/users/fine/devices
--- response_body_like chomp
"badge":1,
--- error_log eval
qr/still failing after \d+ tries: given up/



=== TEST 4: a consumer told to quit (QUIT) in the middle of a push hands it over: the other instance claims and finishes it, each device once
--- http_config
# no simulator here
--- init
my $p = "aq$$";
my $n = 1000;
my $sim = ::sim_start(rate => 2500, rules => 'timpush_apns_mock_rule 5030 503 ServiceUnavailable times=4;');
my @gw = (::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p),
          ::gateway(port => $ENV{TEST_NGINX_GW2_PORT}, prefix => $p));
my @tokens = Timpush::Push::register_many('q', $n, 1001, $gw[0]{port});
# q0's device instead: 503 for its first 4 sends (all that a try of 1 s
# makes), so that the quitting worker cannot finish the push itself
my $q0 = '5030' . ('0' x 60);
::http('PUT', $gw[0]{port}, "/v1/users/q0/devices/$q0", '{"business_id":1001}');
::http('DELETE', $gw[0]{port}, "/v1/users/q0/devices/$tokens[0]");
$tokens[0] = $q0;
my $id = ::async_push($gw[0]{port}, { to => [map { "q$_" } 0 .. $n - 1],
                                      elems => [{ type => 'text', text => 'quit' }] });
my $pid = ::holder($p, $id, 5);
my ($holder) = grep { (::worker_of($_) // 0) == ($pid // -1) } @gw;
my ($other) = grep { $_ != ($holder // 0) } @gw;
Test::More::ok($holder, 'a consumer holds the push');
my $at = 0;
for (1 .. 2000) {
    $at = grep { ($_->{collapse} // '') eq $id } @{ ::sim_entries() };
    last if $at >= 50;
    Time::HiRes::sleep(0.002);
}
Timpush::Push::signal_nginx($holder, 'QUIT');
my $t0 = Time::HiRes::time();
Test::More::ok($at > 0 && $at < $n, "QUIT in the middle of the push ($at of $n delivered)");
my ($exited, $status);
for (1 .. 1000) {
    if (waitpid($holder->{pid}, POSIX::WNOHANG()) > 0) {
        ($exited, $status) = (Time::HiRes::time() - $t0, $?);
        last;
    }
    Time::HiRes::sleep(0.01);
}
Test::More::ok(defined $exited && $status == 0,
               sprintf('the instance told to quit exited, status 0 (%.1f s after QUIT)', $exited // -1));
delete $holder->{pid} if defined $exited;
my $res = ::wait_done($other->{port}, $id, 30);
my $took = Time::HiRes::time() - $t0;
Timpush::Push::check_log($holder);
Test::More::is($res->{state}, 'done', sprintf('done by the other instance (%.1f s after QUIT)', $took));
Test::More::is($res->{sent}, $n, "every device sent ($res->{sent})");
Test::More::like(::error_log($holder), qr/push \Q$id\E left to another consumer/,
                 'the quitting worker left it');
Test::More::like(::error_log($other), qr/push \Q$id\E claimed from a consumer silent/,
                 'the other claimed it');
my ($missing, $extra) = ::delivery(::by_push()->{$id} || {}, \@tokens);
Test::More::is("$missing $extra", '0 0', "each device once (missing $missing, duplicates $extra)");
my ($len, $pending) = ::wait_drained($ENV{TEST_NGINX_REDIS_PORT}, $p, 5);
Test::More::is("$len $pending", '0 0', 'the stream drained: XLEN 0, XPENDING 0');
Test::More::diag(sprintf "graceful quit: QUIT at %d of %d delivered; the instance gone %.1f s later, "
                 . "the push done %.1f s later; duplicates %d", $at, $n, $exited // -1, $took, $extra);

# An idle consumer told to quit, while pushes keep coming: none of them
# waits for timpush_async_claim (3 s) because the quitting one took it.
my $idle = ::gateway(port => $holder->{port}, prefix => $p);
Time::HiRes::sleep(0.5);
Timpush::Push::signal_nginx($idle, 'QUIT');
my $tq = Time::HiRes::time();
my (%posted, @ids);
for my $i (1 .. 6) {
    my $pid = ::async_push($other->{port}, { to => ["q$i"], elems => [{ type => 'text', text => "while quitting $i" }] });
    next unless $pid;
    push @ids, $pid;
    $posted{$pid} = Time::HiRes::time();
}
my $when = ::wait_all_done($other->{port}, \@ids, 10);
my @late = grep { !$when->{$_} || $when->{$_} - $posted{$_} > 1.5 } @ids;
my ($slowest) = sort { $b <=> $a } map { ($when->{$_} // Time::HiRes::time()) - $posted{$_} } @ids;
waitpid $idle->{pid}, 0;
my $gone = Time::HiRes::time() - $tq;
delete $idle->{pid};
Test::More::is(scalar @late, 0, sprintf('pushes posted while a consumer quits: each done at once '
                                        . '(the slowest %.1f s after it was posted)', $slowest));
my $got = ::by_push();
Test::More::is(join(' ', map { scalar keys %{ $got->{$_} || {} } } @ids), '1 1 1 1 1 1', 'each delivered');
Test::More::diag(sprintf "an idle consumer told to quit: gone %.1f s later; pushes posted meanwhile: "
                 . "the slowest done %.1f s after it was posted", $gone, $slowest);
::stop_all();



=== TEST 5: kill -9 of the worker 100 ms into a fan-out to 10,000, then of a whole instance: the other consumers finish; every device delivered, sent again only what was in flight or not yet marked
--- http_config
# no simulator here
--- init
my $p = "ak$$";
my $n = 10000;
my $sim = ::sim_start();
my @gw = (::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p,
                    expect => [qr/exited on signal 9/]),
          ::gateway(port => $ENV{TEST_NGINX_GW2_PORT}, prefix => $p,
                    expect => [qr/exited on signal 9/]));
my @tokens = Timpush::Push::register_many('k', $n, 1001, $gw[0]{port});
my @pairs = map { ["k$_", $tokens[$_]] } 0 .. $n - 1;
# What the consumer that claims the push of a dead worker may send again
# (DESIGN §14): what was in flight when it died, APNs having received it
# but the worker not having handled (and kept) the answer, at most the
# streams its connections to this credential had open (2 connections per
# worker and credential x 128 concurrent streams, the simulator's
# SETTINGS); and the devices answered whose marks were not in Redis yet.
# The worker writes them every 256 answers or 10 ms, but how far Redis is
# behind it (the claims of the fan-out's next users are queued ahead of
# them) depends on the machine, so no count bounds these.  What is checked
# exactly: a device whose mark said "sent" once the dead worker's last
# commands were in is never sent again, and marks were in Redis while the
# fan-out ran, not only at its end.
my $round = 0;

# the marks of a push once the dead worker's commands stopped coming in:
# the same count of devices marked sent twice 50 ms apart, within 1.5 s of
# the kill (long before another consumer claims the push and marks what
# it sends again, timpush_async_claim 3s)
sub marks_at_kill {
    my ($mkey, $t_kill) = @_;
    my ($st, $last) = ({}, -1);
    while (Time::HiRes::time() < $t_kill + 1.5) {
        $st = Timpush::Push::mark_states($mkey);
        my $sent = grep { $_ eq 'sent' } values %$st;
        last if $sent == $last;
        $last = $sent;
        Time::HiRes::sleep(0.05);
    }
    return { map { (split /:/, $_)[0] => 1 } grep { $st->{$_} eq 'sent' } keys %$st };
}

for my $what ('the worker', 'the whole instance') {
    $round++;
    my $id = ::async_push($gw[$round % 2]{port}, { to => [map { "k$_" } 0 .. $n - 1],
                                                 elems => [{ type => 'text', text => "kill $round" }] });
    my $pid = ::holder($p, $id // 'none', 5);
    my $t_take = Time::HiRes::time();           # a consumer took it
    my ($holder) = grep { (::worker_of($_) // 0) == ($pid // -1) } @gw;
    my ($other) = grep { $_ != ($holder // 0) } @gw;
    if (!$holder) {
        Test::More::fail("$what: a consumer holds the push");
        last;
    }
    Time::HiRes::sleep(0.1 - (Time::HiRes::time() - $t_take)) if Time::HiRes::time() - $t_take < 0.1;
    my $t_kill = Time::HiRes::time();
    if ($what eq 'the worker') {
        kill 'KILL', $pid;
    } else {
        kill 'KILL', $holder->{pid}, $pid;
    }
    my $marked = marks_at_kill("$p:m:{$id}", $t_kill);
    my $at = grep { ($_->{collapse} // '') eq $id } @{ ::sim_entries() };
    Test::More::ok($at > 0 && $at < $n,
                   sprintf "$what: killed %.0f ms into the fan-out, with %d of %d delivered",
                           ($t_kill - $t_take) * 1000, $at, $n);
    my $res = ::wait_done($other->{port}, $id, 60);
    my $took = Time::HiRes::time() - $t_kill;
    Test::More::is($res->{state}, 'done', sprintf("$what: done (%.1f s after the kill)", $took));
    Test::More::is(scalar @{ $res->{results} || [] }, $n, "$what: GET has $n entries");
    Test::More::is($res->{sent}, $n, "$what: every one sent");
    my %t;
    $t{$_->{token} // ''}++ for @{ $res->{results} || [] };
    Test::More::is(scalar(grep { $t{$_} == 1 } @tokens), $n, "$what: each device once in the results");
    my $got = ::by_push()->{$id} || {};
    my ($missing, $extra) = ::delivery($got, \@tokens);
    Test::More::is($missing, 0, "$what: every device delivered ($missing missing)");
    my @again = grep { ($got->{$_} // 0) > 1 } @tokens;
    Test::More::is(join(' ', grep { $marked->{$_} } @again), '',
        sprintf "$what: none of the %d devices marked sent at the kill sent again "
                . "(%d were: in flight, or their marks not in Redis yet)",
                scalar keys %$marked, $extra);
    Test::More::is(scalar(grep { $got->{$_} > 2 } @again), 0, "$what: none sent a third time");
    Test::More::ok(keys %$marked || $at <= 2 * 128 + 256,
        sprintf "$what: marked sent as the fan-out went: %d of the %d delivered at the kill",
                scalar keys %$marked, $at);
    my ($len, $pending) = ::wait_drained($ENV{TEST_NGINX_REDIS_PORT}, $p, 10);
    Test::More::is("$len $pending", '0 0', "$what: the stream drained: XLEN 0, XPENDING 0");
    my %badge;
    $badge{$_->{badge} // '-'}++ for grep { ($_->{collapse} // '') eq $id } @{ ::sim_entries() };
    Test::More::is(::hist(\%badge), "$round=" . ($n + $extra), "$what: every notification carries badge $round");
    Test::More::is(::hist(::stored_badges($ENV{TEST_NGINX_REDIS_PORT}, $p, \@pairs)), "$round=$n",
                   "$what: every stored badge is $round: counted once");
    Test::More::diag(sprintf "kill -9 %s: %d of %d delivered at the kill, %.0f ms into the fan-out; "
                     . "done %.1f s later; %d marked sent at the kill; duplicates %d",
                     $what, $at, $n, ($t_kill - $t_take) * 1000, $took,
                     scalar keys %$marked, $extra);

    if ($what eq 'the whole instance') {
        waitpid $holder->{pid}, 0;
        delete $holder->{pid};
    }
}
::stop_all();



=== TEST 6: 1,000 async pushes of 10 users each from 10 clients at once, to two instances: each (push, device) exactly once, every push done, every badge counted once
--- http_config
# no simulator here
--- init
my $p = "am$$";
my $sim = ::sim_start();
my @gw = (::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p, apns_timeout => '5s', claim => '10s'),
          ::gateway(port => $ENV{TEST_NGINX_GW2_PORT}, prefix => $p, apns_timeout => '5s', claim => '10s'));
my %tok;
my @a = Timpush::Push::register_many('ua', 100, 1001, $gw[0]{port}, 0xa0000000);
my @b = Timpush::Push::register_many('ub', 100, 2001, $gw[1]{port}, 0xb0000000);
$tok{"ua$_"} = $a[$_] for 0 .. 99;
$tok{"ub$_"} = $b[$_] for 0 .. 99;
my @users = sort keys %tok;

my $t0 = Time::HiRes::time();
my @kids;
for my $c (0 .. 9) {
    my $file = File::Temp->new;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        srand($$);
        open my $out, '>', $file->filename or POSIX::_exit(1);
        my @h = map { HTTP::Tiny->new(timeout => 30, keep_alive => 1) } 0 .. 1;
        for my $i (0 .. 99) {
            my %pick;
            $pick{ $users[int rand @users] } = 1 while keys %pick < 10;
            my @to = sort keys %pick;
            my $g = ($c + $i) % 2;
            my $r = $h[$g]->post("http://127.0.0.1:$gw[$g]{port}/v1/push",
                { content => JSON::PP::encode_json({ to => \@to, async => JSON::PP::true(),
                                                     elems => [{ type => 'text', text => "c$c i$i" }] }) });
            my ($id) = $r->{content} =~ /"push_id":"([^"]+)"/;
            print $out ($r->{status} == 202 && $id ? $id : "refused:$r->{status}"), " @to\n";
        }
        close $out;
        POSIX::_exit(0);
    }
    push @kids, [$pid, $file];
}
my (%to, @refused);
for my $k (@kids) {
    waitpid $k->[0], 0;
    for my $line (split /\n/, Timpush::Push::slurp($k->[1]->filename)) {
        my ($id, @u) = split ' ', $line;
        if ($id =~ /^refused/) { push @refused, $id; next }
        $to{$id} = \@u;
    }
}
my $posted = Time::HiRes::time() - $t0;
Test::More::is(scalar @refused, 0, 'every push answered 202') or Test::More::diag("@refused[0 .. 9]");
Test::More::is(scalar keys %to, 1000, '1,000 distinct push ids');
my ($len, $pending) = ::wait_drained($ENV{TEST_NGINX_REDIS_PORT}, $p, 60);
my $took = Time::HiRes::time() - $t0;
Test::More::is("$len $pending", '0 0', 'the stream drained: XLEN 0, XPENDING 0');
my ($notdone, $wrong) = (0, 0);
for my $id (keys %to) {
    my (undef, $r) = ::http('GET', $gw[0]{port}, "/v1/pushes/$id");
    $notdone++ if ($r->{state} // '') ne 'done';
    $wrong++ if ($r->{sent} // -1) != 10 || join(',', sort map { $_->{user_id} } @{ $r->{results} || [] }) ne join(',', @{ $to{$id} });
}
Test::More::is($notdone, 0, 'every push done');
Test::More::is($wrong, 0, 'every push: its 10 users, sent');
my $got = ::by_push();
my ($missing, $extra, $strange) = (0, 0, 0);
for my $id (keys %to) {
    my ($m, $e) = ::delivery($got->{$id} || {}, [map { $tok{$_} } @{ $to{$id} }]);
    $missing += $m;
    $extra += $e;
    my %want = map { ($tok{$_} => 1) } @{ $to{$id} };
    $strange += grep { !$want{$_} } keys %{ $got->{$id} || {} };
}
my @alien = grep { !$to{$_} } keys %$got;
Test::More::is("$missing $extra $strange " . scalar(@alien), '0 0 0 0',
               "each (push, device) exactly once: missing $missing, duplicates $extra, to others $strange, unknown pushes " . scalar @alien);
# every device's notifications carry 1, 2, ... k, each once; its stored badge is k
my (%k, %seen, $badges_ok);
for my $id (keys %to) { $k{$tok{$_}}++ for @{ $to{$id} } }
push @{ $seen{$_->{token}} }, $_->{badge} // 0 for @{ ::sim_entries() };
$badges_ok = grep { join(',', sort { $a <=> $b } @{ $seen{$tok{$_}} || [] }) eq join(',', 1 .. ($k{$tok{$_}} // 0)) } @users;
Test::More::is($badges_ok, 200, 'every device: its notifications carry badges 1 .. k, each once');
my $stored = 0;
for my $u (@users) {
    my $b = ::redis_cmd('HGET', "$p:u:{$u}", "b:$tok{$u}") // -1;
    $stored++ if $b == ($k{$tok{$u}} // 0);
}
Test::More::is($stored, 200, 'every stored badge: the number of pushes to that device');
my @done = map { scalar(() = ::error_log($_) =~ /timpush async: push \S+ done after/g) } @gw;
Test::More::ok($done[0] > 0 && $done[1] > 0, "both instances consumed ($done[0] and $done[1])");
Test::More::diag(sprintf "1,000 pushes x 10: posted in %.1f s, all done %.1f s after the first; split %d/%d",
                 $posted, $took, @done);
::stop_all();



=== TEST 7: Redis (AOF) restarted while consumers push: no push answered 202 is lost; each is done, every device delivered and reported sent
--- http_config
# no simulator here
--- init
my $p = "ar$$";
my $rp = $ENV{TEST_NGINX_AOF_PORT};
my $dir = File::Temp::tempdir(CLEANUP => 1);
my $redis = sub {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$dir/redis.log";
        open STDERR, '>&', \*STDOUT;
        { exec 'redis-server', '--port', $rp, '--bind', '127.0.0.1', '--save', '',
               '--appendonly', 'yes', '--appendfsync', 'everysec', '--dir', $dir };
        POSIX::_exit(127);
    }
    for (1 .. 200) {
        return $pid if (eval { ::redis_cmd("port=$rp", 'PING') } // '') eq 'PONG';
        Time::HiRes::sleep(0.025);
    }
    die "redis-server (AOF) did not start on $rp\n";
};
my $rpid = $redis->();
my $sim = ::sim_start(rate => 500);
my @gw = (::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p, redis => $rp),
          ::gateway(port => $ENV{TEST_NGINX_GW2_PORT}, prefix => $p, redis => $rp));
my $n = 300;
my @tokens = Timpush::Push::register_many('r', $n, 1001, $gw[0]{port});
my %tok = map { ("r$_" => $tokens[$_]) } 0 .. $n - 1;

# a client pushes to 10 users every 50 ms, to both instances, throughout
my $file = File::Temp->new;
my $kid = fork // die "fork: $!";
if ($kid == 0) {
    srand($$);
    open my $out, '>', $file->filename or POSIX::_exit(1);
    select((select($out), $| = 1)[0]);
    my $h = HTTP::Tiny->new(timeout => 10);
    my $end = Time::HiRes::time() + 3;
    for (my $i = 0; Time::HiRes::time() < $end; $i++) {
        my $s = int rand($n - 10);
        my @to = map { "r" . ($s + $_) } 0 .. 9;
        my $g = $gw[$i % 2]{port};
        my $r = $h->post("http://127.0.0.1:$g/v1/push",
            { content => JSON::PP::encode_json({ to => \@to, async => JSON::PP::true(),
                                                 elems => [{ type => 'text', text => "r$i" }] }) });
        my ($id) = $r->{content} =~ /"push_id":"([^"]+)"/;
        print $out ($r->{status} == 202 && $id ? $id : "refused:$r->{status}"), " @to\n";
        Time::HiRes::sleep(0.05);
    }
    close $out;
    POSIX::_exit(0);
}
Time::HiRes::sleep(0.7);
# and a push to all 300: answered 500 a second, it is in flight when Redis goes
my $big = ::async_push($gw[0]{port}, { to => [map { "r$_" } 0 .. $n - 1],
                                       elems => [{ type => 'text', text => 'big' }] });
for (1 .. 2000) {
    last if grep { ($_->{collapse} // '') eq ($big // 'none') } @{ ::sim_entries() };
    Time::HiRes::sleep(0.005);
}
my $down = ::now_ms();
eval { ::redis_cmd("port=$rp", 'SHUTDOWN') };
waitpid $rpid, 0;
Time::HiRes::sleep(0.5);
$rpid = $redis->();
my $up = ::now_ms();
waitpid $kid, 0;
my (%to, @refused);
for my $line (split /\n/, Timpush::Push::slurp($file->filename)) {
    my ($id, @u) = split ' ', $line;
    if ($id =~ /^refused/) { push @refused, $id; next }
    $to{$id} = \@u;
}
$to{$big} = [map { "r$_" } 0 .. $n - 1] if $big;
my $during = grep { ($_->{collapse} // '') eq ($big // 'none') && $_->{time} > $down && $_->{time} < $up } @{ ::sim_entries() };
Test::More::ok($during > 0, "the big push was answered by APNs while Redis was away ($during notifications)");
Test::More::ok(@refused > 0, scalar(@refused) . ' pushes refused while Redis was away (not acknowledged)');
Test::More::is(join(' ', grep { $_ ne 'refused:503' } @refused), '', 'each refusal a 503');
my ($len, $pending) = ::wait_drained($rp, $p, 60);
Test::More::is("$len $pending", '0 0', 'the stream drained: XLEN 0, XPENDING 0');
my $got = ::by_push();
my ($notdone, $misreported, $missing, $extra, @bad) = (0, 0, 0, 0);
for my $id (sort keys %to) {
    my (undef, $r) = ::http('GET', $gw[1]{port}, "/v1/pushes/$id");
    $notdone++ if ($r->{state} // '') ne 'done';
    my $want = scalar @{ $to{$id} };
    if (($r->{sent} // -1) != $want) {
        $misreported++;
        my %why;
        $why{$_->{status} // $_->{skipped} // $_->{error} // '?'}++ for @{ $r->{results} || [] };
        push @bad, "$id: " . join(' ', map { "$_=$why{$_}" } sort keys %why);
    }
    my ($m, $e) = ::delivery($got->{$id} || {}, [map { $tok{$_} } @{ $to{$id} }]);
    $missing += $m;
    $extra += $e;
}
Test::More::is($notdone, 0, scalar(keys %to) . ' pushes acknowledged: every one done');
Test::More::is($missing, 0, "every device of every one delivered ($missing missing)");
Test::More::is($misreported, 0, 'every device reported sent in GET /v1/pushes/{id}')
    or Test::More::diag(join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
Test::More::diag(sprintf "Redis restart: %d pushes acknowledged, %d refused; %d notifications answered "
                 . "while Redis was away; duplicates %d; misreported pushes %d",
                 scalar keys %to, scalar @refused, $during, $extra, $misreported);
::stop_all();
eval { ::redis_cmd("port=$rp", 'SHUTDOWN') };
waitpid $rpid, 0;



=== TEST 8: a push is not tried again past its expiration: APNs back just after it, the push is given up, never sent
--- http_config
# no simulator here
--- init
my $p = "ax$$";
my $gw = ::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p);   # APNs not there yet
my @tokens = Timpush::Push::register_many('e', 3, 1001, $gw->{port});
my $t0 = Time::HiRes::time();
my $exp = int($t0) + 4;                   # 3 to 4 s from now
my $id = ::async_push($gw->{port}, { to => ['e0', 'e1', 'e2'], expiration => $exp,
                                     elems => [{ type => 'text', text => 'stale soon' }] });
Time::HiRes::sleep($exp + 0.2 - Time::HiRes::time());
my $sim = ::sim_start();
my $res = ::wait_done($gw->{port}, $id // 'none', 15);
my $took = Time::HiRes::time() - $t0;
Test::More::is($res->{state}, 'done', sprintf('done (%.1f s after it was queued, its expiration %.1f s)', $took, $exp - $t0));
Test::More::is(join(',', map { ($_->{status} // '-') . ($_->{reason} // '') } @{ $res->{results} || [] }),
               '502ConnectionFailed,502ConnectionFailed,502ConnectionFailed', 'given up: 502 ConnectionFailed');
my @sent = grep { my $t = $_->{token}; grep { $_ eq $t } @tokens } @{ ::sim_entries() };
Test::More::is(scalar @sent, 0, 'never sent after its expiration')
    or Test::More::diag(sprintf 'sent %.1f s after its expiration', $sent[0]{time} / 1000 - $exp);
my @fb = map { { @{ $_->[1] } } } @{ ::redis_cmd('XRANGE', "$p:feedback", '-', '+') };
Test::More::is(join(' ', sort map { "$_->{user_id}:$_->{status}" } @fb), 'e0:502 e1:502 e2:502',
               'feedback: its final failures');
::stop_all();



=== TEST 9: APNs away for 30 s: async pushes wait, with backoff, and are delivered once it is back, each device once, each badge counted once; a push whose expiration passed meanwhile is given up
--- http_config
# no simulator here
--- init
my $p = "ao$$";
my $n = 100;
my $sim = ::sim_start();
my @gw = (::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p, retry => '2m'),
          ::gateway(port => $ENV{TEST_NGINX_GW2_PORT}, prefix => $p, retry => '2m'));
my @tokens = Timpush::Push::register_many('o', $n, 1001, $gw[0]{port});
my @late = Timpush::Push::register_many('x', 5, 2001, $gw[0]{port}, 0xb0000000);
for my $i (0 .. $n - 1) {
    ::http('POST', $gw[0]{port}, "/v1/users/o$i/devices/$tokens[$i]/background", '{"unread":5}');
}
Timpush::Push::stop_nginx($sim);
my $t_down = Time::HiRes::time();
my $to = [map { "o$_" } 0 .. $n - 1];
my $text = sub { [{ type => 'text', text => $_[0] }] };
my @ids = (::async_push($gw[0]{port}, { to => $to, elems => $text->('one') }),
           ::async_push($gw[1]{port}, { to => $to, elems => $text->('two'), msg_id => 'outage-2' }),
           ::async_push($gw[0]{port}, { to => $to, elems => $text->('three'),
                                        offline_push => { collapse_id => 'outage-3' } }));
my @keys = ($ids[0], 'outage-2', 'outage-3');
my $exp = ::async_push($gw[1]{port}, { to => [map { "x$_" } 0 .. 4], elems => $text->('stale'),
                                       expiration => int(Time::HiRes::time()) + 5 });
Time::HiRes::sleep(30 - (Time::HiRes::time() - $t_down));
my $queued = 0;
for my $id (@ids) {
    my (undef, $r) = ::http('GET', $gw[0]{port}, "/v1/pushes/$id");
    $queued++ if ($r->{state} // '') ne 'done';
}
Test::More::is($queued, 3, 'after 30 s without APNs, none of the three is done');
$sim = ::sim_start();
my $t_up = Time::HiRes::time();
my @res = map { ::wait_done($gw[0]{port}, $_ // 'none', 90) } @ids;
my $took = Time::HiRes::time() - $t_up;
Test::More::is(join(' ', map { $_->{state} // '-' } @res), 'done done done',
               sprintf('APNs back: the three done %.1f s later', $took));
Test::More::is(join(' ', map { $_->{sent} // '-' } @res), "$n $n $n", 'each sent to every device');
my $got = ::by_push();
for my $i (0 .. 2) {
    my ($missing, $extra) = ::delivery($got->{$keys[$i]} || {}, \@tokens);
    Test::More::is("$missing $extra", '0 0', "push " . ($i + 1) . ": each device exactly once (missing $missing, duplicates $extra)");
}
my %badge;
$badge{$_->{badge} // '-'}++ for @{ ::sim_entries() };
Test::More::is(join(' ', grep { $_ < 6 || $_ > 8 } keys %badge), '', 'every badge sent: 6 to 8 (5, and 3 pushes)')
    or Test::More::diag(::hist(\%badge));
Test::More::is(::hist(::stored_badges($ENV{TEST_NGINX_REDIS_PORT}, $p, [map { ["o$_", $tokens[$_]] } 0 .. $n - 1])),
               "8=$n", 'every stored badge 8: each push counted once');
my ($len, $pending) = ::wait_drained($ENV{TEST_NGINX_REDIS_PORT}, $p, 30);
Test::More::is("$len $pending", '0 0', 'the stream drained: XLEN 0, XPENDING 0');

# the one that expired during the outage: given up, never sent, said final
my $r = ::wait_done($gw[0]{port}, $exp // 'none', 5);
Test::More::is($r->{state}, 'done', 'the expired push: done');
Test::More::is(join(',', map { $_->{status} // $_->{error} // '?' } @{ $r->{results} || [] }), '502,502,502,502,502',
               'the expired push: its devices failed (502)');
my %late = map { $_ => 1 } @late;
Test::More::is(scalar(grep { $late{$_->{token}} } @{ ::sim_entries() }), 0, 'the expired push was never sent');
my @fb = map { { @{ $_->[1] } } } @{ ::redis_cmd('XRANGE', "$p:feedback", '-', '+') };
Test::More::is(join(' ', sort map { "$_->{user_id}:$_->{status}:$_->{reason}" } @fb),
               join(' ', map { "x$_:502:ConnectionFailed" } 0 .. 4),
               'feedback: the expired push\'s final failures only');

# the backoff: 1 s doubling, per push
my @delays;
for my $g (@gw) {
    my $log = ::error_log($g);
    push @delays, [$1, $2] while $log =~ /push (\S+): \d+ notification\(s\) or user\(s\) to try again in (\d+) ms/g;
}
my %seq;
push @{ $seq{$_->[0]} }, $_->[1] for @delays;
my $first = join ',', @{ $seq{$ids[0]} || [] };
Test::More::like($first, qr/^1000,2000,4000,8000(,16000)?$/, "the backoff of a push: 1 s doubling ($first)");
Test::More::diag(sprintf "APNs away 30 s: the three pushes done %.1f s after it was back; backoff %s", $took, $first);
::stop_all();



=== TEST 10: an async push's results are in Redis before the msg_id marks that say its devices got it: a consumer that dies in between never leaves a device skipped as a duplicate without its result
--- http_config
# no simulator here
--- init
my $p = "ae$$";
my $n = 30;
# APNs answers 20 a second: marks and results are written answer by answer
my $sim = ::sim_start(rate => 20);
my $gw = ::gateway(port => $ENV{TEST_NGINX_GW1_PORT}, prefix => $p);
my @tokens = Timpush::Push::register_many('eo', $n, 1001, $gw->{port});
my $id = ::async_push($gw->{port}, { to => [map { "eo$_" } 0 .. $n - 1], msg_id => 'order-1',
                                     elems => [{ type => 'text', text => 'in order' }] });
my $mkey = "$p:m:{order-1}";
my ($polls, $seen, $partial, @ahead) = (0, 0, 0);
my $end = Time::HiRes::time() + 20;
while (Time::HiRes::time() < $end) {
    # the marks first: a result read after them is at least as recent
    my $st = Timpush::Push::mark_states($mkey);
    my %rec = map { /^d:\d+:\d+:([0-9a-f]+)$/ ? ($1 => 1) : () }
              @{ ::redis_cmd('HKEYS', "$p:p:{$id}") || [] };
    my @sent = map { /^([0-9a-f]+):/ ? $1 : () } grep { $st->{$_} eq 'sent' } keys %$st;
    $polls++;
    $seen = @sent if @sent > $seen;
    $partial++ if @sent && @sent < $n;
    push @ahead, grep { !$rec{$_} } @sent;
    last if @sent == $n;
    Time::HiRes::sleep(0.001);
}
Test::More::is($seen, $n, "every device marked sent in the end ($polls looks at Redis)");
# one claim (the script's call) of 30 devices: each marked soon after its
# answer, not when the last of its claim is answered
Test::More::ok($partial, "devices marked sent while others of their claim were not answered yet ($partial looks)");
Test::More::is(scalar @ahead, 0, 'never a device marked sent before its result was written')
    or Test::More::diag("marked before their result: @ahead[0 .. ($#ahead < 4 ? $#ahead : 4)]");
my $res = ::wait_done($gw->{port}, $id // 'none', 10);
Test::More::is("$res->{state} $res->{sent}", "done $n", "done, $n sent");
::stop_all();
