"""Initial fine-tuning: full or LoRA, over an endless deterministic stream of training tasks.

``run_finetune(config)`` is what ``experiments/finetune.py`` calls. The loop:
abstract sharded init (``eval_shape`` then jit with ``out_shardings``), restore the latest
checkpoint (state + data position) if any, then per step: take the next examples from the task
stream, pad them to a bucket length, dispatch the jitted (donating) step, and only then read the
*previous* step's metrics, so the host never stalls the device. It stops on a NaN/inf loss
(without checkpointing the bad state), evaluates held-out loss periodically, logs JSON lines to
``out_dir/metrics.jsonl`` and exports the final parameters to ``out_dir/params``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
from absl import logging

from ttt_jax.arc.task import Task
from ttt_jax.data import batching
from ttt_jax.data import tokens as tokens_lib
from ttt_jax.parallel import mesh as mesh_lib
from ttt_jax.parallel import sharding
from ttt_jax.train import checkpoint, metrics as metrics_lib, steps, task_stream
from ttt_jax.train.optim import OptimConfig

PyTree = Any


def optim_config(cfg: Any) -> OptimConfig:
  """``OptimConfig`` from a config's ``optim`` block (any subset of the dataclass fields)."""
  return OptimConfig(**{k: v for k, v in dict(cfg).items()})


def model_setup(cfg: Any):
  """(model config, LoRA config or None, apply_fn, base params or None) from a config.

  ``cfg.init_params`` may name a project model directory, an HF checkpoint or an orbax tree
  (see ``checkpoint.load_base_model``); empty means the preset ``cfg.model``, randomly
  initialised by the caller.
  """
  from ttt_jax.model import lora, transformer  # pylint: disable=g-import-not-at-top
  base, mcfg = checkpoint.load_base_model(cfg.get("init_params", ""), cfg.model,
                                          dict(cfg.get("model_overrides", {}) or {}))
  lcfg = None
  if cfg.get("lora") and cfg.lora.get("enabled", False):
    lcfg = lora.LoraConfig(rank=cfg.lora.rank, alpha=cfg.lora.alpha, targets=tuple(cfg.lora.targets))
  apply_fn = functools.partial(transformer.forward, cfg=mcfg, lora_cfg=lcfg)
  return mcfg, lcfg, apply_fn, base


def _load_tasks(spec: str) -> list[Task]:
  from ttt_jax.arc import io as arc_io  # pylint: disable=g-import-not-at-top
  tasks, errors = arc_io.load_tasks(spec)
  if errors:
    logging.warning("%d tasks of %s failed to load; first: %s", len(errors), spec, errors[0])
  if not tasks:
    raise ValueError(f"no tasks loaded from {spec!r}")
  return list(tasks)


def training_history(metrics_path: str, max_points: int = 200) -> dict:
  """Tokens seen and a (downsampled) loss curve from ``metrics.jsonl``.

  A resumed run re-logs the steps after its last checkpoint; the last record of
  each step wins, so the history is that of the run as it finally happened.
  """
  by_step: dict[int, dict] = {}
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      for line in f:
        r = json.loads(line)
        if "loss" in r:
          by_step[int(r["step"])] = r
  steps_sorted = sorted(by_step)
  stride = max(1, -(-len(steps_sorted) // max_points))
  curve = [[s, round(by_step[s]["loss"], 5)] for s in steps_sorted[::stride]]
  if steps_sorted and curve[-1][0] != steps_sorted[-1]:
    curve.append([steps_sorted[-1], round(by_step[steps_sorted[-1]]["loss"], 5)])
  evals = [[s, round(by_step[s]["eval_loss"], 5)] for s in steps_sorted if "eval_loss" in by_step[s]]
  return {"tokens_seen": int(sum(r.get("tokens", 0) for r in by_step.values())),
          "loss_curve": curve, "eval_loss_curve": evals}


def _eval_batches(examples: Sequence[Any], batch_size: int, buckets: Sequence[int]) -> list:
  out = []
  for i in range(0, len(examples), batch_size):
    chunk = list(examples[i:i + batch_size])
    length = batching.bucket_length(max(batching.input_length(e) for e in chunk), buckets)
    out.append(batching.pad_examples(chunk, length, batch_size))
  return out


def run_finetune(cfg: Any, *, make_stream: Optional[Callable[[int], Iterator[Task]]] = None,
                 eval_examples: Optional[Sequence[Any]] = None,
                 to_example: Optional[Callable[[Task], Any]] = None,
                 init_params: Optional[PyTree] = None,
                 on_step: Optional[Callable[[int, dict], None]] = None) -> dict:
  """Trains for ``cfg.steps`` steps (resuming from ``cfg.out_dir`` if it has checkpoints).

  Args:
    cfg: ConfigDict as in ``experiments/configs/finetune.py``.
    make_stream: task stream factory ``start_position -> Iterator[Task]``; default the
      ``ttt_jax.arc.stream`` over ``cfg.data.sources`` (generated tasks and augmented ARC
      training tasks, weighted), sharded over processes.
    eval_examples: held-out examples; default episodes of ``cfg.data.eval_tasks``.
    to_example: task -> Example (or None to skip); default ``episode_for_task``.
    init_params: starting base parameters (default: ``cfg.init_params`` dir, else random init).
    on_step: called as ``on_step(step, record)`` after each logged step (tests use it to
      simulate a crash).
  Returns:
    the last logged record (step, loss, ...) plus ``status`` ("done" or "nan").
  """
  from ttt_jax.model import lora as lora_lib, store, transformer  # pylint: disable=g-import-not-at-top
  mcfg, lcfg, apply_fn, loaded = model_setup(cfg)
  if init_params is None:
    init_params = loaded
  ocfg = optim_config(cfg.optim)
  is_lora = lcfg is not None
  buckets = batching.default_buckets(cfg.max_tokens, cfg.get("min_bucket", 64))
  os.makedirs(cfg.out_dir, exist_ok=True)

  if to_example is None:
    to_example = functools.partial(task_stream.episode_for_task, max_tokens=cfg.max_tokens,
                                   loss_mode=cfg.data.loss_mode)
  if make_stream is None:
    make_stream = task_stream.source_stream(cfg.data.sources, cfg.seed,
                                            tuple(cfg.data.get("exclude_families", ())))
  if eval_examples is None and cfg.eval_every and cfg.data.get("eval_tasks"):
    held_out = _load_tasks(cfg.data.eval_tasks)[:cfg.data.num_eval_tasks]
    eval_examples = [e for e in map(to_example, held_out) if e is not None]
  eval_batches = _eval_batches(eval_examples, cfg.batch_size, buckets) if eval_examples else []

  mesh = mesh_lib.make_mesh(**dict(cfg.mesh))
  key_params, key_lora = jax.random.split(jax.random.key(cfg.seed))
  if init_params is not None:  # loaded weights: placed shard by shard, never baked into a jit
    base = sharding.shard(init_params, sharding.tree_shardings(init_params, mesh))
  else:
    base, _ = sharding.sharded_init(lambda: transformer.init_params(mcfg, key_params), mesh)

  if is_lora:
    frozen = base
    init_fn = lambda: steps.init_state(lora_lib.init_lora(mcfg, lcfg, key_lora), ocfg, cfg.steps)
    state, state_shardings = sharding.sharded_init(init_fn, mesh)
  else:
    frozen = None
    state, state_shardings = sharding.sharded_init(
        lambda p: steps.init_state(p, ocfg, cfg.steps), mesh, args=(base,))
    del base
  frozen_shardings = None if frozen is None else sharding.tree_shardings(frozen, mesh)

  ckpt = checkpoint.Checkpointer(os.path.join(cfg.out_dir, "checkpoints"),
                                 max_to_keep=cfg.keep_checkpoints,
                                 async_save=cfg.get("async_checkpoint", True))
  start_step, position = 0, 0
  latest = ckpt.latest_step()
  if latest is not None:
    state, data = ckpt.restore(latest, state)
    start_step, position = latest, int(data["position"])
    if data.get("seed", cfg.seed) != cfg.seed:
      raise ValueError(f"checkpoint in {cfg.out_dir} was made with seed {data['seed']}, "
                       f"config has {cfg.seed}")
    logging.info("resumed from step %d (stream position %d)", start_step, position)
    if int(state.total_steps) != cfg.steps:  # an extended (or shortened) run rescales its schedule
      logging.warning("schedule length changes from %d to %d steps", int(state.total_steps),
                      cfg.steps)
      state = state._replace(total_steps=jax.device_put(
          jax.numpy.asarray(cfg.steps, jax.numpy.int32), state.total_steps.sharding))

  train_step = jax.jit(steps.make_train_step(apply_fn, ocfg, lora=is_lora),
                       in_shardings=(state_shardings, frozen_shardings, None),
                       out_shardings=(state_shardings, None), donate_argnums=(0,))
  eval_step = steps.make_eval_step(apply_fn, lora=is_lora)

  n_params = transformer.count_params(frozen if is_lora else state.trainable)
  n_trainable = transformer.count_params(state.trainable)
  peak = cfg.get("peak_flops_per_device") or metrics_lib.peak_flops_per_device()
  meter = metrics_lib.Throughput(cfg.steps, start_step)
  log_path = os.path.join(cfg.out_dir, "metrics.jsonl")
  stream = make_stream(position)
  record: dict = {"step": start_step}
  status = "done"

  def evaluate(st) -> float:
    tot, w = 0.0, 0.0
    for b in eval_batches:
      s, n = eval_step(st.trainable, frozen, sharding.global_batch(b, mesh))
      tot, w = tot + float(s), w + float(n)
    return tot / max(w, 1.0)

  def flush(pending, eval_loss_of=None) -> bool:
    """Reads a dispatched step's metrics, logs them; False on a non-finite loss."""
    nonlocal record, status
    step, m, tokens, flops = pending
    meter.add(tokens, flops)
    loss = float(m["loss"])
    record = {"step": step, "loss": loss, "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]),
              "tokens": tokens}
    ok = math.isfinite(loss)
    if not ok:
      status = "nan"
      logging.error("non-finite loss %s at step %d: stopping (last checkpoint: step %s)",
                    loss, step, ckpt.latest_step())
    elif step % cfg.log_every == 0 or step == cfg.steps:
      record.update(meter.report(step, mesh.devices.size, peak))
      logging.info("step %d/%d loss %.4f lr %.2e %.0f tok/s%s ETA %.0fs", step, cfg.steps, loss,
                   record["lr"], record["tokens_per_s"],
                   f" MFU {record['mfu']:.1%}" if "mfu" in record else "", record.get("eta_s", 0))
    if ok and eval_loss_of is not None:
      record["eval_loss"] = evaluate(eval_loss_of)
      logging.info("step %d eval loss %.4f", step, record["eval_loss"])
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()
    if on_step is not None:
      on_step(step, record)
    return ok

  pending = None
  with open(log_path, "a") as log_file:
    for step in range(start_step + 1, cfg.steps + 1):
      examples, position = task_stream.take_examples(stream, position, cfg.batch_size, to_example)
      length = batching.bucket_length(max(batching.input_length(e) for e in examples), buckets)
      batch = batching.pad_examples(examples, length, cfg.batch_size)
      tokens = float(batch.mask.sum())
      flops = tokens * metrics_lib.train_flops_per_token(
          n_params, mcfg.n_layers, mcfg.q_dim, length, lora=is_lora, n_trainable=n_trainable)
      state, m = train_step(state, frozen, sharding.global_batch(batch, mesh))  # async dispatch
      # ... and only now read the previous step's metrics: the device is never left idle.
      if pending is not None and not flush(pending):
        break
      pending = (step, m, tokens, flops)
      save_now = step % cfg.checkpoint_every == 0 or step == cfg.steps
      eval_now = bool(eval_batches) and cfg.eval_every > 0 and step % cfg.eval_every == 0
      if save_now or eval_now:  # these read the state: finish this step first (never save NaN)
        ok = flush(pending, eval_loss_of=state if eval_now else None)
        pending = None
        if not ok:
          break
        if save_now:
          ckpt.save(step, state, {"position": position, "seed": cfg.seed})
  ckpt.wait()
  ckpt.close()
  if status == "done":
    final = state.trainable if not is_lora else lora_lib.merge(frozen, state.trainable, lcfg)
    checkpoint.save_params(os.path.join(cfg.out_dir, "params"), final)
    if jax.process_index() == 0:  # the portable model directory (what TTT and the pipeline load)
      store.save_model(os.path.join(cfg.out_dir, "model"), final, mcfg, meta={
          "made_by": "experiments/finetune.py", "command": " ".join(sys.argv),
          "steps": cfg.steps, "final_loss": record.get("loss"),
          "eval_loss": record.get("eval_loss"), "lora": is_lora, "sources": cfg.data.sources,
          "held_out_families": list(cfg.data.get("exclude_families", ())),
          "seed": cfg.seed, "batch_size": cfg.batch_size, "max_tokens": cfg.max_tokens,
          "tokenizer": tokens_lib.DESCRIPTION, **training_history(log_path)})
  record["status"] = status
  return record

