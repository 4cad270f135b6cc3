#!/usr/bin/env bash
# A short coverage-guided run of every fuzz target, for .ci/run: lints the
# fuzz crate, builds the targets, then runs each for LATCHKEY_FUZZ_SECONDS
# (default 15) from the committed seeds, one process at a time. A crash fails
# the run and leaves the input in fuzz/artifacts/<target>/. The long runs are
# in RELIABILITY.md.
#
# What it needs it installs: the nightly toolchain (cargo-fuzz builds with
# nightly-only flags; `rustup toolchain install nightly`, about a minute) and
# cargo-fuzz (about 80 s on this 2-core machine). Nothing is skipped: every
# target in fuzz_targets/ must run and report its executions, or the script
# fails, so a green run has fuzzed them all. The last line sums it up.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${LATCHKEY_FUZZ_SECONDS:-15}"

fail() {
    echo "fuzz/ci.sh: $*" >&2
    exit 1
}

command -v rustup >/dev/null 2>&1 ||
    fail "rustup is needed to install the nightly toolchain cargo-fuzz builds with (see rustup.rs)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    started=$SECONDS
    rustup toolchain install nightly --profile minimal --component clippy
    echo "installed the nightly toolchain in $((SECONDS - started)) s"
fi
if ! rustup run nightly cargo clippy --version >/dev/null 2>&1; then
    rustup component add clippy --toolchain nightly
fi
rustup run nightly rustc --version
if ! cargo fuzz --version >/dev/null 2>&1; then
    started=$SECONDS
    cargo install cargo-fuzz --locked
    echo "installed cargo-fuzz in $((SECONDS - started)) s"
fi
cargo fuzz --version

# The fuzz crate is outside the main workspace, so the workspace's clippy
# run does not see it. Nightly, because libfuzzer-sys is built as cargo-fuzz
# builds it.
cargo +nightly clippy --all-targets -- -D warnings

# The targets that must run: one per file in fuzz_targets/.
expected=()
for file in fuzz_targets/*.rs; do
    expected+=("$(basename "$file" .rs)")
done
[[ ${#expected[@]} -gt 0 ]] || fail "no fuzz targets in fuzz/fuzz_targets/"

started=$SECONDS
cargo +nightly fuzz build
echo "built the fuzz targets in $((SECONDS - started)) s"

# A failing `cargo fuzz list` stops the script here (set -e covers an
# assignment, not a `for` list), and a target it does not know is a failure.
listed="$(cargo +nightly fuzz list)"
for target in "${expected[@]}"; do
    grep -qx -- "$target" <<< "$listed" || fail "cargo fuzz list does not know fuzz_targets/$target.rs: $listed"
done

ran=0
executions=0
for target in "${expected[@]}"; do
    log="$(mktemp)"
    if cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        # The DONE line carries coverage and exec/s; the stats line the count.
        done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
        runs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
        if ! [[ "$runs" =~ ^[0-9]+$ && "$runs" -gt 0 ]]; then
            tail -n 40 "$log"
            fail "fuzz $target ran no input (no executed-units count; log: $log)"
        fi
        echo "fuzz $target: $runs executions in ${seconds} s, no crash; ${done_line:-no DONE line}"
        ran=$((ran + 1))
        executions=$((executions + runs))
        rm -f "$log"
    else
        tail -n 60 "$log"
        fail "fuzz $target FAILED: the crashing input is in fuzz/artifacts/$target/ (log: $log)"
    fi
done
[[ $ran -eq ${#expected[@]} ]] || fail "$ran of ${#expected[@]} fuzz targets ran"
echo "fuzz: $ran of ${#expected[@]} targets ran, $executions executions, no crash"
