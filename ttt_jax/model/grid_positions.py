"""Grid-aware positions on the compact vocabulary: each token's row, column and grid role.

Small models trained from scratch on ARC need to know where a cell sits in its 2-D grid
(VARC, ViTARC and Puget's ARC models all give cells 2-D positions); with 1-D RoPE alone a
cell's row must be inferred by counting row ends. These coordinates are a pure function
of the token stream (``ttt_jax.data.tokens`` layout), so callers pass nothing new.

Roles: ``SPECIAL`` (BOS/IN/OUT/EOS/PAD), ``INPUT`` (a grid after ``IN``) and ``OUTPUT`` (a
grid after ``OUT``). A cell's row counts the row ends (``NL``) since its grid began and its
column the cells since the last row end; an ``NL`` token has the column just past its row's
last cell. Every coordinate is causal (it depends on earlier tokens only). The query and
the answer are deliberately not roles of their own: "this pair is the last one" depends on
tokens that come later, so such a role would change under a model that keeps writing, and
incremental decoding would no longer equal one pass over the same tokens.

For KV-cache decoding the coordinates a grid cell *would* have at the next slot are the
``state_Bx3`` (row, column, role) carried in the cache: a chunk's coordinates depend only
on its own tokens and that state, so prefill + incremental steps give exactly the
coordinates of one pass over the whole sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ttt_jax.data import tokens

MAX_COORD = 32  # rows/columns 0..29 plus NL's column 30; larger (malformed) values are clipped
SPECIAL, INPUT, OUTPUT = range(3)
NUM_ROLES = 3
_MARKERS = (tokens.BOS, tokens.IN, tokens.OUT, tokens.EOS, tokens.PAD)


def initial_state(batch: int) -> jax.Array:
  """State before any token: no grid open (a cell here would be row 0, column 0, SPECIAL)."""
  return jnp.zeros((batch, 3), jnp.int32)


def _cummax(x_BxT: jax.Array) -> jax.Array:
  return jax.lax.cummax(x_BxT, axis=1)


def _coords(tokens_BxT: jax.Array, state_Bx3: jax.Array) -> jax.Array:
  """``coords_BxTx3`` (row, column, role) of every token, given the state before the chunk."""
  B, T = tokens_BxT.shape
  t_T = jnp.arange(T, dtype=jnp.int32)
  is_marker = jnp.zeros((B, T), bool)
  for m in _MARKERS:
    is_marker = is_marker | (tokens_BxT == m)
  is_nl = tokens_BxT == tokens.NL
  # Last marker at or before t (-1: none in this chunk), and which marker it is.
  marker_at = _cummax(jnp.where(is_marker, t_T, -1))
  marker_tok = jnp.take_along_axis(tokens_BxT, jnp.maximum(marker_at, 0), axis=1)
  # Row ends strictly before t, counted from the chunk start and since the last marker.
  nl_cum = jnp.cumsum(is_nl.astype(jnp.int32), axis=1)
  nl_before = nl_cum - is_nl.astype(jnp.int32)
  nl_at_marker = jnp.where(marker_at >= 0,
                           jnp.take_along_axis(nl_cum, jnp.maximum(marker_at, 0), axis=1), 0)
  last_nl_before = jnp.concatenate(
      [jnp.full((B, 1), -1, jnp.int32), _cummax(jnp.where(is_nl, t_T, -1))[:, :-1]], axis=1)
  row0, col0, role0 = state_Bx3[:, 0:1], state_Bx3[:, 1:2], state_Bx3[:, 2:3]
  has_marker = marker_at >= 0
  row = jnp.where(has_marker, nl_before - nl_at_marker, row0 + nl_before)
  seg_start = jnp.maximum(marker_at, last_nl_before)  # the row starts after this index
  col = jnp.where(seg_start >= 0, t_T - seg_start - 1, col0 + t_T)
  grid_role = jnp.where(marker_tok == tokens.IN, INPUT,
                        jnp.where(marker_tok == tokens.OUT, OUTPUT, SPECIAL))
  role = jnp.where(has_marker, grid_role, role0)
  role = jnp.where(is_marker, SPECIAL, role)
  row = jnp.where(is_marker, 0, row)
  col = jnp.where(is_marker, 0, col)
  coords = jnp.stack([row, col, role], axis=-1)
  return jnp.clip(coords, 0, jnp.array([MAX_COORD - 1, MAX_COORD - 1, NUM_ROLES - 1]))


def grid_coords(tokens_BxT: jax.Array, state_Bx3: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """``(coords_BxTx3, next_state_Bx3)`` for a chunk that follows ``state_Bx3``.

  ``next_state`` is what a grid cell appended after the chunk would get, so feeding the
  chunk's successor with it continues the sequence exactly.
  """
  B, _ = tokens_BxT.shape
  state_Bx3 = initial_state(B) if state_Bx3 is None else state_Bx3
  probe_BxT1 = jnp.concatenate([tokens_BxT, jnp.zeros((B, 1), tokens_BxT.dtype)], axis=1)
  coords = _coords(probe_BxT1, state_Bx3)
  return coords[:, :-1], coords[:, -1]
