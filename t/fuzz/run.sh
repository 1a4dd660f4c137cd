#!/bin/sh
# Builds the libFuzzer target for the push-body parser and renderer
# (t/fuzz/fuzz_push.c) with Debian's clang and runs it.
#
#   t/fuzz/run.sh [seconds]        default 60; the issue asks for >= 600
#   t/fuzz/run.sh 0 crash-file     only replay one input
#
# Needs build/objs/ngx_auto_config.h ("make build").  Works in
# build/fuzz/: the growing corpus (seeded from t/fuzz/corpus, which is not
# written to), fuzz-0.log, and crash-*/leak-* files when something is found.
# One job, one worker: the machine is shared.

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

mkdir -p "$out/corpus"

clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Werror -Wno-unused-parameter \
    -I "$ngx/core" -I "$ngx/event" -I "$ngx/event/modules" \
    -I "$ngx/os/unix" -I "$root/build/objs" \
    -I "$root/ngx_http_timpush_module" -I "$root/t/unit" \
    -o "$out/fuzz_push" \
    "$root/ngx_http_timpush_module/ngx_http_timpush_render.c" \
    "$root/ngx_http_timpush_module/ngx_http_timpush_body.c" \
    "$root/t/unit/ngx_stubs.c" "$root/t/fuzz/fuzz_push.c" -lyajl

cd "$out"

if [ $# -ge 2 ]; then
    exec ./fuzz_push "$2"
fi

rm -f fuzz-0.log
status=0
./fuzz_push -max_total_time="$secs" -jobs=1 -workers=1 -max_len=8192 \
    -timeout=10 -dict="$root/t/fuzz/push.dict" \
    -artifact_prefix="$out/" "$out/corpus" "$root/t/fuzz/corpus" \
    || status=$?

# libFuzzer has printed fuzz-0.log, ending with "Done N runs in S second(s)"
if ls "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* \
    2>/dev/null
then
    status=1
fi

exit $status
