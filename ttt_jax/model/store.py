"""The project's own model directory: ``config.json`` + ``params.safetensors`` + ``meta.json``.

A trained model travels as one small, framework-neutral directory that loads
without orbax or torch: the config that rebuilds the architecture, the weights
(stored in bf16 by default, halving the size), and free-form metadata recording
how it was made (command, data mix, steps, tokens seen, loss curve, tokenizer).
The embedded default model (``ttt_jax/assets/default_model``) is one of these.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import jax
import ml_dtypes
import numpy as np
from safetensors.numpy import load_file, save_file

from ttt_jax.model import config as config_lib

DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "assets", "default_model")
_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def flatten(tree: dict, sep: str = "/", prefix: str = "") -> dict[str, Any]:
  """Nested dicts -> ``{"a/b/c": leaf}`` (the flat naming safetensors files need)."""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{sep}{k}" if prefix else str(k)
    out.update(flatten(v, sep, name) if isinstance(v, dict) else {name: v})
  return out


def unflatten(flat: dict[str, Any], sep: str = "/") -> dict:
  """Inverse of ``flatten``."""
  out: dict = {}
  for name, v in flat.items():
    node = out
    *parents, leaf = name.split(sep)
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def config_to_json(cfg: config_lib.ModelConfig) -> dict:
  d = dataclasses.asdict(cfg)
  if d.get("rope_scaling") is not None:
    d["rope_scaling"] = dict(d["rope_scaling"])
  return d


def save_model(directory: str, params: dict, cfg: config_lib.ModelConfig,
               meta: Optional[dict] = None, dtype: str = "bfloat16") -> str:
  """Writes the model directory (weights cast to ``dtype``); returns its path."""
  os.makedirs(directory, exist_ok=True)
  flat = {k: np.ascontiguousarray(np.asarray(jax.device_get(v)).astype(_DTYPES[dtype]))
          for k, v in flatten(params).items()}
  save_file(flat, os.path.join(directory, "params.safetensors"))
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config_to_json(cfg), f, indent=1)
  with open(os.path.join(directory, "meta.json"), "w") as f:
    json.dump({"stored_dtype": dtype, **(meta or {})}, f, indent=1)
  return directory


def load_model(directory: Optional[str] = None, dtype: str = "float32", **cfg_overrides
               ) -> tuple[dict, config_lib.ModelConfig, dict]:
  """``(params, cfg, meta)`` from a model directory (default: the embedded model)."""
  directory = directory or DEFAULT_MODEL_DIR
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{directory} is not a model directory (no config.json)")
  with open(path) as f:
    cfg = config_lib.ModelConfig(**{**json.load(f), **cfg_overrides})
  meta = {}
  if os.path.exists(os.path.join(directory, "meta.json")):
    with open(os.path.join(directory, "meta.json")) as f:
      meta = json.load(f)
  flat = load_file(os.path.join(directory, "params.safetensors"))
  params = unflatten({k: v.astype(_DTYPES[dtype]) for k, v in flat.items()})
  return params, cfg, meta
