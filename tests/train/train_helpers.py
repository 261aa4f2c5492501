"""Shared tiny models and data for the training tests (plain helpers, imported by name)."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import numpy as np



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


def tiny_model(rank: int = 4):
  """(model cfg, lora cfg, apply_fn) of the real tiny model, float32 for tight comparisons."""
  from ttt_jax.model import config, lora, transformer
  cfg = config.get_config("tiny").replace(dtype="float32")
  lcfg = lora.LoraConfig(rank=rank, alpha=2.0 * rank)
  return cfg, lcfg, functools.partial(transformer.forward, cfg=cfg, lora_cfg=lcfg)


def tiny_params(cfg, seed: int = 0):
  from ttt_jax.model import transformer
  return transformer.init_params(cfg, jax.random.key(seed))


def tiny_adapter(cfg, lcfg, seed: int = 1, b_scale: float = 0.0):
  """A LoRA adapter; ``b_scale`` > 0 makes B non-zero so the adapter changes the output."""
  from ttt_jax.model import lora
  ad = lora.init_lora(cfg, lcfg, jax.random.key(seed))
  if b_scale:
    leaves, tdef = jax.tree.flatten(ad)
    keys = jax.random.split(jax.random.key(seed + 7), len(leaves))
    leaves = [x + b_scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    ad = jax.tree.unflatten(tdef, leaves)
  return ad


def synthetic_stream(seed: int):
  """Small flip tasks; the task at a position depends only on (seed, position)."""
  from ttt_jax.arc.task import Pair, Task

  def at(position: int):
    rng = np.random.default_rng((seed, position))
    side = int(rng.integers(2, 4))
    pairs = []
    for _ in range(3):
      g = rng.integers(0, 10, size=(side, side)).astype(np.int8)
      pairs.append(Pair(g, g[:, ::-1].copy()))
    return Task(f"syn{position}", tuple(pairs[:2]), tuple(pairs[2:]))

  return lambda start: (at(p) for p in itertools.count(start))
