"""Filling enclosed regions, outlines and boxes, lines and rays."""

from __future__ import annotations

import numpy as np

from ttt_jax.arc.generators import common as C
from ttt_jax.arc.generators.core import Retry, register


def _outside(walls: np.ndarray) -> np.ndarray:
  """Cells reachable from the grid edge through non-wall cells (4-neighbourhood)."""
  free = ~walls
  reach = np.zeros_like(walls)
  reach[[0, -1]] = free[[0, -1]]
  reach[:, [0, -1]] |= free[:, [0, -1]]
  while True:
    grown = C.dilate(reach, 1, diag=False) & free
    if np.array_equal(grown, reach):
      return reach
    reach = grown


@register("fill_enclosed", "fill")
class FillEnclosed:
  """Background enclosed by closed outlines is filled; outlines with a gap stay empty."""

  def rule(rng, d):
    wall, fill = C.colours(rng, 2)
    return {"wall": wall, "fill": fill}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 22), C.scaled(rng, d, 6, 22)
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    occ = np.zeros((H, W), bool)
    closed = 0
    for i in range(C.scaled(rng, d, 1, 5)):
      h, w = int(rng.integers(3, 8)), int(rng.integers(3, 8))
      ring = np.ones((h, w), bool)
      ring[1:-1, 1:-1] = False
      r, c = C.place(rng, occ, np.ones((h, w), bool))
      leaky = i > 0 and rng.random() < 0.35 * (0.5 + d)
      if leaky:
        cells = [(a, b) for a, b in np.argwhere(ring) if (a in (0, h - 1)) != (b in (0, w - 1))]
        ring[cells[int(rng.integers(len(cells)))]] = False
      grid[r:r + h, c:c + w][ring] = rule["wall"]
      out[r:r + h, c:c + w][ring] = rule["wall"]
      if not leaky:
        out[r + 1:r + h - 1, c + 1:c + w - 1] = rule["fill"]
        closed += 1
    if not closed:
      raise Retry("nothing to fill")
    return grid, out

  def solve(inp, rule):
    walls = inp == rule["wall"]
    if ((inp != 0) & ~walls).any():
      raise Retry("input has cells other than walls")
    out = inp.copy()
    out[~walls & ~_outside(walls)] = rule["fill"]
    return out


@register("hollow_rectangles", "outline")
class HollowRectangles:
  """Solid rectangles keep only their one-cell border."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 24), C.scaled(rng, d, 6, 24)
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    occ = np.zeros((H, W), bool)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4))
    for _ in range(C.scaled(rng, d, 1, 5)):
      h, w = int(rng.integers(3, 9)), int(rng.integers(3, 9))
      r, c = C.place(rng, occ, np.ones((h, w), bool))
      colour = cols[int(rng.integers(len(cols)))]
      grid[r:r + h, c:c + w] = out[r:r + h, c:c + w] = colour
      out[r + 1:r + h - 1, c + 1:c + w - 1] = 0
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    for _, m in C.components(inp):
      r0, c0, r1, c1 = C.bbox(m)
      if not m[r0:r1, c0:c1].all():
        raise Retry("object is not a solid rectangle")
      out[r0 + 1:r1 - 1, c0 + 1:c1 - 1] = 0
    return out


@register("draw_bounding_box", "outline")
class DrawBoundingBox:
  """Every object gets a one-cell box of the box colour around it, one cell away."""

  def rule(rng, d):
    return {"box": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 7, 24), C.scaled(rng, d, 7, 24)
    cols = C.colours(rng, C.scaled(rng, d, 1, 3), (0, rule["box"]))
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    occ = np.zeros((H, W), bool)
    for _ in range(C.scaled(rng, d, 1, 5)):
      shape = C.random_shape(rng, int(rng.integers(1, 5)), int(rng.integers(1, 5)), 0.6)
      h, w = shape.shape
      pad = np.ones((h + 2, w + 2), bool)
      r, c = C.place(rng, occ, pad, gap=1)
      colour = cols[int(rng.integers(len(cols)))]
      out[r:r + h + 2, c:c + w + 2] = rule["box"]
      out[r + 1:r + h + 1, c + 1:c + w + 1] = 0
      grid[r + 1:r + h + 1, c + 1:c + w + 1][shape] = colour
      out[r + 1:r + h + 1, c + 1:c + w + 1][shape] = colour
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    H, W = inp.shape
    for _, m in C.components(inp, diag=True, by_colour=False):
      r0, c0, r1, c1 = C.bbox(m)
      if r0 < 1 or c0 < 1 or r1 > H - 1 or c1 > W - 1:
        raise Retry("box would leave the grid")
      ring = np.zeros((H, W), bool)
      ring[r0 - 1:r1 + 1, c0 - 1:c1 + 1] = True
      ring[r0:r1, c0:c1] = False
      if (out[ring] != 0).any():
        raise Retry("boxes would overlap")
      out[ring] = rule["box"]
    return out


@register("recolour_interior", "outline")
class RecolourInterior:
  """Cells of an object whose four neighbours are all in the object take colour B."""

  def rule(rng, d):
    return {"inner": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 22), C.scaled(rng, d, 6, 22)
    cols = C.colours(rng, C.scaled(rng, d, 1, 3), (0, rule["inner"]))
    grid, objs = C.scatter_objects(rng, H, W, C.scaled(rng, d, 1, 4), C.scaled(rng, d, 3, 7),
                                   cols, min_side=3, fill=0.85)
    out = grid.copy()
    for _, m in objs:
      inner = m.copy()
      inner[1:] &= m[:-1]
      inner[:-1] &= m[1:]
      inner[:, 1:] &= m[:, :-1]
      inner[:, :-1] &= m[:, 1:]
      inner[[0, -1]] = inner[:, [0, -1]] = False
      out[inner] = rule["inner"]
    return grid, out

  def solve(inp, rule):
    fg = np.pad(inp, 1)
    same = np.ones(inp.shape, bool)
    for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
      same &= fg[1 + dr:1 + dr + inp.shape[0], 1 + dc:1 + dc + inp.shape[1]] == inp
    out = inp.copy()
    out[same & (inp != 0)] = rule["inner"]
    return out


def _pixels(rng, H, W, n, cols, free_rows=False, free_cols=False):
  """n pixels on distinct rows and/or columns as requested."""
  if (free_rows and n > H) or (free_cols and n > W) or n > H * W:
    raise Retry("too many pixels for the grid")
  rows = rng.choice(H, n, replace=not free_rows) if free_rows else rng.integers(H, size=n)
  cs = rng.choice(W, n, replace=not free_cols) if free_cols else rng.integers(W, size=n)
  if len({(int(a), int(b)) for a, b in zip(rows, cs)}) != n:
    raise Retry("pixels coincide")
  return [(int(r), int(c), cols[int(rng.integers(len(cols)))]) for r, c in zip(rows, cs)]


@register("rays_to_wall", "lines")
class RaysToWall:
  """Every pixel shoots a ray of its colour upward to the grid edge."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 4, 20), C.scaled(rng, d, 4, 20)
    px = _pixels(rng, H, W, C.scaled(rng, d, 1, 6), C.colours(rng, C.scaled(rng, d, 1, 4)),
                 free_cols=True)
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    for r, c, colour in px:
      grid[r, c] = colour
      out[:r + 1, c] = colour
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    for c in range(inp.shape[1]):
      rows = np.flatnonzero(inp[:, c])
      if len(rows) > 1:
        raise Retry("two pixels in one column")
      if len(rows):
        out[:rows[0], c] = inp[rows[0], c]
    return out


@register("connect_pairs", "lines")
class ConnectPairs:
  """Two pixels of one colour on a shared row or column are joined by a line."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 5, 22), C.scaled(rng, d, 5, 22)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4))
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    used = np.zeros((H, W), bool)
    for colour in cols:
      horizontal = rng.random() < 0.5
      L = W if horizontal else H
      a, b = sorted(int(v) for v in rng.choice(L, 2, replace=False))
      if b - a < 2:
        raise Retry("pixels adjacent")
      fixed = int(rng.integers(H if horizontal else W))
      seg = np.zeros((H, W), bool)
      if horizontal:
        seg[fixed, a:b + 1] = True
      else:
        seg[a:b + 1, fixed] = True
      if (C.dilate(used, 1) & seg).any():
        raise Retry("lines would touch")
      used |= seg
      ends = np.argwhere(seg)[[0, -1]]
      for r, c in ends:
        grid[r, c] = colour
      out[seg] = colour
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    for colour in np.unique(inp[inp != 0]):
      (r0, c0), (r1, c1) = np.argwhere(inp == colour)[[0, -1]]
      if (inp == colour).sum() != 2 or (r0 != r1 and c0 != c1):
        raise Retry("colour is not exactly two aligned pixels")
      seg = out[min(r0, r1):max(r0, r1) + 1, min(c0, c1):max(c0, c1) + 1]
      if (seg[1:-1] if r0 != r1 else seg[:, 1:-1]).any():
        raise Retry("something lies between the pair")
      seg[...] = colour
    return out


def _diagonal_cells(r, c, H, W):
  cells = []
  for dr, dc in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
    rr, cc = r + dr, c + dc
    while 0 <= rr < H and 0 <= cc < W:
      cells.append((rr, cc))
      rr, cc = rr + dr, cc + dc
  return cells


@register("diagonal_rays", "lines")
class DiagonalRays:
  """Each pixel shoots rays of its colour along both diagonals to the edges."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 4, 20), C.scaled(rng, d, 4, 20)
    px = _pixels(rng, H, W, C.scaled(rng, d, 1, 3), C.colours(rng, C.scaled(rng, d, 1, 3)))
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    for r, c, colour in px:
      grid[r, c] = colour
    for r, c, colour in px:
      for cell in _diagonal_cells(r, c, H, W):
        if out[cell] not in (0, colour) or grid[cell]:
          raise Retry("rays cross another colour or a pixel")
        out[cell] = colour
      out[r, c] = colour
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    H, W = inp.shape
    for r, c in np.argwhere(inp != 0):
      for cell in _diagonal_cells(r, c, H, W):
        if out[cell] not in (0, inp[r, c]):
          raise Retry("rays cross")
        out[cell] = inp[r, c]
    return out


@register("ray_until_obstacle", "lines")
class RayUntilObstacle:
  """Pixels of the ray colour shoot right until the cell before an obstacle or the edge."""

  def rule(rng, d):
    ray, wall = C.colours(rng, 2)
    return {"ray": ray, "wall": wall}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 4, 20), C.scaled(rng, d, 6, 22)
    grid = np.where(rng.random((H, W)) < 0.05 + 0.2 * d, rule["wall"], 0).astype(np.int8)
    out = grid.copy()
    rows = rng.choice(H, min(H, C.scaled(rng, d, 1, 6)), replace=False)
    for r in rows:
      c = int(rng.integers(W - 1))
      grid[r, c] = out[r, c] = rule["ray"]
      hits = np.flatnonzero(grid[r, c + 1:] == rule["wall"])
      end = c + 1 + (int(hits[0]) if len(hits) else W - c - 1)
      out[r, c:end] = rule["ray"]
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    for r, c in np.argwhere(inp == rule["ray"]):
      cc = c + 1
      while cc < inp.shape[1] and inp[r, cc] == 0:
        out[r, cc] = rule["ray"]
        cc += 1
    return out
