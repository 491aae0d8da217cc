#!/usr/bin/env bash
# The soak (tests/soak.rs): the gateway and the echo example, as release
# binaries, under connection churn, slowloris and bad input at once for
# SECONDS (default 600), failing if a normal request fails or either
# server's resident memory or open descriptors grow past their bounds after
# the warm-up. `.ci/run` runs `bash scripts/soak.sh 60`.
#
#   bash scripts/soak.sh          # 10 minutes
#   bash scripts/soak.sh 3600     # an hour

set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
case $secs in
    '' | *[!0-9]*)
        echo "usage: scripts/soak.sh [SECONDS]" >&2
        exit 2
        ;;
esac
# Both sides of 200 slowloris connections and the churn live on this
# machine: make room for their descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --example gateway --example echo -q
FULCRUM_SOAK_SECS=$secs cargo test --release -q --test soak -- --ignored --nocapture
