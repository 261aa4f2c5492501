"""HF tokenizers for text-format models (the paper's numpy-print grids), from a local ``tokenizer.json``.

Only the ``tokenizers`` library is needed (optional extra ``hf``), never
``transformers`` or the network. The wrapper is string in, int32 ids out, so
the grid text format (``ttt_jax.data.text_format``) composes with it directly.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def _tokenizers():
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("ttt_jax.model.hf_tokenizer needs the 'tokenizers' package (pip install ttt_jax[hf])") from e
  return tokenizers


class HFTokenizer:
  """Thin wrapper over ``tokenizers.Tokenizer`` with numpy ids and named special tokens."""

  def __init__(self, tokenizer):
    self.tokenizer = tokenizer

  @classmethod
  def from_file(cls, path: str) -> "HFTokenizer":
    """``path`` is a ``tokenizer.json`` file or a directory holding one (e.g. an HF checkpoint dir)."""
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
      raise FileNotFoundError(f"no tokenizer.json at {path}")
    return cls(_tokenizers().Tokenizer.from_file(file))

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def token_id(self, token: str) -> int:
    """Id of a token (e.g. ``'<|eot_id|>'``); raises if the vocabulary lacks it."""
    i = self.tokenizer.token_to_id(token)
    if i is None:
      raise KeyError(f"token {token!r} is not in the tokenizer's vocabulary")
    return i

  def encode(self, text: str, add_special_tokens: bool = False) -> np.ndarray:
    return np.asarray(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids, np.int32)

  def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[np.ndarray]:
    encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
    return [np.asarray(e.ids, np.int32) for e in encs]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.tokenizer.decode([int(i) for i in np.asarray(ids).reshape(-1)],
                                 skip_special_tokens=skip_special_tokens)


def load_tokenizer(path: str) -> HFTokenizer:
  return HFTokenizer.from_file(path)
