#!/usr/bin/env bash
# A short coverage-guided run of every fuzz target, for .ci/run: builds the
# targets, then runs each for LATCHKEY_FUZZ_SECONDS (default 15) from the
# committed seeds, one process at a time. A crash fails the run and leaves the
# input in fuzz/artifacts/<target>/. The long runs are in RELIABILITY.md.
#
# cargo-fuzz needs a nightly toolchain; without one the step says so and is
# skipped rather than failed. cargo-fuzz itself is installed when missing
# (about 80 s on this 2-core machine).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${LATCHKEY_FUZZ_SECONDS:-15}"

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly'; then
    echo "skipped: no nightly toolchain, which cargo-fuzz needs (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    started=$SECONDS
    cargo install cargo-fuzz --locked
    echo "installed cargo-fuzz in $((SECONDS - started)) s"
fi
cargo fuzz --version

started=$SECONDS
cargo +nightly fuzz build
echo "built the fuzz targets in $((SECONDS - started)) s"

for target in $(cargo +nightly fuzz list); do
    log="$(mktemp)"
    if cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        # The DONE line carries coverage and exec/s; the stats line the count.
        done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
        runs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
        echo "fuzz $target: ${runs:-?} executions in ${seconds} s, no crash; ${done_line:-no DONE line}"
        rm -f "$log"
    else
        tail -n 60 "$log"
        echo "fuzz $target FAILED: the crashing input is in fuzz/artifacts/$target/ (log: $log)"
        exit 1
    fi
done
