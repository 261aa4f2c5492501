"""Pipeline runs side by side: pass@2 under every selection method, from stored candidates.

Each method's attempts are ``ttt_jax.infer.selection``'s choice among the candidates a run
stored (the function the pipeline uses; no second decode), so a run made with
``select.method=poe`` can be re-ranked offline. A run still going is read from its finished
predictions, and runs are compared on the tasks all of them have finished (decoding goes by
prompt length, so partial runs finish the same shortest tasks first). A run with self-training
is read round by round (``round_records``, ``round_summaries``).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Sequence

import numpy as np

from ttt_jax import selftrain
from ttt_jax.arc import splits
from ttt_jax.arc.task import Task, grids_equal
from ttt_jax.infer import records, selection
from ttt_jax.infer.records import CandidateRecord
from ttt_jax.pipeline import predict_stage, select_stage

COLUMNS = tuple(selection.METHODS) + ("pass@all",)


def _same(a, b) -> bool:  # stored grids are nested lists
  return grids_equal(a, b)


def family(task_id: str) -> str:
  """A generated task's family: its id without the trailing ``_NNN`` (other ids unchanged)."""
  head, _, num = task_id.rpartition("_")
  return head if head and num.isdigit() else task_id


def run_labels(run_dirs: Sequence[str], labels: Sequence[str]) -> list[str]:
  """Row labels for runs: the given ones, or each run directory's name."""
  labels = list(labels) or [os.path.basename(os.path.normpath(r)) for r in run_dirs]
  if len(labels) != len(run_dirs):
    raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
  return labels


def run_records(run_dir: str, tasks: Sequence[Task]
                ) -> tuple[dict[str, list[CandidateRecord]], bool]:
  """(task id -> records, finished): candidates.json of a finished run, else the tasks whose
  predictions are done so far."""
  path = os.path.join(run_dir, "candidates.json")
  if os.path.exists(path):
    with open(path) as f:
      return records.records_from_json(json.load(f)), True
  return predict_stage.finished_records(run_dir, tasks), False


def round_records(run_dir: str, tasks: Sequence[Task]) -> list[dict[str, list[CandidateRecord]]]:
  """Each self-training round's records of a run (``ttt_jax.selftrain``): round 0 is the
  run's prediction stage; round r adds the tasks re-predicted in ``selftrain/round<r>`` (the
  accepted ones; none when the round accepted nothing) over round r-1, so every round covers
  the same tasks. The rounds are those in ``selftrain/rounds.json``, or while it is not
  written yet, the round directories present."""
  st_dir = os.path.join(run_dir, selftrain.SELFTRAIN)
  summary = os.path.join(st_dir, "rounds.json")
  if os.path.exists(summary):
    with open(summary) as f:
      num_rounds = len(json.load(f))
  else:
    num_rounds = 0
    while os.path.isdir(os.path.join(st_dir, f"round{num_rounds + 1}")):
      num_rounds += 1
  rounds = [predict_stage.finished_records(run_dir, tasks)]
  for r in range(1, num_rounds + 1):
    rounds.append({**rounds[-1],
                   **predict_stage.finished_records(os.path.join(st_dir, f"round{r}"), tasks)})
  return rounds


def passes_before(decision: dict, max_token_acc_drop: float = 0.0) -> bool | None:
  """Whether a trained decision's adapter passes verification against its starting adapter
  alone (``verify="before"``; decision files do not record the run's
  ``self_train.max_token_acc_drop``, so it is given here); None if untrained."""
  if "loo_after" not in decision:
    return None
  return selftrain.verified(np.asarray(decision["loo_before"]), np.asarray(decision["loo_after"]),
                            np.asarray(decision["loo_token_acc_before"]),
                            np.asarray(decision["loo_token_acc_after"]), max_token_acc_drop)


def round_summaries(run_dir: str, max_token_acc_drop: float = 0.0) -> list[dict]:
  """rounds.json, each round with ``pass_before``: trained decisions that pass "before"
  (``passes_before``)."""
  path = os.path.join(run_dir, selftrain.SELFTRAIN, "rounds.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rounds = json.load(f)
  for s in rounds:
    verdicts = []
    for p in sorted(glob.glob(os.path.join(run_dir, selftrain.SELFTRAIN, f"round{s['round']}",
                                           "decisions", "*.json"))):
      with open(p) as f:
        verdicts.append(passes_before(json.load(f), max_token_acc_drop))
    s["pass_before"] = sum(v is True for v in verdicts)
  return rounds


def solved_by_method(results: dict[str, list[CandidateRecord]], tasks: Sequence[Task]
                     ) -> dict[str, int]:
  """Tasks solved (every test input right within two attempts) per method, plus pass@all
  (every test output among the candidates at all: the ceiling of any selection)."""
  solved = dict.fromkeys(COLUMNS, 0)
  for t in tasks:
    if not t.has_test_outputs or t.task_id not in results:
      continue
    recs = results[t.task_id]
    for m in selection.METHODS:
      solved[m] += all(any(_same(a, t.test[j].output)
                           for a in select_stage.select_test_input(r, t, j, m).attempts)
                       for j, r in enumerate(recs))
    solved["pass@all"] += all(any(_same(g, t.test[j].output) for g in selection.vote_order(r))
                              for j, r in enumerate(recs))
  return solved


def table_rows(runs: Sequence[tuple[str, dict[str, list[CandidateRecord]]]], tasks: Sequence[Task],
               by_family: bool = False, by_level: bool = False) -> list[dict]:
  """One row per (task group, run) over the tasks with truth that every run has finished:
  ``group`` ("all", then each family when ``by_family``, then each ARC-AGI-1 evaluation
  difficulty level present when ``by_level``), ``run``, ``tasks``, the solved counts of
  ``COLUMNS``, mean distinct candidates per input, inputs with PoE scores, views parsed and
  views."""
  common = set.intersection(*(set(res) for _, res in runs)) if runs else set()
  tasks = [t for t in tasks if t.task_id in common and t.has_test_outputs]
  groups = [("all", tasks)]
  if by_family:
    groups += [(n, [t for t in tasks if family(t.task_id) == n])
               for n in sorted({family(t.task_id) for t in tasks})]
  if by_level:
    level_of = splits.eval_levels()
    groups += [(lv, [t for t in tasks if level_of.get(t.task_id) == lv]) for lv in splits.LEVELS
               if any(level_of.get(t.task_id) == lv for t in tasks)]
  rows = []
  for name, ts in groups:
    for label, results in runs:
      per_input = [r for t in ts for r in results[t.task_id]]
      rows.append(dict(
          group=name, run=label, tasks=len(ts), **solved_by_method(results, ts),
          candidates=float(np.mean([len(selection.vote_order(r)) for r in per_input]))
          if per_input else 0.0,
          inputs_scored=sum(any(c.poe is not None for c in r.candidates) for r in per_input),
          inputs=len(per_input),
          views_parsed=sum(r.num_parsed for r in per_input),
          views=sum(r.num_views for r in per_input)))
  return rows
