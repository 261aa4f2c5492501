"""Counting into output size or a histogram, and colour-level rules."""

from __future__ import annotations

import numpy as np

from ttt_jax.arc.generators import common as C
from ttt_jax.arc.generators.core import Retry, register


@register("count_objects_to_row", "counting")
class CountObjectsToRow:
  """Output is a 1xN row of the objects' colour, N the number of objects."""

  def pair(rng, d, rule):
    colour = C.colours(rng, 1)[0]
    n = int(rng.integers(1, C.scaled(rng, d, 4, 9) + 1))
    grid, _ = C.scatter_objects(rng, C.scaled(rng, d, 6, 20), C.scaled(rng, d, 6, 20), n,
                                C.scaled(rng, d, 1, 4), [colour])
    return grid, np.full((1, n), colour, np.int8)

  def solve(inp, rule):
    objs = C.components(inp)
    if len({c for c, _ in objs}) != 1:
      raise Retry("objects of several colours")
    return np.full((1, len(objs)), objs[0][0], np.int8)


def _distinct_counts(rng, d, lo_k, hi_k, max_count):
  k = C.scaled(rng, d, lo_k, hi_k)
  counts = rng.choice(np.arange(1, max_count + 1), size=k, replace=False)
  return C.colours(rng, k), [int(x) for x in counts]


def _scatter_cells(rng, d, cols, counts, lo=4, hi=16):
  H, W = C.scaled(rng, d, lo, hi), C.scaled(rng, d, lo, hi)
  total = sum(counts)
  if total > H * W:
    raise Retry("too many cells for the grid")
  cells = rng.choice(H * W, size=total, replace=False)
  grid = np.zeros(H * W, np.int8)
  grid[cells] = np.repeat(np.asarray(cols, np.int8), counts)
  return grid.reshape(H, W)


def _colour_counts(inp):
  cols, counts = np.unique(inp[inp != 0], return_counts=True)
  if len(set(counts.tolist())) != len(counts):
    raise Retry("two colours have the same count")
  order = np.argsort(-counts)
  return [int(c) for c in cols[order]], [int(n) for n in counts[order]]


@register("colour_histogram", "counting")
class ColourHistogram:
  """Scattered cells -> one left-aligned bar per colour, most frequent colour on top."""

  def pair(rng, d, rule):
    cols, counts = _distinct_counts(rng, d, 2, 5, C.scaled(rng, d, 5, 12))
    grid = _scatter_cells(rng, d, cols, counts)
    out = np.zeros((len(cols), max(counts)), np.int8)
    for row, i in enumerate(np.argsort(counts)[::-1]):
      out[row, :counts[i]] = cols[i]
    return grid, out

  def solve(inp, rule):
    cols, counts = _colour_counts(inp)
    out = np.zeros((len(cols), counts[0]), np.int8)
    for row, (c, n) in enumerate(zip(cols, counts)):
      out[row, :n] = c
    return out


@register("most_frequent_colour", "counting")
class MostFrequentColour:
  """Output a 1x1 grid of the colour with the most cells."""

  def pair(rng, d, rule):
    cols, counts = _distinct_counts(rng, d, 2, 5, C.scaled(rng, d, 5, 20))
    grid = _scatter_cells(rng, d, cols, counts, 5, 18)
    return grid, np.array([[cols[int(np.argmax(counts))]]], np.int8)

  def solve(inp, rule):
    return np.array([[_colour_counts(inp)[0][0]]], np.int8)


@register("sort_bars_by_height", "counting")
class SortBars:
  """Bars standing on the floor in every other column are reordered shortest first."""

  def pair(rng, d, rule):
    n = C.scaled(rng, d, 3, 12)
    H = int(rng.integers(n, 24)) if n < 23 else n
    heights = rng.choice(np.arange(1, H + 1), size=n, replace=False)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4))
    colour_of = [cols[int(rng.integers(len(cols)))] for _ in range(n)]
    grid = np.zeros((H, 2 * n - 1), np.int8)
    out = grid.copy()
    for i in range(n):
      grid[H - heights[i]:, 2 * i] = colour_of[i]
    for slot, i in enumerate(np.argsort(heights)):
      out[H - heights[i]:, 2 * slot] = colour_of[i]
    return grid, out

  def solve(inp, rule):
    H, W = inp.shape
    bars = []
    for c in range(0, W, 2):
      h = int((inp[:, c] != 0).sum())
      if h == 0 or (inp[H - h:, c] == 0).any() or len(set(inp[H - h:, c].tolist())) != 1:
        raise Retry("column is not a single-colour bar on the floor")
      bars.append((h, int(inp[H - 1, c])))
    if (inp[:, 1::2] != 0).any() or len({h for h, _ in bars}) != len(bars):
      raise Retry("bars not separated or heights tied")
    out = np.zeros_like(inp)
    for slot, (h, colour) in enumerate(sorted(bars)):
      out[H - h:, 2 * slot] = colour
    return out


@register("colour_map", "colour")
class ColourMap:
  """A hidden colour substitution (2-4 colours) applied cell by cell; others stay."""

  def rule(rng, d):
    k = C.scaled(rng, d, 2, 4)
    src = C.colours(rng, k)
    dst = C.colours(rng, k)
    if any(s == t for s, t in zip(src, dst)):
      raise Retry("a colour maps to itself")
    keep = [c for c in range(1, 10) if c not in src and c not in dst]
    return {"map": dict(zip(src, dst)), "keep": keep[:C.scaled(rng, d, 0, 2)]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 3, 15), C.scaled(rng, d, 3, 15)
    cols = list(rule["map"]) + rule["keep"]
    grid = C.noise_grid(rng, H, W, 0.3 + 0.5 * rng.random(), cols)
    if not set(rule["map"]) <= set(np.unique(grid).tolist()):
      raise Retry("input misses a mapped colour")
    return grid, None

  def solve(inp, rule):
    lut = np.arange(10, dtype=np.int8)
    for s, t in rule["map"].items():
      lut[s] = t
    return lut[inp]


@register("paint_rows_from_key", "colour")
class PaintRowsFromKey:
  """The first column is a key; grey cells of each row take that row's key colour."""

  def rule(rng, d):
    return {"grey": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 3, 16), C.scaled(rng, d, 4, 18)
    keys = np.asarray(C.colours(rng, C.scaled(rng, d, 1, 5), (0, rule["grey"])), np.int8)
    key_col = np.where(rng.random(H) < 0.75, keys[rng.integers(len(keys), size=H)], 0)
    body = rng.random((H, W - 2)) < 0.2 + 0.5 * rng.random()
    grid = np.zeros((H, W), np.int8)
    grid[:, 0] = key_col
    grid[:, 2:] = np.where(body, rule["grey"], 0)
    out = grid.copy()
    out[:, 2:] = np.where(body & (key_col[:, None] != 0), key_col[:, None], 0)
    out[:, 2:] = np.where(body & (key_col[:, None] == 0), rule["grey"], out[:, 2:])
    return grid, out

  def solve(inp, rule):
    if (inp[:, 1] != 0).any():
      raise Retry("second column is not a gap")
    out = inp.copy()
    for r in range(inp.shape[0]):
      if inp[r, 0] != 0:
        row = out[r, 2:]
        row[row == rule["grey"]] = inp[r, 0]
    return out
