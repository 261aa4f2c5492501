r"""Per-task test-time training: one LoRA adapter per task, K tasks per compiled step.

  python -m experiments.ttt --config=experiments/configs/ttt.py:quick
  python -m experiments.ttt --config=experiments/configs/ttt.py \
      --config.model_dir=runs/finetune/params --config.tasks=dev80 --config.out_dir=runs/ttt

The reference code's TTT settings (no gradient clipping, its data set, LoRA without o):

  python -m experiments.ttt --config=experiments/configs/ttt.py --config.optim.clip_norm=0 \
      --config.ttt.data_mode=reference "--config.lora.targets=('q','v','gate','up','down')"

Adapters go to ``<out_dir>/adapters/<task_id>.safetensors`` (+ ``.json``); a rerun skips
tasks already done.
"""

import os

from absl import app

from experiments import cli

_CONFIG = cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "ttt.py") + ":quick",
    "TTT config file (and preset after ':').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ttt_jax.parallel import mesh  # pylint: disable=g-import-not-at-top
  mesh.initialize_multihost()
  from ttt_jax.train import metrics  # pylint: disable=g-import-not-at-top
  metrics.quiet_library_logs()
  from ttt_jax.train import ttt  # pylint: disable=g-import-not-at-top
  summary = ttt.run_ttt_from_config(_CONFIG.value)
  print(f"ttt: {len(summary['trained'])} trained, {len(summary['skipped_done'])} already done, "
        f"{len(summary['no_data'])} without data")


if __name__ == "__main__":
  cli.run(main)
