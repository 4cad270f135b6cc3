#!/usr/bin/env bash
# A/B of two server builds, interleaved run by run by latchkey-bench:
# this tree's release build (A) against BASELINE (B, e.g. a build of an
# older commit: git worktree add /tmp/old REV && cargo build --release
# --manifest-path /tmp/old/Cargo.toml -p latchkey-server).
# Knobs: SCENARIOS (login,churn,authorize,list), CONNS (16,64), DURATION (3s), RUNS (5).
# Both servers take the environment: LATCHKEY_SYSTEM_SHARDS=1 runs each on one
# worker (the fastest shape on two cores with the load generator beside).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BASELINE:?set BASELINE to the other latchkey-server binary}"
cargo build --release -q -p latchkey-server -p latchkey-bench
work="$(mktemp -d /tmp/latchkey-ab.XXXXXX)"
LATCHKEY_SYSTEM_PATH="$work/a" LATCHKEY_TCP_ADDRESS=127.0.0.1:8190 LATCHKEY_HTTP_ADDRESS=127.0.0.1:8290 \
    target/release/latchkey-server --config configs/server.toml --with-default-root-credentials >"$work/a.log" 2>&1 &
a=$!
LATCHKEY_SYSTEM_PATH="$work/b" LATCHKEY_TCP_ADDRESS=127.0.0.1:8191 LATCHKEY_HTTP_ADDRESS=127.0.0.1:8291 \
    "$BASELINE" --config configs/server.toml --with-default-root-credentials >"$work/b.log" 2>&1 &
b=$!
trap 'kill $a $b 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1.5
target/release/latchkey-bench run --addr 127.0.0.1:8190 --label this-tree --server-pid "$a" \
    --baseline 127.0.0.1:8191 --baseline-label baseline --baseline-pid "$b" \
    --scenarios "${SCENARIOS:-login,churn,authorize,list}" --connections "${CONNS:-16,64}" \
    --duration "${DURATION:-3s}" --warmup 1s --runs "${RUNS:-5}"
