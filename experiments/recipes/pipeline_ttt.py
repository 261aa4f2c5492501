r"""Only the pipeline's TTT stage, with the pipeline config: adapters for later measurement.

  python -m experiments.recipes.pipeline_ttt --config.tasks=runs/tune_tasks \
      --config.out_dir=runs/ttt_sweep/lr1e-3_e2 --config.ttt.learning_rate=1e-3

Trains exactly what ``python -m experiments.pipeline`` would before predicting (same
``ttt.*`` fields, same adapters under ``out_dir/adapters``), without decoding, so TTT
settings can be compared by ``experiments/answer_logprob.py`` in minutes instead of hours.
"""

import os

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "pipeline.py"),
    "Pipeline config file (and preset after ':').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ttt_jax.arc import io  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import overrides, store  # pylint: disable=g-import-not-at-top
  from ttt_jax.pipeline import engine, ttt_stage  # pylint: disable=g-import-not-at-top
  from ttt_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  tasks, errors = io.load_tasks(cfg.tasks)
  if errors:
    print(f"{len(errors)} tasks failed to load; first: {errors[0]}")
  params, mcfg = checkpoint.load_base_model(cfg.model_dir or store.DEFAULT_MODEL_DIR, "",
                                            overrides.set_overrides(cfg.get("model_overrides")))
  _, adapters, notes = ttt_stage.train(cfg, tasks, engine.build(params, mcfg))
  print(f"TTT: {len(tasks) - len(notes)} adapters in {cfg.out_dir}/adapters, "
        f"{len(notes)} tasks without TTT data")


if __name__ == "__main__":
  app.run(main)
