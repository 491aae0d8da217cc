#!/usr/bin/env bash
# scripts/ab-sched.sh: the scheduler workloads of benches/sched.rs on two
# versions of the code, alternating, so that a change is measured against
# its base on the same machine in the same minutes.
#
#   bash scripts/ab-sched.sh BASE [ROUNDS] [-- SCHED-ARGS...]
#   bash scripts/ab-sched.sh 2854bfb 8
#   bash scripts/ab-sched.sh HEAD~2 10 -- spawn_many_local fulcrum-dlb
#
# BASE is any git revision; the other side is the working tree. Both are
# built with cargo's bench profile (BASE in a temporary worktree with its
# own target dir, removed at the end), then `sched --bench SCHED-ARGS` runs
# ROUNDS times (default 8) per side, A (BASE) then B (working tree). Each
# run is the bench's own 5 rounds, one process per system and workload, in
# rotated order; this script takes the median over the runs of each
# system's per-run median.
#
# Output: target/bench/ab-sched/{A,B}-<n>.json (the bench's JSON per run)
# and a table on stdout: per workload, B / A for each system (tokio, whose
# code does not change, shows the noise), and Fulcrum (DLB) / tokio on
# each side. Needs python3 for the table.

set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi
base=$1
shift
rounds=8
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    rounds=$1
    shift
fi
[ "${1:-}" = "--" ] && shift

out=target/bench/ab-sched
mkdir -p "$out"
rm -f "$out"/*.json
wt=$(mktemp -d /tmp/fulcrum-ab.XXXXXX)
cleanup() { git worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"; }
trap cleanup EXIT
git worktree add -q --detach "$wt" "$base"

# The bench binary's path, from cargo's JSON messages.
bench_bin() {
    cargo bench --bench sched --no-run --message-format=json "$@" 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sched" and m.get("executable"):
        print(m["executable"])'
}
echo "ab-sched.sh: building A ($base) and B (the working tree)" >&2
a=$(cd "$wt" && bench_bin)
b=$(bench_bin)
cp "$a" "$out/sched-A"
cp "$b" "$out/sched-B"

for i in $(seq 1 "$rounds"); do
    for side in A B; do
        (cd "$out" && ./sched-"$side" --bench "$@" >/dev/null)
        cp "$out/target/bench/sched.json" "$out/$side-$i.json"
    done
    echo "ab-sched.sh: round $i of $rounds done" >&2
done

python3 - "$out" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
def load(side):
    d = {}
    for f in sorted(glob.glob(f"{out}/{side}-*.json")):
        for r in json.load(open(f)):
            d.setdefault((r["workload"], r["system"]), []).append(r["median_ns"])
    return d
a, b = load("A"), load("B")
systems = sorted({s for _, s in a})
workloads = list(dict.fromkeys(w for w, _ in a))
med = lambda d, w, s: statistics.median(d[(w, s)]) if (w, s) in d else float("nan")
print("| workload | " + " | ".join(f"{s} B÷A" for s in systems) + " | dlb÷tokio A | dlb÷tokio B |")
print("|---" * (len(systems) + 3) + "|")
for w in workloads:
    cells = [f"{med(b, w, s) / med(a, w, s):.2f}" for s in systems]
    da, db = med(a, w, "fulcrum-dlb"), med(b, w, "fulcrum-dlb")
    ta, tb = med(a, w, "tokio"), med(b, w, "tokio")
    print(f"| {w} | " + " | ".join(cells) + f" | {da / ta:.2f} | {db / tb:.2f} |")
EOF
