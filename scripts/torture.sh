#!/usr/bin/env bash
# torture.sh — attack cai from the outside with a randomised mix of the failures of issue 15,
# then check that nothing a user owns was lost.
#
#   scripts/torture.sh [--budget SECONDS] [--seed N] [--only KIND,...] [--once] [--keep]
#
# Each attack is a small case of its own, run in a fresh temporary work directory with a tiny
# model (`cai init-model`, hidden 32) and the lab's shipped model for the pipeline:
#   concurrent_generate   two `cai generate` on one --output, started 0–0.5 s apart
#   concurrent_sft        two `cai sft --resume` on one --output folder, the same way
#   concurrent_pipeline   two `cai pipeline --quick` on one --run-dir, started 0–0.5 s apart
#                         (for both: exactly one proceeds, the other fails non-zero naming the
#                         PID of the first; the output holds every id once)
#   kill_generate, kill_sft, kill_pipeline
#                         SIGKILL (sometimes SIGINT or SIGTERM, which must end it within 15 s
#                         without a crash) at 1–3 random moments, then a rerun must complete
#                         (and keep every complete record a kill left, unchanged)
#   disk_full             a small tmpfs as the output location (generate, sft or the pipeline):
#                         a clean failure; after the tmpfs grows, a rerun completes
#   huge_line, binary_input, empty_input, same_input_output, huge_positions, huge_init,
#   truncated_model       garbage in: exit non-zero within 5 s and 512 MiB, naming the file,
#                         every existing file untouched (a config with max_position_embeddings
#                         1e12 may also run, if it does so within the limits)
#   foreign_output        --output at a JSONL cai did not write with these settings (the user's
#                         file with matching ids, a deleted .config.json sidecar, other
#                         settings): refused the same way, the file untouched
#   divergence            sft at a learning rate that blows up: an error that says so, and
#                         every checkpoint kept finite and bounded (|w| ≤ 100)
#   remote_restart        a served model SIGKILLed during a remote `cai generate` and restarted
#                         on its port: the generation finishes (else a resume must complete it)
#   user_run_dir          --run-dir at a folder of the user's own (data/, critique/, sft/):
#                         refused, nothing deleted or changed
#   server_abuse          `cai serve` on 127.0.0.1 (a free port): oversized and chunked bodies,
#                         huge headers, bad JSON, wrong types, 4 bodies at the size limit (RSS),
#                         300 idle connections, 64 concurrent requests, slow-header and slow-body
#                         connections; it must keep answering
#   broken_pipe_status, broken_pipe_run
#                         `cai pipeline status … | true`, `cai pipeline … | head -c1` and the
#                         like: no panic, the run's stages finish
# Every kind runs once, in an order drawn from the seed; while budget is left, more rounds of
# the kinds whose outcome depends on timing (concurrency, kills, disk full, broken pipe, remote
# restart) follow (not with --once). --only runs the kinds listed (a kind may be repeated).
# Afterwards: every JSONL output holds each id once and no torn line, every user file is
# unchanged (checksums), no stage is left `running`, no `.tmp` leftovers, no cai process left,
# the server still answers. One line per case (PASS/FAIL/SKIP and the reason; a FAIL shows the
# exact commands and their stderr), then `N passed, M failed, K skipped`; exit 1 on a failure.
#
# Binary: $CAI, else target/release/cai (built with `cargo build --release -p cai-cli` if
# missing), copied into the work directory first so that a rebuild during the run does not
# change it. Children run under `timeout` and `nice -n 10`; only 127.0.0.1 is contacted.
# Limits: --budget (default 600 s) bounds the start of cases; a case starts only if its
# estimated time fits, and every child's timeout is clipped to the time left plus 30 s, so the
# script ends within about budget + 60 s. The seed fixes the choice, order and parameters of
# the attacks (delays, kill moments, sizes), not the machine's timing, so the moment a kill
# lands in the program varies with load. disk_full needs `mount -t tmpfs` (root); without it
# the case is skipped with a note. The work directory is deleted at the end unless a case
# failed (then only the failed cases' folders and the shared inputs are kept) or --keep is
# given. Needs bash, coreutils, python3 (scripts/torture_helper.py),
# GNU time (/usr/bin/time) for the RSS limits (without it RSS is not checked).
set -uo pipefail

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

BUDGET=600
SEED=$(( $(date +%s) % 100000 ))
ONLY=""
ONCE=0
KEEP=0
while (($#)); do
  case $1 in
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    --seed) SEED=${2:?--seed needs a number}; shift 2 ;;
    --only) ONLY=${2:?--only needs kinds}; shift 2 ;;
    --once) ONCE=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "torture.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $BUDGET =~ ^[0-9]+$ && $SEED =~ ^[0-9]+$ ]] || { echo "torture.sh: --budget and --seed take whole numbers" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPER=(python3 "$REPO/scripts/torture_helper.py")
TIME_BIN=/usr/bin/time
[[ -x $TIME_BIN ]] || TIME_BIN=""
CAI_SRC=${CAI:-$REPO/target/release/cai}
if [[ ! -x $CAI_SRC ]]; then
  if [[ -n ${CAI:-} ]]; then echo "torture.sh: \$CAI=$CAI is not an executable" >&2; exit 2; fi
  echo "torture.sh: building $CAI_SRC (cargo build --release -p cai-cli)"
  (cd "$REPO" && nice -n 10 cargo build --release -p cai-cli) || { echo "torture.sh: the build failed" >&2; exit 2; }
fi

START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=25            # seconds kept for the final checks
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cai-torture.XXXXXX")
mkdir -p "$WORK/bin" "$WORK/cases"
cp "$CAI_SRC" "$WORK/bin/cai"
CAI_BIN=$WORK/bin/cai
export CAI_CACHE=$WORK/.cai-cache   # the lab's models are extracted here, not in ~/.cache
unset RUST_LOG
RANDOM=$SEED

PASSED=0 FAILED=0 SKIPPED=0
FAIL_LINES=()
PASSED_DIRS=()        # folders of passed cases, deleted at the end even when others failed
MOUNTS=()             # tmpfs mounts to undo
REG_JSONL=()          # "FILE|EXPECTED_IDS_FILE ..." checked again at the end
REG_SNAPS=()          # "DIR|SNAPSHOT_FILE": a user's files, unchanged at the end
REG_RUNDIRS=()        # run directories: no stage left running at the end
SERVER_PID="" SERVER_BG="" SERVER_PORT="" SLOW_PID="" SERVER_DIR=""

# ------------------------------------------------------------------ bookkeeping

left() { echo $((DEADLINE - $(date +%s))); }
ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }    # milliseconds → seconds for sleep
# pick A B…: one of them, drawn from the seed, in PICK (not $(pick): a subshell's draw is lost).
pick() { local a=("$@"); PICK=${a[RANDOM % ${#a[@]}]}; }
clip() { local l; l=$(( $(left) + 30 )); ((l < 10)) && l=10; (($1 < l)) && echo "$1" || echo "$l"; }

cleanup() {
  local p
  # Only children not yet waited for: their PIDs cannot have been reused. A `timeout` child
  # leads its own process group, which holds the cai under it.
  for p in $(jobs -p); do kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  for p in "${MOUNTS[@]}"; do umount -l "$p" 2>/dev/null; done
  if ((KEEP)); then
    echo "work directory kept: $WORK"
  elif ((FAILED > 0)); then
    # What the failures need: their case folders and the shared inputs.
    rm -rf "$WORK/bin" "$WORK/.cai-cache" "${PASSED_DIRS[@]}"
    echo "work directory kept with the failed cases: $WORK ($(du -sh "$WORK" | cut -f1))"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'echo "torture.sh: interrupted"; exit 130' INT TERM

# A case: CASE names it, CASE_DIR is its folder; problem() collects what went wrong, show()
# what to print under a FAIL, verdict() prints the one line.
begin_case() {
  CASE=$1
  CASE_DIR=$WORK/cases/${1// /-}
  mkdir -p "$CASE_DIR"
  PROBLEMS=()
  SHOWN=()
}
problem() { PROBLEMS+=("$1"); }
show() { local r; for r in "$@"; do [[ " ${SHOWN[*]} " == *" $r "* ]] || SHOWN+=("$r"); done; }
verdict() {
  if ((${#PROBLEMS[@]} == 0)); then
    PASSED=$((PASSED + 1))
    [[ $CASE == final* ]] || PASSED_DIRS+=("$CASE_DIR")
    echo "PASS  $CASE: $1" | short
    return
  fi
  FAILED=$((FAILED + 1))
  local msg line r
  msg=$(printf '%s; ' "${PROBLEMS[@]}")
  line=$(echo "FAIL  $CASE: ${msg%; }" | short)
  FAIL_LINES+=("$line")
  echo "$line" | short
  for r in "${SHOWN[@]}"; do describe "$r"; done | short
}
# Paths print as $W/… (W, the work directory, is printed first), so that lines stay readable.
short() { sed -e "s|$WORK|\$W|g" -e 's/\x1b\[[0-9;]*m//g'; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "SKIP  $CASE: $1" | short; }

# describe NAME: a run's command, exit status, time, RSS and stderr's last lines.
describe() {
  local f=$CASE_DIR/$1
  [[ -f $f.cmd ]] || return
  echo "      \$ $(cat "$f.cmd")"
  echo "      -> exit ${RCS[$1]:-?}$( [[ -f $f.time ]] && awk 'END { printf ", %.1f s, max RSS %d MiB", $1, $2 / 1024 }' "$f.time")"
  if [[ -s $f.err ]]; then
    if (($(wc -l < "$f.err") > 10)); then
      { head -n 4 "$f.err"; echo "…"; tail -n 5 "$f.err"; } | cut -c1-300 | sed 's/^/      | /'
    else
      cut -c1-300 "$f.err" | sed 's/^/      | /'
    fi
  fi
  if [[ -s $f.out ]] && [[ $(wc -c < "$f.out") -lt 2000 ]]; then
    tail -n 4 "$f.out" | cut -c1-300 | sed 's/^/      > /'
  fi
}

declare -A RCS=()
# run_cai NAME TIMEOUT ARGS...: `cai ARGS` in the foreground; stdout NAME.out, stderr NAME.err,
# "seconds max_rss_kb" in NAME.time; the exit status in RC (and RCS[NAME]).
run_cai() {
  local name=$1 t; t=$(clip "$2"); shift 2
  local f=$CASE_DIR/$name
  echo "cai $*" > "$f.cmd"
  if [[ -n $TIME_BIN ]]; then
    "$TIME_BIN" -f '%e %M' -o "$f.time" timeout -k 5 "$t" nice -n 10 "$CAI_BIN" "$@" >"$f.out" 2>"$f.err"
    RC=$?
    tail -n 1 "$f.time" > "$f.time.last" && mv "$f.time.last" "$f.time"
  else
    local s; s=$(date +%s.%N)
    timeout -k 5 "$t" nice -n 10 "$CAI_BIN" "$@" >"$f.out" 2>"$f.err"
    RC=$?
    echo "$(echo "$(date +%s.%N) - $s" | bc 2>/dev/null || echo 0) 0" > "$f.time"
  fi
  RCS[$name]=$RC
}
# err_line NAME: the first line of a run's stderr that says "error", paths as $W/….
err_line() { grep -m1 -i 'error' "$CASE_DIR/$1.err" | short | cut -c1-${2:-140}; }
secs_of() { awk 'END { print $1 }' "$CASE_DIR/$1.time"; }
rss_mb_of() { awk 'END { print int($2 / 1024) }' "$CASE_DIR/$1.time"; }

# start_cai NAME TIMEOUT ARGS...: `cai ARGS` in the background; BG is the `timeout` process,
# CPID the cai process itself (what a SIGKILL hits).
start_cai() {
  local name=$1 t; t=$(clip "$2"); shift 2
  local f=$CASE_DIR/$name
  echo "cai $*" > "$f.cmd"
  timeout -k 5 "$t" nice -n 10 "$CAI_BIN" "$@" >"$f.out" 2>"$f.err" &
  BG=$!
  CPID=""
  local _
  for _ in $(seq 100); do
    CPID=$(pgrep -P "$BG" | head -n 1)
    [[ -n $CPID ]] && break
    sleep 0.01
  done
}
# finish_bg NAME BG: wait for a background run; its exit status in RC and RCS[NAME].
finish_bg() { wait "$2" 2>/dev/null; RC=$?; RCS[$1]=$RC; }
# signal_cai SIGNAL PID PARENT: signal a cai started here, if it still runs under its `timeout`
# (so that a PID reused by another process is never hit).
signal_cai() {
  [[ -n $2 ]] && [[ $(awk '/^PPid:/ { print $2 }' "/proc/$2/status" 2>/dev/null) == "$3" ]] &&
    kill "-$1" "$2" 2>/dev/null
}

crashed() { # crashed NAME: a panic, an abort or a timeout
  local rc=${RCS[$1]}
  [[ $rc == 101 || $rc == 134 || $rc == 124 || $rc == 137 ]] || grep -qE 'panicked at|memory allocation of .* failed|RUST_BACKTRACE' "$CASE_DIR/$1.err"
}
why_crashed() {
  local rc=${RCS[$1]}
  case $rc in
    124|137) echo "timed out (exit $rc)" ;;
    *) local m; m=$(grep -m1 -oE 'panicked at.*|memory allocation of .* failed' "$CASE_DIR/$1.err" | cut -c1-120)
       echo "crashed (exit $rc${m:+: $m})" ;;
  esac
}

# snapshot DIR: every file's checksum and every folder, sorted.
snapshot() {
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum && find . -type d | sort | sed 's/^/dir  /')
}
# changed_since SNAPSHOT_FILE DIR: the lines of the snapshot that are gone (deleted or changed).
changed_since() { comm -23 <(sort "$1") <(snapshot "$2" | sort); }
added_since() { comm -13 <(sort "$1") <(snapshot "$2" | sort); }

check_jsonl() { # check_jsonl FILE EXPECT...: problem unless each input id once, no torn line
  local out
  out=$("${HELPER[@]}" check-jsonl "$1" --expect "${@:2}" 2>&1) || problem "$(echo "$out" | head -n 3 | tr '\n' ' ')"
  CHECK_MSG=$(echo "$out" | tail -n 1)
}
check_run_dir() { # check_run_dir DIR STAGES
  local out
  out=$("${HELPER[@]}" check-run-dir "$1" --stages "$2" 2>&1) || problem "$(echo "$out" | head -n 4 | tr '\n' ' ')"
}
no_tmp() { # no_tmp DIR WHEN: problem if a *.tmp file or folder is left
  local t
  t=$(find "$1" -name '*.tmp*' 2>/dev/null | head -n 5)
  [[ -z $t ]] || problem "${2}: .tmp leftovers: $(echo "$t" | sed "s|$WORK/||" | tr '\n' ' ')"
}
# pid_named NAME: the PID a refused writer's stderr names ("PID 123", "pid 123", "process 123").
pid_named() { grep -oiE '(pid|process)[^0-9a-z]{0,16}[0-9]+' "$CASE_DIR/$1.err" | grep -oE '[0-9]+$' | head -n 1; }

# two_writers A B PID_A PID_B: exactly one of two writers succeeded; the other failed at once
# with a non-zero status naming the PID of the one that holds the output.
two_writers() {
  local a=$1 b=$2 pa=$3 pb=$4 ra=${RCS[$1]} rb=${RCS[$2]}
  show "$a" "$b"
  if ((ra == 0 && rb == 0)); then
    problem "both writers exited 0 (no exclusive lock)"
  elif ((ra != 0 && rb != 0)); then
    problem "both writers failed (exit $ra and $rb)"
  else
    local loser=$a winner_pid=$pb rc=$ra
    ((ra == 0)) && { loser=$b; winner_pid=$pa; rc=$rb; }
    if crashed "$loser"; then
      problem "the refused writer $(why_crashed "$loser")"
    fi
    local named; named=$(pid_named "$loser")
    if [[ -z $named ]]; then
      problem "the refused writer (exit $rc) names no PID"
    elif [[ -n $winner_pid && $named != "$winner_pid" ]]; then
      problem "the refused writer names PID $named, but the writer is PID $winner_pid"
    fi
    WINNER_MSG="the other refused (exit $rc) naming PID ${named:-?}"
  fi
}

# ------------------------------------------------------------------ shared inputs

S=$WORK/shared
GEN_OPTS=() GEN=()    # the quick generation run (2000 prompts × 64 tokens, ~3 s on one core)
SFT=()    # the quick fine-tuning run (750 steps, ~3 s), without --output and --resume
setup() {
  begin_case "setup"
  mkdir -p "$S"
  cat > "$S/corpus.txt" <<'EOF'
The assistant should be helpful, honest and harmless.
Human: How do I bake bread?
Assistant: Mix flour, water, salt and yeast, then bake it.
Critique: the answer is helpful and harmless, but it could say how long to bake.
Revision: Mix flour, water, salt and yeast, let it rise, then bake for forty minutes.
Human: What is the capital of France?
Assistant: The capital of France is Paris.
EOF
  run_cai init 60 init-model --arch llama --output "$S/model" --hidden-size 32 --layers 2 \
    --heads 4 --intermediate-size 64 --vocab-size 300 --max-positions 256 \
    --train-tokenizer "$S/corpus.txt"
  ((RC == 0)) || { problem "cai init-model failed"; show init; verdict ""; exit 1; }
  echo "The assistant is helpful, honest and harmless." > "$S/context.txt"
  "${HELPER[@]}" make-prompts "$S/prompts.jsonl" 2000 "$SEED"
  "${HELPER[@]}" make-sft "$S/sft.jsonl" 200 "$SEED"
  GEN_OPTS=(--input "$S/prompts.jsonl" --max-new-tokens 64 --batch-size 2 --seed "$SEED")
  GEN=(generate --model "$S/model" "${GEN_OPTS[@]}")
  SFT=(sft --model "$S/model" --data "$S/sft.jsonl" --epochs 15 --save-every 10 --batch-size 4 --seed "$SEED")
  snapshot "$S" > "$WORK/shared.snapshot"
  REG_SNAPS+=("$S|$WORK/shared.snapshot")
}

# ------------------------------------------------------------------ attacks

# race DELAY_MS TIMEOUT ARGS...: `cai ARGS` twice ("first", "second"), the second DELAY_MS
# later; then two_writers. RACE_MSG says how it went; a first run that ended before the second
# started makes the case inconclusive (RACE_MSG says so, nothing is judged).
race() {
  local delay=$1 t=$2; shift 2
  start_cai first "$t" "$@"; local b1=$BG c1=$CPID
  sleep "$(ms "$delay")"
  if ! kill -0 "$b1" 2>/dev/null; then
    finish_bg first "$b1"
    RACE_MSG="inconclusive: the first run ended (exit $RC) before the second started ${delay} ms later"
    return 1
  fi
  local t0 t2=""; t0=$(date +%s%N)
  start_cai second "$t" "$@"; local b2=$BG c2=$CPID
  while kill -0 "$b1" 2>/dev/null && kill -0 "$b2" 2>/dev/null; do sleep 0.05; done
  t2=$(( ($(date +%s%N) - t0) / 1000000 ))   # when the first of the two ended
  finish_bg first "$b1"; finish_bg second "$b2"
  WINNER_MSG=""
  two_writers first second "$c1" "$c2"
  if ((${#PROBLEMS[@]} == 0 && t2 > 10000)); then
    problem "the refused writer took ${t2} ms to fail (not at once)"
  fi
  RACE_MSG="second run ${delay} ms later: $WINNER_MSG (it ended ${t2} ms after the second start)"
}

case_concurrent_generate() {
  local out=$CASE_DIR/gen.jsonl
  race $((RANDOM % 501)) 90 "${GEN[@]}" --output "$out"
  check_jsonl "$out" "$S/prompts.jsonl"
  REG_JSONL+=("$out|$S/prompts.jsonl")
  verdict "$RACE_MSG; $CHECK_MSG"
}

case_concurrent_sft() {
  local out=$CASE_DIR/sft
  race $((RANDOM % 501)) 90 "${SFT[@]}" --output "$out" --resume
  check_sft_out "$out"
  verdict "$RACE_MSG; 750 steps logged once each"
}

case_concurrent_pipeline() {
  local run=$CASE_DIR/run stages=data,distill,critique
  race $((RANDOM % 501)) 240 pipeline --quick --run-dir "$run" --stages "$stages"
  check_run_dir "$run" "$stages"
  run_cai again 120 pipeline --quick --run-dir "$run" --stages "$stages"
  ((RC == 0)) || { problem "a rerun after both ended failed (exit $RC)"; show again; }
  check_run_dir "$run" "$stages"
  REG_RUNDIRS+=("$run")
  verdict "$RACE_MSG; stages $stages finished, each id once; a rerun exits 0"
}

# kill_loop NAME N MIN_MS SPAN_MS ARGS...: N times, start cai ARGS and signal it after a random
# delay: SIGKILL, or one of SIGNALS (KILL by default) drawn from the seed. A SIGINT or SIGTERM
# must end it within 15 s without a crash. KILL_LOG says when each signal landed.
SIGNALS=(KILL)
kill_loop() {
  local name=$1 n=$2 min=$3 span=$4 i d sig j; shift 4
  KILL_LOG=""
  for ((i = 1; i <= n; i++)); do
    d=$((min + RANDOM % span))
    pick "${SIGNALS[@]}"; sig=$PICK
    start_cai "$name$i" 120 "$@"
    local bg=$BG c=$CPID
    sleep "$(ms "$d")"
    if signal_cai "$sig" "$c" "$bg"; then
      if [[ $sig != KILL ]]; then
        for ((j = 0; j < 150; j++)); do kill -0 "$bg" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$bg" 2>/dev/null; then
          problem "run $i still running 15 s after SIG$sig"
          signal_cai KILL "$c" "$bg"
        fi
      fi
      finish_bg "$name$i" "$bg"
      KILL_LOG+="SIG$sig at ${d}ms$([[ $sig != KILL ]] && echo " (exit $RC)"), "
      if [[ $sig != KILL ]] && crashed "$name$i"; then
        problem "run $i $(why_crashed "$name$i") after SIG$sig"; show "$name$i"
      fi
      [[ -n ${KEEP_FILE:-} && -f $KEEP_FILE ]] && cp "$KEEP_FILE" "$CASE_DIR/left-by-kill-$i.jsonl"
    else
      finish_bg "$name$i" "$bg"
      KILL_LOG+="ended by itself before ${d}ms (exit $RC), "
      if ((RC != 0)); then
        problem "run $i before its kill failed (exit $RC)"
        show "$name$i"
      fi
    fi
  done
}

case_kill_generate() {
  local out=$CASE_DIR/gen.jsonl n=$((1 + RANDOM % 3)) kept
  KEEP_FILE=$out SIGNALS=(KILL KILL KILL TERM)
  kill_loop run "$n" 50 2000 "${GEN[@]}" --output "$out"
  KEEP_FILE="" SIGNALS=(KILL)
  run_cai final 120 "${GEN[@]}" --output "$out"
  ((RC == 0)) || { problem "the rerun after the kills failed (exit $RC)"; show final; }
  check_jsonl "$out" "$S/prompts.jsonl"
  # Every complete record a kill left behind is in the final output, unchanged.
  if compgen -G "$CASE_DIR/left-by-kill-*.jsonl" > /dev/null; then
    kept=$("${HELPER[@]}" check-kept "$out" "$CASE_DIR"/left-by-kill-*.jsonl 2>&1) || problem "$kept"
  fi
  no_tmp "$CASE_DIR" "after the rerun"
  REG_JSONL+=("$out|$S/prompts.jsonl")
  verdict "${KILL_LOG%, }; rerun: $CHECK_MSG; ${kept:-nothing written before the kills}"
}

# sft_to_end NAME OUT: `cai sft --resume` until done; a run killed before its first checkpoint
# has nothing to resume, and cai says so: then --overwrite (noted in NOTE).
sft_to_end() {
  local name=$1 out=$2
  run_cai "$name" 120 "${SFT[@]}" --output "$out" --resume
  if ((RC != 0)) && grep -q 'no checkpoint to resume from' "$CASE_DIR/$name.err"; then
    NOTE=" (nothing to resume: rerun with --overwrite)"
    run_cai "$name-overwrite" 120 "${SFT[@]}" --output "$out" --overwrite
    name=$name-overwrite
  fi
  ((RC == 0)) || { problem "the rerun failed (exit $RC)"; show "$name"; }
}

check_sft_out() { # check_sft_out DIR: a finished model, 750 train steps logged once each
  local out
  [[ -f $1/model.safetensors ]] || problem "no model.safetensors in ${1#"$WORK"/}"
  out=$("${HELPER[@]}" check-metrics "$1" 750 2>&1) || problem "$(echo "$out" | head -n 2 | tr '\n' ' ')"
}

case_kill_sft() {
  local out=$CASE_DIR/sft n=$((1 + RANDOM % 3))
  NOTE=""
  SIGNALS=(KILL KILL KILL INT TERM)
  kill_loop run "$n" 200 2500 "${SFT[@]}" --output "$out" --resume
  SIGNALS=(KILL)
  sft_to_end final "$out"
  check_sft_out "$out"
  no_tmp "$CASE_DIR" "after the rerun"
  verdict "${KILL_LOG%, }; the rerun finished 750 steps, each logged once$NOTE"
}

case_kill_pipeline() {
  local run=$CASE_DIR/run n=$((1 + RANDOM % 3))
  pick data,distill,critique data,critique,sft data,critique,sft,label; local stages=$PICK
  SIGNALS=(KILL KILL KILL INT TERM)
  kill_loop run "$n" 300 9000 pipeline --quick --run-dir "$run" --stages "$stages"
  SIGNALS=(KILL)
  run_cai final 300 pipeline --quick --run-dir "$run" --stages "$stages"
  ((RC == 0)) || { problem "the rerun after the kills failed (exit $RC)"; show final; }
  check_run_dir "$run" "$stages"
  no_tmp "$run" "after the rerun"
  run_cai status 30 pipeline status --quick --run-dir "$run"
  ((RC == 0)) || { problem "pipeline status failed (exit $RC)"; show status; }
  REG_RUNDIRS+=("$run")
  verdict "--stages $stages, ${KILL_LOG%, }; the rerun finished, each id once"
}

# clean_failure NAME WHAT: the run failed with a non-zero status and an error, no crash.
clean_failure() {
  local name=$1
  if [[ ${RCS[$name]} == 0 ]]; then
    problem "$2: exit 0"; show "$name"
  elif crashed "$name"; then
    problem "$2: $(why_crashed "$name")"; show "$name"
  elif ! grep -q 'error' "$CASE_DIR/$name.err"; then
    problem "$2: exit ${RCS[$name]} without an error message"; show "$name"
  fi
}

case_disk_full() {
  local mnt=$CASE_DIR/full variant size big
  pick generate sft pipeline; variant=$PICK
  case $variant in generate) size=256k big=64m ;; sft) size=300k big=64m ;; pipeline) size=4m big=512m ;; esac
  mkdir -p "$mnt"
  local err
  if ! err=$(mount -t tmpfs -o "size=$size" tmpfs "$mnt" 2>&1); then
    skip "mount -t tmpfs is not permitted here ($err)"
    return
  fi
  MOUNTS+=("$mnt")
  NOTE=""
  case $variant in
    generate)
      run_cai full 60 "${GEN[@]}" --output "$mnt/gen.jsonl"
      clean_failure full "generate on a $size disk" ;;
    sft)
      run_cai full 60 "${SFT[@]}" --output "$mnt/sft"
      clean_failure full "sft on a $size disk" ;;
    pipeline)
      run_cai full 120 pipeline --quick --run-dir "$mnt/run" --stages data,distill,critique
      clean_failure full "the pipeline on a $size disk" ;;
  esac
  no_tmp "$mnt" "after the failure"
  mount -o "remount,size=$big" "$mnt" || { problem "remount failed"; verdict ""; return; }
  case $variant in
    generate)
      run_cai rerun 120 "${GEN[@]}" --output "$mnt/gen.jsonl"
      ((RC == 0)) || { problem "the rerun with space failed (exit $RC)"; show rerun; }
      check_jsonl "$mnt/gen.jsonl" "$S/prompts.jsonl" ;;
    sft)
      sft_to_end rerun "$mnt/sft"
      check_sft_out "$mnt/sft" ;;
    pipeline)
      run_cai rerun 240 pipeline --quick --run-dir "$mnt/run" --stages data,distill,critique
      ((RC == 0)) || { problem "the rerun with space failed (exit $RC)"; show rerun; }
      check_run_dir "$mnt/run" data,distill,critique ;;
  esac
  no_tmp "$mnt" "after the rerun"
  verdict "$variant on a $size tmpfs failed cleanly (exit ${RCS[full]}: $(err_line full)); after growing it to $big a rerun completed$NOTE"
}

# quick_refusal NAME NEEDLE_REGEX ARGS...: cai ARGS must fail within 5 s and 512 MiB with an
# error matching NEEDLE (the file's name), every file in the case folder untouched.
quick_refusal() {
  local name=$1 needle=$2; shift 2
  snapshot "$CASE_DIR" > "$WORK/$name.$$.before"
  run_cai "$name" 60 "$@"
  local secs rss what="cai $1"; secs=$(secs_of "$name"); rss=$(rss_mb_of "$name")
  clean_failure "$name" "$what"
  if awk -v s="$secs" 'BEGIN { exit !(s > 5) }'; then problem "$what took ${secs} s (limit 5 s)"; show "$name"; fi
  if [[ -n $TIME_BIN ]] && ((rss > 512)); then problem "$what: max RSS ${rss} MiB (limit 512 MiB)"; show "$name"; fi
  if [[ ${RCS[$name]} != 0 ]] && ! grep -qE "$needle" "$CASE_DIR/$name.err"; then
    problem "$what: the error does not name the file (/$needle/)"; show "$name"
  fi
  local gone; gone=$(changed_since "$WORK/$name.$$.before" "$CASE_DIR" | grep -v '^dir' | awk '{ print $2 }')
  [[ -z $gone ]] || problem "existing files changed or deleted: $(echo "$gone" | tr '\n' ' ')"
  REFUSAL_MSG="exit ${RCS[$name]} in ${secs} s, ${rss} MiB: $(err_line "$name")"
}

# garbage_input FILE: feed FILE to one of the commands that read a JSONL (drawn from the seed).
garbage_input() {
  local file=$1 base; base=$(basename "$1")
  pick generate sft score train-pm distill
  case $PICK in
    generate) quick_refusal refused "$base" generate --model "$S/model" --input "$file" --output "$CASE_DIR/out.jsonl" ;;
    score) quick_refusal refused "$base" score --model "$S/model" --input "$file" --output "$CASE_DIR/out.jsonl" ;;
    sft) quick_refusal refused "$base" sft --model "$S/model" --data "$file" --output "$CASE_DIR/out" ;;
    train-pm) quick_refusal refused "$base" train-pm --model "$S/model" --data "$file" --output "$CASE_DIR/out" ;;
    distill) quick_refusal refused "$base" distill --model "$S/model" --data "$file" \
      --context "$S/context.txt" --output "$CASE_DIR/out" ;;
  esac
  verdict "cai $PICK: $REFUSAL_MSG"
}

case_huge_line() {
  "${HELPER[@]}" make-garbage huge-line "$CASE_DIR/huge.jsonl" "$RANDOM"
  garbage_input "$CASE_DIR/huge.jsonl"
}
case_binary_input() {
  "${HELPER[@]}" make-garbage binary "$CASE_DIR/garbage.jsonl" "$RANDOM"
  garbage_input "$CASE_DIR/garbage.jsonl"
}
case_empty_input() {
  : > "$CASE_DIR/empty.jsonl"
  garbage_input "$CASE_DIR/empty.jsonl"
}

case_same_input_output() {
  head -n 50 "$S/prompts.jsonl" > "$CASE_DIR/p.jsonl"
  pick same dotted symlink hardlink; local form=$PICK out
  case $form in
    same) out=$CASE_DIR/p.jsonl ;;
    dotted) out=$CASE_DIR/./sub/../p.jsonl; mkdir -p "$CASE_DIR/sub" ;;
    symlink) ln -s p.jsonl "$CASE_DIR/link.jsonl"; out=$CASE_DIR/link.jsonl ;;
    hardlink) ln "$CASE_DIR/p.jsonl" "$CASE_DIR/hard.jsonl"; out=$CASE_DIR/hard.jsonl ;;
  esac
  quick_refusal refused 'p\.jsonl|link\.jsonl|hard\.jsonl' generate --model "$S/model" \
    --input "$CASE_DIR/p.jsonl" --output "$out"
  verdict "--output as $form path of --input: $REFUSAL_MSG"
}

# A copy of the tiny model with one change, for the damaged-model cases.
model_copy() { cp -r "$S/model" "$CASE_DIR/model"; }
damaged_model_run() { # damaged_model_run NEEDLE: generate or sft with the damaged copy
  pick generate sft
  if [[ $PICK == generate ]]; then
    head -n 20 "$S/prompts.jsonl" > "$CASE_DIR/p.jsonl"
    quick_refusal refused "$1" generate --model "$CASE_DIR/model" --input "$CASE_DIR/p.jsonl" \
      --output "$CASE_DIR/out.jsonl" --max-new-tokens 8
  else
    quick_refusal refused "$1" sft --model "$CASE_DIR/model" --data "$S/sft.jsonl" \
      --output "$CASE_DIR/out" --max-steps 5
  fi
}

case_huge_positions() {
  model_copy
  python3 - "$CASE_DIR/model/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["max_position_embeddings"] = 10**12
json.dump(c, open(p, "w"), indent=2)
EOF
  # A model whose tables are sized to what is used may also run: exit 0, quick and small.
  damaged_model_run 'config\.json|max_position_embeddings'
  if [[ ${RCS[refused]} == 0 ]]; then
    local i=${#PROBLEMS[@]} kept=()
    for ((i = 0; i < ${#PROBLEMS[@]}; i++)); do [[ ${PROBLEMS[i]} == *": exit 0" ]] || kept+=("${PROBLEMS[i]}"); done
    PROBLEMS=("${kept[@]}")
    REFUSAL_MSG="accepted and ran within the limits (exit 0, $(secs_of refused) s, $(rss_mb_of refused) MiB)"
  fi
  verdict "max_position_embeddings 1e12: $REFUSAL_MSG"
}

case_huge_init() {
  quick_refusal refused 'hidden|layers|GB|GiB|memory|too large|parameters' init-model --arch llama \
    --output "$CASE_DIR/big" --hidden-size 100000 --layers 100 --heads 4 --vocab-size 300 \
    --train-tokenizer "$S/corpus.txt"
  verdict "init-model --hidden-size 100000 --layers 100: $REFUSAL_MSG"
}

case_truncated_model() {
  model_copy
  local f=$CASE_DIR/model/model.safetensors size keep
  size=$(stat -c %s "$f")
  pick 4 $((size * (1 + RANDOM % 95) / 100)); keep=$PICK
  truncate -s "$keep" "$f"
  damaged_model_run 'model\.safetensors'
  verdict "model.safetensors cut to $keep of $size bytes: $REFUSAL_MSG"
}

# A JSONL that cai did not write with these settings is never taken as progress.
case_foreign_output() {
  local variant out=$CASE_DIR/out.jsonl
  head -n 100 "$S/prompts.jsonl" > "$CASE_DIR/p.jsonl"
  local small=(generate --model "$S/model" --input "$CASE_DIR/p.jsonl" --max-new-tokens 8 --seed "$SEED")
  pick user-jsonl no-sidecar other-settings; variant=$PICK
  case $variant in
    user-jsonl)   # the user's own file whose ids match the input's
      python3 -c 'import json, sys
for line in open(sys.argv[1]):
    print(json.dumps({"id": json.loads(line)["id"], "completion": "mine", "note": "my own work"}))' \
        "$CASE_DIR/p.jsonl" > "$out" ;;
    no-sidecar|other-settings)   # cai's finished output, rerun with other settings
      run_cai first 60 "${small[@]}" --output "$out"
      ((RC == 0)) || { problem "the first run failed (exit $RC)"; show first; }
      [[ $variant == no-sidecar ]] && rm -f "$CASE_DIR"/out.config.json ;;
  esac
  small=(generate --model "$S/model" --input "$CASE_DIR/p.jsonl" --max-new-tokens 32 --seed "$SEED")
  quick_refusal refused 'out\.jsonl' "${small[@]}" --output "$out"
  verdict "$variant: $REFUSAL_MSG"
}

# Training that blows up stops with an error, and every checkpoint it kept is sane; a run that
# ends with exit 0 must not have blown up (its last loss within 2× its first, sane weights).
case_divergence() {
  local lr out=$CASE_DIR/out check losses first worst last
  pick 30 100 1e4 1e6 1e30; lr=$PICK
  run_cai run 60 sft --model "$S/model" --data "$S/sft.jsonl" --output "$out" --learning-rate "$lr" \
    --max-steps 40 --save-every 5 --batch-size 4 --seed "$SEED"
  check="nothing kept"
  if [[ -d $out ]]; then
    check=$("${HELPER[@]}" check-finite "$out" 100 2>&1) || problem "kept weights are not sane: $(echo "$check" | head -n 2 | tr '\n' ' ')"
  fi
  if [[ ${RCS[run]} == 0 ]]; then
    losses=$(python3 -c 'import json, sys
l = [r["loss"] for r in map(json.loads, open(sys.argv[1])) if r.get("split") == "train"]
print(f"{l[0]:.4g} {max(l):.4g} {l[-1]:.4g}")' "$out/metrics.jsonl" 2>/dev/null)
    read -r first worst last <<< "${losses:-0 0 0}"
    if awk -v f="$first" -v l="$last" -v w="$worst" 'BEGIN { exit !(l > 2 * f || w > 100 * f || l != l) }'; then
      problem "exit 0 although the loss went $first → max $worst → $last"
    fi
    ((${#PROBLEMS[@]})) && show run
    verdict "--learning-rate $lr did not diverge (loss $first → $last); $(echo "$check" | tail -n 1 | short)"
  else
    clean_failure run "sft --learning-rate $lr"
    grep -qi 'diverg' "$CASE_DIR/run.err" || { problem "the error does not say the training diverged"; show run; }
    verdict "--learning-rate $lr: exit ${RCS[run]}: $(err_line run 110); $(echo "$check" | tail -n 1 | short)"
  fi
}

# A served model restarting (SIGKILL, then up again on the same port within a second) does
# not fail a remote generation.
case_remote_restart() {
  local port out=$CASE_DIR/gen.jsonl d
  port=$("${HELPER[@]}" free-port)
  serve_on() { # serve_on NAME: cai serve on $port, ready
    start_cai "$1" 120 serve --model "$S/model" --port "$port"
    SRV_BG=$BG SRV=$CPID
    local _
    for _ in $(seq 100); do
      "${HELPER[@]}" serve-port "$CASE_DIR/$1.err" "$CASE_DIR/$1.out" > /dev/null 2>&1 && return 0
      sleep 0.1
    done
    return 1
  }
  serve_on serve1 || { problem "cai serve did not start"; show serve1; verdict ""; signal_cai KILL "$SRV" "$SRV_BG"; return; }
  d=$((200 + RANDOM % 1000))
  start_cai gen 120 generate --model "http://127.0.0.1:$port/v1" "${GEN_OPTS[@]}" --output "$out"
  local gen_bg=$BG
  sleep "$(ms $d)"
  signal_cai KILL "$SRV" "$SRV_BG"; finish_bg serve1 "$SRV_BG"
  serve_on serve2 || { problem "cai serve did not start again on port $port"; show serve2; }
  finish_bg gen "$gen_bg"
  if ((RCS[gen] != 0)); then
    problem "generation against the restarted server failed (exit ${RCS[gen]})"; show gen
    # The records written so far must still resume to a complete output.
    run_cai resume 120 generate --model "http://127.0.0.1:$port/v1" "${GEN_OPTS[@]}" --output "$out"
    ((RC == 0)) || { problem "resuming it failed too (exit $RC)"; show resume; }
  fi
  signal_cai TERM "$SRV" "$SRV_BG"; finish_bg serve2 "$SRV_BG"
  check_jsonl "$out" "$S/prompts.jsonl"
  REG_JSONL+=("$out|$S/prompts.jsonl")
  verdict "server SIGKILLed ${d} ms into a remote generation and restarted: $CHECK_MSG"
}

case_user_run_dir() {
  local proj=$CASE_DIR/proj variant
  "${HELPER[@]}" make-user-dir "$proj" "$RANDOM"
  snapshot "$proj" > "$CASE_DIR/proj.snapshot"
  REG_SNAPS+=("$proj|$CASE_DIR/proj.snapshot")
  pick lab-recipe own-recipe data-only; variant=$PICK
  case $variant in
    lab-recipe) run_cai run 120 pipeline --quick --run-dir "$proj" --stages data,critique ;;
    data-only) run_cai run 120 pipeline --quick --run-dir "$proj" --stages data ;;
    own-recipe)
      # The issue's case: the recipe's inputs sit in proj/data/, the run directory is proj.
      sed -e "s|^red_team = .*|red_team = [\"$proj/data/red_team.jsonl\"]|" \
          -e "s|^helpful = .*|helpful = [\"$proj/data/helpful.jsonl\"]|" \
          "$REPO/recipes/lab.toml" > "$CASE_DIR/recipe.toml"
      run_cai run 120 pipeline "$CASE_DIR/recipe.toml" --quick --run-dir "$proj" --stages data,critique ;;
  esac
  local gone added
  gone=$(changed_since "$CASE_DIR/proj.snapshot" "$proj" | awk '{ print $2 }')
  added=$(added_since "$CASE_DIR/proj.snapshot" "$proj" | wc -l)
  [[ -z $gone ]] || { problem "user files deleted or changed: $(echo "$gone" | head -n 8 | tr '\n' ' ')"; show run; }
  if ((RC == 0)); then
    problem "a folder cai did not create was used as the run directory (exit 0; $added paths added)"; show run
  elif crashed run; then
    problem "$(why_crashed run)"; show run
  elif ! grep -q 'proj' "$CASE_DIR/run.err"; then
    problem "the refusal does not name the folder"; show run
  fi
  verdict "$variant: refused (exit $RC: $(err_line run)); every user file unchanged"
}

case_server_abuse() {
  # With --header-timeout/--body-timeout (issue 15's fix) they are set short, so that the slow
  # connections are seen closed quickly; else the defaults (30 s, 60 s) are waited out.
  local timeouts=() slow_window=75
  if "$CAI_BIN" serve --help | grep -q -- '--body-timeout'; then
    timeouts=(--header-timeout 5 --body-timeout 8); slow_window=25
  fi
  start_cai serve $(( $(left) + 60 )) serve --model "$S/model" --port 0 "${timeouts[@]}"
  SERVER_BG=$BG SERVER_PID=$CPID SERVER_DIR=$CASE_DIR
  local _
  for _ in $(seq 150); do
    SERVER_PORT=$("${HELPER[@]}" serve-port "$CASE_DIR/serve.out" "$CASE_DIR/serve.err" 2>/dev/null) && break
    kill -0 "$SERVER_BG" 2>/dev/null || break
    sleep 0.2
  done
  if [[ -z $SERVER_PORT ]]; then
    RCS[serve]=?
    problem "cai serve did not print its address"; show serve; verdict ""
    signal_cai KILL "$SERVER_PID" "$SERVER_BG"; SERVER_PID=""; return
  fi
  timeout $((slow_window + 30)) "${HELPER[@]}" slow-conns "$SERVER_PORT" "$slow_window" > "$CASE_DIR/slow.out" 2>&1 &
  SLOW_PID=$!
  timeout "$(clip 300)" "${HELPER[@]}" http-abuse "$SERVER_PORT" "$SERVER_PID" "$RANDOM" > "$CASE_DIR/abuse.out" 2>&1
  local rc=$? n; n=$(grep -c '^ok' "$CASE_DIR/abuse.out")
  while IFS= read -r l; do problem "${l#FAIL }"; done < <(grep -v '^ok' "$CASE_DIR/abuse.out")
  ((rc == 0)) || ((${#PROBLEMS[@]})) || problem "the abuse helper failed (exit $rc)"
  signal_cai 0 "$SERVER_PID" "$SERVER_BG" || problem "the server process is gone"
  verdict "$n abuses answered or refused on 127.0.0.1:$SERVER_PORT; the server still answers"
}

case_broken_pipe_status() {
  local run=$CASE_DIR/run i rc bad=0
  run_cai setup 120 pipeline --quick --run-dir "$run" --stages data,critique
  ((RC == 0)) || { problem "the run to look at failed (exit $RC)"; show setup; }
  for i in 1 2 3; do
    pick true 'head -c1'; local reader=$PICK
    echo "cai pipeline status --quick --run-dir $run | $reader" > "$CASE_DIR/status$i.cmd"
    timeout -k 5 30 nice -n 10 "$CAI_BIN" pipeline status --quick --run-dir "$run" 2>"$CASE_DIR/status$i.err" | $reader > /dev/null
    rc=${PIPESTATUS[0]}
    RCS[status$i]=$rc
    if crashed "status$i"; then problem "status | $reader: $(why_crashed "status$i")"; show "status$i"; bad=1; fi
  done
  check_run_dir "$run" data,critique
  REG_RUNDIRS+=("$run")
  verdict "3 × pipeline status into a closed pipe: exits ${RCS[status1]}, ${RCS[status2]}, ${RCS[status3]}, no panic"
}

case_broken_pipe_run() {
  pick pipeline generate; local what=$PICK
  pick stdout stderr both; local redirect=$PICK
  local run=$CASE_DIR/run out=$CASE_DIR/gen.jsonl args
  if [[ $what == pipeline ]]; then
    args=(pipeline --quick --run-dir "$run" --stages data,distill,critique)
  else
    args=("${GEN[@]}" --output "$out")
  fi
  local redir=""
  case $redirect in both) redir='2>&1 ' ;; stderr) redir='2>&1 >/dev/null ' ;; esac
  echo "cai ${args[*]} $redir| head -c1" > "$CASE_DIR/run.cmd"
  : > "$CASE_DIR/run.err"
  if [[ $redirect == both ]]; then
    echo "(stderr went into the closed pipe)" > "$CASE_DIR/run.err"
    timeout -k 5 "$(clip 240)" nice -n 10 "$CAI_BIN" "${args[@]}" 2>&1 | head -c1 > /dev/null
  elif [[ $redirect == stderr ]]; then
    echo "(stderr went into the closed pipe)" > "$CASE_DIR/run.err"
    timeout -k 5 "$(clip 240)" nice -n 10 "$CAI_BIN" "${args[@]}" 2>&1 >/dev/null | head -c1 > /dev/null
  else
    timeout -k 5 "$(clip 240)" nice -n 10 "$CAI_BIN" "${args[@]}" 2>"$CASE_DIR/run.err" | head -c1 > /dev/null
  fi
  RCS[run]=${PIPESTATUS[0]}
  if crashed run; then problem "$(why_crashed run)"; show run; fi
  if [[ $what == pipeline ]]; then
    check_run_dir "$run" data,distill,critique
    REG_RUNDIRS+=("$run")
  else
    check_jsonl "$out" "$S/prompts.jsonl"
    REG_JSONL+=("$out|$S/prompts.jsonl")
  fi
  ((${#PROBLEMS[@]} == 0)) || show run
  verdict "$what with $redirect into head -c1: exit ${RCS[run]}, the work finished"
}

# ------------------------------------------------------------------ the final checks

final_checks() {
  local entry f e d snap out n

  begin_case "final jsonl"
  n=0
  for entry in "${REG_JSONL[@]}"; do
    f=${entry%%|*}; e=${entry#*|}
    [[ -e $f ]] || continue
    n=$((n + 1))
    out=$("${HELPER[@]}" check-jsonl "$f" --expect $e 2>&1) || problem "$(echo "$out" | head -n 2 | tr '\n' ' ')"
  done
  for d in "${REG_RUNDIRS[@]}"; do
    n=$((n + 1))
    out=$("${HELPER[@]}" check-run-dir "$d" 2>&1) || problem "$(echo "$out" | head -n 3 | tr '\n' ' ')"
  done
  verdict "$n outputs and run directories: each id once, no torn line, no stage left running"

  begin_case "final user files"
  n=0
  for entry in "${REG_SNAPS[@]}"; do
    d=${entry%%|*}; snap=${entry#*|}
    n=$((n + $(grep -vc '^dir' "$snap")))
    out=$(changed_since "$snap" "$d")
    [[ -z $out ]] || problem "${d#"$WORK"/}: deleted or changed: $(echo "$out" | awk '{ print $2 }' | head -n 6 | tr '\n' ' ')"
  done
  verdict "$n files in ${#REG_SNAPS[@]} folders unchanged"

  begin_case "final leftovers"
  no_tmp "$WORK/cases" "at the end"
  local stray; stray=$(pgrep -f "$CAI_BIN" | grep -vxE "${SERVER_PID:-none}|${SERVER_BG:-none}" | tr '\n' ' ')
  [[ -z $stray ]] || problem "cai processes still running: $stray"
  verdict "no .tmp file or folder, no cai process left (but the server)"

  if [[ -n $SERVER_PID ]]; then
    begin_case "final server"
    if [[ -n $SLOW_PID ]]; then
      wait "$SLOW_PID"
      while IFS= read -r l; do [[ $l == FAIL* ]] && problem "${l#FAIL }"; done < "$SERVER_DIR/slow.out"
    fi
    out=$("${HELPER[@]}" http-ok "$SERVER_PORT" 2>&1) || problem "after every case: $out"
    signal_cai TERM "$SERVER_PID" "$SERVER_BG"
    local i
    for i in $(seq 50); do signal_cai 0 "$SERVER_PID" "$SERVER_BG" || break; sleep 0.2; done
    signal_cai 0 "$SERVER_PID" "$SERVER_BG" && problem "still running 10 s after SIGTERM"
    wait "$SERVER_BG" 2>/dev/null
    grep -q 'panicked' "$SERVER_DIR/serve.err" && problem "the server panicked: $(grep -m1 panicked "$SERVER_DIR/serve.err")"
    verdict "$(grep -h '^ok' "$SERVER_DIR/slow.out" | sed 's/^ok *//' | tr '\n' ';' | sed 's/;/; /g') it answers a normal request and stops on SIGTERM"
    [[ -z ${PROBLEMS[*]} ]] || tail -n 5 "$SERVER_DIR/serve.err" | sed 's/^/      | /'
  fi
}

# ------------------------------------------------------------------ the schedule

declare -A COST=(
  [concurrent_generate]=12 [concurrent_pipeline]=30 [kill_generate]=15 [kill_sft]=20
  [kill_pipeline]=60 [disk_full]=30 [concurrent_sft]=12 [huge_line]=10 [binary_input]=5 [empty_input]=5
  [same_input_output]=5 [huge_positions]=5 [huge_init]=5 [truncated_model]=5
  [user_run_dir]=10 [server_abuse]=80 [broken_pipe_status]=10 [broken_pipe_run]=20
  [foreign_output]=5 [divergence]=5 [remote_restart]=15
)
# The server case waits for its slow connections to be closed: short with the timeout flags.
"$CAI_BIN" serve --help | grep -q -- '--body-timeout' && COST[server_abuse]=45
KINDS=(concurrent_generate concurrent_sft concurrent_pipeline kill_generate kill_sft kill_pipeline disk_full
  huge_line binary_input empty_input same_input_output huge_positions huge_init truncated_model
  user_run_dir server_abuse broken_pipe_status broken_pipe_run foreign_output divergence
  remote_restart)
# Extra rounds: the kinds whose outcome depends on timing.
REPEATABLE=(concurrent_generate concurrent_sft concurrent_pipeline kill_generate kill_sft kill_pipeline disk_full
  broken_pipe_run remote_restart)
if [[ -n $ONLY ]]; then
  IFS=, read -r -a KINDS <<< "$ONLY"
  for k in "${KINDS[@]}"; do [[ -n ${COST[$k]:-} ]] || { echo "torture.sh: unknown kind '$k'" >&2; exit 2; }; done
  REPEATABLE=("${KINDS[@]}")
fi
# Shuffle with bash's RANDOM (seeded above).
for ((i = ${#KINDS[@]} - 1; i > 0; i--)); do
  j=$((RANDOM % (i + 1))); t=${KINDS[i]}; KINDS[i]=${KINDS[j]}; KINDS[j]=$t
done

echo "torture.sh: seed $SEED, budget ${BUDGET} s, binary $CAI_SRC ($(date -r "$CAI_SRC" '+%F %T'))"
echo "W=$WORK   # the work directory; paths below are \$W/…"
setup
N=0
run_kind() {
  local k=$1
  N=$((N + 1))
  begin_case "$(printf '%02d' "$N") $k"
  if (($(left) - RESERVE < COST[$k])); then
    skip "not enough budget left (needs ~${COST[$k]} s, $(($(left) - RESERVE)) s left)"
    return
  fi
  "case_$k"
}
for k in "${KINDS[@]}"; do run_kind "$k"; done
if ((!ONCE)); then
  while true; do
    fits=()
    for k in "${REPEATABLE[@]}"; do (($(left) - RESERVE >= COST[$k])) && fits+=("$k"); done
    ((${#fits[@]})) || break
    pick "${fits[@]}"
    run_kind "$PICK"
  done
fi
final_checks

echo
echo "torture.sh: seed $SEED, $N cases in $(($(date +%s) - START)) s"
for l in "${FAIL_LINES[@]}"; do echo "  $l"; done
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
((FAILED == 0))
