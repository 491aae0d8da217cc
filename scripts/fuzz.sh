#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, through cargo-fuzz) of the targets in
# fuzz/fuzz_targets, each for SECONDS (default 300), from the checked-in
# seed corpus in fuzz/corpus/<target>. `.ci/run` runs 60 seconds each.
#
#   bash scripts/fuzz.sh              # every target, 5 minutes each
#   bash scripts/fuzz.sh 3600 dlb_queue
#
# cargo-fuzz passes sanitizer flags that rustc accepts only on nightly;
# RUSTC_BOOTSTRAP=1 lets this machine's stable toolchain take them. New
# inputs that reach new code go to target/fuzz-corpus/<target> (not
# committed); a crash stops the run with the input in
# fuzz/artifacts/<target>/, to be turned into a regression test.

set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
shift || true
case $secs in
    '' | *[!0-9]*)
        echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
        exit 2
        ;;
esac
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
for t in "${targets[@]}"; do
    work=target/fuzz-corpus/$t
    mkdir -p "$work"
    echo "==> fuzz $t for ${secs}s"
    (cd fuzz && cargo fuzz run "$t" -O "../$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1)
done
