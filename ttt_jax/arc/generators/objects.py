"""Object extraction, selection by property and recolouring by size/position.

Pairs are built from the objects that were placed; the solvers re-extract objects
from the input alone (4-connected single-colour components), so a sample whose
objects touch or tie on the selecting property fails verification and is redrawn.
"""

from __future__ import annotations

import numpy as np

from ttt_jax.arc.generators import common as C
from ttt_jax.arc.generators.core import Retry, register
from ttt_jax.arc.task import grids_equal


def _scene(rng, d, cols, lo_n=2, hi_n=6, min_side=1, max_side=5, fill=0.6):
  H = C.scaled(rng, d, 7, 22)
  W = C.scaled(rng, d, 7, 22)
  n = C.scaled(rng, d, lo_n, hi_n)
  return C.scatter_objects(rng, H, W, n, C.scaled(rng, d, max(2, min_side), max_side), cols,
                           min_side=min_side, fill=fill)


def _crop_by_size(largest: bool):
  class CropBySize:
    def rule(rng, d):
      return {"largest": largest, "num_colours": C.scaled(rng, d, 1, 4)}

    def pair(rng, d, rule):
      grid, objs = _scene(rng, d, C.colours(rng, rule["num_colours"]))
      sizes = [m.sum() for _, m in objs]
      i = C.unique_extreme(sizes, largest=rule["largest"])
      return grid, C.crop(grid, objs[i][1])

    def solve(inp, rule):
      objs = C.components(inp)
      i = C.unique_extreme([m.sum() for _, m in objs], largest=rule["largest"])
      return C.crop(inp, objs[i][1])
  CropBySize.__doc__ = f"Output the {'largest' if largest else 'smallest'} object, cropped."
  return CropBySize


register("crop_largest_object", "objects")(_crop_by_size(True))
register("crop_smallest_object", "objects")(_crop_by_size(False))


@register("crop_odd_colour_object", "objects")
class CropOddColour:
  """All objects share one colour except one; output that object, cropped."""

  def pair(rng, d, rule):
    common, odd = C.colours(rng, 2)
    grid, objs = _scene(rng, d, [common], lo_n=3, hi_n=7, max_side=4)
    i = int(rng.integers(len(objs)))
    grid[objs[i][1]] = odd
    return grid, C.crop(grid, objs[i][1])

  def solve(inp, rule):
    objs = C.components(inp)
    cols = [c for c, _ in objs]
    singles = [c for c in set(cols) if cols.count(c) == 1]
    if len(singles) != 1 or len(set(cols)) != 2:
      raise Retry("no single odd colour")
    return C.crop(inp, objs[cols.index(singles[0])][1])


@register("crop_unique_shape", "objects")
class CropUniqueShape:
  """All objects are copies of one shape except one; output the odd one, cropped."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 8, 22), C.scaled(rng, d, 8, 22)
    n = C.scaled(rng, d, 3, 6)
    side = C.scaled(rng, d, 2, 4)
    common = C.random_shape(rng, side, side, 0.6)
    odd = C.random_shape(rng, side, side, 0.6)
    if grids_equal(odd, common):
      raise Retry("odd shape equals the common one")
    cols = C.colours(rng, C.scaled(rng, d, 1, 3))
    grid = np.zeros((H, W), np.int8)
    occ = np.zeros((H, W), bool)
    k = int(rng.integers(n))
    for i in range(n):
      shape = odd if i == k else common
      r, c = C.place(rng, occ, shape)
      grid[r:r + side, c:c + side][shape] = cols[int(rng.integers(len(cols)))]
      if i == k:
        out = np.where(shape, grid[r:r + side, c:c + side], 0).astype(np.int8)
    return grid, out

  def solve(inp, rule):
    objs = C.components(inp)
    keys = [_shape_key(m) for _, m in objs]
    odd = [i for i, k in enumerate(keys) if keys.count(k) == 1]
    if len(odd) != 1 or len(set(keys)) != 2:
      raise Retry("no unique odd shape")
    return C.crop(inp, objs[odd[0]][1])


def _shape_key(mask: np.ndarray) -> bytes:
  r0, c0, r1, c1 = C.bbox(mask)
  return bytes([r1 - r0, c1 - c0]) + np.packbits(mask[r0:r1, c0:c1]).tobytes()


@register("recolour_largest", "objects")
class RecolourLargest:
  """The largest object takes the task's target colour; the rest are unchanged."""

  def rule(rng, d):
    return {"target": C.colours(rng, 1)[0], "num_colours": C.scaled(rng, d, 1, 3)}

  def pair(rng, d, rule):
    grid, objs = _scene(rng, d, C.colours(rng, rule["num_colours"], (0, rule["target"])),
                        lo_n=3, hi_n=8)
    i = C.unique_extreme([m.sum() for _, m in objs])
    out = grid.copy()
    out[objs[i][1]] = rule["target"]
    return grid, out

  def solve(inp, rule):
    objs = C.components(inp)
    if any(c == rule["target"] for c, _ in objs):
      raise Retry("target colour already in the input")
    i = C.unique_extreme([m.sum() for _, m in objs])
    out = inp.copy()
    out[objs[i][1]] = rule["target"]
    return out


@register("recolour_size_rank", "objects")
class RecolourSizeRank:
  """Largest object -> colour A, smallest -> colour B, others unchanged."""

  def rule(rng, d):
    a, b, base = C.colours(rng, 3)
    return {"a": a, "b": b, "base": base}

  def pair(rng, d, rule):
    grid, objs = _scene(rng, d, [rule["base"]], lo_n=3, hi_n=8)
    sizes = [m.sum() for _, m in objs]
    out = grid.copy()
    out[objs[C.unique_extreme(sizes)][1]] = rule["a"]
    out[objs[C.unique_extreme(sizes, largest=False)][1]] = rule["b"]
    return grid, out

  def solve(inp, rule):
    objs = C.components(inp)
    sizes = [m.sum() for _, m in objs]
    out = inp.copy()
    out[objs[C.unique_extreme(sizes)][1]] = rule["a"]
    out[objs[C.unique_extreme(sizes, largest=False)][1]] = rule["b"]
    return out


@register("recolour_by_size", "objects")
class RecolourBySize:
  """Objects of one colour are recoloured by their cell count (e.g. 2 -> red, 3 -> blue)."""

  def rule(rng, d):
    k = C.scaled(rng, d, 2, 4)
    cols = C.colours(rng, k + 1)
    return {"base": cols[0], "by_size": {s + 1: c for s, c in enumerate(cols[1:])}}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 7, 20), C.scaled(rng, d, 7, 20)
    sizes = list(rule["by_size"]) + [int(s) for s in rng.choice(
        list(rule["by_size"]), size=C.scaled(rng, d, 0, 5))]
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    occ = np.zeros((H, W), bool)
    for s in sizes:
      shape = _polyomino(rng, s)
      r, c = C.place(rng, occ, shape)
      h, w = shape.shape
      grid[r:r + h, c:c + w][shape] = rule["base"]
      out[r:r + h, c:c + w][shape] = rule["by_size"][s]
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    for colour, m in C.components(inp):
      s = int(m.sum())
      if colour != rule["base"] or s not in rule["by_size"]:
        raise Retry("object of unexpected colour or size")
      out[m] = rule["by_size"][s]
    return out


def _polyomino(rng, cells: int) -> np.ndarray:
  """A random 4-connected shape of exactly ``cells`` cells (cropped to its box)."""
  mask = np.zeros((cells, cells), bool)
  pts = [(cells // 2, cells // 2)]
  mask[pts[0]] = True
  while len(pts) < cells:
    r, c = pts[int(rng.integers(len(pts)))]
    dr, dc = ((0, 1), (1, 0), (0, -1), (-1, 0))[int(rng.integers(4))]
    if 0 <= r + dr < cells and 0 <= c + dc < cells and not mask[r + dr, c + dc]:
      mask[r + dr, c + dc] = True
      pts.append((r + dr, c + dc))
  r0, c0, r1, c1 = C.bbox(mask)
  return mask[r0:r1, c0:c1]


@register("recolour_touching_border", "objects")
class RecolourTouchingBorder:
  """Objects touching the grid edge take colour A; interior objects are unchanged."""

  def rule(rng, d):
    return {"target": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    grid, objs = _scene(rng, d, C.colours(rng, C.scaled(rng, d, 1, 3), (0, rule["target"])),
                        lo_n=3, hi_n=9)
    out = grid.copy()
    edge = np.zeros(grid.shape, bool)
    edge[[0, -1]] = edge[:, [0, -1]] = True
    touching = [bool((m & edge).any()) for _, m in objs]
    if all(touching) or not any(touching):
      raise Retry("need objects both on and off the border")
    for (_, m), t in zip(objs, touching):
      if t:
        out[m] = rule["target"]
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    for _, m in C.components(inp):
      if m[[0, -1]].any() or m[:, [0, -1]].any():
        out[m] = rule["target"]
    return out


@register("recolour_from_inner_pixel", "objects")
class RecolourFromInnerPixel:
  """Each grey shape holds one marker cell; the whole shape takes the marker's colour."""

  def rule(rng, d):
    return {"base": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 7, 22), C.scaled(rng, d, 7, 22)
    marks = C.colours(rng, C.scaled(rng, d, 1, 4), (0, rule["base"]))
    grid = np.full((H, W), 0, np.int8)
    out = grid.copy()
    occ = np.zeros((H, W), bool)
    for _ in range(C.scaled(rng, d, 1, 6)):
      shape = C.random_shape(rng, int(rng.integers(2, 6)), int(rng.integers(2, 6)), 0.7)
      if shape.sum() < 3:
        continue
      r, c = C.place(rng, occ, shape)
      h, w = shape.shape
      colour = marks[int(rng.integers(len(marks)))]
      grid[r:r + h, c:c + w][shape] = rule["base"]
      out[r:r + h, c:c + w][shape] = colour
      cells = np.argwhere(shape)
      mr, mc = cells[int(rng.integers(len(cells)))]
      grid[r + mr, c + mc] = colour
    if not (grid != 0).any():
      raise Retry("no shapes")
    return grid, out

  def solve(inp, rule):
    out = inp.copy()
    for _, m in C.components(inp, by_colour=False):
      marks = set(np.unique(inp[m]).tolist()) - {rule["base"]}
      if len(marks) != 1 or (inp[m] != rule["base"]).sum() != 1:
        raise Retry("shape without exactly one marker")
      out[m] = marks.pop()
    return out


@register("stamp_pattern_at_markers", "objects")
class StampPattern:
  """Every marker pixel is replaced by the task's hidden 3x3 pattern centred on it."""

  def rule(rng, d):
    marker, *cols = C.colours(rng, 1 + C.scaled(rng, d, 1, 3))
    pattern = np.where(rng.random((3, 3)) < 0.6, np.asarray(cols)[rng.integers(len(cols), size=(3, 3))], 0)
    pattern[1, 1] = marker if rng.random() < 0.5 else pattern[1, 1]
    if (pattern == 0).sum() > 6:
      raise Retry("pattern nearly empty")
    return {"marker": marker, "pattern": pattern.astype(np.int8)}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 22), C.scaled(rng, d, 6, 22)
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    occ = np.zeros((H, W), bool)
    block = np.ones((3, 3), bool)
    for _ in range(C.scaled(rng, d, 1, 6)):
      r, c = C.place(rng, occ, block, gap=0)
      grid[r + 1, c + 1] = rule["marker"]
      out[r:r + 3, c:c + 3] = rule["pattern"]
    return grid, out

  def solve(inp, rule):
    out = np.zeros_like(inp)
    others = (inp != 0) & (inp != rule["marker"])
    if others.any():
      raise Retry("input holds more than markers")
    H, W = inp.shape
    for r, c in np.argwhere(inp == rule["marker"]):
      if not (1 <= r < H - 1 and 1 <= c < W - 1):
        raise Retry("marker too close to the edge")
      if out[r - 1:r + 2, c - 1:c + 2].any():
        raise Retry("stamps overlap")
      out[r - 1:r + 2, c - 1:c + 2] = rule["pattern"]
    return out
