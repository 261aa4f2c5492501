"""Attempt selection: the two attempts of one test input from its answers or its record.

Pure functions over a test input's ``records.CandidateRecord``: ``vote_test_input``
votes over its answers into a record, ``select_test_input`` picks the attempts by a
``ttt_jax.infer.selection`` method, and a test input with fewer than two distinct candidates is
topped up from ``fallback_attempts``. The prediction stage calls them per decoded group (PoE
scores need the group's views); ``experiments/selection_table.py`` reruns them on a finished run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from ttt_jax import voting
from ttt_jax.arc.task import Grid, Task
from ttt_jax.eval import baseline
from ttt_jax.infer import predict, selection
from ttt_jax.infer.records import Candidate, CandidateRecord, Ranked

VOTE_METHODS = ("hierarchical", "flat")


def fallback_attempts(task: Task, test_index: int) -> list[Grid]:
  """Two attempts when no view gave a valid grid: the model-free baseline
  (the test input, and the input under the rotation/flip that maps most demonstrations)."""
  return list(baseline.baseline_attempts(task)[test_index])


def _grid_json(g: Optional[Grid]) -> Optional[list]:
  return None if g is None else np.asarray(g).tolist()


def vote_test_input(answers: Sequence[predict.ViewAnswer], task: Task, test_index: int,
                    method: str = "hierarchical", extra: Sequence[predict.ViewAnswer] = (),
                    **options: Any) -> CandidateRecord:
  """Voted attempts for one test input: its record, attempts chosen by the vote.

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
  record = CandidateRecord(
      num_views=len(answers), num_invalid=n_invalid, num_extra=len(extra),
      ranked=tuple(Ranked(_grid_json(v.grid), v.votes, v.count, v.fill_in) for v in ranked),
      candidates=tuple(Candidate(_grid_json(v.grid), v.count, v.identity_count)
                       for v in counts))
  return select_test_input(record, task, test_index, "vote")


def select_test_input(record: CandidateRecord, task: Task, test_index: int, method: str
                      ) -> CandidateRecord:
  """``record`` with its two ``attempts`` chosen by ``method`` (``ttt_jax.infer.selection``),
  topped up from ``fallback_attempts`` when fewer than two distinct candidates exist."""
  ranked = selection.order(record, method)
  fallback = fallback_attempts(task, test_index) if len(ranked) < 2 else ()
  attempts, topped = selection.attempts(record, method, fallback)
  return dataclasses.replace(record, attempts=tuple(attempts), fallback=topped, select=method)
