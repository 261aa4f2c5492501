"""AdamW with linear warmup and cosine decay, split into a direction and a learning rate.

The optax transform built here (clip -> Adam moments -> decoupled weight decay) returns the
update *direction*; the step multiplies it by ``-lr`` where ``lr = warmup_cosine(step, total)``
is computed from the training state. Keeping the learning rate out of the optax state is what
lets one compiled, vmapped step train K tasks that each have their own number of steps (and so
their own schedule): ``total_steps`` is a per-task array, not a Python constant baked into optax.
``chain(direction, scale(-lr))`` is exactly ``optax.adamw`` with the same schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from ttt_jax.model import config
from ttt_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimizer and schedule; every field overridable from configs.

  ``warmup_steps`` (absolute) wins over ``warmup_frac`` (fraction of total steps) when set.
  ``accum_steps`` splits each batch into that many micro-batches whose gradients are summed
  before one update (the batch size must divide by it). ``clip_norm`` None or <= 0: no
  clipping (stored as None; 0 is how a command line, which cannot say None, turns it off).
  """
  learning_rate: float = 1e-4
  warmup_frac: float = 0.1
  warmup_steps: Optional[int] = None
  final_lr_frac: float = 0.0  # cosine decays to learning_rate * final_lr_frac
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  clip_norm: Optional[float] = 1.0
  accum_steps: int = 1

  def __post_init__(self):
    if self.clip_norm is not None and self.clip_norm <= 0:
      object.__setattr__(self, "clip_norm", None)

  def replace(self, **kw: Any) -> "OptimConfig":
    return dataclasses.replace(self, **kw)


def ttt_learning_rate(model: ModelConfig) -> float:
  """The paper's TTT rate by model size: 5e-5 for its 1B and 3B Llamas, 1e-4 for its 8B. Models
  of 0.5B-5B parameters get 5e-5, every other size 1e-4 (also the small from-scratch models,
  whose TTT was tuned at 1e-4): a rule on the shape, not on the name."""
  return 5e-5 if 0.5e9 <= model.num_params < 5e9 else 1e-4


def ttt_optim_config(model: ModelConfig | str, **overrides: Any) -> OptimConfig:
  """The paper's TTT optimizer: AdamW, wd 0.01, warmup a tenth, cosine; lr ``ttt_learning_rate``.

  ``model``: the model's config, or a preset name (``ttt_jax.model.config.get_config``).
  Gradients are clipped to global norm 1 by default (the usual fine-tuning safeguard); the
  reference code does not clip, which ``clip_norm=None`` reproduces.
  """
  if isinstance(model, str):
    model = config.get_config(model)
  cfg = OptimConfig(learning_rate=ttt_learning_rate(model), warmup_frac=0.1, weight_decay=0.01, clip_norm=1.0)
  return cfg.replace(**overrides)


def warmup_cosine(step: jax.Array, total_steps: jax.Array, cfg: OptimConfig) -> jax.Array:
  """Learning rate used for update number ``step`` (0-based) of ``total_steps``.

  Linear warmup (update i of w uses lr * (i+1)/w, so unlike HF's scheduler the first update is
  not spent at lr 0) then cosine to ``final_lr_frac * lr``. Works on traced, per-task
  ``total_steps``.
  """
  step = jnp.asarray(step, jnp.float32)
  total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
  if cfg.warmup_steps is not None:
    warm = jnp.minimum(jnp.float32(cfg.warmup_steps), total)
  else:
    warm = jnp.ceil(total * cfg.warmup_frac)
  warm_lr = (step + 1.0) / jnp.maximum(warm, 1.0)
  progress = jnp.clip((step - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
  floor = cfg.final_lr_frac
  cos_lr = floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
  return cfg.learning_rate * jnp.where(step < warm, warm_lr, cos_lr)


def decay_mask(params: Any) -> Any:
  """Weight decay on matrices only (not on norms' scales or biases), as HF Trainer does."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_direction(cfg: OptimConfig) -> optax.GradientTransformation:
  """Clip, Adam moments, decoupled weight decay: AdamW's update before ``* -lr``."""
  parts = []
  if cfg.clip_norm is not None:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)


def make_optax(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  """The same optimizer as one plain optax transform (for users who want the usual API)."""
  schedule = lambda count: warmup_cosine(count, total_steps, cfg)
  return optax.chain(make_direction(cfg), optax.scale_by_learning_rate(schedule))
