"""Device mesh with (data, fsdp, model) axes, and multi-host start-up.

``data`` splits the batch (or, for many-task TTT, the task axis) with parameters replicated;
``fsdp`` splits the batch too but also shards parameters and optimizer state (gathered per
layer by XLA); ``model`` splits matrices along their hidden dimensions (tensor parallelism).
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")  # axes the batch (and the task axis) is split over


def make_mesh(data: int = -1, fsdp: int = 1, model: int = 1,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A mesh over ``devices`` (default: all); one axis may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, model]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} model={model}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into fixed mesh axes of size {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh data={sizes[0]} fsdp={sizes[1]} model={sizes[2]} needs "
                     f"{int(np.prod(sizes))} devices, have {len(devices)}")
  try:  # topology-aware placement on TPU/GPU; plain reshape elsewhere
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(sizes, devices=devices)
  except Exception:  # pylint: disable=broad-except
    grid = np.asarray(devices, dtype=object).reshape(sizes)
  return Mesh(grid, AXES)


def initialize_multihost(coordinator_address: Optional[str] = None,
                         num_processes: Optional[int] = None,
                         process_id: Optional[int] = None) -> bool:
  """Calls ``jax.distributed.initialize`` when running as one of several processes.

  On TPU pods, SLURM and other clusters JAX discovers everything itself (on a TPU VM pod,
  which sets no variable of its own, ``launch/tpu_pod.py`` sets ``TTT_JAX_MULTIHOST=1`` to ask
  for that discovery); elsewhere pass the coordinator or set ``JAX_COORDINATOR_ADDRESS``,
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
  Must run before any other JAX call. Returns whether distributed mode was started; a single
  process (no cluster, no settings) is left alone.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and "JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["JAX_PROCESS_ID"])
  on_cluster = (os.environ.get("TTT_JAX_MULTIHOST") == "1" or
                any(k in os.environ for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
                                              "MEGASCALE_COORDINATOR_ADDRESS")))
  if coordinator_address is None and not on_cluster:
    return False
  if on_cluster and os.environ.get("SLURM_NTASKS") == "1" and coordinator_address is None:
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True
