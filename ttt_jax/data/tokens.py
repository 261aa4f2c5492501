"""Compact ARC vocabulary for models trained here: one token per cell.

Token ids 0..9 are the colours themselves, so a decoded cell needs no lookup.
A sequence is ``BOS (IN grid OUT grid EOS)* IN query OUT`` and the model
continues with ``answer EOS``. Every grid row ends with ``NL``.

Alongside the tokens, ``encode_episode`` returns ``pair_index_T``: for every
token, the index of the pair whose *output* it belongs to (``-1`` for prompt
tokens). Loss masks (``ttt_jax.data.loo``) are built from it, which keeps the
format and the masking rules in one place each.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ttt_jax.arc.task import MAX_SIDE, NUM_COLOURS, Grid, Pair

NL = 10
IN = 11
OUT = 12
BOS = 13
EOS = 14
PAD = 15
VOCAB_SIZE = 16
DESCRIPTION = ("compact ARC vocabulary (ttt_jax.data.tokens): ids 0-9 colours, 10 NL (end of row), "
               "11 IN, 12 OUT, 13 BOS, 14 EOS, 15 PAD; episode = BOS (IN grid OUT grid EOS)* IN query "
               "OUT, answer = grid EOS")
TOKEN_NAMES = tuple(str(c) for c in range(NUM_COLOURS)) + ("\\n", "<in>", "<out>", "<bos>", "<eos>", "<pad>")


def grid_num_tokens(grid: Grid) -> int:
  h, w = grid.shape
  return h * (w + 1)


def encode_grid(grid: Grid) -> np.ndarray:
  """Row-major cells with NL after each row, as int32."""
  h, w = grid.shape
  out = np.full((h, w + 1), NL, dtype=np.int32)
  out[:, :w] = grid
  return out.reshape(-1)


def decode_grid(tokens: Sequence[int]) -> Optional[Grid]:
  """Parses cells-and-NL tokens (optionally ending in EOS/PAD) into a grid.

  Never raises: anything that is not a rectangular 1..30 grid of colours gives None.
  """
  toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
  stop = np.nonzero((toks == EOS) | (toks == PAD))[0]
  if stop.size:
    toks = toks[: stop[0]]
  if toks.size == 0 or toks[-1] != NL:
    return None
  ends = np.nonzero(toks == NL)[0]
  if np.any((toks >= NUM_COLOURS) & (toks != NL)):
    return None
  h = ends.size
  w = int(ends[0])
  if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
    return None
  if toks.size != h * (w + 1) or np.any(ends != np.arange(h) * (w + 1) + w):
    return None
  return toks.reshape(h, w + 1)[:, :w].astype(np.int8)


def decode_answer(tokens: Sequence[int]) -> Optional[Grid]:
  """Parses a generated answer: a grid, then EOS; whatever follows EOS (PAD) is ignored.

  Stricter than ``decode_grid``: without EOS the answer ran out of budget and may be cut at a
  row end, so it is invalid (None) even when the tokens so far form a grid; PAD before EOS is
  invalid too. Never raises.
  """
  toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
  eos = np.nonzero(toks == EOS)[0]
  if eos.size == 0 or np.any(toks[: eos[0]] == PAD):
    return None
  return decode_grid(toks[: eos[0]])


def episode_num_tokens(demos: Sequence[Pair], query_input: Grid,
                       query_output: Optional[Grid] = None) -> int:
  """Length of ``encode_episode`` without building it (for cheap budget checks)."""
  n = 1
  for p in demos:
    n += 3 + grid_num_tokens(p.input) + grid_num_tokens(p.output)
  n += 2 + grid_num_tokens(query_input)
  if query_output is not None:
    n += grid_num_tokens(query_output) + 1
  return n


def encode_episode(demos: Sequence[Pair], query_input: Grid,
                   query_output: Optional[Grid] = None) -> tuple[np.ndarray, np.ndarray]:
  """Tokens of an in-context episode and, per token, the pair whose output it is.

  Returns ``(tokens_T, pair_index_T)``; demonstrations are pairs ``0..n-1``, the
  query is pair ``n``. Without ``query_output`` the sequence ends with ``OUT``,
  ready for decoding.
  """
  toks: list[np.ndarray] = [np.array([BOS], np.int32)]
  idx: list[np.ndarray] = [np.array([-1], np.int32)]

  def add(arr: np.ndarray, pair: int) -> None:
    toks.append(arr)
    idx.append(np.full(arr.shape, pair, np.int32))

  for i, p in enumerate(demos):
    add(np.array([IN], np.int32), -1)
    add(encode_grid(p.input), -1)
    add(np.array([OUT], np.int32), -1)
    add(np.concatenate([encode_grid(p.output), np.array([EOS], np.int32)]), i)
  add(np.array([IN], np.int32), -1)
  add(encode_grid(query_input), -1)
  add(np.array([OUT], np.int32), -1)
  if query_output is not None:
    add(np.concatenate([encode_grid(query_output), np.array([EOS], np.int32)]), len(demos))
  return np.concatenate(toks), np.concatenate(idx)


def decode_episode(tokens: Sequence[int]) -> tuple[list[Pair], Optional[Grid]]:
  """Inverse of ``encode_episode`` for a well-formed sequence (used by tests and tools).

  Returns the demonstration pairs and the query input; raises ValueError on malformed input.
  """
  toks = [int(t) for t in tokens if t != PAD]
  if not toks or toks[0] != BOS:
    raise ValueError("episode must start with BOS")
  pos, pairs, query = 1, [], None

  def take_until(stop: int) -> list[int]:
    nonlocal pos
    end = toks.index(stop, pos)
    seg, pos = toks[pos:end], end + 1
    return seg

  while pos < len(toks):
    if toks[pos] != IN:
      raise ValueError(f"expected IN at {pos}")
    pos += 1
    inp = decode_grid(take_until(OUT))
    if inp is None:
      raise ValueError("malformed input grid")
    if pos == len(toks):
      query = inp
      break
    out = decode_grid(take_until(EOS))
    if out is None:
      raise ValueError("malformed output grid")
    pairs.append(Pair(inp, out))
  return pairs, query
