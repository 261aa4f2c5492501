#!/usr/bin/env bash
# N processes of one ttt_jax binary on this machine, as one JAX distributed job: the same
# multi-process code path as a pod or cluster, for testing and for multi-GPU workstations.
#
#   launch/local.sh 2 experiments.pipeline --config.tasks=dev80-small --config.out_dir=runs/mp
#
# Process 0's output is shown here; every process's log is kept in $TTT_JAX_LOG_DIR
# (default runs/local_logs/process<i>.log). Environment:
#   TTT_JAX_PORT              coordinator port on 127.0.0.1 (default: a free one)
#   TTT_JAX_GPUS_PER_PROCESS  give process i GPUs i*k .. i*k+k-1 (CUDA_VISIBLE_DEVICES)
#   TTT_JAX_PYTHON            interpreter (default python3)
# On a CPU-only machine set JAX_PLATFORMS=cpu. Exits non-zero if any process fails.
set -euo pipefail

if [ "$#" -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local.sh NUM_PROCESSES MODULE [ARGS...]" >&2
  exit 2
fi
num="$1"
module="$2"
shift 2
python="${TTT_JAX_PYTHON:-python3}"
port="${TTT_JAX_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log_dir="${TTT_JAX_LOG_DIR:-runs/local_logs}"
mkdir -p "$log_dir"

pids=()
for ((i = 0; i < num; i++)); do
  : > "$log_dir/process$i.log"  # exists before tail opens it, however late process i starts
done
# Ctrl-C or a kill of this script stops every process it started.
trap 'kill "${pids[@]}" 2>/dev/null || true; exit 130' INT TERM

for ((i = 0; i < num; i++)); do
  (
    export JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$num" JAX_PROCESS_ID="$i"
    if [ -n "${TTT_JAX_GPUS_PER_PROCESS:-}" ]; then
      k="$TTT_JAX_GPUS_PER_PROCESS"
      CUDA_VISIBLE_DEVICES=$(seq -s, $((i * k)) $((i * k + k - 1)))
      export CUDA_VISIBLE_DEVICES
    fi
    exec "$python" -m "$module" "$@"
  ) > "$log_dir/process$i.log" 2>&1 &
  pids+=("$!")
done
echo "local.sh: $num processes of $module, coordinator 127.0.0.1:$port, logs in $log_dir" >&2
# --pid: tail exits once process 0 has ended and everything it wrote has been printed.
tail -n +1 --pid="${pids[0]}" -f "$log_dir/process0.log" &
tail_pid=$!

status=0
for i in "${!pids[@]}"; do
  rc=0
  wait "${pids[$i]}" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "local.sh: process $i failed (exit status $rc); log: $log_dir/process$i.log" >&2
    status=1
  fi
done
wait "$tail_pid" 2>/dev/null || true
exit "$status"
