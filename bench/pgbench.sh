#!/usr/bin/env bash
# Side-by-side baseline: PostgreSQL (Debian's package) with the same token
# schema, driven by pgbench at the same client counts as latchkey-bench.
#   login: a primary-key lookup of the token hash (what a PAT login needs);
#   churn: an INSERT then a DELETE, each its own transaction, with default
#          durability (fsync = on, synchronous_commit = on).
# Prints one line per scenario and client count: tps, p50 / p99 latency (µs).
# Usage: bench/pgbench.sh [clients...]   (default: 1 16 64; DURATION=5 s)
set -euo pipefail

clients=("${@:-1 16 64}")
read -r -a clients <<<"${clients[*]}"
duration="${DURATION:-5}"
port="${PGPORT_BENCH:-5499}"

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v pgbench >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
pgbin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work="$(mktemp -d /tmp/latchkey-pgbench.XXXXXX)"
[[ $(id -u) == 0 ]] && chown postgres "$work"
cleanup() { as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"; }
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

printf '%-10s %-8s %6s %12s %12s %8s %8s\n' target scenario conns tps ops/s p50_us p99_us
for scenario in login churn; do
    for c in "${clients[@]}"; do
        rm -f "$work"/pgbench_log.*
        out="$(cd "$work" && as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U bench -c "$c" -j 1 \
            -T "$duration" -l -f "$work/$scenario.sql" postgres 2>&1)"
        tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)"
        # A churn transaction is two commits (two durable writes), like
        # latchkey-bench's churn counting create and delete separately.
        ops="$(awk -v t="$tps" -v s="$scenario" 'BEGIN { printf "%.0f", (s == "churn" ? 2 : 1) * t }')"
        read -r p50 p99 <<<"$(quantiles "$work"/pgbench_log.*)"
        printf '%-10s %-8s %6s %12.0f %12s %8s %8s\n' postgresql "$scenario" "$c" "$tps" "$ops" "$p50" "$p99"
    done
done
