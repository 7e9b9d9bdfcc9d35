#!/usr/bin/env bash
# The balancing client's figures (docs/BENCHMARKS.md, "Several connections and servers"):
# 1024 calls in flight in all, spread over 1, 2 or 4 connections to one child server, or over
# 2 or 4 child servers, each shape with --compare-raw (the raw ceiling with the same number of
# connections and calls in flight, in the same run). REPEAT rounds, the shapes interleaved
# within each round; prints median [min..max] of calls/s, engine/raw, p50 and p99.
#
#   scripts/bench-balance.sh                  REPEAT=3 DURATION=2s (~3 minutes once built)
#   REPEAT=1 DURATION=1s scripts/bench-balance.sh
#
# Needs target/release/fastrpc (cargo build --release -p fastrpc-cli; SKIP_BUILD=1 skips it),
# bash, awk, and python3 for the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}
DURATION=${DURATION:-2s}
COMPRESS=${COMPRESS:-none}
OUT=${OUT:-target/bench-results/balance-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p fastrpc-cli
F=target/release/fastrpc

# name | arguments (1024 in flight in all: servers x connections x concurrency)
SHAPES=(
    "1 server, Client x1|--connections 1 --concurrency 1024"
    "1 server, Client x4|--connections 4 --concurrency 256"
    "1 server, balanced 1 conn|--balance --connections 1 --concurrency 1024"
    "1 server, balanced 2 conns|--balance --connections 2 --concurrency 512"
    "1 server, balanced 4 conns|--balance --connections 4 --concurrency 256"
    "2 servers, balanced 1 conn each|--servers 2 --connections 1 --concurrency 512"
    "4 servers, balanced 1 conn each|--servers 4 --connections 1 --concurrency 256"
)

for r in $(seq 1 "$REPEAT"); do
    for i in "${!SHAPES[@]}"; do
        IFS='|' read -r name args <<<"${SHAPES[$i]}"
        echo "round $r: $name" >&2
        # shellcheck disable=SC2086
        "$F" bench --spawn-server child --compress "$COMPRESS" --duration "$DURATION" \
            --compare-raw --json --no-progress $args >"$OUT/shape$i-round$r.json"
    done
done

python3 - "$OUT" "$REPEAT" "${SHAPES[@]}" <<'PY'
import json, sys, statistics
out, repeat, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def fmt(v, f):
    return f"{f(statistics.median(v))} [{f(min(v))}..{f(max(v))}]"
M = lambda x: f"{x/1e6:.2f}M"
R = lambda x: f"{x:.3f}"
U = lambda x: f"{x:.0f}"
print("| shape | connections | engine calls/s | raw calls/s | engine / raw | p50 µs | p99 µs | spread over servers (calls) |")
print("|---|---|---|---|---|---|---|---|")
for i, s in enumerate(shapes):
    name = s.split("|")[0]
    runs = [json.load(open(f"{out}/shape{i}-round{r}.json")) for r in range(1, repeat + 1)]
    e = [x["calls_per_sec"] for x in runs]
    raw = [x["raw_calls_per_sec"] for x in runs]
    ratio = [x["ratio_to_raw"] for x in runs]
    p50 = [x["p50_us"] for x in runs]
    p99 = [x["p99_us"] for x in runs]
    spread = ""
    if runs[-1].get("servers") and len(runs[-1]["servers"]) > 1:
        spread = " / ".join(str(b["calls"]) for b in runs[-1]["servers"]) + " (last round)"
    print(f"| {name} | {runs[0]['connections']} | {fmt(e, M)} | {fmt(raw, M)} | **{fmt(ratio, R)}** | {fmt(p50, U)} | {fmt(p99, U)} | {spread} |")
PY
echo "results in $OUT" >&2
