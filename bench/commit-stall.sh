#!/usr/bin/env bash
# Commit latency while the writer thread has registry-sized work to do
# (issue #13 item 5): a compaction of a 1,000,000-token log, and the
# cleaner's purge of 100,000 expired tokens among 1,000,000. For each:
# `latchkey-bench commit-latency` (create/delete one after another on two
# connections) reports p50, p99 and the maximum of every durable write.
#
# Usage: bench/commit-stall.sh [SERVER_BINARY...]
#   Each server binary (default: this tree's release build) is measured on
#   copies of the same two data directories, filled once by the first.
#   Give binaries more than once (A B A B) to alternate them.
# Knobs: SECONDS_EACH (20), WORK (a new temporary directory),
#   CASES (default "baseline compacting purging": which runs to make),
#   ADDRESS (127.0.0.1:8390: where the server listens; another port when
#   another bench on the machine has that one), DEAD_RATIO (0: the
#   compacting case's dead ratio; 0 compacts back to back, so a faster
#   compactor makes more compactions in the same run, while e.g. 0.02
#   spaces them a few seconds apart whatever the build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
servers=("$@")
if [[ ${#servers[@]} -eq 0 ]]; then
    cargo build --release -q -p latchkey-server -p latchkey-bench
    servers=("${CARGO_TARGET_DIR:-target}/release/latchkey-server")
fi
bench="${BENCH:-${CARGO_TARGET_DIR:-target}/release/latchkey-bench}"
seconds="${SECONDS_EACH:-20}"
cases=" ${CASES:-baseline compacting purging} "
work="${WORK:-$(mktemp -d /tmp/latchkey-stall.XXXXXX)}"
mkdir -p "$work"
address="${ADDRESS:-127.0.0.1:8390}"
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; true' EXIT

# start BINARY DATA_DIR [ENV=VALUE...]: runs a server until `stop`.
start() {
    local binary="$1" dir="$2"
    shift 2
    env LATCHKEY_SYSTEM_PATH="$dir" LATCHKEY_TCP_ADDRESS="$address" LATCHKEY_HTTP_ENABLED=false \
        LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER=2000000 "$@" \
        "$binary" --with-default-root-credentials >"$dir.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        grep -q "listening" "$dir.log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$dir.log"; exit 1; }
        sleep 0.1
    done
    echo "server did not start: $dir.log" >&2
    exit 1
}

stop() {
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
}

never_compact=(LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS=1000000000)
no_cleaner=(LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED=false)

# The two data directories, filled by the first binary.
if [[ ! -d "$work/compaction" ]]; then
    start "${servers[0]}" "$work/compaction" "${never_compact[@]}" "${no_cleaner[@]}"
    "$bench" fill --addr "$address" --tokens 1000000
    stop
fi
if [[ "$cases" == *" purging "* && ! -d "$work/purge" ]]; then
    start "${servers[0]}" "$work/purge" "${never_compact[@]}" "${no_cleaner[@]}"
    "$bench" fill --addr "$address" --tokens 900000
    "$bench" fill --addr "$address" --tokens 100000 --prefix e --lifetime 1s
    stop
fi

for server in "${servers[@]}"; do
    echo "== $server"
    rm -rf "$work/run" "$work/run.log"

    if [[ "$cases" == *" baseline "* ]]; then
        cp -a "$work/compaction" "$work/run"
        start "$server" "$work/run" "${never_compact[@]}" "${no_cleaner[@]}"
        echo -n "1M tokens, no compaction (baseline):  "
        "$bench" commit-latency --addr "$address" --duration "${seconds}s"
        stop
        rm -rf "$work/run" "$work/run.log"
    fi

    if [[ "$cases" == *" compacting "* ]]; then
        # With DEAD_RATIO 0, due as soon as one record is dead: compactions
        # back to back.
        cp -a "$work/compaction" "$work/run"
        start "$server" "$work/run" LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS=1000000 \
            LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO="${DEAD_RATIO:-0}" "${no_cleaner[@]}"
        echo -n "1M tokens, compacting (from $(date -u +%T.%N | cut -c1-12)): "
        "$bench" commit-latency --addr "$address" --duration "${seconds}s"
        stop
        echo "   compactions installed: $(grep -c 'token log compacted' "$work/run.log")"
        cp "$work/run.log" "$work/compacting-$(date +%s).log"
        rm -rf "$work/run" "$work/run.log"
    fi

    if [[ "$cases" == *" purging "* ]]; then
        # The cleaner's first pass comes one interval after the start.
        cp -a "$work/purge" "$work/run"
        start "$server" "$work/run" "${never_compact[@]}" LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL=3s
        echo -n "1M tokens, purging 100k expired:      "
        "$bench" commit-latency --addr "$address" --duration "${seconds}s"
        stop
        LATCHKEY_SYSTEM_PATH="$work/run" "$server" log verify | grep -E '^tokens' | sed 's/^/   after: /'
        echo "   log lines mentioning the cleaner: $(grep -ci 'expired' "$work/run.log")"
        rm -rf "$work/run" "$work/run.log"
    fi
done
