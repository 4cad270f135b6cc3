#!/usr/bin/env bash
# The interop suites (published iggy 0.10.0 and 0.11.0 SDKs) against cluster
# nodes: a 3-member etcd cluster on loopback, a latchkey-server built with
# --features etcd, every suite server a node under a prefix of its own.
# Needs Debian's etcd-server, curl and protoc. Extra arguments go to cargo test.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cargo build -p latchkey-server --features etcd
source tools/etcd-cluster.sh
etcd_work_dir latchkey-interop-etcd

export LATCHKEY_SERVER_BIN="$repo_root/target/debug/latchkey-server"
export LATCHKEY_INTEROP_ETCD_ENDPOINTS="$ETCD_ENDPOINTS"
export LATCHKEY_INTEROP_ETCD_KEY_FILE="$work/token.key"
for suite in iggy010 iggy011; do
    echo "== interop/$suite against cluster nodes (etcd $ETCD_ENDPOINTS)"
    cargo test --manifest-path "interop/$suite/Cargo.toml" "$@"
done
