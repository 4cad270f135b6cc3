#!/usr/bin/env bash
# Side-by-side baseline: PostgreSQL (Debian's package) with the same token
# schema, driven by pgbench at the same client counts as latchkey-bench.
#   login: a primary-key lookup of the token hash (what a PAT login needs);
#   churn: an INSERT then a DELETE, each its own transaction, with default
#          durability (fsync = on, synchronous_commit = on).
# PostgreSQL is run at its best: pgbench with as many client threads as
# cores (`-j`, at most one per client) and no per-transaction log. The log
# (`-l`) and one thread halved its lookups on this 2-core machine; set
# PG_LATENCY_LOG=1 to have it anyway for p50 / p99 (otherwise pgbench's
# own average latency is printed, in the p50 column's place, p99 "-").
# With LATCHKEY=1 a release Latchkey (default config, fresh data directory)
# runs beside it and each figure alternates, pgbench then latchkey-bench,
# ROUNDS times (default 3), with the same scenario and client count; the
# last lines give the medians and their ratio.
# Prints one line per run: target, scenario, clients, tps, ops/s, latency.
# With ROWS=N it measures size instead: N rows like `latchkey-bench fill`'s
# tokens (one user, a 32-byte hash, a short name) are inserted into the same
# schema, the table is VACUUM ANALYZEd and pg_total_relation_size (heap,
# both indexes, TOAST) is printed, in bytes and per row; no pgbench run.
# Usage: bench/pgbench.sh [clients...]   (default: 1 16 64; DURATION=5 s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

clients=("${@:-1 16 64}")
read -r -a clients <<<"${clients[*]}"
duration="${DURATION:-5}"
rounds="${ROUNDS:-1}"
[[ "${LATCHKEY:-0}" == 1 ]] && rounds="${ROUNDS:-3}"
cores="$(nproc)"
port="${PGPORT_BENCH:-5499}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v pgbench >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work="$(mktemp -d /tmp/latchkey-pgbench.XXXXXX)"
[[ $(id -u) == 0 ]] && chown postgres "$work"
latchkey_pid=""
cleanup() {
    as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    [[ -n "$latchkey_pid" ]] && kill "$latchkey_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

as_pg "$pgbin/initdb" -D "$work/data" -A trust -U bench >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
    -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
psql_() { as_pg psql -h 127.0.0.1 -p "$port" -U bench -d postgres -q -v ON_ERROR_STOP=1 "$@"; }
echo "PostgreSQL: $(psql_ -tAc 'select version()' | cut -d, -f1); fsync=$(psql_ -tAc 'show fsync'), synchronous_commit=$(psql_ -tAc 'show synchronous_commit')"

psql_ <<'SQL'
CREATE TABLE tokens (
    hash bytea PRIMARY KEY,
    user_id integer NOT NULL,
    name text NOT NULL,
    created_at_us bigint NOT NULL,
    expiry_at_us bigint NOT NULL DEFAULT 0,
    UNIQUE (user_id, name)
);
INSERT INTO tokens
SELECT decode(md5('t' || i) || md5('u' || i), 'hex'), 0, 'bench-t' || i, 0, 0 FROM generate_series(0, 9) i;
SQL

if [[ -n "${ROWS:-}" ]]; then
    started=$(date +%s)
    psql_ -c "INSERT INTO tokens SELECT decode(md5('f' || i) || md5('g' || i), 'hex'), 1, 'f' || (i % 16) || '-' || (i / 16), 0, 0 FROM generate_series(1, ${ROWS}) i"
    psql_ -c "VACUUM ANALYZE tokens"
    psql_ -tA -F ' ' -c "SELECT count(*), pg_total_relation_size('tokens'), pg_relation_size('tokens'), pg_indexes_size('tokens') FROM tokens" |
        awk -v s="$(($(date +%s) - started))" '{ printf "PostgreSQL, %d rows: %d MiB in all (%.0f B per row): heap %d MiB, indexes %d MiB; %d s to insert\n", $1, $2 / 1048576, $2 / $1, $3 / 1048576, $4 / 1048576, s }'
    exit 0
fi

cat >"$work/login.sql" <<'SQL'
SELECT user_id, expiry_at_us FROM tokens WHERE hash = decode('dcd7d2cc2b7a9c3ba3ccf87aba17c5c49c43e1a83e9d1fb9f4edc52f23b21c14', 'hex');
SQL
# The lookup above must hit a row: make one with exactly that hash.
psql_ -c "INSERT INTO tokens VALUES (decode('dcd7d2cc2b7a9c3ba3ccf87aba17c5c49c43e1a83e9d1fb9f4edc52f23b21c14','hex'), 0, 'bench-login', 0, 0)"
cat >"$work/churn.sql" <<'SQL'
INSERT INTO tokens VALUES (decode(md5(random()::text) || md5(random()::text), 'hex'), 1, 'c' || :client_id, 0, 0);
DELETE FROM tokens WHERE user_id = 1 AND name = 'c' || :client_id;
SQL
chmod a+r "$work"/*.sql

quantiles() { # pgbench per-transaction log: column 3 is latency in µs
    cat "$@" | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {
        if (NR == 0) { print "- -"; exit }
        p50 = a[int(NR*0.50) > 0 ? int(NR*0.50) : 1]; p99 = a[int(NR*0.99) > 0 ? int(NR*0.99) : 1];
        print p50, p99 }'
}

if [[ "${LATCHKEY:-0}" == 1 ]]; then
    cargo build --release -q -p latchkey-server -p latchkey-bench
    bench="${CARGO_TARGET_DIR:-target}/release/latchkey-bench"
    LATCHKEY_SYSTEM_PATH="$work/latchkey" LATCHKEY_TCP_ADDRESS=127.0.0.1:8490 LATCHKEY_HTTP_ENABLED=false \
        "${CARGO_TARGET_DIR:-target}/release/latchkey-server" --config configs/server.toml \
        --with-default-root-credentials >"$work/latchkey.log" 2>&1 &
    latchkey_pid=$!
    for _ in $(seq 100); do grep -q listening "$work/latchkey.log" && break; sleep 0.1; done
fi

# pgbench SCENARIO CLIENTS: one run; prints its line.
pg_run() {
    local scenario="$1" c="$2" threads log=()
    threads=$((c < cores ? c : cores))
    [[ "${PG_LATENCY_LOG:-0}" == 1 ]] && log=(-l)
    rm -f "$work"/pgbench_log.*
    out="$(cd "$work" && as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U bench -c "$c" -j "$threads" \
        -T "$duration" "${log[@]}" -f "$work/$scenario.sql" postgres 2>&1)"
    tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)"
    # A churn transaction is two commits (two durable writes), like
    # latchkey-bench's churn counting create and delete separately.
    ops="$(awk -v t="$tps" -v s="$scenario" 'BEGIN { printf "%.0f", (s == "churn" ? 2 : 1) * t }')"
    if [[ "${PG_LATENCY_LOG:-0}" == 1 ]]; then
        read -r p50 p99 <<<"$(quantiles "$work"/pgbench_log.*)"
    else
        p50="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' <<<"$out" | awk '{printf "%.0f(avg)", $1 * 1000}')"
        p99=-
    fi
    printf '%-10s %-8s %6s %12.0f %12s %8s %8s\n' postgresql "$scenario" "$c" "$tps" "$ops" "$p50" "$p99"
}

# latchkey-bench SCENARIO CLIENTS: one run of the same shape; prints its line.
latchkey_run() {
    local line
    line="$("$bench" run --addr 127.0.0.1:8490 --scenarios "$1" --connections "$2" --duration "${duration}s" \
        --warmup 1s --runs 1 --json 2>/dev/null | grep '"ops_per_sec"' | tail -n 1)"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-10s %-8s %6s %12s %12.0f %8s %8s" % ("latchkey", sys.argv[2], sys.argv[3], "-", r["ops_per_sec"], r.get("p50_us","-"), r.get("p99_us","-")))' "$line" "$1" "$2"
}

printf '%-10s %-8s %6s %12s %12s %8s %8s\n' target scenario conns tps ops/s p50_us p99_us
for scenario in login churn; do
    for c in "${clients[@]}"; do
        for _ in $(seq "$rounds"); do
            pg_run "$scenario" "$c"
            [[ "${LATCHKEY:-0}" == 1 ]] && latchkey_run "$scenario" "$c"
        done
    done
done | tee "$work/runs.txt"

if [[ "${LATCHKEY:-0}" == 1 ]]; then
    echo "medians over $rounds alternating rounds (ops/s):"
    awk '{ key = $2 " " $3; v[$1, key] = v[$1, key] " " $5; keys[key] = 1 }
        END { for (k in keys) print k, v["postgresql", k], "|", v["latchkey", k] }' "$work/runs.txt" |
        python3 -c '
import sys, statistics
for line in sys.stdin:
    head, lk = line.split("|")
    parts = head.split(); scenario, c = parts[0], parts[1]
    pg = [float(x) for x in parts[2:]]; lkv = [float(x) for x in lk.split()]
    if not pg or not lkv: continue
    a, b = statistics.median(pg), statistics.median(lkv)
    print(f"{scenario:8} {c:>4} clients: postgresql {a:>9,.0f} ({min(pg):,.0f}-{max(pg):,.0f})  latchkey {b:>9,.0f} ({min(lkv):,.0f}-{max(lkv):,.0f})  latchkey/postgresql {b/a:.2f} x")
' | sort
fi
