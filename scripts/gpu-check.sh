#!/usr/bin/env bash
# Everything cai checks on a GPU, as one script to run once when a GPU is lent:
#
#     bash scripts/gpu-check.sh --out "$OUT"                 # on the GPU machine (device cuda)
#     bash scripts/gpu-check.sh --device cpu --quick --out /tmp/gpu-check   # the same steps on a CPU
#
# Steps (each timed; a failed step is recorded and the next one still runs):
#   1. the card: name, memory, driver; its dense bf16 peak and memory bandwidth (for MFU)
#   2. build: `cargo build --release --features cuda` (CUDA_COMPUTE_CAP from nvidia-smi)
#   3. parity: cai-model's device tests (tests/model/device.rs) on the device in bf16 and f32
#      against the f32 CPU reference — greedy tokens, log-probs, loss, every gradient
#   4. training and generation commands on the device: a tiny model made here, `cai generate`
#      and `cai sft` with --device
#   5. `cai bench --device D --dtype bf16` on bench-6m and on the SmolLM2-135M shape, with
#      PyTorch beside it on the same device when `import torch` works there
#      (scripts/bench_pytorch.py); training MFU against the card's bf16 peak and batch-1 decode
#      against the memory-bandwidth bound
#   6. `cai pipeline --quick` on the lab recipe with the device, wall time per stage and peak
#      GPU memory; and `--recipe FILE` for another recipe (e.g. recipes/smollm2-135m.toml when
#      its model is on that machine)
# It writes OUT/summary.md (the figures), OUT/summary.json and one log per step.
#
# Options: --device D (cuda, cuda:N or cpu; default cuda), --out DIR (default gpu-check-out),
# --quick (tiny bench models, one run: checks the script, measures nothing), --no-build (use the
# binary in $CARGO_TARGET_DIR or target/), --recipe FILE (also run this recipe's pipeline).
# Environment: PEAK_BF16_TFLOPS / PEAK_MEM_GBS override the card's table values; PYTHON
# names the interpreter with torch (default python3).
set -uo pipefail

device=cuda out=gpu-check-out quick=0 build=1 recipe=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --no-build) build=0; shift ;;
    --recipe) recipe=$2; shift 2 ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$device" in
  cpu | cuda | cuda:[0-9]*) ;;
  *) echo "gpu-check: --device '$device': expected cpu, cuda or cuda:N" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p "$out"
out=$(cd "$out" && pwd)
python=${PYTHON:-python3}
summary="$out/summary.md"
failures=0
: > "$out/steps.tsv"
echo "# gpu-check on $device ($(date -u +%Y-%m-%dT%H:%MZ))" > "$summary"

# run NAME CMD...: run a step with its log in OUT/NAME.log; record status and seconds.
run() {
  local name=$1; shift
  local started=$SECONDS
  echo "== $name: $*"
  if "$@" > "$out/$name.log" 2>&1; then status=ok; else status="FAILED (exit $?)"; failures=$((failures + 1)); fi
  local took=$((SECONDS - started))
  printf '%s\t%s\t%s\n' "$name" "$status" "$took" >> "$out/steps.tsv"
  echo "   $status in ${took} s (log: $out/$name.log)"
  tail -n 3 "$out/$name.log" | sed 's/^/   | /'
}

# 1. The card.
gpu_name="" peak_tflops="" mem_gbs=""
if [ "$device" != cpu ]; then
  if ! command -v nvidia-smi > /dev/null; then
    echo "gpu-check: --device $device but no nvidia-smi on this machine" >&2
    exit 1
  fi
  nvidia-smi > "$out/nvidia-smi.log" 2>&1
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}
  # Dense (not sparse) bf16 tensor-core peaks and memory bandwidths from NVIDIA's data sheets.
  case "$gpu_name" in
    *H200*) peak_tflops=989; mem_gbs=4800 ;;
    *H100*PCIe*) peak_tflops=756; mem_gbs=2000 ;;
    *H100*) peak_tflops=989; mem_gbs=3350 ;;
    *A100*80GB*) peak_tflops=312; mem_gbs=2039 ;;
    *A100*) peak_tflops=312; mem_gbs=1555 ;;
    *L40S*) peak_tflops=362; mem_gbs=864 ;;
    *) peak_tflops=""; mem_gbs="" ;;
  esac
  peak_tflops=${PEAK_BF16_TFLOPS:-$peak_tflops}
  mem_gbs=${PEAK_MEM_GBS:-$mem_gbs}
  echo "- card: $gpu_name (compute capability $CUDA_COMPUTE_CAP), bf16 dense peak ${peak_tflops:-unknown} TFLOP/s, memory ${mem_gbs:-unknown} GB/s" >> "$summary"
else
  echo "- device: CPU ($(lscpu | sed -n 's/^Model name: *//p' | head -1)); no peak figures, MFU not computed" >> "$summary"
fi

# 2. Build.
features=()
[ "$device" != cpu ] && features=(--features cuda)
target=${CARGO_TARGET_DIR:-$root/target}
cai="$target/release/cai"
if [ "$build" = 1 ]; then
  run build cargo build --release "${features[@]}" -p cai-cli
fi
if [ ! -x "$cai" ]; then
  echo "gpu-check: no binary at $cai (build failed or --no-build without a build)" >&2
  exit 1
fi

# 3. Parity tests on the device.
for dtype in bf16 f32; do
  run "parity-$dtype" env CAI_TEST_DEVICE="$device" CAI_TEST_DTYPE="$dtype" \
    cargo test --release "${features[@]}" -p cai-model --test model device
done

# 4. Generation and training commands on the device, on a tiny model made here.
work="$out/work"
rm -rf "$work" && mkdir -p "$work"
printf 'The assistant is helpful, honest and harmless.\nHuman: hello\nAssistant: hi there\n%.0s' $(seq 50) > "$work/corpus.txt"
for i in $(seq 16); do printf '{"id":"p%d","prompt":"Human: tell me about bread number %d\\n\\nAssistant:"}\n' "$i" "$i"; done > "$work/prompts.jsonl"
for i in $(seq 32); do printf '{"id":"s%d","messages":[{"role":"user","content":"question %d"},{"role":"assistant","content":"a helpful answer %d"}]}\n' "$i" "$i" "$i"; done > "$work/sft.jsonl"
run init-model "$cai" init-model --output "$work/tiny" --train-tokenizer "$work/corpus.txt" \
  --hidden-size 64 --layers 2 --heads 4 --intermediate-size 128 --vocab-size 512
run generate "$cai" generate --model "$work/tiny" --device "$device" --input "$work/prompts.jsonl" \
  --output "$work/generated.jsonl" --max-new-tokens 16
run sft "$cai" sft --model "$work/tiny" --device "$device" --data "$work/sft.jsonl" \
  --output "$work/sft-out" --max-steps 4

# 5. Benchmarks, cai and PyTorch on the same device.
bench_dtype=bf16
[ "$device" = cpu ] && bench_dtype=f32
runs=3
[ "$quick" = 1 ] && runs=1
torch_ok=0
"$python" -c "import torch, transformers" > /dev/null 2>&1 && torch_ok=1
shapes=(bench-6m smollm2-135m)
[ "$quick" = 1 ] && shapes=(tiny)
for shape in "${shapes[@]}"; do
  model_flags=(--shape "$shape")
  [ "$shape" = tiny ] && model_flags=(--tiny)
  run "bench-cai-$shape" sh -c "\"$cai\" bench --json --runs $runs --device $device --dtype $bench_dtype ${model_flags[*]} > \"$out/bench-cai-$shape.json\""
  if [ "$torch_ok" = 1 ]; then
    workloads=(generate_b1 generate_b8 generate_b32 score train)
    torch_shape=$shape
    # --quick checks the PyTorch step itself on one small workload.
    [ "$shape" = tiny ] && workloads=(generate_b1) && torch_shape=bench-6m
    for w in "${workloads[@]}"; do
      run "bench-torch-$torch_shape-$w" sh -c "\"$python\" scripts/bench_pytorch.py $w $runs --shape $torch_shape --dtype $bench_dtype --device $device > \"$out/bench-torch-$torch_shape-$w.json\""
    done
  fi
done
[ "$torch_ok" = 0 ] && echo "- PyTorch: \`import torch, transformers\` fails with $python here: no PyTorch column (install torch where this runs, or set PYTHON)" >> "$summary"

# 6. The pipeline on the device; GPU memory sampled every 200 ms.
sampler=""
if [ "$device" != cpu ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/gpu-memory.csv" 2>/dev/null &
  sampler=$!
fi
sed "s/^device = \"cpu\"/device = \"$device\"/" recipes/lab.toml > "$work/lab-device.toml"
# The copied recipe's relative paths are the lab's own @data paths, so it runs anywhere.
run pipeline-lab-quick "$cai" pipeline "$work/lab-device.toml" --quick --run-dir "$work/run-lab"
if [ -n "$recipe" ]; then
  run pipeline-recipe "$cai" pipeline "$recipe" --run-dir "$work/run-recipe"
fi
[ -n "$sampler" ] && kill "$sampler" 2> /dev/null

# Figures into summary.md / summary.json.
"$python" - "$out" "$device" "${peak_tflops:-0}" "${mem_gbs:-0}" "$gpu_name" <<'PY' >> "$summary"
import glob, json, os, sys
out, device, peak, bw, gpu = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
# Parameters of the standard shapes (docs/BENCH.md), for 6N FLOPs per trained token and the
# bytes a batch-1 decode step reads.
params = {"bench-6m": 6.29e6, "smollm2-135m": 134.5e6, "tiny": 0}
summary = {"device": device, "gpu": gpu, "steps": [], "bench": {}}
for line in open(os.path.join(out, "steps.tsv")):
    name, status, secs = line.rstrip("\n").split("\t")
    summary["steps"].append({"step": name, "status": status, "seconds": int(secs)})
print("\n| step | status | seconds |\n|---|---|---|")
for s in summary["steps"]:
    print(f"| {s['step']} | {s['status']} | {s['seconds']} |")
for shape, n in params.items():
    path = os.path.join(out, f"bench-cai-{shape}.json")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        continue
    cai = json.load(open(path))
    torch = {}
    # --quick's tiny model has no PyTorch twin: its PyTorch step only checks that step.
    for f in glob.glob(os.path.join(out, f"bench-torch-{shape}-*.json")):
        try:
            d = json.load(open(f))
            torch[f"{d['workload']}_tok_s"] = d["tokens_per_s"]
        except (ValueError, KeyError):
            pass
    summary["bench"][shape] = {"cai": cai, "torch": torch}
    print(f"\n### {shape}\n\n| workload | cai tok/s | PyTorch tok/s | cai / PyTorch |\n|---|---|---|---|")
    for key in sorted(k for k in cai if k.endswith("_tok_s")):
        theirs = torch.get(key)
        ratio = f"{cai[key] / theirs:.2f}×" if theirs else "—"
        print(f"| {key[:-6]} | {cai[key]:,.0f} | {f'{theirs:,.0f}' if theirs else '—'} | {ratio} |")
    if peak and n and "train_tok_s" in cai:
        mfu = 6 * n * cai["train_tok_s"] / (peak * 1e12)
        summary["bench"][shape]["train_mfu"] = mfu
        print(f"\ntraining MFU (6N FLOPs per token, N = {n:.3g}): {100 * mfu:.1f} % of {peak:.0f} TFLOP/s")
    if bw and n and "generate_b1_tok_s" in cai:
        bound = bw * 1e9 / (2 * n)  # bf16 weights read once per token
        share = cai["generate_b1_tok_s"] / bound
        summary["bench"][shape]["decode_b1_of_bandwidth_bound"] = share
        print(f"batch-1 decode: {cai['generate_b1_tok_s']:,.0f} tok/s = {100 * share:.1f} % of the bandwidth bound ({bound:,.0f} tok/s)")
mem = os.path.join(out, "gpu-memory.csv")
if os.path.exists(mem):
    values = [int(v) for v in open(mem).read().split() if v.strip().isdigit()]
    if values:
        summary["peak_gpu_memory_mib"] = max(values)
        print(f"\npeak GPU memory during the pipeline runs: {max(values):,} MiB")
for run in ("run-lab", "run-recipe"):
    stages = sorted(glob.glob(os.path.join(out, "work", run, "*", "manifest.json")))
    if stages:
        print(f"\n{run}: " + ", ".join(
            f"{json.load(open(m))['stage']} {json.load(open(m)).get('seconds', 0):.1f} s" for m in stages))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
PY
cat "$summary"
echo "gpu-check: $failures failed step(s); figures in $summary"
[ "$failures" = 0 ]
