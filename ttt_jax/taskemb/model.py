"""The task-embedding model: the Llama-style transformer plus a task table and an augmentation table.

Parameters are ``{"base": transformer params, "task": NxD, "aug": AxD}``. A sequence's
conditioning vector, ``task_vec + aug[aug_id]``, is added to every token's embedding
(``transformer.forward(cond_BxD=...)``), so everything the transformer offers (grid positions,
LoRA, KV-cache decoding, vmap over adapters) works unchanged. For a task outside the table,
test-time training learns a fresh task vector (and, optionally, LoRA or all weights):
``ttt_jax.taskemb.ttt``.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.model import transformer
from ttt_jax.model.config import ModelConfig
from ttt_jax.taskemb.data import NUM_AUGS, PairBatch
from ttt_jax.train.steps import token_nll

Params = dict


def init_params(cfg: ModelConfig, num_tasks: int, rng: jax.Array) -> Params:
  k_base, k_task, k_aug = jax.random.split(rng, 3)
  normal = lambda k, n: cfg.init_std * jax.random.normal(k, (n, cfg.dim), jnp.float32)
  return {"base": transformer.init_params(cfg, k_base), "task": normal(k_task, num_tasks),
          "aug": normal(k_aug, NUM_AUGS)}


def cond_vectors(task_vec_BxD: jax.Array, aug_table_AxD: jax.Array, aug_B: jax.Array) -> jax.Array:
  return task_vec_BxD + jnp.take(aug_table_AxD, aug_B, axis=0)


def logits(base: Params, lora: Optional[dict], task_vec_BxD: jax.Array, aug_table_AxD: jax.Array,
           tokens_BxT: jax.Array, mask_BxT: jax.Array, aug_B: jax.Array, *, cfg: ModelConfig,
           lora_cfg: Any = None) -> jax.Array:
  """Float32 logits_BxTxV of right-padded pair sequences."""
  positions = transformer.positions_from_mask(mask_BxT)
  return transformer.forward(base, lora, tokens_BxT, positions, mask_BxT, cfg=cfg, lora_cfg=lora_cfg,
                             cond_BxD=cond_vectors(task_vec_BxD, aug_table_AxD, aug_B))


def loss_sums(base: Params, lora: Optional[dict], task_vec_BxD: jax.Array, aug_table_AxD: jax.Array,
              batch: PairBatch, *, cfg: ModelConfig, lora_cfg: Any = None
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(weighted NLL sum, weight sum, exactly-predicted weighted tokens) of a batch."""
  lg = logits(base, lora, task_vec_BxD, aug_table_AxD, batch.tokens, batch.mask, batch.aug, cfg=cfg,
              lora_cfg=lora_cfg)
  w = batch.weights.astype(jnp.float32)
  hits = (jnp.argmax(lg, axis=-1) == batch.targets).astype(jnp.float32)
  return jnp.sum(token_nll(lg, batch.targets) * w), jnp.sum(w), jnp.sum(hits * (w > 0))


def row_nll(base: Params, lora: Optional[dict], task_vec_BxD: jax.Array, aug_table_AxD: jax.Array,
            batch: PairBatch, *, cfg: ModelConfig, lora_cfg: Any = None) -> jax.Array:
  """Weighted NLL sum of each row (B): a whole answer's -log p under one view (PoE scoring)."""
  lg = logits(base, lora, task_vec_BxD, aug_table_AxD, batch.tokens, batch.mask, batch.aug, cfg=cfg,
              lora_cfg=lora_cfg)
  return jnp.sum(token_nll(lg, batch.targets) * batch.weights.astype(jnp.float32), axis=-1)


def pool_loss(params: Params, batch: PairBatch, *, cfg: ModelConfig, task_embedding: bool = True
              ) -> tuple[jax.Array, dict]:
  """Token-mean output loss of pool tasks (rows of the task table). ``task_embedding=False``
  (the ablation) conditions on the augmentation alone: the table is neither read nor trained."""
  task_vec_BxD = jnp.take(params["task"], batch.task, axis=0)
  if not task_embedding:
    task_vec_BxD = jnp.zeros_like(task_vec_BxD)
  s, w, hits = loss_sums(params["base"], None, task_vec_BxD, params["aug"], batch, cfg=cfg)
  denom = jnp.maximum(w, 1.0)
  return s / denom, {"tokens": w, "token_acc": hits / denom}


def num_params(params: Params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))
