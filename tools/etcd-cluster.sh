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
# Needs Debian's etcd-server, curl and python3.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_etcd_cluster() {
    local dir="$1" i
    local -a clients=() peers=()
    for i in 0 1 2; do clients+=("$(free_port)"); peers+=("$(free_port)"); done
    local initial="m1=http://127.0.0.1:${peers[0]},m2=http://127.0.0.1:${peers[1]},m3=http://127.0.0.1:${peers[2]}"
    for i in 0 1 2; do
        etcd --name "m$((i + 1))" --data-dir "$dir/etcd$i" \
            --listen-client-urls "http://127.0.0.1:${clients[i]}" --advertise-client-urls "http://127.0.0.1:${clients[i]}" \
            --listen-peer-urls "http://127.0.0.1:${peers[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peers[i]}" \
            --initial-cluster "$initial" --initial-cluster-state new >"$dir/etcd$i.log" 2>&1 &
        pids+=($!)
    done
    ETCD_ENDPOINTS="127.0.0.1:${clients[0]},127.0.0.1:${clients[1]},127.0.0.1:${clients[2]}"
    for _ in $(seq 150); do
        if curl -fsS "http://127.0.0.1:${clients[0]}/health" 2>/dev/null | grep -q '"health":"true"'; then
            return 0
        fi
        sleep 0.2
    done
    echo "etcd did not become healthy; see $dir/etcd*.log" >&2
    return 1
}

etcd_work_dir() {
    work="$(mktemp -d "/tmp/$1.XXXXXX")"
    pids=()
    trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"' EXIT
    start_etcd_cluster "$work"
    head -c 32 /dev/urandom >"$work/token.key" && chmod 600 "$work/token.key"
}
