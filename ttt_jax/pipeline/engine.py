"""The engine every pipeline stage runs on, built once per process.

It owns what must not be rebuilt per stage, group or round: the frozen base on this process's
devices (placed once, sharded by the parameter rules), the mesh, the model config, and one
jitted training step per (LoRA, optimizer) configuration. Its ``decode``, ``search`` and
``score`` run the module-level jitted functions of ``ttt_jax.infer`` on that resident base, so
no stage passes host weights into a compiled call, and with ``pad_tasks`` every call's task
axis has the stage's group size (one program per stage). The stages keep only their resume,
file and barrier logic.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Engine:
  params: Any  # the frozen base, device-resident
  mcfg: Any  # ttt_jax.model.config.ModelConfig
  mesh: Any = None  # jax.sharding.Mesh the base is sharded over (TTT's task axis too)
  task_parallel: bool = False  # one of several processes, each on its own devices
  _steps: dict = dataclasses.field(default_factory=dict, repr=False)

  def train_step(self, lcfg: Any, ocfg: Any) -> Any:
    """The jitted multi-task LoRA step for these configs, compiled once per process (TTT and
    every self-training round share it when their optimizer configs agree)."""
    key = (lcfg, ocfg)
    if key not in self._steps:
      from ttt_jax.train import ttt
      self._steps[key] = ttt.lora_step(self.mcfg, lcfg, ocfg)
    return self._steps[key]

  def decode(self, adapters: Sequence[Any], views_per_task: Sequence[Sequence[Any]], *,
             lcfg: Any, **kw: Any) -> list[list[Any]]:
    """``ttt_jax.infer.predict.decode_views`` on the resident base."""
    from ttt_jax.infer import predict
    return predict.decode_views(self.params, adapters, views_per_task, cfg=self.mcfg,
                                lora_cfg=lcfg, **kw)

  def search(self, adapter: Any, prompt_T: np.ndarray, *, lcfg: Any, **kw: Any
             ) -> list[tuple[np.ndarray, float]]:
    """``ttt_jax.infer.dfs.dfs_sample`` on the resident base."""
    from ttt_jax.infer import dfs
    return dfs.dfs_sample(self.params, adapter, prompt_T, cfg=self.mcfg,
                          lora_cfg=lcfg if adapter is not None else None, **kw)

  def score(self, adapters: Sequence[Any], views_per_task: Sequence[Sequence[Any]],
            candidates_per_task: Sequence[Sequence[Any]], *, lcfg: Any, **kw: Any
            ) -> list[np.ndarray]:
    """``ttt_jax.infer.scoring.poe_scores_many`` on the resident base."""
    from ttt_jax.infer import scoring
    return scoring.poe_scores_many(self.params, adapters, views_per_task, candidates_per_task,
                                   cfg=self.mcfg, lora_cfg=lcfg, **kw)


def build(params: Any, mcfg: Any, task_parallel: bool = False,
          mesh: Optional[Any] = None) -> Engine:
  """The engine for a loaded base: placed on the devices once (``mesh``, default this process's
  devices when ``task_parallel``, else all of them), sharded by the parameter rules. At 1B in
  bf16 a host base would cost 2.5 GB of transfer per decode call, DFS node or scoring pass."""
  from ttt_jax.parallel import mesh as mesh_lib, multihost, sharding
  if mesh is None:
    mesh = multihost.local_mesh() if task_parallel else mesh_lib.make_mesh()
  placed = sharding.shard(params, sharding.tree_shardings(params, mesh))
  return Engine(params=placed, mcfg=mcfg, mesh=mesh, task_parallel=task_parallel)
