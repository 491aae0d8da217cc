#!/usr/bin/env bash
# benches/gateway.sh: the Fulcrum gateway against nginx as a reverse proxy
# and a tokio + hyper-util reverse proxy (issue 7 §3), over HTTP/1.1 (wrk and
# an open loop) and cleartext HTTP/2 (h2load; issue 18). The driver is the
# Rust bench benches/gateway/main.rs (its header says what runs, the load
# and the output); this script installs what it needs, builds the release
# gateway and runs it.
#
#   bash benches/gateway.sh                              # about 6 minutes after the build
#   bash benches/gateway.sh --rounds 5 --duration 15     # options go to the driver
#   bash benches/gateway.sh --rounds 1 --duration 2 --warmup 1   # a smoke run
#
# Output: target/bench/gateway.json, a markdown table on stdout, raw wrk
# output and the gateway's /stats in target/bench/gateway/.
#
# Environment: SKIP_BUILD=1 uses the existing release gateway (the bench
# binary is still built by cargo bench); INSTALL=0 never apt-get installs
# nginx/wrk/h2load.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'gateway.sh: %s\n' "$*" >&2; }

as_root() {
    if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
if ((${#need[@]})); then
    if [[ ${INSTALL:-1} == 0 ]]; then
        log "error: missing ${need[*]} (INSTALL=0)"
        exit 1
    fi
    log "installing ${need[*]} from Debian"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release --example gateway"
    cargo build --release --example gateway
fi
exec cargo bench --bench gateway -- "$@"
