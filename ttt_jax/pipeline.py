"""The whole paper pipeline as one function: TTT -> augmented prediction -> vote -> score.

``run_pipeline(cfg)`` is what ``experiments/pipeline.py`` calls. Every stage
writes its results under ``cfg.out_dir``: per-task adapters (``adapters/``),
per-task predictions (``predictions/<task>.json``), and at the end
``submission.json`` (Kaggle format), ``candidates.json`` (every candidate with its
votes), ``scores.json`` (per task and per level), ``timings.json`` and
``report.html``. Finished adapters and predictions are reused, so a run killed
at any point and started again with the same ``out_dir`` finishes the rest.

Bad input never stops the run: tasks that fail validation are reported in
``errors.json``; a task whose TTT data does not fit the token budget skips TTT
(reason recorded) and is predicted by the base model; a test input with no valid
candidate still gets two attempts from a documented fallback (``fallback_attempts``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any, Optional, Sequence

import numpy as np
from absl import logging

from ttt_jax import voting
from ttt_jax.arc import io, splits
from ttt_jax.arc.task import Grid, Task
from ttt_jax.eval import baseline, report, scoring, submission
from ttt_jax.data import tokens as tokens_lib
from ttt_jax.infer import predict, selection, views as views_lib

PREDICTIONS = "predictions"
PARTS = "parts"  # one file per (task, test input) until the task's file is assembled


class Progress:
  """Logs ``done/total``, elapsed time and ETA for a long stage."""

  def __init__(self, name: str, total: int):
    self.name, self.total, self.done, self.start = name, total, 0, time.perf_counter()

  def step(self, n: int = 1, extra: str = "") -> None:
    self.done += n
    elapsed = time.perf_counter() - self.start
    eta = elapsed / max(self.done, 1) * (self.total - self.done)
    logging.info("[%s] %d/%d  %.0fs elapsed, ETA %.0fs %s", self.name, self.done, self.total,
                 elapsed, eta, extra)


def fallback_attempts(task: Task, test_index: int) -> list[Grid]:
  """Two attempts when no view gave a valid grid: the model-free baseline
  (the test input, and the input under the rotation/flip that maps most demonstrations)."""
  return list(baseline.baseline_attempts(task)[test_index])


def _grid_json(g: Optional[Grid]) -> Optional[list]:
  return None if g is None else np.asarray(g).tolist()


def _prediction_path(out_dir: str, task_id: str) -> str:
  return os.path.join(out_dir, PREDICTIONS, task_id.replace("/", "_") + ".json")


VOTE_METHODS = ("hierarchical", "flat")


def vote_test_input(answers: Sequence[predict.ViewAnswer], task: Task, test_index: int,
                    method: str = "hierarchical", extra: Sequence[predict.ViewAnswer] = (),
                    **options: Any) -> dict:
  """Voted attempts for one test input, as plain JSON-able data.

  ``answers`` holds one greedy answer per view; ``extra`` more answers of the same views
  (depth-first search), which vote like the others but are not views. ``method``
  "hierarchical" passes ``options`` (the config's ``vote`` fields: top_per_group, fill_in,
  fill_source, pooled_group, fill_rule, row_majority) to ``voting.hierarchical_vote``; "flat"
  ranks by raw counts and takes none.
  """
  if method not in VOTE_METHODS:
    raise ValueError(f"vote method must be one of {VOTE_METHODS}, got {method!r}")
  if method == "flat" and options:
    raise ValueError(f"the flat vote takes no options, got {sorted(options)}")
  cands = [voting.Candidate(a.grid, a.view.transform.name)
           for a in list(answers) + list(extra) if a.grid is not None]
  n_invalid = sum(a.grid is None for a in answers)
  ranked = (voting.hierarchical_vote(cands, **options) if method == "hierarchical"
            else voting.flat_vote(cands))
  counts = voting.flat_vote(cands)
  record = {
      "num_views": len(answers),
      "num_invalid": n_invalid,
      "num_extra": len(extra),
      "ranked": [{"grid": _grid_json(v.grid), "votes": v.votes, "count": v.count,
                  "fill_in": v.fill_in} for v in ranked],
      "candidates": [{"grid": _grid_json(v.grid), "count": v.count,
                      "identity_count": v.identity_count} for v in counts],
  }
  return select_test_input(record, task, test_index, "vote")


def select_test_input(record: dict, task: Task, test_index: int, method: str) -> dict:
  """``record`` with its two ``attempts`` chosen by ``method`` (``ttt_jax.infer.selection``),
  topped up from ``fallback_attempts`` when fewer than two distinct candidates exist."""
  ranked = selection.order(record, method)
  fallback = fallback_attempts(task, test_index) if len(ranked) < 2 else ()
  attempts, topped = selection.attempts(record, method, fallback)
  return {"attempts": attempts, "fallback": topped, "select": method,
          **{k: v for k, v in record.items() if k not in ("attempts", "fallback", "select")}}


def spread(items: Sequence[Any], n: int) -> list[Any]:
  """``n`` items evenly spaced over ``items`` (all of them when ``n`` covers them): the views
  a search or a score uses span every transform and subset, not just the first few."""
  if n <= 0 or not items:
    return []
  if n >= len(items):
    return list(items)
  return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))]


SEARCH_METHODS = ("greedy", "dfs")


def dfs_answers(params: Any, adapter: Any, views: Sequence[views_lib.View],
                greedy: Sequence[predict.ViewAnswer], *, mcfg: Any, lcfg: Any, search_cfg: Any
                ) -> list[predict.ViewAnswer]:
  """Depth-first search (``ttt_jax.infer.dfs``) on ``search_cfg.views`` of ``views``: every
  answer above ``search_cfg.min_prob`` that parses and differs from the view's greedy one."""
  from ttt_jax.infer import dfs
  allowed = tuple(range(10)) + (tokens_lib.NL,)
  greedy_by_view = {id(a.view): a.grid for a in greedy}
  out = []
  for v in spread(list(views), int(search_cfg.views)):
    found = dfs.dfs_sample(params, adapter, v.prompt_T, cfg=mcfg,
                           lora_cfg=lcfg if adapter is not None else None,
                           min_prob=float(search_cfg.min_prob), max_new_tokens=v.answer_tokens,
                           max_candidates=int(search_cfg.max_candidates),
                           max_expansions=int(search_cfg.max_expansions), allowed_ids=allowed)
    g0 = greedy_by_view.get(id(v))
    for toks_N, _ in found:
      a = predict.answer_from_tokens(v, toks_N)
      if a.grid is not None and not (g0 is not None and g0.shape == a.grid.shape
                                     and np.array_equal(g0, a.grid)):
        out.append(a)
  return out


class SavedAdapters(Mapping):
  """Task id -> saved adapter (``None`` without a trained one), read from disk on access.

  Only the small JSON metadata of every task is read up front, so a process holds just the
  adapters of the tasks it is decoding, not all of them.
  """

  def __init__(self, adapter_dir: str, tasks: Sequence[Task]):
    from ttt_jax.model import lora as lora_lib  # deferred: only needed with TTT
    from ttt_jax.train import checkpoint
    self.adapter_dir, self.lcfg, self._trained = adapter_dir, None, {}
    for t in tasks:
      meta = None
      if checkpoint.adapter_done(adapter_dir, t.task_id):
        with open(checkpoint.adapter_paths(adapter_dir, t.task_id)[1]) as f:
          meta = json.load(f)
      self._trained[t.task_id] = meta is not None and meta.get("status") == "trained"
      if self._trained[t.task_id] and self.lcfg is None:
        self.lcfg = lora_lib.LoraConfig(rank=meta["lora_rank"], alpha=meta["lora_alpha"],
                                        targets=tuple(meta["lora_targets"]))

  def __getitem__(self, task_id: str) -> Optional[Any]:
    from ttt_jax.train import checkpoint
    if not self._trained[task_id]:
      return None
    return checkpoint.load_adapter(self.adapter_dir, task_id)[0]

  def __iter__(self):
    return iter(self._trained)

  def __len__(self) -> int:
    return len(self._trained)

  def any_trained(self) -> bool:
    return any(self._trained.values())

  def untrained(self) -> list[str]:
    return [tid for tid, ok in self._trained.items() if not ok]


def _write_json_atomic(path: str, value: Any) -> None:
  """Readers (a resumed run, another process) see the whole file or none of it."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f)
  os.replace(tmp, path)


def _part_path(out_dir: str, task_id: str, test_index: int) -> str:
  return os.path.join(out_dir, PREDICTIONS, PARTS, f"{task_id.replace('/', '_')}.{test_index}.json")


def views_for_test_input(task: Task, test_index: int, view_cfg: Any, context: int
                         ) -> list[views_lib.View]:
  """The views ``predict_tasks`` decodes for one test input (``view_cfg.views`` scheme): prompt
  plus the answer budget (``view_cfg.answer_budget``) within ``context`` tokens."""
  return views_lib.make_views(task, test_index, n_orders=view_cfg.n_orders,
                              leave_out=view_cfg.leave_out, max_tokens=context,
                              seed=view_cfg.seed, budget=view_cfg.answer_budget,
                              scheme=view_cfg.views)


def predict_tasks(params: Any, tasks: Sequence[Task], adapters: Mapping[str, Any], *, mcfg: Any,
                  lcfg: Any, out_dir: str, view_cfg: Any, group_size: int,
                  vote_cfg: Optional[Mapping[str, Any]] = None, task_parallel: bool = False,
                  search_cfg: Any = None, select_cfg: Any = None,
                  timings: Optional[dict[str, float]] = None) -> dict[str, list[dict]]:
  """Predicts every test input of every task (reusing finished prediction files).

  The decoding groups are planned over all test inputs, finished or not, so a resumed run (or
  one split over several processes) decodes each remaining input in exactly the group an
  uninterrupted single-process run would use. Each input's result is saved on its own as soon
  as its group is decoded (``predictions/parts/``); the per-task files are assembled at the
  end (by process 0 when ``task_parallel``, after every process has finished its groups).
  ``vote_cfg`` is the config's ``vote`` section (``method`` plus ``voting.hierarchical_vote``
  options; None: the default vote). ``search_cfg`` (the config's ``search``; None: greedy)
  adds depth-first answers; ``select_cfg`` (``select``; None: by vote) chooses the attempts,
  scoring the leading candidates by product of experts unless it is "vote". ``timings``, when
  given, accumulates this process's seconds of greedy decoding, depth-first search and scoring
  (``predict_decode``, ``predict_dfs``, ``predict_score``; outputs stay timing-free, so a
  resumed run writes the same files).
  """
  import jax  # deferred: the numpy-only parts of this module import without JAX
  from ttt_jax.infer import scoring as scoring_lib
  from ttt_jax.model import lora as lora_lib
  from ttt_jax.parallel import multihost
  index, count = ((multihost.process_index(), multihost.process_count()) if task_parallel
                  else (0, 1))
  search_method = search_cfg.method if search_cfg is not None else "greedy"
  if search_method not in SEARCH_METHODS:
    raise ValueError(f"search method must be one of {SEARCH_METHODS}, got {search_method!r}")
  select_method = selection.check_method(select_cfg.method if select_cfg is not None else "vote")
  vote_options = dict(vote_cfg or {})
  vote_method = vote_options.pop("method", "hierarchical")
  if vote_method == "flat":  # the config's hierarchical options do not apply
    vote_options = {}
  os.makedirs(os.path.join(out_dir, PREDICTIONS, PARTS), exist_ok=True)
  finished = {t.task_id for t in tasks if os.path.exists(_prediction_path(out_dir, t.task_id))}
  context = min(view_cfg.max_tokens, mcfg.max_seq_len)  # prompt + answer must fit
  entries = []  # (task, test_index, views)
  for t in tasks:
    for j in range(len(t.test)):
      entries.append((t, j, views_for_test_input(t, j, view_cfg, context)))
  entries.sort(key=lambda e: max((len(v.prompt_T) for v in e[2]), default=0))
  groups = [entries[g:g + group_size] for g in range(0, len(entries), group_size)]

  def done(t: Task, j: int) -> bool:
    return t.task_id in finished or os.path.exists(_part_path(out_dir, t.task_id, j))

  mine = [groups[g] for g in multihost.owned(len(groups), index, count)
          if not all(done(t, j) for t, j, _ in groups[g])]
  if isinstance(adapters, SavedAdapters):
    any_adapter = adapters.any_trained()
  else:
    any_adapter = any(a is not None for a in adapters.values())
  use_lora = lcfg is not None and any_adapter
  zero = None
  if use_lora:  # tasks without TTT use a fresh adapter: B = 0, so exactly the base model
    zero = jax.tree.map(np.asarray, lora_lib.init_lora(mcfg, lcfg, jax.random.key(0)))
  progress = Progress("predict", sum(len(g) for g in mine))
  for group in mine:
    for call in predict.split_for_context([vs for _, _, vs in group], context):
      part = [group[i] for i in call]
      # Every view gets at least the answer budget it reserved when checked against context.
      max_new = predict.decode_budget([v for _, _, vs in part for v in vs], context)
      ads = []
      for t, _, _ in part:
        a = adapters.get(t.task_id) if use_lora else None
        ads.append(zero if use_lora and a is None else a)
      t_decode = time.perf_counter()
      answers = predict.decode_views(params, ads, [vs for _, _, vs in part], cfg=mcfg,
                                     lora_cfg=lcfg if use_lora else None,
                                     max_new_tokens=max_new, max_total_tokens=context,
                                     max_rows=view_cfg.get("max_rows") or None,
                                     decode_chunk=view_cfg.get("decode_chunk") or None)
      seconds = {"decode": time.perf_counter() - t_decode}
      extra = [[] for _ in part]
      if search_method == "dfs":
        t_dfs = time.perf_counter()
        extra = [dfs_answers(params, ad, vs, ans, mcfg=mcfg, lcfg=lcfg if use_lora else None,
                             search_cfg=search_cfg)
                 for (_, _, vs), ad, ans in zip(part, ads, answers)]
        seconds["dfs"] = time.perf_counter() - t_dfs
      records = [vote_test_input(ans, t, j, vote_method, extra=ex, **vote_options)
                 for (t, j, _), ans, ex in zip(part, answers, extra)]
      if select_method != "vote":
        t_score = time.perf_counter()
        pools = [selection.pool(r, select_cfg.max_candidates) for r in records]
        score_views = [spread(vs, int(select_cfg.views)) for _, _, vs in part]
        scores = scoring_lib.poe_scores_many(
            params, ads, score_views, [[np.asarray(g) for g in p] for p in pools], cfg=mcfg,
            lora_cfg=lcfg if use_lora else None, max_rows=select_cfg.get("max_rows") or None)
        records = [select_test_input(selection.attach_scores(r, p, sc), t, j, select_method)
                   for (t, j, _), r, p, sc in zip(part, records, pools, scores)]
        seconds["score"] = time.perf_counter() - t_score
      for (t, j, _), record in zip(part, records):
        if not done(t, j):
          _write_json_atomic(_part_path(out_dir, t.task_id, j), record)
      if timings is not None:
        for k, v in seconds.items():
          timings[f"predict_{k}"] = timings.get(f"predict_{k}", 0.0) + v
      progress.step(len(part), f"(max {max_new} new tokens)")

  if task_parallel:
    multihost.barrier("predictions")
  if index == 0:  # one file per task from its parts; then the parts go
    for t in tasks:
      if t.task_id in finished:
        continue
      parts = [_part_path(out_dir, t.task_id, j) for j in range(len(t.test))]
      missing = [p for p in parts if not os.path.exists(p)]
      if missing:
        raise FileNotFoundError(
            f"no prediction for {missing[0]} after every process finished: in a multi-process "
            f"run --config.out_dir ({out_dir}) must be a directory all processes share")
      tests = []
      for p in parts:
        with open(p) as f:
          tests.append(json.load(f))
      _write_json_atomic(_prediction_path(out_dir, t.task_id),
                         {"task_id": t.task_id, "tests": tests})
      for p in parts:
        os.remove(p)
  if task_parallel:
    multihost.barrier("predictions_merged")
  results = {}
  for t in tasks:
    with open(_prediction_path(out_dir, t.task_id)) as f:
      results[t.task_id] = json.load(f)["tests"]
  return results


def _count_and_score(record: dict, grid: Any) -> tuple[int, Optional[float]]:
  for c in record["candidates"]:
    if np.array_equal(np.asarray(c["grid"]), np.asarray(grid)):
      return c["count"], c.get("poe")
  return 0, None


def write_outputs(out_dir: str, tasks: Sequence[Task], results: dict[str, list[dict]],
                  errors: Sequence[Exception], ttt_notes: dict[str, str],
                  timings: dict[str, float], title: str) -> dict:
  """submission.json, candidates.json, scores.json, errors.json, timings.json, report.html."""
  attempts = {tid: [[np.asarray(a, np.int8) for a in r["attempts"]] for r in rs]
              for tid, rs in results.items()}
  submission.write_submission(os.path.join(out_dir, "submission.json"),
                              {tid: [tuple(a) for a in per] for tid, per in attempts.items()},
                              expected_tests={t.task_id: len(t.test) for t in tasks})
  with open(os.path.join(out_dir, "candidates.json"), "w") as f:
    json.dump(results, f)
  levels = splits.eval_levels()
  scored = [t for t in tasks if t.has_test_outputs]
  scores = scoring.score_submission(attempts, scoring.solutions_from_tasks(scored), levels)
  table = scoring.level_table(scores)
  per_input = [r for rs in results.values() for r in rs]
  summary = {
      "num_tasks": len(tasks), "num_scored": len(scored),
      "solved": sum(s.correct for s in scores),
      "views": sum(r["num_views"] for r in per_input),
      "views_parsed": sum(r["num_views"] - r["num_invalid"] for r in per_input),
      "fallback_inputs": sum(bool(r["fallback"]) for r in per_input),
      "tasks": [dataclasses.asdict(s) for s in scores],
      "table": [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in table],
  }
  with open(os.path.join(out_dir, "scores.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out_dir, "errors.json"), "w") as f:
    json.dump({"load_errors": [str(e) for e in errors], "ttt_skipped": ttt_notes}, f, indent=1)
  with open(os.path.join(out_dir, "timings.json"), "w") as f:
    json.dump(timings, f, indent=1)
  by_id = {s.task_id: s for s in scores}
  reps = []
  for t in tasks:
    tests = []
    for j, r in enumerate(results[t.task_id]):
      tests.append(report.TestInputReport(
          t.test[j].input, [np.asarray(a) for a in r["attempts"]], t.test[j].output,
          votes=[(np.asarray(g), *_count_and_score(r, g))
                 for g in selection.order(r, r.get("select", "vote"))[:5]]
          if r.get("select", "vote") != "vote"
          else [(np.asarray(c["grid"]), c["count"], c.get("poe")) for c in r["candidates"][:5]],
          num_candidates=r["num_views"] - r["num_invalid"], num_invalid=r["num_invalid"]))
    s = by_id.get(t.task_id)
    reps.append(report.TaskReport(t, tests, level=levels.get(t.task_id),
                                  correct=None if s is None else s.correct,
                                  note=ttt_notes.get(t.task_id, "")))
  extra = [("tasks", str(len(tasks))), ("load errors", str(len(errors)))]
  extra += [(f"time: {k}", f"{v:.1f}s") for k, v in timings.items()]
  report.write_html(os.path.join(out_dir, "report.html"), reps, title=title, extra=extra)
  summary["table_text"] = scoring.format_table(table)
  return summary


def ttt_configs(cfg: Any, mcfg: Any) -> tuple[Any, Any, Any]:
  """``(LoraConfig, OptimConfig, TTTConfig)`` that the TTT stage runs with for ``cfg``."""
  from ttt_jax.model import lora as lora_lib
  from ttt_jax.train import optim, ttt
  lcfg = lora_lib.LoraConfig(rank=cfg.ttt.lora_rank, alpha=cfg.ttt.lora_alpha,
                             targets=tuple(cfg.ttt.lora_targets))
  overrides = {} if cfg.ttt.learning_rate is None else {"learning_rate": cfg.ttt.learning_rate}
  ocfg = optim.ttt_optim_config(mcfg.name, clip_norm=cfg.ttt.clip_norm, **overrides)
  tcfg = ttt.TTTConfig(batch_size=cfg.ttt.batch_size, epochs=cfg.ttt.epochs, n_max=cfg.ttt.n_max,
                       max_tokens=min(cfg.ttt.max_tokens, mcfg.max_seq_len),
                       loss_mode=cfg.ttt.loss_mode,
                       augment=cfg.ttt.augment, group_size=cfg.ttt.group_size,
                       min_bucket=cfg.ttt.min_bucket, seed=cfg.seed,
                       shared_adapter=cfg.ttt.shared_adapter,
                       data_mode=cfg.ttt.data_mode)
  return lcfg, ocfg, tcfg


def _ttt_stage(cfg: Any, tasks: Sequence[Task], params: Any, mcfg: Any, task_parallel: bool
               ) -> tuple[Any, SavedAdapters, dict[str, str]]:
  """Trains (or reuses) every task's adapter; returns (lora cfg, adapters, skip reasons)."""
  from ttt_jax.train import ttt
  lcfg, ocfg, tcfg = ttt_configs(cfg, mcfg)
  ttt.run_ttt(tasks, params, mcfg=mcfg, lcfg=lcfg, ocfg=ocfg, tcfg=tcfg, out_dir=cfg.out_dir,
              task_parallel=task_parallel)
  if task_parallel:  # every adapter is saved before anyone predicts with it
    from ttt_jax.parallel import multihost
    multihost.barrier("ttt")
  adapters = SavedAdapters(os.path.join(cfg.out_dir, "adapters"), tasks)
  notes = {tid: f"TTT skipped: no leave-one-out example fits {tcfg.max_tokens} tokens"
           for tid in adapters.untrained()}
  return lcfg, adapters, notes


def _self_train_stage(cfg: Any, tasks: Sequence[Task], params: Any, mcfg: Any, lcfg: Any,
                      adapters: Mapping[str, Any], results: dict[str, list[dict]],
                      task_parallel: bool) -> dict[str, list[dict]]:
  """Self-training rounds after prediction (``ttt_jax.selftrain``); returns the final records.
  Rounds write under ``<out_dir>/selftrain/``; the adapters continue with the TTT settings."""
  from ttt_jax import selftrain
  if task_parallel:
    raise NotImplementedError("self_train runs in one process for now; launch the pipeline "
                              "on one process or set --config.self_train.enabled=False")
  lcfg_ttt, ocfg, tcfg = ttt_configs(cfg, mcfg)
  lcfg = lcfg or lcfg_ttt

  def predict_round(ts, ads, round_dir):
    return predict_tasks(params, ts, ads, mcfg=mcfg, lcfg=lcfg, out_dir=round_dir,
                         view_cfg=cfg.infer, group_size=cfg.infer.group_size,
                         vote_cfg=cfg.vote.to_dict(), search_cfg=cfg.get("search"),
                         select_cfg=cfg.get("select"))

  select_method = cfg.select.method if cfg.get("select") is not None else "vote"
  final, _ = selftrain.run_rounds(params, tasks, {t.task_id: adapters.get(t.task_id) for t in tasks},
                                  results, mcfg=mcfg, lcfg=lcfg, ocfg=ocfg, tcfg=tcfg,
                                  st_cfg=cfg.self_train, select_method=select_method,
                                  predict=predict_round, out_dir=cfg.out_dir)
  return final


def run_pipeline(cfg: Any) -> Optional[dict]:
  """Runs every stage for ``cfg`` (see ``experiments/configs/pipeline.py``); returns the scores.

  Run as several JAX processes (``ttt_jax.parallel.mesh.initialize_multihost``), the tasks'
  TTT and prediction are split over the processes, each on its own devices, and process 0
  writes the outputs (the same files one process writes) and returns the scores; the other
  processes return None. ``cfg.out_dir`` must then be a directory every process sees.
  """
  from ttt_jax.model import store
  from ttt_jax.parallel import multihost
  from ttt_jax.train import checkpoint
  task_parallel = multihost.process_count() > 1
  if task_parallel:  # the first collective connects every process now, not after a long stage
    multihost.barrier("start")
  timings: dict[str, float] = {}
  t0 = time.perf_counter()
  os.makedirs(cfg.out_dir, exist_ok=True)
  tasks, errors = io.load_tasks(cfg.tasks, cfg.solutions or None)
  if not tasks:
    raise ValueError(f"no valid task in {cfg.tasks!r} ({len(errors)} failed to load)")
  logging.info("pipeline: %d tasks from %s (%d failed to load)", len(tasks), cfg.tasks,
               len(errors))
  model_dir = cfg.model_dir or store.DEFAULT_MODEL_DIR
  from ttt_jax.model import overrides  # pylint: disable=g-import-not-at-top
  params, mcfg = checkpoint.load_base_model(model_dir, "",
                                            overrides.set_overrides(cfg.get("model_overrides")))
  timings["load"] = time.perf_counter() - t0

  t1 = time.perf_counter()
  lcfg, adapters, notes = None, {t.task_id: None for t in tasks}, {}
  if cfg.ttt.enabled:
    lcfg, adapters, notes = _ttt_stage(cfg, tasks, params, mcfg, task_parallel)
  elif cfg.get("adapters_dir"):  # adapters trained earlier, e.g. by experiments/ttt.py
    adapters = SavedAdapters(cfg.adapters_dir, tasks)
    lcfg = adapters.lcfg
    notes = {tid: "no adapter: predicted by the base model" for tid in adapters.untrained()}
  timings["ttt"] = time.perf_counter() - t1

  t2 = time.perf_counter()
  results = predict_tasks(params, tasks, adapters, mcfg=mcfg, lcfg=lcfg, out_dir=cfg.out_dir,
                          view_cfg=cfg.infer, group_size=cfg.infer.group_size,
                          vote_cfg=cfg.vote.to_dict(), task_parallel=task_parallel,
                          search_cfg=cfg.get("search"), select_cfg=cfg.get("select"),
                          timings=timings)
  timings["predict"] = time.perf_counter() - t2
  st_cfg = cfg.get("self_train")
  if st_cfg is not None and st_cfg.enabled:
    t3 = time.perf_counter()
    results = _self_train_stage(cfg, tasks, params, mcfg, lcfg, adapters, results, task_parallel)
    timings["self_train"] = time.perf_counter() - t3
  timings["total"] = time.perf_counter() - t0
  summary = None
  if multihost.process_index() == 0:
    title = f"ttt_jax pipeline: {cfg.tasks} with {model_dir}"
    summary = write_outputs(cfg.out_dir, tasks, results, errors, notes, timings, title)
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
