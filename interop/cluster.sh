#!/usr/bin/env bash
# The interop suites (published iggy 0.10.0 and 0.11.0 SDKs) against cluster
# nodes: a 3-member etcd cluster on loopback, a latchkey-server built with
# --features etcd, every suite server a node under a prefix of its own.
# Needs Debian's etcd-server, curl and protoc. Extra arguments go to cargo test.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cargo build -p latchkey-server --features etcd
work="$(mktemp -d /tmp/latchkey-interop-etcd.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

source tools/etcd-cluster.sh
start_etcd_cluster "$work"
endpoints="$ETCD_ENDPOINTS"
head -c 32 /dev/urandom >"$work/token.key" && chmod 600 "$work/token.key"

export LATCHKEY_SERVER_BIN="$repo_root/target/debug/latchkey-server"
export LATCHKEY_INTEROP_ETCD_ENDPOINTS="$endpoints"
export LATCHKEY_INTEROP_ETCD_KEY_FILE="$work/token.key"
for suite in iggy010 iggy011; do
    echo "== interop/$suite against cluster nodes (etcd $endpoints)"
    cargo test --manifest-path "interop/$suite/Cargo.toml" "$@"
done
