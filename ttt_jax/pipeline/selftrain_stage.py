"""The self-training stage (``cfg.self_train``): rounds of ``ttt_jax.selftrain`` after prediction.

This stage drives the rounds (``ttt_jax.selftrain.Rounds``): each round trains and verifies,
then this stage predicts the accepted tasks with the prediction stage into the round's own
directory under ``<out_dir>/selftrain/``, so rounds resume like the rest of the pipeline. The
adapters continue with the TTT settings (``self_train.learning_rate`` may replace TTT's rate),
and each task's latest records are what the outputs report. Several processes split each
round's tasks (``task_parallel``), as they split TTT and prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

from ttt_jax.arc.task import Task
from ttt_jax.infer.records import CandidateRecord
from ttt_jax.pipeline import predict_stage, ttt_stage


def run(cfg: Any, tasks: Sequence[Task], engine: Any, lcfg: Any,
        adapters: Mapping[str, Any], results: dict[str, list[CandidateRecord]]
        ) -> dict[str, list[CandidateRecord]]:
  """Self-training rounds after prediction (``ttt_jax.selftrain``); returns the final records.
  Rounds write under ``<out_dir>/selftrain/``; the adapters continue with the TTT settings
  (``self_train.learning_rate``, when set, replaces TTT's rate)."""
  from ttt_jax import selftrain
  lcfg_ttt, ocfg, tcfg = ttt_stage.ttt_configs(cfg, engine.mcfg)
  lcfg = lcfg or lcfg_ttt
  if cfg.self_train.get("learning_rate") is not None:  # the M-step's own rate; else TTT's
    ocfg = ocfg.replace(learning_rate=float(cfg.self_train.learning_rate))

  select_method = cfg.select.method if cfg.get("select") is not None else "vote"
  rounds = selftrain.Rounds(engine.params, tasks,
                            {t.task_id: adapters.get(t.task_id) for t in tasks}, results,
                            mcfg=engine.mcfg, lcfg=lcfg, ocfg=ocfg, tcfg=tcfg,
                            st_cfg=cfg.self_train, select_method=select_method,
                            out_dir=cfg.out_dir, task_parallel=engine.task_parallel,
                            step_fn=engine.train_step(lcfg, ocfg))
  for r in range(1, int(cfg.self_train.rounds) + 1):
    if not rounds.active:
      break
    accepted = rounds.train(r)
    records = predict_stage.run(cfg, rounds.tasks(list(accepted)), engine, lcfg, accepted,
                                out_dir=rounds.round_dir(r)) if accepted else {}
    rounds.update(r, records)
  return rounds.finish()[0]
