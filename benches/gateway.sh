#!/usr/bin/env bash
# benches/gateway.sh: the Fulcrum gateway against nginx as a reverse proxy
# (issue 7 §3), driven by wrk over loopback.
#
#   bash benches/gateway.sh                       # defaults, about 1.5 minutes after the build
#   WORKERS=2 ROUNDS=5 WRK_DURATION=15s bash benches/gateway.sh
#
# What runs:
#   upstream   nginx, static `return 200 "ok\n";` on 127.0.0.1:$UPSTREAM_PORT,
#              $UPSTREAM_WORKERS worker(s). Chosen over the gateway's demo
#              backends because those listen on random ports inside the
#              gateway's own process: a separate upstream is the same for
#              both systems and costs the same CPU in both runs.
#   A          the Fulcrum gateway (target/release/examples/gateway) on
#              127.0.0.1:$GATEWAY_PORT: listener workers = $WORKERS,
#              balance = "dlb", access_log = false, one route `/` to a
#              cluster with the upstream as its only endpoint, no health
#              check, pooled keep-alive to the upstream (max_idle 32/worker);
#              admin on 127.0.0.1:$ADMIN_PORT (its /stats is saved at the end).
#   B          nginx as a reverse proxy on 127.0.0.1:$NGINX_PORT:
#              worker_processes $WORKERS, access_log off, `upstream {}` with
#              `keepalive 32`, proxy_http_version 1.1, Connection "".
#   Both nginx instances run in the foreground (daemon off) from generated
#   configs in a temp dir that also holds their pid files, logs and temp
#   paths. keepalive_requests is raised on every nginx keep-alive hop (the
#   default of 1000 would make nginx, but not the gateway, reconnect).
#
# Load: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency, one
# warm-up of $WARMUP per system, then A/B/A/B... for $ROUNDS rounds.
# The machine has 2 cores shared by wrk, the proxy and the upstream, so the
# proxies default to WORKERS=2 and wrk to 2 threads (wrk spends most of its
# time in the kernel; -t1 tends to make wrk itself the bottleneck). Absolute
# figures are therefore low and noisy: compare the ratios.
#
# Output: target/bench/gateway.json, an array with one object per system:
#   {"system", "runs", "rps", "p50_us", "p99_us", "errors",
#    "rps_runs", "p50_us_runs", "p99_us_runs", "errors_runs"}
# (medians over the rounds; errors = socket errors + non-2xx/3xx answers,
# summed over the rounds),
# plus a markdown table on stdout. Raw wrk output and the gateway's /stats
# go to target/bench/gateway/.
#
# Goal (issue 7): gateway requests/s >= 1.2 x nginx, and gateway p99 <= nginx.
#
# Environment (defaults): WORKERS=2 UPSTREAM_WORKERS=1 ROUNDS=3
#   WRK_THREADS=2 WRK_CONNECTIONS=64 WRK_DURATION=10s WARMUP=3s
#   GATEWAY_PORT=18080 NGINX_PORT=18090 UPSTREAM_PORT=18081 ADMIN_PORT=18091
#   URL_PATH=/  SKIP_BUILD=0 (1: use the existing release binary)
#   INSTALL=1 (0: never apt-get install nginx/wrk)

set -euo pipefail

WORKERS=${WORKERS:-2}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
ROUNDS=${ROUNDS:-3}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
WRK_DURATION=${WRK_DURATION:-10s}
WARMUP=${WARMUP:-3s}
GATEWAY_PORT=${GATEWAY_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18090}
UPSTREAM_PORT=${UPSTREAM_PORT:-18081}
ADMIN_PORT=${ADMIN_PORT:-18091}
URL_PATH=${URL_PATH:-/}
SKIP_BUILD=${SKIP_BUILD:-0}
INSTALL=${INSTALL:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=$ROOT/target/bench
RAW_DIR=$OUT_DIR/gateway
JSON=$OUT_DIR/gateway.json

log() { printf 'gateway.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
TMP=""
PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each a moment to drain, then force it.
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if ((rc != 0)); then
            mkdir -p "$RAW_DIR"
            cp "$TMP"/*.log "$RAW_DIR"/ 2>/dev/null || true
            log "logs copied to $RAW_DIR"
        fi
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
as_root() {
    if ((EUID == 0)); then "$@"; else sudo "$@"; fi
}
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if ((${#need[@]})); then
    ((INSTALL)) || die "missing ${need[*]} (INSTALL=0)"
    log "installing ${need[*]} from Debian"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found"

# ---------------------------------------------------------------- ports
port_busy() {
    # A successful connect means someone listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for p in "$GATEWAY_PORT" "$NGINX_PORT" "$UPSTREAM_PORT" "$ADMIN_PORT"; do
    if port_busy "$p"; then die "port 127.0.0.1:$p is in use (override with *_PORT=)"; fi
done

wait_port() { # port pid name
    for _ in $(seq 1 100); do
        port_busy "$1" && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited at start-up; see $TMP/$3.log: $(tail -5 "$TMP/$3.log" 2>/dev/null)"
        sleep 0.1
    done
    die "$3 did not listen on 127.0.0.1:$1 within 10 s"
}

# ---------------------------------------------------------------- build
if ((SKIP_BUILD == 0)); then
    log "cargo build --release --example gateway"
    (cd "$ROOT" && cargo build --release --example gateway)
fi
GATEWAY_BIN=$TARGET_DIR/release/examples/gateway
[[ -x $GATEWAY_BIN ]] || die "$GATEWAY_BIN not built"

# ---------------------------------------------------------------- configs
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fulcrum-gateway-bench.XXXXXX")
# nginx workers run as `nobody` when started by root: let them reach the temp paths.
chmod 755 "$TMP"
mkdir -p "$RAW_DIR"
rm -f "$RAW_DIR"/wrk-*.txt

nginx_common() { # name
    cat <<EOF
daemon off;
master_process on;
pid $TMP/$1.pid;
error_log $TMP/$1-error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_temp_paths() { # name
    local n
    for n in client_body proxy fastcgi uwsgi scgi; do
        printf '    %s_temp_path %s/%s-%s;\n' "$n" "$TMP" "$1" "$n"
    done
}

{
    nginx_common upstream
    echo "worker_processes $UPSTREAM_WORKERS;"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
$(nginx_temp_paths upstream)
    server {
        listen 127.0.0.1:$UPSTREAM_PORT reuseport backlog=4096;
        location / {
            default_type text/plain;
            return 200 "ok\n";
        }
    }
}
EOF
} >"$TMP/upstream.conf"

{
    nginx_common nginx
    echo "worker_processes $WORKERS;"
    cat <<EOF
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
$(nginx_temp_paths nginx)
    upstream fulcrum_bench_upstream {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 32;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / {
            proxy_pass http://fulcrum_bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx.conf"

cat >"$TMP/gateway.toml" <<EOF
[listener]
address = "127.0.0.1:$GATEWAY_PORT"
workers = $WORKERS
balance = "dlb"
drain_timeout_ms = 1000
access_log = false

[admin]
address = "127.0.0.1:$ADMIN_PORT"

[[routes]]
prefix = "/"
cluster = "upstream"

[[clusters]]
name = "upstream"
endpoints = ["127.0.0.1:$UPSTREAM_PORT"]
policy = "round_robin"
max_idle_per_endpoint = 32
EOF

"$NGINX" -t -q -p "$TMP" -e "$TMP/upstream-error.log" -c "$TMP/upstream.conf" >/dev/null 2>&1 \
    || die "nginx upstream config: $("$NGINX" -t -p "$TMP" -e "$TMP/upstream-error.log" -c "$TMP/upstream.conf" 2>&1 | tail -3)"
"$NGINX" -t -q -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" >/dev/null 2>&1 \
    || die "nginx proxy config: $("$NGINX" -t -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" 2>&1 | tail -3)"
"$GATEWAY_BIN" --config "$TMP/gateway.toml" --check >/dev/null || die "gateway config rejected"

# ---------------------------------------------------------------- start
"$NGINX" -p "$TMP" -e "$TMP/upstream-error.log" -c "$TMP/upstream.conf" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT" "$!" upstream

"$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" >"$TMP/nginx.log" 2>&1 &
PIDS+=($!)
wait_port "$NGINX_PORT" "$!" nginx

RUST_LOG=${RUST_LOG:-warn} "$GATEWAY_BIN" --config "$TMP/gateway.toml" >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
wait_port "$GATEWAY_PORT" "$!" gateway

for sys in "fulcrum-gateway:$GATEWAY_PORT" "nginx:$NGINX_PORT"; do
    body=$(curl -sS --max-time 5 "http://127.0.0.1:${sys#*:}$URL_PATH") || die "${sys%%:*}: request failed"
    [[ $body == ok ]] || die "${sys%%:*}: unexpected body ${body@Q}"
done
log "upstream :$UPSTREAM_PORT ($UPSTREAM_WORKERS worker), gateway :$GATEWAY_PORT and nginx :$NGINX_PORT ($WORKERS workers each) answer"

# ---------------------------------------------------------------- wrk
# to_us VALUE: wrk's latency (e.g. 812.00us, 1.23ms, 1.01s, 2.00m) in microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") m = 1; else if (u == "ms") m = 1000; else if (u == "s") m = 1000000;
        else if (u == "m") m = 60000000; else if (u == "h") m = 3600000000; else { print "nan"; exit }
        printf "%.1f", n * m
    }'
}

declare -A RPS P50 P99 ERR
run_wrk() { # system port duration outfile
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$3" --latency "http://127.0.0.1:$2$URL_PATH" >"$4" 2>&1 \
        || die "wrk against $1 failed: $(tail -3 "$4")"
}
parse_wrk() { # system outfile
    local f=$2 rps p50 p99 sock non2xx errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
    p50=$(awk '/Latency Distribution/ {d=1} d && $1 == "50%" {print $2; exit}' "$f")
    p99=$(awk '/Latency Distribution/ {d=1} d && $1 == "99%" {print $2; exit}' "$f")
    [[ -n $rps && -n $p50 && -n $p99 ]] || die "cannot parse wrk output $f"
    sock=$(awk -F'[ ,]+' '/Socket errors:/ {print $5 + $7 + $9 + $11}' "$f")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2 + 0}' "$f")
    errors=$((${sock:-0} + ${non2xx:-0}))
    RPS[$1]+="$rps "
    P50[$1]+="$(to_us "$p50") "
    P99[$1]+="$(to_us "$p99") "
    ERR[$1]+="$errors "
    log "  $1: $rps req/s, p50 $p50, p99 $p99, errors $errors"
}

SYSTEMS=("fulcrum-gateway" "nginx")
declare -A PORT=([fulcrum-gateway]=$GATEWAY_PORT [nginx]=$NGINX_PORT)
START=$SECONDS
for s in "${SYSTEMS[@]}"; do
    log "warm-up $s ($WARMUP)"
    run_wrk "$s" "${PORT[$s]}" "$WARMUP" "$RAW_DIR/wrk-$s-warmup.txt"
done
for r in $(seq 1 "$ROUNDS"); do
    log "round $r/$ROUNDS: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency"
    for s in "${SYSTEMS[@]}"; do
        run_wrk "$s" "${PORT[$s]}" "$WRK_DURATION" "$RAW_DIR/wrk-$s-$r.txt"
        parse_wrk "$s" "$RAW_DIR/wrk-$s-$r.txt"
    done
done
log "load phase took $((SECONDS - START)) s"

curl -sS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/stats" >"$RAW_DIR/gateway-stats.json" 2>/dev/null \
    || log "could not fetch the gateway's /stats"

# ---------------------------------------------------------------- report
median() { # numbers...
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
        if (NR % 2) printf "%.1f", a[(NR + 1) / 2]; else printf "%.1f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
json_array() { # numbers...
    local IFS=,
    printf '[%s]' "$*"
}
declare -A M_RPS M_P50 M_P99 M_ERR
{
    echo "["
    sep=""
    for s in "${SYSTEMS[@]}"; do
        # shellcheck disable=SC2086 # word splitting of the run lists is intended
        {
            M_RPS[$s]=$(median ${RPS[$s]})
            M_P50[$s]=$(median ${P50[$s]})
            M_P99[$s]=$(median ${P99[$s]})
            M_ERR[$s]=$(printf '%s\n' ${ERR[$s]} | awk '{t += $1} END {print t + 0}')
            printf '%s  {"system": "%s", "runs": %d, "rps": %s, "p50_us": %s, "p99_us": %s, "errors": %s,\n' \
                "$sep" "$s" "$ROUNDS" "${M_RPS[$s]}" "${M_P50[$s]}" "${M_P99[$s]}" "${M_ERR[$s]}"
            printf '   "rps_runs": %s, "p50_us_runs": %s, "p99_us_runs": %s, "errors_runs": %s}' \
                "$(json_array ${RPS[$s]})" "$(json_array ${P50[$s]})" \
                "$(json_array ${P99[$s]})" "$(json_array ${ERR[$s]})"
        }
        sep=$',\n'
    done
    printf '\n]\n'
} >"$JSON"
if command -v jq >/dev/null 2>&1; then jq -e . "$JSON" >/dev/null || die "$JSON is not valid JSON"; fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
g=fulcrum-gateway n=nginx
rps_ratio=$(ratio "${M_RPS[$g]}" "${M_RPS[$n]}")
p99_ratio=$(ratio "${M_P99[$g]}" "${M_P99[$n]}")
echo
echo "Gateway vs nginx: wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION, $ROUNDS rounds A/B, $WORKERS workers each, upstream nginx static 200 ($UPSTREAM_WORKERS worker); medians"
echo
echo "| system | requests/s | p50 (µs) | p99 (µs) | errors (all rounds) |"
echo "|---|---|---|---|---|"
for s in "${SYSTEMS[@]}"; do
    printf '| %s | %s | %s | %s | %s |\n' "$s" "${M_RPS[$s]}" "${M_P50[$s]}" "${M_P99[$s]}" "${M_ERR[$s]}"
done
printf '| **gateway ÷ nginx** | **%s×** (goal ≥ 1.20) | %s× | **%s×** (goal ≤ 1.00) | |\n' \
    "$rps_ratio" "$(ratio "${M_P50[$g]}" "${M_P50[$n]}")" "$p99_ratio"
echo
met() { awk -v r="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == ">=") ? r >= t : r <= t; print ok ? "met" : "missed" }'; }
echo "Goal: requests/s ratio $rps_ratio ($(met "$rps_ratio" 1.2 ">=")), p99 ratio $p99_ratio ($(met "$p99_ratio" 1.0 "<="))."
echo "JSON: $JSON; raw wrk output and gateway /stats: $RAW_DIR/"
