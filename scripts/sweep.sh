#!/usr/bin/env bash
# Sweeps the DLB scheduler's thresholds one at a time around their defaults
# over the workloads they are meant for: tokio's scheduler workloads
# (benches/sched.rs), the skewed connection scenario, and two saturated
# scenarios (benches/balance/, the tokio-style accept loop on the DLB
# scheduler). About 25 minutes on 2 cores.
#
#   bash scripts/sweep.sh              # every setting
#   bash scripts/sweep.sh spin_0us     # only the named settings
#
# Output: target/bench/sweep/<setting>.{sched,balance}.txt, and a table on
# stdout (medians; the sched columns are fulcrum-dlb ÷ tokio in the same
# run, 3 rounds × 5 runs each, the balance columns the light-request p99
# in µs). A benchmark that
# fails stops the sweep with its output shown.

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
    if [ ${#picked[@]} -gt 0 ] && [[ ! " ${picked[*]} " =~ " $name " ]]; then
        return
    fi
    echo "==> $name ($*)" >&2
    if ! env "$@" CARGO_TARGET_DIR="$out/$name.target" FULCRUM_BENCH_ROUNDS=3 FULCRUM_BENCH_RUNS=5 \
        "$SCHED" spawn_many_local busy1 ping_pong yield_many chained >"$out/$name.sched.txt" 2>&1; then
        cat "$out/$name.sched.txt" >&2
        exit 1
    fi
    if ! env "$@" CARGO_TARGET_DIR="$out/$name.target" FULCRUM_BENCH_RUNS=3 FULCRUM_BENCH_SECS=3 \
        "$BALANCE" skewed sat-w4-k2-spin sat-w2-k1-spin fulcrum-spawn >"$out/$name.balance.txt" 2>&1; then
        cat "$out/$name.balance.txt" >&2
        exit 1
    fi
    rm -rf "$out/$name.target"
    local row
    row=$(awk -F'|' '/^\| [a-z_0-9]+ \|/ && $2 !~ /workload/ {gsub(/ /,"",$2); gsub(/ /,"",$6); printf "%s %s | ", $2, $6}' "$out/$name.sched.txt")
    local p99
    p99=$(awk -F'|' '/^\| (skewed|sat-)/ {gsub(/ /,"",$2); gsub(/ /,"",$6); printf "%s %s | ", $2, $6}' "$out/$name.balance.txt")
    echo "| $name | $row $p99"
}

picked=("$@")
echo "| setting | sched: dlb ÷ tokio | balance: light p99 µs |"
echo "|---|---|---|"
run default
run event_interval_31 FULCRUM_BENCH_EVENT_INTERVAL=31
run event_interval_127 FULCRUM_BENCH_EVENT_INTERVAL=127
run shed_2 FULCRUM_BENCH_SHED=2
run shed_8 FULCRUM_BENCH_SHED=8
run spin_0us FULCRUM_BENCH_SPIN_US=0
run spin_50us FULCRUM_BENCH_SPIN_US=50
run io_poll_50us FULCRUM_BENCH_IO_US=50
run io_poll_200us FULCRUM_BENCH_IO_US=200
run slice_off FULCRUM_BENCH_SLICE_US=0
run slice_500us FULCRUM_BENCH_SLICE_US=500
run slice_2ms FULCRUM_BENCH_SLICE_US=2000
run rescue_off FULCRUM_BENCH_RESCUE_US=0
run rescue_50us FULCRUM_BENCH_RESCUE_US=50
run rescue_200us FULCRUM_BENCH_RESCUE_US=200
run handoff_100us FULCRUM_BENCH_HANDOFF_US=100
