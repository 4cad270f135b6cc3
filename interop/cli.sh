#!/usr/bin/env bash
# The published Iggy CLI (iggy-cli 0.14.0, 0.11 framing) against a fresh
# latchkey-server: ping, me, pat create (never / 1day / duplicate), pat list,
# login with -t <token>, pat delete (existing / missing), a bogus token and a
# wrong password. Each step checks the exit status and the output.
#
# The CLI binary is $IGGY_CLI, else `iggy` on PATH. Install it with
#   cargo install iggy-cli --version 0.14.0 --locked --root /tmp/iggy-cli
# and run IGGY_CLI=/tmp/iggy-cli/bin/iggy bash interop/cli.sh
#
# Without a D-Bus secret service (CI, containers) the CLI warns that the
# keyring is unavailable, and `pat delete` of an existing token reports a
# keyring error after the server-side delete succeeded (spec §2.18), so that
# step is checked through `pat list` rather than the exit status.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cli="${IGGY_CLI:-$(command -v iggy || true)}"
if [[ -z "$cli" || ! -x "$cli" ]]; then
    echo "cli.sh: iggy-cli not found; set IGGY_CLI or put iggy on PATH" >&2
    exit 2
fi
version="$("$cli" --version 2>/dev/null || true)"
if [[ "$version" != *"0.14.0"* ]]; then
    echo "cli.sh: expected iggy-cli 0.14.0, $cli says: $version" >&2
    exit 2
fi

cargo build -p latchkey-server
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
server_bin="${target_dir:-$repo_root/target}/debug/latchkey-server"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

: > "$work/server.toml"
LATCHKEY_SYSTEM_PATH="$work/data" LATCHKEY_TCP_ADDRESS=127.0.0.1:0 LATCHKEY_HTTP_ADDRESS=127.0.0.1:0 LATCHKEY_LOG=info \
    "$server_bin" --config "$work/server.toml" --with-default-root-credentials \
    > "$work/server.log" 2>&1 &
server_pid=$!
address=""
for _ in $(seq 1 300); do
    address="$(sed -n 's/.*Latchkey listening on \([0-9.:]*\).*/\1/p' "$work/server.log" | sed -n 1p)"
    [[ -n "$address" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "cli.sh: latchkey-server exited during start:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$address" ]]; then
    echo "cli.sh: latchkey-server did not start listening" >&2
    exit 1
fi
echo "latchkey-server on $address; $cli ($version)"

passed=0
failed=0
output=""
status=0

# Runs the CLI against the server; keeps its output (stdout + stderr) and status.
iggy() {
    set +e
    output="$(timeout 60 "$cli" --tcp-server-address "$address" "$@" 2>&1)"
    status=$?
    set -e
}

# check NAME EXPECTED_STATUS(0|nonzero|any) [PATTERN...]: every PATTERN must
# appear in the output.
check() {
    local name="$1" expected="$2"
    shift 2
    local ok=1
    case "$expected" in
        0) [[ $status -eq 0 ]] || ok=0 ;;
        nonzero) [[ $status -ne 0 ]] || ok=0 ;;
        any) ;;
    esac
    local pattern
    for pattern in "$@"; do
        grep -qE -- "$pattern" <<< "$output" || ok=0
    done
    if [[ $ok -eq 1 ]]; then
        passed=$((passed + 1))
        echo "ok   $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name (exit status $status); output:"
        sed 's/^/    /' <<< "$output"
    fi
}

root=(-u iggy -p iggy)

iggy ping
check "ping (no login)" 0 "Ping sequence id: 1"

iggy "${root[@]}" me
check "me with a password" 0 "User ID +\| 0 " "Transport +\| TCP"

iggy "${root[@]}" pat create cli-never
check "pat create without expiry" 0 "cli-never and without token expire time created" "Token: lk_[0-9A-Za-z]{49}"
token="$(sed -n 's/^Token: \(lk_[0-9A-Za-z]*\).*/\1/p' <<< "$output" | sed -n 1p)"

iggy "${root[@]}" pat create cli-day 1day
check "pat create with 1day" 0 "cli-day and token expire time: 1day created" "Token: lk_"

iggy "${root[@]}" pat create cli-never
check "pat create duplicate (51)" nonzero "already exists"

iggy "${root[@]}" pat list
check "pat list" 0 "cli-day" "cli-never +\| unlimited"

iggy -t "$token" me
check "me with -t <token>" 0 "User ID +\| 0 " "Transport +\| TCP"

iggy -t "$token" pat list
check "pat list with -t <token>" 0 "cli-day" "cli-never"

iggy "${root[@]}" pat delete cli-day
check "pat delete (server side)" any "Executing delete personal access tokens with name: cli-day"
iggy "${root[@]}" pat list
if grep -q "cli-day" <<< "$output"; then status=1; fi
check "pat list after delete" 0 "cli-never"

iggy "${root[@]}" pat delete cli-day
check "pat delete missing (20)" nonzero "was not found"

iggy "${root[@]}" pat delete cli-never
iggy -t "$token" me
check "me with a deleted token (53)" nonzero "Problem with server login with token" "Invalid personal access token"

iggy -t "lk_definitelyNotAToken" me
check "me with a bogus token (53)" nonzero "Invalid personal access token"

iggy -u iggy -p not-the-password me
check "me with a wrong password (42)" nonzero "Invalid credentials"

if ! kill -0 "$server_pid" 2>/dev/null; then
    failed=$((failed + 1))
    echo "FAIL the server exited during the run:"
    cat "$work/server.log"
fi
echo "cli: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
