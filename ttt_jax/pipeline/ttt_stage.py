"""The TTT stage: one LoRA adapter per task under ``<out_dir>/adapters/``.

``ttt_jax.train.ttt.run_ttt`` saves each task's adapter (or a metadata file saying why it was
skipped) as soon as its group is trained, and skips tasks whose files exist, so a resumed run
trains only the rest. Adapters trained earlier (``adapters_dir``) are read the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Optional, Sequence

from ttt_jax.arc.task import Task


def ttt_configs(cfg: Any, mcfg: Any) -> tuple[Any, Any, Any]:
  """``(LoraConfig, OptimConfig, TTTConfig)`` that the TTT stage runs with for ``cfg``."""
  from ttt_jax.model import lora as lora_lib
  from ttt_jax.train import optim, ttt
  lcfg = lora_lib.from_fields(cfg.lora)
  overrides = {} if cfg.ttt.learning_rate is None else {"learning_rate": cfg.ttt.learning_rate}
  ocfg = optim.ttt_optim_config(mcfg, clip_norm=cfg.ttt.clip_norm, **overrides)
  tcfg = ttt.TTTConfig(batch_size=cfg.ttt.batch_size, epochs=cfg.ttt.epochs, n_max=cfg.ttt.n_max,
                       max_tokens=min(cfg.ttt.max_tokens, mcfg.max_seq_len),
                       loss_mode=cfg.ttt.loss_mode,
                       augment=cfg.ttt.augment, group_size=cfg.ttt.group_size,
                       min_bucket=cfg.ttt.min_bucket, seed=cfg.seed,
                       shared_adapter=cfg.ttt.shared_adapter,
                       data_mode=cfg.ttt.data_mode)
  return lcfg, ocfg, tcfg


class SavedAdapters(Mapping):
  """Task id -> saved adapter (``None`` without a trained one), read from disk on access.

  Only the small JSON metadata of every task is read up front, so a process holds just the
  adapters of the tasks it is decoding, not all of them.
  """

  def __init__(self, adapter_dir: str, tasks: Sequence[Task]):
    from ttt_jax.model import lora as lora_lib  # deferred: only needed with TTT
    from ttt_jax.train import checkpoint
    self.adapter_dir, self.lcfg, self._trained = adapter_dir, None, {}
    for t in tasks:
      meta = None
      if checkpoint.adapter_done(adapter_dir, t.task_id):
        with open(checkpoint.adapter_paths(adapter_dir, t.task_id)[1]) as f:
          meta = json.load(f)
      self._trained[t.task_id] = meta is not None and meta.get("status") == "trained"
      if self._trained[t.task_id] and self.lcfg is None:
        self.lcfg = lora_lib.from_fields(meta["lora"] if "lora" in meta else  # saved before 2026-12-05
                                         {k: meta[f"lora_{k}"] for k in lora_lib.SECTION_FIELDS})

  def __getitem__(self, task_id: str) -> Optional[Any]:
    from ttt_jax.train import checkpoint
    if not self._trained[task_id]:
      return None
    return checkpoint.load_adapter(self.adapter_dir, task_id)[0]

  def __iter__(self):
    return iter(self._trained)

  def __len__(self) -> int:
    return len(self._trained)

  def any_trained(self) -> bool:
    return any(self._trained.values())

  def untrained(self) -> list[str]:
    return [tid for tid, ok in self._trained.items() if not ok]


def train(cfg: Any, tasks: Sequence[Task], engine: Any
          ) -> tuple[Any, SavedAdapters, dict[str, str]]:
  """Trains (or reuses) every task's adapter on ``engine`` (``pipeline.engine``); returns
  (lora cfg, adapters, skip reasons)."""
  from ttt_jax.train import ttt
  lcfg, ocfg, tcfg = ttt_configs(cfg, engine.mcfg)
  ttt.run_ttt(tasks, engine.params, mcfg=engine.mcfg, lcfg=lcfg, ocfg=ocfg, tcfg=tcfg,
              out_dir=cfg.out_dir, mesh=engine.mesh, task_parallel=engine.task_parallel,
              step_fn=engine.train_step(lcfg, ocfg))
  if engine.task_parallel:  # every adapter is saved before anyone predicts with it
    from ttt_jax.parallel import multihost
    multihost.barrier("ttt")
  adapters = SavedAdapters(os.path.join(cfg.out_dir, "adapters"), tasks)
  notes = {tid: f"TTT skipped: no leave-one-out example fits {tcfg.max_tokens} tokens"
           for tid in adapters.untrained()}
  return lcfg, adapters, notes


def run(cfg: Any, tasks: Sequence[Task], engine: Any
        ) -> tuple[Any, Mapping[str, Any], dict[str, str]]:
  """The adapters prediction uses: trained now (``cfg.ttt.enabled``), read from
  ``cfg.adapters_dir`` (e.g. by ``experiments/ttt.py``), or none (the base model); returns
  (lora cfg or None, task id -> adapter or None, task id -> why it has none)."""
  if cfg.ttt.enabled:
    return train(cfg, tasks, engine)
  if cfg.get("adapters_dir"):
    adapters = SavedAdapters(cfg.adapters_dir, tasks)
    notes = {tid: "no adapter: predicted by the base model" for tid in adapters.untrained()}
    return adapters.lcfg, adapters, notes
  return None, {t.task_id: None for t in tasks}, {}
