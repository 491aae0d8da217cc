#!/usr/bin/env bash
# Regenerates every benchmark behind BENCHMARKS.md, in one go, on this
# machine: about 40 minutes on 2 cores after the builds (the balance
# bench alone takes 28).
#
#   bash scripts/bench-all.sh            # everything
#   SKIP_GATEWAY=1 bash scripts/bench-all.sh
#
# Results land in target/bench/ (JSON, SVG, logs); the SVG charts are then
# copied to docs/bench/ so that BENCHMARKS.md shows the latest run.
# Every benchmark runs its systems side by side and alternating, and
# reports medians and ratios (the machine is shared and noisy).

set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench
mkdir -p "$out" docs/bench

stamp() { echo "==> $* ($(date -u +%H:%M:%S))"; }

stamp "machine"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    grep -m1 'model name' /proc/cpuinfo || true
    echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
    rustc --version
    git rev-parse --short HEAD
} | tee "$out/machine.txt"

stamp "build"
cargo build --release --benches --examples -q

stamp "fulcrum-dlb: the queue against crossbeam"
cargo bench -q -p fulcrum-dlb 2>&1 | tee "$out/dlb.txt"

stamp "scheduler: tokio's workloads (benches/sched.rs)"
cargo bench -q --bench sched 2>&1 | tee "$out/sched.txt"

stamp "connection balance under skew (benches/balance/)"
cargo bench -q --bench balance 2>&1 | tee "$out/balance.txt"

if [ "${SKIP_GATEWAY:-0}" != 1 ]; then
    stamp "the gateway against nginx and a tokio proxy (benches/gateway/)"
    SKIP_BUILD=1 bash benches/gateway.sh 2>&1 | tee "$out/gateway.txt"
fi

stamp "simulation past this machine (examples/simulate/)"
cargo run -q --release --example simulate 2>&1 | tee "$out/sim.txt"

cp "$out"/*.svg docs/bench/ 2>/dev/null || true
stamp "done: $out, charts in docs/bench/"
