#!/usr/bin/env bash
# Interop tests: the published Iggy SDKs against a freshly built
# latchkey-server on one port:
#   interop/iggy010  iggy = "=0.10.0", the legacy framing;
#   interop/iggy011  iggy = "=0.11.0", the 0.11 (VSR) framing.
# Works from any directory. Extra arguments are passed to every
# `cargo test` (e.g. a test name filter, or `-- --nocapture`); set
# INTEROP_SUITES="iggy011" to run only some suites. Under CI (CI=true) every
# suite runs, and a name filter or a shorter INTEROP_SUITES is refused, so a
# green CI run has run them all. The last line sums up what ran.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

fail() {
    echo "run.sh: $*" >&2
    exit 1
}

# Every suite there is: each interop/iggy*/ with its own Cargo.toml.
all_suites=()
for manifest in interop/iggy*/Cargo.toml; do
    all_suites+=("$(basename "$(dirname "$manifest")")")
done
[[ ${#all_suites[@]} -gt 0 ]] || fail "no suites in interop/"
read -r -a suites <<< "${INTEROP_SUITES:-${all_suites[*]}}"
for suite in "${suites[@]}"; do
    [[ -f "interop/$suite/Cargo.toml" ]] || fail "no suite interop/$suite (there are: ${all_suites[*]})"
done
if [[ "${CI:-}" == true ]]; then
    for suite in "${all_suites[@]}"; do
        [[ " ${suites[*]} " == *" $suite "* ]] ||
            fail "under CI every suite runs, and INTEROP_SUITES=\"${INTEROP_SUITES:-}\" leaves out $suite"
    done
    [[ $# -eq 0 ]] || fail "under CI every test runs, so no cargo test arguments: $*"
fi

cargo build -p latchkey-server

# Ask cargo where the binary went (honours CARGO_TARGET_DIR / build.target-dir).
target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
if [[ -z "$target_dir" ]]; then
    target_dir="$repo_root/target"
fi
server_bin="$target_dir/debug/latchkey-server"
if [[ ! -x "$server_bin" ]]; then
    fail "latchkey-server not found at $server_bin after the build"
fi

# Each suite is its own workspace with its own target directory, so the two
# SDK versions never share (or invalidate) each other's build.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
passed=0
for suite in "${suites[@]}"; do
    echo "== interop/$suite"
    LATCHKEY_SERVER_BIN="$server_bin" \
        cargo test --manifest-path "interop/$suite/Cargo.toml" "$@" 2>&1 | tee "$log"
    suite_passed="$(awk '/^test result: ok\./ { sum += $4 } END { print sum + 0 }' "$log")"
    # A filter that matches nothing still exits 0; a suite that ran no test
    # has shown nothing.
    [[ $suite_passed -gt 0 ]] || fail "interop/$suite ran no test"
    passed=$((passed + suite_passed))
done
echo "interop: ${#suites[@]} of ${#all_suites[@]} suites (${suites[*]}), $passed tests passed"
