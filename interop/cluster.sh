#!/usr/bin/env bash
# The interop suites (published iggy 0.10.0 and 0.11.0 SDKs) against cluster
# nodes: a 3-member etcd cluster on loopback, a latchkey-server built with
# --features etcd, every suite server a node under a prefix of its own.
# Needs Debian's etcd-server and protoc. Extra arguments go to cargo test.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cargo build -p latchkey-server --features etcd
work="$(mktemp -d /tmp/latchkey-interop-etcd.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
clients=(); peers=()
for i in 1 2 3; do clients+=("$(port)"); peers+=("$(port)"); done
initial="m1=http://127.0.0.1:${peers[0]},m2=http://127.0.0.1:${peers[1]},m3=http://127.0.0.1:${peers[2]}"
for i in 0 1 2; do
    etcd --name "m$((i + 1))" --data-dir "$work/m$i" \
        --listen-client-urls "http://127.0.0.1:${clients[i]}" --advertise-client-urls "http://127.0.0.1:${clients[i]}" \
        --listen-peer-urls "http://127.0.0.1:${peers[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peers[i]}" \
        --initial-cluster "$initial" --initial-cluster-state new >"$work/m$i.log" 2>&1 &
    pids+=($!)
done
endpoints="127.0.0.1:${clients[0]},127.0.0.1:${clients[1]},127.0.0.1:${clients[2]}"
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:${clients[0]}/health" 2>/dev/null | grep -q '"health":"true"' && break
    sleep 0.2
done
head -c 32 /dev/urandom >"$work/token.key" && chmod 600 "$work/token.key"

export LATCHKEY_SERVER_BIN="$repo_root/target/debug/latchkey-server"
export LATCHKEY_INTEROP_ETCD_ENDPOINTS="$endpoints"
export LATCHKEY_INTEROP_ETCD_KEY_FILE="$work/token.key"
for suite in iggy010 iggy011; do
    echo "== interop/$suite against cluster nodes (etcd $endpoints)"
    cargo test --manifest-path "interop/$suite/Cargo.toml" "$@"
done
