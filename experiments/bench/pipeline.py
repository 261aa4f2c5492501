"""Measurement 5, ``pipeline``: tasks per minute of the whole pipeline's TTT and prediction stages.

``ttt_jax.pipeline.run_pipeline`` runs ``cfg.pipeline.config`` (an ``experiments/configs/pipeline.py``
config: by default the embedded model on a small task set) ``repeats`` times, each into a fresh
output directory so nothing is reused from disk. The first run compiles every step (cold); later
runs reuse the compiled steps (warm), which is the steady throughput of a long task set.
"""

from __future__ import annotations

import json
import os
import tempfile

from absl import logging

from experiments.bench import harness
from experiments.bench.report import fmt, table


def _per_minute(n: int, seconds: float):
  return 60.0 * n / seconds if seconds > 0 else None


def _rate(x) -> str:
  return fmt(x if x is None else round(x, 1))


def run_once(pcfg, out_dir: str) -> dict:
  """One pipeline run into ``out_dir``; its stage timings and scores as a row."""
  from ttt_jax import pipeline  # pylint: disable=g-import-not-at-top
  pcfg = pcfg.copy_and_resolve_references()
  pcfg.out_dir = out_dir
  summary = pipeline.run_pipeline(pcfg)
  with open(os.path.join(out_dir, "timings.json")) as f:
    timings = json.load(f)
  n = summary["num_tasks"]
  return {"measurement": "pipeline", "tasks": pcfg.tasks, "model": pcfg.model_dir or "default",
          "n_tasks": n, "ttt": bool(pcfg.ttt.enabled), "ttt_s": timings["ttt"], "predict_s": timings["predict"],
          "total_s": timings["total"], "ttt_tasks_min": _per_minute(n, timings["ttt"]) if pcfg.ttt.enabled else None,
          "predict_tasks_min": _per_minute(n, timings["predict"]), "solved": summary["solved"],
          "scored": summary["num_scored"], "views": summary["views"], "views_parsed": summary["views_parsed"]}


def run(cfg, env: dict) -> list[dict]:
  del env
  rows = []
  for i in range(int(cfg.pipeline.repeats)):
    logging.info("pipeline run %d/%d on %s", i + 1, cfg.pipeline.repeats, cfg.pipeline.config.tasks)
    last = i == int(cfg.pipeline.repeats) - 1
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as out_dir:
      with harness.profiled(cfg, "pipeline" if last else "", f"pipeline_run{i}"):
        rows.append(dict(run_once(cfg.pipeline.config, out_dir), run="cold" if i == 0 else "warm"))
  return rows


def markdown(rows: list[dict], env: dict) -> list[str]:
  del env
  r0 = rows[0]
  return [f"### 5. Whole pipeline: tasks per minute with the {r0['model']} model on `{r0['tasks']}` "
          f"({r0['n_tasks']} task{'s' if r0['n_tasks'] != 1 else ''})", "",
          table(["run", "TTT s", "TTT tasks/min", "predict s", "predict tasks/min", "total s", "solved / scored",
                 "views parsed"],
                [[r["run"], f"{r['ttt_s']:.1f}", _rate(r["ttt_tasks_min"]), f"{r['predict_s']:.1f}",
                  _rate(r["predict_tasks_min"]), f"{r['total_s']:.1f}",
                  f"{r['solved']} / {r['scored']}", f"{r['views_parsed']} / {r['views']}"] for r in rows]), "",
          "Cold: the first run in the process, compiling every step; warm: the same tasks again into a fresh "
          "output directory (jitted steps that outlive a run are reused; any a stage builds per run compile "
          "again). Stage times are `timings.json` of `ttt_jax.pipeline`.", ""]
