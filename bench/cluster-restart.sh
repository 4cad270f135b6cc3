#!/usr/bin/env bash
# A node's restart with many tokens, cluster against file-backed, on this
# machine (BENCHMARKS.md, "Cluster mode (etcd)"):
#   1. a file-backed node is filled with TOKENS tokens (latchkey-bench
#      fill) and stopped; its data directory is the file-backed side;
#   2. the server's own `export` writes them to a file, its key becomes the
#      cluster's key file, and the server's own `import` writes them into a
#      3-member etcd cluster on loopback (tools/etcd-cluster.sh): the same
#      tokens, with the key layout and encodings a node uses;
#   3. RESTARTS times, alternately: the file-backed node, then a cluster
#      node, each started, timed from its start until it logs "Latchkey
#      listening" (polled every 10 ms), its VmRSS and VmHWM read from
#      /proc/PID/status one second later, and then SIGKILLed.
# Knobs: TOKENS (1000000), RESTARTS (3), BEFORE (a path to another
# latchkey-server built with the etcd feature: each round then also starts
# a cluster node with it, between the file-backed and this build's cluster
# node, so a change to the cluster's start-up is measured alternated with
# its baseline). Binaries come from
# $CARGO_TARGET_DIR (default target). Needs Debian's etcd-server and
# protoc; about 3 GB of free memory and 2 GB of disk under /tmp at 1M.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tokens="${TOKENS:-1000000}"; restarts="${RESTARTS:-3}"
cargo build --release -q -p latchkey-server --features etcd
cargo build --release -q -p latchkey-bench --features etcd
bench="${CARGO_TARGET_DIR:-target}/release/latchkey-bench"
server="${CARGO_TARGET_DIR:-target}/release/latchkey-server"
source tools/etcd-cluster.sh
etcd_work_dir latchkey-restart

export LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER=$((tokens + 1000))
file_env=(LATCHKEY_SYSTEM_PATH="$work/file" LATCHKEY_TCP_ADDRESS=127.0.0.1:18290 LATCHKEY_HTTP_ADDRESS=127.0.0.1:18390)
etcd_env=(LATCHKEY_STORAGE_BACKEND=etcd LATCHKEY_STORAGE_ETCD_KEY_FILE="$work/token.key"
    LATCHKEY_STORAGE_ETCD_ENDPOINTS="$ETCD_ENDPOINTS" LATCHKEY_SYSTEM_PATH="$work/node"
    LATCHKEY_TCP_ADDRESS=127.0.0.1:18291 LATCHKEY_HTTP_ADDRESS=127.0.0.1:18391)

# cpu_ms PID...: user + system CPU the processes have used, in ms.
cpu_ms() {
    local total=0 pid ticks
    for pid in "$@"; do
        ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + ticks))
    done
    echo $((total * 1000 / $(getconf CLK_TCK)))
}

# status PID FIELD: a /proc/PID/status figure in MiB.
status() { awk -v field="$2:" '$1 == field { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# start_timed NAME ENV...: starts a node, waits until it listens (120 s at
# most); sets node_pid and listen_ms.
start_timed() {
    local name="$1" log="$work/$1.log" started
    shift
    started=$(date +%s%N)
    env "$@" "$server" --config configs/server.toml --with-default-root-credentials >"$log" 2>&1 &
    node_pid=$!
    pids+=("$node_pid")
    for _ in $(seq 12000); do
        if grep -q "Latchkey listening" "$log"; then
            listen_ms=$((($(date +%s%N) - started) / 1000000))
            return 0
        fi
        kill -0 "$node_pid" 2>/dev/null || break
        sleep 0.01
    done
    echo "$name did not start; see $log" >&2
    tail -5 "$log" >&2
    return 1
}

# stop_node SIGNAL: stops the node start_timed started (the last in `pids`).
stop_node() {
    kill -s "$1" "$node_pid"
    wait "$node_pid" 2>/dev/null || true
    unset 'pids[-1]'
}

echo "machine: $(nproc) cores, $(uname -r); $(etcd --version | sed -n 1p); $tokens tokens"
echo "== fill a file-backed node"
start_timed fill "${file_env[@]}"
"$bench" fill --addr 127.0.0.1:18290 --tokens "$tokens" --server-pid "$node_pid"
stop_node TERM

echo "== export, and import into etcd"
env "${file_env[@]}" "$server" --config configs/server.toml export --out "$work/tokens.export" | grep -v " INFO "
echo "export: $(($(stat -c %s "$work/tokens.export") / 1048576)) MiB"
install -m 600 "$work/file/server.key" "$work/token.key"
started=$(date +%s)
env "${etcd_env[@]}" "$server" --config configs/server.toml import --in "$work/tokens.export" | grep -v " INFO "
echo "import took $(($(date +%s) - started)) s; etcd member data: $(du -sm "$work/etcd0" | cut -f1) MiB"

echo "== restarts to \"Latchkey listening\", alternating (then SIGKILL)"
for round in $(seq "$restarts"); do
    sides=(file cluster)
    [[ -n ${BEFORE:-} ]] && sides=(file cluster-before cluster)
    for side in "${sides[@]}"; do
        etcd_before=$(cpu_ms $(pgrep -x etcd))
        if [[ $side == file ]]; then
            start_timed "file-$round" "${file_env[@]}"
            loaded=$(grep 'token log replayed' "$work/file-$round.log" | grep -o 'elapsed_ms=[0-9]*')
        else
            this_server="$server"
            [[ $side == cluster-before ]] && server="$BEFORE"
            start_timed "$side-$round" "${etcd_env[@]}"
            server="$this_server"
            loaded=$(grep 'registry loaded from etcd' "$work/$side-$round.log" | grep -o 'elapsed_ms=[0-9]*')
            if grep -q 'keys outside every user' "$work/$side-$round.log"; then
                echo "$side restart $round: fell back to the whole listing" >&2
            fi
        fi
        node_cpu=$(cpu_ms "$node_pid") etcd_cpu=$(($(cpu_ms $(pgrep -x etcd)) - etcd_before))
        sleep 1
        echo "$side restart $round: listening after $listen_ms ms (store: ${loaded#elapsed_ms=} ms; CPU: node $node_cpu ms, etcd members $etcd_cpu ms); VmRSS $(status "$node_pid" VmRSS) MiB, VmHWM $(status "$node_pid" VmHWM) MiB"
        stop_node KILL
    done
done
