#!/usr/bin/env bash
# Sweeps the DLB scheduler's thresholds one at a time around their defaults
# (event interval 61, shed threshold 4, pre-sleep poll 20 µs) over the
# workloads they are meant for: tokio's scheduler workloads that exercise
# them (benches/sched.rs) and the skewed connection scenario
# (benches/balance.rs, DLB mode only). About 8 minutes on 2 cores.
#
#   bash scripts/sweep.sh
#
# Output: target/bench/sweep/*.txt, one file per setting, and a summary on
# stdout. The benchmarks' own JSON and charts are left untouched.

set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --benches -q
bin() { find target/release/deps -maxdepth 1 -type f -executable -name "$1-*" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2; }
SCHED=$(bin sched)
BALANCE=$(bin balance)
out=target/bench/sweep
mkdir -p "$out"

run() { # name, env assignments...
    local name=$1
    shift
    echo "==> $name ($*)" >&2
    env "$@" CARGO_TARGET_DIR="$out/$name.target" FULCRUM_BENCH_RUNS=9 \
        "$SCHED" spawn_many_local busy1 ping_pong yield_many chained >"$out/$name.sched.txt" 2>&1 || true
    env "$@" CARGO_TARGET_DIR="$out/$name.target" FULCRUM_BENCH_RUNS=3 FULCRUM_BENCH_SECS=3 \
        "$BALANCE" skewed fulcrum-dlb >"$out/$name.balance.txt" 2>/dev/null || true
    rm -rf "$out/$name.target"
    local row
    row=$(awk -F'|' '/^\| [a-z_0-9]+ \|/ && $2 !~ /workload/ {gsub(/ /,"",$2); gsub(/ /,"",$3); printf "%s=%s ", $2, $3}' "$out/$name.sched.txt")
    local p99
    p99=$(awk -F'|' '/^\| skewed \| fulcrum-dlb/ {gsub(/ /,"",$6); print $6}' "$out/$name.balance.txt")
    echo "| $name | $row| skewed p99 ${p99:-?} µs |"
}

echo "| setting | sched medians (fulcrum-dlb) | balance |"
echo "|---|---|---|"
run default
run event_interval_31 FULCRUM_BENCH_EVENT_INTERVAL=31
run event_interval_127 FULCRUM_BENCH_EVENT_INTERVAL=127
run shed_2 FULCRUM_BENCH_SHED=2
run shed_8 FULCRUM_BENCH_SHED=8
run spin_0us FULCRUM_BENCH_SPIN_US=0
run spin_50us FULCRUM_BENCH_SPIN_US=50
