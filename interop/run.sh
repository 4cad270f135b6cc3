#!/usr/bin/env bash
# Interop tests: the published Iggy SDKs against a freshly built
# latchkey-server on one port:
#   interop/iggy010  iggy = "=0.10.0", the legacy framing;
#   interop/iggy011  iggy = "=0.11.0", the 0.11 (VSR) framing.
# Works from any directory. Extra arguments are passed to every
# `cargo test` (e.g. a test name filter, or `-- --nocapture`); set
# INTEROP_SUITES="iggy011" to run only some suites.
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

# Each suite is its own workspace with its own target directory, so the two
# SDK versions never share (or invalidate) each other's build.
for suite in ${INTEROP_SUITES:-iggy010 iggy011}; do
    echo "== interop/$suite"
    LATCHKEY_SERVER_BIN="$server_bin" \
        cargo test --manifest-path "interop/$suite/Cargo.toml" "$@"
done
