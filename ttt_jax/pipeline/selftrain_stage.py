"""The self-training stage (``cfg.self_train``): rounds of ``ttt_jax.selftrain`` after prediction.

Each round predicts with the prediction stage into its own directory under
``<out_dir>/selftrain/``, so rounds resume like the rest of the pipeline; the adapters continue
with the TTT settings (``self_train.learning_rate`` may replace TTT's rate), and each task's
latest records are what the outputs report. Several processes split each round's tasks
(``task_parallel``), as they split TTT and prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

from ttt_jax.arc.task import Task
from ttt_jax.pipeline import predict_stage, ttt_stage


def run(cfg: Any, tasks: Sequence[Task], params: Any, mcfg: Any, lcfg: Any,
        adapters: Mapping[str, Any], results: dict[str, list[dict]],
        task_parallel: bool) -> dict[str, list[dict]]:
  """Self-training rounds after prediction (``ttt_jax.selftrain``); returns the final records.
  Rounds write under ``<out_dir>/selftrain/``; the adapters continue with the TTT settings
  (``self_train.learning_rate``, when set, replaces TTT's rate)."""
  from ttt_jax import selftrain
  lcfg_ttt, ocfg, tcfg = ttt_stage.ttt_configs(cfg, mcfg)
  lcfg = lcfg or lcfg_ttt
  if cfg.self_train.get("learning_rate") is not None:  # the M-step's own rate; else TTT's
    ocfg = ocfg.replace(learning_rate=float(cfg.self_train.learning_rate))

  def predict_round(ts, ads, round_dir):
    return predict_stage.run(cfg, ts, params, mcfg, lcfg, ads, out_dir=round_dir,
                             task_parallel=task_parallel)

  select_method = cfg.select.method if cfg.get("select") is not None else "vote"
  final, _ = selftrain.run_rounds(params, tasks, {t.task_id: adapters.get(t.task_id) for t in tasks},
                                  results, mcfg=mcfg, lcfg=lcfg, ocfg=ocfg, tcfg=tcfg,
                                  st_cfg=cfg.self_train, select_method=select_method,
                                  predict=predict_round, out_dir=cfg.out_dir,
                                  task_parallel=task_parallel)
  return final
