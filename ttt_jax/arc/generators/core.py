"""Family registry and the generation loop shared by every task family.

A family is a hidden rule written as three pure pieces:

* ``rule(rng, difficulty) -> dict``: the task-level hidden parameters (colours,
  direction, factor, ...), drawn once per task;
* ``pair(rng, difficulty, rule) -> (input, output)``: one example; ``output`` may
  be ``None`` when the output is simply the rule applied to the input;
* ``solve(input, rule) -> output``: the rule applied to an input alone. It is the
  family's verifier: every generated pair must satisfy ``solve(input) == output``.
  Where ``pair`` builds its output from what it placed (objects, true colours under
  noise, ...), this check is independent of the construction and rejects ambiguous
  samples (touching objects, ties in size, noise that cannot be undone, ...).

``generate`` draws a rule, draws pairs with bounded retries, checks task-level
invariants (distinct inputs, no identity pair, not all outputs equal), then applies
the task-level randomisation: one D4 orientation and one colour permutation for the
whole task (colour 0, the canonical background, is permuted too with probability
``P_RECOLOUR_BACKGROUND``, which randomises the background colour). A family that
keeps failing raises ``GenerationError`` naming the family and the reasons.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ttt_jax.arc.task import MAX_SIDE, NUM_COLOURS, Grid, Pair, Task, grids_equal

PAIR_TRIES = 60  # draws per pair before the rule itself is redrawn
RULE_TRIES = 6  # rule draws before the family gives up with GenerationError
P_RECOLOUR_BACKGROUND = 0.3
DEFAULT_TRAIN = (3, 4)  # number of demonstrations drawn uniformly from this range


class Retry(Exception):
  """Raised by a family when a draw does not fit; the caller draws again."""


class GenerationError(RuntimeError):
  """A family failed to produce a valid task within its retry budget."""


Rule = dict
PairFn = Callable[[np.random.Generator, float, Rule], tuple[Grid, Optional[Grid]]]


@dataclasses.dataclass(frozen=True)
class Family:
  """One hidden-rule family; ``family(rng, difficulty)`` returns a ``Task``."""
  name: str
  theme: str
  doc: str
  rule: Callable[[np.random.Generator, float], Rule]
  pair: PairFn
  solve: Callable[[Grid, Rule], Grid]
  reorient: bool = True
  recolour: bool = True

  def verify(self, inp: Grid, out: Grid, rule: Rule) -> Optional[str]:
    """None when (inp, out) follows the rule, else the reason it does not."""
    try:
      expected = self.solve(inp, rule)
    except Retry as e:
      return f"solver rejects input: {e}"
    if expected.shape != out.shape:
      return f"output shape {out.shape}, rule gives {expected.shape}"
    if not np.array_equal(expected, out):
      return f"{int((expected != out).sum())} output cells differ from the rule"
    return None

  def sample(self, rng: np.random.Generator, difficulty: float,
             num_pairs: int) -> tuple[Rule, list[tuple[Grid, Grid]]]:
    """Canonical (un-randomised) rule and verified pairs; raises GenerationError."""
    if not 0.0 <= difficulty <= 1.0:
      raise ValueError(f"family {self.name}: difficulty {difficulty} outside [0, 1]")
    reasons: collections.Counter = collections.Counter()
    for _ in range(RULE_TRIES):
      try:
        rule = self.rule(rng, difficulty)
      except Retry as e:
        reasons[f"rule: {e}"] += 1
        continue
      pairs = self._sample_pairs(rng, difficulty, rule, num_pairs, reasons)
      if pairs is None:
        continue
      if len(pairs) > 1 and all(grids_equal(pairs[0][1], o) for _, o in pairs[1:]):
        reasons["all outputs equal"] += 1
        continue
      return rule, pairs
    top = ", ".join(f"{r} (x{n})" for r, n in reasons.most_common(4))
    raise GenerationError(
        f"family {self.name!r} at difficulty {difficulty:.2f} failed after "
        f"{RULE_TRIES} rules x {PAIR_TRIES} draws per pair; most common reasons: {top}")

  def _sample_pairs(self, rng, difficulty, rule, num_pairs, reasons):
    pairs: list[tuple[Grid, Grid]] = []
    while len(pairs) < num_pairs:
      for _ in range(PAIR_TRIES):
        reason = None
        try:
          inp, out = self.pair(rng, difficulty, rule)
          inp = _as_grid(inp)
          out = _as_grid(self.solve(inp, rule) if out is None else out)
          reason = _grid_problem(inp) or _grid_problem(out) or self.verify(inp, out, rule)
          if reason is None and grids_equal(inp, out):
            reason = "output equals input"
          if reason is None and any(grids_equal(inp, i) for i, _ in pairs):
            reason = "duplicate input"
        except Retry as e:
          reason = str(e)
        if reason is None:
          pairs.append((inp, out))
          break
        reasons[reason] += 1
      else:
        return None
    return pairs

  def __call__(self, rng: Union[np.random.Generator, int], difficulty: float,
               n_train: Optional[int] = None, task_id: Optional[str] = None) -> Task:
    seed = None
    if not isinstance(rng, np.random.Generator):
      seed = int(rng)
      rng = np.random.default_rng(seed)
    if n_train is None:
      n_train = int(rng.integers(DEFAULT_TRAIN[0], DEFAULT_TRAIN[1] + 1))
    if n_train < 1:
      raise ValueError(f"family {self.name}: n_train must be >= 1, got {n_train}")
    _, pairs = self.sample(rng, difficulty, n_train + 1)
    pairs = randomise(rng, pairs, reorient=self.reorient, recolour=self.recolour)
    if task_id is None:
      tag = seed if seed is not None else int(rng.integers(2**62))
      task_id = f"gen/{self.name}/{tag}"
    train = tuple(Pair(i, o) for i, o in pairs[:n_train])
    return Task(task_id=task_id, train=train, test=(Pair(*pairs[n_train]),))


def _as_grid(g: Any) -> Grid:
  g = np.asarray(g)
  if g.ndim != 2 or not np.issubdtype(g.dtype, np.integer):
    raise Retry(f"not a 2-D integer grid: shape {g.shape}, dtype {g.dtype}")
  return g.astype(np.int8)


def _grid_problem(g: Grid) -> Optional[str]:
  h, w = g.shape
  if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
    return f"grid side outside 1..{MAX_SIDE}"
  if g.min() < 0 or g.max() >= NUM_COLOURS:
    return "colour outside 0..9"
  return None


def d4(grid: Grid, k: int) -> Grid:
  """The k-th of the 8 symmetries of the square (0 = identity, 4..7 = transposed)."""
  g = grid.T if k >= 4 else grid
  return np.ascontiguousarray(np.rot90(g, k % 4))


def randomise(rng: np.random.Generator, pairs: list[tuple[Grid, Grid]], *,
              reorient: bool = True, recolour: bool = True) -> list[tuple[Grid, Grid]]:
  """One orientation and one colour permutation applied to every grid of a task.

  Applying the same bijection to all grids conjugates the rule, so the task stays
  consistent whatever the family's rule is.
  """
  k = int(rng.integers(8)) if reorient else 0
  perm = np.arange(NUM_COLOURS, dtype=np.int8)
  if recolour:
    if rng.random() < P_RECOLOUR_BACKGROUND:
      perm = rng.permutation(NUM_COLOURS).astype(np.int8)
    else:
      perm[1:] = 1 + rng.permutation(NUM_COLOURS - 1)
  return [(perm[d4(i, k)], perm[d4(o, k)]) for i, o in pairs]


FAMILIES: dict[str, Family] = {}


def register(name: str, theme: str, *, reorient: bool = True, recolour: bool = True):
  """Class decorator: the class body holds ``rule``/``pair``/``solve`` as plain functions."""
  def deco(cls) -> Family:
    if name in FAMILIES:
      raise ValueError(f"generator family {name!r} registered twice")
    for attr in ("pair", "solve"):
      if not callable(getattr(cls, attr, None)):
        raise TypeError(f"generator family {name!r}: class {cls.__name__} has no {attr}()")
    fam = Family(name=name, theme=theme, doc=(cls.__doc__ or "").strip(),
                 rule=getattr(cls, "rule", lambda rng, d: {}), pair=cls.pair, solve=cls.solve,
                 reorient=reorient, recolour=recolour)
    FAMILIES[name] = fam
    return fam
  return deco


def generate(family_name: str, rng: Union[np.random.Generator, int], difficulty: float,
             n_train: Optional[int] = None) -> Task:
  """One task of the named family; ``rng`` may be a seed (then the id is gen/<family>/<seed>)."""
  try:
    fam = FAMILIES[family_name]
  except KeyError:
    raise KeyError(f"unknown generator family {family_name!r}; "
                   f"known: {', '.join(sorted(FAMILIES))}") from None
  return fam(rng, difficulty, n_train)


def generate_task_set(families: Sequence[str], per_family: int, difficulty: float, seed: int
                      ) -> list[Task]:
  """A fixed evaluation set: ``per_family`` tasks of each family from seeds ``seed, seed+1,
  ...``, with ids ``<family>_<i>`` (what experiments/generated_tasks.py writes)."""
  return [generate(fam, seed + i, difficulty).replace(task_id=f"{fam}_{i:03d}")
          for fam in families for i in range(per_family)]
