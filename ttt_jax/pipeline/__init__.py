"""The whole paper pipeline: TTT -> augmented prediction -> vote/select -> self-train -> outputs.

``run_pipeline(cfg)`` is what ``experiments/pipeline.py`` calls. It builds the process's
``engine`` once (the device-resident base, the mesh, the compiled steps) and chains the
stages on it, each a module that reads the tasks and writes its files under ``cfg.out_dir``: ``ttt_stage``
(``adapters/``), ``predict_stage`` (``predictions/<task>.json``, with ``select_stage``
choosing each test input's attempts), ``selftrain_stage`` (``selftrain/``) and ``outputs``
(``submission.json``, ``candidates.json``, ``scores.json``, ``errors.json``, ``timings.json``,
``report.html``). Finished adapters and predictions are reused, so a run killed at any point
and started again with the same ``out_dir`` finishes the rest.

Bad input never stops the run: tasks that fail validation are reported in ``errors.json``; a
task whose TTT data does not fit the token budget skips TTT (reason recorded) and is predicted
by the base model; a test input with no valid candidate still gets two attempts from a
documented fallback (``fallback_attempts``).
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import jax
from absl import logging

from ttt_jax.arc import io
from ttt_jax.pipeline import engine as engine_lib
from ttt_jax.pipeline import outputs, predict_stage, selftrain_stage, ttt_stage

# Re-exported: the names callers (tests, experiments/) use as ``pipeline.<name>``.
from ttt_jax.infer import selection
from ttt_jax.pipeline.outputs import write_outputs
from ttt_jax.pipeline.predict_stage import (PARTS, PREDICTIONS, SEARCH_METHODS, Progress,
                                            dfs_answers, predict_tasks, spread,
                                            views_for_test_input)
from ttt_jax.pipeline.select_stage import (VOTE_METHODS, fallback_attempts, select_test_input,
                                           vote_test_input)
from ttt_jax.pipeline.ttt_stage import SavedAdapters, ttt_configs

_ttt_stage = ttt_stage.train  # the name tests/test_pipeline.py calls
TRANSFER_GUARDS = ("allow", "log", "disallow")  # cfg.transfer_guard: jax.transfer_guard levels


def run_pipeline(cfg: Any) -> Optional[dict]:
  """Runs every stage for ``cfg`` (see ``experiments/configs/pipeline.py``); returns the scores.

  Run as several JAX processes (``ttt_jax.parallel.mesh.initialize_multihost``), the tasks'
  TTT and prediction are split over the processes, each on its own devices, and process 0
  writes the outputs (the same files one process writes) and returns the scores; the other
  processes return None. ``cfg.out_dir`` must then be a directory every process sees.
  """
  from ttt_jax.model import overrides, store
  from ttt_jax.parallel import multihost
  from ttt_jax.train import checkpoint
  guard = cfg.get("transfer_guard", "allow")
  if guard not in TRANSFER_GUARDS:
    raise ValueError(f"transfer_guard must be one of {TRANSFER_GUARDS}, got {guard!r}")
  task_parallel = multihost.process_count() > 1
  if task_parallel:  # the first collective connects every process now, not after a long stage
    multihost.barrier("start")
  timings: dict[str, float] = {}
  t0 = time.perf_counter()
  tasks, errors = io.load_tasks(cfg.tasks, cfg.solutions or None)
  if not tasks:
    raise io.TaskSetError(f"no valid task in {cfg.tasks!r} ({len(errors)} failed to load)")
  os.makedirs(cfg.out_dir, exist_ok=True)  # only once there is work: a mistaken spec leaves nothing
  logging.info("pipeline: %d tasks from %s (%d failed to load)", len(tasks), cfg.tasks,
               len(errors))
  model_dir = cfg.model_dir or store.DEFAULT_MODEL_DIR
  params, mcfg = checkpoint.load_base_model(model_dir, "",
                                            overrides.set_overrides(cfg.get("model_overrides")))
  engine = engine_lib.build(params, mcfg, task_parallel)  # the base goes to the devices once
  timings["load"] = time.perf_counter() - t0

  with jax.transfer_guard(guard):
    t1 = time.perf_counter()
    lcfg, adapters, notes = ttt_stage.run(cfg, tasks, engine)
    timings["ttt"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    results = predict_stage.run(cfg, tasks, engine, lcfg, adapters, timings=timings)
    timings["predict"] = time.perf_counter() - t2
    st_cfg = cfg.get("self_train")
    if st_cfg is not None and st_cfg.enabled:
      t3 = time.perf_counter()
      results = selftrain_stage.run(cfg, tasks, engine, lcfg, adapters, results)
      timings["self_train"] = time.perf_counter() - t3
  timings["total"] = time.perf_counter() - t0
  summary = None
  if multihost.process_index() == 0:
    title = f"ttt_jax pipeline: {cfg.tasks} with {model_dir}"
    summary = outputs.write_outputs(cfg.out_dir, tasks, results, errors, notes, timings, title,
                                    model_dir=model_dir)
    summary["report"] = os.path.join(cfg.out_dir, "report.html")
  if task_parallel:  # nobody exits (and shuts the coordinator down) before the outputs exist
    multihost.barrier("outputs")
  return summary


def run_and_print(cfg: Any) -> None:
  """What the pipeline and predict binaries do: initialise multi-process JAX when launched
  on several processes (tasks are then split), run, and print pass@2 and the report path."""
  from ttt_jax import compile_cache
  from ttt_jax.parallel import mesh
  mesh.initialize_multihost()
  compile_cache.enable(cfg.get("jax_cache_dir", ""))
  summary = run_pipeline(cfg)
  if summary is None:  # not process 0: process 0 wrote the outputs
    return
  print(summary["table_text"])
  print(f"pass@2: {summary['solved']}/{summary['num_scored']} tasks; views parsed: "
        f"{summary['views_parsed']}/{summary['views']}; test inputs topped up by the fallback: "
        f"{summary['fallback_inputs']}; report: {os.path.abspath(summary['report'])}")
  if "solved_by_round" in summary:
    print("pass@2 after self-training rounds 0, 1, ...: "
          + ", ".join(f"{n}/{summary['num_scored']}" for n in summary["solved_by_round"]))
