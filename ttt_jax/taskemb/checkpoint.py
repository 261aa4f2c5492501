"""A training checkpoint that can be committed: flat safetensors files plus one JSON.

``params.safetensors`` (the model, float32), ``opt.safetensors`` (the optimizer state's leaves
in tree order, float32) and ``state.json`` (step, cumulative tokens and hours, the pool's task
ids, the config). Each file stays well under the 16 MiB the repository and the GPU window's
return limit allow for the CPU model; ``state.json`` is written last, so its presence means
the checkpoint is whole. Resuming restores the exact optimizer state and data position.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from ttt_jax.model import store

STATE_JSON = "state.json"


def _leaves_dict(tree: Any) -> dict[str, np.ndarray]:
  return {f"{i:05d}": np.ascontiguousarray(np.asarray(jax.device_get(x)))
          for i, x in enumerate(jax.tree.leaves(tree))}


def save(directory: str, params: dict, opt_state: Any, state: dict) -> str:
  """Writes a whole checkpoint into ``directory`` (replaced atomically via a sibling temp dir)."""
  tmp = directory.rstrip("/") + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  flat = {k: np.ascontiguousarray(np.asarray(jax.device_get(v), np.float32))
          for k, v in store.flatten(params).items()}
  save_file(flat, os.path.join(tmp, "params.safetensors"))
  if opt_state is not None:
    save_file(_leaves_dict(opt_state), os.path.join(tmp, "opt.safetensors"))
  with open(os.path.join(tmp, STATE_JSON), "w") as f:
    json.dump(state, f, indent=1)
  old = directory.rstrip("/") + ".old"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(directory):
    os.replace(directory, old)
  os.replace(tmp, directory)
  shutil.rmtree(old, ignore_errors=True)
  return directory


def exists(directory: Optional[str]) -> bool:
  return bool(directory) and os.path.exists(os.path.join(directory, STATE_JSON))


def load_state(directory: str) -> dict:
  path = os.path.join(directory, STATE_JSON)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{directory} is not a task-embedding checkpoint (no {STATE_JSON})")
  with open(path) as f:
    return json.load(f)


def load_params(directory: str) -> dict:
  return store.unflatten(dict(load_file(os.path.join(directory, "params.safetensors"))))


def load_opt_state(directory: str, like: Any) -> Optional[Any]:
  """The optimizer state in the structure of ``like`` (a fresh init); None if none was saved."""
  path = os.path.join(directory, "opt.safetensors")
  if not os.path.exists(path):
    return None
  flat = load_file(path)
  leaves, treedef = jax.tree.flatten(like)
  if len(flat) != len(leaves):
    raise ValueError(f"{path}: {len(flat)} optimizer leaves, the optimizer has {len(leaves)} "
                     "(was the optimizer configuration changed?)")
  got = [flat[f"{i:05d}"] for i in range(len(leaves))]
  for i, (a, b) in enumerate(zip(got, leaves)):
    if a.size != np.size(b) or (a.shape != np.shape(b) and np.ndim(b) > 0):
      raise ValueError(f"{path}: optimizer leaf {i} has shape {a.shape}, expected {np.shape(b)}")
  return jax.tree.unflatten(treedef, [np.asarray(a, np.asarray(b).dtype).reshape(np.shape(b))
                                      for a, b in zip(got, leaves)])
