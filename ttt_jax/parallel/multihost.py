"""Task-parallel multi-process runs: who does what, barriers and small host-side exchanges.

In a task-parallel run (``pipeline.run_pipeline`` on a pod or cluster) no device collective
ever crosses processes: every process computes the same global work plan (deterministic
groups of tasks), takes its share of the groups (``owned``), runs them on a mesh of its own
devices (``local_mesh``) and writes per-task files into an ``out_dir`` that all processes
see; processes meet at ``barrier``s, and process 0 merges. Because a group's computation is
the same whichever process runs it, the outputs do not depend on the number of processes.

Barriers and exchanges go through JAX's coordination service (the gRPC key-value store that
``jax.distributed.initialize`` starts, the one orbax uses for its barriers), not through XLA
collectives: they work the same on CPU, GPU and TPU, take timeouts, and need no devices.
With one process every function here is a no-op or an identity.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from ttt_jax.parallel import mesh as mesh_lib

# Slow processes (a long TTT group) are waited for this long before a barrier fails.
DEFAULT_TIMEOUT_S = float(os.environ.get("TTT_JAX_BARRIER_TIMEOUT_S", 24 * 3600))
_counter = itertools.count()


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def owned(num_items: int, index: Optional[int] = None, count: Optional[int] = None) -> list[int]:
  """The item indices process ``index`` of ``count`` works on: round-robin, so each process
  gets a mix of short and long groups when items are sorted by length."""
  index = process_index() if index is None else index
  count = process_count() if count is None else count
  if not 0 <= index < count:
    raise ValueError(f"process index {index} is not in [0, {count})")
  return list(range(index, num_items, count))


def local_mesh(data: int = -1, fsdp: int = 1, model: int = 1) -> Mesh:
  """A (data, fsdp, model) mesh over this process's own devices only."""
  return mesh_lib.make_mesh(data, fsdp, model, devices=jax.local_devices())


def _client() -> Optional[Any]:
  """The coordination-service client; None when JAX runs several processes without
  ``jax.distributed`` (then device collectives carry barriers and exchanges)."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def _key(name: str) -> str:
  # Every process calls barriers/exchanges in the same order, so the counter agrees across
  # processes and a name may be reused (e.g. once per rerun in one interpreter).
  return f"ttt_jax/{next(_counter)}/{name}"


def barrier(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
  """Blocks until every process reaches the barrier ``name``."""
  if process_count() == 1:
    return
  client, key = _client(), _key(name)
  if client is None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(key)
  else:
    client.wait_at_barrier(key, int(timeout_s * 1000))


def allgather_json(name: str, value: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Any]:
  """Every process's JSON-able ``value``, indexed by process (small values: plans, lengths)."""
  if process_count() == 1:
    return [json.loads(json.dumps(value))]
  client, key = _client(), _key(name)
  if client is None:
    return _allgather_json_on_devices(value)
  client.key_value_set(f"{key}/{process_index()}", json.dumps(value))
  return [json.loads(client.blocking_key_value_get(f"{key}/{i}", int(timeout_s * 1000)))
          for i in range(process_count())]


def _allgather_json_on_devices(value: Any) -> list[Any]:
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
  buf = np.zeros(int(sizes.max()), np.uint8)
  buf[:data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(buf))
  return [json.loads(bytes(rows[i, :int(sizes.reshape(-1)[i])]).decode())
          for i in range(process_count())]


def merge_dicts(parts: Sequence[dict]) -> dict:
  """One dict from per-process dicts; a key two processes disagree on is an error."""
  out: dict = {}
  for i, part in enumerate(parts):
    for k, v in part.items():
      if k in out and out[k] != v:
        raise ValueError(f"process {i} reports {k!r} = {v!r}, another reported {out[k]!r}")
      out[k] = v
  return out
