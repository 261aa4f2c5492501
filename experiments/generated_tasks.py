r"""Writes fresh generated tasks of chosen families as a directory of task JSON files.

The pipeline loads such a directory (``--config.tasks=DIR``), so fresh tasks of generator
families that fine-tuning never saw (``finetune.py:cpu`` holds some out; a model records
them in its ``meta.json`` as ``held_out_families``) measure generalisation and TTT's gain:

  python -m experiments.generated_tasks --out=runs/heldout_tasks --per_family=20 \
      --families=from_model   # the default model's held-out families
"""

from __future__ import annotations

import json
import os
from absl import app, flags

from ttt_jax.arc import generators
from ttt_jax.arc.task import task_to_json

_OUT = flags.DEFINE_string("out", "runs/heldout_tasks", "directory to write <task id>.json into")
_FAMILIES = flags.DEFINE_list("families", ["from_model"],
                              "family names, or from_model: the --model_dir's held_out_families")
_MODEL_DIR = flags.DEFINE_string("model_dir", "", "model directory for from_model ('' = default)")
_PER_FAMILY = flags.DEFINE_integer("per_family", 20, "tasks per family")
_DIFFICULTY = flags.DEFINE_float("difficulty", 0.5, "generator difficulty in [0, 1]")
_SEED = flags.DEFINE_integer("seed", 1_000_000, "first seed (task i of a family uses seed + i)")


def model_held_out_families(model_dir: str) -> list[str]:
  from ttt_jax.model import store  # deferred: reading meta.json needs no JAX
  path = os.path.join(model_dir or store.DEFAULT_MODEL_DIR, "meta.json")
  with open(path) as f:
    fams = json.load(f).get("held_out_families") or []
  if not fams:
    raise ValueError(f"{path} records no held_out_families; pass --families explicitly")
  return list(fams)


def main(argv):
  del argv
  fams = _FAMILIES.value
  if fams == ["from_model"]:
    fams = model_held_out_families(_MODEL_DIR.value)
  tasks = generators.generate_task_set(fams, _PER_FAMILY.value, _DIFFICULTY.value, _SEED.value)
  os.makedirs(_OUT.value, exist_ok=True)
  for t in tasks:
    with open(os.path.join(_OUT.value, f"{t.task_id}.json"), "w") as f:
      json.dump(task_to_json(t), f)
  print(f"wrote {len(tasks)} tasks of {len(fams)} families ({', '.join(fams)}) to {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
