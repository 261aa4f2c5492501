r"""Augmented prediction and voting with adapters trained earlier (no TTT in this run).

  python -m experiments.ttt --config=experiments/configs/ttt.py:quick --config.out_dir=runs/ttt
  python -m experiments.predict --config.adapters_dir=runs/ttt/adapters \
      --config.model_dir=runs/finetune_quick/model --config.tasks=dev80:4 --config.out_dir=runs/pred

Without --config.adapters_dir it predicts with the bare model. Same outputs as the
pipeline (submission.json, candidates.json, scores.json, report.html, ...).
"""

import os

from absl import app

from experiments import cli

_CONFIG = cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "pipeline.py") + ":no_ttt",
    "Pipeline config file; TTT is always off here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ttt_jax import pipeline  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  cfg.ttt.enabled = False
  pipeline.run_and_print(cfg)


if __name__ == "__main__":
  cli.run(main)
