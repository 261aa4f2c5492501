"""Tiling and concatenation, symmetry completion and periodic pattern completion."""

from __future__ import annotations

import numpy as np

from ttt_jax.arc.generators import common as C
from ttt_jax.arc.generators.core import Retry, register


def _small(rng, d, lo, hi_h, hi_w, density=None):
  H, W = C.scaled(rng, d, lo, hi_h), C.scaled(rng, d, lo, hi_w)
  dens = 0.3 + 0.5 * rng.random() if density is None else density
  return C.noise_grid(rng, H, W, dens, C.colours(rng, C.scaled(rng, d, 1, 4)))


@register("tile_grid", "tiling")
class TileGrid:
  """The input is repeated a x b times (a, b hidden)."""

  def rule(rng, d):
    a, b = (int(v) for v in rng.integers(1, C.scaled(rng, d, 2, 4) + 1, size=2))
    if a == b == 1:
      raise Retry("no repetition")
    return {"reps": (a, b)}

  def pair(rng, d, rule):
    a, b = rule["reps"]
    return _small(rng, d, 2, min(8, 30 // a), min(8, 30 // b)), None

  def solve(inp, rule):
    return np.tile(inp, rule["reps"])


@register("tile_with_flips", "tiling")
class TileWithFlips:
  """2x2 tiling where the copies are mirrored: [[g, lr(g)], [ud(g), rot180(g)]]."""

  def pair(rng, d, rule):
    return _small(rng, d, 2, 10, 10), None

  def solve(inp, rule):
    top = np.concatenate([inp, inp[:, ::-1]], 1)
    return np.concatenate([top, top[::-1]], 0)


@register("mirror_concat", "tiling")
class MirrorConcat:
  """The grid is joined with its mirror image, before or after it (hidden)."""

  def rule(rng, d):
    return {"mirror_first": bool(rng.random() < 0.5)}

  def pair(rng, d, rule):
    return _small(rng, d, 2, 15, 12), None

  def solve(inp, rule):
    parts = [inp, inp[::-1]]
    return np.concatenate(parts[::-1] if rule["mirror_first"] else parts, 0)


_SYMMETRIES = ("lr", "ud", "both", "rot180", "transpose")


def _orbit(kind, r, c, H, W):
  """Cells that symmetry ``kind`` maps (r, c) to, the cell itself included."""
  pts = {(r, c)}
  if kind in ("lr", "both"):
    pts.add((r, W - 1 - c))
  if kind in ("ud", "both"):
    pts.add((H - 1 - r, c))
  if kind in ("both", "rot180"):
    pts.add((H - 1 - r, W - 1 - c))
  if kind == "transpose":
    pts.add((c, r))
  return pts


def _symmetrise(g, kind):
  if kind == "lr":
    return np.where(np.arange(g.shape[1]) < (g.shape[1] + 1) // 2, g, g[:, ::-1])
  if kind == "ud":
    return np.where(np.arange(g.shape[0])[:, None] < (g.shape[0] + 1) // 2, g, g[::-1])
  if kind == "both":
    return _symmetrise(_symmetrise(g, "lr"), "ud")
  if kind == "rot180":
    flat = g.reshape(-1).copy()
    half = (flat.size + 1) // 2
    flat[half:] = flat[:flat.size - half][::-1]
    return flat.reshape(g.shape)
  return np.where(np.tri(*g.shape, dtype=bool), g, g.T)  # transpose: lower triangle wins


@register("symmetry_complete", "symmetry")
class SymmetryComplete:
  """A symmetric picture with a hole painted in the mask colour; output it repaired."""

  def rule(rng, d):
    return {"kind": _SYMMETRIES[int(rng.integers(len(_SYMMETRIES)))],
            "mask": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H = C.scaled(rng, d, 4, 20)
    W = H if rule["kind"] == "transpose" else C.scaled(rng, d, 4, 20)
    cols = C.colours(rng, C.scaled(rng, d, 2, 5), (rule["mask"],))
    truth = _symmetrise(C.noise_grid(rng, H, W, 1.0, cols), rule["kind"])
    h, w = int(rng.integers(1, max(2, H // 3) + 1)), int(rng.integers(1, max(2, W // 3) + 1))
    r, c = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
    grid = truth.copy()
    grid[r:r + h, c:c + w] = rule["mask"]
    return grid, truth

  def solve(inp, rule):
    H, W = inp.shape
    out = inp.copy()
    for r, c in np.argwhere(inp == rule["mask"]):
      seen = {int(inp[p]) for p in _orbit(rule["kind"], r, c, H, W)} - {rule["mask"]}
      if len(seen) != 1:
        raise Retry("masked cell has no unmasked mirror")
      out[r, c] = seen.pop()
    return out


def _smallest_period(g, known):
  """Smallest tile (by area, then height) consistent with every known cell."""
  H, W = g.shape
  rr, cc = np.nonzero(known)
  vals = g[rr, cc].astype(np.int16)
  for py, px in sorted(((a, b) for a in range(1, H + 1) for b in range(1, W + 1)),
                       key=lambda t: (t[0] * t[1], t[0])):
    idx = (rr % py) * px + cc % px
    lo = np.full(py * px, 99, np.int16)
    hi = np.full(py * px, -1, np.int16)
    np.minimum.at(lo, idx, vals)
    np.maximum.at(hi, idx, vals)
    if (lo == hi).all():  # every tile cell seen, and always with one colour
      return lo.reshape(py, px)
  raise Retry("no period covers every cell")


@register("periodic_fill", "pattern")
class PeriodicFill:
  """A periodic wallpaper with holes in the mask colour; output the full wallpaper."""

  def rule(rng, d):
    return {"mask": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    py, px = C.scaled(rng, d, 2, 4), C.scaled(rng, d, 2, 4)
    tile = C.noise_grid(rng, py, px, 1.0, C.colours(rng, C.scaled(rng, d, 2, 4), (rule["mask"],)))
    H, W = C.scaled(rng, d, 2 * py + 2, 20), C.scaled(rng, d, 2 * px + 2, 20)
    truth = np.tile(tile, (H // py + 1, W // px + 1))[:H, :W]
    grid = truth.copy()
    for _ in range(C.scaled(rng, d, 1, 3)):
      h, w = int(rng.integers(1, H // 3 + 1)), int(rng.integers(1, W // 3 + 1))
      r, c = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
      grid[r:r + h, c:c + w] = rule["mask"]
    return grid, truth

  def solve(inp, rule):
    tile = _smallest_period(inp, inp != rule["mask"])
    H, W = inp.shape
    py, px = tile.shape
    return np.tile(tile, (H // py + 1, W // px + 1))[:H, :W].astype(np.int8)
