#!/usr/bin/env bash
# What API requests hold in a timpush worker's memory: the figures behind
# the limits of README "Securing the API".  Run from anywhere:
#
#   bench/memory-bodies.sh
#
# It builds the module and the test PKI (make build certs: nothing else is
# needed), starts its own Redis and, for each measurement, a fresh nginx
# (one worker, 127.0.0.1 only, client_max_body_size 1m, timeouts long
# enough to hold the clients), warms the worker up with a few small
# requests, and reads the worker's memory from /proc/<worker pid>/status:
#
#   idle      N connections that sent half a request line, nothing more
#   device    N clients each holding a device body half sent
#             (PUT .../devices/<token>, Content-Length: 4096, 2048 sent)
#   push      N clients each holding a 900 KB push body half sent
#             (POST /v1/push, Content-Length: 921600, 460800 sent)
#   fan-out   one POST /v1/push of 1 MB naming 10,000 users (ids of 98
#             bytes; none has a device, so no notification is sent): the
#             peak while it is received, parsed, read from Redis and
#             answered (VmHWM, reset through /proc/<pid>/clear_refs);
#             then the same with ids of 8 bytes (a 110 KB body); then
#             both with "offline_push":{"disable":true}: parsed and
#             validated, not pushed (no Redis, a short answer)
#
# For the held clients: growth = VmRSS once every client has sent its
# part (and RSS is steady) - VmRSS before; per request = growth / N.  For
# the fan-out: peak = VmHWM during the request - VmRSS before.  Each is
# measured RUNS times on a fresh worker; the median is printed.
#
# Knobs (environment): MEM_CLIENTS (200), MEM_RUNS (3), NGINX
# (/usr/sbin/nginx).  Everything it starts is stopped when it ends.

set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
work=$root/build/bench-memory
certs=$root/t/cert/out
module=$root/build/objs/ngx_http_timpush_module.so
NGINX=${NGINX:-/usr/sbin/nginx}
N=${MEM_CLIENTS:-200}
RUNS=${MEM_RUNS:-3}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'memory-bodies: %s\n' "$*" >&2; exit 1; }

make -s -C "$root" build certs >&2

# a file descriptor per client, and some
(( $(ulimit -n) > N + 64 )) || ulimit -n $((N + 1024)) ||
    die "ulimit -n is below $((N + 64))"

rm -rf "$work"
mkdir -p "$work"

free_port() {
    perl -MIO::Socket::INET -e '
        for (1 .. 1000) {
            my $p = 10000 + int rand 20000;
            my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                LocalPort => $p, Listen => 1, ReuseAddr => 1) or next;
            print "$p\n";
            exit 0;
        }
        exit 1;'
}

redis_port=$(free_port)
port=$(free_port)
apns_port=$(free_port)     # nobody listens: no notification is sent
redis_pid=
nginx_pid=
client_pid=

cleanup() {
    [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
    wait 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" \
    --save '' --appendonly no --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 100); do
    [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done

cat > "$work/nginx.conf" <<CONF
load_module $module;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $((N * 2 + 1024));
error_log $work/error.log notice;
pid $work/nginx.pid;
events { worker_connections $((N * 2 + 256)); }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;

    timpush_redis 127.0.0.1:$redis_port prefix=mem timeout=10s;
    timpush_credential 2001 key=$certs/AuthKey_ABC123DEFG.p8
                            team_id=TEAM123456 topic=com.example.chat
                            env=production;
    upstream apns { server 127.0.0.1:$apns_port; }
    timpush_apns_upstream production apns;
    timpush_apns_upstream sandbox apns;
    timpush_apns_trusted_certificate $certs/ca.crt;

    server {
        listen 127.0.0.1:$port backlog=4096;
        client_header_timeout 120s;
        client_body_timeout 120s;
        client_max_body_size 1m;
        location /v1/ {
            timpush_api;
        }
    }
}
CONF

api=http://127.0.0.1:$port/v1

start_nginx() {
    "$NGINX" -p "$work/" -c "$work/nginx.conf" 2>>"$work/nginx.stderr" &
    nginx_pid=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null "$api/users/x/devices" && break
        sleep 0.05
    done
    # (a process may end between the glob and its read: not an error)
    worker=$( { cat /proc/[0-9]*/stat 2>/dev/null || true; } |
             awk -v m="$nginx_pid" '$4 == m { print $1; exit }')
    [ -n "$worker" ] || die "no nginx worker (see $work/error.log)"
    # warm-up: every code path of the measurements, small
    curl -s -o /dev/null -X PUT "$api/users/warm/devices/aabbccddeeff0011" \
        -d '{"business_id":2001}'
    curl -s -o /dev/null "$api/users/warm/devices"
    curl -s -o /dev/null "$api/push" \
        -d '{"to":["nobody1","nobody2"],"elems":[{"type":"text","text":"hi"}]}'
    sleep 0.2
}

stop_nginx() {
    kill -QUIT "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=
}

kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$worker/status"; }

# VmRSS once it stops moving (three readings 200 ms apart within 64 KiB)
steady_rss() {
    local a b c
    a=$(kib VmRSS); sleep 0.2; b=$(kib VmRSS)
    for _ in $(seq 100); do
        sleep 0.2
        c=$(kib VmRSS)
        if (( c - a < 64 && a - c < 64 && c - b < 64 && b - c < 64 )); then
            break
        fi
        a=$b; b=$c
    done
    echo "$c"
}

# N clients: each sends HEAD (a request without its end) and SENT bytes of
# body, then holds; "ready" once all have sent
hold() {
    local head=$1 sent=$2
    rm -f "$work/ready"
    perl -MIO::Socket::INET -e '
        my ($port, $n, $head, $sent, $ready) = @ARGV;
        $head =~ s/\\r\\n/\r\n/g;
        my @s;
        for (1 .. $n) {
            my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")
                or die "connect: $!";
            my $out = $head =~ s/\{i\}/$_/gr;
            $out .= "a" x $sent;
            while (length $out) {
                my $w = syswrite $s, $out;
                die "write: $!" unless defined $w;
                substr $out, 0, $w, "";
            }
            push @s, $s;
        }
        open my $fh, ">", $ready; close $fh;
        sleep 3600;' "$port" "$N" "$head" "$sent" "$work/ready" &
    client_pid=$!
    for _ in $(seq 600); do
        [ -f "$work/ready" ] && return 0
        sleep 0.05
    done
    die "the clients did not connect"
}

unhold() {
    kill "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
    client_pid=
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# one held-client measurement: the growth in KiB, in $result (not a
# subshell: what it starts must be seen by cleanup)
held_growth() {
    local head=$1 sent=$2 before after
    start_nginx
    before=$(kib VmRSS)
    hold "$head" "$sent"
    after=$(steady_rss)
    unhold
    stop_nginx
    result=$(( after - before ))
}

# the pushes to 10,000 users: ids of 98 bytes (1 MB), and of 8
push_body() {
    perl -e '
        my $w = $ARGV[0] - 1;
        my @to = map { sprintf "\"u%0${w}d\"", $_ } 1 .. 10000;
        print "{\"to\":[", join(",", @to), "],\"from\":{\"user_id\":\"denny\",",
              "\"nickname\":\"Denny\"},\"elems\":[{\"type\":\"text\",",
              "\"text\":\"hello\"}]$ARGV[1]}";' "$1" "${3:-}" > "$2"
}
push_body 98 "$work/push-long.json"
push_body 8 "$work/push-short.json"
# parsed and validated, then not pushed: the parse alone
push_body 98 "$work/parse-long.json" ',"offline_push":{"disable":true}'
push_body 8 "$work/parse-short.json" ',"offline_push":{"disable":true}'
long_bytes=$(stat -c %s "$work/push-long.json")
short_bytes=$(stat -c %s "$work/push-short.json")

fanout_peak() {
    local body=$1 before peak out
    start_nginx
    echo 5 > "/proc/$worker/clear_refs"     # VmHWM := VmRSS
    before=$(kib VmRSS)
    out=$(curl -s -w ' %{http_code}' --data-binary "@$body" "$api/push")
    case $out in
        *'"skipped":10000,'*' 200' | *'"reason":"disabled"'*' 200') ;;
        *) die "the fan-out failed: ${out:0:300}" ;;
    esac
    peak=$(kib VmHWM)
    stop_nginx
    result=$(( peak - before ))
}

declare -a idle device push fanout fanout_short parse parse_short
for r in $(seq "$RUNS"); do
    log "run $r of $RUNS: $N idle connections (half a request line)"
    held_growth 'GET /v1/users/u{i}/dev' 0
    idle+=("$result")
    log "run $r: $N device bodies half sent"
    held_growth "PUT /v1/users/u{i}/devices/aabbccddeeff0011 HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" 2048
    device+=("$result")
    log "run $r: $N push bodies of 900 KB half sent"
    held_growth "POST /v1/push HTTP/1.1\r\nHost: x\r\nContent-Length: 921600\r\n\r\n" 460800
    push+=("$result")
    log "run $r: one push of $long_bytes bytes to 10,000 users"
    fanout_peak "$work/push-long.json"
    fanout+=("$result")
    log "run $r: one push of $short_bytes bytes to 10,000 users"
    fanout_peak "$work/push-short.json"
    fanout_short+=("$result")
    log "run $r: the same two, parsed only (offline_push.disable)"
    fanout_peak "$work/parse-long.json"
    parse+=("$result")
    fanout_peak "$work/parse-short.json"
    parse_short+=("$result")
done

mi=$(median "${idle[@]}")
md=$(median "${device[@]}")
mp=$(median "${push[@]}")
mf=$(median "${fanout[@]}")
ms=$(median "${fanout_short[@]}")
pl=$(median "${parse[@]}")
ps=$(median "${parse_short[@]}")

per() { awk -v k="$1" -v n="$2" 'BEGIN { printf "%.1f", k * 1024 / n / 1024 }'; }
ratio() { awk -v k="$1" -v b="$2" 'BEGIN { printf "%.1f x the body", k * 1024 / b }'; }

cat <<EOF
worker memory, nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), $N clients, median of $RUNS fresh workers ($(date -u +%F))

| what is held | worker RSS growth | per request |
|---|---:|---:|
| $N connections, half a request line | $mi KiB | $(per "$mi" "$N") KiB |
| $N device bodies half sent (2 of 4 KiB) | $md KiB | $(per "$md" "$N") KiB |
| $N push bodies half sent (450 of 900 KB) | $mp KiB | $(per "$mp" "$N") KiB |
| one push of $long_bytes bytes, 10,000 users (peak) | $mf KiB | $(ratio "$mf" "$long_bytes") |
| one push of $short_bytes bytes, 10,000 users (peak) | $ms KiB | $(ratio "$ms" "$short_bytes") |
| the same, parsed only (peak; offline_push.disable) | $pl KiB | $(ratio "$pl" "$long_bytes") |
| the same with ids of 8 bytes, parsed only (peak) | $ps KiB | $(ratio "$ps" "$short_bytes") |

runs (KiB): idle ${idle[*]}; device ${device[*]}; push ${push[*]}; fan-out ${fanout[*]}; short ids ${fanout_short[*]}; parsed only ${parse[*]}, short ${parse_short[*]}
EOF
