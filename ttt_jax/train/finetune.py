"""Initial fine-tuning: full or LoRA, over an endless deterministic stream of training tasks.

``run_finetune(config)`` is what ``experiments/finetune.py`` calls. The loop:
abstract sharded init (``eval_shape`` then jit with ``out_shardings``), restore the latest
checkpoint (state + data position) if any, then per step: take the next examples from the task
stream, pad them to a bucket length, dispatch the jitted (donating) step, and only then read the
*previous* step's metrics, so the host never stalls the device. It stops on a NaN/inf loss
(without checkpointing the bad state), evaluates held-out loss periodically, logs JSON lines to
``out_dir/metrics.jsonl`` (and TensorBoard event files when tensorboardX is installed:
``ttt_jax.train.metrics_log``) and exports the final parameters to ``out_dir/params``.

Batches come from ``ttt_jax.train.feed``: in stream order or from length-sorted windows
(``cfg.batch_tokens``), made in this process or by worker processes (``cfg.data.feed_workers``).
A wall-time budget (``cfg.max_minutes``, counted over resumes) or SIGTERM stops the run cleanly
after the current step: checkpoint, then the usual export. The schedule stays planned for
``cfg.steps``; ``plan_steps`` picks the steps that fill a budget from a measured pace.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
from absl import logging

from ttt_jax.arc.task import Task
from ttt_jax.data import batching
from ttt_jax.data import tokens as tokens_lib
from ttt_jax.parallel import mesh as mesh_lib
from ttt_jax.parallel import sharding
from ttt_jax.train import checkpoint, feed, metrics as metrics_lib, metrics_log, steps, task_stream
from ttt_jax.train.optim import OptimConfig

PyTree = Any


def optim_config(cfg: Any) -> OptimConfig:
  """``OptimConfig`` from a config's ``optim`` block (any subset of the dataclass fields)."""
  return OptimConfig(**{k: v for k, v in dict(cfg).items()})


def model_setup(cfg: Any):
  """(model config, LoRA config or None, apply_fn, base params or None) from a config.

  ``cfg.model_dir`` may name a project model directory, an HF checkpoint or an orbax tree
  (see ``checkpoint.load_base_model``); empty means the preset ``cfg.model``, randomly
  initialised by the caller.
  """
  from ttt_jax.model import lora, transformer  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import overrides as overrides_lib  # pylint: disable=g-import-not-at-top
  init = cfg.get("model_dir", "")
  overrides = overrides_lib.set_overrides(cfg.get("model_overrides"))
  if init and os.path.exists(os.path.join(init, "config.json")):
    overrides = runtime_overrides(overrides, saved_config(init), init)
  name = overrides.pop("name", None)  # get_config takes the preset's name positionally
  base, mcfg = checkpoint.load_base_model(init, cfg.model, overrides)
  if name:
    mcfg = mcfg.replace(name=name)
  lcfg = None
  if cfg.get("lora") and cfg.lora.get("enabled", False):
    lcfg = lora.from_fields(cfg.lora)
  apply_fn = functools.partial(transformer.forward_hidden, cfg=mcfg, lora_cfg=lcfg)
  return mcfg, lcfg, apply_fn, base


# Fields the weights fix: a run continuing from a model directory keeps the directory's values.
ARCHITECTURE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                       "ffn_dim", "rope_theta", "rope_scaling", "norm_eps", "tie_embeddings",
                       "grid_positions", "name")


def saved_config(directory: str) -> dict:
  """ModelConfig fields of a project or HF model directory's ``config.json``."""
  from ttt_jax.model import config as model_config  # pylint: disable=g-import-not-at-top
  with open(os.path.join(directory, "config.json")) as f:
    raw = json.load(f)
  if os.path.exists(os.path.join(directory, "params.safetensors")):  # ttt_jax.model.store
    return raw
  return dataclasses.asdict(model_config.from_hf_config(raw))


def runtime_overrides(overrides: dict, saved: dict, where: str = "") -> dict:
  """``overrides`` without the architecture fields: continuing from saved weights, a preset's
  size (e.g. ``finetune.py:gpu``'s 384 x 6) must not fight the weights. Differing values are
  logged; dtype, remat, max_seq_len and the like still apply."""
  dropped = {k: v for k, v in overrides.items() if k in ARCHITECTURE_FIELDS and v != saved.get(k)}
  if dropped:
    logging.warning("model_dir %s fixes the architecture: ignoring model_overrides %s", where,
                    dropped)
  return {k: v for k, v in overrides.items() if k not in ARCHITECTURE_FIELDS}


def _load_tasks(spec: str) -> list[Task]:
  from ttt_jax.arc import io as arc_io  # pylint: disable=g-import-not-at-top
  tasks, errors = arc_io.load_tasks(spec)
  if errors:
    logging.warning("%d tasks of %s failed to load; first: %s", len(errors), spec, errors[0])
  if not tasks:
    raise ValueError(f"no tasks loaded from {spec!r}")
  return list(tasks)


def records_by_step(metrics_path: str) -> dict[int, dict]:
  """Step -> its logged record. A resumed run re-logs the steps after its last checkpoint; the
  last record of each step wins, so this is the run as it finally happened."""
  by_step: dict[int, dict] = {}
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      for line in f:
        r = json.loads(line)
        if "loss" in r:
          by_step[int(r["step"])] = r
  return by_step


def training_history(metrics_path: str, max_points: int = 200) -> dict:
  """Tokens seen and a (downsampled) loss curve from ``metrics.jsonl``."""
  by_step = records_by_step(metrics_path)
  steps_sorted = sorted(by_step)
  stride = max(1, -(-len(steps_sorted) // max_points))
  curve = [[s, round(by_step[s]["loss"], 5)] for s in steps_sorted[::stride]]
  if steps_sorted and curve[-1][0] != steps_sorted[-1]:
    curve.append([steps_sorted[-1], round(by_step[steps_sorted[-1]]["loss"], 5)])
  evals = [[s, round(by_step[s]["eval_loss"], 5)] for s in steps_sorted if "eval_loss" in by_step[s]]
  return {"tokens_seen": int(sum(r.get("tokens", 0) for r in by_step.values())),
          "loss_curve": curve, "eval_loss_curve": evals}


def plan_steps(metrics_path: str, max_minutes: float, *, overhead_s: float = 30.0
               ) -> Optional[int]:
  """Total steps that end a run near its ``max_minutes`` budget at the pace measured so far.

  The pace is the median time per step over the later half of the logged steps: start-up and
  most compiles fall in the first half, and a median ignores the one-off compile of a rare
  bucket that would dominate a short probe's mean. ``overhead_s`` is kept back for a restart
  (process start, restore, compiles the cache misses). None when under 8 steps carry a time.
  """
  by_step = records_by_step(metrics_path)
  timed = [(s, by_step[s]["elapsed_s"]) for s in sorted(by_step) if "elapsed_s" in by_step[s]]
  if len(timed) < 8:
    return None
  later = timed[len(timed) // 2:]
  pace = statistics.median((e1 - e0) / max(s1 - s0, 1)
                           for (s0, e0), (s1, e1) in zip(later, later[1:]))
  last_step, last_elapsed = timed[-1]
  left = 60.0 * max_minutes - last_elapsed - overhead_s
  return last_step + max(0, int(left / max(pace, 1e-9)))


def over_budget(elapsed_s: float, max_minutes: float) -> bool:
  """Whether a run with a ``max_minutes`` budget (0: none) has used it up."""
  return max_minutes > 0 and elapsed_s >= 60.0 * max_minutes


class StopSignal:
  """SIGTERM (a preemption notice, ``launch/gpu_train_eval.sh stop-train``) sets ``reason``; the
  loop then stops after its current step. Installed only in the main thread."""

  def __init__(self):
    self.reason: Optional[str] = None
    self._previous = None

  def __enter__(self) -> "StopSignal":
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame) -> None:
    del frame
    logging.warning("signal %d: stopping after this step (checkpoint, then export)", signum)
    self.reason = "stopped"

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def agreed_stop(reason: Optional[str], step: int, every: int) -> Optional[str]:
  """The stop decision every process takes. Clocks and signals differ between processes, so in
  a multi-process run it is taken only every ``every`` steps, from all processes' reasons (the
  first wins): no process is left waiting in a step that another has quit."""
  from ttt_jax.parallel import multihost  # pylint: disable=g-import-not-at-top
  if multihost.process_count() == 1:
    return reason
  if step % every:
    return None
  return next(filter(None, multihost.allgather_json(f"finetune_stop/{step}", reason)), None)


def feed_workers(n: int) -> int:
  """``cfg.data.feed_workers``: n worker processes, or for -1 all cores but two."""
  return n if n >= 0 else max(1, (os.cpu_count() or 1) - 2)


def example_stream(cfg: Any, position: int,
                   make_stream: Optional[Callable[[int], Iterator[Task]]] = None,
                   to_example: Optional[Callable[[Task], Any]] = None
                   ) -> tuple[Iterator[Any], Callable[[], None]]:
  """(examples from stream ``position`` on, a function that stops any worker processes).

  The default stream and episodes are made by ``feed.SourceExamples`` (the same sequence
  ``task_stream.source_stream`` + ``episode_for_task`` give), in worker processes when
  ``cfg.data.feed_workers`` asks; a caller's stream or example function runs in-process.
  """
  workers = feed_workers(int(cfg.data.get("feed_workers", 0)))
  if make_stream is None and to_example is None:
    source = feed.SourceExamples(cfg.data.sources, cfg.seed,
                                 tuple(cfg.data.get("exclude_families", ())), cfg.max_tokens,
                                 cfg.data.loss_mode, jax.process_index(), jax.process_count())
    if workers > 0:
      examples = feed.ParallelExamples(source, position, workers)
      return examples, examples.close
    return feed.serial_examples(source, position), lambda: None
  if workers > 0:
    logging.warning("feed_workers needs the default stream and episodes: feeding in-process")
  if to_example is None:
    to_example = functools.partial(task_stream.episode_for_task, max_tokens=cfg.max_tokens,
                                   loss_mode=cfg.data.loss_mode)
  if make_stream is None:
    make_stream = task_stream.source_stream(cfg.data.sources, cfg.seed,
                                            tuple(cfg.data.get("exclude_families", ())))
  return map(to_example, make_stream(position)), lambda: None


def export_model(cfg: Any, params: PyTree, mcfg: Any, record: dict, *, status: str,
                 lora: bool, elapsed_s: float) -> str:
  """Writes ``out_dir/model`` (``ttt_jax.model.store``): what TTT and the pipeline load.

  ``status`` is "done", "time_budget" or "stopped" for a finished run's model and "partial"
  for one exported at a checkpoint; ``steps`` is the steps trained, ``planned_steps`` the
  schedule's length.
  """
  from ttt_jax.model import store  # pylint: disable=g-import-not-at-top
  log_path = os.path.join(cfg.out_dir, "metrics.jsonl")
  return store.save_model(os.path.join(cfg.out_dir, "model"), params, mcfg, meta={
      "made_by": "experiments/finetune.py", "command": " ".join(sys.argv), "status": status,
      "steps": record.get("step"), "planned_steps": cfg.steps,
      "final_loss": record.get("loss"), "eval_loss": record.get("eval_loss"),
      "elapsed_s": round(elapsed_s, 1), "max_minutes": cfg.get("max_minutes", 0),
      "lora": lora, "sources": cfg.data.sources,
      "held_out_families": list(cfg.data.get("exclude_families", ())), "seed": cfg.seed,
      "batch_size": cfg.batch_size, "batch_tokens": cfg.get("batch_tokens", 0),
      "max_tokens": cfg.max_tokens, "tokenizer": tokens_lib.DESCRIPTION,
      **training_history(log_path)})


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
  """Trains for ``cfg.steps`` steps (resuming from ``cfg.out_dir`` if it has checkpoints), or
  until ``cfg.max_minutes`` of wall time (over all resumes) or a SIGTERM.

  Args:
    cfg: ConfigDict as in ``experiments/configs/finetune.py``.
    make_stream: task stream factory ``start_position -> Iterator[Task]``; default the
      ``ttt_jax.arc.stream`` over ``cfg.data.sources`` (generated tasks and augmented ARC
      training tasks, weighted), sharded over processes.
    eval_examples: held-out examples; default episodes of ``cfg.data.eval_tasks``.
    to_example: task -> Example (or None to skip); default ``episode_for_task``.
    init_params: starting base parameters (default: the ``cfg.model_dir`` model, else random init).
    on_step: called as ``on_step(step, record)`` after each logged step (tests use it to
      simulate a crash).
  Returns:
    the last logged record (step, loss, ...) plus ``status``: "done" (all steps), "time_budget"
    (``max_minutes`` used up), "stopped" (SIGTERM) or "nan"; all but "nan" exported the model.
  """
  from ttt_jax.model import lora as lora_lib, transformer  # pylint: disable=g-import-not-at-top
  t_start = time.monotonic()
  mcfg, lcfg, apply_fn, loaded = model_setup(cfg)
  if init_params is None:
    init_params = loaded
  ocfg = optim_config(cfg.optim)
  is_lora = lcfg is not None
  buckets = batching.default_buckets(cfg.max_tokens, cfg.get("min_bucket", 64))
  max_minutes = float(cfg.get("max_minutes", 0) or 0)
  os.makedirs(cfg.out_dir, exist_ok=True)

  if eval_examples is None and cfg.eval_every and cfg.data.get("eval_tasks"):
    held_out = _load_tasks(cfg.data.eval_tasks)[:cfg.data.num_eval_tasks]
    eval_to_example = to_example or functools.partial(
        task_stream.episode_for_task, max_tokens=cfg.max_tokens, loss_mode=cfg.data.loss_mode)
    eval_examples = [e for e in map(eval_to_example, held_out) if e is not None]
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
  start_step, feed_state, elapsed_before = 0, feed.FeedState(0), 0.0
  latest = ckpt.latest_step()
  if latest is not None:
    state, data = ckpt.restore(latest, state)
    start_step = latest
    feed_state = feed.FeedState(int(data["position"]), int(data.get("window_batch", 0)))
    elapsed_before = float(data.get("elapsed_s", 0.0))
    if data.get("seed", cfg.seed) != cfg.seed:
      raise ValueError(f"checkpoint in {cfg.out_dir} was made with seed {data['seed']}, "
                       f"config has {cfg.seed}")
    logging.info("resumed from step %d (stream position %d, window batch %d, %.0fs used)",
                 start_step, feed_state.position, feed_state.skip, elapsed_before)
    if int(state.total_steps) != cfg.steps:  # an extended (or shortened) run rescales its schedule
      logging.warning("schedule length changes from %d to %d steps", int(state.total_steps),
                      cfg.steps)
      state = state._replace(total_steps=jax.device_put(
          jax.numpy.asarray(cfg.steps, jax.numpy.int32), state.total_steps.sharding))
  elapsed = lambda: elapsed_before + time.monotonic() - t_start
  if max_minutes:
    logging.info("wall-time budget %.1f min, %.0fs used", max_minutes, elapsed())

  train_step = jax.jit(steps.make_train_step(apply_fn, ocfg, lora=is_lora),
                       in_shardings=(state_shardings, frozen_shardings, None),
                       out_shardings=(state_shardings, None), donate_argnums=(0,))
  eval_step = steps.make_eval_step(apply_fn, lora=is_lora)

  n_params = transformer.count_params(frozen if is_lora else state.trainable)
  n_trainable = transformer.count_params(state.trainable)
  peak = cfg.get("peak_flops_per_device") or metrics_lib.peak_flops_per_device()
  meter = metrics_lib.Throughput(cfg.steps, start_step)
  examples, close_feed = example_stream(cfg, feed_state.position, make_stream, to_example)
  batch_iter = feed.batches(examples, feed_state, batch_size=cfg.batch_size, buckets=buckets,
                            batch_tokens=int(cfg.get("batch_tokens", 0) or 0),
                            window=int(cfg.data.get("sort_window", 0) or 0), seed=cfg.seed)
  record: dict = {"step": start_step}
  status = "done"

  def merged(st) -> PyTree:
    return st.trainable if not is_lora else lora_lib.merge(frozen, st.trainable, lcfg)

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
              "tokens": tokens, "elapsed_s": round(elapsed(), 3)}
    ok = math.isfinite(loss)
    if not ok:
      status = "nan"
      logging.error("non-finite loss %s at step %d: stopping (last checkpoint: step %s)",
                    loss, step, ckpt.latest_step())
    elif step % cfg.log_every == 0 or step == cfg.steps:
      record.update(meter.report(step, mesh.devices.size, peak))
      logging.info("step %d/%d loss %.4f lr %.2e %.0f tok/s%s ETA %.0fs, %.0fs elapsed", step,
                   cfg.steps, loss, record["lr"], record["tokens_per_s"],
                   f" MFU {record['mfu']:.1%}" if "mfu" in record else "", record.get("eta_s", 0),
                   record["elapsed_s"])
    if ok and eval_loss_of is not None:
      record["eval_loss"] = evaluate(eval_loss_of)
      logging.info("step %d eval loss %.4f", step, record["eval_loss"])
    records.write(record)
    if on_step is not None:
      on_step(step, record)
    return ok

  pending = None
  # a resumed run whose budget earlier runs spent trains no further; any other takes a step
  stop_reason = "time_budget" if over_budget(elapsed_before, max_minutes) else None
  step = start_step
  try:
    tensorboard = bool(cfg.get("tensorboard", True)) and jax.process_index() == 0
    with metrics_log.MetricsLog(cfg.out_dir, start_step=start_step,
                                tensorboard=tensorboard) as records, StopSignal() as stop:
      while stop_reason is None and step < cfg.steps:
        step += 1
        fb = next(batch_iter)
        batch = fb.padded()
        tokens = float(batch.mask.sum())
        flops = tokens * metrics_lib.train_flops_per_token(
            n_params, mcfg.n_layers, mcfg.q_dim, fb.length, lora=is_lora, n_trainable=n_trainable)
        state, m = train_step(state, frozen, sharding.global_batch(batch, mesh))  # async dispatch
        # ... and only now read the previous step's metrics: the device is never left idle.
        if pending is not None and not flush(pending):
          break
        pending = (step, m, tokens, flops)
        stop_reason = agreed_stop(
            stop.reason or ("time_budget" if over_budget(elapsed(), max_minutes) else None),
            step, cfg.log_every)
        save_now = step % cfg.checkpoint_every == 0 or step == cfg.steps or stop_reason
        eval_now = bool(eval_batches) and cfg.eval_every > 0 and step % cfg.eval_every == 0
        if save_now or eval_now:  # these read the state: finish this step first (never save NaN)
          ok = flush(pending, eval_loss_of=state if eval_now else None)
          pending = None
          if not ok:
            break
          if save_now:
            ckpt.save(step, state, {"position": fb.state.position, "window_batch": fb.state.skip,
                                    "seed": cfg.seed, "elapsed_s": elapsed()})
            if (cfg.get("export_on_checkpoint") and step < cfg.steps and not stop_reason
                and jax.process_index() == 0):  # a usable model even if the machine goes
              export_model(cfg, merged(state), mcfg, record, status="partial", lora=is_lora,
                           elapsed_s=elapsed())
  finally:
    close_feed()
  ckpt.wait()
  ckpt.close()
  if status == "done":
    status = stop_reason or "done"
    if stop_reason:
      logging.warning("%s at step %d of %d after %.0fs", stop_reason, step, cfg.steps, elapsed())
    final = merged(state)
    checkpoint.save_params(os.path.join(cfg.out_dir, "params"), final)
    if jax.process_index() == 0:  # the portable model directory (what TTT and the pipeline load)
      export_model(cfg, final, mcfg, record, status=status, lora=is_lora, elapsed_s=elapsed())
  record["status"] = status
  return record
