"""Grid transforms with exact inverses, and the paper's TTT augmentations.

A ``Transform`` is plain data: a tuple of ``(op, args)`` steps applied left to
right, so it can be printed, hashed, stored beside a prediction and inverted.
For every transform ``t`` and grid ``g``: ``inverse(t)(t(g)) == g``. Ops that
grow a grid (reflect, upscale, tile) have left inverses that crop or subsample.

Paper list (Akyürek et al., 23 TTT augmenters): rotate 90/180/270, flip both
axes, transpose, four reflect-and-concatenate variants, random cyclic
translation, 2x resolution / height / width, each rotation/flip/transpose
chained with 2x resolution, and tile x2 on each axis and both. Each augmented
task also gets a colour permutation (0 fixed) and a demonstration shuffle.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from ttt_jax.arc.task import MAX_SIDE, Grid, Pair, Task

Step = tuple[str, tuple[int, ...]]


def _rot(g: Grid, k: int) -> Grid:
  return np.rot90(g, k)


def _flip(g: Grid, axis: int) -> Grid:
  return np.flip(g, axis)


def _transpose(g: Grid) -> Grid:
  return g.T


def _reflect(g: Grid, axis: int, before: int) -> Grid:
  mirror = np.flip(g, axis)
  return np.concatenate([mirror, g] if before else [g, mirror], axis=axis)


def _unreflect(g: Grid, axis: int, before: int) -> Grid:
  n = g.shape[axis] // 2
  return np.take(g, range(n, 2 * n) if before else range(n), axis=axis)


def _translate(g: Grid, dy: int, dx: int) -> Grid:
  return np.roll(g, (dy, dx), axis=(0, 1))


def _upscale(g: Grid, fy: int, fx: int) -> Grid:
  return np.repeat(np.repeat(g, fy, axis=0), fx, axis=1)


def _downscale(g: Grid, fy: int, fx: int) -> Grid:
  return g[::fy, ::fx]


def _tile(g: Grid, ry: int, rx: int) -> Grid:
  return np.tile(g, (ry, rx))


def _untile(g: Grid, ry: int, rx: int) -> Grid:
  return g[: g.shape[0] // ry, : g.shape[1] // rx]


def _colour(g: Grid, *perm: int) -> Grid:
  return np.asarray(perm, dtype=g.dtype)[g]


_OPS = {
    "rot90": _rot, "flip": _flip, "transpose": _transpose, "reflect": _reflect,
    "unreflect": _unreflect, "translate": _translate, "upscale": _upscale,
    "downscale": _downscale, "tile": _tile, "untile": _untile, "colour": _colour,
}


def _inverse_step(step: Step) -> Step:
  op, args = step
  if op == "rot90":
    return ("rot90", ((-args[0]) % 4,))
  if op in ("flip", "transpose"):
    return step
  if op == "translate":
    return ("translate", (-args[0], -args[1]))
  if op == "colour":
    return ("colour", tuple(int(i) for i in np.argsort(args)))
  pairs = {"reflect": "unreflect", "upscale": "downscale", "tile": "untile"}
  pairs.update({v: k for k, v in pairs.items()})
  return (pairs[op], args)


@dataclasses.dataclass(frozen=True)
class Transform:
  """A grid map as data: ``steps`` applied left to right."""
  steps: tuple[Step, ...] = ()
  name: str = "identity"

  def __call__(self, grid: Grid) -> Grid:
    for op, args in self.steps:
      grid = _OPS[op](grid, *args)
    return np.ascontiguousarray(grid)

  def then(self, other: "Transform") -> "Transform":
    name = other.name if self.is_identity else (
        self.name if other.is_identity else f"{self.name}+{other.name}")
    return Transform(self.steps + other.steps, name)

  @property
  def is_identity(self) -> bool:
    return not self.steps

  @property
  def is_invertible(self) -> bool:
    """True when ``t(inverse(t)(g)) == g`` too, i.e. a bijection on all grids."""
    return all(op in ("rot90", "flip", "transpose", "translate", "colour") for op, _ in self.steps)


def inverse(t: Transform) -> Transform:
  """The left inverse: ``inverse(t)(t(g)) == g`` for every grid ``g``."""
  return Transform(tuple(_inverse_step(s) for s in reversed(t.steps)),
                   t.name if t.is_identity else f"inverse({t.name})")


def _t(name: str, *steps: Step) -> Transform:
  return Transform(tuple(steps), name)


IDENTITY = Transform()
ROT90 = _t("rot90", ("rot90", (1,)))
ROT180 = _t("rot180", ("rot90", (2,)))
ROT270 = _t("rot270", ("rot90", (3,)))
FLIP_UD = _t("flip_ud", ("flip", (0,)))
FLIP_LR = _t("flip_lr", ("flip", (1,)))
TRANSPOSE = _t("transpose", ("transpose", ()))
UPSCALE_2X = _t("upscale_2x", ("upscale", (2, 2)))
UPSCALE_H = _t("upscale_2x_height", ("upscale", (2, 1)))
UPSCALE_W = _t("upscale_2x_width", ("upscale", (1, 2)))

# The invertible views used at inference (paper: identity, transpose, both flips, rotations).
INFERENCE_TRANSFORMS = (IDENTITY, TRANSPOSE, FLIP_UD, FLIP_LR, ROT90, ROT180, ROT270)
D4 = (IDENTITY, ROT90, ROT180, ROT270, FLIP_UD, FLIP_LR, TRANSPOSE,
      _t("antitranspose", ("rot90", (1,)), ("flip", (0,))))


def translate(dy: int, dx: int) -> Transform:
  return _t(f"translate_{dy}_{dx}", ("translate", (dy, dx)))


def colour_permutation(perm: Sequence[int]) -> Transform:
  perm = tuple(int(p) for p in perm)
  if sorted(perm) != list(range(10)):
    raise ValueError(f"not a permutation of 0..9: {perm}")
  return _t("colours_" + "".join(map(str, perm)), ("colour", perm))


def ttt_augmentations(rng: Optional[np.random.Generator] = None) -> list[Transform]:
  """The paper's 23 TTT augmenters; ``rng`` draws the cyclic translation (shift 1..3)."""
  rng = rng if rng is not None else np.random.default_rng(0)
  dy, dx = (int(v) for v in rng.integers(0, 4, size=2))
  if dy == dx == 0:
    dy = 1
  basic = [ROT90, ROT180, ROT270, FLIP_UD, FLIP_LR,
           _t("reflect_rows_after", ("reflect", (0, 0))),
           _t("reflect_rows_before", ("reflect", (0, 1))),
           _t("reflect_cols_after", ("reflect", (1, 0))),
           _t("reflect_cols_before", ("reflect", (1, 1))),
           translate(dy, dx), TRANSPOSE]
  size = [UPSCALE_2X, UPSCALE_H, UPSCALE_W]
  chains = [t.then(UPSCALE_2X) for t in (ROT90, ROT270, ROT180, FLIP_UD, FLIP_LR, TRANSPOSE)]
  repeat = [_t("tile_rows", ("tile", (2, 1))), _t("tile_cols", ("tile", (1, 2))),
            _t("tile_both", ("tile", (2, 2)))]
  return basic + size + chains + repeat


def random_colour_permutation(task: Task, rng: np.random.Generator) -> Transform:
  """Colour 0 fixed; the task's other colours go to unused colours first (as the paper)."""
  grids = [g for p in task.train + task.test for g in (p.input, p.output) if g is not None]
  used = np.unique(np.concatenate([g.reshape(-1) for g in grids]))
  used = [int(c) for c in used if c != 0]
  unused = [c for c in range(1, 10) if c not in used]
  sources = list(rng.permutation(used)) + list(rng.permutation(unused))
  targets = list(rng.permutation(unused)) + list(rng.permutation(used))
  perm = list(range(10))
  for s, t in zip(sources, targets):
    perm[int(s)] = int(t)
  return colour_permutation(perm)


def fits(grid: Grid) -> bool:
  return grid.shape[0] <= MAX_SIDE and grid.shape[1] <= MAX_SIDE


def augment_task(task: Task, t: Transform, train_order: Optional[Sequence[int]] = None
                 ) -> Optional[Task]:
  """``t`` on every grid of the task (and demos reordered); None when a grid exceeds 30x30."""
  def pair(p: Pair) -> Optional[Pair]:
    i = t(p.input)
    o = None if p.output is None else t(p.output)
    if not fits(i) or (o is not None and not fits(o)):
      return None
    return Pair(i, o)
  order = range(len(task.train)) if train_order is None else train_order
  train = [pair(task.train[i]) for i in order]
  test = [pair(p) for p in task.test]
  if any(p is None for p in train + test):
    return None
  suffix = t.name if not t.is_identity else "identity"
  return Task(f"{task.task_id}/{suffix}", tuple(train), tuple(test))


def augment_task_randomly(task: Task, rng: np.random.Generator,
                          include_identity: bool = True) -> Optional[Task]:
  """A random paper augmentation (or identity), a colour permutation and a demo shuffle.

  Returns None when the augmented grids exceed 30x30 (the paper drops such tasks).
  """
  augs = ttt_augmentations(rng)
  if include_identity:
    augs = [IDENTITY] + augs
  t = augs[int(rng.integers(len(augs)))].then(random_colour_permutation(task, rng))
  return augment_task(task, t, rng.permutation(len(task.train)))
