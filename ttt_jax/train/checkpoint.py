"""Checkpoints: training state + data position (orbax), exported parameters, per-task adapters.

* ``Checkpointer`` wraps ``orbax.checkpoint.CheckpointManager``: each step directory holds the
  train state and a small JSON with the data-stream position, so a resumed run sees the same
  data as an uninterrupted one. Keeps the last N.
* ``save_params`` / ``load_params``: a plain parameter tree in orbax format (fine-tuning's
  ``out_dir/params``); ``load_base_model`` reads that, a project model directory
  (``ttt_jax.model.store``) or an HF Llama checkpoint.
* ``save_adapter`` / ``load_adapter``: one task's LoRA adapter as ``<task_id>.safetensors`` plus
  ``<task_id>.json`` (written last, so its presence means "done"; reruns skip such tasks).
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from ttt_jax import atomic_json
from ttt_jax.model import store

PyTree = Any


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Last-N checkpoints of (state, data position) under ``directory``."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                        enable_async_checkpointing=async_save)
    self._mgr = ocp.CheckpointManager(self.directory, options=opts)

  def latest_step(self) -> Optional[int]:
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mgr.all_steps())

  def save(self, step: int, state: PyTree, data: dict) -> None:
    """Saves ``state`` and the JSON-able ``data`` (stream position, seeds) under ``step``."""
    self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data=ocp.args.JsonSave(data)), force=True)

  def restore(self, step: int, target: PyTree) -> tuple[PyTree, dict]:
    """Restores into the structure, dtypes and shardings of ``target`` (arrays or abstract)."""
    out = self._mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(target)), data=ocp.args.JsonRestore()))
    return out["state"], dict(out["data"])

  def wait(self) -> None:
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.close()


def save_params(directory: str, params: PyTree) -> None:
  """Writes a parameter tree (e.g. fine-tuned weights for TTT) to ``directory``."""
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.abspath(directory), params, force=True)


def load_params(directory: str, target: Optional[PyTree] = None) -> PyTree:
  """Reads ``save_params`` output; ``target`` (arrays or ShapeDtypeStructs with shardings)
  fixes dtypes and placement."""
  with ocp.StandardCheckpointer() as ckpt:
    if target is None:
      return ckpt.restore(os.path.abspath(directory))
    return ckpt.restore(os.path.abspath(directory), _abstract(target))


def _safe_id(task_id: str) -> str:
  if not task_id or any(c in task_id for c in "/\\\0") or task_id.startswith("."):
    raise ValueError(f"task id {task_id!r} cannot be used as a file name")
  return task_id


def adapter_paths(directory: str, task_id: str) -> tuple[str, str]:
  base = os.path.join(directory, _safe_id(task_id))
  return base + ".safetensors", base + ".json"


def adapter_done(directory: str, task_id: str) -> bool:
  return os.path.exists(adapter_paths(directory, task_id)[1])


def save_adapter(directory: str, task_id: str, adapter: PyTree, meta: dict) -> None:
  """Saves one task's adapter (float32 safetensors, "/"-joined names as in ``model.store``) and
  its JSON metadata."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  st_path, json_path = adapter_paths(directory, task_id)
  flat = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in store.flatten(adapter).items()}
  tmp = st_path + ".tmp"
  save_file(flat, tmp)
  os.replace(tmp, st_path)
  atomic_json.write_json(json_path, meta, indent=1, sort_keys=True)


def load_adapter(directory: str, task_id: str) -> tuple[dict, dict]:
  """Returns ``(adapter, meta)``; the adapter is a nested dict of float32 numpy arrays."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  st_path, json_path = adapter_paths(directory, task_id)
  if not os.path.exists(json_path):
    raise FileNotFoundError(f"no finished adapter for task {task_id!r} in {directory}")
  with open(json_path) as f:
    meta = json.load(f)
  return store.unflatten(load_file(st_path)), meta


def load_base_model(path: str, model: str, overrides: Optional[dict] = None
                    ) -> tuple[Optional[PyTree], Any]:
  """``(params, model config)`` from ``path``, whatever it holds.

  * ``""``: no parameters (``None``) and the preset ``model`` (callers initialise randomly);
  * a project model directory (``config.json`` + ``params.safetensors``): its own config;
  * an HF Llama directory (``config.json`` + HF safetensors): converted by ``model.hf``;
  * anything else: an orbax tree written by ``save_params``, with the preset ``model``.
  ``overrides`` (e.g. ``dtype``, ``remat``) apply to the config in every case.
  """
  from ttt_jax.model import config as model_config  # pylint: disable=g-import-not-at-top
  overrides = dict(overrides or {})
  if not path:
    return None, model_config.get_config(model, **overrides)
  if not os.path.exists(path):
    raise FileNotFoundError(f"base model {path!r} does not exist")
  if os.path.exists(os.path.join(path, "params.safetensors")):
    # store.load_model's ``dtype`` is the parameter dtype; ours is the config's activation dtype.
    act = {k: overrides.pop(k) for k in ("dtype",) if k in overrides}
    params, mcfg, _ = store.load_model(path, dtype=overrides.get("param_dtype", "float32"),
                                       **overrides)
    return params, mcfg.replace(**act)
  if os.path.exists(os.path.join(path, "config.json")):
    from ttt_jax.model import hf  # pylint: disable=g-import-not-at-top
    mcfg = hf.load_config(path, **overrides)
    return hf.load_params_numpy(path, mcfg, mcfg.param_dtype), mcfg
  mcfg = model_config.get_config(model, **overrides)
  return load_params(path), mcfg
