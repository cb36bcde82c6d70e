#!/usr/bin/env bash
# Kill `cai pipeline` (the lab's default recipe) with SIGKILL at random moments, restart it
# each time, let the last restart finish, then check that every dataset of the run holds each
# input id exactly once (no duplicates, none missing).
#
#   scripts/kill_resume.sh [KILLS] [MAX_DELAY_S] [RUN_DIR]     (defaults: 5, 120, cai-runs/kill-resume)
#
# CAI (default: target/release/cai) is the binary; extra arguments of `cai pipeline` go in
# CAI_PIPELINE_ARGS (e.g. "--quick"). Each kill comes after a random delay of 1..MAX_DELAY_S
# seconds into a restart; the default run takes ~5 minutes on 2 cores, so 5 kills spread over
# its first stages. RUN_DIR is deleted first only when it is a cai run directory (it holds
# cai's .cai-run marker); any other existing folder is refused, never deleted.
set -euo pipefail
KILLS=${1:-5}
MAX_DELAY=${2:-120}
RUN_DIR=${3:-cai-runs/kill-resume}
CAI=${CAI:-target/release/cai}
read -r -a EXTRA <<< "${CAI_PIPELINE_ARGS:-}"
if [[ -e "$RUN_DIR" ]]; then
  if [[ -d "$RUN_DIR" && ! -L "$RUN_DIR" ]] && grep -qs '"cai pipeline run directory"' "$RUN_DIR/.cai-run"; then
    rm -rf "$RUN_DIR"
  else
    echo "kill_resume.sh: $RUN_DIR exists and is not a cai run directory (no .cai-run marker);" \
      "refusing to delete it: pass a new RUN_DIR" >&2
    exit 2
  fi
fi
for i in $(seq 1 "$KILLS"); do
  delay=$(( (RANDOM % MAX_DELAY) + 1 ))
  "$CAI" pipeline "${EXTRA[@]}" --run-dir "$RUN_DIR" > "$RUN_DIR.log.$i" 2>&1 &
  pid=$!
  for _ in $(seq 1 "$delay"); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    stage=$(grep -oE '^\[[a-z-]*\] (starting|resuming)' "$RUN_DIR.log.$i" | tail -1 || true)
    echo "kill $i: SIGKILL after ${delay} s (${stage:-while loading or skipping finished stages})"
  else
    wait "$pid"
    echo "kill $i: the run finished within ${delay} s; no kill"
  fi
done
echo "restart: running to the end"
"$CAI" pipeline "${EXTRA[@]}" --run-dir "$RUN_DIR" > "$RUN_DIR.log.final" 2>&1
"$CAI" pipeline status "${EXTRA[@]}" --run-dir "$RUN_DIR"

# The ids of a JSONL file, one per line (records are one JSON object per line, "id" a string).
ids() { grep -o '"id":"[^"]*"' "$1" | sort; }
fail=0
check() { # check NAME FILE EXPECTED_IDS_FILE...
  local name=$1 file=$2; shift 2
  local got want
  got=$(ids "$file")
  want=$(cat "$@" | grep -o '"id":"[^"]*"' | sort)
  local lines dups
  lines=$(grep -c . "$file")
  dups=$(printf '%s\n' "$got" | uniq -d | wc -l)
  if [[ "$got" == "$want" && "$dups" == 0 && "$lines" == $(printf '%s\n' "$want" | grep -c .) ]]; then
    echo "ok   $name: $lines records, no duplicate, none missing"
  else
    echo "FAIL $name: $lines records, $dups duplicated ids; differs from its inputs:"
    diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | head -5
    fail=1
  fi
}
check "critique/sl.jsonl" "$RUN_DIR/critique/sl.jsonl" "$RUN_DIR/data/red_team.jsonl"
check "critique/sl.helpful.jsonl" "$RUN_DIR/critique/sl.helpful.jsonl" "$RUN_DIR/data/helpful.jsonl"
check "label/prefs.jsonl" "$RUN_DIR/label/prefs.jsonl" "$RUN_DIR/data/red_team.jsonl" "$RUN_DIR/data/helpful.jsonl"
check "distill/model/teacher_samples.jsonl" "$RUN_DIR/distill/model/teacher_samples.jsonl" "$RUN_DIR/distill/data.jsonl"
snapshots=$(grep -o '"snapshot":"[^"]*"' "$RUN_DIR/eval/lab_eval.jsonl" | sort)
if [[ -z $(printf '%s\n' "$snapshots" | uniq -d) ]]; then
  echo "ok   eval/lab_eval.jsonl: $(printf '%s\n' "$snapshots" | wc -l) snapshots, none twice"
else
  echo "FAIL eval/lab_eval.jsonl: a snapshot twice"; fail=1
fi
exit $fail
