"""D4 transforms, movement and gravity, scaling and cropping."""

from __future__ import annotations

import numpy as np

from ttt_jax.arc.generators import common as C
from ttt_jax.arc.generators.core import Retry, d4, register


def _content(rng, d, H, W):
  """Either scattered objects or a noise field, in 1-4 colours."""
  cols = C.colours(rng, C.scaled(rng, d, 1, 4))
  if rng.random() < 0.5:
    return C.noise_grid(rng, H, W, 0.15 + 0.4 * rng.random(), cols)
  n = C.scaled(rng, d, 1, 5)
  return C.scatter_objects(rng, H, W, n, max(1, min(H, W) // 2), cols)[0]


@register("d4_transform", "geometry", reorient=False)
class D4Transform:
  """The whole grid is rotated, flipped or transposed (one of 7 non-identity symmetries)."""

  def rule(rng, d):
    return {"k": int(rng.integers(1, 8))}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 2, 14), C.scaled(rng, d, 2, 14)
    return _content(rng, d, H, W), None

  def solve(inp, rule):
    return d4(inp, rule["k"])


@register("gravity_cells", "movement")
class GravityCells:
  """Every coloured cell falls to the bottom of its column, keeping column order."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 3, 16), C.scaled(rng, d, 3, 16)
    return C.noise_grid(rng, H, W, 0.1 + 0.35 * rng.random(),
                        C.colours(rng, C.scaled(rng, d, 1, 4))), None

  def solve(inp, rule):
    out = np.zeros_like(inp)
    H = inp.shape[0]
    for c in range(inp.shape[1]):
      cells = inp[:, c][inp[:, c] != 0]
      out[H - len(cells):, c] = cells
    return out


@register("gravity_objects", "movement")
class GravityObjects:
  """Objects fall as rigid bodies until they rest on the floor or on another object."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 20), C.scaled(rng, d, 5, 20)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4))
    grid, _ = C.scatter_objects(rng, H, W, C.scaled(rng, d, 1, 6), C.scaled(rng, d, 2, 4), cols)
    return grid, None

  def solve(inp, rule):
    objs = C.components(inp, diag=True)
    objs.sort(key=lambda o: -C.bbox(o[1])[2])  # lowest first
    H = inp.shape[0]
    out = np.zeros_like(inp)
    for colour, m in objs:
      while not m[H - 1].any():
        moved = np.zeros_like(m)
        moved[1:] = m[:-1]
        if (out[moved] != 0).any():
          break
        m = moved
      out[m] = colour
    return out


@register("translate_objects", "movement")
class Translate:
  """Everything moves by one hidden vector (dy, dx); nothing leaves the grid."""

  def rule(rng, d):
    dy, dx = (int(v) for v in rng.integers(-C.scaled(rng, d, 1, 3), C.scaled(rng, d, 1, 3) + 1,
                                            size=2))
    if dy == dx == 0:
      raise Retry("zero shift")
    return {"dy": dy, "dx": dx}

  def pair(rng, d, rule):
    dy, dx = rule["dy"], rule["dx"]
    H, W = C.scaled(rng, d, 5, 18), C.scaled(rng, d, 5, 18)
    inner = _content(rng, d, H - abs(dy), W - abs(dx))
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    r0, c0 = max(0, -dy), max(0, -dx)
    grid[r0:r0 + inner.shape[0], c0:c0 + inner.shape[1]] = inner
    out[r0 + dy:r0 + dy + inner.shape[0], c0 + dx:c0 + dx + inner.shape[1]] = inner
    return grid, out

  def solve(inp, rule):
    dy, dx = rule["dy"], rule["dx"]
    H, W = inp.shape
    out = np.zeros_like(inp)
    out[max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)] = \
        inp[max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
    if (out != 0).sum() != (inp != 0).sum():
      raise Retry("content would leave the grid")
    return out


@register("attract_to_wall", "movement")
class AttractToWall:
  """A full-width wall row attracts every object: each slides vertically until it touches."""

  def rule(rng, d):
    return {"wall": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 7, 24), C.scaled(rng, d, 5, 20)
    wall_row = int(rng.integers(1, H - 1))
    cols = C.colours(rng, C.scaled(rng, d, 1, 3), (0, rule["wall"]))
    grid = np.zeros((H, W), np.int8)
    out = grid.copy()
    grid[wall_row] = out[wall_row] = rule["wall"]
    occ = np.zeros((H, W), bool)
    occ[max(0, wall_row - 1):wall_row + 2] = True  # objects start off the wall
    used_cols = {True: np.zeros(W, bool), False: np.zeros(W, bool)}
    for _ in range(C.scaled(rng, d, 1, 5)):
      shape = C.random_shape(rng, int(rng.integers(1, 4)), int(rng.integers(1, 4)), 0.7)
      r, c = C.place(rng, occ, shape)
      h, w = shape.shape
      above = r < wall_row
      if used_cols[above][c:c + w].any():
        raise Retry("objects on one side share a column")
      used_cols[above][c:c + w] = True
      colour = cols[int(rng.integers(len(cols)))]
      grid[r:r + h, c:c + w][shape] = colour
      nr = wall_row - h if above else wall_row + 1
      out[nr:nr + h, c:c + w][shape] = colour
    return grid, out

  def solve(inp, rule):
    rows = np.flatnonzero((inp == rule["wall"]).all(1))
    if len(rows) != 1:
      raise Retry("no single wall row")
    wr = int(rows[0])
    out = np.zeros_like(inp)
    out[wr] = rule["wall"]
    for colour, m in C.components(np.where(np.arange(inp.shape[0])[:, None] == wr, 0, inp),
                                  diag=True):
      r0, _, r1, _ = C.bbox(m)
      shift = (wr - r1) if r0 < wr else (wr + 1 - r0)
      out[np.roll(m, shift, axis=0)] = colour
    return out


@register("upscale", "scaling")
class Upscale:
  """Every cell becomes a k x k block (k hidden, 2-4)."""

  def rule(rng, d):
    return {"k": int(rng.integers(2, C.scaled(rng, d, 2, 4) + 1))}

  def pair(rng, d, rule):
    top = 30 // rule["k"]
    H, W = C.scaled(rng, d, 2, min(top, 10)), C.scaled(rng, d, 2, min(top, 10))
    return C.noise_grid(rng, H, W, 0.3 + 0.5 * rng.random(),
                        C.colours(rng, C.scaled(rng, d, 1, 4))), None

  def solve(inp, rule):
    return np.kron(inp, np.ones((rule["k"], rule["k"]), np.int8))


@register("downscale", "scaling")
class Downscale:
  """The input is made of k x k single-colour blocks; output one cell per block."""

  def rule(rng, d):
    return {"k": int(rng.integers(2, C.scaled(rng, d, 2, 4) + 1))}

  def pair(rng, d, rule):
    top = 30 // rule["k"]
    H, W = C.scaled(rng, d, 2, min(top, 10)), C.scaled(rng, d, 2, min(top, 10))
    small = C.noise_grid(rng, H, W, 0.3 + 0.5 * rng.random(),
                         C.colours(rng, C.scaled(rng, d, 1, 4)))
    return np.kron(small, np.ones((rule["k"], rule["k"]), np.int8)), small

  def solve(inp, rule):
    k = rule["k"]
    H, W = inp.shape
    if H % k or W % k:
      raise Retry("size not a multiple of k")
    small = inp[::k, ::k]
    if not np.array_equal(np.kron(small, np.ones((k, k), np.int8)), inp):
      raise Retry("blocks are not uniform")
    return small.copy()


@register("crop_to_content", "cropping")
class CropToContent:
  """Output the bounding box of everything that is not background."""

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 6, 24), C.scaled(rng, d, 6, 24)
    h, w = int(rng.integers(2, max(3, H // 2))), int(rng.integers(2, max(3, W // 2)))
    inner = C.noise_grid(rng, h, w, 0.5 + 0.4 * rng.random(), C.colours(rng, C.scaled(rng, d, 1, 4)))
    r0, c0, r1, c1 = C.bbox(inner != 0) if (inner != 0).any() else (0, 0, 0, 0)
    if r1 == 0:
      raise Retry("empty content")
    inner = inner[r0:r1, c0:c1]
    grid = np.zeros((H, W), np.int8)
    r, c = int(rng.integers(H - inner.shape[0] + 1)), int(rng.integers(W - inner.shape[1] + 1))
    grid[r:r + inner.shape[0], c:c + inner.shape[1]] = inner
    return grid, inner

  def solve(inp, rule):
    r0, c0, r1, c1 = C.bbox(inp != 0)
    return inp[r0:r1, c0:c1].copy()


@register("crop_framed_region", "cropping")
class CropFramed:
  """A rectangular frame of the frame colour sits in noise; output what is inside it."""

  def rule(rng, d):
    return {"frame": C.colours(rng, 1)[0]}

  def pair(rng, d, rule):
    H, W = C.scaled(rng, d, 8, 26), C.scaled(rng, d, 8, 26)
    cols = C.colours(rng, C.scaled(rng, d, 1, 4), (0, rule["frame"]))
    grid = C.noise_grid(rng, H, W, 0.2 + 0.5 * rng.random(), cols)
    h, w = int(rng.integers(3, H // 2 + 2)), int(rng.integers(3, W // 2 + 2))
    r, c = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
    grid[r:r + h, c:c + w][[0, -1]] = rule["frame"]
    grid[r:r + h, c:c + w][:, [0, -1]] = rule["frame"]
    return grid, grid[r + 1:r + h - 1, c + 1:c + w - 1].copy()

  def solve(inp, rule):
    m = inp == rule["frame"]
    r0, c0, r1, c1 = C.bbox(m)
    ring = np.zeros_like(m)
    ring[r0:r1, c0:c1] = True
    ring[r0 + 1:r1 - 1, c0 + 1:c1 - 1] = False
    if not np.array_equal(ring, m) or r1 - r0 < 3 or c1 - c0 < 3:
      raise Retry("frame colour is not exactly one rectangle outline")
    return inp[r0 + 1:r1 - 1, c0 + 1:c1 - 1].copy()
