"""Sharding declared as data: regex rules on parameter paths -> PartitionSpec.

A rule's spec names the *trailing* dimensions of a leaf, so the same rule covers a plain
``[D, F]`` kernel and the model's scanned ``[L, D, F]`` one (leading axes are replicated), and
a stacked ``[K, ...]`` adapter. A mesh axis that does not divide its dimension is dropped for that
leaf (replicated instead), so tiny test models shard without special cases.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ttt_jax.parallel.mesh import BATCH_AXES

Rules = Sequence[tuple[str, P]]

# Paths are "/"-joined dict keys, e.g. "layers/attn/q/kernel", "layers/mlp/down/kernel".
PARAM_RULES: Rules = (
    (r"(^|/)embed$", P("model", "fsdp")),  # [V, D]
    (r"(^|/)lm_head$", P("fsdp", "model")),  # [D, V]
    (r"(^|/)(q|k|v|gate|up)/kernel$", P("fsdp", "model")),  # [D, out]
    (r"(^|/)(o|down)/kernel$", P("model", "fsdp")),  # [in, D]
    (r".*", P()),  # norms' scales, LoRA factors (small): replicated
)


def path_str(path: Sequence[Any]) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _fit(spec: P, shape: Sequence[int], mesh: Mesh, lead: P = P()) -> P:
  """``lead`` on the leading dims, ``spec`` right-aligned on the rest; a mesh axis that does
  not divide its dimension, or is already used by an earlier dimension, is dropped."""
  n = len(shape)
  lead_e = list(lead)[:n]
  rest = n - len(lead_e)
  spec_e = list(spec)[max(0, len(spec) - rest):] if rest else []
  entries = lead_e + [None] * (rest - len(spec_e)) + spec_e
  out, used = [], set()
  for dim, e in zip(shape, entries):
    axes = () if e is None else (e if isinstance(e, tuple) else (e,))
    axes = tuple(a for a in axes if a not in used)
    size = 1
    for a in axes:
      size *= mesh.shape[a]
    if axes and dim % size == 0:
      used.update(axes)
      out.append(axes if len(axes) > 1 else axes[0])
    else:
      out.append(None)
  return P(*out)


def spec_for(path: str, shape: Sequence[int], mesh: Mesh, rules: Rules = PARAM_RULES,
             lead: P = P()) -> P:
  for pattern, spec in rules:
    if re.search(pattern, path):
      return _fit(spec, shape, mesh, lead)
  return _fit(P(), shape, mesh, lead)


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules = PARAM_RULES, *,
                   task_axis: bool = False) -> Any:
  """NamedShardings for every leaf (arrays or ShapeDtypeStructs) of ``tree``.

  ``task_axis``: leaves carry a leading K (task) axis, split over the batch axes of the mesh.
  """
  lead = P(BATCH_AXES) if task_axis else P()

  def one(path, leaf):
    return NamedSharding(mesh, spec_for(path_str(path), leaf.shape, mesh, rules, lead))

  return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, batch: Any) -> Any:
  """Batch arrays split along their first axis (batch, or tasks for ``[K, B, T]``)."""
  return jax.tree.map(lambda x: NamedSharding(mesh, _fit(P(), x.shape, mesh, P(BATCH_AXES))),
                      batch)


def global_batch(batch: Any, mesh: Mesh) -> Any:
  """Places a host batch, identical on every process, as global arrays split by
  ``batch_sharding``: each process only transfers the shards its own devices hold, so the
  same code runs on one host and on a multi-host pod."""
  shardings = batch_sharding(mesh, batch)

  def place(x, s):  # explicit per-device puts (allowed under a host-to-device transfer guard)
    x = np.asarray(x)
    shards = [jax.device_put(x[idx], d) for d, idx in s.addressable_devices_indices_map(x.shape).items()]
    return jax.make_array_from_single_device_arrays(x.shape, s, shards)

  return jax.tree.map(place, batch, shardings)


def replicated(mesh: Mesh, tree: Any) -> Any:
  return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules = PARAM_RULES, *,
                 task_axis: bool = False, args: Sequence[Any] = ()) -> tuple[Any, Any]:
  """Builds ``init_fn(*args)`` directly in its sharded layout: shapes by ``eval_shape``, then
  one jit with ``out_shardings``, so no device ever holds the whole unsharded tree.

  Pass existing arrays (e.g. loaded parameters) through ``args``, not a closure, so they are
  not baked into the program as constants. Returns ``(tree, shardings)``.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = tree_shardings(abstract, mesh, rules, task_axis=task_axis)
  return jax.jit(init_fn, out_shardings=shardings)(*args), shardings


def to_device(tree: Any) -> Any:
  """Host data (numpy arrays, Python scalars) placed on the default device, explicitly.

  The stages make every host-to-device transfer this way, so they run under
  ``jax.transfer_guard("disallow")`` (``cfg.transfer_guard``, tested): an implicit copy, such as
  a host base passed to a jitted call, then fails instead of silently costing gigabytes per call.
  Arrays already on a device pass through untouched.
  """
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x), tree)


def rng_key(seed: int) -> jax.Array:
  """``jax.random.key(seed)`` (the same key) from an explicitly placed seed (see ``to_device``)."""
  return jax.random.key(jax.device_put(np.uint32(seed)))


def shard(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.device_put(x, s), tree, shardings)
