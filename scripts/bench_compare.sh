#!/usr/bin/env bash
# cai beside PyTorch on docs/BENCH.md's workloads, both shapes, one after the other in one run.
#
#   scripts/bench_compare.sh [RUNS] [SHAPES] [WORKLOADS]
#
# RUNS: timed runs per workload (default 3); SHAPES: space-separated (default
# "bench-6m smollm2-135m"); WORKLOADS: space-separated (default "generate_b1 generate_b8
# generate_b32 score train critique ppo_step"). Needs target/release/cai (cargo build --release
# -p cai-cli; $CAI picks another binary) and a
# Python with torch + transformers ($PYTHON, default /work/venv/bin/python). DTYPE=bf16 runs
# both in bf16 (cai: bf16 weights under f32 activations; PyTorch: a bf16 model). Prints one
# table row per shape and workload with the load average (/proc/loadavg) after it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SHAPES=${2:-"bench-6m smollm2-135m"}
WORKLOADS=${3:-"generate_b1 generate_b8 generate_b32 score train critique ppo_step"}
PYTHON=${PYTHON:-/work/venv/bin/python}
CAI=${CAI:-target/release/cai}
DTYPE=${DTYPE:-f32}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
echo "# $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, 2 threads, $DTYPE, best of $RUNS"
printf '%-14s %-13s %12s %12s %8s %10s %10s %6s\n' shape workload "cai tok/s" "torch tok/s" "ratio" "cai MiB" "torch MiB" load
for shape in $SHAPES; do
  for w in $WORKLOADS; do
    c=$("$CAI" bench --shape "$shape" --workload "$w" --runs "$RUNS" --dtype "$DTYPE" | tail -1)
    p=$("$PYTHON" scripts/bench_pytorch.py "$w" "$RUNS" --shape "$shape" --dtype "$DTYPE" | tail -1)
    load=$(cut -d' ' -f1 /proc/loadavg)
    "$PYTHON" - "$shape" "$w" "$c" "$p" "$load" <<'PY'
import json, sys
shape, w, c, p, load = sys.argv[1:]
c, p = json.loads(c), json.loads(p)
print(f"{shape:<14} {w:<13} {c['tok_s']:>12,.0f} {p['tokens_per_s']:>12,.0f} {c['tok_s'] / p['tokens_per_s']:>7.2f}x"
      f" {c['peak_rss_mib']:>10,.0f} {p['peak_rss_mib']:>10,.0f} {load:>6}")
PY
  done
done
