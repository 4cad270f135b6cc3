#!/usr/bin/env bash
# crash-test in cluster mode: a 3-member etcd cluster on loopback, a
# latchkey-server built with --features etcd, SIGKILLed under load and
# restarted on the same cluster each cycle. Arguments go to crash-test
# (e.g. --cycles 10). ETCD_CHAOS=SECONDS also SIGKILLs the etcd members,
# one at a time in turn, every SECONDS (and restarts each); a write then
# answered 20002 (the store could not say) is in doubt, settled by the
# list after the next restart, like one cut by a kill.
# Needs Debian's etcd-server, curl and protoc.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

cargo build -p latchkey-server --features etcd
source tools/etcd-cluster.sh
etcd_work_dir latchkey-crash-etcd
extra=()
if [[ -n "${ETCD_CHAOS:-}" ]]; then
    etcd_chaos "$ETCD_CHAOS" &
    chaos=$!
    trap 'kill -9 "$chaos" 2>/dev/null || true; for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; pkill -9 -f -- "--data-dir $work/" 2>/dev/null || true; rm -rf "$work"' EXIT
    extra+=(--unavailable-is-in-doubt)
fi
cargo run -p latchkey-crash-test -- --server-bin "$repo_root/target/debug/latchkey-server" \
    --etcd-endpoints "$ETCD_ENDPOINTS" --etcd-key-file "$work/token.key" "${extra[@]}" "$@"
