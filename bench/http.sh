#!/usr/bin/env bash
# HTTP forward auth, measured against a do-nothing HTTP server in the same
# session, interleaved run by run (BENCHMARKS.md, "HTTP forward auth"):
#   - Latchkey (release build, default config, fresh data directory) answers
#     GET /v1/auth/check on 127.0.0.1:8391 (binary protocol on 8390);
#   - `latchkey-bench http-null-server` (hyper's HTTP/1.1 server on the same
#     runtime shape) answers 200 to anything on 127.0.0.1:8392.
# Both get the same bytes: one kept-alive connection per client, one request
# in flight each, carrying a bearer token issued over REST for the run (and
# deleted after it).
# Results go to $OUT (default bench/results): http.jsonl (the medians, one
# JSON line per server and connection count) and http-runs.txt (every run).
# Knobs: DURATION (3s), WARMUP (1s), RUNS (5), CONNS (16,64), DEPTH (1),
# SCENARIOS (forward-auth; or RabbitMQ's questions: rabbitmq-user,
# rabbitmq-vhost, rabbitmq-resource, rabbitmq-topic), OUT, THREADS (0 = one
# per core: the null server's workers and Latchkey's `system.shards`).
# Binaries come from $CARGO_TARGET_DIR (default target); SERVER names
# another latchkey-server binary to measure instead (a build of an older
# commit, for a before/after on the same machine). Run it on an otherwise
# idle machine: the clients and both servers share the cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration="${DURATION:-3s}"; warmup="${WARMUP:-1s}"; runs="${RUNS:-5}"
scenarios="${SCENARIOS:-forward-auth}"
conns="${CONNS:-16,64}"; depth="${DEPTH:-1}"; out="${OUT:-bench/results}"; threads="${THREADS:-0}"
mkdir -p "$out"

cargo build --release -q -p latchkey-server -p latchkey-bench
bench="${CARGO_TARGET_DIR:-target}/release/latchkey-bench"
server="${SERVER:-${CARGO_TARGET_DIR:-target}/release/latchkey-server}"
work="$(mktemp -d /tmp/latchkey-http.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

LATCHKEY_SYSTEM_SHARDS="$threads" LATCHKEY_SYSTEM_PATH="$work/data" LATCHKEY_TCP_ADDRESS=127.0.0.1:8390 LATCHKEY_HTTP_ADDRESS=127.0.0.1:8391 \
    "$server" --config configs/server.toml --with-default-root-credentials >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
"$bench" http-null-server --threads "$threads" --addr 127.0.0.1:8392 2>"$work/null.log" &
null_pid=$!
pids+=("$null_pid")

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8391 8392; do
    for _ in $(seq 100); do listening "$port" && break; sleep 0.1; done
    listening "$port" || { echo "nothing listens on $port"; cat "$work"/*.log; exit 1; }
done

echo "machine: $(nproc) cores, $(uname -r); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== $scenarios: latchkey (8391) vs null HTTP server (8392), interleaved"
"$bench" run --scenarios "$scenarios" --http-addr 127.0.0.1:8391 --server-pid "$server_pid" \
    --baseline-http 127.0.0.1:8392 --baseline-http-pid "$null_pid" --connections "$conns" \
    --duration "$duration" --warmup "$warmup" --runs "$runs" --depth "$depth" --json \
    2> >(tee "$out/http-runs.txt" >&2) | tee "$out/http.jsonl"
