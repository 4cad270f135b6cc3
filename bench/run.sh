#!/usr/bin/env bash
# Reproduces the tables in BENCHMARKS.md on this machine:
#   1. the null server in three shapes (work-stealing, per-core SO_REUSEPORT,
#      per-core round-robin) — the physical limit of the request pattern;
#   2. Latchkey (release build, default config, fresh data directory) against
#      the work-stealing null server, interleaved run by run;
#   3. the one-writer fdatasync baseline on the data directory's disk.
# Results go to $OUT (default bench/results): *.jsonl, *.txt and plot.svg.
# Knobs: DURATION (5s), WARMUP (1s), RUNS (3), CONNS (1,16,64), DEPTH (1),
# THREADS (0 = one per core): the worker threads of every null server and
# Latchkey's `system.shards`, the same for all. Run it on an otherwise idle
# machine: the client and server share the cores. On two cores the load
# generator keeps one busy, and one worker (THREADS=1) is the fastest shape
# for every server (BENCHMARKS.md, session 13).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration="${DURATION:-5s}"; warmup="${WARMUP:-1s}"; runs="${RUNS:-3}"
conns="${CONNS:-1,16,64}"; depth="${DEPTH:-1}"; out="${OUT:-bench/results}"; threads="${THREADS:-0}"
mkdir -p "$out"

cargo build --release -q -p latchkey-server -p latchkey-bench
bench=target/release/latchkey-bench
server=target/release/latchkey-server
work="$(mktemp -d /tmp/latchkey-bench.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_null() { # shape port
    "$bench" null-server --shape "$1" --threads "$threads" --addr "127.0.0.1:$2" 2>>"$work/null.log" &
    pids+=($!)
}
start_null multi-thread 8091
start_null per-core 8092
start_null round-robin 8093
LATCHKEY_SYSTEM_SHARDS="$threads" LATCHKEY_SYSTEM_PATH="$work/data" LATCHKEY_TCP_ADDRESS=127.0.0.1:8090 LATCHKEY_HTTP_ADDRESS=127.0.0.1:8190 \
    "$server" --config configs/server.toml --with-default-root-credentials >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
sleep 1

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)" | tee "$out/machine.txt"
grep -m1 'model name' /proc/cpuinfo | tee -a "$out/machine.txt"

common=(--duration "$duration" --warmup "$warmup" --runs "$runs" --depth "$depth" --json)
for shape_port in multi-thread:8091 per-core:8092 round-robin:8093; do
    shape="${shape_port%%:*}"; port="${shape_port##*:}"
    echo "== null server, $shape"
    "$bench" run --addr "127.0.0.1:$port" --label "null-$shape" --scenarios ping,login,list,authorize \
        --connections "$conns" "${common[@]}" | tee "$out/null-$shape.jsonl"
done

echo "== latchkey vs null (work-stealing), same session"
"$bench" run --addr 127.0.0.1:8090 --server-pid "$server_pid" --baseline 127.0.0.1:8091 \
    --baseline-label null-multi-thread --scenarios ping,login,list,authorize,login-newconn,churn \
    --connections "$conns" "${common[@]}" --plot "$out/plot.svg" | tee "$out/latchkey.jsonl"

echo "== disk baseline (one writer, append + fdatasync per record)"
"$bench" disk --dir "$work" --duration "$duration" --runs "$runs" | tee "$out/disk.txt"
