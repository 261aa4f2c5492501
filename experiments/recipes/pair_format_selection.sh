#!/usr/bin/env bash
# RESULTS.md, "Selection or generation? PoE and the candidate ceiling on dev80-small" (issue 26):
# the three rows, each a product-of-experts evaluation that also reports the vote's pass@2 and
# whether the truth was among the answers. CKPT defaults to the committed lineage; the table was
# measured at its step 23,540 (commit 7cc1b90's ttt_jax/assets/taskemb_cpu).
#   bash experiments/recipes/pair_format_selection.sh [CKPT] [OUT_DIR]
{
set -eu
cd "$(dirname "$0")/../.."
CKPT=${1:-ttt_jax/assets/taskemb_cpu}
OUT=${2:-runs/selection}
mkdir -p "$OUT"
run() {  # name, then taskemb_eval flags
  local name=$1; shift
  python -m experiments.taskemb_eval --checkpoint="$CKPT" --tasks=dev80-small --select=poe "$@" \
    --out="$OUT/$name.json" > "$OUT/$name.log" 2>&1
  grep "pass@2" "$OUT/$name.log" | sed "s|^|$name: |"
}
run embed128 --steps=128
run embed128_colours --steps=128 --colour_views=1
run full64 --ttt=full --steps=64
run embed128_dfs --steps=128 --search=dfs
exit
}
