"""Voting over augmented predictions: candidate grids in, ranked attempts out.

Pure functions over plain data (numpy grids and strings): no JAX, no RNG, no hidden
state, so the same candidates in the same order always give the same ranking.

A candidate is a predicted output grid for one test input, already mapped back by
the inverse of the view (transform) that produced it, tagged with that view's name.
Grids are compared exactly: same shape and same cell values.

Two rules are provided:

* ``hierarchical_vote`` -- the paper's two-stage vote (Akyürek et al., arXiv 2411.07279):
  top 3 grids inside each transform group (filled with row- and column-wise majority
  grids when a group has fewer than 3 distinct grids), then the grids picked by the
  most groups, ties to the identity view.
* ``flat_vote`` -- every distinct candidate ranked by how often it was predicted.

Both return every ranked grid with its counts (``VotedGrid``), best first; the two
ARC attempts are ``attempts(ranked)``.

``REFERENCE`` holds the ``hierarchical_vote`` options that behave like the paper's reference
code (``arclib/voting.py``) rather than its text: every group fills all 3 stage-1 slots, so a
grid can take several slots of one group (a unanimous group gives its grid 3 votes); the
row-wise majority counts rows of every grid of the majority width, across shapes; and a group
of all predictions pooled votes too. Where the reference breaks ties by Python set order and
``np.argsort``, which are arbitrary, the rules here break them as documented below. Zero candidates give an empty list: the caller
decides the fallback (the pipeline submits the test input itself).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Hashable, Iterable, Optional, Sequence, Union

import numpy as np

IDENTITY = "identity"
POOLED_GROUP = "*pooled*"
FILL_RULES = ("distinct", "reference")
ROW_MAJORITIES = ("same_shape", "cross_shape")

# hierarchical_vote options of the paper's reference code (see the module docstring).
REFERENCE = dict(top_per_group=3, fill_in=True, fill_source="group", pooled_group=True,
                 fill_rule="reference", row_majority="cross_shape")

GridKey = tuple[tuple[int, ...], bytes]


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
  """One predicted grid and the name of the view (transform) that produced it."""
  grid: np.ndarray
  transform: str = IDENTITY


@dataclasses.dataclass(frozen=True, eq=False)
class VotedGrid:
  """A grid with the counts that ranked it.

  votes: the ranking count -- for ``hierarchical_vote`` the number of stage-1 slots
    holding the grid (with the default ``fill_rule="distinct"`` a group fills a grid into
    at most one slot, so: the number of groups that picked it); for ``flat_vote`` the
    number of candidates.
  count: how many candidates (over all groups) are exactly this grid.
  identity_count: how many of those came from the identity view.
  groups: the groups that picked the grid in stage 1, in group order, once per slot
    (empty for ``flat_vote``).
  fill_in: True when the grid is not among the candidates at all, i.e. it exists
    only as a row/column-wise majority fill-in (then ``count == 0``).
  """
  grid: np.ndarray
  votes: int
  count: int
  identity_count: int
  groups: tuple[str, ...] = ()
  fill_in: bool = False


CandidateLike = Union[Candidate, tuple[Any, str]]


def grid_key(grid: np.ndarray) -> GridKey:
  """Hashable exact identity of a grid: its shape and its cells as int64 bytes."""
  arr = np.asarray(grid)
  return tuple(arr.shape), np.ascontiguousarray(arr, dtype=np.int64).tobytes()


def _normalise(candidates: Iterable[CandidateLike]) -> list[Candidate]:
  """Accepts ``Candidate``s or ``(grid, transform)`` tuples; checks every grid is 2-D ints."""
  out = []
  for i, c in enumerate(candidates):
    if not isinstance(c, Candidate):
      if not (isinstance(c, tuple) and len(c) == 2):
        raise ValueError(f"candidate {i}: expected Candidate or (grid, transform), "
                         f"got {type(c).__name__}")
      c = Candidate(grid=c[0], transform=c[1])
    grid = np.asarray(c.grid)
    if grid.ndim != 2 or grid.size == 0:
      raise ValueError(f"candidate {i} ({c.transform}): expected a non-empty 2-D grid, "
                       f"got shape {grid.shape}")
    if not np.issubdtype(grid.dtype, np.integer):
      raise ValueError(f"candidate {i} ({c.transform}): expected integer cells, "
                       f"got dtype {grid.dtype}")
    if not isinstance(c.transform, str):
      raise ValueError(f"candidate {i}: transform must be a str, got {c.transform!r}")
    out.append(Candidate(grid=grid, transform=c.transform))
  return out


def _most_common(items: Sequence[Hashable]) -> Hashable:
  """The most frequent item; ties go to the item that appears first."""
  counts = collections.Counter(items)
  best = max(counts.values())
  return next(x for x in items if counts[x] == best)


def _ranked_by_count(grids: Sequence[np.ndarray]) -> list[tuple[GridKey, np.ndarray, int]]:
  """Distinct grids as (key, grid, count), most frequent first, ties by first appearance."""
  counts: dict[GridKey, int] = {}
  first: dict[GridKey, np.ndarray] = {}
  for g in grids:
    k = grid_key(g)
    counts[k] = counts.get(k, 0) + 1
    first.setdefault(k, g)
  # dicts keep insertion (= first appearance) order and sorted() is stable.
  order = sorted(counts, key=lambda k: -counts[k])
  return [(k, first[k], counts[k]) for k in order]


def row_majority_grid(grids: Sequence[np.ndarray], across_shapes: bool = False
                      ) -> Optional[np.ndarray]:
  """Row-wise majority grid of the most common shape: the most common row at each row index.

  The rows counted at index r come from the grids of the most common shape, or with
  ``across_shapes`` (the reference code) from every grid of that width with a row r, whatever
  its height. Ties (of shape or of row) go to the first grid in ``grids`` order. None when
  ``grids`` is empty.
  """
  if not grids:
    return None
  arrs = [np.asarray(g) for g in grids]
  shape = _most_common([a.shape for a in arrs])
  pool = [a for a in arrs if (a.shape[1] == shape[1] if across_shapes else a.shape == shape)]
  rows = []
  for r in range(shape[0]):
    row_keys = [tuple(a[r].tolist()) for a in pool if a.shape[0] > r]
    rows.append(_most_common(row_keys))
  return np.asarray(rows, dtype=pool[0].dtype)


def column_majority_grid(grids: Sequence[np.ndarray], across_shapes: bool = False
                         ) -> Optional[np.ndarray]:
  """Column-wise majority grid: ``row_majority_grid`` of the transposed grids, transposed."""
  if not grids:
    return None
  maj = row_majority_grid([np.asarray(g).T for g in grids], across_shapes)
  return maj.T.copy()


def group_picks(grids: Sequence[np.ndarray], top_k: int = 3, fill_in: bool = True,
                fill_from: Optional[Sequence[np.ndarray]] = None, fill_rule: str = "distinct",
                row_majority: str = "same_shape") -> list[tuple[np.ndarray, bool]]:
  """Stage 1 for one group: up to ``top_k`` slots as (grid, is_fill_in).

  The ``top_k`` most frequent grids (ties by first appearance). When there are fewer
  than ``top_k`` distinct grids and ``fill_in`` is set, the empty slots take the row-wise
  and column-wise majority grids of ``fill_from`` (default: ``grids``; ``row_majority``
  ``"cross_shape"`` counts rows across shapes, see ``row_majority_grid``):

  * ``fill_rule="distinct"`` (default): the row-wise, then the column-wise majority grid,
    each only if not already picked and while a slot is free. A group therefore picks each
    grid at most once, and may leave slots empty.
  * ``fill_rule="reference"`` (the reference code): every slot is filled; each empty slot
    takes the row-wise majority grid when it is not yet picked, else the column-wise one even
    if that is already picked. A grid can then fill several slots: a unanimous group gives
    its grid ``top_k`` slots, and a group of two grids gives a third slot to a majority grid,
    often a repeat of one of them.

  Note: built from the group itself, a majority grid of at most two distinct grids
  is always one of them (at every row index the more frequent -- or first -- grid's
  row wins), so with the paper's ``top_k=3`` group-level fill-ins never add a new
  grid; they can when ``top_k > 3`` or when ``fill_from`` is wider than the group.
  """
  if fill_rule not in FILL_RULES:
    raise ValueError(f"fill_rule must be one of {FILL_RULES}, got {fill_rule!r}")
  if row_majority not in ROW_MAJORITIES:
    raise ValueError(f"row_majority must be one of {ROW_MAJORITIES}, got {row_majority!r}")
  ranked = _ranked_by_count(grids)
  picks = [(g, False) for _, g, _ in ranked[:top_k]]
  source = grids if fill_from is None else fill_from
  if fill_in and len(picks) < top_k and len(source):
    across = row_majority == "cross_shape"
    row, col = row_majority_grid(source, across), column_majority_grid(source, across)
    seen = {k for k, _, _ in ranked[:top_k]}
    if fill_rule == "reference":
      while len(picks) < top_k:
        maj = row if grid_key(row) not in seen else col
        seen.add(grid_key(maj))
        picks.append((maj, True))
      return picks
    for maj in (row, col):
      if len(picks) >= top_k:
        break
      k = grid_key(maj)
      if k not in seen:
        seen.add(k)
        picks.append((maj, True))
  return picks


def _group_by_transform(cands: Sequence[Candidate]) -> dict[str, list[np.ndarray]]:
  groups: dict[str, list[np.ndarray]] = {}
  for c in cands:
    groups.setdefault(c.transform, []).append(c.grid)
  return groups


def hierarchical_vote(candidates: Iterable[CandidateLike], *, top_per_group: int = 3,
                      fill_in: bool = True, fill_source: str = "group",
                      pooled_group: bool = False, fill_rule: str = "distinct",
                      row_majority: str = "same_shape",
                      identity: str = IDENTITY) -> list[VotedGrid]:
  """The paper's two-stage vote; returns every stage-1 pick ranked, best first.

  Stage 1: candidates are grouped by ``transform`` (groups in order of first
  appearance); each group fills up to ``top_per_group`` slots with ``group_picks``
  (most frequent first, row/column majority fill-ins when short, by ``fill_rule`` and
  ``row_majority``; the defaults give each grid at most one slot per group).
  ``fill_source`` says which candidates the fill-in majority grids are built from:
  ``"group"`` (default, the paper's text: the group's own candidates) or ``"all"``
  (every candidate of the test input, the same fill-ins for every short group).
  With ``pooled_group`` an extra group of all candidates pooled (named
  ``POOLED_GROUP``) picks too, as the paper's reference code does; the paper's text,
  and the default here, has no pooled group.

  Stage 2: each grid's ``votes`` is the number of stage-1 slots it holds (the number of
  groups that picked it, unless ``fill_rule="reference"`` repeats it). Grids are ranked by,
  in order:
    1. more votes;
    2. more candidates from the ``identity`` view (the paper's tie rule);
    3. more candidates in total;
    4. earlier first appearance in ``candidates`` (fill-ins that are never candidates
       come after all candidates, in the order they were first picked).
  Rules 3-4 make the ranking total and deterministic; rule 4 alone decides when all
  else ties.

  Zero candidates give ``[]``. The top two entries are the ARC attempts.
  ``hierarchical_vote(candidates, **REFERENCE)`` votes like the paper's reference code.
  """
  cands = _normalise(candidates)
  if not cands:
    return []
  if top_per_group < 1:
    raise ValueError(f"top_per_group must be >= 1, got {top_per_group}")
  if fill_source not in ("group", "all"):
    raise ValueError(f"fill_source must be 'group' or 'all', got {fill_source!r}")
  all_grids = [c.grid for c in cands] if fill_source == "all" else None
  groups = _group_by_transform(cands)
  if pooled_group:
    if POOLED_GROUP in groups:
      raise ValueError(f"a candidate uses the reserved transform name {POOLED_GROUP!r}")
    groups[POOLED_GROUP] = [c.grid for c in cands]

  count: dict[GridKey, int] = collections.Counter()
  identity_count: dict[GridKey, int] = collections.Counter()
  order: dict[GridKey, int] = {}
  for i, c in enumerate(cands):
    k = grid_key(c.grid)
    count[k] += 1
    identity_count[k] += c.transform == identity
    order.setdefault(k, i)

  grid_of: dict[GridKey, np.ndarray] = {}
  pickers: dict[GridKey, list[str]] = {}
  for name, grids in groups.items():
    for g, _ in group_picks(grids, top_per_group, fill_in, fill_from=all_grids,
                            fill_rule=fill_rule, row_majority=row_majority):
      k = grid_key(g)
      grid_of.setdefault(k, g)
      pickers.setdefault(k, []).append(name)
      order.setdefault(k, len(order) + len(cands))  # unseen fill-ins go last

  keys = sorted(pickers, key=lambda k: (-len(pickers[k]), -identity_count[k],
                                        -count[k], order[k]))
  return [VotedGrid(grid=grid_of[k], votes=len(pickers[k]), count=count[k],
                    identity_count=identity_count[k], groups=tuple(pickers[k]),
                    fill_in=count[k] == 0)
          for k in keys]


def flat_vote(candidates: Iterable[CandidateLike], *,
              identity: str = IDENTITY) -> list[VotedGrid]:
  """Every distinct candidate ranked by how many candidates predicted it.

  ``votes == count``. Ties: more identity-view candidates first, then first
  appearance. Zero candidates give ``[]``.
  """
  cands = _normalise(candidates)
  count: dict[GridKey, int] = collections.Counter()
  identity_count: dict[GridKey, int] = collections.Counter()
  grid_of: dict[GridKey, np.ndarray] = {}
  for c in cands:
    k = grid_key(c.grid)
    count[k] += 1
    identity_count[k] += c.transform == identity
    grid_of.setdefault(k, c.grid)
  keys = sorted(grid_of, key=lambda k: (-count[k], -identity_count[k]))  # stable: first seen
  return [VotedGrid(grid=grid_of[k], votes=count[k], count=count[k],
                    identity_count=identity_count[k]) for k in keys]


def attempts(ranked: Sequence[VotedGrid], k: int = 2) -> list[np.ndarray]:
  """The first ``k`` grids of a ranking (fewer when fewer were ranked)."""
  return [v.grid for v in ranked[:k]]
