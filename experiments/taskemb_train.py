r"""Pretrains (or continues) the task-embedding model: one pair per sequence, a task table.

  python -m experiments.taskemb_train --config=experiments/configs/taskemb.py:cpu \
      --config.max_minutes=60

Resumes from ``out_dir/checkpoint``, else from ``init_from`` (the committed lineage), else
starts fresh. SIGTERM stops after the current step with a checkpoint.
"""

import os

from absl import app

from experiments import cli

_CONFIG = cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "taskemb.py") + ":cpu",
    "Task-embedding pretraining config (and preset after ':').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ttt_jax.taskemb import pretrain  # pylint: disable=g-import-not-at-top
  fields = _CONFIG.value.to_dict()
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  cfg = pretrain.PretrainConfig(**fields)
  out = pretrain.run(cfg, log=lambda s: print(s, flush=True))
  print(f"taskemb_train {out['status']} at step {out['step']}: {out['tokens_seen']:,} tokens seen")


if __name__ == "__main__":
  cli.run(main)
