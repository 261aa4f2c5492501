"""Jitted training steps: full fine-tuning, LoRA, and K tasks' LoRA adapters in one vmapped step.

A step is a pure function ``step(state, frozen, batch) -> (state, metrics)``:

* full fine-tuning: ``state.trainable`` is the model parameters, ``frozen`` is None;
* LoRA: ``state.trainable`` is the adapter, ``frozen`` the base parameters. Gradients and
  optimizer state exist for the adapter only, and the base is an ordinary (non-differentiated)
  argument;
* many tasks: ``jax.vmap`` of the LoRA step over (state, batch) with the base broadcast
  (``in_axes=None``), so K adapters train against one copy of the base.

A step whose batch has zero total loss weight is a no-op: the new state is selected with
``jnp.where(active, new, old)``, so trainable parameters, Adam moments and the step counter stay
bit-identical. That is what lets tasks with fewer steps ride along in a group.

``apply_fn(params, adapter, tokens_BxT, positions_BxT, mask_BxT)`` is the model with its configs
bound: ``functools.partial(transformer.forward_hidden, cfg=cfg, lora_cfg=lcfg)`` returns the last
states and the head, and the loss takes the logits a block of tokens at a time
(``ttt_jax.model.blockwise``: no BxTxV tensor, which at a Llama vocabulary and 8192 tokens is
gigabytes per sequence); ``transformer.forward`` (logits_BxTxV) works too.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from ttt_jax.data.batching import Batch
from ttt_jax.model import blockwise
from ttt_jax.model.transformer import Hidden
from ttt_jax.train.optim import OptimConfig, make_direction, warmup_cosine

ApplyFn = Callable[..., jax.Array]
PyTree = Any


class TrainState(NamedTuple):
  """What changes during training. ``step`` counts real updates; ``total_steps`` sets the schedule."""
  trainable: PyTree
  opt_state: PyTree
  step: jax.Array  # int32 scalar ([K] when vmapped)
  total_steps: jax.Array  # int32 scalar ([K] when vmapped)


def init_state(trainable: PyTree, ocfg: OptimConfig, total_steps: int | jax.Array) -> TrainState:
  return TrainState(trainable, make_direction(ocfg).init(trainable), jnp.zeros((), jnp.int32),
                    jnp.asarray(total_steps, jnp.int32))


def token_nll(logits_BxTxV: jax.Array | Hidden, targets_BxT: jax.Array) -> jax.Array:
  """Per-token negative log-likelihood in float32, from logits or (blockwise) from a ``Hidden``."""
  if isinstance(logits_BxTxV, Hidden):
    return blockwise.token_nll(logits_BxTxV, targets_BxT)
  logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, targets_BxT[..., None], axis=-1)[..., 0]


def _logits(apply_fn: ApplyFn, trainable: PyTree, frozen: Optional[PyTree], batch: Batch,
            lora: bool) -> jax.Array:
  if lora:
    return apply_fn(frozen, trainable, batch.tokens, batch.positions, batch.mask)
  return apply_fn(trainable, None, batch.tokens, batch.positions, batch.mask)


def loss_sums(apply_fn: ApplyFn, trainable: PyTree, frozen: Optional[PyTree], batch: Batch,
              *, lora: bool) -> tuple[jax.Array, jax.Array]:
  """(sum of weighted token NLL, sum of weights): the parts of a token-mean loss."""
  nll_BxT = token_nll(_logits(apply_fn, trainable, frozen, batch, lora), batch.targets)
  w_BxT = batch.weights.astype(jnp.float32)
  return jnp.sum(nll_BxT * w_BxT), jnp.sum(w_BxT)


def _grads(apply_fn: ApplyFn, trainable: PyTree, frozen: Optional[PyTree], batch: Batch,
           lora: bool, accum_steps: int) -> tuple[jax.Array, PyTree, jax.Array]:
  """Token-mean loss and its gradient over the whole batch, in ``accum_steps`` micro-batches.

  Every micro-batch's loss is divided by the weight of the *whole* batch, so summing their
  gradients gives exactly the gradient of the full batch's token-mean loss.
  """
  total_w = jnp.sum(batch.weights.astype(jnp.float32))
  denom = jnp.maximum(total_w, 1.0)

  def micro_loss(p, mb):
    s, _ = loss_sums(apply_fn, p, frozen, mb, lora=lora)
    return s / denom

  if accum_steps == 1:
    loss, grads = jax.value_and_grad(micro_loss)(trainable, batch)
    return loss, grads, total_w
  b = batch.tokens.shape[0]
  if b % accum_steps:
    raise ValueError(f"batch size {b} is not divisible by accum_steps={accum_steps}")
  micro = jax.tree.map(lambda x: x.reshape(accum_steps, b // accum_steps, *x.shape[1:]), batch)

  def body(carry, mb):
    loss, grads = jax.value_and_grad(micro_loss)(trainable, mb)
    return jax.tree.map(jnp.add, carry, (loss, grads)), None

  zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, trainable))
  (loss, grads), _ = jax.lax.scan(body, zero, micro)
  return loss, grads, total_w


def make_train_step(apply_fn: ApplyFn, ocfg: OptimConfig, *, lora: bool
                    ) -> Callable[[TrainState, Optional[PyTree], Batch], tuple[TrainState, dict]]:
  """One AdamW update (unjitted: jit it, or vmap it with ``make_multitask_step``)."""
  direction = make_direction(ocfg)

  def step(state: TrainState, frozen: Optional[PyTree], batch: Batch):
    loss, grads, total_w = _grads(apply_fn, state.trainable, frozen, batch, lora, ocfg.accum_steps)
    lr = warmup_cosine(state.step, state.total_steps, ocfg)
    updates, opt_state = direction.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable,
                                    jax.tree.map(lambda u: -lr * u, updates))
    new = TrainState(trainable, opt_state, state.step + 1, state.total_steps)
    active = total_w > 0
    new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
    metrics = {"loss": loss, "tokens": total_w, "grad_norm": optax.tree.norm(grads),
               "lr": jnp.where(active, lr, 0.0)}
    return new, metrics

  return step


def jit_train_step(apply_fn: ApplyFn, ocfg: OptimConfig, *, lora: bool, **jit_kw: Any):
  """``make_train_step`` jitted with the state donated."""
  return jax.jit(make_train_step(apply_fn, ocfg, lora=lora), donate_argnums=(0,), **jit_kw)


def make_multitask_step(apply_fn: ApplyFn, ocfg: OptimConfig):
  """K tasks' LoRA updates in one step: vmapped over (state, batch), base shared.

  ``state`` leaves and ``batch`` fields carry a leading K axis (``[K, B, T]`` batches); metrics
  come back per task (``[K]``). Unjitted; ``jit_multitask_step`` jits it with the state donated.
  """
  return jax.vmap(make_train_step(apply_fn, ocfg, lora=True), in_axes=(0, None, 0))


def jit_multitask_step(apply_fn: ApplyFn, ocfg: OptimConfig, **jit_kw: Any):
  return jax.jit(make_multitask_step(apply_fn, ocfg), donate_argnums=(0,), **jit_kw)


def init_multitask_state(adapters_K: PyTree, ocfg: OptimConfig, total_steps_K: jax.Array
                         ) -> TrainState:
  """Stacked states for K stacked adapters (leading K axis on every leaf)."""
  return jax.vmap(lambda a, t: init_state(a, ocfg, t))(adapters_K, jnp.asarray(total_steps_K))


def make_eval_step(apply_fn: ApplyFn, *, lora: bool):
  """Jitted (sum NLL, sum weight) for held-out loss; accumulate over batches, then divide."""
  return jax.jit(lambda trainable, frozen, batch: loss_sums(apply_fn, trainable, frozen, batch,
                                                            lora=lora))
