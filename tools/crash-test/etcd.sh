#!/usr/bin/env bash
# crash-test in cluster mode: a 3-member etcd cluster on loopback, a
# latchkey-server built with --features etcd, SIGKILLed under load and
# restarted on the same cluster each cycle. Arguments go to crash-test
# (e.g. --cycles 10). Needs Debian's etcd-server, curl and protoc.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

cargo build -p latchkey-server --features etcd
source tools/etcd-cluster.sh
etcd_work_dir latchkey-crash-etcd
cargo run -p latchkey-crash-test -- --server-bin "$repo_root/target/debug/latchkey-server" \
    --etcd-endpoints "$ETCD_ENDPOINTS" --etcd-key-file "$work/token.key" "$@"
