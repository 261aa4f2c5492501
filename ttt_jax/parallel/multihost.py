"""Task-parallel multi-process runs: who does what, barriers and small host-side exchanges.

In a task-parallel run (``pipeline.run_pipeline`` on a pod or cluster) no collective crosses
processes inside training or decoding: every process computes the same global work plan (deterministic
groups of tasks), takes its share of the groups (``owned``), runs them on a mesh of its own
devices (``local_mesh``) and writes per-task files into an ``out_dir`` that all processes
see; processes meet at ``barrier``s, and process 0 merges. Because a group's computation is
the same whichever process runs it, the outputs do not depend on the number of processes.

Barriers and exchanges are tiny all-gathers over every process's devices, through JAX's public
``jax.experimental.multihost_utils`` (``sync_global_devices``, ``process_allgather``); on CPU
they run over gloo (JAX's default CPU collectives). A barrier also checks that every process
reached the same barrier (same name and count). JAX's public API has no timeout for them: a
process waits for the slowest one as long as the backend lets a collective wait (on CPU
``--xla_cpu_collective_timeout_seconds`` in ``XLA_FLAGS``, 30 minutes by default; NCCL on GPU
waits indefinitely once connected). With one process every function here is a no-op or an
identity.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from ttt_jax.parallel import mesh as mesh_lib

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


def _key(name: str) -> str:
  # Every process calls barriers/exchanges in the same order, so the counter agrees across
  # processes and a name may be reused (e.g. once per rerun in one interpreter).
  return f"ttt_jax/{next(_counter)}/{name}"


def barrier(name: str) -> None:
  """Blocks until every process reaches the barrier ``name`` (an error if another process
  reached a different barrier, or a different number of them)."""
  if process_count() == 1:
    return
  multihost_utils.sync_global_devices(_key(name))


def allgather_json(name: str, value: Any) -> list[Any]:
  """Every process's JSON-able ``value``, indexed by process (small values: plans, lengths).

  The JSON bytes are gathered as uint8 rows padded to the longest process's length (an
  all-gather needs one shape everywhere), after gathering the lengths.
  """
  if process_count() == 1:
    return [json.loads(json.dumps(value))]
  multihost_utils.sync_global_devices(_key(name))
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
  sizes = sizes.reshape(-1)
  buf = np.zeros(int(sizes.max()), np.uint8)
  buf[:data.size] = data
  rows = np.asarray(multihost_utils.process_allgather(buf))
  return [json.loads(bytes(rows[i, :int(sizes[i])]).decode()) for i in range(process_count())]


def merge_dicts(parts: Sequence[dict]) -> dict:
  """One dict from per-process dicts; a key two processes disagree on is an error."""
  out: dict = {}
  for i, part in enumerate(parts):
    for k, v in part.items():
      if k in out and out[k] != v:
        raise ValueError(f"process {i} reports {k!r} = {v!r}, another reported {out[k]!r}")
      out[k] = v
  return out
