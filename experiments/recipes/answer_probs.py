r"""The most probable whole answers of one test input, per view: what a DFS threshold can find.

  python -m experiments.recipes.answer_probs --config.tasks=runs/heldout_tasks24 \
      --task=crop_smallest_object_000 --adapters_dir=runs/eval16/ho_ttt_greedy/adapters \
      --min_prob=0.01 --views=4

Runs ``ttt_jax.infer.dfs.dfs_sample`` at a low threshold on ``--views`` of the views the
pipeline would decode (its config, ``predict_stage.spread``) and prints each answer's grid (in
the task's frame), its probability, and whether it is the true output, so the search's
``min_prob`` can be set from how much probability this model puts on whole answers rather than
guessed.
"""

import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "configs", "pipeline.py"),
    "Pipeline config file (and preset after ':'): tasks, model, views.")
_TASK = flags.DEFINE_string("task", None, "Task id in --config.tasks.", required=True)
_TEST = flags.DEFINE_integer("test_index", 0, "Which test input of the task.")
_ADAPTERS = flags.DEFINE_string("adapters_dir", "", "Saved adapters ('' = the base model).")
_MIN_PROB = flags.DEFINE_float("min_prob", 0.01, "Lowest whole-answer probability listed.")
_VIEWS = flags.DEFINE_integer("views", 4, "Views searched, spread over the input's views.")
_TOP = flags.DEFINE_integer("top", 8, "Answers listed per view.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from ttt_jax.arc import io  # pylint: disable=g-import-not-at-top
  from ttt_jax.arc.task import grids_equal  # pylint: disable=g-import-not-at-top
  from ttt_jax.data import tokens  # pylint: disable=g-import-not-at-top
  from ttt_jax.infer import dfs, predict  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import overrides, store  # pylint: disable=g-import-not-at-top
  from ttt_jax.pipeline import predict_stage, ttt_stage  # pylint: disable=g-import-not-at-top
  from ttt_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  by_id = {t.task_id: t for t in io.load_tasks(cfg.tasks)[0]}
  if _TASK.value not in by_id:
    raise app.UsageError(f"--task={_TASK.value} is not in {cfg.tasks} ({len(by_id)} tasks)")
  task = by_id[_TASK.value]
  params, mcfg = checkpoint.load_base_model(cfg.model_dir or store.DEFAULT_MODEL_DIR, "",
                                            overrides.set_overrides(cfg.get("model_overrides")))
  lcfg = ttt_stage.ttt_configs(cfg, mcfg)[0]
  adapter = (checkpoint.load_adapter(_ADAPTERS.value, task.task_id)[0] if _ADAPTERS.value
             else None)
  truth = task.test[_TEST.value].output
  views = predict_stage.views_for_test_input(task, _TEST.value, cfg.infer, mcfg.max_seq_len)
  print(f"{task.task_id} test {_TEST.value}: {len(views)} views; truth "
        f"{None if truth is None else np.asarray(truth).tolist()}")
  for v in predict_stage.spread(views, _VIEWS.value):
    found = dfs.dfs_sample(params, adapter, v.prompt_T, cfg=mcfg,
                           lora_cfg=lcfg if adapter is not None else None,
                           min_prob=_MIN_PROB.value, max_new_tokens=v.answer_tokens,
                           max_candidates=_TOP.value,
                           allowed_ids=tuple(range(10)) + (tokens.NL,))
    listed = []
    for toks_N, logp in found:
      grid = predict.answer_from_tokens(v, toks_N).grid
      right = grid is not None and truth is not None and grids_equal(grid, np.asarray(truth))
      listed.append(f"{'-' if grid is None else np.asarray(grid).tolist()} "
                    f"p={np.exp(logp):.3f}{' (truth)' if right else ''}")
    print(f"  {v.transform.name}: " + ("; ".join(listed) or "none"))


if __name__ == "__main__":
  app.run(main)
