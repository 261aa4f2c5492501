"""Choosing a test input's two attempts from its candidates: by vote, by product-of-experts
score, or by both.

Pure functions over a test input's ``records.CandidateRecord``: its ``candidates`` (distinct
grids with their vote ``count``, most votes first) and the vote's ``ranked`` grids. ``poe``
scores (``ttt_jax.infer.scoring.poe_scores``) are attached to the leading candidates only (the
pool), so every method orders the same records and a finished run can be re-ranked offline
under another method (experiments/selection_table.py).

Methods:
  vote      the voting module's ranking (today's default);
  poe       scored candidates by score, best first (ties: vote order), then the unscored
            ones in vote order (the ARChitects' selection, arXiv 2505.07859);
  vote+poe  scored candidates by the sum of their vote rank and their score rank (Borda
            count: neither scale dominates the other), ties to the better score; then the
            unscored ones in vote order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from ttt_jax.infer.records import Candidate, CandidateRecord, grid_key

METHODS = ("vote", "poe", "vote+poe")


def check_method(method: str) -> str:
  if method not in METHODS:
    raise ValueError(f"select method must be one of {METHODS}, got {method!r}")
  return method


def vote_order(record: CandidateRecord, ranked_only: bool = False) -> list[list]:
  """Distinct candidate grids in vote order: the vote's ranked grids, then (unless
  ``ranked_only``) any other candidate by count, so a grid the vote left out can still be
  scored."""
  seen, order = set(), []
  rest = () if ranked_only else record.candidates
  for entry in record.ranked + rest:
    g = entry.grid
    k = grid_key(g)
    if k not in seen:
      seen.add(k)
      order.append(g)
  return order


def pool(record: CandidateRecord, max_candidates: int) -> list[list]:
  """The candidates worth scoring: the first ``max_candidates`` in vote order."""
  return vote_order(record)[:max(0, int(max_candidates))]


def attach_scores(record: CandidateRecord, grids: Sequence[Any], scores: Sequence[float]
                  ) -> CandidateRecord:
  """A copy of ``record`` whose candidates carry their ``poe`` score (None: not scored)."""
  if len(grids) != len(scores):
    raise ValueError(f"{len(grids)} grids but {len(scores)} scores")
  by_key = {grid_key(g): float(s) for g, s in zip(grids, scores)}
  cands = list(record.candidates)
  known = {grid_key(c.grid) for c in cands}
  for g in grids:  # a ranked-only grid (a fill-in) is still a candidate with its score
    if grid_key(g) not in known:
      cands.append(Candidate(np.asarray(g).tolist(), 0, 0))
  cands = [dataclasses.replace(c, poe=by_key.get(grid_key(c.grid))) for c in cands]
  return dataclasses.replace(record, candidates=tuple(cands), scored=True)


def order(record: CandidateRecord, method: str) -> list[list]:
  """Every distinct candidate grid of ``record``, best first, under ``method``."""
  check_method(method)
  if method == "vote":  # exactly the vote's ranking (what the pipeline always did)
    return vote_order(record, ranked_only=True)
  voted = vote_order(record)
  score = {grid_key(c.grid): c.poe for c in record.candidates}
  keys = [grid_key(g) for g in voted]
  scored = [i for i, k in enumerate(keys) if score.get(k) is not None]
  unscored = [i for i, k in enumerate(keys) if score.get(k) is None]
  if method == "poe":
    scored.sort(key=lambda i: (-score[keys[i]], i))
  else:
    by_score = sorted(scored, key=lambda i: (-score[keys[i]], i))
    score_rank = {i: r for r, i in enumerate(by_score)}
    vote_rank = {i: r for r, i in enumerate(sorted(scored))}
    scored.sort(key=lambda i: (vote_rank[i] + score_rank[i], score_rank[i]))
  return [voted[i] for i in scored + unscored]


def attempts(record: CandidateRecord, method: str, fallback: Sequence[Any] = (), n: int = 2
             ) -> tuple[list[list], bool]:
  """The first ``n`` grids under ``method``, topped up from ``fallback`` grids (then by
  repeating the first) when fewer are distinct: ``(attempts, topped_up)``."""
  chosen = [np.asarray(g) for g in order(record, method)[:n]]
  topped = len(chosen) < n
  for g in fallback:
    if len(chosen) >= n:
      break
    g = np.asarray(g)
    if not any(grid_key(g) == grid_key(a) for a in chosen):
      chosen.append(g)
  while chosen and len(chosen) < n:
    chosen.append(chosen[0])
  return [np.asarray(a).tolist() for a in chosen], topped


def score_of(record: CandidateRecord, grid: Any) -> Optional[float]:
  """The ``poe`` score attached to ``grid`` in ``record`` (None: not scored)."""
  return record.count_and_score(grid)[1]
