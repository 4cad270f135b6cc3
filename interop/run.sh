#!/usr/bin/env bash
# Interop tests: the published Iggy SDK (iggy = "=0.10.0") against a freshly
# built latchkey-server. Works from any directory; extra arguments are passed
# to `cargo test` (e.g. a test name filter, or `-- --nocapture`).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

cargo build -p latchkey-server

# Ask cargo where the binary went (honours CARGO_TARGET_DIR / build.target-dir).
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [[ -z "$target_dir" ]]; then
    target_dir="$repo_root/target"
fi
server_bin="$target_dir/debug/latchkey-server"
if [[ ! -x "$server_bin" ]]; then
    echo "run.sh: latchkey-server not found at $server_bin after the build" >&2
    exit 1
fi

LATCHKEY_SERVER_BIN="$server_bin" \
    cargo test --manifest-path interop/iggy010/Cargo.toml "$@"
