#!/usr/bin/env bash
# scripts/profile.sh: `perf record -g` of one benchmark workload at a time,
# and the top of `perf report --no-children` (self time per symbol). Every
# profile quoted in BENCHMARKS.md comes from this script.
#
#   bash scripts/profile.sh sched:ping_pong                  # Fulcrum (DLB)
#   bash scripts/profile.sh sched:ping_pong:tokio sched:yield_many:fulcrum-stealing
#   bash scripts/profile.sh gateway                          # the gateway under wrk
#   bash scripts/profile.sh gateway:nginx gateway:tokio-proxy
#   bash scripts/profile.sh gateway-open                     # the gateway in the open loop
#   bash scripts/profile.sh queue:threads_2x2::dlb           # the DLB queue bench
#
# Workloads:
#   sched:WORKLOAD[:SYSTEM]   one process of benches/sched.rs
#                             (`sched --run SYSTEM WORKLOAD`) running the
#                             workload RUNS times (default 2000) after a
#                             warm-up; SYSTEM is fulcrum-dlb (default),
#                             fulcrum-stealing or tokio.
#   gateway[:SYSTEM]          the proxy processes of benches/gateway
#                             (SYSTEM: fulcrum-gateway (default), nginx with
#                             its workers, tokio-proxy) while the driver's wrk
#                             warm-up and one wrk round run against it:
#                             `--systems SYSTEM --rounds 1 --warmup 2
#                             --duration SECS` (default 10), about
#                             2 x SECS + 5 seconds.
#   gateway-open[:SYSTEM]     the same processes during the driver's open
#                             loop (4,000 requests/s over 16 connections:
#                             mostly idle workers), which follows the wrk
#                             round; about 3 x SECS + 5 seconds.
#   queue:FILTER              the DLB queue's bench (`cargo bench -p
#                             fulcrum-dlb`, dlb/benches/dlb.rs) running the
#                             divan benchmarks FILTER names, such as
#                             threads_2x2::dlb or one::dlb_send_recv_release.
#
# Output: target/profile/<name>.data (perf's record, for `perf report -i`)
# and target/profile/<name>.txt (the report: its header, the TOP entries,
# default 30, then the shares of the top shared objects), printed too. The benches build with cargo's bench
# profile (release with line tables).
#
# Environment: RUNS (sched), SECS (gateway), TOP, CALL_GRAPH (default fp,
# the plain `-g`; dwarf for code built without frame pointers, larger
# files), FREQ (perf's -F, default 999 Hz). Installs perf (Debian's
# linux-perf) if missing; gateway profiles also need nginx and wrk
# (benches/gateway.sh installs them).
#
# Counting instead of sampling (gateway workloads only): STAT=EVENTS runs
# `perf stat -e EVENTS` over the same window instead of `perf record`, and
# writes and prints target/profile/<name>.stat, with the driver's request
# count for the window from its JSON. For the system calls and wake-ups
# behind the open loop's CPU per request:
#
#   STAT=syscalls:sys_enter_timerfd_settime,syscalls:sys_enter_epoll_wait,sched:sched_switch \
#       bash scripts/profile.sh gateway-open gateway-open:tokio-proxy

set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
RUNS=${RUNS:-2000}
SECS=${SECS:-10}
TOP=${TOP:-30}
CALL_GRAPH=${CALL_GRAPH:-fp}
FREQ=${FREQ:-999}
STAT=${STAT:-}
out=target/profile
mkdir -p "$out"

if ! command -v perf >/dev/null 2>&1; then
    echo "profile.sh: installing perf (linux-perf)" >&2
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
fi

# The path of a bench binary, built with the bench profile.
bench_bin() { # name
    cargo bench -q --no-run --bench "$1" --message-format=json \
        | grep -o "\"executable\":\"[^\"]*/deps/$1-[0-9a-f]*\"" | tail -1 | cut -d'"' -f4
}

report() { # name
    local data=$out/$1.data txt=$out/$1.txt
    {
        echo "# scripts/profile.sh $1 ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg))"
        perf report -i "$data" --no-children --stdio -g none --percent-limit 0.3 \
            --sort comm,dso,symbol 2>/dev/null \
            | sed -E 's/[[:space:]]+(-[[:space:]]+-|IPC[[:space:]]+\[IPC Coverage\])[[:space:]]*$//; s/[[:space:]]+$//' \
            | awk -v n="$((TOP + 4))" '$0 != "" && $0 != "#" && !/^# (\.\.\.|To display)/ && ++k <= n'
        echo "# By shared object (the kernel is [kernel.kallsyms]):"
        perf report -i "$data" --no-children --stdio -g none --sort dso 2>/dev/null \
            | sed -E 's/[[:space:]]+(-[[:space:]]+-|IPC[[:space:]]+\[IPC Coverage\])[[:space:]]*$//; s/[[:space:]]+$//' \
            | awk '$0 != "" && !/^#/ && ++k <= 6'
    } >"$txt"
    cat "$txt"
    echo "profile.sh: $data, $txt" >&2
}

record() { # perf record arguments...
    perf record -q -F "$FREQ" --call-graph "$CALL_GRAPH" "$@"
}

profile_sched() { # workload system
    local bin name=sched-$1-$2
    bin=$(bench_bin sched)
    [ -x "$bin" ] || { echo "profile.sh: no sched binary" >&2; exit 1; }
    echo "==> $name: FULCRUM_BENCH_RUNS=$RUNS sched --run $2 $1" >&2
    FULCRUM_BENCH_RUNS=$RUNS record -o "$out/$name.data" -- "$bin" --run "$2" "$1" >/dev/null
    report "$name"
}

profile_queue() { # divan filter
    local bin name=queue-${1//::/-}
    bin=$(cargo bench -q -p fulcrum-dlb --no-run --bench dlb --message-format=json \
        | grep -o '"executable":"[^"]*/deps/dlb-[0-9a-f]*"' | tail -1 | cut -d'"' -f4)
    [ -x "$bin" ] || { echo "profile.sh: no dlb bench binary" >&2; exit 1; }
    echo "==> $name: dlb --bench $1" >&2
    record -o "$out/$name.data" -- "$bin" --bench "$1" >/dev/null
    report "$name"
}

profile_gateway() { # system [open]
    local bin driver pids="" name=gateway-$1 log=$out/gateway-$1.driver.log
    [ "${2:-}" = open ] && name=gateway-open-$1
    command -v wrk >/dev/null 2>&1 && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } \
        || { echo "profile.sh: needs nginx and wrk (bash benches/gateway.sh installs them)" >&2; exit 1; }
    cargo build -q --profile bench --example gateway
    bin=$(bench_bin gateway)
    if [ "${2:-}" = open ]; then
        echo "==> $name: the driver's open loop of $SECS s" >&2
    else
        echo "==> $name: the driver's warm-up and one wrk round of $SECS s" >&2
    fi
    "$bin" --systems "$1" --rounds 1 --warmup 2 --duration "$SECS" --out "$out/gateway-$1.json" >"$log" 2>&1 &
    driver=$!
    # The system's processes are the driver's children that are not the
    # upstream nginx: found once they answer (the driver's log says so).
    for _ in $(seq 1 100); do
        grep -q 'answer and forward' "$log" && break
        kill -0 "$driver" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    local child
    for child in $(pgrep -P "$driver"); do
        case $1 in
            nginx) grep -q 'nginx.conf' "/proc/$child/cmdline" 2>/dev/null || continue
                pids="$child $(pgrep -P "$child" | tr '\n' ' ')" ;;
            fulcrum-gateway | fulcrum-gateway-hyper)
                [ "$(cat "/proc/$child/comm")" = gateway ] || continue; pids=$child ;;
            tokio-proxy) tr '\0' ' ' <"/proc/$child/cmdline" | grep -q 'server tokio-proxy' || continue; pids=$child ;;
        esac
    done
    [ -n "$pids" ] || { echo "profile.sh: no $1 process under the driver" >&2; kill "$driver"; exit 1; }
    pids=$(echo $pids | tr ' ' ',')
    local window=$((SECS + 2))
    if [ "${2:-}" = open ]; then
        # Past the warm-up (2 s) and the wrk run: the open loop.
        sleep "$((SECS + 2))"
        window=$SECS
    fi
    # Otherwise the warm-up (2 s) plus the wrk run; the open loop that
    # follows is left out.
    if [ -n "$STAT" ]; then
        perf stat -e "$STAT" -p "$pids" -o "$out/$name.stat" -- sleep "$window"
    else
        record -o "$out/$name.data" -p "$pids" -- sleep "$window"
    fi
    wait "$driver" || { cat "$log" >&2; exit 1; }
    if [ -n "$STAT" ]; then
        count_report "$name" "$1" "${2:-}"
    else
        report "$name"
    fi
}

count_report() { # name system [open]
    local stat=$out/$1.stat
    {
        echo "# STAT=$STAT scripts/profile.sh $1 ($(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cpus)"
        grep -E '^ +[0-9,]+ ' "$stat"
        # The window's requests: the open loop's successes, or wrk's rate
        # over the window (warm-up included, so an estimate).
        python3 - "$out/gateway-$2.json" "${3:-}" "$SECS" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
s = report["systems"][0]
if sys.argv[2] == "open":
    print(f"requests in the window: {s['open_ok']} (the open loop)")
else:
    n = int(s["rps"] * (int(sys.argv[3]) + 2))
    print(f"requests in the window: about {n} (wrk's rate over the warm-up and the run)")
PY
    } >"$out/$1.txt"
    cat "$out/$1.txt"
    echo "profile.sh: $stat, $out/$1.txt" >&2
}

for w in "$@"; do
    IFS=: read -r kind a b <<<"$w"
    case $kind in
        sched) [ -n "${a:-}" ] || { echo "profile.sh: sched:WORKLOAD[:SYSTEM]" >&2; exit 2; }
            profile_sched "$a" "${b:-fulcrum-dlb}" ;;
        gateway) profile_gateway "${a:-fulcrum-gateway}" ;;
        gateway-open) profile_gateway "${a:-fulcrum-gateway}" open ;;
        queue) [ -n "${a:-}" ] || { echo "profile.sh: queue:FILTER" >&2; exit 2; }
            # `queue:threads_2x2::dlb` splits at every colon: join the rest.
            profile_queue "${w#queue:}" ;;
        *) echo "profile.sh: unknown workload $w (sched:WORKLOAD[:SYSTEM], gateway[:SYSTEM], gateway-open[:SYSTEM] or queue:FILTER)" >&2; exit 2 ;;
    esac
done
