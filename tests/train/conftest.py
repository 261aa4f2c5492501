"""Shared tiny fixtures for training tests."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.data.tokens import VOCAB_SIZE


@dataclasses.dataclass(frozen=True)
class Ex:
  tokens_T: np.ndarray
  loss_mask_T: np.ndarray


def random_examples(rng: np.random.Generator, n: int, lo: int = 8, hi: int = 30) -> list[Ex]:
  out = []
  for _ in range(n):
    t = int(rng.integers(lo, hi))
    toks = rng.integers(0, 10, size=t).astype(np.int32)
    mask = np.zeros(t, bool)
    mask[t // 2:] = True
    out.append(Ex(toks, mask))
  return out


def standin_init(key, dim=16):
  k = jax.random.split(key, 4)
  params = {"embed": jax.random.normal(k[0], (VOCAB_SIZE, dim)) * 0.5,
            "pos": jax.random.normal(k[1], (64, dim)) * 0.1,
            "w": jax.random.normal(k[2], (dim, dim)) / dim**0.5,
            "norm": jnp.ones((dim,)),
            "out": jax.random.normal(k[3], (dim, VOCAB_SIZE)) / dim**0.5}
  return params


def standin_lora(key, dim=16, rank=4):
  return {"w": {"a": jax.random.normal(key, (dim, rank)) * 0.1, "b": jnp.zeros((rank, dim))}}


def standin_apply(params, adapter, tokens_BxT, positions_BxT, mask_BxT):
  """Causal toy LM: running mean of embeddings, one (LoRA-able) dense layer."""
  h = params["embed"][tokens_BxT] + params["pos"][positions_BxT]
  h = h * mask_BxT[..., None]
  ctx = jnp.cumsum(h, axis=1) / jnp.arange(1, h.shape[1] + 1)[None, :, None]
  w = params["w"]
  if adapter is not None:
    w = w + adapter["w"]["a"] @ adapter["w"]["b"]
  y = jnp.tanh(ctx @ w) * params["norm"]
  return (y @ params["out"]).astype(jnp.float32)
