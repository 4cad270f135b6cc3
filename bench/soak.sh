#!/usr/bin/env bash
# TCP soak: honest clients log in with a token from 127.0.0.2 while hundreds of
# hostile connections from 127.0.0.1 send garbage, truncated frames, oversized
# length fields and one byte per second. Reports the honest clients' throughput
# and latency without and with the attack, measured in the same session.
# Knobs: ATTACKERS (400), CONNS (16), DURATION (10s), RUNS (3).
# Loopback only; every loop is bounded in time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

attackers="${ATTACKERS:-400}"; conns="${CONNS:-16}"; duration="${DURATION:-10s}"; runs="${RUNS:-3}"
cargo build --release -q -p latchkey-server -p latchkey-bench
bench=target/release/latchkey-bench
work="$(mktemp -d /tmp/latchkey-soak.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

LATCHKEY_SYSTEM_PATH="$work/data" LATCHKEY_TCP_ADDRESS=127.0.0.1:8095 LATCHKEY_HTTP_ADDRESS=127.0.0.1:8195 \
    target/release/latchkey-server --config configs/server.toml --with-default-root-credentials \
    >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
sleep 1

honest() {
    "$bench" run --addr 127.0.0.1:8095 --bind 127.0.0.2 --server-pid "$server_pid" --label "$1" \
        --scenarios login --connections "$conns" --duration "$duration" --warmup 1s --runs "$runs"
}

echo "== honest clients alone"
honest quiet
# Long enough to cover warm-up, every run and the setup between them.
seconds="${duration%s}"
attack_for="$(( (seconds + 2) * runs + 10 ))s"
echo "== honest clients under attack ($attackers hostile connections)"
"$bench" attack --addr 127.0.0.1:8095 --connections "$attackers" --duration "$attack_for" &
attack_pid=$!
pids+=("$attack_pid")
sleep 3
honest attacked
wait "$attack_pid" || true
echo "== server still serving: $(kill -0 "$server_pid" && echo yes)"
