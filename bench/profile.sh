#!/usr/bin/env bash
# Where a login's CPU goes: Latchkey and the do-nothing null server under the
# same login load, profiled together with call graphs (BENCHMARKS.md, "The
# per-login budget").
#   1. a release Latchkey and `latchkey-bench null-server` (SHAPE) start on
#      loopback;
#   2. `latchkey-bench run` drives token logins on CONNS connections,
#      interleaved run by run between the two (RUNS runs of DURATION each);
#   3. meanwhile `perf record` samples each server (its own PID, every thread,
#      kernel included, DWARF call graphs) for the whole run: a server is busy
#      only in its own runs, so each profile holds its runs only;
#   4. the samples are folded (inferno) into flame graphs,
#      OUT/flame-login-latchkey.svg and OUT/flame-login-null.svg, and
#      bench/budget.py splits Latchkey's samples into the budget's parts and
#      prints them as shares and as µs of server CPU per login.
# Knobs: CONNS (16), RUNS (4), DURATION (3s), SHAPE (multi-thread),
# FREQ (sampling Hz, 499), OUT (bench/results), KEEP (a directory to keep
# the folded stacks and the bench output in, for budget.py again). Needs perf (Debian's
# linux-perf) and inferno (`cargo install inferno`); run as root or with
# kernel.perf_event_paranoid ≤ 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

conns="${CONNS:-16}"; runs="${RUNS:-4}"; duration="${DURATION:-3s}"; shape="${SHAPE:-multi-thread}"
freq="${FREQ:-499}"; out="${OUT:-bench/results}"
for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { echo "bench/profile.sh needs $tool" >&2; exit 1; }
done
cargo build --release -q -p latchkey-server -p latchkey-bench
target="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d /tmp/latchkey-profile.XXXXXX)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

LATCHKEY_SYSTEM_PATH="$work/data" LATCHKEY_TCP_ADDRESS=127.0.0.1:8490 LATCHKEY_HTTP_ADDRESS=127.0.0.1:8491 \
    "$target/latchkey-server" --config configs/server.toml --with-default-root-credentials >"$work/server.log" 2>&1 &
server=$!; pids+=("$server")
"$target/latchkey-bench" null-server --addr 127.0.0.1:8492 --shape "$shape" 2>"$work/null.log" &
null=$!; pids+=("$null")
sleep 1.5

perf record -q -F "$freq" --call-graph dwarf,16384 -p "$server" -o "$work/latchkey.data" 2>/dev/null &
perf_server=$!
perf record -q -F "$freq" --call-graph dwarf,16384 -p "$null" -o "$work/null.data" 2>/dev/null &
perf_null=$!
sleep 0.5
"$target/latchkey-bench" run --addr 127.0.0.1:8490 --server-pid "$server" \
    --baseline 127.0.0.1:8492 --baseline-pid "$null" --scenarios login --connections "$conns" \
    --duration "$duration" --warmup 1s --runs "$runs" 2>&1 | tee "$work/bench.txt"
kill -INT "$perf_server" "$perf_null"
wait "$perf_server" "$perf_null" 2>/dev/null || true

mkdir -p "$out"
for side in latchkey null; do
    perf script -i "$work/$side.data" 2>/dev/null | inferno-collapse-perf --all >"$work/$side.folded"
    inferno-flamegraph --title "token login, $conns connections: $side" --width 1600 \
        <"$work/$side.folded" >"$out/flame-login-$side.svg"
    echo "$side: $(awk '{ n += $NF } END { print n }' "$work/$side.folded") samples -> $out/flame-login-$side.svg"
done
python3 bench/budget.py "$work/latchkey.folded" "$work/null.folded" "$work/bench.txt"
if [[ -n ${KEEP:-} ]]; then
    mkdir -p "$KEEP" && cp "$work"/*.folded "$work/bench.txt" "$KEEP/"
fi
