#!/bin/sh
# Builds the three libFuzzer targets with Debian's clang and runs them, one
# after the other:
#
#   push     t/fuzz/fuzz_push.c: POST /v1/push bodies, parsed and rendered
#   device   t/fuzz/fuzz_device.c: the device bodies (register, logout,
#            background), parsed as ngx_http_timpush_api.c does
#   cluster  t/fuzz/fuzz_cluster.c: CLUSTER SLOTS replies (RESP) and
#            MOVED/ASK errors, as ngx_http_timpush_cluster.c reads them
#
#   t/fuzz/run.sh [seconds]              default 60; the issue asks >= 600
#   t/fuzz/run.sh 0 file [push|device|cluster]   only replay one input;
#                                        the target is the one whose
#                                        directory holds the file, else push
#
# The time is per target: each runs for the seconds given, so the whole
# run takes three times as long ("make fuzz", FUZZ_TIME=600: 30 minutes).
# All always run; the script fails if any finds anything.
#
# Needs build/objs/ngx_auto_config.h ("make build").  Works in
# build/fuzz/push/, build/fuzz/device/ and build/fuzz/cluster/: each has
# its growing corpus (seeded from t/fuzz/corpus, t/fuzz/corpus-device and
# t/fuzz/corpus-cluster, which are not written to), fuzz-0.log, and
# crash-*/leak-* files when something is found.  One job, one worker: the
# machine is shared.

set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
out=$root/build/fuzz
ngx=$root/build/nginx-src/src

rt=/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a
# shellcheck disable=SC2086
if ! command -v clang >/dev/null 2>&1 || ! ls $rt >/dev/null 2>&1; then
    apt-get install -y clang libclang-rt-14-dev
fi

if [ ! -f "$root/build/objs/ngx_auto_config.h" ]; then
    echo "run.sh: build/objs/ngx_auto_config.h is missing: make build" >&2
    exit 1
fi

# the push corpus grown when there was one target
if [ -d "$out/corpus" ] && [ ! -d "$out/push/corpus" ]; then
    mkdir -p "$out/push"
    mv "$out/corpus" "$out/push/corpus"
fi

mkdir -p "$out/push/corpus" "$out/device/corpus" "$out/cluster/corpus"

# build NAME [SOURCES]: build/fuzz/fuzz_NAME from t/fuzz/fuzz_NAME.c,
# body.c, the stand-ins and SOURCES
build() {
    name=$1
    shift

    clang -g -O1 -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=all \
        -Wall -Wextra -Werror -Wno-unused-parameter \
        -I "$ngx/core" -I "$ngx/event" -I "$ngx/event/modules" \
        -I "$ngx/os/unix" -I "$root/build/objs" \
        -I "$root/ngx_http_timpush_module" -I "$root/t/unit" \
        -o "$out/fuzz_$name" \
        "$@" "$root/ngx_http_timpush_module/ngx_http_timpush_body.c" \
        "$root/t/unit/ngx_stubs.c" "$root/t/fuzz/fuzz_$name.c" -lyajl \
        -lhiredis
}

build push "$root/ngx_http_timpush_module/ngx_http_timpush_render.c"
build device
build cluster "$root/ngx_http_timpush_module/ngx_http_timpush_cluster.c"

if [ $# -ge 2 ]; then
    case "${3:-$(cd "$(dirname "$2")" && pwd)}" in
    device|*/device|*/device/*|*/corpus-device) name=device ;;
    cluster|*/cluster|*/cluster/*|*/corpus-cluster) name=cluster ;;
    *) name=push ;;
    esac

    exec "$out/fuzz_$name" "$2"
fi

# run NAME MAX_LEN SEEDS DICT: fails if anything was found
run() {
    name=$1
    dir=$out/$name

    echo "run.sh: fuzz_$name for $secs seconds"

    cd "$dir"
    rm -f fuzz-0.log

    rc=0
    "$out/fuzz_$name" -max_total_time="$secs" -jobs=1 -workers=1 \
        -max_len="$2" -timeout=10 -dict="$4" \
        -artifact_prefix="$dir/" "$dir/corpus" "$3" \
        || rc=$?

    # libFuzzer has printed fuzz-0.log, ending with "Done N runs in S
    # second(s)"
    if ls "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-* \
        2>/dev/null
    then
        rc=1
    fi

    return $rc
}

status=0

# device bodies are at most 4 KiB (NGX_HTTP_TIMPUSH_DEVICE_BODY_MAX)
run push 8192 "$root/t/fuzz/corpus" "$root/t/fuzz/push.dict" || status=1
run device 4096 "$root/t/fuzz/corpus-device" "$root/t/fuzz/device.dict" \
    || status=1
run cluster 8192 "$root/t/fuzz/corpus-cluster" "$root/t/fuzz/cluster.dict" \
    || status=1

exit $status
