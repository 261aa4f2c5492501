"""Pretraining of the task-embedding model on a pool of tasks, cumulative across runs.

A run resumes from its own ``out_dir/checkpoint`` if there is one, else from ``init_from``
(a committed checkpoint, e.g. the shipped model's), else from scratch. Training is open-ended:
linear warmup then a constant rate (no schedule tied to a total), so every session adds steps
to the same lineage. ``state.json`` carries the cumulative tokens, steps and device hours.
Batches are a pure function of (seed, step), so a resumed run sees what an uninterrupted
one would. Stops on ``max_minutes``, ``steps``, or SIGTERM, always with a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ttt_jax.model import config as config_lib
from ttt_jax.taskemb import checkpoint, data, model
from ttt_jax.train import optim
from ttt_jax.train.steps import TrainState


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  out_dir: str
  init_from: str = ""  # a checkpoint directory to continue (the lineage), when out_dir has none
  model: str = "arc-cpu"
  seed: int = 0
  # the pool: ARC-AGI-1 training tasks + generated instances of the training families
  arc_sets: tuple[str, ...] = ("arc1-train",)
  exclude_families: tuple[str, ...] = ()
  per_family: int = 40
  pairs_per_task: int = 12
  difficulty: tuple[float, float] = (0.0, 0.6)
  buckets: tuple[int, ...] = (64, 128, 256, 512)
  tokens_per_batch: int = 4096
  input_loss: float = 0.0
  learning_rate: float = 1e-3
  warmup_steps: int = 200
  weight_decay: float = 0.01
  steps: int = 0  # stop at this cumulative step (0: no limit)
  max_minutes: float = 0.0  # stop after this much wall time in this run (0: no limit)
  checkpoint_minutes: float = 5.0
  log_every: int = 20
  device: str = ""  # recorded in the ledger ("cpu", "nvidia-h200"); default: jax's platform
  # this run's compute settings; the checkpoint keeps the lineage's own (a GPU run in bf16
  # leaves a checkpoint that a CPU resumes in float32)
  compute_dtype: str = ""
  attention_impl: str = ""
  # ablations (a new model only): no task embedding (the augmentation alone conditions, the
  # table stays zero), learned grid positions and 3-D RoPE on/off (None: the model preset's)
  task_embedding: bool = True
  grid_positions: Optional[bool] = None
  rope_grid: Optional[bool] = None

  def replace(self, **kw: Any) -> "PretrainConfig":
    return dataclasses.replace(self, **kw)


def optim_config(cfg: PretrainConfig) -> optim.OptimConfig:
  # final_lr_frac=1: warmup, then the rate stays (open-ended, cumulative training)
  return optim.OptimConfig(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                           final_lr_frac=1.0, weight_decay=cfg.weight_decay, clip_norm=1.0)


def build_pool(cfg: PretrainConfig) -> data.Pool:
  from ttt_jax.arc import io  # pylint: disable=g-import-not-at-top
  from ttt_jax.train.task_stream import training_families  # pylint: disable=g-import-not-at-top
  tasks = []
  for name in cfg.arc_sets:
    tasks += io.load_tasks(name)[0]
  if cfg.per_family:
    tasks += data.generated_tasks(training_families(cfg.exclude_families), cfg.per_family,
                                  cfg.pairs_per_task, cfg.difficulty, cfg.seed)
  return data.pool_from_tasks(tasks, max_tokens=cfg.buckets[-1] + 1)


def pool_digest(pool: data.Pool) -> str:
  return hashlib.sha256("\n".join(pool.task_ids).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def make_step(mcfg: config_lib.ModelConfig, ocfg: optim.OptimConfig, task_embedding: bool = True):
  """The jitted pretraining step (cached: runs in one process share its compiled programs)."""
  direction = optim.make_direction(ocfg)
  loss_fn = functools.partial(model.pool_loss, cfg=mcfg, task_embedding=task_embedding)

  def step(state: TrainState, batch: data.PairBatch):
    (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable, batch)
    updates, opt_state = direction.update(g, state.opt_state, state.trainable)
    lr = optim.warmup_cosine(state.step, state.total_steps, ocfg)
    params = optax.apply_updates(state.trainable, jax.tree.map(lambda u: -lr * u, updates))
    return TrainState(params, opt_state, state.step + 1, state.total_steps), dict(aux, loss=loss, lr=lr)

  return jax.jit(step, donate_argnums=(0,))


def make_eval(mcfg: config_lib.ModelConfig):
  return jax.jit(lambda params, batch: model.pool_loss(params, batch, cfg=mcfg))


def _device(cfg: PretrainConfig) -> str:
  return cfg.device or jax.default_backend()


def run(cfg: PretrainConfig, *, pool: Optional[data.Pool] = None, clock=time.monotonic,
        log=print) -> dict:
  """Trains until a stop condition; returns the final ``state.json`` dict."""
  from ttt_jax.train.finetune import StopSignal  # pylint: disable=g-import-not-at-top
  t_start = clock()
  pool = pool if pool is not None else build_pool(cfg)
  ckpt_dir = os.path.join(cfg.out_dir, "checkpoint")
  source = ckpt_dir if checkpoint.exists(ckpt_dir) else (cfg.init_from if checkpoint.exists(cfg.init_from)
                                                         else None)
  if cfg.init_from and source is None:
    raise FileNotFoundError(f"init_from={cfg.init_from!r} is not a task-embedding checkpoint")
  if source == ckpt_dir and cfg.init_from and checkpoint.exists(cfg.init_from):
    here, there = checkpoint.load_state(ckpt_dir), checkpoint.load_state(cfg.init_from)
    if there["tokens_seen"] > here["tokens_seen"]:  # a newer lineage checkpoint was committed since
      raise ValueError(
          f"out_dir checkpoint {ckpt_dir} (step {here['step']}, {here['tokens_seen']:,} tokens) is older "
          f"than init_from {cfg.init_from} (step {there['step']}, {there['tokens_seen']:,} tokens): resuming "
          "it would fork the lineage; move it away or choose another out_dir")
  ocfg = optim_config(cfg)
  if source:
    saved = checkpoint.load_state(source)
    if saved["pool_digest"] != pool_digest(pool):
      raise ValueError(f"{source}: its task table was built for pool {saved['pool_digest']} "
                       f"({saved['pool_size']} tasks); this config builds {pool_digest(pool)} "
                       f"({len(pool)} tasks): the pool settings differ from the checkpoint's")
    mcfg = config_lib.ModelConfig(**saved["model_config"])
    trained_with = saved.get("config", {}).get("task_embedding", True)
    if (cfg.task_embedding != trained_with or cfg.grid_positions not in (None, mcfg.grid_positions)
        or cfg.rope_grid not in (None, mcfg.rope_grid)):
      raise ValueError(f"{source}: trained with task_embedding={trained_with}, grid_positions="
                       f"{mcfg.grid_positions}, rope_grid={mcfg.rope_grid}; this config asks for "
                       f"task_embedding={cfg.task_embedding}, grid_positions={cfg.grid_positions}, "
                       f"rope_grid={cfg.rope_grid} (ablations start a new model: init_from=\"\")")
    params = jax.tree.map(jnp.asarray, checkpoint.load_params(source))
    opt_state = checkpoint.load_opt_state(source, optim.make_direction(ocfg).init(params))
    if opt_state is None:
      opt_state = optim.make_direction(ocfg).init(params)
    step0, ledger = int(saved["step"]), saved
    log(f"taskemb: resumed {source} at step {step0} ({saved['tokens_seen']:,} tokens seen)")
  else:
    mcfg = config_lib.get_config(cfg.model, **{k: v for k, v in (("grid_positions", cfg.grid_positions),
                                                                 ("rope_grid", cfg.rope_grid)) if v is not None})
    params = model.init_params(mcfg, len(pool), jax.random.key(cfg.seed))
    if not cfg.task_embedding:
      params["task"] = jnp.zeros_like(params["task"])  # the no-TTT vector (the mean) is then zero
    opt_state = optim.make_direction(ocfg).init(params)
    step0 = 0
    ledger = {"tokens_seen": 0, "hours": {}, "runs": []}
    log(f"taskemb: new {cfg.model} model, {model.num_params(params):,} parameters, pool of {len(pool)} tasks")
  from ttt_jax.model.store import config_to_json  # pylint: disable=g-import-not-at-top
  state = TrainState(params, opt_state, jnp.asarray(step0, jnp.int32), jnp.asarray(2 ** 30, jnp.int32))
  run_mcfg = mcfg
  if cfg.compute_dtype:
    run_mcfg = run_mcfg.replace(dtype=cfg.compute_dtype)
  if cfg.attention_impl:
    run_mcfg = run_mcfg.replace(attention_impl=cfg.attention_impl)
  step_fn = make_step(run_mcfg, ocfg, cfg.task_embedding)
  tokens_seen = int(ledger["tokens_seen"])
  hours = dict(ledger.get("hours", {}))  # wall hours per device
  cpu_hours = dict(ledger.get("cpu_hours", {}))
  cpu_saved = [time.process_time()]
  run_tokens, run_seconds_saved = 0, 0.0
  last_ckpt = clock()
  losses: list[float] = []
  pending: list[jax.Array] = []  # device losses not yet read

  def snapshot(status: str) -> dict:
    nonlocal run_seconds_saved
    losses.extend(float(x) for x in pending)
    pending.clear()
    now = clock()
    hours[_device(cfg)] = hours.get(_device(cfg), 0.0) + (now - t_start - run_seconds_saved) / 3600.0
    run_seconds_saved = now - t_start
    cpu_now = time.process_time()  # all threads' CPU time: not advanced while the job is paused
    cpu_hours["process"] = cpu_hours.get("process", 0.0) + (cpu_now - cpu_saved[0]) / 3600.0
    cpu_saved[0] = cpu_now
    s = int(state.step)
    out = {"step": s, "tokens_seen": tokens_seen, "hours": hours, "cpu_hours": cpu_hours, "status": status,
           "pool_digest": pool_digest(pool), "pool_size": len(pool), "pool_task_ids": list(pool.task_ids),
           "model_config": config_to_json(mcfg), "config": _jsonable(dataclasses.asdict(cfg)),
           "recent_loss": float(np.mean(losses[-50:])) if losses else ledger.get("recent_loss"),
           "runs": list(ledger.get("runs", [])) + [{"device": _device(cfg), "steps": s - step0,
                                                      "tokens": run_tokens,
                                                      "seconds": round(now - t_start, 1)}]}
    if ledger.get("notes"):  # hand-written provenance (e.g. a recount) stays with the lineage
      out["notes"] = list(ledger["notes"])
    checkpoint.save(ckpt_dir, state.trainable, state.opt_state, out)
    return out

  status = "running"
  with StopSignal() as stop:
    s = step0
    while True:
      if cfg.steps and s >= cfg.steps:
        status = "done"
        break
      if cfg.max_minutes and clock() - t_start >= 60.0 * cfg.max_minutes:
        status = "budget"
        break
      if stop.reason:
        status = "stopped"
        break
      batch = data.sample_batch(pool, cfg.seed, s, cfg.tokens_per_batch, cfg.buckets, cfg.input_loss)
      # no host read of this step's results here: with async dispatch the next batch is
      # sampled while the device runs this step
      state, m = step_fn(state, batch)
      s += 1
      n_tok = int(batch.mask.sum())
      tokens_seen += n_tok
      run_tokens += n_tok
      pending.append(m["loss"])
      if cfg.log_every and s % cfg.log_every == 0:
        losses.extend(float(x) for x in pending)
        pending.clear()
        el = clock() - t_start
        log(f"step {s} loss {np.mean(losses[-cfg.log_every:]):.4f} "
            f"acc {float(m['token_acc']):.3f} lr {float(m['lr']):.2e} tokens {tokens_seen:,} "
            f"({run_tokens / max(el, 1e-9):,.0f}/s)")
      if clock() - last_ckpt >= 60.0 * cfg.checkpoint_minutes:
        snapshot("running")
        last_ckpt = clock()
  final = snapshot(status)
  log(f"taskemb: {status} at step {final['step']}, {tokens_seen:,} tokens seen, checkpoint {ckpt_dir}")
  return final


def _jsonable(d: Any) -> Any:
  return json.loads(json.dumps(d, default=list))


def load_trained(directory: str) -> tuple[dict, config_lib.ModelConfig, dict]:
  """``(params, model config, state.json)`` of a checkpoint (for evaluation and TTT)."""
  st = checkpoint.load_state(directory)
  return (jax.tree.map(jnp.asarray, checkpoint.load_params(directory)),
          config_lib.ModelConfig(**st["model_config"]), st)


def pool_ids(state: dict) -> Sequence[str]:
  return state["pool_task_ids"]
