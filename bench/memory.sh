#!/usr/bin/env bash
# The registry's memory and a restart at scale (BENCHMARKS.md, "10M tokens"):
#   1. a file-backed server (release build) is filled with TOKENS tokens by
#      `latchkey-bench fill`, which reports the whole process's RSS per
#      token 2 s after the fill;
#   2. it is stopped with SIGTERM (the stop timed until the process is
#      gone), then started RESTARTS times on the same log: each start timed
#      from exec until it logs "Latchkey listening" (polled every 10 ms),
#      its VmRSS and peak (VmHWM) read 2 s later, then stopped with SIGTERM, timed.
# Knobs: TOKENS (1000000), LIFETIME (each token's lifetime, e.g. 30d;
# default none: tokens that never expire), RESTARTS (3), SERVER (another latchkey-server
# binary to measure: a baseline build; default this tree's release build),
# WORK (where the data directory goes; default a fresh directory under
# /tmp, removed at the end), FILL (1; 0 skips step 1 and restarts on the
# data already in WORK: alternate SERVER=baseline and this build that way). TOKENS ≤ 10000000 (one user). Needs about 1.1 KB of memory and 100 B of disk
# per token.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tokens="${TOKENS:-1000000}"; restarts="${RESTARTS:-3}"
cargo build --release -q -p latchkey-server -p latchkey-bench
bench="${CARGO_TARGET_DIR:-target}/release/latchkey-bench"
server="${SERVER:-${CARGO_TARGET_DIR:-target}/release/latchkey-server}"
work="${WORK:-$(mktemp -d /tmp/latchkey-memory.XXXXXX)}"
pid=
trap '[[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null; [[ -z "${WORK:-}" ]] && rm -rf "$work"' EXIT

export LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER=$tokens
export LATCHKEY_SYSTEM_PATH="$work/data" LATCHKEY_TCP_ADDRESS=127.0.0.1:18490 LATCHKEY_HTTP_ENABLED=false

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# start: starts the server, waits until it listens (300 s at most); sets pid
# and listen_ms.
start() {
    local started
    started=$(now_ms)
    "$server" --with-default-root-credentials >>"$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 30000); do
        if grep -q "Latchkey listening" <(tail -n 5 "$work/server.log"); then
            listen_ms=$(($(now_ms) - started))
            return
        fi
        kill -0 "$pid" 2>/dev/null || { tail "$work/server.log"; exit 1; }
        sleep 0.01
    done
    echo "the server did not listen within 300 s" >&2
    exit 1
}

# stop: SIGTERM, waits for the process to be gone; sets stop_ms.
stop() {
    local started
    started=$(now_ms)
    kill -TERM "$pid"
    wait "$pid" || true
    stop_ms=$(($(now_ms) - started))
    pid=
}

# The RSS now, and its peak so far (VmHWM: what the replay held at most).
rss_per_token() {
    awk -v tokens="$tokens" '$1 == "VmRSS:" { printf "%d MiB, %.0f B per token", $2 / 1024, $2 * 1024 / tokens }
        $1 == "VmHWM:" { peak = $2 } END { printf " (peak %d MiB, %.0f B per token)", peak / 1024, peak * 1024 / tokens }' \
        "/proc/$pid/status"
}

echo "server: $server; tokens: $tokens"
if [[ "${FILL:-1}" != 0 ]]; then
    start
    "$bench" fill --addr 127.0.0.1:18490 --tokens "$tokens" --server-pid "$pid" ${LIFETIME:+--lifetime "$LIFETIME"}
    stop
    echo "stop after the fill: $stop_ms ms"
fi
for round in $(seq "$restarts"); do
    : >"$work/server.log"
    start
    sleep 2
    rss=$(rss_per_token)
    stop
    echo "restart $round: listening after $listen_ms ms; RSS $rss; stop $stop_ms ms"
done
