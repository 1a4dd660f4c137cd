#!/usr/bin/env bash
# timpush benchmarks (DESIGN 9, issue 6): "make bench" runs this from the
# repository root.  See bench/README.md for the method and the figures.
#
# It installs what is missing (h2load, wrk, node/npm, Redis; @parse/node-apn
# from bench/package-lock.json), builds the module and the test PKI, starts
# its own Redis, APNs simulator (nginx, one worker) and timpush (nginx, one
# worker) on 127.0.0.1 only, seeds 10,000 users with one device each, runs
# every measurement BENCH_RUNS times (default 5, the figure is the median),
# prints a markdown table and writes it to bench/results.md.
#
# "bench/run.sh profile" (make bench-profile) sets up the same way, then
# profiles the fan-out instead: perf (cpu-clock samples, call graphs) on
# the timpush worker, the simulator worker and Redis, and callgrind on a
# timpush nginx run under valgrind; the reports go to build/bench/profile/.  Everything it
# starts is stopped when it ends, however it ends.
#
# "bench/run.sh msg_id" sets up the same way, then measures only the cost
# of a msg_id (the fan-out with and without, BENCH_RUNS rounds) and prints
# it; nothing is written.
#
# "bench/run.sh cluster" sets up the same way, then starts a Redis Cluster
# of 3 masters and 3 replicas on 127.0.0.1 and two more timpush instances
# on it (each its own nginx and its own simulator), seeds the cluster, and
# measures the fan-out through one instance on the cluster, two fan-outs
# at once through both instances, and the same fan-out on the single Redis,
# interleaved, BENCH_RUNS rounds, with Redis's CPU time per notification;
# it prints a table and writes it to build/bench/cluster-results.md.
#
# Knobs (environment): BENCH_RUNS (>= 5 for a report; fewer for a quick
# look), BENCH_USERS (10000), BENCH_MEM_FANOUTS (100: 1,000,000
# notifications), BENCH_WRK_SECS (5), BENCH_WRK_CONNS (16), NGINX
# (/usr/sbin/nginx), BENCH_RESULTS (bench/results.md).

set -euo pipefail

MODE=${1:-bench}
case $MODE in
    bench|profile|msg_id|cluster) ;;
    *) echo "usage: bench/run.sh [profile|msg_id|cluster]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
root=$PWD
bench=$root/bench
work=$root/build/bench
certs=$root/t/cert/out
NGINX=${NGINX:-/usr/sbin/nginx}
RUNS=${BENCH_RUNS:-5}
USERS=${BENCH_USERS:-10000}
MEM_FANOUTS=${BENCH_MEM_FANOUTS:-100}
WARM_FANOUTS=10
MSG_PAIRS=3                    # fan-outs of each kind per msg_id round
CLUSTER_REPEAT=3               # fan-outs of each kind per cluster round
WRK_SECS=${BENCH_WRK_SECS:-5}
WRK_CONNS=${BENCH_WRK_CONNS:-16}
RESULTS=${BENCH_RESULTS:-$bench/results.md}
BID=2001                       # the token-auth credential (h2load: no certs)
KEY=$certs/AuthKey_ABC123DEFG.p8
KEY_ID=ABC123DEFG
TEAM_ID=TEAM123456
TOPIC=com.example.chat

command_line="make bench"
[ -n "${MAKELEVEL:-}" ] || command_line="bench/run.sh"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

(( RUNS >= 1 )) || die "BENCH_RUNS must be at least 1"


# ---- dependencies, build -------------------------------------------------

need=()
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
if (( ${#need[@]} )); then
    "$root/.ci/deps" "${need[@]}"
fi

log "build and test PKI"
make -s -C "$root" build certs >&2

if [ ! -f "$bench/node_modules/@parse/node-apn/package.json" ] \
   || [ "$bench/package-lock.json" -nt "$bench/node_modules/.package-lock.json" ]
then
    log "npm ci (bench/package-lock.json: @parse/node-apn)"
    (cd "$bench" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

rm -rf "$work"
mkdir -p "$work"
# a copy: others may rebuild build/objs while this runs
cp "$root/build/objs/ngx_http_timpush_module.so" "$work/timpush.so"
cp "$root/build/objs/ngx_http_timpush_mock_module.so" "$work/timpush_mock.so"


# ---- ports (127.0.0.1 only, unusual, checked free) ------------------------

port_free() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }

# cluster mode: a second simulator (48, 49), two more timpush instances
# (81, 82), six cluster nodes (60-65) and their cluster bus ports (70-75)
offsets="43 44 45 46 47 79 80"
if [ "$MODE" = cluster ]; then
    offsets+=" 48 49 81 82 $(seq -s' ' 60 65) $(seq -s' ' 70 75)"
fi

base=
for b in 18400 18500 18600 18700 18800 18900 19400 19500; do
    ok=1
    for o in $offsets; do
        port_free $((b + o)) || { ok=0; break; }
    done
    if (( ok )); then base=$b; break; fi
done
[ -n "$base" ] || die "no free port range found in 18400-19599"

SIM=$((base + 43))         # simulator, TLS + HTTP/2, with the log zone
SIMLOG=$((base + 44))      # the simulator's log location (plain HTTP)
SIMNOLOG=$((base + 45))    # a second simulator without any log zone
SIM1000=$((base + 46))     # a simulator allowing 1000 concurrent streams
SIM1000LOG=$((base + 47))
REDIS=$((base + 79))
API=$((base + 80))
SIM2=$((base + 48))        # cluster mode: the second instance's simulator
SIM2LOG=$((base + 49))
API2=$((base + 81))        # cluster mode: the two instances on the cluster
API3=$((base + 82))
CLUSTER_PORT0=$((base + 60))   # nodes 60-65, their bus 70-75
CLUSTER_BUS0=$((base + 70))


# ---- processes: all ours, stopped on exit ---------------------------------

declare -A pid_of=()

stop() {                    # stop <name>
    local p=${pid_of[$1]:-}
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "pid_of[$1]"
}

cleanup() {
    local n
    for n in "${!pid_of[@]}"; do
        stop "$n"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

wait_port() {               # wait_port <port> <name>
    local i
    for i in $(seq 100); do
        ss -Htln "sport = :$1" 2>/dev/null | grep -q . && return 0
        kill -0 "${pid_of[$2]}" 2>/dev/null || break
        sleep 0.05
    done
    die "$2 did not start listening on $1 (see $work/$2/)"
}

worker_of() {               # the one worker of an nginx we started
    local i w
    for i in $(seq 100); do
        w=$(pgrep -P "${pid_of[$1]}" | head -1 || true)
        [ -n "$w" ] && { echo "$w"; return 0; }
        sleep 0.05
    done
    die "no worker for $1"
}

start_redis() {
    mkdir -p "$work/redis"
    redis-server --bind 127.0.0.1 --port "$REDIS" --save '' --appendonly no \
        --dir "$work/redis" --logfile "$work/redis/redis.log" \
        --daemonize no >/dev/null &
    pid_of[redis]=$!
    wait_port "$REDIS" redis
}

http_common() {             # temp paths of an nginx prefix
    local d=$work/$1
    cat <<EOF
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
EOF
}

main_common() {             # main_common <name> <module .so>
    cat <<EOF
load_module $work/$2;
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
EOF
}

sim_conf() {                # sim_conf <name> <port> <log port or ""> [directives]
    main_common "$1" timpush_mock.so
    echo "http {"
    http_common "$1"
    cat <<EOF
    server {
        listen 127.0.0.1:$2 ssl http2;
        ssl_certificate        $certs/server.crt;
        ssl_certificate_key    $certs/server.key;
        ssl_verify_client      optional_no_ca;
        ssl_client_certificate $certs/ca.crt;
        keepalive_requests     1000000;
        ${4:-}

        location /3/device/ {
            timpush_apns_mock key=$KEY key_id=$KEY_ID team_id=$TEAM_ID
                              topic=$TOPIC;
        }
    }
EOF
    if [ -n "$3" ]; then
        cat <<EOF
    server {
        listen 127.0.0.1:$3;
        location = /mock/log {
            timpush_apns_mock_log size=64m;
        }
    }
EOF
    fi
    echo "}"
}

timpush_conf() {            # timpush_conf <name> <connections>
    main_common "$1" timpush.so
    echo "http {"
    http_common "$1"
    cat <<EOF
    ${TP_STORE:-timpush_redis 127.0.0.1:$REDIS prefix=bench timeout=${TP_TIMEOUT:-10s};}
    timpush_credential $BID key=$KEY key_id=$KEY_ID team_id=$TEAM_ID
                            topic=$TOPIC env=production;
    upstream apns_sim {
        server 127.0.0.1:${TP_SIM:-$SIM};
    }
    timpush_apns_upstream production apns_sim;
    timpush_apns_trusted_certificate $certs/ca.crt;
    timpush_apns_connections $2;
    timpush_apns_timeout ${TP_TIMEOUT:-30s};
    ${TP_EXTRA:-}

    server {
        listen 127.0.0.1:${TP_API:-$API};
        keepalive_requests 1000000;
        location /v1/ {
            client_max_body_size 10m;
            timpush_api;
        }
    }
}
EOF
}

start_nginx() {             # start_nginx <name> <port>; conf in $work/<name>.conf
    mkdir -p "$work/$1"
    "$NGINX" -p "$work/$1/" -c "$work/$1.conf" -e "$work/$1/error.log" -t -q \
        || die "nginx -t failed for $work/$1.conf"
    "$NGINX" -p "$work/$1/" -c "$work/$1.conf" -e "$work/$1/error.log" &
    pid_of[$1]=$!
    wait_port "$2" "$1"
}

start_timpush() {           # start_timpush <connections>
    stop timpush
    timpush_conf timpush "$1" > "$work/timpush.conf"
    start_nginx timpush "$API"
    TP_WORKER=$(worker_of timpush)
    TP_CONNS=$1
}


# ---- measurements ---------------------------------------------------------

median() {                  # numbers on stdin -> their median
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2];
        else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

cpu_ticks() {               # utime + stime of a process, in clock ticks
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
reset_hwm() { echo 5 > "/proc/$1/clear_refs"; }

log_count() {
    curl -sS "http://127.0.0.1:$SIMLOG/mock/log" \
        | { grep -o '"token":' || true; } | wc -l
}
log_clear() {
    curl -sS -o /dev/null -X DELETE "http://127.0.0.1:$SIMLOG/mock/log"
}

# one POST /v1/push to every user: sets FO_SECS and FO_SENT; with "check",
# also the simulator's log count (FO_LOGGED); the log is cleared after
fanout() {
    local t
    t=$(curl -sS -o "$work/fanout.json" -w '%{time_total}' -H 'Expect:' \
            -H 'Content-Type: application/json' \
            --data-binary @"${FO_BODY:-$work/fanout-body.json}" \
            "http://127.0.0.1:${FO_API:-$API}/v1/push")
    FO_SECS=$t
    FO_SENT=$({ grep -o '"sent":[0-9]*' "$work/fanout.json" || true; } \
              | head -1 | cut -d: -f2)
    FO_SENT=${FO_SENT:-0}
    if [ "${1:-}" = keep ]; then
        return 0                # the caller reads and clears the log
    fi
    if [ "${1:-}" = check ]; then
        FO_LOGGED=$(log_count)
        if [ "$FO_SENT" != "$USERS" ] || [ "$FO_LOGGED" != "$USERS" ]; then
            head -c 600 "$work/fanout.json" >&2; echo >&2
            die "fan-out: sent $FO_SENT, simulator logged $FO_LOGGED, expected $USERS"
        fi
    fi
    log_clear
}

h2load_once() {             # h2load_once <port>: sets H2_RATE
    local out=$work/h2load.out
    h2load -n "$USERS" -c 1 -m "${H2_STREAMS:-100}" -i "$work/uris-$1.txt" \
        -d "$work/payload.json" \
        -H "apns-topic: $TOPIC" -H 'apns-push-type: alert' \
        -H 'apns-priority: 10' \
        -H 'apns-id: 123e4567-e89b-12d3-a456-426614174000' \
        -H "authorization: bearer $JWT" > "$out" 2>&1 || true
    local ok
    ok=$(awk '/^status codes:/ { print $3 }' "$out")
    if [ "${ok:-0}" != "$USERS" ]; then
        cat "$out" >&2
        die "h2load: ${ok:-0} of $USERS answered 2xx"
    fi
    # "finished in 118.76ms, 84201.23 req/s, ..." -> the req/s figure
    H2_RATE=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$out")
}

peer_once() {               # sets PEER_SECS PEER_OK PEER_FAILED PEER_REASONS
    local j
    j=$(node "$bench/peer-node-apn.js" "$SIM" "$certs" "$USERS" \
            "$PAYLOAD_BYTES")
    PEER_SECS=$(node -e 'const j=JSON.parse(process.argv[1]);console.log(j.secs)' "$j")
    PEER_OK=$(node -e 'const j=JSON.parse(process.argv[1]);console.log(j.accepted)' "$j")
    PEER_FAILED=$(node -e 'const j=JSON.parse(process.argv[1]);console.log(j.failed)' "$j")
    PEER_REASONS=$(node -e 'const j=JSON.parse(process.argv[1]);
        console.log(Object.entries(j.reasons).map(([k,v])=>v+" "+k).join("; ")||"none")' "$j")
    PEER_LOGGED=$(log_count)
    log_clear
}


# ---- the cost of a msg_id --------------------------------------------------

# The same fan-out (2 connections) with a new msg_id each time (every device
# claimed, then marked: the dedup path's whole cost) and without, in
# alternating order, round by round.
declare -a fo_plain fo_msg pr_msg
# CPU time (clock ticks) of each kind of fan-out, all rounds: the gateway's
# worker, Redis, the simulator (what Apple would spend)
declare -A cpu_msg=([tp]=0 [rd]=0 [sim]=0) cpu_plain=([tp]=0 [rd]=0 [sim]=0)
msg_id_rounds() {
    local k which t_msg t_plain c0 r0 s0
    start_timpush 2
    fanout check                    # warm-up: connections made
    log "fan-out with a msg_id vs without: $RUNS rounds of $MSG_PAIRS pairs"
    for i in $(seq "$RUNS"); do
        t_msg=0; t_plain=0
        for k in $(seq "$MSG_PAIRS"); do
            sed "s/^{/{\"msg_id\":\"bench-$$-$i-$k\",/" "$work/fanout-body.json" \
                > "$work/fanout-msg.json"
            for which in $( (( (i + k) % 2 )) && echo "plain msg" || echo "msg plain"); do
                c0=$(cpu_ticks "$TP_WORKER"); s0=$(cpu_ticks "$SIM_WORKER")
                r0=$(cpu_ticks "${pid_of[redis]}")
                if [ "$which" = msg ]; then
                    FO_BODY=$work/fanout-msg.json fanout
                    t_msg=$(awk -v a="$t_msg" -v b="$FO_SECS" 'BEGIN { print a + b }')
                    cpu_msg[tp]=$(( cpu_msg[tp] + $(cpu_ticks "$TP_WORKER") - c0 ))
                    cpu_msg[sim]=$(( cpu_msg[sim] + $(cpu_ticks "$SIM_WORKER") - s0 ))
                    cpu_msg[rd]=$(( cpu_msg[rd] + $(cpu_ticks "${pid_of[redis]}") - r0 ))
                else
                    fanout
                    t_plain=$(awk -v a="$t_plain" -v b="$FO_SECS" 'BEGIN { print a + b }')
                    cpu_plain[tp]=$(( cpu_plain[tp] + $(cpu_ticks "$TP_WORKER") - c0 ))
                    cpu_plain[sim]=$(( cpu_plain[sim] + $(cpu_ticks "$SIM_WORKER") - s0 ))
                    cpu_plain[rd]=$(( cpu_plain[rd] + $(cpu_ticks "${pid_of[redis]}") - r0 ))
                fi
                [ "$FO_SENT" = "$USERS" ] || die "fan-out ($which): sent $FO_SENT of $USERS"
            done
        done
        fo_msg+=("$(awk -v n="$((USERS * MSG_PAIRS))" -v t="$t_msg" 'BEGIN { print n / t }')")
        fo_plain+=("$(awk -v n="$((USERS * MSG_PAIRS))" -v t="$t_plain" 'BEGIN { print n / t }')")
        # the same msg_id again: every recipient a duplicate, nothing sent
        FO_BODY=$work/fanout-msg.json fanout
        [ "$FO_SENT" = 0 ] || die "fan-out (msg_id again): sent $FO_SENT, expected 0"
        pr_msg+=("$(ratio "${fo_msg[-1]}" "${fo_plain[-1]}")")
        log "round $i: without msg_id ${fo_plain[-1]}/s, with ${fo_msg[-1]}/s; the same msg_id again: 0 sent"
    done
}


# The cost of a msg_id in CPU: the gateway's worker and Redis per
# notification, all the fan-outs of each kind (the simulator stands for
# Apple: its CPU is not the gateway's)
msg_id_cpu() {
    local n=$((USERS * MSG_PAIRS * RUNS)) hz
    hz=$(getconf CLK_TCK)
    CPU_MSG_US=$(awk -v t="$(( cpu_msg[tp] + cpu_msg[rd] ))" -v n="$n" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    CPU_PLAIN_US=$(awk -v t="$(( cpu_plain[tp] + cpu_plain[rd] ))" -v n="$n" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    CPU_MSG_R=$(ratio "$CPU_MSG_US" "$CPU_PLAIN_US")
}


# ---- start ----------------------------------------------------------------

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
stat_before=$(head -1 /proc/stat)

log "starting Redis :$REDIS, simulator :$SIM (log :$SIMLOG), simulator without log :$SIMNOLOG, timpush :$API"
start_redis
sim_conf sim "$SIM" "$SIMLOG" > "$work/sim.conf"
start_nginx sim "$SIM"
SIM_WORKER=$(worker_of sim)
sim_conf simnolog "$SIMNOLOG" "" > "$work/simnolog.conf"
start_nginx simnolog "$SIMNOLOG"
start_timpush 2

log "seeding $USERS users x 1 device (business_id $BID, token auth)"
node "$bench/seed.js" "$API" "$USERS" "$BID" >&2

# the fan-out body, h2load's URI lists and JWT
{
    printf '{"to":['
    seq 0 $((USERS - 1)) | sed 's/.*/"u&"/' | paste -sd,
    printf '],"elems":[{"type":"text","text":"hi"}]}'
} > "$work/fanout-body.json"

node -e '
const { token } = require(process.argv[1]);
const [port, n] = [process.argv[2], Number(process.argv[3])];
const l = [];
for (let i = 0; i < n; i++)
  l.push((i ? "" : `https://127.0.0.1:${port}`) + `/3/device/${token(i)}`);
console.log(l.join("\n"));' "$bench/tokens.js" "$SIM" "$USERS" \
    > "$work/uris-$SIM.txt"
sed "1s/:$SIM/:$SIMNOLOG/" "$work/uris-$SIM.txt" > "$work/uris-$SIMNOLOG.txt"
JWT=$(node "$bench/jwt.js" "$KEY" "$KEY_ID" "$TEAM_ID")

log_clear
log "warm-up fan-out (not counted); its payload becomes h2load's"
fanout check
curl -sS -o "$work/one.json" -H 'Expect:' \
    -d "{\"to\":\"u0\",\"elems\":[{\"type\":\"text\",\"text\":\"hi\"}]}" \
    "http://127.0.0.1:$API/v1/push"
curl -sS "http://127.0.0.1:$SIMLOG/mock/log" | node -e '
let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
  const p = JSON.parse(s).notifications[0].payload;
  process.stdout.write(JSON.stringify(p)); });' > "$work/payload.json"
log_clear
PAYLOAD_BYTES=$(stat -c %s "$work/payload.json")
log "payload: $(cat "$work/payload.json") ($PAYLOAD_BYTES bytes)"


# ---- cluster mode: the fan-out on a Redis Cluster, one and two instances --

# A Redis Cluster of 3 masters and 3 replicas on 127.0.0.1 (DESIGN 15),
# each node its own redis-server, no persistence, its bus on a port of ours
declare -a cl_ports cl_masters cl_replicas
start_cluster() {
    local k p i ok seeds=()
    for k in 0 1 2 3 4 5; do
        p=$((CLUSTER_PORT0 + k))
        cl_ports+=("$p")
        seeds+=("127.0.0.1:$p")
        mkdir -p "$work/node$p"
        redis-server --bind 127.0.0.1 --port "$p" --cluster-enabled yes \
            --cluster-port $((CLUSTER_BUS0 + k)) \
            --cluster-config-file "$work/node$p/nodes.conf" \
            --save '' --appendonly no --dir "$work/node$p" \
            --logfile "$work/node$p/redis.log" --daemonize no >/dev/null &
        pid_of[node$p]=$!
    done
    for p in "${cl_ports[@]}"; do
        wait_port "$p" "node$p"
    done
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 \
        --cluster-yes > "$work/cluster-create.log" 2>&1 \
        || { cat "$work/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
    # every node: cluster_state:ok; every replica: its link to its master up
    for i in $(seq 300); do
        ok=1
        for p in "${cl_ports[@]}"; do
            redis-cli -p "$p" CLUSTER INFO | grep -q '^cluster_state:ok' \
                || { ok=0; break; }
            if [ "$(redis-cli -p "$p" ROLE | head -1)" = slave ]; then
                redis-cli -p "$p" INFO replication \
                    | grep -q '^master_link_status:up' || { ok=0; break; }
            fi
        done
        (( ok )) && break
        sleep 0.1
    done
    (( ok )) || die "the cluster is not ok after 30 s (see $work/node*/redis.log)"
    redis-cli --cluster check "${seeds[0]}" > "$work/cluster-check.log" 2>&1 \
        && grep -q 'All 16384 slots covered' "$work/cluster-check.log" \
        || { cat "$work/cluster-check.log" >&2; die "redis-cli --cluster check failed"; }
    for p in "${cl_ports[@]}"; do
        if [ "$(redis-cli -p "$p" ROLE | head -1)" = master ]; then
            cl_masters+=("$p")
        else
            cl_replicas+=("$p")
        fi
    done
    (( ${#cl_masters[@]} == 3 && ${#cl_replicas[@]} == 3 )) \
        || die "cluster: ${#cl_masters[@]} masters, ${#cl_replicas[@]} replicas"
}

# cmdstats <port>...: INFO commandstats summed over those nodes, one line:
# "<command> <calls> calls, <usec> µs; ...", and for evalsha the users per
# call and its µs per notification of one fan-out
cmdstats() {
    local p
    for p in "$@"; do
        redis-cli -p "$p" INFO commandstats
    done | tr -d '\r' | awk -F'[:,=]' -v n="$USERS" '
        /^cmdstat_/ { k = $1; sub(/^cmdstat_/, "", k); c[k] += $3; u[k] += $5 }
        END {
            for (k in c) {
                if (k ~ /^config/ || k == "replconf") continue
                s = s sep k " " c[k] " calls, " u[k] " µs"; sep = "; "
            }
            if (c["evalsha"])
                s = s sep sprintf("evalsha: %.1f users per call, %.2f µs per notification (its time includes the commands the script calls)",
                                  n / c["evalsha"], u["evalsha"] / n)
            print s
        }'
}

nodes_ticks() {             # nodes_ticks <port>...: their CPU, clock ticks
    local p t=0
    for p in "$@"; do
        t=$((t + $(cpu_ticks "${pid_of[node$p]}")))
    done
    echo "$t"
}

# Two fan-outs at once, the same body to both instances on the cluster, in
# one curl process (-Z): both transfers start in the same loop iteration.
# Sets FP_SECS (the later to finish: the wall time of the pair), FP_A, FP_B
# (each one's time) and checks that each answered "sent":USERS.
fanout_pair() {
    local out h=(-H 'Expect:' -H 'Content-Type: application/json')
    out=$(curl -sS --no-progress-meter -Z --parallel-immediate \
            "${h[@]}" -o "$work/fanout-a.json" -w 'a %{time_total}\n' \
            --data-binary @"$work/fanout-body.json" \
            "http://127.0.0.1:$API2/v1/push" --next -sS --no-progress-meter \
            "${h[@]}" -o "$work/fanout-b.json" -w 'b %{time_total}\n' \
            --data-binary @"$work/fanout-body.json" \
            "http://127.0.0.1:$API3/v1/push")
    FP_A=$(awk '$1 == "a" { print $2 }' <<< "$out")
    FP_B=$(awk '$1 == "b" { print $2 }' <<< "$out")
    FP_SECS=$(awk -v a="$FP_A" -v b="$FP_B" 'BEGIN { print (a > b ? a : b) }')
    grep -q "\"sent\":$USERS[,}]" "$work/fanout-a.json" \
        || die "fan-out pair, instance 1: $(head -c 300 "$work/fanout-a.json")"
    grep -q "\"sent\":$USERS[,}]" "$work/fanout-b.json" \
        || die "fan-out pair, instance 2: $(head -c 300 "$work/fanout-b.json")"
    log_clear
    SIMLOG=$SIM2LOG log_clear
}

if [ "$MODE" = cluster ]; then
    log "starting a Redis Cluster (3 masters, 3 replicas) on :$CLUSTER_PORT0-$((CLUSTER_PORT0 + 5)), bus :$CLUSTER_BUS0-$((CLUSTER_BUS0 + 5))"
    start_cluster
    log "masters: ${cl_masters[*]}; replicas: ${cl_replicas[*]}"

    # CPU of the idle cluster (cron, bus pings), 3 s: the background that
    # the per-notification figures below include
    r0=$(nodes_ticks "${cl_ports[@]}"); s0=$(cpu_ticks "${pid_of[redis]}")
    sleep 3
    CL_IDLE=$(( $(nodes_ticks "${cl_ports[@]}") - r0 ))
    RD_IDLE=$(( $(cpu_ticks "${pid_of[redis]}") - s0 ))

    # the second instance's own simulator: Apple is not one process, and
    # one simulator worker is about the limit of one instance already
    sim_conf sim2 "$SIM2" "$SIM2LOG" > "$work/sim2.conf"
    start_nginx sim2 "$SIM2"
    SIM2_WORKER=$(worker_of sim2)

    # the seeds: the masters (any node would do)
    cl_store="timpush_redis_cluster $(printf '127.0.0.1:%s ' "${cl_masters[@]}")prefix=bench timeout=10s;"
    TP_STORE=$cl_store TP_API=$API2 timpush_conf tpc1 2 > "$work/tpc1.conf"
    start_nginx tpc1 "$API2"
    TPC1_WORKER=$(worker_of tpc1)
    TP_STORE=$cl_store TP_API=$API3 TP_SIM=$SIM2 timpush_conf tpc2 2 \
        > "$work/tpc2.conf"
    start_nginx tpc2 "$API3"
    TPC2_WORKER=$(worker_of tpc2)

    log "seeding $USERS users x 1 device on the cluster, through instance 1 (:$API2)"
    t0=$(date +%s%N)
    node "$bench/seed.js" "$API2" "$USERS" "$BID" >&2
    SEED_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
    CL_KEYS=$(for p in "${cl_masters[@]}"; do redis-cli -p "$p" DBSIZE; done \
              | paste -sd/)
    log "keys per master: $CL_KEYS (seeded in $SEED_MS ms)"

    log "warm-up (not counted): a checked fan-out through each instance, one pair"
    FO_API=$API2 fanout check
    FO_API=$API3 SIMLOG=$SIM2LOG fanout check
    fanout_pair

    # each kind: rates; CPU ticks of Redis (single / all cluster nodes /
    # the masters alone), of the timpush workers, of the simulators; wall
    declare -a fo_single fo_cl fo_pair fo_pa fo_pb pr_cl pr_pair
    declare -A cpu_rd=() cpu_rm=() cpu_tp=() cpu_sim=() cpu_wall=()
    for k in single cl pair; do
        cpu_rd[$k]=0; cpu_rm[$k]=0; cpu_tp[$k]=0; cpu_sim[$k]=0; cpu_wall[$k]=0
    done
    # each round: CLUSTER_REPEAT fan-outs of each kind, interleaved, the
    # order rotating; a kind's rate in the round = its notifications / its
    # summed time (one fan-out's time moves a lot on this shared machine)
    orders=("single cl pair" "cl pair single" "pair single cl")
    add() { awk -v a="$1" -v b="$2" 'BEGIN { print a + b }'; }
    log "the fan-out on a single Redis, on the cluster, and two at once on the cluster: $RUNS rounds of $CLUSTER_REPEAT of each"
    declare -A t_round=()
    for i in $(seq "$RUNS"); do
        t_round=([single]=0 [cl]=0 [pair]=0 [pa]=0 [pb]=0)
        for j in $(seq "$CLUSTER_REPEAT"); do
        for k in ${orders[$(( (i + j) % 3 ))]}; do
            if [ "$k" = single ]; then
                rd="${pid_of[redis]}"
                r0=$(cpu_ticks "$rd"); m0=$r0
                c0=$(cpu_ticks "$TP_WORKER"); s0=$(cpu_ticks "$SIM_WORKER")
                fanout
                [ "$FO_SENT" = "$USERS" ] || die "fan-out (single Redis): sent $FO_SENT of $USERS"
                r1=$(cpu_ticks "$rd"); m1=$r1
                c1=$(cpu_ticks "$TP_WORKER"); s1=$(cpu_ticks "$SIM_WORKER")
                secs=$FO_SECS
            elif [ "$k" = cl ]; then
                r0=$(nodes_ticks "${cl_ports[@]}"); m0=$(nodes_ticks "${cl_masters[@]}")
                c0=$(cpu_ticks "$TPC1_WORKER"); s0=$(cpu_ticks "$SIM_WORKER")
                FO_API=$API2 fanout
                [ "$FO_SENT" = "$USERS" ] || die "fan-out (cluster): sent $FO_SENT of $USERS"
                r1=$(nodes_ticks "${cl_ports[@]}"); m1=$(nodes_ticks "${cl_masters[@]}")
                c1=$(cpu_ticks "$TPC1_WORKER"); s1=$(cpu_ticks "$SIM_WORKER")
                secs=$FO_SECS
            else
                r0=$(nodes_ticks "${cl_ports[@]}"); m0=$(nodes_ticks "${cl_masters[@]}")
                c0=$(( $(cpu_ticks "$TPC1_WORKER") + $(cpu_ticks "$TPC2_WORKER") ))
                s0=$(( $(cpu_ticks "$SIM_WORKER") + $(cpu_ticks "$SIM2_WORKER") ))
                fanout_pair
                r1=$(nodes_ticks "${cl_ports[@]}"); m1=$(nodes_ticks "${cl_masters[@]}")
                c1=$(( $(cpu_ticks "$TPC1_WORKER") + $(cpu_ticks "$TPC2_WORKER") ))
                s1=$(( $(cpu_ticks "$SIM_WORKER") + $(cpu_ticks "$SIM2_WORKER") ))
                t_round[pa]=$(add "${t_round[pa]}" "$FP_A")
                t_round[pb]=$(add "${t_round[pb]}" "$FP_B")
                secs=$FP_SECS
            fi
            t_round[$k]=$(add "${t_round[$k]}" "$secs")
            cpu_rd[$k]=$(( cpu_rd[$k] + r1 - r0 )); cpu_rm[$k]=$(( cpu_rm[$k] + m1 - m0 ))
            cpu_tp[$k]=$(( cpu_tp[$k] + c1 - c0 )); cpu_sim[$k]=$(( cpu_sim[$k] + s1 - s0 ))
            cpu_wall[$k]=$(awk -v a="${cpu_wall[$k]}" -v s="$secs" 'BEGIN { print a + s * 1000 }')
        done
        done
        n=$((USERS * CLUSTER_REPEAT))
        fo_single+=("$(awk -v n="$n" -v t="${t_round[single]}" 'BEGIN { print n / t }')")
        fo_cl+=("$(awk -v n="$n" -v t="${t_round[cl]}" 'BEGIN { print n / t }')")
        fo_pair+=("$(awk -v n="$((2 * n))" -v t="${t_round[pair]}" 'BEGIN { print n / t }')")
        fo_pa+=("$(awk -v n="$n" -v t="${t_round[pa]}" 'BEGIN { print n / t }')")
        fo_pb+=("$(awk -v n="$n" -v t="${t_round[pb]}" 'BEGIN { print n / t }')")
        pr_cl+=("$(ratio "${fo_cl[-1]}" "${fo_single[-1]}")")
        pr_pair+=("$(ratio "${fo_pair[-1]}" "${fo_single[-1]}")")
        log "round $i: single Redis ${fo_single[-1]}/s; cluster ${fo_cl[-1]}/s; two at once ${fo_pair[-1]}/s together (${fo_pa[-1]}/s and ${fo_pb[-1]}/s)"
    done

    # Redis's commands for one more fan-out of each kind, as it counts them
    # (INFO commandstats): the calls, and the time spent in commands
    log "Redis INFO commandstats of one fan-out on the single Redis, one on the cluster"
    redis-cli -p "$REDIS" CONFIG RESETSTAT >/dev/null
    fanout
    [ "$FO_SENT" = "$USERS" ] || die "fan-out (single Redis): sent $FO_SENT of $USERS"
    CS_S=$(cmdstats "$REDIS")
    for p in "${cl_ports[@]}"; do
        redis-cli -p "$p" CONFIG RESETSTAT >/dev/null
    done
    FO_API=$API2 fanout
    [ "$FO_SENT" = "$USERS" ] || die "fan-out (cluster): sent $FO_SENT of $USERS"
    CS_C=$(cmdstats "${cl_masters[@]}")
    CS_CR=$(cmdstats "${cl_replicas[@]}")

    TP_ERRORS=$(cat "$work"/timpush/error.log "$work"/tpc1/error.log \
                    "$work"/tpc2/error.log \
                | grep -c '\[\(error\|crit\|alert\|emerg\)\]' || true)
    SIM_ERRORS=$(cat "$work"/sim/error.log "$work"/sim2/error.log \
                 | grep -c '\[\(error\|crit\|alert\|emerg\)\]' || true)
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)

    med() { printf '%s\n' "$@" | median; }
    hz=$(getconf CLK_TCK)
    us_per() {              # us_per <ticks> <notifications>: µs each
        awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'
    }
    share() {               # share <ticks> <wall ms>: % of one core
        awk -v t="$1" -v w="$2" -v hz="$hz" 'BEGIN { printf "%.0f", (w > 0 ? t / hz * 1e5 / w : 0) }'
    }
    N1=$((RUNS * CLUSTER_REPEAT * USERS)); N2=$((2 * N1))
    FS=$(med "${fo_single[@]}"); FC=$(med "${fo_cl[@]}"); FP=$(med "${fo_pair[@]}")
    FPA=$(med "${fo_pa[@]}"); FPB=$(med "${fo_pb[@]}")
    R_CL=$(ratio "$FC" "$FS"); P_CL=$(med "${pr_cl[@]}")
    R_PAIR=$(ratio "$FP" "$FS"); P_PAIR=$(med "${pr_pair[@]}")
    R_PAIRCL=$(ratio "$FP" "$FC")
    U_S=$(us_per "${cpu_rd[single]}" "$N1"); U_C=$(us_per "${cpu_rd[cl]}" "$N1")
    U_CM=$(us_per "${cpu_rm[cl]}" "$N1"); U_P=$(us_per "${cpu_rd[pair]}" "$N2")
    U_PM=$(us_per "${cpu_rm[pair]}" "$N2")
    T_S=$(us_per "${cpu_tp[single]}" "$N1"); T_C=$(us_per "${cpu_tp[cl]}" "$N1")
    T_P=$(us_per "${cpu_tp[pair]}" "$N2")
    cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)

    {
    cat <<EOF
# timpush on a Redis Cluster (bench/run.sh cluster)

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); \`bench/run.sh cluster\`, BENCH_RUNS=$RUNS
- machine: $(nproc) CPUs, $cpu_model; $(uname -sr); $("$NGINX" -v 2>&1 | sed 's/.*: //'); $(redis-server --version | cut -d' ' -f1-3)
- load average (1, 5, 15 min) before: $load_before; after: $load_after
- the cluster: 3 masters, 3 replicas (redis-cli --cluster create --cluster-replicas 1), no persistence, all on 127.0.0.1; the gateways' seeds: the masters; keys per master after seeding: $CL_KEYS; $USERS users x 1 device seeded through the gateway in $SEED_MS ms
- each timpush instance: its own nginx, one worker, \`timpush_apns_connections 2\`, its own simulator (one worker, log on); single Redis: the same instance set-up on one redis-server
- every rate is the **median of $RUNS rounds**; each round $CLUSTER_REPEAT fan-outs of each kind, interleaved (the order rotating), a kind's rate = its notifications / its summed time; CPU per notification: all the counted fan-outs of a kind, utime + stime from /proc (clock ticks of $((1000 / hz)) ms), over their notifications

| measure | median of $RUNS | ratio / detail |
|---|---:|---|
| fan-out, one instance, **single Redis** (one POST /v1/push to $USERS users) | $(fmt "$FS") notif/s | reference of this run |
| fan-out, one instance, **Redis Cluster** | $(fmt "$FC") notif/s | **$R_CL × single Redis**; median of the per-round ratios $P_CL |
| **two instances at once** on the cluster (each a POST /v1/push to all $USERS users, started together; $((2 * USERS)) notifications / the later answer's time) | $(fmt "$FP") notif/s together | **$R_PAIR × single Redis** (per-round median $P_PAIR), $R_PAIRCL × one instance on the cluster; each instance alone: $(fmt "$FPA")/s and $(fmt "$FPB")/s |
| Redis CPU per notification, single Redis | $U_S µs | ${cpu_rd[single]} ticks over $N1 notifications; $(share "${cpu_rd[single]}" "${cpu_wall[single]}")% of a core during the fan-outs |
| Redis CPU per notification, cluster, one instance (all 6 nodes; the 3 masters) | $U_C µs | masters $U_CM µs; ${cpu_rd[cl]} ticks over $N1 notifications; the nodes together $(share "${cpu_rd[cl]}" "${cpu_wall[cl]}")% of a core |
| Redis CPU per notification, cluster, two instances at once (all 6 nodes; the 3 masters) | $U_P µs | masters $U_PM µs; ${cpu_rd[pair]} ticks over $N2 notifications; the nodes together $(share "${cpu_rd[pair]}" "${cpu_wall[pair]}")% of a core |
| timpush worker CPU per notification: single Redis / cluster / two at once | $T_S / $T_C / $T_P µs | the simulators (not counted, Apple's part): ${cpu_sim[single]} / ${cpu_sim[cl]} / ${cpu_sim[pair]} ticks |

Redis's own count of one more fan-out (\`INFO commandstats\`, time inside commands only): single Redis: $CS_S. The cluster's masters together: $CS_C. Its replicas together: $CS_CR.

Idle Redis, for scale (3 s before the rounds): the 6 cluster nodes used $CL_IDLE clock ticks of CPU together (cron, cluster bus), the single Redis $RD_IDLE; the per-notification figures include that background over their wall time ($(fmt "${cpu_wall[single]}") / $(fmt "${cpu_wall[cl]}") / $(fmt "${cpu_wall[pair]}") ms in all).

Every counted fan-out answered \`"sent":$USERS\` (each of a pair too); each instance's first (warm-up) fan-out was checked against its simulator's log. Error-log lines (error and worse) during the run: timpush (3 instances) $TP_ERRORS, simulators $SIM_ERRORS.

All rounds:
- single Redis: ${fo_single[*]}
- cluster, one instance: ${fo_cl[*]}; per-round ratio to single: ${pr_cl[*]}
- cluster, two at once, together: ${fo_pair[*]}; per-round ratio to single: ${pr_pair[*]}; instance 1: ${fo_pa[*]}; instance 2: ${fo_pb[*]}
EOF
    } > "$work/cluster-results.md"
    cat "$work/cluster-results.md"
    exit 0
fi


# ---- msg_id mode: its cost alone, printed, nothing written ----------------

if [ "$MODE" = msg_id ]; then
    msg_id_rounds
    # Redis's own time for one fan-out of each kind (INFO commandstats)
    k=0
    for which in plain msg plain msg plain msg; do
        k=$((k + 1))
        redis-cli -p "$REDIS" CONFIG RESETSTAT >/dev/null
        c0=$(cpu_ticks "$TP_WORKER"); s0=$(cpu_ticks "$SIM_WORKER")
        r0=$(cpu_ticks "${pid_of[redis]}")
        if [ "$which" = msg ]; then
            sed "s/^{/{\"msg_id\":\"bench-$$-stat-$k\",/" "$work/fanout-body.json" \
                > "$work/fanout-msg.json"
            FO_BODY=$work/fanout-msg.json fanout
        else
            fanout
        fi
        echo "CPU ticks (10 ms) of one fan-out $which: timpush $(( $(cpu_ticks "$TP_WORKER") - c0 )), simulator $(( $(cpu_ticks "$SIM_WORKER") - s0 )), Redis $(( $(cpu_ticks "${pid_of[redis]}") - r0 ))"
        echo "Redis, one fan-out $which: $(redis-cli -p "$REDIS" INFO commandstats \
            | tr -d '\r' | grep -v '^#' | grep . | cut -d, -f1-3 | paste -sd' ')"
    done
    echo "with a msg_id: ${fo_msg[*]}"
    echo "without:       ${fo_plain[*]}"
    echo "ratio per round: ${pr_msg[*]}; median $(printf '%s\n' "${pr_msg[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
    msg_id_cpu
    echo "CPU of all the fan-outs, ticks (10 ms), with / without a msg_id: timpush ${cpu_msg[tp]} / ${cpu_plain[tp]}, Redis ${cpu_msg[rd]} / ${cpu_plain[rd]}, simulator ${cpu_msg[sim]} / ${cpu_plain[sim]}"
    echo "CPU per notification, timpush + Redis: $CPU_MSG_US µs with, $CPU_PLAIN_US µs without: $CPU_MSG_R × (target ≤ 1.1)"
    exit 0
fi


# ---- profile mode -----------------------------------------------------------

if [ "$MODE" = profile ]; then
    prof=$work/profile
    mkdir -p "$prof"
    fanouts=${BENCH_PROFILE_FANOUTS:-5}

    redis-cli -p "$REDIS" CONFIG RESETSTAT >/dev/null
    for i in $(seq "$fanouts"); do fanout; done
    redis-cli -p "$REDIS" INFO commandstats > "$prof/redis-commandstats.txt"
    log "Redis, $fanouts fan-outs: $(grep -o 'cmdstat_evalsha:calls=[0-9]*,usec=[0-9]*,usec_per_call=[0-9.]*' "$prof/redis-commandstats.txt")"

    if perf record -e cpu-clock -o "$prof/probe.data" -- true >/dev/null 2>&1
    then
        log "perf: cpu-clock samples of timpush, simulator, Redis over $fanouts fan-outs"
        perf record -e cpu-clock -F 2999 --call-graph dwarf,16384 \
            -p "$TP_WORKER,$SIM_WORKER,${pid_of[redis]}" -o "$prof/perf.data" \
            > "$prof/perf-record.log" 2>&1 &
        pid_of[perf]=$!
        sleep 0.5
        for i in $(seq "$fanouts"); do fanout; done
        kill -INT "${pid_of[perf]}"; wait "${pid_of[perf]}" || true
        unset "pid_of[perf]"
        perf report -i "$prof/perf.data" --no-children --sort pid -q -g none \
            > "$prof/perf-by-process.txt" 2>/dev/null
        for w in timpush:$TP_WORKER simulator:$SIM_WORKER \
                 redis:${pid_of[redis]}
        do
            perf report -i "$prof/perf.data" --pid "${w#*:}" \
                --percentage relative --children --sort dso,sym -q -g none \
                --percent-limit 0.5 > "$prof/perf-${w%%:*}.txt" 2>/dev/null
        done
        log "perf reports: $prof/perf-*.txt (perf report -i $prof/perf.data for more)"
    else
        log "perf record does not work here: perf skipped"
    fi

    # who ran when: CPU share of each process per 10 ms of one fan-out
    # (this is what showed the simulator starved while Redis ran ahead)
    if perf sched record -o "$prof/probe-sched.data" -- true >/dev/null 2>&1
    then
        perf sched record -o "$prof/sched.data" -- sleep 30 \
            > "$prof/sched-record.log" 2>&1 &
        pid_of[perf]=$!
        sleep 0.5
        fanout
        kill -INT "${pid_of[perf]}"; wait "${pid_of[perf]}" || true
        unset "pid_of[perf]"
        perf sched timehist -i "$prof/sched.data" 2>/dev/null | awk \
            -v tp="$TP_WORKER" -v sim="$SIM_WORKER" -v rd="${pid_of[redis]}" '
            function who(t) {
                if (t ~ "\\[" tp "\\]") return "timpush"
                if (t ~ "\\[" sim "\\]") return "simulator"
                if (t ~ "\\[" rd "\\]") return "redis"
                return ""
            }
            NF >= 6 && $1 ~ /^[0-9.]+$/ {
                n = who($3); if (n == "") next
                e = $1 * 1000; b = e - $6
                if (t0 == "" && n == "timpush" && $6 > 1) t0 = b
                if (t0 == "") next
                for (x = b; x < e; ) {
                    k = int((x - t0) / 10); y = t0 + (k + 1) * 10
                    if (y > e) y = e
                    if (k >= 0) { u[n, k] += y - x; if (k > m) m = k }
                    x = y
                }
            }
            END {
                print "% of a core per 10 ms of one fan-out, from its first long timpush run"
                split("timpush simulator redis", N, " ")
                for (i = 1; i <= 3; i++) {
                    printf "%-10s", N[i]
                    for (k = 0; k <= m && k < 60; k++) printf " %3d", u[N[i], k] * 10
                    print ""
                }
            }' > "$prof/sched-timeline.txt"
        log "perf sched: $prof/sched-timeline.txt"
        cat "$prof/sched-timeline.txt" >&2
    else
        log "perf sched does not work here: timeline skipped"
    fi

    if command -v valgrind >/dev/null 2>&1; then
        log "callgrind: one fan-out through a timpush nginx under valgrind (slow)"
        stop timpush
        TP_TIMEOUT=300s timpush_conf timpush 2 > "$work/timpush.conf"
        mkdir -p "$work/timpush"
        valgrind --tool=callgrind --callgrind-out-file="$prof/callgrind.out" \
            "$NGINX" -p "$work/timpush/" -c "$work/timpush.conf" \
            -e "$work/timpush/error.log" -g 'master_process off;' \
            > "$prof/valgrind.log" 2>&1 &
        pid_of[timpush]=$!
        wait_port "$API" timpush
        fanout check                # warm-up: connections, JWT, pools
        log "callgrind: warm-up took ${FO_SECS}s; now the measured fan-out"
        callgrind_control -z "${pid_of[timpush]}" >/dev/null 2>&1 || true
        fanout check
        callgrind_control -d "${pid_of[timpush]}" >/dev/null 2>&1 || true
        stop timpush
        # callgrind.out.1: the dump of the measured fan-out (callgrind.out
        # is the rest, written at exit)
        f=$prof/callgrind.out.1
        [ -f "$f" ] || f=$prof/callgrind.out
        callgrind_annotate --inclusive=yes --threshold=100 "$f" \
            > "$prof/callgrind-inclusive.txt" 2>/dev/null || true
        callgrind_annotate --threshold=100 "$f" \
            > "$prof/callgrind-self.txt" 2>/dev/null || true
        log "callgrind reports: $prof/callgrind-*.txt ($f; instructions of one fan-out of $USERS)"
    else
        log "valgrind is not installed: callgrind skipped"
    fi
    exit 0
fi


# ---- fan-out vs h2load vs node-apn, interleaved ---------------------------

declare -a fo2 fo1 h2on h2off h2on1 peer peer_total peer_ok peer_lost \
    peer_logged pr_h2 pr_h21 pr_peer

run_round_main() {
    local i=$1 c0 c1 s0 s1 r0 r1 w0 w1

    # log off first in even rounds: neither simulator always goes first
    if (( i % 2 == 0 )); then
        h2load_once "$SIMNOLOG"; h2off+=("$H2_RATE")
    fi
    s0=$(cpu_ticks "$SIM_WORKER"); w0=$(date +%s%N)
    h2load_once "$SIM";      h2on+=("$H2_RATE")
    w1=$(date +%s%N); s1=$(cpu_ticks "$SIM_WORKER")
    CPU_H2SIM=$((CPU_H2SIM + s1 - s0)); CPU_H2WALL=$((CPU_H2WALL + (w1 - w0) / 1000000))
    log_clear
    if (( i % 2 == 1 )); then
        h2load_once "$SIMNOLOG"; h2off+=("$H2_RATE")
    fi

    c0=$(cpu_ticks "$TP_WORKER"); s0=$(cpu_ticks "$SIM_WORKER")
    r0=$(cpu_ticks "${pid_of[redis]}"); w0=$(date +%s%N)
    fanout
    w1=$(date +%s%N)
    c1=$(cpu_ticks "$TP_WORKER"); s1=$(cpu_ticks "$SIM_WORKER")
    r1=$(cpu_ticks "${pid_of[redis]}")
    # counted runs check "sent"; the log count is checked after the rounds
    # (reading a 10,000-entry log is not part of any timing)
    [ "$FO_SENT" = "$USERS" ] || die "fan-out: sent $FO_SENT of $USERS"
    fo2+=("$(awk -v n="$USERS" -v t="$FO_SECS" 'BEGIN { print n / t }')")
    pr_h2+=("$(ratio "${fo2[-1]}" "${h2on[-1]}")")
    CPU_TP=$((CPU_TP + c1 - c0)); CPU_SIM=$((CPU_SIM + s1 - s0))
    CPU_REDIS=$((CPU_REDIS + r1 - r0)); CPU_WALL=$((CPU_WALL + (w1 - w0) / 1000000))

    peer_once
    sleep 0.5                   # node's exit and the simulator's clean-up
    peer+=("$(awk -v n="$PEER_OK" -v t="$PEER_SECS" 'BEGIN { print n / t }')")
    peer_total+=("$(awk -v n="$USERS" -v t="$PEER_SECS" 'BEGIN { print n / t }')")
    peer_ok+=("$PEER_OK"); peer_lost+=("$((USERS - PEER_OK))")
    peer_logged+=("$PEER_LOGGED")
    pr_peer+=("$(ratio "${fo2[-1]}" "${peer[-1]}")")
    log "round $i: h2load ${h2on[-1]}/s (log off ${h2off[-1]}/s), timpush ${fo2[-1]}/s (sent $FO_SENT), node-apn: $PEER_OK of $USERS confirmed (200) in ${PEER_SECS}s, simulator logged $PEER_LOGGED ($PEER_REASONS)"
    PEER_REASONS_ALL+="round $i: $PEER_REASONS"$'\n'
}

CPU_TP=0 CPU_SIM=0 CPU_REDIS=0 CPU_WALL=0 CPU_H2SIM=0 CPU_H2WALL=0
PEER_REASONS_ALL=
log "fan-out (timpush_apns_connections 2) vs h2load (log on/off) vs node-apn: $RUNS rounds"
for i in $(seq "$RUNS"); do
    run_round_main "$i"
done
log "a checked fan-out: sent, simulator log count, timeline"
t0=$(date +%s%3N)
fanout keep
t1=$(date +%s%3N)
curl -sS "http://127.0.0.1:$SIMLOG/mock/log" > "$work/log.json"
log_clear
TIMELINE=$(node -e '
const fs = require("fs");
const [file, t0, t1, n] = process.argv.slice(1);
const l = JSON.parse(fs.readFileSync(file)).notifications;
const t = l.map(x => x.time - t0).sort((a, b) => a - b);
const at = q => t[Math.min(t.length - 1, Math.floor(q * t.length))];
const conns = new Set(l.map(x => x.connection)).size;
console.log(`${l.length} logged over ${conns} connection(s); after the request started: first notification at ${t[0]} ms, 10% at ${at(0.1)} ms, half at ${at(0.5)} ms, 90% at ${at(0.9)} ms, last at ${t[t.length - 1]} ms; the answer was complete at ${t1 - t0} ms`);
if (l.length !== Number(n)) process.exit(1);' "$work/log.json" "$t0" "$t1" "$USERS") \
    || die "checked fan-out: $TIMELINE"
[ "$FO_SENT" = "$USERS" ] || die "checked fan-out: sent $FO_SENT"
log "checked: sent $FO_SENT; $TIMELINE"

# another request while a fan-out runs: its Redis command must not wait
# behind the whole fan-out (a push reads its users a window at a time)
log "API requests during a fan-out: GET one user's devices, one after another"
during_args=()
for i in $(seq 50); do
    during_args+=(-o /dev/null "http://127.0.0.1:$API/v1/users/u5/devices")
done
( sleep 0.02; curl -sS -w '%{time_total}\n' "${during_args[@]}" ) \
    > "$work/during.txt" &
during_pid=$!
fanout check
wait "$during_pid" || die "the requests during the fan-out failed"
DURING=$(sort -g "$work/during.txt" | awk -v fo="$FO_SECS" '
    { v[NR] = $1 * 1000 }
    END { printf "p50 %.1f ms, max %.1f ms (%d requests on one connection, during a fan-out of %.0f ms)",
                 v[int((NR + 1) / 2)], v[NR], NR, fo * 1000 }')
D_MAX=$(sort -g "$work/during.txt" | tail -1 | awk '{ printf "%.1f", $1 * 1000 }')
log "during a fan-out: $DURING"

log "fan-out with timpush_apns_connections 1 vs h2load: $RUNS rounds"
start_timpush 1
fanout check                    # warm-up: connections made
for i in $(seq "$RUNS"); do
    h2load_once "$SIM"; h2on1+=("$H2_RATE"); log_clear
    fanout
    [ "$FO_SENT" = "$USERS" ] || die "fan-out: sent $FO_SENT of $USERS"
    fo1+=("$(awk -v n="$USERS" -v t="$FO_SECS" 'BEGIN { print n / t }')")
    pr_h21+=("$(ratio "${fo1[-1]}" "${h2on1[-1]}")")
    log "round $i: h2load ${h2on1[-1]}/s, timpush (1 connection) ${fo1[-1]}/s"
done


# ---- the cost of a msg_id --------------------------------------------------

msg_id_rounds


# ---- async: 202, then done ------------------------------------------------

# The same fan-out with "async": true, to a gateway consuming its own
# stream: how long the 202 takes, and how long until GET /v1/pushes/{id}
# says done (polled every 10 ms), beside the synchronous fan-out's time.
declare -a as_202 as_done as_sync
TP_EXTRA='timpush_async on; timpush_async_claim 60s;' start_timpush 2
fanout check                    # warm-up: connections made
sed 's/^{/{"async":true,/' "$work/fanout-body.json" > "$work/fanout-async.json"
log "async fan-out vs the synchronous one: $RUNS rounds"
for i in $(seq "$RUNS"); do
    fanout
    [ "$FO_SENT" = "$USERS" ] || die "fan-out: sent $FO_SENT of $USERS"
    as_sync+=("$(awk -v t="$FO_SECS" 'BEGIN { print t * 1000 }')")
    t0=$(date +%s%N)
    a202=$(curl -sS -o "$work/async.json" -w '%{time_total}' -H 'Expect:' \
               --data-binary @"$work/fanout-async.json" \
               "http://127.0.0.1:$API/v1/push")
    id=$(grep -o '"push_id":"[0-9-]*"' "$work/async.json" | cut -d'"' -f4)
    [ -n "$id" ] || die "async push: $(head -c 300 "$work/async.json")"
    while :; do
        curl -sS -o "$work/async-state.json" \
            "http://127.0.0.1:$API/v1/pushes/$id"
        grep -q '"state":"done"' "$work/async-state.json" && break
        (( ($(date +%s%N) - t0) / 1000000 < 120000 )) \
            || die "async push $id not done in 120 s"
        sleep 0.01
    done
    t1=$(date +%s%N)
    sent=$(grep -o '"sent":[0-9]*' "$work/async-state.json" | head -1 | cut -d: -f2)
    [ "$sent" = "$USERS" ] || die "async push $id: sent $sent of $USERS"
    log_clear
    as_202+=("$(awk -v t="$a202" 'BEGIN { print t * 1000 }')")
    as_done+=("$(( (t1 - t0) / 1000000 ))")
    log "round $i: sync ${as_sync[-1]} ms; async: 202 in ${as_202[-1]} ms, done in ${as_done[-1]} ms"
done
start_timpush 2


# ---- 1000 concurrent streams ----------------------------------------------

# nginx 1.22 leaks closed-stream nodes when more than ~223 streams close at
# once (ticket 1708, fixed in 1.23.0): http2_streams_index_size 16384
declare -a fo1000 h2on1000 pr_h21000
sim_conf sim1000 "$SIM1000" "$SIM1000LOG" \
    'http2_max_concurrent_streams 1000; http2_streams_index_size 16384;' \
    > "$work/sim1000.conf"
start_nginx sim1000 "$SIM1000"
sed "1s/:$SIM/:$SIM1000/" "$work/uris-$SIM.txt" > "$work/uris-$SIM1000.txt"
TP_SIM=$SIM1000 start_timpush 2
SIMLOG_SAVED=$SIMLOG; SIMLOG=$SIM1000LOG
fanout check                    # warm-up: connections made
log "fan-out to a simulator allowing 1000 streams vs h2load -m 1000: $RUNS rounds"
for i in $(seq "$RUNS"); do
    H2_STREAMS=1000 h2load_once "$SIM1000"; h2on1000+=("$H2_RATE"); log_clear
    fanout
    [ "$FO_SENT" = "$USERS" ] || die "fan-out: sent $FO_SENT of $USERS"
    fo1000+=("$(awk -v n="$USERS" -v t="$FO_SECS" 'BEGIN { print n / t }')")
    pr_h21000+=("$(ratio "${fo1000[-1]}" "${h2on1000[-1]}")")
    log "round $i: h2load (1000 streams) ${h2on1000[-1]}/s, timpush ${fo1000[-1]}/s"
done
SIMLOG=$SIMLOG_SAVED
stop sim1000


# ---- a peer that flaps SETTINGS on each rejected notification -------------

# Timpush::H2Peer (t/lib), a raw-frame HTTP/2 server in Perl, steady, then
# dropping MAX_CONCURRENT_STREAMS to 1 after each 410 and back to 1000
# after each 200 (as APNs is reported to): 5% of the tokens unregistered.
# The peer is slower than the simulator: the figure is the ratio.
log "fan-out against a peer that flaps SETTINGS, and the same peer steady: $RUNS rounds each"
H2PEER_BENCH_N=$USERS H2PEER_BENCH_ROUNDS=$RUNS "$root/t/run.sh" -v \
    "$root/t/h2peer/bench.pl" > "$work/flap.out" 2>&1 \
    || { cat "$work/flap.out" >&2; die "the flapping peer's bench failed"; }
FLAP_STEADY=$(sed -n 's/^# normal: median \([0-9]*\) .*/\1/p' "$work/flap.out")
FLAP=$(sed -n 's/^# settings_flap: median \([0-9]*\) .*/\1/p' "$work/flap.out")
FLAP_ROUNDS=$(grep -E '^# (normal|settings_flap) round' "$work/flap.out" \
              | sed 's/^# //; s/notifications in [0-9.]* s: //; s/;.*//' | paste -sd';' -)
log "flapping peer: $FLAP/s, steady: $FLAP_STEADY/s"


# ---- request rate: wrk ----------------------------------------------------

start_timpush 2
curl -sS -o "$work/wrk-one.json" -H 'Expect:' \
    -d '{"to":"wrk","elems":[{"type":"text","text":"hi"}]}' \
    "http://127.0.0.1:$API/v1/push"
grep -q '"sent":1' "$work/wrk-one.json" \
    || die "push to the wrk user failed: $(cat "$work/wrk-one.json")"

to_ms() {                   # "1.23ms" / "850.00us" / "1.02s" -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
        else print v }'
}

declare -a wrk_rps wrk_p50 wrk_p99
WRK_BAD=0
log "wrk: $RUNS runs of ${WRK_SECS}s, 1 thread, $WRK_CONNS connections"
for i in $(seq "$RUNS"); do
    wrk -t1 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency -s "$bench/wrk-push.lua" \
        "http://127.0.0.1:$API/v1/push" > "$work/wrk.out" 2>&1
    wrk_rps+=("$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk.out")")
    wrk_p50+=("$(to_ms "$(awk '$1 == "50%" { print $2 }' "$work/wrk.out")")")
    wrk_p99+=("$(to_ms "$(awk '$1 == "99%" { print $2 }' "$work/wrk.out")")")
    bad=$(awk '/Non-2xx/ { print $NF } /Socket errors/ { print 1 }' "$work/wrk.out" | head -1)
    WRK_BAD=$((WRK_BAD + ${bad:-0}))
    log "run $i: ${wrk_rps[-1]} req/s, p50 ${wrk_p50[-1]} ms, p99 ${wrk_p99[-1]} ms"
    log_clear
done
cp "$work/wrk.out" "$work/wrk-last.out"


# ---- memory ---------------------------------------------------------------

declare -a m_before m_peak m_warm m_after m_growth m_per m_maxpeak m_last
log "memory: $RUNS times: a fresh timpush worker, $WARM_FANOUTS warm-up fan-outs, then $MEM_FANOUTS fan-outs ($((MEM_FANOUTS * USERS)) notifications)"
for i in $(seq "$RUNS"); do
    start_timpush 2
    sleep 0.5
    before=$(rss_kib "$TP_WORKER")
    reset_hwm "$TP_WORKER"
    fanout
    peak=$(hwm_kib "$TP_WORKER")
    for _ in $(seq 2 "$WARM_FANOUTS"); do fanout; done
    maxpeak=$peak
    rss=()
    for k in $(seq "$MEM_FANOUTS"); do
        reset_hwm "$TP_WORKER"
        fanout
        [ "$FO_SENT" = "$USERS" ] || die "fan-out $k: sent $FO_SENT of $USERS"
        h=$(hwm_kib "$TP_WORKER")
        if (( h > maxpeak )); then maxpeak=$h; fi
        rss+=("$(rss_kib "$TP_WORKER")")
    done
    # RSS between fan-outs moves with malloc's trimming: compare the median
    # after the first 10 counted fan-outs with the median after the last 10
    k=$(( MEM_FANOUTS < 10 ? MEM_FANOUTS : 10 ))
    warm=$(printf '%s\n' "${rss[@]:0:k}" | median)
    after=$(printf '%s\n' "${rss[@]: -k}" | median)
    m_before+=("$before"); m_peak+=("$peak"); m_warm+=("$warm")
    m_after+=("$after"); m_growth+=("$(awk -v a="$after" -v w="$warm" 'BEGIN { print a - w }')")
    m_maxpeak+=("$maxpeak"); m_last+=("${rss[-1]}")
    m_per+=("$(awk -v p="$peak" -v b="$before" -v n="$USERS" \
                'BEGIN { print (p - b) * 1024 / n }')")
    log "run $i: RSS before $before KiB, first fan-out peak $peak KiB; after warm-up $warm KiB, after $((MEM_FANOUTS * USERS)) more $after KiB (medians of $k), last ${rss[-1]} KiB, peak of any fan-out $maxpeak KiB"
done
TP_ERRORS=$(grep -c '\[\(error\|crit\|alert\|emerg\)\]' "$work/timpush/error.log" || true)
SIM_ERRORS=$(grep -c '\[\(error\|crit\|alert\|emerg\)\]' "$work/sim/error.log" || true)

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# the machine's CPU time during the run: busy, idle, stolen by the host
CPU_USE=$(printf '%s\n%s\n' "$stat_before" "$(head -1 /proc/stat)" | awk '
    { u[NR] = $2 + $3 + $4 + $7 + $8; i[NR] = $5 + $6; s[NR] = $9 }
    END { t = (u[2] - u[1]) + (i[2] - i[1]) + (s[2] - s[1]);
          printf "busy %.0f%%, idle %.0f%%, stolen by the hypervisor %.1f%%",
                 (u[2] - u[1]) * 100 / t, (i[2] - i[1]) * 100 / t,
                 (s[2] - s[1]) * 100 / t }')


# ---- report ---------------------------------------------------------------

med() { printf '%s\n' "$@" | median; }

H2ON=$(med "${h2on[@]}");   H2OFF=$(med "${h2off[@]}")
H2ON1=$(med "${h2on1[@]}")
FO2=$(med "${fo2[@]}");     FO1=$(med "${fo1[@]}")
FO1000=$(med "${fo1000[@]}"); H2ON1000=$(med "${h2on1000[@]}")
R_H21000=$(ratio "$FO1000" "$H2ON1000"); P_H21000=$(med "${pr_h21000[@]}")
R_FLAP=$(ratio "$FLAP" "$FLAP_STEADY")
FOP=$(med "${fo_plain[@]}"); FOM=$(med "${fo_msg[@]}")
AS202=$(med "${as_202[@]}"); ASDONE=$(med "${as_done[@]}"); ASSYNC=$(med "${as_sync[@]}")
R_MSG=$(ratio "$FOM" "$FOP"); P_MSG=$(med "${pr_msg[@]}")
msg_id_cpu
PEER=$(med "${peer[@]}");   PEERT=$(med "${peer_total[@]}")
PEER_OK=$(med "${peer_ok[@]}"); PEER_LOST=$(med "${peer_lost[@]}")
PEER_LOGGED=$(med "${peer_logged[@]}")
WRPS=$(med "${wrk_rps[@]}"); WP50=$(med "${wrk_p50[@]}"); WP99=$(med "${wrk_p99[@]}")
MB=$(med "${m_before[@]}"); MP=$(med "${m_peak[@]}"); MW=$(med "${m_warm[@]}")
MA=$(med "${m_after[@]}");  MG=$(med "${m_growth[@]}"); MPER=$(med "${m_per[@]}")
MMAX=$(med "${m_maxpeak[@]}")

R_H2=$(ratio "$FO2" "$H2ON"); R_H21=$(ratio "$FO1" "$H2ON1")
P_H2=$(med "${pr_h2[@]}"); P_H21=$(med "${pr_h21[@]}"); P_PEER=$(med "${pr_peer[@]}")
R_PEER=$(ratio "$FO2" "$PEER"); R_PEERT=$(ratio "$FO2" "$PEERT")
R_LOG=$(ratio "$H2ON" "$H2OFF")

# verdict <a> <op> <b>: "held" when a op b
verdict() {
    if awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
            a += 0; b += 0
            exit !((op == ">=" && a >= b) || (op == "<=" && a <= b) \
                   || (op == "<" && a < b)) }'
    then echo held; else echo MISSED; fi
}
V_H2=$(verdict "$R_H2" ">=" 0.7)
V_PEER=$(verdict "$R_PEER" ">=" 3)
V_GROW=$(verdict "$MG" "<=" 1024)
V_PER=$(verdict "$MPER" "<" 4096)
V_MSG=$(verdict "$P_MSG" ">=" 0.9)

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
pct() { awk -v a="$1" -v w="$2" 'BEGIN { printf "%.0f", (w > 0 ? a * 100 / w : 0) }'; }
tick_ms=$((1000 / $(getconf CLK_TCK)))
H2SIM_PCT=$(pct $((CPU_H2SIM * tick_ms)) "$CPU_H2WALL")
H2SIM_NOTE=
if (( H2SIM_PCT >= 80 )); then
    H2SIM_NOTE=": h2load's figure is the single simulator worker's own limit on this machine"
fi

{
cat <<EOF
# timpush benchmark results

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- command: \`$command_line\` (bench/run.sh; BENCH_RUNS=$RUNS)
- machine: $(nproc) CPUs, $cpu_model; $(uname -sr); $("$NGINX" -v 2>&1 | sed 's/.*: //'); $(h2load --version | head -1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); node $(node -v), @parse/node-apn $(node -p "require('$bench/node_modules/@parse/node-apn/package.json').version")
- load average (1, 5, 15 min) before: $load_before; after: $load_after; CPU time of the whole machine during the run (both cores, all processes): $CPU_USE
- every figure is the **median of $RUNS runs**; timpush and the simulator each run one nginx worker; all on 127.0.0.1, token auth (ES256 JWT), payload $PAYLOAD_BYTES bytes: \`$(cat "$work/payload.json")\`

| measure | median of $RUNS | ratio / detail |
|---|---:|---|
| h2load → simulator, log on (1 connection, 100 streams, $USERS requests) | $(fmt "$H2ON") notif/s | reference for the fan-out |
| h2load → simulator, log off (no log zone) | $(fmt "$H2OFF") notif/s | log on / off = $R_LOG |
| timpush fan-out, \`timpush_apns_connections 2\` (one POST /v1/push to $USERS users) | $(fmt "$FO2") notif/s | **$R_H2 × h2load** (target ≥ 0.7: $V_H2); median of the per-round ratios $P_H2 |
| timpush fan-out, \`timpush_apns_connections 1\` | $(fmt "$FO1") notif/s | $R_H21 × h2load measured in the same rounds ($(fmt "$H2ON1")/s); median of the per-round ratios $P_H21 |
| timpush fan-out **with a \`msg_id\`** (a new one each time: every device claimed, then marked; each round $MSG_PAIRS fan-outs of each kind, interleaved) | $(fmt "$FOM") notif/s | **$P_MSG × the same fan-out without** (median of the per-round ratios; target ≥ 0.9: $V_MSG); medians $(fmt "$FOM") vs $(fmt "$FOP")/s; the same \`msg_id\` again: 0 sent, every recipient \`duplicate\`; CPU per notification, timpush's worker + Redis: $CPU_MSG_US µs vs $CPU_PLAIN_US µs without (**$CPU_MSG_R ×**; worker ${cpu_msg[tp]} vs ${cpu_plain[tp]} ticks, Redis ${cpu_msg[rd]} vs ${cpu_plain[rd]}, simulator ${cpu_msg[sim]} vs ${cpu_plain[sim]}) |
| timpush fan-out **async** (\`"async": true\`, the gateway consuming its own stream) | 202 in $(fmt "$AS202" 1) ms | done (GET /v1/pushes/{id}) in $(fmt "$ASDONE") ms, the synchronous fan-out in the same rounds $(fmt "$ASSYNC") ms |
| timpush fan-out to a simulator allowing **1000 streams** (\`http2_max_concurrent_streams 1000\`) | $(fmt "$FO1000") notif/s | $R_H21000 × h2load with 1000 streams ($(fmt "$H2ON1000")/s); median of the per-round ratios $P_H21000 |
| timpush fan-out to a peer that **flaps SETTINGS** (MAX_CONCURRENT_STREAMS 1 after each 410, 1000 after each 200; 5% of $USERS unregistered), Timpush::H2Peer | $(fmt "$FLAP") notif/s | **$R_FLAP × the same peer steady** ($(fmt "$FLAP_STEADY")/s); the peer, in Perl, is the limit of both |
| @parse/node-apn → simulator, confirmed (200 seen by the app) / wall time | $(fmt "$PEER") notif/s | timpush = **$R_PEER ×** node-apn (target ≥ 3: $V_PEER); median of the per-round ratios $P_PEER |
| @parse/node-apn, all $USERS / wall time | $(fmt "$PEERT") notif/s | timpush = $R_PEERT × this; confirmed $(fmt "$PEER_OK") of $USERS, reported failed $(fmt "$PEER_LOST"), logged by the simulator $(fmt "$PEER_LOGGED") (medians) |
| wrk → POST /v1/push to 1 user (1 thread, $WRK_CONNS connections, ${WRK_SECS}s) | $(fmt "$WRPS") req/s | p50 $(fmt "$WP50" 2) ms, p99 $(fmt "$WP99" 2) ms; non-2xx/socket errors: $WRK_BAD |
| \`GET /v1/users/u5/devices\` while a fan-out runs (one fan-out) | $D_MAX ms at most | $DURING |
| timpush worker RSS, fresh, before any push | $MB KiB | |
| RSS at the peak of the first fan-out (VmHWM) | $MP KiB | per in-flight notification (peak − before) / $USERS = **$(fmt "$MPER") bytes** (target < 4096: $V_PER) |
| RSS after warm-up ($WARM_FANOUTS fan-outs, then the median after each of the next 10) | $MW KiB | highest peak of any later fan-out: $MMAX KiB |
| RSS after $((MEM_FANOUTS * USERS)) more notifications ($MEM_FANOUTS fan-outs; median after each of the last 10) | $MA KiB | growth after warm-up **$MG KiB** (target ≤ 1024: $V_GROW) |

CPU time used during the $RUNS counted fan-outs (connections 2), share of their wall time: timpush worker $(pct $((CPU_TP * tick_ms)) "$CPU_WALL")%, simulator worker $(pct $((CPU_SIM * tick_ms)) "$CPU_WALL")%, Redis $(pct $((CPU_REDIS * tick_ms)) "$CPU_WALL")% (wall $CPU_WALL ms; clock ticks of ${tick_ms} ms). During the h2load runs (log on) the simulator worker used ${H2SIM_PCT}% of their wall time ($CPU_H2WALL ms, h2load start-up included)${H2SIM_NOTE}.

Timeline of a checked fan-out (simulator log times, ms clock): $TIMELINE.

Every counted fan-out answered \`"sent":$USERS\`; the checked fan-out's simulator log held $USERS notifications. Error-log lines (error and worse) during the run: timpush $TP_ERRORS, simulator $SIM_ERRORS.

All runs:
- h2load, log on: ${h2on[*]}
- h2load, log off: ${h2off[*]}
- timpush fan-out, 2 connections: ${fo2[*]}; per-round ratio to h2load: ${pr_h2[*]}
- timpush fan-out, 1 connection: ${fo1[*]} (h2load in the same rounds: ${h2on1[*]})
- async fan-out, 202 ms: ${as_202[*]}; done ms: ${as_done[*]}; sync ms, same rounds: ${as_sync[*]}
- timpush fan-out with a msg_id: ${fo_msg[*]}; without, same rounds: ${fo_plain[*]}; per-round ratio: ${pr_msg[*]}
- timpush fan-out, 1000 streams: ${fo1000[*]} (h2load, 1000 streams, same rounds: ${h2on1000[*]})
- flapping and steady peer, each round: $FLAP_ROUNDS
- node-apn confirmed/s: ${peer[*]}; confirmed: ${peer_ok[*]}; logged by the simulator: ${peer_logged[*]}
- node-apn failures: $(printf '%s' "$PEER_REASONS_ALL" | paste -sd' ')
- wrk req/s: ${wrk_rps[*]}; p50 ms: ${wrk_p50[*]}; p99 ms: ${wrk_p99[*]}
- RSS KiB before / first peak / warm / after / growth / after the last fan-out: ${m_before[*]} / ${m_peak[*]} / ${m_warm[*]} / ${m_after[*]} / ${m_growth[*]} / ${m_last[*]}
EOF
} > "$work/results.md"

cp "$work/results.md" "$RESULTS"

# a full run (the defaults or more) also refreshes bench/README.md's copy
if (( RUNS >= 5 && USERS == 10000 && MEM_FANOUTS >= 100 )) \
   && [ "$RESULTS" = "$bench/results.md" ] \
   && grep -q '^<!-- results -->$' "$bench/README.md"
then
    awk -v f="$work/results.md" '
        /^<!-- results -->$/ { print; while ((getline l < f) > 0) {
                                   if (l !~ /^# /) print l }
                               skip = 1; next }
        /^<!-- \/results -->$/ { skip = 0 }
        !skip' "$bench/README.md" > "$work/README.md"
    cat "$work/README.md" > "$bench/README.md"
fi

cat "$work/results.md"
