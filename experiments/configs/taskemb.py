"""Task-embedding pretraining config (the pair format; ttt_jax.taskemb). Presets:

* ``taskemb.py:cpu`` the CPU lineage: arc-cpu (0.8M + a task table), pairs of at most 512 tokens,
  ARC-AGI-1 training tasks + 40 generated instances of each training family; resumes from the
  committed checkpoint ``ttt_jax/assets/taskemb_cpu`` (docs/training.md, "Task-embedding model").
* ``taskemb.py:quick`` the tiny model on a small pool, a CPU minute (tests, smoke runs).

Every field of ``ttt_jax.taskemb.pretrain.PretrainConfig``, e.g. ``--config.max_minutes=60``.
"""

import os

from ml_collections import config_dict

from experiments.configs.finetune import HELD_OUT_FAMILIES

ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "ttt_jax", "assets", "taskemb_cpu")


def get_config(preset: str = "cpu") -> config_dict.ConfigDict:
  c = config_dict.ConfigDict(dict(
      out_dir="runs/taskemb_cpu", init_from=ASSET, model="arc-cpu", seed=0,
      arc_sets=("arc1-train",), exclude_families=HELD_OUT_FAMILIES, per_family=40,
      pairs_per_task=12, difficulty=(0.0, 0.6), buckets=(64, 128, 256, 512), tokens_per_batch=4096,
      input_loss=0.0, learning_rate=1e-3, warmup_steps=200, weight_decay=0.01, steps=0,
      max_minutes=0.0, checkpoint_minutes=5.0, log_every=20, device="",
      # the run's compute: blocked attention skips the masked upper triangle (1.4-2x a CPU step)
      compute_dtype="", attention_impl="blocked",
      # ablations, for a new model (init_from=""): no task embedding; learned grid positions off
      # (grid_positions=False); 3-D RoPE on (rope_grid=True)
      task_embedding=True, grid_positions=config_dict.placeholder(bool),
      rope_grid=config_dict.placeholder(bool)))
  if preset == "quick":
    c.update(dict(out_dir="runs/taskemb_quick", init_from="", model="tiny", arc_sets=(),
                  per_family=2, pairs_per_task=6, buckets=(64, 128, 256), tokens_per_batch=512,
                  steps=20, log_every=5, warmup_steps=5))
  elif preset not in ("", "cpu"):
    raise ValueError(f"unknown taskemb preset {preset!r}; known: cpu, quick")
  return c
