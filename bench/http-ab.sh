#!/usr/bin/env bash
# A/B of two server builds on the HTTP side: this tree's release build (A)
# against BASELINE (B, a build of an older commit), each measured against
# the one do-nothing HTTP server (`latchkey-bench http-null-server`), in
# alternating bench calls: A against null, B against null, A, B, ...
# ROUNDS times. Each call runs RUNS interleaved pairs of DURATION; the
# bench issues its token on the server it measures, so every answer is the
# same `allow` on both builds (which is why the two builds are not put
# against each other directly: a token exists on one of them only).
# All three servers run one worker (LATCHKEY_SYSTEM_SHARDS=1 and
# --threads 1), the fastest shape on two cores with the load generator
# beside them.
# Prints, per scenario and build, the median over the calls of: the rate
# against the null server (run by run), the server's user-space µs per
# request, and its CPU per request against the null's. Raw JSON lines go to
# $OUT (default bench/results/http-ab.jsonl), labelled A, B and null-http.
# Knobs: SCENARIOS (rabbitmq-resource), CONNS (16), DURATION (3s),
# RUNS (3), ROUNDS (4), OUT. Ports 8590-8595 on loopback (no other script
# here uses them).
set -euo pipefail
: "${BASELINE:?set BASELINE to the other latchkey-server binary}"
BASELINE="$(realpath "$BASELINE")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scenarios="${SCENARIOS:-rabbitmq-resource}"; conns="${CONNS:-16}"; duration="${DURATION:-3s}"
runs="${RUNS:-3}"; rounds="${ROUNDS:-4}"; out="${OUT:-bench/results/http-ab.jsonl}"

cargo build --release -q -p latchkey-server -p latchkey-bench
bench="${CARGO_TARGET_DIR:-target}/release/latchkey-bench"
this="${CARGO_TARGET_DIR:-target}/release/latchkey-server"
work="$(mktemp -d /tmp/latchkey-http-ab.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start() { # label binary tcp-port http-port
    LATCHKEY_SYSTEM_SHARDS=1 LATCHKEY_SYSTEM_PATH="$work/$1" LATCHKEY_TCP_ADDRESS="127.0.0.1:$3" \
        LATCHKEY_HTTP_ADDRESS="127.0.0.1:$4" "$2" --config configs/server.toml --with-default-root-credentials \
        >"$work/$1.log" 2>&1 &
    pids+=("$!")
}
start a "$this" 8590 8591
a_pid="${pids[-1]}"
start b "$BASELINE" 8593 8594
b_pid="${pids[-1]}"
"$bench" http-null-server --threads 1 --addr 127.0.0.1:8592 2>"$work/null.log" &
null_pid=$!
pids+=("$null_pid")

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8590 8591 8593 8594 8592; do
    for _ in $(seq 100); do listening "$port" && break; sleep 0.1; done
    listening "$port" || { echo "nothing listens on $port"; cat "$work"/*.log; exit 1; }
done
# A port something else held would look ready: the three must be ours and alive.
for pid in "$a_pid" "$b_pid" "$null_pid"; do
    kill -0 "$pid" 2>/dev/null || { echo "a server exited at start"; cat "$work"/*.log; exit 1; }
done

echo "machine: $(nproc) cores, $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$work/runs.jsonl"
for _ in $(seq "$rounds"); do
    for side in A B; do
        if [ "$side" = A ]; then pid=$a_pid tcp=8590 http=8591; else pid=$b_pid tcp=8593 http=8594; fi
        if ! "$bench" run --addr "127.0.0.1:$tcp" --http-addr "127.0.0.1:$http" --server-pid "$pid" --label "$side" \
            --baseline-http 127.0.0.1:8592 --baseline-http-pid "$null_pid" --scenarios "$scenarios" \
            --connections "$conns" --duration "$duration" --warmup 1s --runs "$runs" --json \
            >"$work/call.out" 2>"$work/call.err"; then
            echo "the bench failed against $side:"; cat "$work/call.err"; exit 1
        fi
        grep '^{' "$work/call.out" >>"$work/runs.jsonl"
    done
done
mkdir -p "$(dirname "$out")"
cp "$work/runs.jsonl" "$out"
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for scenario in dict.fromkeys(row["scenario"] for row in rows):
    for side in ("A", "B"):
        mine = [row for row in rows if row["target"] == side and row["scenario"] == scenario]
        if not mine:
            print(f"{scenario} {side}: no results")
            continue
        rate = [row["paired_ops"]["median"] for row in mine]
        user = [row["server_user_us_per_op"] for row in mine]
        cpu = [row["paired_cpu"]["median"] for row in mine]
        print(f"{scenario} {side}: rate x null {statistics.median(rate):.3f} ({min(rate):.2f}-{max(rate):.2f}), "
              f"user us/op {statistics.median(user):.2f} ({min(user):.2f}-{max(user):.2f}), "
              f"cpu x null's {statistics.median(cpu):.3f}")
PY
