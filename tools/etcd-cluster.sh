# Sourced by bench/cluster.sh, interop/cluster.sh and tools/crash-test/etcd.sh.
#
# etcd_work_dir NAME: makes a temporary work directory ($work), a `pids`
# array, and an EXIT trap that kills every pid in it and removes $work; then
# starts a 3-member etcd cluster there (start_etcd_cluster) and writes a key
# file for the nodes ($work/token.key, 32 random bytes, mode 0600).
#
# start_etcd_cluster DIR starts the cluster on free loopback ports with its
# data and logs in DIR, appends the members' pids to `pids`, waits until the
# first member is healthy, and sets ETCD_ENDPOINTS (host:port,...).
#
# etcd_chaos PERIOD (run in the background, after start_etcd_cluster):
# forever, one member at a time in turn, SIGKILL it, wait a second, start
# it again on its data and wait until it is healthy, then PERIOD seconds
# before the next. Never two down at once, so a quorum always remains.
# Needs Debian's etcd-server, curl and python3.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_etcd_member I: member I of the cluster start_etcd_cluster set up
# (its pid in etcd_pids[I]); on its existing data when restarted.
start_etcd_member() {
    local i="$1"
    etcd --name "m$((i + 1))" --data-dir "$ETCD_DIR/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${ETCD_CLIENTS[i]}" --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENTS[i]}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEERS[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEERS[i]}" \
        --initial-cluster "$ETCD_INITIAL" --initial-cluster-state new >>"$ETCD_DIR/etcd$i.log" 2>&1 &
    etcd_pids[i]=$!
}

# etcd_healthy I: waits (30 s at most) until member I says it is healthy.
etcd_healthy() {
    for _ in $(seq 150); do
        if curl -fsS "http://127.0.0.1:${ETCD_CLIENTS[$1]}/health" 2>/dev/null | grep -q '"health":"true"'; then
            return 0
        fi
        sleep 0.2
    done
    echo "etcd member $1 did not become healthy; see $ETCD_DIR/etcd$1.log" >&2
    return 1
}

start_etcd_cluster() {
    local i
    ETCD_DIR="$1"
    ETCD_CLIENTS=() ETCD_PEERS=() etcd_pids=()
    for i in 0 1 2; do ETCD_CLIENTS+=("$(free_port)"); ETCD_PEERS+=("$(free_port)"); done
    ETCD_INITIAL="m1=http://127.0.0.1:${ETCD_PEERS[0]},m2=http://127.0.0.1:${ETCD_PEERS[1]},m3=http://127.0.0.1:${ETCD_PEERS[2]}"
    for i in 0 1 2; do
        start_etcd_member "$i"
        pids+=("${etcd_pids[i]}")
    done
    ETCD_ENDPOINTS="127.0.0.1:${ETCD_CLIENTS[0]},127.0.0.1:${ETCD_CLIENTS[1]},127.0.0.1:${ETCD_CLIENTS[2]}"
    etcd_healthy 0
}

etcd_chaos() {
    local period="$1" i=0
    # Members restarted here are this subshell's; take them along when it ends.
    trap 'kill "${etcd_pids[@]}" 2>/dev/null || true' EXIT
    trap 'exit 0' TERM
    while true; do
        sleep "$period"
        kill -9 "${etcd_pids[i]}" 2>/dev/null || true
        echo "etcd chaos: SIGKILL member $i (pid ${etcd_pids[i]})"
        sleep 1
        start_etcd_member "$i"
        etcd_healthy "$i" && echo "etcd chaos: member $i back and healthy"
        i=$(((i + 1) % 3))
    done
}

etcd_work_dir() {
    work="$(mktemp -d "/tmp/$1.XXXXXX")"
    pids=()
    # Members restarted by etcd_chaos are not in `pids`: find them by their data.
    trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; pkill -9 -f -- "--data-dir $work/" 2>/dev/null || true; rm -rf "$work"' EXIT
    start_etcd_cluster "$work"
    head -c 32 /dev/urandom >"$work/token.key" && chmod 600 "$work/token.key"
}
