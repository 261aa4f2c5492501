"""Shared helpers for task families: sizes from difficulty, colours, shapes,
placement and connected components. Canonical background is colour 0."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ttt_jax.arc.generators.core import Retry

BG = 0
Grid = np.ndarray


def scaled(rng: np.random.Generator, d: float, lo: int, hi: int) -> int:
  """An int in [lo, hi] whose range moves up with difficulty d in [0, 1].

  At d = 0 it is drawn from the lowest quarter of the range, at d = 1 from the top
  ~60%, so easy and hard tasks differ while each level keeps some variety.
  """
  if hi <= lo:
    return lo
  top = lo + int(round((hi - lo) * (0.25 + 0.75 * d)))
  bottom = lo + int(round((hi - lo) * max(0.0, d - 0.4)))
  return int(rng.integers(bottom, max(bottom, top) + 1))


def colours(rng: np.random.Generator, k: int, exclude: Sequence[int] = (BG,)) -> list[int]:
  """k distinct colours not in ``exclude``."""
  pool = [c for c in range(10) if c not in set(exclude)]
  if k > len(pool):
    raise Retry(f"asked for {k} colours, {len(pool)} available")
  return [int(c) for c in rng.choice(pool, size=k, replace=False)]


def random_shape(rng: np.random.Generator, h: int, w: int, fill: float = 0.6) -> np.ndarray:
  """A 4-connected boolean mask whose bounding box is exactly h x w.

  Grown from a random seed cell by adding random 4-neighbours; then every row and
  column of the box is made to hold a cell by connecting straight to the shape.
  """
  mask = np.zeros((h, w), bool)
  r, c = int(rng.integers(h)), int(rng.integers(w))
  mask[r, c] = True
  target = max(1, int(round(fill * h * w)))
  frontier = [(r, c)]
  cells = 1
  while cells < target and frontier:
    r, c = frontier[int(rng.integers(len(frontier)))]
    dr, dc = ((0, 1), (1, 0), (0, -1), (-1, 0))[int(rng.integers(4))]
    nr, nc = r + dr, c + dc
    if 0 <= nr < h and 0 <= nc < w and not mask[nr, nc]:
      mask[nr, nc] = True
      frontier.append((nr, nc))
      cells += 1
  # Make the bounding box exact: extend a straight arm to any empty edge row/column.
  for edge_r in (0, h - 1):
    if not mask[edge_r].any():
      cols = np.flatnonzero(mask.any(0))
      cc = int(rng.choice(cols))
      rows = np.flatnonzero(mask[:, cc])
      start = rows.min() if edge_r == 0 else rows.max()
      lo, hi = sorted((edge_r, int(start)))
      mask[lo:hi + 1, cc] = True
  for edge_c in (0, w - 1):
    if not mask[:, edge_c].any():
      rows = np.flatnonzero(mask.any(1))
      rr = int(rng.choice(rows))
      cols = np.flatnonzero(mask[rr])
      start = cols.min() if edge_c == 0 else cols.max()
      lo, hi = sorted((edge_c, int(start)))
      mask[rr, lo:hi + 1] = True
  return mask


def dilate(mask: np.ndarray, steps: int = 1, diag: bool = True) -> np.ndarray:
  """Binary dilation (8- or 4-neighbourhood), same shape."""
  out = mask.copy()
  for _ in range(steps):
    m = out.copy()
    m[1:] |= out[:-1]
    m[:-1] |= out[1:]
    m[:, 1:] |= out[:, :-1]
    m[:, :-1] |= out[:, 1:]
    if diag:
      m[1:, 1:] |= out[:-1, :-1]
      m[1:, :-1] |= out[:-1, 1:]
      m[:-1, 1:] |= out[1:, :-1]
      m[:-1, :-1] |= out[1:, 1:]
    out = m
  return out


def place(rng: np.random.Generator, occupied: np.ndarray, mask: np.ndarray, gap: int = 1,
          tries: int = 40, region: Optional[tuple[int, int, int, int]] = None) -> tuple[int, int]:
  """Top-left (r, c) where ``mask`` fits without coming within ``gap`` cells of
  ``occupied`` (8-neighbourhood); marks the cells occupied. Raises Retry if none found."""
  H, W = occupied.shape
  h, w = mask.shape
  r0, c0, r1, c1 = region if region is not None else (0, 0, H, W)
  if h > r1 - r0 or w > c1 - c0:
    raise Retry("object larger than the grid")
  near = dilate(occupied, gap) if gap > 0 else occupied
  for _ in range(tries):
    r = int(rng.integers(r0, r1 - h + 1))
    c = int(rng.integers(c0, c1 - w + 1))
    if not (near[r:r + h, c:c + w] & mask).any():
      occupied[r:r + h, c:c + w] |= mask
      return r, c
  raise Retry("no room to place an object")


def components(grid: Grid, bg: int = BG, diag: bool = False,
               by_colour: bool = True) -> list[tuple[int, np.ndarray]]:
  """Connected components of non-background cells as (colour, bool mask) in
  row-major order of their first cell. With ``by_colour=False`` a component may mix
  colours (colour is then that of its first cell)."""
  H, W = grid.shape
  seen = np.zeros((H, W), bool)
  fg = grid != bg
  steps = ((0, 1), (1, 0), (0, -1), (-1, 0))
  if diag:
    steps += ((1, 1), (1, -1), (-1, 1), (-1, -1))
  out = []
  for r0, c0 in zip(*np.nonzero(fg)):
    if seen[r0, c0]:
      continue
    colour = int(grid[r0, c0])
    mask = np.zeros((H, W), bool)
    stack = [(int(r0), int(c0))]
    seen[r0, c0] = True
    while stack:
      r, c = stack.pop()
      mask[r, c] = True
      for dr, dc in steps:
        nr, nc = r + dr, c + dc
        if (0 <= nr < H and 0 <= nc < W and not seen[nr, nc] and fg[nr, nc]
            and (not by_colour or grid[nr, nc] == colour)):
          seen[nr, nc] = True
          stack.append((nr, nc))
    out.append((colour, mask))
  return out


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
  """(r0, c0, r1, c1), exclusive ends, of the True cells."""
  rows = np.flatnonzero(mask.any(1))
  cols = np.flatnonzero(mask.any(0))
  return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop(grid: Grid, mask: np.ndarray, bg: int = BG) -> Grid:
  """The bounding box of ``mask`` cut from ``grid``, cells outside the mask set to bg."""
  r0, c0, r1, c1 = bbox(mask)
  return np.where(mask[r0:r1, c0:c1], grid[r0:r1, c0:c1], bg).astype(np.int8)


def unique_extreme(values: Sequence[float], largest: bool = True) -> int:
  """Index of the strict maximum (or minimum); Retry if it is tied."""
  vals = np.asarray(values)
  best = vals.max() if largest else vals.min()
  idx = np.flatnonzero(vals == best)
  if len(idx) != 1:
    raise Retry("tie for the extreme value")
  return int(idx[0])


def scatter_objects(rng: np.random.Generator, H: int, W: int, n: int, max_side: int,
                    cols: Sequence[int], gap: int = 1, min_side: int = 1,
                    fill: float = 0.6) -> tuple[Grid, list[tuple[int, np.ndarray]]]:
  """n random single-colour shapes on a blank HxW grid, ``gap`` cells apart.

  Colours cycle through ``cols`` in random order. Returns the grid and the
  (colour, full-grid mask) of each object.
  """
  grid = np.zeros((H, W), np.int8)
  occupied = np.zeros((H, W), bool)
  objs = []
  for i in range(n):
    h = int(rng.integers(min_side, max_side + 1))
    w = int(rng.integers(min_side, max_side + 1))
    shape = random_shape(rng, h, w, fill)
    r, c = place(rng, occupied, shape, gap)
    colour = int(cols[int(rng.integers(len(cols)))])
    full = np.zeros((H, W), bool)
    full[r:r + h, c:c + w] = shape
    grid[full] = colour
    objs.append((colour, full))
  return grid, objs


def noise_grid(rng: np.random.Generator, H: int, W: int, density: float,
               cols: Sequence[int]) -> Grid:
  """Cells set independently with probability ``density`` to a colour from ``cols``."""
  on = rng.random((H, W)) < density
  pick = np.asarray(cols, np.int8)[rng.integers(len(cols), size=(H, W))]
  return np.where(on, pick, BG).astype(np.int8)


def add_isolated_pixels(rng: np.random.Generator, grid: Grid, occupied: np.ndarray, n: int,
                        cols: Sequence[int]) -> None:
  """Writes n single pixels into grid (in place), each at least one cell from anything."""
  for _ in range(n):
    r, c = place(rng, occupied, np.ones((1, 1), bool), gap=1)
    grid[r, c] = cols[int(rng.integers(len(cols)))]


def drop_singletons(inp: Grid) -> Grid:
  """inp with every 8-isolated single pixel erased."""
  out = inp.copy()
  for _, m in components(inp, diag=True, by_colour=False):
    if m.sum() == 1:
      out[m] = 0
  return out
