r"""Initial fine-tuning (full or LoRA) on an endless stream of augmented ARC tasks.

  python -m experiments.finetune --config=experiments/configs/finetune.py:quick
  python -m experiments.finetune --config=experiments/configs/finetune.py \
      --config.out_dir=runs/ft1 --config.steps=4000

Rerunning with the same ``out_dir`` resumes from the latest checkpoint.
"""

import os

from absl import app

from experiments import cli

_CONFIG = cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "finetune.py") + ":quick",
    "Fine-tuning config file (and preset after ':').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ttt_jax.parallel import mesh  # pylint: disable=g-import-not-at-top
  mesh.initialize_multihost()
  from ttt_jax.train import metrics  # pylint: disable=g-import-not-at-top
  metrics.quiet_library_logs()
  from ttt_jax.train import finetune  # pylint: disable=g-import-not-at-top
  result = finetune.run_finetune(_CONFIG.value)
  print(f"finetune {result['status']} at step {result['step']}: loss {result.get('loss')}")


if __name__ == "__main__":
  cli.run(main)
