"""The prediction stage: every test input's views decoded, voted and selected, per task on disk.

Each test input's record (``select_stage``) is saved on its own as soon as its decoding group
is done (``predictions/parts/<task>.<j>.json``); the per-task files
(``predictions/<task>.json``) are assembled from the parts at the end. Finished files are
reused, so a resumed run (or one of several processes) decodes only what is left.
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

from ttt_jax import atomic_json
from ttt_jax.arc.task import Task, grids_equal
from ttt_jax.data import tokens as tokens_lib
from ttt_jax.infer import predict, selection, views as views_lib
from ttt_jax.infer.records import CandidateRecord
from ttt_jax.pipeline import select_stage, ttt_stage

PREDICTIONS = "predictions"
PARTS = "parts"  # one file per (task, test input) until the task's file is assembled
SEARCH_METHODS = ("greedy", "dfs")


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


def _prediction_path(out_dir: str, task_id: str) -> str:
  return os.path.join(out_dir, PREDICTIONS, task_id.replace("/", "_") + ".json")


def _part_path(out_dir: str, task_id: str, test_index: int) -> str:
  return os.path.join(out_dir, PREDICTIONS, PARTS, f"{task_id.replace('/', '_')}.{test_index}.json")


def spread(items: Sequence[Any], n: int) -> list[Any]:
  """``n`` items evenly spaced over ``items`` (all of them when ``n`` covers them): the views
  a search or a score uses span every transform and subset, not just the first few."""
  if n <= 0 or not items:
    return []
  if n >= len(items):
    return list(items)
  return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))]


def dfs_answers(engine: Any, adapter: Any, views: Sequence[views_lib.View],
                greedy: Sequence[predict.ViewAnswer], *, lcfg: Any, search_cfg: Any
                ) -> list[predict.ViewAnswer]:
  """Depth-first search (``ttt_jax.infer.dfs``) on ``search_cfg.views`` of ``views``: every
  answer above ``search_cfg.min_prob`` that parses and differs from the view's greedy one."""
  allowed = tuple(range(10)) + (tokens_lib.NL,)
  greedy_by_view = {id(a.view): a.grid for a in greedy}
  out = []
  for v in spread(list(views), int(search_cfg.views)):
    found = engine.search(adapter, v.prompt_T, lcfg=lcfg, min_prob=float(search_cfg.min_prob),
                          max_new_tokens=v.answer_tokens,
                          max_candidates=int(search_cfg.max_candidates),
                          max_expansions=int(search_cfg.max_expansions), allowed_ids=allowed)
    g0 = greedy_by_view.get(id(v))
    for toks_N, _ in found:
      a = predict.answer_from_tokens(v, toks_N)
      if a.grid is not None and not grids_equal(g0, a.grid):
        out.append(a)
  return out


def views_for_test_input(task: Task, test_index: int, view_cfg: Any, context: int
                         ) -> list[views_lib.View]:
  """The views ``predict_tasks`` decodes for one test input (``view_cfg.views`` scheme): prompt
  plus the answer budget (``view_cfg.answer_budget``) within ``context`` tokens."""
  return views_lib.make_views(task, test_index, n_orders=view_cfg.n_orders,
                              leave_out=view_cfg.leave_out, max_tokens=context,
                              seed=view_cfg.seed, budget=view_cfg.answer_budget,
                              scheme=view_cfg.views)


def _plan_groups(tasks: Sequence[Task], view_cfg: Any, context: int, group_size: int
                 ) -> list[list[tuple[Task, int, list[views_lib.View]]]]:
  """Decoding groups of ``(task, test index, views)`` over every test input, by prompt length:
  the same groups however many inputs are finished or processes share the work."""
  entries = []
  for t in tasks:
    for j in range(len(t.test)):
      entries.append((t, j, views_for_test_input(t, j, view_cfg, context)))
  entries.sort(key=lambda e: max((len(v.prompt_T) for v in e[2]), default=0))
  return [entries[g:g + group_size] for g in range(0, len(entries), group_size)]


def _load_prediction(out_dir: str, task_id: str) -> list[CandidateRecord]:
  with open(_prediction_path(out_dir, task_id)) as f:
    return [CandidateRecord.from_json(r) for r in json.load(f)["tests"]]


def finished_records(out_dir: str, tasks: Sequence[Task]) -> dict[str, list[CandidateRecord]]:
  """Task id -> per-input records of the tasks whose every test input is predicted in
  ``out_dir``, read while a run is still going (assembled files or their parts)."""
  results = {}
  for t in tasks:
    if os.path.exists(_prediction_path(out_dir, t.task_id)):
      results[t.task_id] = _load_prediction(out_dir, t.task_id)
      continue
    parts = [_part_path(out_dir, t.task_id, j) for j in range(len(t.test))]
    if all(os.path.exists(p) for p in parts):
      tests = []
      for p in parts:
        with open(p) as f:
          tests.append(CandidateRecord.from_json(json.load(f)))
      results[t.task_id] = tests
  return results


def _assemble(out_dir: str, tasks: Sequence[Task], finished: set[str]) -> None:
  """One file per unfinished task from its parts; then the parts go."""
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
    atomic_json.write_json(_prediction_path(out_dir, t.task_id),
                       {"task_id": t.task_id, "tests": tests})
    for p in parts:
      os.remove(p)


@dataclasses.dataclass(frozen=True)
class CallSettings:
  """What every decoding call of one prediction stage shares (``CallSettings.make``)."""
  lcfg: Any  # the adapters' LoRA config; None: the bare base model
  zero: Any  # a fresh adapter (B = 0: exactly the base) for tasks without TTT; None without LoRA
  context: int  # prompt + answer tokens
  view_cfg: Any
  num_tasks: Optional[int]  # the padded task axis (infer.pad_tasks), or None
  search_cfg: Any
  select_cfg: Any
  select_method: str
  vote_method: str
  vote_options: dict

  @classmethod
  def make(cls, engine: Any, adapters: Mapping[str, Any], *, lcfg: Any, view_cfg: Any,
           group_size: int, vote_cfg: Optional[Mapping[str, Any]], search_cfg: Any,
           select_cfg: Any) -> "CallSettings":
    import jax  # deferred: the numpy-only parts of this module import without JAX
    from ttt_jax.model import lora as lora_lib
    from ttt_jax.parallel import sharding
    search_method = search_cfg.method if search_cfg is not None else "greedy"
    if search_method not in SEARCH_METHODS:
      raise ValueError(f"search method must be one of {SEARCH_METHODS}, got {search_method!r}")
    select_method = selection.check_method(select_cfg.method if select_cfg is not None else "vote")
    vote_options = dict(vote_cfg or {})
    vote_method = vote_options.pop("method", "hierarchical")
    if vote_method == "flat":  # the config's hierarchical options do not apply
      vote_options = {}
    if isinstance(adapters, ttt_stage.SavedAdapters):
      any_adapter = adapters.any_trained()
    else:
      any_adapter = any(a is not None for a in adapters.values())
    use_lora = lcfg is not None and any_adapter
    zero = None
    if use_lora:  # tasks without TTT use a fresh adapter: B = 0, so exactly the base model
      zero = jax.device_get(lora_lib.init_lora(engine.mcfg, lcfg, sharding.rng_key(0)))
    # Padded task axis: every call's K is the group size, so the last short group (or a split
    # one) reuses the program the full groups compiled.
    return cls(lcfg=lcfg if use_lora else None, zero=zero,
               context=min(view_cfg.max_tokens, engine.mcfg.max_seq_len),
               view_cfg=view_cfg, num_tasks=group_size if view_cfg.get("pad_tasks") else None,
               search_cfg=search_cfg if search_method == "dfs" else None, select_cfg=select_cfg,
               select_method=select_method, vote_method=vote_method, vote_options=vote_options)


def predict_call(engine: Any, settings: CallSettings,
                 part: Sequence[tuple[Task, int, list[views_lib.View]]],
                 adapters: Mapping[str, Any]
                 ) -> tuple[list[CandidateRecord], dict[str, float], int]:
  """One decoding call over ``part`` (test inputs that share a context): greedy answers of every
  view, depth-first answers when searching, the vote, and PoE scores when the selection needs
  them. Returns (each input's record, seconds per phase, new tokens decoded per view)."""
  views = [vs for _, _, vs in part]
  # Every view gets at least the answer budget it reserved when checked against context.
  max_new = predict.decode_budget([v for vs in views for v in vs], settings.context)
  ads = [None] * len(part)
  if settings.lcfg is not None:
    ads = [adapters.get(t.task_id) for t, _, _ in part]
    ads = [settings.zero if a is None else a for a in ads]
  view_cfg = settings.view_cfg
  t0 = time.perf_counter()
  answers = engine.decode(ads, views, lcfg=settings.lcfg, max_new_tokens=max_new,
                          max_total_tokens=settings.context,
                          max_rows=view_cfg.get("max_rows") or None,
                          decode_chunk=view_cfg.get("decode_chunk") or None,
                          num_tasks=settings.num_tasks)
  seconds = {"decode": time.perf_counter() - t0}
  extra = [[] for _ in part]
  if settings.search_cfg is not None:
    t0 = time.perf_counter()
    extra = [dfs_answers(engine, ad, vs, ans, lcfg=settings.lcfg, search_cfg=settings.search_cfg)
             for vs, ad, ans in zip(views, ads, answers)]
    seconds["dfs"] = time.perf_counter() - t0
  records = [select_stage.vote_test_input(ans, t, j, settings.vote_method, extra=ex,
                                          **settings.vote_options)
             for (t, j, _), ans, ex in zip(part, answers, extra)]
  if settings.select_method != "vote":
    t0 = time.perf_counter()
    select_cfg = settings.select_cfg
    pools = [selection.pool(r, select_cfg.max_candidates) for r in records]
    scores = engine.score(ads, [spread(vs, int(select_cfg.views)) for vs in views],
                          [[np.asarray(g) for g in p] for p in pools], lcfg=settings.lcfg,
                          max_rows=select_cfg.get("max_rows") or None,
                          num_tasks=settings.num_tasks)
    records = [select_stage.select_test_input(selection.attach_scores(r, p, sc), t, j,
                                              settings.select_method)
               for (t, j, _), r, p, sc in zip(part, records, pools, scores)]
    seconds["score"] = time.perf_counter() - t0
  return records, seconds, max_new


def predict_tasks(engine: Any, tasks: Sequence[Task], adapters: Mapping[str, Any], *,
                  lcfg: Any, out_dir: str, view_cfg: Any, group_size: int,
                  vote_cfg: Optional[Mapping[str, Any]] = None, search_cfg: Any = None,
                  select_cfg: Any = None, timings: Optional[dict[str, float]] = None
                  ) -> dict[str, list[CandidateRecord]]:
  """Predicts every test input of every task on ``engine`` (``pipeline.engine``), reusing
  finished prediction files.

  The decoding groups are planned over all test inputs, finished or not, so a resumed run (or
  one split over several processes) decodes each remaining input in exactly the group an
  uninterrupted single-process run would use. Each input's result is saved on its own as soon
  as its group is decoded (``predictions/parts/``); the per-task files are assembled at the
  end (by process 0 when the engine is one of several task-parallel processes, after every
  process has finished its groups).
  ``vote_cfg`` is the config's ``vote`` section (``method`` plus ``voting.hierarchical_vote``
  options; None: the default vote). ``search_cfg`` (the config's ``search``; None: greedy)
  adds depth-first answers; ``select_cfg`` (``select``; None: by vote) chooses the attempts,
  scoring the leading candidates by product of experts unless it is "vote". ``timings``, when
  given, accumulates this process's seconds of greedy decoding, depth-first search and scoring
  (``predict_decode``, ``predict_dfs``, ``predict_score``; outputs stay timing-free, so a
  resumed run writes the same files).
  """
  from ttt_jax.parallel import multihost
  task_parallel = engine.task_parallel
  index, count = ((multihost.process_index(), multihost.process_count()) if task_parallel
                  else (0, 1))
  settings = CallSettings.make(engine, adapters, lcfg=lcfg, view_cfg=view_cfg,
                               group_size=group_size, vote_cfg=vote_cfg, search_cfg=search_cfg,
                               select_cfg=select_cfg)
  os.makedirs(os.path.join(out_dir, PREDICTIONS, PARTS), exist_ok=True)
  finished = {t.task_id for t in tasks if os.path.exists(_prediction_path(out_dir, t.task_id))}
  groups = _plan_groups(tasks, view_cfg, settings.context, group_size)

  def done(t: Task, j: int) -> bool:
    return t.task_id in finished or os.path.exists(_part_path(out_dir, t.task_id, j))

  mine = [groups[g] for g in multihost.owned(len(groups), index, count)
          if not all(done(t, j) for t, j, _ in groups[g])]
  progress = Progress("predict", sum(len(g) for g in mine))
  for group in mine:
    for call in predict.split_for_context([vs for _, _, vs in group], settings.context):
      part = [group[i] for i in call]
      records, seconds, max_new = predict_call(engine, settings, part, adapters)
      for (t, j, _), record in zip(part, records):
        if not done(t, j):
          atomic_json.write_json(_part_path(out_dir, t.task_id, j), record.to_json())
      if timings is not None:
        for k, v in seconds.items():
          timings[f"predict_{k}"] = timings.get(f"predict_{k}", 0.0) + v
      progress.step(len(part), f"(max {max_new} new tokens)")

  if task_parallel:
    multihost.barrier("predictions")
  if index == 0:
    _assemble(out_dir, tasks, finished)
  if task_parallel:
    multihost.barrier("predictions_merged")
  return {t.task_id: _load_prediction(out_dir, t.task_id) for t in tasks}


def run(cfg: Any, tasks: Sequence[Task], engine: Any, lcfg: Any,
        adapters: Mapping[str, Any], *, out_dir: Optional[str] = None,
        timings: Optional[dict[str, float]] = None) -> dict[str, list[CandidateRecord]]:
  """``predict_tasks`` with the config's ``infer``, ``vote``, ``search`` and ``select``
  sections into ``out_dir`` (default ``cfg.out_dir``); returns task id -> per-input records."""
  return predict_tasks(engine, tasks, adapters, lcfg=lcfg,
                       out_dir=cfg.out_dir if out_dir is None else out_dir,
                       view_cfg=cfg.infer, group_size=cfg.infer.group_size,
                       vote_cfg=cfg.vote.to_dict(), search_cfg=cfg.get("search"), select_cfg=cfg.get("select"),
                       timings=timings)
