#!/usr/bin/env bash
# Runs timpush's test suites: what "make test" and "make test-valgrind" call.
#
#   t/run.sh                      every t/*.t (and t/unit/ if present)
#   t/run.sh t/api.t ...          only these (any prove arguments)
#   TEST_NGINX_USE_VALGRIND=1 t/run.sh    nginx under valgrind (each block
#                                 also fails on a valgrind report; see
#                                 valgrind.suppress)
#   TEST_NGINX_BINARY=/path/nginx t/run.sh    another nginx (default
#                                 /usr/sbin/nginx, Debian's)
#   TEST_NGINX_MODULE=/path/module.so t/run.sh    another build of the
#                                 module (default build/objs/; the
#                                 simulator's .so is taken beside it)
#
# It starts a private redis-server on a free port, picks a free port for
# nginx, exports what the suites read:
#   TEST_NGINX_REDIS_PORT  TEST_NGINX_SERVER_PORT  TEST_NGINX_MODULE
#   TEST_NGINX_MOCK_MODULE TEST_NGINX_CERT_DIR    TEST_NGINX_BINARY
# and runs prove from the repository root (the server root is t/servroot,
# or $TEST_NGINX_SERVROOT: set it when two runs share one checkout).
# The test runner is t/lib/Test/Nginx/Socket.pm, timpush's compatible
# implementation of OpenResty's Test::Nginx::Socket; t/lib is APPENDED to
# PERL5LIB so that a real Test::Nginx placed first in PERL5LIB wins.
#
# Checking the suites against the real Test::Nginx (not packaged in Debian):
#   git clone https://github.com/openresty/test-nginx /tmp/test-nginx
#   TEST_NGINX_REAL=/tmp/test-nginx/lib t/run.sh
# This puts that lib first in PERL5LIB and sets PERL5OPT=-MTimpushSubreaper
# (t/lib/TimpushSubreaper.pm: prctl(PR_SET_CHILD_SUBREAPER)).  The real
# module daemonizes nginx; where PID 1 reaps orphans slowly, as in our
# containers, it would otherwise wait about 2 s per block for the old nginx
# to go away.  By hand the same is:
#   PERL5OPT=-MTimpushSubreaper PERL5LIB=/tmp/test-nginx/lib:t/lib prove t/x.t

set -u

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Test files given relative to the caller's directory still work from $root.
args=()
for a in "$@"; do
    if [ "${a#-}" = "$a" ] && [ -e "$a" ]; then
        a=$(cd "$(dirname "$a")" && pwd)/$(basename "$a")
    fi
    args+=("$a")
done
set -- "${args[@]+"${args[@]}"}"
cd "$root" || exit 1

# A free TCP port on 127.0.0.1 below the ephemeral range, so that no outgoing
# connection (nginx to Redis, to the APNs simulator...) can take it as its
# local port between two blocks, when nginx is not listening.
free_port() {
    perl -MIO::Socket::INET -e '
        my ($lo) = split " ", do { local @ARGV = "/proc/sys/net/ipv4/ip_local_port_range"; <> } || 32768;
        my %avoid = map { $_ => 1 } @ARGV;
        for (1 .. 1000) {
            my $p = 10000 + int rand($lo - 10000);
            next if $avoid{$p};
            my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $p,
                                          Proto => "tcp", Listen => 1, ReuseAddr => 1)
                or next;
            print "$p\n";
            exit 0;
        }
        exit 1;
    ' "$@"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/timpush-test.XXXXXX") || exit 1
redis_pid=

cleanup() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null
        wait "$redis_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

redis_port=$(free_port) || { echo "run.sh: no free port for Redis" >&2; exit 1; }
server_port=$(free_port "$redis_port") || { echo "run.sh: no free port for nginx" >&2; exit 1; }

# A throwaway Redis: no persistence, only on loopback, files in $tmp.
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$tmp" \
    --save '' --appendonly no --daemonize no \
    --logfile "$tmp/redis.log" &
redis_pid=$!

for _ in $(seq 100); do
    [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
    if ! kill -0 "$redis_pid" 2>/dev/null; then
        echo "run.sh: redis-server failed to start:" >&2
        cat "$tmp/redis.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" != PONG ]; then
    echo "run.sh: redis-server on port $redis_port does not answer PING" >&2
    exit 1
fi

export TEST_NGINX_REDIS_PORT=$redis_port
export TEST_NGINX_SERVER_PORT=$server_port
export TEST_NGINX_MODULE=${TEST_NGINX_MODULE:-$root/build/objs/ngx_http_timpush_module.so}
export TEST_NGINX_MOCK_MODULE=${TEST_NGINX_MOCK_MODULE:-$(dirname "$TEST_NGINX_MODULE")/ngx_http_timpush_mock_module.so}
export TEST_NGINX_CERT_DIR=$root/t/cert/out
export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}

[ -f "$TEST_NGINX_MODULE" ] ||
    echo "run.sh: warning: $TEST_NGINX_MODULE is missing (make build)" >&2
[ -d "$TEST_NGINX_CERT_DIR" ] ||
    echo "run.sh: warning: $TEST_NGINX_CERT_DIR is missing (make certs)" >&2
if [ -n "${TEST_NGINX_USE_VALGRIND:-}" ] && ! command -v valgrind >/dev/null; then
    echo "run.sh: TEST_NGINX_USE_VALGRIND is set but valgrind is not installed" >&2
    exit 1
fi

export PERL5LIB=${PERL5LIB:+$PERL5LIB:}$root/t/lib
if [ -n "${TEST_NGINX_REAL:-}" ]; then
    if [ ! -f "$TEST_NGINX_REAL/Test/Nginx/Socket.pm" ]; then
        echo "run.sh: TEST_NGINX_REAL=$TEST_NGINX_REAL has no Test/Nginx/Socket.pm" >&2
        exit 1
    fi
    export PERL5LIB=$TEST_NGINX_REAL:$PERL5LIB
    export PERL5OPT="${PERL5OPT:+$PERL5OPT }-MTimpushSubreaper"
fi

if [ $# -eq 0 ]; then
    set -- t/*.t
    [ -d t/unit ] && set -- "$@" t/unit
    if [ "$1" = 't/*.t' ]; then
        shift
    fi
    if [ $# -eq 0 ]; then
        echo "run.sh: no test files under t/" >&2
        exit 1
    fi
fi

echo "run.sh: redis on $redis_port, nginx on $server_port," \
     "runner: ${TEST_NGINX_REAL:-t/lib}${TEST_NGINX_USE_VALGRIND:+, valgrind}"
# -r only descends into directory arguments (t/unit), never into t/lib.
# What prove prints is kept too: on a failure, every failed test's
# diagnostics are printed again at the end, where a CI log that keeps only
# its tail still shows them.
prove -r "$@" 2>&1 | tee "$tmp/prove.log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "run.sh: the failures again, with what they printed:"
    awk '/^[[:space:]]*not ok / { print; next }
         /^# +Failed test/ { f = 1 }
         f && /^#/ { print; next }
         { f = 0 }' "$tmp/prove.log" | tail -n 400
fi
exit $status
