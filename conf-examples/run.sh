#!/usr/bin/env bash
# "make run" and "make stop": the quickstart stack, from the repository root.
#
#   run.sh start   Redis on 127.0.0.1:6399, nginx with quickstart.conf on
#                  127.0.0.1:8080 (and the APNs simulator on 8443/8444,
#                  its log on 8081),
#                  then a demo: register a device, report the app in the
#                  background, list the user's devices, push a message and
#                  show what the simulator received
#   run.sh stop    stop both

set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
run=$root/build/run
nginx=${NGINX:-/usr/sbin/nginx}
conf=conf-examples/quickstart.conf
redis_port=6399
api=http://127.0.0.1:8080/v1

say() {
    if [ -t 1 ]; then
        printf '\n\033[1m%s\033[0m\n' "$*"
    else
        printf '\n== %s\n' "$*"
    fi
}

stop_nginx() {
    if [ -f "$run/nginx.pid" ] && kill -0 "$(cat "$run/nginx.pid")" 2>/dev/null
    then
        "$nginx" -p "$root/" -c "$conf" -s quit 2>/dev/null || true
        for _ in $(seq 50); do
            [ -f "$run/nginx.pid" ] || break
            sleep 0.1
        done
    fi
}

stop_redis() {
    if [ -f "$run/redis.pid" ] && kill -0 "$(cat "$run/redis.pid")" 2>/dev/null
    then
        redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
        for _ in $(seq 50); do
            kill -0 "$(cat "$run/redis.pid" 2>/dev/null)" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$run/redis.pid"
    fi
}

start() {
    mkdir -p "$run"

    if ! redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
        redis-server --bind 127.0.0.1 --port "$redis_port" --save '' \
            --appendonly no --dir "$run" --daemonize yes \
            --pidfile "$run/redis.pid" --logfile "$run/redis.log"
        for _ in $(seq 50); do
            redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi
    echo "Redis:  127.0.0.1:$redis_port (log: build/run/redis.log)"

    # a reload would keep the old module code loaded: restart instead
    stop_nginx
    "$nginx" -p "$root/" -c "$conf" -t -q
    "$nginx" -p "$root/" -c "$conf"
    for _ in $(seq 50); do
        curl -s -o /dev/null "$api/users/x/devices" && break
        sleep 0.1
    done
    echo "nginx:  127.0.0.1:8080 with $conf (log: build/run/error.log)"

    # a device token as APNs hands it to the app: 32 bytes, 64 hex digits
    token=$(printf 'c0ffee%.0s' $(seq 10); printf '0001')

    say "setAPNS: vinson registers an iPhone under business_id 1001 (sandbox)"
    echo "\$ curl -X PUT $api/users/vinson/devices/$token -d '{\"business_id\":1001}'"
    curl -sS -X PUT "$api/users/vinson/devices/$token" \
        -d '{"business_id":1001}'

    say "the app goes to the background with 5 unread messages"
    echo "\$ curl -X POST $api/users/vinson/devices/$token/background -d '{\"unread\":5}'"
    curl -sS -X POST "$api/users/vinson/devices/$token/background" \
        -d '{"unread":5}'

    say "vinson's devices"
    echo "\$ curl $api/users/vinson/devices"
    curl -sS "$api/users/vinson/devices"

    curl -sS -X DELETE http://127.0.0.1:8081/mock/log >/dev/null

    say "sendPush: Denny sends vinson a message; vinson is offline"
    body='{"to":"vinson","from":{"user_id":"denny","nickname":"Denny"},"elems":[{"type":"text","text":"Are we still on for lunch?"}],"offline_push":{"ext":"jump to denny"}}'
    echo "\$ curl -X POST $api/push -d '$body'"
    curl -sS -X POST "$api/push" -d "$body"

    say "what the phone received (the APNs simulator's log)"
    echo "\$ curl http://127.0.0.1:8081/mock/log"
    curl -sS http://127.0.0.1:8081/mock/log

    say "The stack keeps running; 'make stop' stops it."
}

case ${1:-start} in
    start) start ;;
    stop)  stop_nginx; stop_redis; echo "stopped" ;;
    *)     echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
