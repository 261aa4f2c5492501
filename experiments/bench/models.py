"""The models, adapters and batches the measurements build, and the FLOP counts they report."""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import numpy as np

from ttt_jax.data import batching
from ttt_jax.model import config as config_lib
from ttt_jax.model import lora as lora_lib
from ttt_jax.model import overrides as overrides_lib
from ttt_jax.model import transformer
from ttt_jax.train import metrics, optim

BIG = 1_000_000  # total_steps of timed states: the schedule never ends during a benchmark


class _Example(NamedTuple):
  tokens_T: np.ndarray
  loss_mask_T: np.ndarray


def synthetic_batch(vocab_size: int, batch_size: int, seq_len: int, seed: int) -> batching.Batch:
  """Full-length random sequences (no padding) through the project's batching (shift, weights)."""
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(batch_size):
    toks = rng.integers(0, vocab_size, seq_len + 1).astype(np.int32)
    mask = np.ones(seq_len + 1, bool)
    mask[0] = False
    examples.append(_Example(toks, mask))
  return batching.pad_examples(examples, seq_len, batch_size)


def model_config(name: str, cfg, **overrides) -> config_lib.ModelConfig:
  return config_lib.get_config(name, **{**overrides_lib.set_overrides(cfg.model_overrides), **overrides})


def lora_config(cfg) -> lora_lib.LoraConfig:
  return lora_lib.from_fields(cfg.lora_cfg)


def optim_config(model_name: str) -> optim.OptimConfig:
  return optim.ttt_optim_config(model_name)


_PARAMS: dict = {}  # (config without remat, seed) -> params, shared by the measurements of one run


def shared_params(mcfg, seed: int) -> dict:
  """Random base parameters; remat does not change them, so the measurements share one copy."""
  key = (mcfg.replace(remat=False), seed)
  if key not in _PARAMS:
    _PARAMS[key] = transformer.init_params(key[0], jax.random.key(seed))
  return _PARAMS[key]


def clear_shared_params() -> None:
  _PARAMS.clear()


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_lora(mcfg, lcfg, key):
  return lora_lib.init_lora(mcfg, lcfg, key)  # jitted: one compile, not one per eager op


def nbytes(tree) -> int:
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def jit_kw(cfg) -> dict:
  opts = dict(cfg.get("compiler_options") or {})
  return {"compiler_options": opts} if opts else {}


def mfu(flops: float, seconds: float, peak: Optional[float]) -> Optional[float]:
  return flops / seconds / peak if peak else None


def train_flops(mcfg, n_params: int, batch: int, seq_len: int, *, lora: bool, n_trainable: int = 0) -> float:
  """Model FLOPs of one training step on ``batch x seq_len`` tokens (``metrics.train_flops_per_token``)."""
  return batch * seq_len * metrics.train_flops_per_token(n_params, mcfg.n_layers, mcfg.q_dim, seq_len, lora=lora,
                                                         n_trainable=n_trainable)
