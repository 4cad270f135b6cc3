#!/usr/bin/env bash
# RabbitMQ's publish rate with its internal user database against the same
# broker asking Latchkey (rabbitmq_auth_backend_http behind
# rabbitmq_auth_backend_cache, TTL 60 s), runs alternating A B A B, and the
# connect time (where the auth questions are asked) of each.
# Needs Debian's rabbitmq-server and python3-pika.
# Knobs: RUNS (5), MESSAGES (20000), TTL_MS (60000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs="${RUNS:-5}"; messages="${MESSAGES:-20000}"; ttl="${TTL_MS:-60000}"
python=/usr/bin/python3
cargo build --release -q -p latchkey-server
server=target/release/latchkey-server
work="$(mktemp -d /tmp/latchkey-rabbit.XXXXXX)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

LATCHKEY_SYSTEM_PATH="$work/latchkey" LATCHKEY_TCP_ADDRESS=127.0.0.1:8490 LATCHKEY_HTTP_ADDRESS=127.0.0.1:8491 \
    setsid "$server" --config configs/server.toml --with-default-root-credentials >"$work/latchkey.log" 2>&1 &
pids+=($!); disown $!

start_rabbit() { # name port dist_port config_text
    local dir="$work/$1"
    mkdir -p "$dir"
    printf '%s\n' "$4" >"$dir/rabbitmq.conf"
    echo '[rabbitmq_auth_backend_http,rabbitmq_auth_backend_cache].' >"$dir/enabled_plugins"
    HOME="$dir" RABBITMQ_NODENAME="$1@localhost" RABBITMQ_NODE_PORT="$2" RABBITMQ_DIST_PORT="$3" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_LOGS=- \
        setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/out.log" 2>&1 &
    pids+=($!); disown $!
}
start_rabbit lk-internal 8492 8493 "listeners.tcp.default = 127.0.0.1:8492
loopback_users = none
default_user = bench
default_pass = bench-password"
start_rabbit lk-latchkey 8494 8495 "listeners.tcp.default = 127.0.0.1:8494
loopback_users = none
auth_backends.1 = cache
auth_cache.cached_backend = http
auth_cache.cache_ttl = $ttl
auth_http.http_method = post
auth_http.user_path = http://127.0.0.1:8491/v1/rabbitmq/user
auth_http.vhost_path = http://127.0.0.1:8491/v1/rabbitmq/vhost
auth_http.resource_path = http://127.0.0.1:8491/v1/rabbitmq/resource
auth_http.topic_path = http://127.0.0.1:8491/v1/rabbitmq/topic"
for node in lk-internal lk-latchkey; do
    for _ in $(seq 1 120); do grep -q "Server startup complete" "$work/$node/out.log" && break; sleep 0.5; done
done

# The internal node: its default user, with every permission on "/". The
# Latchkey node: a token with exactly what the publisher needs, and an admin
# token to set up.
token() { curl -sf -u iggy:iggy 127.0.0.1:8491/v1/tokens -d "$1" | $python -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
admin=$(token '{"name":"admin"}')
publisher=$(token '{"name":"publisher","scopes":["vhost:*:access","exchange:bench:write","queue:bench-in:read"]}')
setup='import pika,sys
c=pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1",port=int(sys.argv[1]),credentials=pika.PlainCredentials(sys.argv[2],sys.argv[3])))
ch=c.channel(); ch.exchange_declare(exchange="bench",exchange_type="fanout"); ch.queue_declare(queue="bench-in"); ch.queue_bind(queue="bench-in",exchange="bench"); c.close()'
$python -c "$setup" 8492 bench bench-password
$python -c "$setup" 8494 iggy/admin "$admin"

echo "machine: $(nproc) cores, $(uname -r); RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null); $messages messages per run, cache TTL ${ttl} ms"
for run in $(seq 1 "$runs"); do
    a=$($python bench/rabbitmq_publish.py 8492 bench bench-password "$messages")
    b=$($python bench/rabbitmq_publish.py 8494 iggy/publisher "$publisher" "$messages")
    echo "run $run internal $a"
    echo "run $run latchkey $b"
done | tee "$work/runs.txt"
$python - "$work/runs.txt" <<'PY'
import json, statistics, sys
rows = {"internal": [], "latchkey": []}
for line in open(sys.argv[1]):
    _, _, label, data = line.split(" ", 3)
    rows[label].append(json.loads(data))
for label, values in rows.items():
    rates = sorted(v["publish_per_s"] for v in values)
    connects = sorted(v["connect_ms"] for v in values)
    print(f"{label:9} publish/s median {statistics.median(rates):>8.0f} (min {rates[0]}, max {rates[-1]})"
          f"   connect ms median {statistics.median(connects):6.2f} (min {connects[0]}, max {connects[-1]})")
ratio = statistics.median(v["publish_per_s"] for v in rows["latchkey"]) / statistics.median(v["publish_per_s"] for v in rows["internal"])
print(f"latchkey / internal publish rate: {ratio:.3f}")
PY
