#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: user space only
# (Latchkey's code, tokio, hyper, libc), not the kernel, and not time. Unlike
# a rate on this shared machine, the count comes out the same run after run
# (to within a few per cent), so a change of 2 % in what a request executes
# shows here where the interleaved rate runs cannot see it. What it cannot
# show: cache misses, atomics' latency, the kernel's share (four fifths of a
# login's CPU; BENCHMARKS.md), or SIMD paths valgrind does not emulate
# (BLAKE3 runs its SSE4.1 code under valgrind, AVX-512 outside it).
#
# For each scenario, Latchkey (release build, one worker) and the do-nothing
# server of the same protocol (latchkey-bench null-server or
# http-null-server, one worker) each run under callgrind in turn while
# latchkey-bench drives 16 connections at it; instrumentation is switched on
# for the measured window only. Requests are counted as the server's reply
# syscalls (`send` for the binary protocol, `writev` for hyper's replies),
# one per request at one request in flight per connection.
#
# Knobs: SCENARIOS (login,authorize,rabbitmq-resource; any latchkey-bench
# scenario: binary ones against the binary servers, rabbitmq-* and
# forward-auth against the HTTP ones), WINDOW (8: seconds measured),
# TOP (25: symbols listed per server), OUT (a directory for the callgrind
# files; default a temporary one, removed), SERVER (another latchkey-server
# binary to count instead, e.g. a build of an older commit), NULLS (0 to
# skip the null servers). Needs valgrind (Debian:
# `valgrind`). Takes about a minute per scenario and server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "valgrind not found (Debian: apt-get install valgrind)"; exit 1; }

scenarios="${SCENARIOS:-login,authorize,rabbitmq-resource}"
window="${WINDOW:-8}"; top="${TOP:-25}"
cargo build --release -q -p latchkey-server -p latchkey-bench
bench=target/release/latchkey-bench
server="${SERVER:-target/release/latchkey-server}"
work="$(mktemp -d /tmp/latchkey-instructions.XXXXXX)"
out="${OUT:-$work}"
mkdir -p "$out"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { for _ in $(seq 300); do listening "$1" && return; sleep 0.1; done; echo "nothing listens on $1"; exit 1; }

# latchkey PORT HTTP_PORT [valgrind args...]: starts a fresh Latchkey, its pid in $started.
latchkey() {
    local port=$1 http=$2; shift 2
    rm -rf "$work/data-$port"
    LATCHKEY_SYSTEM_SHARDS=1 LATCHKEY_SYSTEM_PATH="$work/data-$port" LATCHKEY_TCP_ADDRESS="127.0.0.1:$port" \
        LATCHKEY_HTTP_ADDRESS="127.0.0.1:$http" "$@" "$server" --config configs/server.toml \
        --with-default-root-credentials >"$work/latchkey-$port.log" 2>&1 &
    started=$!
    pids+=("$started")
}

# per_request FILE SYSCALL: instructions per request, and the top symbols.
per_request() {
    local report requests total
    report="$(callgrind_annotate --tree=caller "$1" 2>/dev/null)"
    requests="$(grep -E "< .*/$2\.c:$2 \(" <<<"$report" | head -1 | sed 's/.*(\([0-9,]*\)x).*/\1/' | tr -d ,)"
    total="$(callgrind_annotate "$1" 2>/dev/null | grep 'PROGRAM TOTALS' | awk '{print $1}' | tr -d ,)"
    if [[ -z "$requests" || "$requests" == 0 ]]; then echo "  no $2 calls counted"; return; fi
    echo "  $((total / requests)) instructions per request ($requests requests)"
    callgrind_annotate --inclusive=no "$1" 2>/dev/null | awk -v n="$requests" -v top="$top" '
        /^ *[0-9,]+ \(/ && !/TOTALS/ {
            count = $1; gsub(",", "", count); name = $0
            sub(/^ *[0-9,]+ \( *[0-9.]+%\)  /, "", name); sub(/ \[.*/, "", name)
            parts = split(name, piece, ":")
            if (shown++ < top) printf "  %7.0f  %s\n", count / n, piece[parts]
        }'
}

for scenario in ${scenarios//,/ }; do
    case "$scenario" in
        rabbitmq-*|forward-auth) http=1; syscall=writev ;;
        *) http=0; syscall=send ;;
    esac
    targets=(latchkey); [[ "${NULLS:-1}" == 0 ]] || targets+=(null)
    for target in "${targets[@]}"; do
        file="$out/$scenario.$target.callgrind"
        rm -f "$file"*
        grind=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$file")
        if [[ $target == latchkey ]]; then
            latchkey 8490 8491 "${grind[@]}"
            measured=$started
            wait_for 8490; wait_for 8491
            if ((http)); then drive=(--http-addr 127.0.0.1:8491 --server-pid "$measured")
            else drive=(--addr 127.0.0.1:8490 --server-pid "$measured"); fi
        else
            # The null server answers anything; a plain Latchkey beside it
            # sets up the bench's users and tokens, and sits idle after.
            latchkey 8492 8493
            helper=$started
            if ((http)); then "${grind[@]}" "$bench" http-null-server --threads 1 --addr 127.0.0.1:8494 2>"$work/null.log" &
            else "${grind[@]}" "$bench" null-server --threads 1 --addr 127.0.0.1:8494 2>"$work/null.log" & fi
            measured=$!
            pids+=("$measured")
            wait_for 8492; wait_for 8493; wait_for 8494
            if ((http)); then drive=(--http-addr 127.0.0.1:8493 --server-pid "$helper" --baseline-http 127.0.0.1:8494 --baseline-http-pid "$measured")
            else drive=(--addr 127.0.0.1:8494 --server-pid "$measured"); fi
        fi
        "$bench" run --scenarios "$scenario" "${drive[@]}" --connections 16 \
            --duration "$((window + 6))s" --warmup 2s --runs 1 >"$work/bench.log" 2>&1 &
        load=$!
        sleep 4
        callgrind_control -i on "$measured" >/dev/null
        sleep "$window"
        callgrind_control -i off "$measured" >/dev/null
        callgrind_control -d "$measured" >/dev/null
        wait "$load" || { echo "latchkey-bench failed:"; cat "$work/bench.log"; exit 1; }
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
        pids=()
        echo "== $scenario, $target"
        dump="$(ls "$file".* 2>/dev/null | head -1)"
        [[ -n "$dump" ]] || { echo "  no dump written"; continue; }
        per_request "$dump" "$syscall"
    done
done
