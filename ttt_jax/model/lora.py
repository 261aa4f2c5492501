"""LoRA adapters as their own pytree, beside a frozen base.

An adapter mirrors the module paths of the weights it adapts:
``{'layers': {'attn': {'q': {'a': LxDinxR, 'b': LxRxDout}}, 'mlp': {...}}}``.
The transformer adds ``(alpha / rank) * x @ a @ b`` to each adapted layer.
``a`` starts random (PEFT's Kaiming-uniform bound ``1/sqrt(Din)``) and ``b`` at
zero, so a fresh adapter leaves the model unchanged. ``stack`` gives K adapters
a leading axis for ``jax.vmap``; ``merge`` folds one into the base weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from ttt_jax.model import transformer
from ttt_jax.model.config import LORA_DEFAULTS, ModelConfig

# target name -> module that holds it inside a layer
TARGET_GROUPS = {"q": "attn", "k": "attn", "v": "attn", "o": "attn", "gate": "mlp", "up": "mlp", "down": "mlp"}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Every binary's LoRA settings: its config's ``lora`` section (``--config.lora.rank=...``),
  built by ``ttt_jax.model.overrides.lora_section`` with these defaults; saved adapters record
  ``to_fields``."""
  rank: int = LORA_DEFAULTS["rank"]
  alpha: float = LORA_DEFAULTS["alpha"]
  targets: tuple[str, ...] = LORA_DEFAULTS["targets"]
  param_dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if self.rank <= 0:
      raise ValueError(f"LoraConfig: rank must be positive, got {self.rank}")
    bad = [t for t in self.targets if t not in TARGET_GROUPS]
    if bad or not self.targets:
      raise ValueError(f"LoraConfig: unknown or empty targets {bad or self.targets}; choose from {list(TARGET_GROUPS)}")
    if len(set(self.targets)) != len(self.targets):
      raise ValueError(f"LoraConfig: duplicate targets in {self.targets}")

  @property
  def scale(self) -> float:
    return float(self.alpha) / float(self.rank)

  def replace(self, **kw) -> "LoraConfig":
    return dataclasses.replace(self, **kw)


SECTION_FIELDS = ("rank", "alpha", "targets")


def from_fields(fields: Mapping[str, Any]) -> LoraConfig:
  """A ``LoraConfig`` from a config's ``lora`` section or an adapter's saved ``lora`` record
  (fields beyond rank, alpha and targets, such as ``enabled``, are not LoRA's)."""
  return LoraConfig(rank=int(fields["rank"]), alpha=float(fields["alpha"]), targets=tuple(fields["targets"]))


def to_fields(lcfg: LoraConfig) -> dict:
  return {"rank": lcfg.rank, "alpha": lcfg.alpha, "targets": list(lcfg.targets)}


def _target_shapes(cfg: ModelConfig, lcfg: LoraConfig) -> dict[str, tuple[int, int]]:
  """(d_in, d_out) of each adapted kernel, read from the base parameter shapes."""
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  return {t: tuple(shapes["layers"][TARGET_GROUPS[t]][t]["kernel"].shape[1:]) for t in lcfg.targets}


def init_lora(cfg: ModelConfig, lcfg: LoraConfig, rng: jax.Array) -> dict:
  """A fresh adapter: ``a`` uniform in +-1/sqrt(d_in), ``b`` zero (the model is unchanged).

  One compiled program: no host constants are sent to the device per call."""
  return _init_lora_jit(cfg, lcfg, rng)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_lora_jit(cfg: ModelConfig, lcfg: LoraConfig, rng: jax.Array) -> dict:
  dtype = jnp.dtype(lcfg.param_dtype)
  out: dict = {"layers": {}}
  keys = jax.random.split(rng, len(lcfg.targets))
  for key, (t, (d_in, d_out)) in zip(keys, _target_shapes(cfg, lcfg).items()):
    bound = 1.0 / d_in ** 0.5
    a = jax.random.uniform(key, (cfg.n_layers, d_in, lcfg.rank), dtype, -bound, bound)
    b = jnp.zeros((cfg.n_layers, lcfg.rank, d_out), dtype)
    out["layers"].setdefault(TARGET_GROUPS[t], {})[t] = {"a": a, "b": b}
  return out


def stack(adapters: Sequence[dict]) -> dict:
  """K adapters -> one with a leading K axis on every leaf (for ``jax.vmap``)."""
  if not adapters:
    raise ValueError("lora.stack: no adapters given")
  structs = {jax.tree.structure(a) for a in adapters}
  if len(structs) != 1:
    raise ValueError(f"lora.stack: adapters have different structures: {structs}")
  # host (numpy) adapters are placed explicitly, then stacked on the device
  return jax.tree.map(lambda *xs: jnp.stack(jax.device_put(xs)), *adapters)


def unstack(stacked: dict) -> list[dict]:
  """Inverse of ``stack``."""
  leaves, treedef = jax.tree.flatten(stacked)
  k = leaves[0].shape[0]
  return [jax.tree.unflatten(treedef, [x[i] for x in leaves]) for i in range(k)]


def merge(params: dict, adapter: dict, lcfg: LoraConfig) -> dict:
  """Base params with ``W + scale * a @ b`` for every adapted kernel (a new tree; inputs untouched)."""
  layers = dict(params["layers"])
  for group, mods in adapter["layers"].items():
    layers[group] = dict(layers[group])
    for name, ab in mods.items():
      w = layers[group][name]["kernel"]
      delta = jnp.einsum("lir,lro->lio", ab["a"].astype(jnp.float32), ab["b"].astype(jnp.float32))
      layers[group][name] = {"kernel": (w.astype(jnp.float32) + lcfg.scale * delta).astype(w.dtype)}
  return dict(params, layers=layers)


def split(tree: dict) -> tuple[dict, dict]:
  """Splits a combined ``{'params': ..., 'lora': ...}`` variables dict into (params, adapter)."""
  if set(tree) != {"params", "lora"}:
    raise ValueError(f"lora.split: expected keys 'params' and 'lora', got {sorted(tree)}")
  return tree["params"], tree["lora"]


def combine(params: dict, adapter: dict) -> dict:
  """Inverse of ``split``: one variables dict, as ``Transformer.apply`` takes it."""
  return {"params": params, "lora": adapter}


def count_params(adapter: dict) -> int:
  return transformer.count_params(adapter)
