"""Per-task test-time training: K tasks' LoRA adapters per compiled step, one frozen base.

``run_ttt`` builds every task's leave-one-out dataset, sorts tasks by padded length into groups
of K (K a multiple of the devices on the task axis; short groups are filled with empty tasks so
each bucket length compiles once), trains each group with the vmapped step (task axis sharded
over the mesh's data x fsdp axes, base sharded by the parameter rules), and saves each task's
adapter as ``<out_dir>/adapters/<task_id>.safetensors`` + ``.json``. Tasks whose JSON exists
are skipped, so a killed run restarts where it stopped. ``shared_adapter=True`` trains one
adapter on the union of all tasks' data (the paper's ablation) and saves it for every task.

A task trains on exactly the batches, initial adapter and schedule it would get alone
(per-task seeds, per-task ``total_steps``, zero-weight padding steps that change nothing), so
the grouping is an implementation detail: ``group_size=1`` gives the same adapters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import zlib
from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging

from ttt_jax.arc.task import Task
from ttt_jax.data import batching
from ttt_jax.model import lora as lora_lib
from ttt_jax.parallel import mesh as mesh_lib
from ttt_jax.parallel import sharding
from ttt_jax.train import checkpoint, steps
from ttt_jax.train.optim import OptimConfig

PyTree = Any
SHARED_ID = "__shared__"


@dataclasses.dataclass(frozen=True)
class TTTConfig:
  """Data and schedule of per-task training (paper defaults); the optimizer is separate."""
  batch_size: int = 2
  epochs: int = 2
  n_max: int = 250  # examples per task
  max_tokens: int = 8192
  loss_mode: str = "all_outputs"
  augment: bool = True
  group_size: int = 8  # tasks per compiled step (rounded up to a multiple of the task shards)
  min_bucket: int = 64
  seed: int = 0
  shared_adapter: bool = False
  log_every: int = 20
  data_mode: str = "ours"  # "reference": the paper code's TTT set (ttt_jax.data.loo)

  def replace(self, **kw: Any) -> "TTTConfig":
    return dataclasses.replace(self, **kw)


def lora_step(mcfg: Any, lcfg: Any, ocfg: OptimConfig) -> Any:
  """The jitted multi-task LoRA step of the model (``steps.jit_multitask_step``) that TTT,
  self-training and the pipeline's engine all train with."""
  from ttt_jax.model import transformer  # pylint: disable=g-import-not-at-top
  return steps.jit_multitask_step(
      functools.partial(transformer.forward_hidden, cfg=mcfg, lora_cfg=lcfg), ocfg)


def task_seed(task_id: str, seed: int) -> int:
  """A per-task integer seed, independent of grouping and order."""
  return int(np.random.default_rng([seed, zlib.crc32(task_id.encode())]).integers(2**31 - 1))


def build_datasets(tasks: Sequence[Task], tcfg: TTTConfig) -> dict[str, list]:
  from ttt_jax.data import loo  # pylint: disable=g-import-not-at-top
  return {t.task_id: loo.build_ttt_dataset(t, n_max=tcfg.n_max, max_tokens=tcfg.max_tokens,
                                           loss_mode=tcfg.loss_mode, augment=tcfg.augment,
                                           seed=tcfg.seed, mode=tcfg.data_mode) for t in tasks}


def init_adapter(mcfg: Any, lcfg: Any, task_id: str, seed: int) -> PyTree:
  from ttt_jax.model import lora  # pylint: disable=g-import-not-at-top
  return lora.init_lora(mcfg, lcfg, sharding.rng_key(task_seed(task_id, seed)))


@functools.partial(jax.jit, static_argnames=("ocfg",))
def _init_multitask_jit(adapters_K: PyTree, steps_K: jax.Array, *, ocfg: OptimConfig):
  return steps.init_multitask_state(adapters_K, ocfg, steps_K)


def _unstack(tree_K: PyTree, k: int) -> PyTree:
  return jax.tree.map(lambda x: np.asarray(x[k]), tree_K)


def train_group(params: PyTree, datasets: Sequence[Sequence[Any]], task_ids: Sequence[str], *,
                mcfg: Any, lcfg: Any, ocfg: OptimConfig, tcfg: TTTConfig,
                mesh: Optional[jax.sharding.Mesh] = None, num_tasks: Optional[int] = None,
                step_fn=None, params_shardings=None, initial: Optional[Sequence[PyTree]] = None
                ) -> tuple[list[PyTree], list[dict]]:
  """Trains one group of tasks together; returns each task's adapter (numpy) and stats.

  ``initial`` (one adapter per task id) continues training those adapters (self-training's
  M-step) instead of starting from fresh ones; the optimizer state starts fresh either way.
  """
  from ttt_jax.model import lora  # pylint: disable=g-import-not-at-top
  buckets = batching.default_buckets(tcfg.max_tokens, tcfg.min_bucket)
  k_total = num_tasks or len(task_ids)
  seeds = [task_seed(t, tcfg.seed) for t in task_ids]
  plan = batching.plan_task_group(datasets, batch_size=tcfg.batch_size, epochs=tcfg.epochs,
                                  seeds=seeds, buckets=buckets, num_tasks=k_total)
  ids = list(task_ids) + [f"__pad{i}__" for i in range(k_total - len(task_ids))]
  if initial is not None and len(initial) != len(task_ids):
    raise ValueError(f"{len(initial)} initial adapters for {len(task_ids)} tasks")
  # Given adapters (host or device: lora.stack places them) continue; fresh ones for the rest.
  starts = list(initial) if initial is not None else []
  starts += [init_adapter(mcfg, lcfg, t, tcfg.seed) for t in ids[len(starts):]]
  adapters = lora.stack(starts)
  # The adapters and step counts are arguments, not closure constants baked into the program.
  init = lambda adapters_K, steps_K: steps.init_multitask_state(adapters_K, ocfg, steps_K)
  init_args = sharding.to_device((adapters, np.asarray(plan.steps_K)))
  if step_fn is None:
    step_fn = lora_step(mcfg, lcfg, ocfg)
  if mesh is not None:
    state, _ = sharding.sharded_init(init, mesh, task_axis=True, args=init_args)
  else:  # compiled once per optimizer config: no host constants, no program per group
    state = _init_multitask_jit(*init_args, ocfg=ocfg)
  losses, t0 = [], time.perf_counter()
  for s in range(plan.num_steps):
    batch = plan.batch(s)  # host work overlaps the previous (asynchronously dispatched) step
    batch = sharding.global_batch(batch, mesh) if mesh is not None else sharding.to_device(batch)
    state, m = step_fn(state, params, batch)
    losses.append(m["loss"])
    if tcfg.log_every and (s + 1) % tcfg.log_every == 0:
      logging.info("  step %d/%d  mean loss %.4f", s + 1, plan.num_steps,
                   float(np.mean(jax.device_get(m["loss"])[:len(task_ids)])))
  loss_SxK = np.stack(jax.device_get(losses)) if losses else np.zeros((0, k_total))
  seconds = time.perf_counter() - t0
  out_adapters, stats = [], []
  trainable_K = jax.device_get(state.trainable)  # one fetch, then host slices
  for k, tid in enumerate(task_ids):
    n = int(plan.steps_K[k])
    out_adapters.append(_unstack(trainable_K, k))
    stats.append({"task_id": tid, "steps": n, "num_examples": len(datasets[k]),
                  "first_loss": float(loss_SxK[0, k]) if n else None,
                  "final_loss": float(loss_SxK[n - 1, k]) if n else None,
                  "seq_len": plan.length, "group_size": k_total, "group_seconds": seconds})
  return out_adapters, stats


def _known_lengths(adapter_dir: str, tasks: Sequence[Task], done: set[str]) -> dict[str, int]:
  """Longest-example lengths of finished tasks, from their saved metadata (0: no TTT data)."""
  out = {}
  for t in tasks:
    if t.task_id in done:
      _, json_path = checkpoint.adapter_paths(adapter_dir, t.task_id)
      with open(json_path) as f:
        meta = json.load(f)
      if meta.get("status") == "no_data":
        out[t.task_id] = 0
      elif "input_length" in meta:  # adapters saved before it was recorded are rebuilt
        out[t.task_id] = int(meta["input_length"])
  return out


def run_ttt(tasks: Sequence[Task], params: PyTree, *, mcfg: Any, lcfg: Any, ocfg: OptimConfig,
            tcfg: TTTConfig, out_dir: str, mesh: Optional[jax.sharding.Mesh] = None,
            overwrite: bool = False, task_parallel: bool = False, step_fn: Any = None) -> dict:
  """Trains (or skips, when already saved) every task's adapter; returns a summary dict.

  The groups are planned over *all* tasks, finished or not (finished ones report their length
  from their metadata), so a resumed run trains each remaining task in exactly the group it
  would have had in an uninterrupted run, and gets the same adapter.

  ``task_parallel``: this is one of several processes (``ttt_jax.parallel.multihost``); each
  builds the datasets of its share of the tasks, the lengths are exchanged, and each trains its
  share of the (global) groups on ``mesh``, which must then hold only its own devices (default:
  all local devices). Otherwise all processes run every group together on a global ``mesh``.
  ``step_fn``: the jitted step to use (``lora_step`` for these configs; the pipeline's engine
  passes the one it compiled), built here when None.
  """
  from ttt_jax.parallel import multihost  # pylint: disable=g-import-not-at-top
  adapter_dir = os.path.join(out_dir, "adapters")
  index, count = ((multihost.process_index(), multihost.process_count()) if task_parallel
                  else (0, 1))
  mesh = mesh or (multihost.local_mesh() if task_parallel else mesh_lib.make_mesh())
  shards = int(np.prod([mesh.shape[a] for a in mesh_lib.BATCH_AXES]))
  params = sharding.shard(params, sharding.tree_shardings(params, mesh))
  meta_common = {"model": getattr(mcfg, "name", ""), "lora": lora_lib.to_fields(lcfg),
                 "optim": dataclasses.asdict(ocfg), "ttt": dataclasses.asdict(tcfg)}
  summary = {"trained": [], "skipped_done": [], "no_data": []}

  done = set() if overwrite else {t.task_id for t in tasks
                                  if checkpoint.adapter_done(adapter_dir, t.task_id)}
  summary["skipped_done"] = [t.task_id for t in tasks if t.task_id in done]
  if len(done) == len(tasks):
    return summary
  lengths = _known_lengths(adapter_dir, tasks, done)
  unknown = [t for t in tasks if t.task_id not in lengths]
  datasets = build_datasets([unknown[i] for i in multihost.owned(len(unknown), index, count)],
                            tcfg)
  for tid, exs in datasets.items():
    if not exs and tid not in done:
      checkpoint.save_adapter(adapter_dir, tid, {}, {**meta_common, "task_id": tid,
                                                     "status": "no_data"})
      summary["no_data"].append(tid)
  mine = {tid: max((batching.input_length(e) for e in exs), default=0)
          for tid, exs in datasets.items()}
  lengths.update(multihost.merge_dicts(multihost.allgather_json("ttt_lengths", mine))
                 if task_parallel else mine)
  ready = [t.task_id for t in tasks if lengths[t.task_id] > 0]

  if tcfg.shared_adapter:
    group_ids, k_size = [ready], shards
  else:
    k_size = -(-max(tcfg.group_size, 1) // shards) * shards
    buckets = batching.default_buckets(tcfg.max_tokens, tcfg.min_bucket)
    groups = batching.group_by_length([lengths[t] for t in ready], k_size, buckets)
    group_ids = [[ready[i] for i in g] for g in groups]
  my_groups = [group_ids[g] for g in multihost.owned(len(group_ids), index, count)
               if any(t not in done for t in group_ids[g])]
  by_id = {t.task_id: t for t in tasks}
  datasets.update(build_datasets([by_id[t] for g in my_groups for t in g if t not in datasets],
                                 tcfg))

  step_fn = step_fn or lora_step(mcfg, lcfg, ocfg)
  t0 = time.perf_counter()
  for gi, ids in enumerate(my_groups):
    if tcfg.shared_adapter:  # one adapter on the union of every task's data
      train_ids, data = [SHARED_ID], [[e for tid in ids for e in datasets[tid]]]
    else:
      train_ids, data = ids, [datasets[t] for t in ids]
    adapters, stats = train_group(params, data, train_ids, mcfg=mcfg, lcfg=lcfg, ocfg=ocfg,
                                  tcfg=tcfg, mesh=mesh, num_tasks=k_size, step_fn=step_fn)
    save_ids = [t for t in ids if t not in done]  # a half-saved group is retrained whole
    for tid in save_ids:
      k = 0 if tcfg.shared_adapter else ids.index(tid)
      checkpoint.save_adapter(adapter_dir, tid, adapters[k],
                              {**meta_common, **stats[k], "task_id": tid, "status": "trained",
                               "shared": tcfg.shared_adapter, "input_length": lengths[tid]})
    summary["trained"].extend(save_ids)
    elapsed = time.perf_counter() - t0
    eta = elapsed / (gi + 1) * (len(my_groups) - gi - 1)
    logging.info("TTT group %d/%d: %d tasks, %d steps at length %d, final loss %s; "
                 "%.0fs elapsed, ETA %.0fs", gi + 1, len(my_groups), len(train_ids),
                 max(s["steps"] for s in stats), stats[0]["seq_len"],
                 " ".join(f"{s['final_loss']:.3f}" for s in stats), elapsed, eta)
  return summary


def run_ttt_from_config(cfg: Any) -> dict:
  """What ``experiments/ttt.py`` runs: loads tasks and base parameters, then ``run_ttt``."""
  from ttt_jax.arc import io as arc_io  # pylint: disable=g-import-not-at-top
  from ttt_jax.model import lora, overrides, transformer  # pylint: disable=g-import-not-at-top
  from ttt_jax.train.optim import ttt_optim_config  # pylint: disable=g-import-not-at-top
  loaded, mcfg = checkpoint.load_base_model(cfg.model_dir, cfg.model,
                                            overrides.set_overrides(cfg.get("model_overrides")))
  lcfg = lora.from_fields(cfg.lora)
  optim_kw = dict(cfg.optim)
  if optim_kw.get("learning_rate") is None:  # None: the paper's choice for the model
    optim_kw.pop("learning_rate", None)
  ocfg = ttt_optim_config(mcfg, **optim_kw)
  tcfg = TTTConfig(**dict(cfg.ttt))
  tasks, errors = arc_io.load_tasks(cfg.tasks)
  if errors:
    logging.warning("%d tasks of %s failed to load; first: %s", len(errors), cfg.tasks, errors[0])
  mesh = mesh_lib.make_mesh(**dict(cfg.mesh))
  if loaded is not None:
    params = loaded  # run_ttt places it by the sharding rules
  else:
    logging.warning("no --config.model_dir given: TTT starts from a randomly initialised %s",
                    mcfg.name)
    params, _ = sharding.sharded_init(lambda: transformer.init_params(mcfg, jax.random.key(0)),
                                      mesh)
  logging.info("TTT of %d tasks (%s) on %d devices, lr %.2e, rank %d, out %s", len(tasks),
               cfg.tasks, mesh.devices.size, ocfg.learning_rate, lcfg.rank, cfg.out_dir)
  summary = run_ttt(tasks, params, mcfg=mcfg, lcfg=lcfg, ocfg=ocfg, tcfg=tcfg, out_dir=cfg.out_dir,
                    mesh=mesh, overwrite=cfg.overwrite)
  logging.info("TTT done: %d trained, %d already done, %d without data", len(summary["trained"]),
               len(summary["skipped_done"]), len(summary["no_data"]))
  return summary
