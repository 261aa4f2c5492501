"""Splitting the grid at dividers (boolean overlays, odd panel) and denoising."""

from __future__ import annotations

import collections

import numpy as np

from ttt_jax.arc.generators import common as C
from ttt_jax.arc.generators.core import Retry, register

_OPS = {
    "and": np.logical_and,
    "or": np.logical_or,
    "xor": np.logical_xor,
}


def _split_columns(inp, divider):
  """Panels between full-height divider columns; all panels must share one width."""
  cuts = np.flatnonzero((inp == divider).all(0))
  if not len(cuts):
    raise Retry("no divider column")
  edges = [-1] + cuts.tolist() + [inp.shape[1]]
  panels = [inp[:, a + 1:b] for a, b in zip(edges[:-1], edges[1:])]
  if len({p.shape for p in panels}) != 1 or panels[0].shape[1] == 0:
    raise Retry("panels of unequal width")
  if any((p == divider).any() for p in panels):
    raise Retry("divider colour inside a panel")
  return panels


def _overlay(op_name: str):
  class Overlay:
    def rule(rng, d):
      a, b, div, out = C.colours(rng, 4)
      return {"op": op_name, "a": a, "b": b, "divider": div, "out": out}

    def pair(rng, d, rule):
      H, w = C.scaled(rng, d, 3, 12), C.scaled(rng, d, 3, 14)
      left = rng.random((H, w)) < 0.3 + 0.4 * rng.random()
      right = rng.random((H, w)) < 0.3 + 0.4 * rng.random()
      grid = np.full((H, 2 * w + 1), rule["divider"], np.int8)
      grid[:, :w] = np.where(left, rule["a"], 0)
      grid[:, w + 1:] = np.where(right, rule["b"], 0)
      return grid, np.where(_OPS[rule["op"]](left, right), rule["out"], 0).astype(np.int8)

    def solve(inp, rule):
      panels = _split_columns(inp, rule["divider"])
      if len(panels) != 2:
        raise Retry("expected two halves")
      left, right = panels[0] != 0, panels[1] != 0
      return np.where(_OPS[rule["op"]](left, right), rule["out"], 0).astype(np.int8)
  Overlay.__doc__ = (f"Two halves split by a divider line are overlaid with boolean {op_name}; "
                     "the result is drawn in a fixed colour.")
  return Overlay


for _op in _OPS:
  register(f"overlay_{_op}", "logic")(_overlay(_op))


@register("select_odd_panel", "logic")
class SelectOddPanel:
  """Panels split by divider lines are identical except one; output the odd panel."""

  def rule(rng, d):
    return {"divider": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    k = C.scaled(rng, d, 3, 5)
    H, w = C.scaled(rng, d, 2, 8), C.scaled(rng, d, 2, 6)
    cols = C.colours(rng, C.scaled(rng, d, 1, 3), (0, rule["divider"]))
    panel = C.noise_grid(rng, H, w, 0.4 + 0.3 * rng.random(), cols)
    odd = panel.copy()
    for _ in range(int(rng.integers(1, 3))):
      r, c = int(rng.integers(H)), int(rng.integers(w))
      odd[r, c] = [x for x in [0] + cols if x != odd[r, c]][int(rng.integers(len(cols)))]
    i = int(rng.integers(k))
    parts = []
    for j in range(k):
      parts.append(odd if j == i else panel)
      if j < k - 1:
        parts.append(np.full((H, 1), rule["divider"], np.int8))
    return np.concatenate(parts, 1), odd

  def solve(inp, rule):
    panels = _split_columns(inp, rule["divider"])
    keys = [p.tobytes() for p in panels]
    odd = [i for i, key in enumerate(keys) if keys.count(key) == 1]
    if len(odd) != 1 or len(panels) < 3:
      raise Retry("no single odd panel")
    return panels[odd[0]].copy()


@register("denoise_pixels", "denoise")
class DenoisePixels:
  """Isolated noise pixels of the noise colour are replaced by what surrounds them."""

  def rule(rng, d):
    return {"noise": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 24), C.scaled(rng, d, 6, 24)
    truth = np.zeros((H, W), np.int8)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4), (0, rule["noise"]))
    for _ in range(C.scaled(rng, d, 1, 6)):
      h, w = int(rng.integers(2, H // 2 + 2)), int(rng.integers(2, W // 2 + 2))
      r, c = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
      truth[r:r + h, c:c + w] = cols[int(rng.integers(len(cols)))]
    grid = truth.copy()
    # Noise only where the true colour is the strict majority of the 4 neighbours,
    # and never next to other noise, so the rule can undo it.
    pad = np.pad(truth, 1, constant_values=-1)
    votes = np.stack([pad[1 + dr:1 + dr + H, 1 + dc:1 + dc + W] == truth
                      for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))]).sum(0)
    valid = np.stack([pad[1 + dr:1 + dr + H, 1 + dc:1 + dc + W] >= 0
                      for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))]).sum(0)
    pick = (votes * 2 > valid) & (rng.random((H, W)) < 0.05 + 0.15 * d)
    for r, c in np.argwhere(pick):
      if not (grid[max(0, r - 1):r + 2, max(0, c - 1):c + 2] == rule["noise"]).any():
        grid[r, c] = rule["noise"]
    return grid, truth

  def solve(inp, rule):
    H, W = inp.shape
    out = inp.copy()
    for r, c in np.argwhere(inp == rule["noise"]):
      around = [int(inp[r + dr, c + dc]) for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
                if 0 <= r + dr < H and 0 <= c + dc < W and inp[r + dr, c + dc] != rule["noise"]]
      top = collections.Counter(around).most_common(2)
      if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        raise Retry("noise pixel with no clear surrounding colour")
      out[r, c] = top[0][0]
    return out


@register("remove_isolated_pixels", "denoise")
class RemoveIsolatedPixels:
  """Pixels with no neighbour (8-neighbourhood) are erased; larger objects stay."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 24), C.scaled(rng, d, 6, 24)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4))
    truth, objs = C.scatter_objects(rng, H, W, C.scaled(rng, d, 1, 5), C.scaled(rng, d, 2, 5),
                                    cols, min_side=2)
    occ = np.zeros((H, W), bool)
    for _, m in objs:
      occ |= m
    grid = truth.copy()
    C.add_isolated_pixels(rng, grid, occ, C.scaled(rng, d, 1, 10), cols)
    return grid, truth

  def solve(inp, rule):
    return C.drop_singletons(inp)
