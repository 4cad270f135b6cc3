#!/usr/bin/env bash
# Cluster mode, measured on this machine: a 3-member etcd cluster and three
# Latchkey nodes (release, --features etcd) on loopback, plus one
# file-backed node as the single-node baseline.
#   1. revocation propagation: revoke on node 1, time until nodes 2 and 3
#      refuse the token (latchkey-bench propagation);
#   2. token login on a cluster node against the file-backed node,
#      interleaved run by run (latchkey-bench run --baseline).
# Knobs: ROUNDS (200), DURATION (3s), RUNS (5), CONNS (16).
# Needs Debian's etcd-server and protoc (protobuf-compiler, libprotobuf-dev).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds="${ROUNDS:-200}"; duration="${DURATION:-3s}"; runs="${RUNS:-5}"; conns="${CONNS:-16}"
cargo build --release -q -p latchkey-server --features etcd
cargo build --release -q -p latchkey-bench
bench=target/release/latchkey-bench
server=target/release/latchkey-server
source tools/etcd-cluster.sh
etcd_work_dir latchkey-cluster
for i in 1 2 3; do
    LATCHKEY_STORAGE_BACKEND=etcd LATCHKEY_STORAGE_ETCD_KEY_FILE="$work/token.key" \
    LATCHKEY_STORAGE_ETCD_ENDPOINTS="$ETCD_ENDPOINTS" \
    LATCHKEY_SYSTEM_PATH="$work/node$i" LATCHKEY_TCP_ADDRESS="127.0.0.1:1809$i" LATCHKEY_HTTP_ADDRESS="127.0.0.1:1819$i" \
        "$server" --config configs/server.toml --with-default-root-credentials >"$work/node$i.log" 2>&1 &
    pids+=($!)
done
LATCHKEY_SYSTEM_PATH="$work/file" LATCHKEY_TCP_ADDRESS=127.0.0.1:18090 LATCHKEY_HTTP_ADDRESS=127.0.0.1:18190 \
    "$server" --config configs/server.toml --with-default-root-credentials >"$work/file.log" 2>&1 &
file_pid=$!
pids+=("$file_pid")
sleep 2

echo "machine: $(nproc) cores, $(uname -r); $(etcd --version | head -1)"
echo "== revocation propagation (revoke on node 1; nodes 2 and 3 polled with token logins)"
"$bench" propagation --writer 127.0.0.1:18091 --readers 127.0.0.1:18092,127.0.0.1:18093 --rounds "$rounds"
echo "== token login: cluster node 1 against the file-backed node, interleaved"
"$bench" run --addr 127.0.0.1:18091 --label cluster-node --baseline 127.0.0.1:18090 --baseline-label file-node \
    --baseline-pid "$file_pid" --scenarios login --connections "$conns" --duration "$duration" --runs "$runs"
