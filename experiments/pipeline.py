r"""The whole TTT pipeline on a task set: TTT -> augmented prediction -> vote -> score.

  python -m experiments.pipeline                      # embedded default model and task set
  python -m experiments.pipeline --config=experiments/configs/pipeline.py:paper \
      --config.model_dir=runs/arc_small --config.out_dir=runs/dev80
  python -m experiments.pipeline --config.tasks=challenges.json --config.solutions=sol.json

Writes submission.json, candidates.json, scores.json, errors.json, timings.json and
report.html to --config.out_dir; a rerun with the same out_dir reuses finished work.
"""

import os

from absl import app

from experiments import cli

_CONFIG = cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "pipeline.py"),
    "Pipeline config file (and preset after ':').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ttt_jax import pipeline  # pylint: disable=g-import-not-at-top
  pipeline.run_and_print(_CONFIG.value)


if __name__ == "__main__":
  cli.run(main)
