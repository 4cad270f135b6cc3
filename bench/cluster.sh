#!/usr/bin/env bash
# Cluster mode, measured on this machine: a 3-member etcd cluster and up to
# three Latchkey nodes (release, --features etcd) on loopback, plus one
# file-backed node as the single-node baseline.
#   1. durable churn (create + delete) through node 1 alone, then through
#      nodes 1-3 (connections spread round-robin), every connection
#      churning the same user's tokens, then through nodes 1-3 with each
#      connection churning a user of its own (bench-u0, bench-u1, ...: the
#      case id blocks are for; CLUSTER.md, "Id blocks"); each interleaved
#      run by run with the same transactions sent to the same etcd directly
#      (latchkey-bench etcd-churn): one at a time (etcd-serial), racing
#      on the shared id counter and count (etcd-shared), and with nothing
#      shared (etcd-indep). Nodes 2 and 3 are started after the one-node
#      runs, so those have no other node following the watch;
#   2. revocation propagation: revoke on node 1, time until nodes 2 and 3
#      refuse the token (latchkey-bench propagation);
#   3. token login on a cluster node against the file-backed node,
#      interleaved run by run (latchkey-bench run --baseline).
# Knobs: PARTS (churn,propagation,login), ROUNDS (200), DURATION (3s),
# WARMUP (1s), RUNS (5), CONNS (16, login), CHURN_CONNS (1,16,64),
# USERS_WARMUP (2s: the churn with a user per connection logs each
# connection in with a password, an Argon2 hash each, during the warm-up),
# SERVER (a latchkey-server built elsewhere, to measure another version
# with this tree's bench tool; default: this tree's, built here),
# PIN (login only: 1 puts node 1 and the file-backed node on CPU 0 and
# everything else, etcd, nodes 2 and 3 and the load generator, on CPU 1, so
# the node under test shares its core with nothing of the cluster's: the
# nearest this one machine comes to separate machines).
# Binaries come from $CARGO_TARGET_DIR (default target).
# Needs Debian's etcd-server and protoc (protobuf-compiler, libprotobuf-dev).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

parts="${PARTS:-churn,propagation,login}"
rounds="${ROUNDS:-200}"; duration="${DURATION:-3s}"; warmup="${WARMUP:-1s}"; runs="${RUNS:-5}"
conns="${CONNS:-16}"; churn_conns="${CHURN_CONNS:-1,16,64}"
users_warmup="${USERS_WARMUP:-2s}"
[[ -n "${SERVER:-}" ]] || cargo build --release -q -p latchkey-server --features etcd
cargo build --release -q -p latchkey-bench --features etcd
bench="${CARGO_TARGET_DIR:-target}/release/latchkey-bench"
server="${SERVER:-${CARGO_TARGET_DIR:-target}/release/latchkey-server}"
source tools/etcd-cluster.sh
etcd_work_dir latchkey-cluster

# Every node's config: the shipped one, and a user per churn connection
# (bench-u0 ... as many as the largest CHURN_CONNS), one password for all.
users_pass=bench-user-pass
max_conns=$(tr , '\n' <<<"$churn_conns" | sort -n | tail -1)
config="$work/server.toml"
cp configs/server.toml "$config"
users_hash=$(printf '%s' "$users_pass" | "$server" hash-password)
for ((i = 0; i < max_conns; i++)); do
    printf '\n[[users]]\nid = %d\nusername = "bench-u%d"\npassword_hash = "%s"\n' $((i + 1)) "$i" "$users_hash" >>"$config"
done

part() { [[ ",$parts," == *",$1,"* ]]; }

# await_listening LOG: until the node logging to LOG listens (30 s at most).
await_listening() {
    for _ in $(seq 300); do
        grep -q "Latchkey listening" "$1" && return 0
        sleep 0.1
    done
    echo "no node listening; see $1" >&2
    return 1
}

node_pids=()
start_node() {
    local i="$1"
    LATCHKEY_STORAGE_BACKEND=etcd LATCHKEY_STORAGE_ETCD_KEY_FILE="$work/token.key" \
    LATCHKEY_STORAGE_ETCD_ENDPOINTS="$ETCD_ENDPOINTS" \
    LATCHKEY_SYSTEM_PATH="$work/node$i" LATCHKEY_TCP_ADDRESS="127.0.0.1:1809$i" LATCHKEY_HTTP_ADDRESS="127.0.0.1:1819$i" \
        "$server" --config "$config" --with-default-root-credentials >"$work/node$i.log" 2>&1 &
    pids+=($!)
    node_pids+=($!)
    await_listening "$work/node$i.log"
}

# store_counters: the nodes' store counters, summed over the running nodes
# ("-" for one no node has, as in an older build).
store_counters=(changes_committed batches_committed conflicts id_blocks_leased)
store_counters() {
    local name i value total
    for name in "${store_counters[@]}"; do
        total=-
        for ((i = 1; i <= ${#node_pids[@]}; i++)); do
            value=$(curl -fsS "http://127.0.0.1:1819$i/metrics" | awk -v n="latchkey_store_${name}_total" '$1 == n { print $2 }')
            [[ -n "$value" ]] && total=$((${total/-/0} + value))
        done
        printf '%s ' "$total"
    done
}

# churn LABEL ADDRS WARMUP [ARGS...]: Latchkey through ADDRS against etcd
# directly; then what the nodes' stores counted over it (every run, warm-ups
# and setup included): changes, transactions, lost races, id blocks leased.
churn() {
    local label="$1" addrs="$2" warm="$3" before after i
    shift 3
    read -ra before <<<"$(store_counters)"
    "$bench" etcd-churn --addr "$addrs" --label "$label" --etcd "$ETCD_ENDPOINTS" \
        --etcd-pids "$(IFS=,; echo "${etcd_pids[*]}")" --node-pids "$(IFS=,; echo "${node_pids[*]}")" \
        --connections "$churn_conns" --duration "$duration" --warmup "$warm" --runs "$runs" "$@"
    read -ra after <<<"$(store_counters)"
    printf '%s, nodes summed over the whole part:' "$label"
    for i in "${!store_counters[@]}"; do
        if [[ "${after[i]}" == - ]]; then
            printf ' %s -' "${store_counters[i]}"
        else
            printf ' %s %s' "${store_counters[i]}" $((after[i] - before[i]))
        fi
    done
    echo
}

start_node 1
LATCHKEY_SYSTEM_PATH="$work/file" LATCHKEY_TCP_ADDRESS=127.0.0.1:18090 LATCHKEY_HTTP_ADDRESS=127.0.0.1:18190 \
    "$server" --config "$config" --with-default-root-credentials >"$work/file.log" 2>&1 &
file_pid=$!
pids+=("$file_pid")
await_listening "$work/file.log"

echo "machine: $(nproc) cores, $(uname -r); $(etcd --version | sed -n 1p)"
if part churn; then
    echo "== durable churn through 1 node against etcd directly, interleaved"
    churn latchkey-1n 127.0.0.1:18091 "$warmup"
fi
start_node 2
start_node 3
if part churn; then
    echo "== durable churn through 3 nodes (connections spread) against etcd directly, interleaved"
    churn latchkey-3n 127.0.0.1:18091,127.0.0.1:18092,127.0.0.1:18093 "$warmup"
    echo "== durable churn through 3 nodes, each connection its own user, against etcd directly, interleaved"
    churn latchkey-3n-users 127.0.0.1:18091,127.0.0.1:18092,127.0.0.1:18093 "$users_warmup" \
        --own-users bench-u --own-users-pass "$users_pass"
fi
if part propagation; then
    echo "== revocation propagation (revoke on node 1; nodes 2 and 3 polled with token logins)"
    "$bench" propagation --writer 127.0.0.1:18091 --readers 127.0.0.1:18092,127.0.0.1:18093 --rounds "$rounds"
fi
if part login; then
    echo "== token login: cluster node 1 against the file-backed node, interleaved"
    pin=()
    if [[ "${PIN:-0}" == 1 ]]; then
        echo "pinned: node 1 and the file-backed node on CPU 0; etcd, nodes 2-3 and the load generator on CPU 1"
        for pid in "${node_pids[0]}" "$file_pid"; do taskset -acp 0 "$pid" >/dev/null; done
        for pid in "${etcd_pids[@]}" "${node_pids[@]:1}"; do taskset -acp 1 "$pid" >/dev/null; done
        pin=(taskset -c 1)
    fi
    "${pin[@]}" "$bench" run --addr 127.0.0.1:18091 --label cluster-node --baseline 127.0.0.1:18090 --baseline-label file-node \
        --baseline-pid "$file_pid" --scenarios login --connections "$conns" --duration "$duration" --runs "$runs"
fi
