"""Compositions of two rules; each solver chains the two single-rule solvers' logic."""

from __future__ import annotations

import numpy as np

from ttt_jax.arc.generators import common as C
from ttt_jax.arc.generators.core import Retry, d4, register


@register("crop_largest_then_upscale", "composite")
class CropLargestThenUpscale:
  """Crop the largest object, then scale it up by a hidden factor k."""

  def rule(rng, d):
    return {"k": int(rng.integers(2, 4))}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 7, 20), C.scaled(rng, d, 7, 20)
    cols = C.colours(rng, C.scaled(rng, d, 1, 3))
    grid, objs = C.scatter_objects(rng, H, W, C.scaled(rng, d, 2, 5), C.scaled(rng, d, 2, 5),
                                   cols)
    i = C.unique_extreme([m.sum() for _, m in objs])
    k = rule["k"]
    return grid, np.kron(C.crop(grid, objs[i][1]), np.ones((k, k), np.int8))

  def solve(inp, rule):
    objs = C.components(inp)
    i = C.unique_extreme([m.sum() for _, m in objs])
    return np.kron(C.crop(inp, objs[i][1]), np.ones((rule["k"],) * 2, np.int8))


@register("d4_then_colour_swap", "composite", reorient=False)
class D4ThenColourSwap:
  """Rotate/flip the grid, then swap two hidden colours."""

  def rule(rng, d):
    a, b = C.colours(rng, 2)
    return {"k": int(rng.integers(1, 8)), "a": a, "b": b}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 3, 12), C.scaled(rng, d, 3, 12)
    others = C.colours(rng, C.scaled(rng, d, 0, 2), (0, rule["a"], rule["b"]))
    grid = C.noise_grid(rng, H, W, 0.4 + 0.4 * rng.random(), [rule["a"], rule["b"]] + others)
    if not {rule["a"], rule["b"]} <= set(np.unique(grid).tolist()):
      raise Retry("a swapped colour is missing")
    return grid, None

  def solve(inp, rule):
    g = d4(inp, rule["k"])
    out = g.copy()
    out[g == rule["a"]] = rule["b"]
    out[g == rule["b"]] = rule["a"]
    return out


@register("denoise_then_crop", "composite")
class DenoiseThenCrop:
  """Erase isolated pixels, then crop to what remains (one object)."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 22), C.scaled(rng, d, 6, 22)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4))
    h, w = C.scaled(rng, d, 2, 6), C.scaled(rng, d, 2, 6)
    shape = C.random_shape(rng, h, w, 0.7)
    body = np.where(shape, np.asarray(cols, np.int8)[rng.integers(len(cols), size=(h, w))], 0)
    grid = np.zeros((H, W), np.int8)
    occ = np.zeros((H, W), bool)
    r, c = C.place(rng, occ, shape)
    grid[r:r + h, c:c + w] = body
    C.add_isolated_pixels(rng, grid, occ, C.scaled(rng, d, 1, 10), cols)
    return grid, body.astype(np.int8)

  def solve(inp, rule):
    clean = C.drop_singletons(inp)
    if not clean.any():
      raise Retry("nothing left after denoising")
    r0, c0, r1, c1 = C.bbox(clean != 0)
    return clean[r0:r1, c0:c1].copy()
