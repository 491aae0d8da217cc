#!/usr/bin/env bash
# The axum example's router on Fulcrum (fulcrum::http::serve) against the
# same router under axum::serve on tokio, same worker count, side by side
# (benches/axum/main.rs). Needs wrk (Debian: apt-get install wrk).
# Results: target/bench/axum.json, and a table on stdout for docs/bench/axum.md.
# Extra arguments go to the benchmark, e.g. --workers 2 --duration 5 --rounds 2.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
cargo bench --features axum --bench axum -- --out target/bench/axum.json "$@"
