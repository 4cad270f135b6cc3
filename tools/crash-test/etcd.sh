#!/usr/bin/env bash
# crash-test in cluster mode: a 3-member etcd cluster on loopback, a
# latchkey-server built with --features etcd, SIGKILLed under load and
# restarted on the same cluster each cycle. Arguments go to crash-test
# (e.g. --cycles 10). Needs Debian's etcd-server, curl and protoc.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

cargo build -p latchkey-server --features etcd
work="$(mktemp -d /tmp/latchkey-crash-etcd.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source tools/etcd-cluster.sh
start_etcd_cluster "$work"
head -c 32 /dev/urandom >"$work/token.key" && chmod 600 "$work/token.key"
cargo run -p latchkey-crash-test -- --server-bin "$repo_root/target/debug/latchkey-server" \
    --etcd-endpoints "$ETCD_ENDPOINTS" --etcd-key-file "$work/token.key" "$@"
