"""Test-time training in the pair format: a fresh task vector (plus LoRA, or all weights) per task.

A new task has no row in the task table. Its per-task state starts from the table's mean and
is trained on the task's demonstrations under random dihedral and colour augmentations, the
same objective as pretraining. Modes:

* ``embed``: only the task vector (D numbers) is trained; the cheapest state, but every step
  still back-propagates through the whole network.
* ``lora``: the task vector and a LoRA adapter.
* ``full``: the task vector and every base weight (VARC's and TRM's choice at small size).
* ``joint``: every test task's demonstrations in one run: one shared copy of the base weights
  and each task its own vector (the paper's "one adapter for all tasks" ablation in this
  format, and mdlARC's transductive setting). ``train_joint``, not ``train_group``.

Many tasks train at once: ``jax.vmap`` of one step over tasks' states and batches, the base
broadcast (``full`` carries a base copy per task). Batches are pure functions of (seed, task,
step), padded to the group's longest bucket with zero-weight rows, so a task's trajectory is
the same alone or in a group (tested).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ttt_jax.arc.task import Task
from ttt_jax.model import lora as lora_lib
from ttt_jax.model.config import ModelConfig
from ttt_jax.taskemb import data, model

MODES = ("embed", "lora", "full", "joint")


@dataclasses.dataclass(frozen=True)
class TTTConfig:
  mode: str = "embed"
  steps: int = 32
  rows: int = 8  # sequences per step
  learning_rate: float = 1e-2  # the task vector's (and LoRA's) rate
  base_learning_rate: float = 1e-4  # "full": the base weights' rate
  lora: lora_lib.LoraConfig = lora_lib.LoraConfig(rank=8, alpha=16.0)  # mode "lora"
  adam_eps: float = 1e-8
  buckets: tuple[int, ...] = (64, 128, 256, 512)
  seed: int = 0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"taskemb TTT mode must be one of {MODES}, got {self.mode!r}")

  def replace(self, **kw: Any) -> "TTTConfig":
    return dataclasses.replace(self, **kw)


def initial_vector(params: dict) -> jax.Array:
  """A new task's starting vector: the mean of the pool's task vectors."""
  return jnp.mean(params["task"], axis=0)


def init_trainable(params: dict, mcfg: ModelConfig, tcfg: TTTConfig, key: jax.Array) -> dict:
  """The per-task state TTT trains: ``{"task": D[, "lora": adapter][, "base": weights]}``."""
  out = {"task": initial_vector(params)}
  if tcfg.mode == "lora":
    out["lora"] = lora_lib.init_lora(mcfg, tcfg.lora, key)
  if tcfg.mode == "full":
    out["base"] = params["base"]
  return out


def _optimizer(tcfg: TTTConfig) -> optax.GradientTransformation:
  adam = lambda lr: optax.adam(lr, eps=tcfg.adam_eps)
  if tcfg.mode not in ("full", "joint"):
    return adam(tcfg.learning_rate)
  labels = lambda t: {k: ("base" if k == "base" else "fast") for k in t}
  return optax.multi_transform({"fast": adam(tcfg.learning_rate),
                                "base": adam(tcfg.base_learning_rate)}, labels)


def demo_pairs(task: Task, max_tokens: int) -> tuple:
  """The demonstrations that fit ``max_tokens`` under every dihedral view."""
  return tuple(p for p in task.train if data.pair_num_tokens(p) <= max_tokens)


def task_batch(pairs: Sequence, tcfg: TTTConfig, task_index: int, step: int, length: int
               ) -> data.PairBatch:
  """Step ``step``'s rows for one task: demonstrations under random dihedral and colours.

  No pairs: an all-padding batch of zero weight (a task that rides along in a group).
  """
  rng = np.random.default_rng((tcfg.seed, max(task_index, 0), step))
  seqs, augs = [], []
  for _ in range(tcfg.rows if pairs else 0):
    p = pairs[int(rng.integers(len(pairs)))]
    aug = int(rng.integers(data.NUM_AUGS))
    p = data.augment_pair(p, aug, data.random_colour_perm(rng))
    seqs.append(data.encode_pair(p.input, p.output))
    augs.append(aug)
  b = data.make_batch(seqs, [0] * len(seqs), augs, length)
  if not pairs:  # pad rows: shapes only
    z = lambda dt, *shape: np.zeros(shape, dt)
    b = data.PairBatch(z(np.int32, tcfg.rows, length), z(bool, tcfg.rows, length),
                       z(np.int32, tcfg.rows, length), z(np.float32, tcfg.rows, length),
                       z(np.int32, tcfg.rows), z(np.int32, tcfg.rows))
  return b


def group_length(pair_sets: Sequence[Sequence], buckets: Sequence[int]) -> int:
  lengths = [data.pair_num_tokens(p) for ps in pair_sets for p in ps]
  return data.bucket_length(max(lengths), buckets) if lengths else buckets[0]


def make_step(mcfg: ModelConfig, tcfg: TTTConfig):
  """``step(trainable, opt_state, params, batch) -> (trainable, opt_state, loss)`` for one task."""
  opt = _optimizer(tcfg)
  lcfg = tcfg.lora if tcfg.mode == "lora" else None

  def loss_fn(tr, params, batch):
    base = tr.get("base", params["base"])
    vec_BxD = jnp.broadcast_to(tr["task"], (batch.tokens.shape[0], tr["task"].shape[-1]))
    s, w, _ = model.loss_sums(base, tr.get("lora"), vec_BxD, params["aug"], batch, cfg=mcfg,
                              lora_cfg=lcfg)
    return s / jnp.maximum(w, 1.0), w

  def step(tr, opt_state, params, batch):
    (loss, w), g = jax.value_and_grad(loss_fn, has_aux=True)(tr, params, batch)
    updates, new_opt = opt.update(g, opt_state, tr)
    new_tr = optax.apply_updates(tr, updates)
    live = w > 0  # an all-padding batch leaves the state as it was
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)
    return keep(new_tr, tr), keep(new_opt, opt_state), loss

  return step, opt


def _program_key(tcfg: TTTConfig) -> TTTConfig:
  """The fields a compiled step depends on: runs of other lengths or seeds share one program."""
  return tcfg.replace(steps=0, seed=0)


@functools.lru_cache(maxsize=8)
def _compiled_step(mcfg: ModelConfig, tcfg: TTTConfig):
  """One jitted, vmapped step per (model, TTT config): groups of one shape compile once."""
  step, opt = make_step(mcfg, tcfg)
  return jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0))), opt


def train_group(params: dict, mcfg: ModelConfig, tasks: Sequence[Task], tcfg: TTTConfig,
                task_indices: Optional[Sequence[int]] = None, max_tokens: int = 513,
                num_slots: Optional[int] = None) -> tuple[list[dict], list[float]]:
  """Trains every task's state at once (vmap over tasks); returns per-task states and final losses.

  ``task_indices`` seed each task's batches (default: position in ``tasks``); ``num_slots``
  pads the group with empty tasks so one compiled program serves groups of any size.
  """
  if tcfg.mode == "joint":
    raise ValueError("joint TTT trains every task in one run with shared weights: use train_joint")
  idx = list(range(len(tasks))) if task_indices is None else list(task_indices)
  pair_sets = [demo_pairs(t, max_tokens) for t in tasks]
  K = max(len(tasks), num_slots or 0)
  pair_sets += [()] * (K - len(tasks))
  idx += [-1] * (K - len(tasks))
  length = group_length(pair_sets, tcfg.buckets)
  vstep, opt = _compiled_step(mcfg, _program_key(tcfg))
  trs = [init_trainable(params, mcfg, tcfg, jax.random.fold_in(jax.random.key(tcfg.seed), max(i, 0)))
         for i in idx]
  tr_K = jax.tree.map(lambda *x: jnp.stack(x), *trs)
  opt_K = jax.vmap(opt.init)(tr_K)
  loss_K = jnp.zeros((K,))
  for s in range(tcfg.steps):
    batches = [task_batch(pair_sets[k], tcfg, idx[k], s, length) for k in range(K)]
    batch_K = jax.tree.map(lambda *x: np.stack(x), *batches)
    tr_K, opt_K, loss_K = vstep(tr_K, opt_K, params, batch_K)
  states = [jax.tree.map(lambda x, k=k: x[k], tr_K) for k in range(len(tasks))]
  return states, [float(x) for x in np.asarray(loss_K)[:len(tasks)]]


@functools.lru_cache(maxsize=4)
def _compiled_joint_step(mcfg: ModelConfig, tcfg: TTTConfig):
  """``step(trainable, opt_state, aug_table, batch, task_B)``: shared base, a vector per task."""
  opt = _optimizer(tcfg)

  def loss_fn(tr, aug_table, batch, task_B):
    s, w, _ = model.loss_sums(tr["base"], None, jnp.take(tr["task"], task_B, axis=0), aug_table, batch,
                              cfg=mcfg)
    return s / jnp.maximum(w, 1.0)

  def step(tr, opt_state, aug_table, batch, task_B):
    loss, g = jax.value_and_grad(loss_fn)(tr, aug_table, batch, task_B)
    updates, opt_state = opt.update(g, opt_state, tr)
    return optax.apply_updates(tr, updates), opt_state, loss

  return jax.jit(step), opt


def train_joint(params: dict, mcfg: ModelConfig, tasks: Sequence[Task], tcfg: TTTConfig,
                max_tokens: int = 513) -> tuple[dict, list[dict], float]:
  """Joint (transductive) TTT: all tasks' demonstrations in one run, the base weights shared.

  Step ``s`` holds every task's ``task_batch`` rows (the same rows ``train_group`` would give
  it), one token-mean loss over them all. Returns (the trained base, per-task states
  ``{"task": D}``, the final loss); decode with ``dict(params, base=base)``.
  """
  if tcfg.mode != "joint":
    raise ValueError(f"train_joint needs mode='joint', got {tcfg.mode!r}")
  pair_sets = [demo_pairs(t, max_tokens) for t in tasks]
  length = group_length(pair_sets, tcfg.buckets)
  step, opt = _compiled_joint_step(mcfg, _program_key(tcfg))
  tr = {"base": params["base"], "task": jnp.tile(initial_vector(params)[None], (len(tasks), 1))}
  opt_state = opt.init(tr)
  loss = jnp.zeros(())
  for s in range(tcfg.steps):
    batches = [task_batch(pair_sets[k], tcfg, k, s, length) for k in range(len(tasks))]
    batch = jax.tree.map(lambda *x: np.concatenate(x), *batches)
    task_B = np.repeat(np.arange(len(tasks), dtype=np.int32), tcfg.rows)
    tr, opt_state, loss = step(tr, opt_state, params["aug"], batch, task_B)
  return tr["base"], [{"task": tr["task"][k]} for k in range(len(tasks))], float(loss)

