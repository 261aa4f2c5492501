"""A test input's candidates, as one typed record.

The prediction stage makes one ``CandidateRecord`` per test input (``pipeline.select_stage``:
the vote over its views' answers, then the two attempts), ``ttt_jax.infer.selection`` orders
its candidates, self-training reads its leader and appends its history, and the outputs write
it. On disk (``predictions/<task>.json``, ``candidates.json``) it is the plain JSON of
``to_json``; ``from_json`` reads it back, so finished runs written before this class existed
load unchanged. Grids stay nested lists of ints, as JSON holds them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

GridList = list  # a grid as nested lists of ints (rows of colours), JSON's form


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A distinct answer grid with how many answers gave it (views and search answers)."""
  grid: GridList
  count: int
  identity_count: int  # of those, from the identity view (the vote's tie-break)
  poe: Optional[float] = None  # product-of-experts score; None: not scored

  def to_json(self, scored: bool) -> dict:
    out = {"grid": self.grid, "count": self.count, "identity_count": self.identity_count}
    if scored:  # a scored record names every candidate's score, null where it has none
      out["poe"] = self.poe
    return out


@dataclasses.dataclass(frozen=True)
class Ranked:
  """One grid of the vote's ranking (``voting.hierarchical_vote`` or ``flat_vote``)."""
  grid: GridList
  votes: int
  count: int
  fill_in: bool

  def to_json(self) -> dict:
    return {"grid": self.grid, "votes": self.votes, "count": self.count,
            "fill_in": self.fill_in}


@dataclasses.dataclass(frozen=True)
class CandidateRecord:
  """Everything the pipeline knows about one test input's answers.

  ``candidates`` are the distinct grids by count (most first); ``ranked`` the vote's ranking;
  ``scored`` says PoE scores were attached (``selection.attach_scores``); ``attempts`` are the
  two grids submitted, chosen by ``select`` (topped up from the model-free baseline when
  ``fallback``); ``rounds`` is the self-training history (``selftrain.round_entry`` dicts).
  """
  num_views: int
  num_invalid: int  # views whose answer did not parse as a grid
  num_extra: int  # depth-first-search answers that voted too
  ranked: tuple[Ranked, ...] = ()
  candidates: tuple[Candidate, ...] = ()
  scored: bool = False
  attempts: tuple[GridList, ...] = ()
  fallback: bool = False
  select: str = "vote"
  rounds: Optional[tuple[dict, ...]] = None  # None: no self-training ran

  @property
  def num_parsed(self) -> int:
    return self.num_views - self.num_invalid

  def count_and_score(self, grid: Any) -> tuple[int, Optional[float]]:
    """(count, PoE score) of the candidate equal to ``grid`` (any container or integer type);
    (0, None) if none is."""
    key = grid_key(grid)
    for c in self.candidates:
      if grid_key(c.grid) == key:
        return c.count, c.poe
    return 0, None

  def to_json(self) -> dict:
    out = {"attempts": list(self.attempts), "fallback": self.fallback, "select": self.select,
           "num_views": self.num_views, "num_invalid": self.num_invalid,
           "num_extra": self.num_extra, "ranked": [r.to_json() for r in self.ranked],
           "candidates": [c.to_json(self.scored) for c in self.candidates]}
    if self.rounds is not None:
      out["rounds"] = list(self.rounds)
    return out

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> "CandidateRecord":
    cands = d.get("candidates", ())
    rounds = d.get("rounds")
    return cls(num_views=int(d.get("num_views", 0)), num_invalid=int(d.get("num_invalid", 0)),
               num_extra=int(d.get("num_extra", 0)),
               ranked=tuple(Ranked(r["grid"], r["votes"], r["count"], r["fill_in"])
                            for r in d.get("ranked", ())),
               candidates=tuple(Candidate(c["grid"], c["count"], c["identity_count"],
                                          c.get("poe")) for c in cands),
               scored=any("poe" in c for c in cands), attempts=tuple(d.get("attempts", ())),
               fallback=bool(d.get("fallback", False)), select=d.get("select", "vote"),
               rounds=None if rounds is None else tuple(rounds))


def grid_key(grid: Any) -> tuple:
  """Identity of a grid whatever its container or integer type (JSON lists, int8 arrays)."""
  g = np.asarray(grid, np.int64)
  return g.shape, g.tobytes()


def records_to_json(results: Mapping[str, Any]) -> dict[str, list[dict]]:
  """Task id -> records, as the JSON ``candidates.json`` holds."""
  return {tid: [r.to_json() for r in rs] for tid, rs in results.items()}


def records_from_json(results: Mapping[str, Any]) -> dict[str, list[CandidateRecord]]:
  return {tid: [CandidateRecord.from_json(r) for r in rs] for tid, rs in results.items()}
