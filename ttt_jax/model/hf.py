"""HF Llama checkpoints in, PEFT LoRA adapters out; no torch needed.

Weights are mapped by a declarative table, ``LLAMA_RULES``: a regex over HF
tensor names (named group ``layer`` selects the slot on the stacked ``L`` axis;
other named groups fill ``{}`` fields of the path) -> parameter path, and
whether to transpose (torch ``Linear`` stores out x in; our kernels are in x
out). Our kernel layout was chosen to equal HF's up to that transpose, so no
rule needs a reshape. Every loaded tensor is checked against the shapes
``init_params`` would create, and every parameter must be filled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from ttt_jax.model import config as config_lib
from ttt_jax.model import lora as lora_lib
from ttt_jax.model import transformer


@dataclasses.dataclass(frozen=True)
class Rule:
  pattern: str  # full-match regex over the HF tensor name
  path: tuple[str, ...]  # parameter path; "{name}" fields come from the regex's named groups
  transpose: bool = False


LLAMA_RULES: tuple[Rule, ...] = (
    Rule(r"model\.embed_tokens\.weight", ("embed",)),
    Rule(r"model\.norm\.weight", ("final_norm", "scale")),
    Rule(r"lm_head\.weight", ("lm_head",), transpose=True),
    Rule(r"model\.layers\.(?P<layer>\d+)\.input_layernorm\.weight", ("layers", "attn_norm", "scale")),
    Rule(r"model\.layers\.(?P<layer>\d+)\.post_attention_layernorm\.weight", ("layers", "mlp_norm", "scale")),
    Rule(r"model\.layers\.(?P<layer>\d+)\.self_attn\.(?P<t>[qkvo])_proj\.weight",
         ("layers", "attn", "{t}", "kernel"), transpose=True),
    Rule(r"model\.layers\.(?P<layer>\d+)\.mlp\.(?P<t>gate|up|down)_proj\.weight",
         ("layers", "mlp", "{t}", "kernel"), transpose=True),
)
IGNORED = (r".*\.rotary_emb\.inv_freq",)

# LoRA target -> HF module name inside a decoder layer (for PEFT files).
HF_TARGET_MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                     "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def _match(name: str, rules=LLAMA_RULES) -> Optional[tuple[Rule, tuple[str, ...], Optional[int]]]:
  for rule in rules:
    m = re.fullmatch(rule.pattern, name)
    if m:
      groups = m.groupdict()
      layer = groups.pop("layer", None)
      path = tuple(p.format(**groups) for p in rule.path)
      return rule, path, None if layer is None else int(layer)
  return None


def _safetensors_files(path: str) -> list[str]:
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  elif os.path.exists(os.path.join(path, "model.safetensors")):
    files = ["model.safetensors"]
  else:
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if not files:
    raise FileNotFoundError(f"no .safetensors weights in {path}")
  return [os.path.join(path, f) for f in files]


def _get(tree: dict, path: tuple[str, ...]):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def load_config(path: str, **overrides) -> config_lib.ModelConfig:
  """ModelConfig from ``path/config.json``."""
  with open(os.path.join(path, "config.json")) as f:
    return config_lib.from_hf_config(json.load(f), **overrides)


def load_params_numpy(path: str, cfg: config_lib.ModelConfig, dtype: str = "float32") -> dict:
  """Host (numpy) params for ``cfg`` from the safetensors files in ``path`` (place them with device_put)."""
  shapes = jax.eval_shape(lambda k: transformer.init_params(cfg, k), jax.random.key(0))
  np_dtype = jnp.dtype(dtype)
  params: dict = {}
  filled: dict[tuple[str, ...], set] = {}
  for file in _safetensors_files(path):
    with safe_open(file, framework="np") as f:
      for name in f.keys():
        hit = _match(name)
        if hit is None:
          if any(re.fullmatch(p, name) for p in IGNORED):
            continue
          raise ValueError(f"{file}: tensor {name!r} matches no rule in LLAMA_RULES")
        rule, ppath, layer = hit
        if ppath == ("lm_head",) and cfg.tie_embeddings:
          continue  # some tied checkpoints store a copy; the embedding is the one we use
        try:
          want = _get(shapes, ppath).shape
        except KeyError:
          raise ValueError(f"{file}: tensor {name!r} maps to {ppath}, which config {cfg.name} has no place for")
        x = f.get_tensor(name)
        x = x.T if rule.transpose else x
        slot_shape = want if layer is None else want[1:]
        if x.shape != tuple(slot_shape):
          raise ValueError(f"{file}: tensor {name!r} has shape {x.shape} after mapping, expected {slot_shape}")
        if layer is None:
          _set(params, ppath, np.asarray(x, np_dtype))
          filled[ppath] = {0}
        else:
          if layer >= cfg.n_layers:
            raise ValueError(f"{file}: tensor {name!r} is layer {layer} but the config has {cfg.n_layers}")
          if ppath not in filled:
            _set(params, ppath, np.empty(want, np_dtype))
            filled[ppath] = set()
          _get(params, ppath)[layer] = x
          filled[ppath].add(layer)
  for kpath, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    ppath = tuple(k.key for k in kpath)
    need = {0} if ppath[0] != "layers" else set(range(cfg.n_layers))
    if filled.get(ppath, set()) != need:
      raise ValueError(f"{path}: checkpoint lacks {ppath} (layers {sorted(need - filled.get(ppath, set()))})")
  return params


def load_checkpoint(path: str, dtype: str = "float32", **cfg_overrides) -> tuple[dict, config_lib.ModelConfig]:
  """(params on the default device, ModelConfig) from an HF Llama directory; ``dtype`` is the param dtype."""
  cfg = load_config(path, param_dtype=dtype, **cfg_overrides)
  return jax.tree.map(jnp.asarray, load_params_numpy(path, cfg, dtype)), cfg


# ----- PEFT adapters -----

def _peft_name(layer: int, target: str, which: str) -> str:
  return f"base_model.model.model.layers.{layer}.{HF_TARGET_MODULES[target]}.lora_{which}.weight"


def export_peft_adapter(adapter: dict, lcfg: lora_lib.LoraConfig, cfg: config_lib.ModelConfig, out_dir: str,
                        base_model_name_or_path: str = "") -> None:
  """Writes ``adapter_config.json`` and ``adapter_model.safetensors`` loadable by ``peft.PeftModel``."""
  if cfg.grid_positions or cfg.rope_grid:
    raise ValueError(f"export_peft_adapter: model {cfg.name!r} uses grid_positions or rope_grid "
                     "(row/column/role positions), which HF Llama lacks; its adapters only work with ttt_jax")
  os.makedirs(out_dir, exist_ok=True)
  tensors = {}
  for group, mods in adapter["layers"].items():
    for t, ab in mods.items():
      a, b = np.asarray(ab["a"], np.float32), np.asarray(ab["b"], np.float32)
      if a.shape != (cfg.n_layers, a.shape[1], lcfg.rank):
        raise ValueError(f"export_peft_adapter: {group}/{t}/a has shape {a.shape}; a stacked adapter? unstack it")
      for i in range(cfg.n_layers):
        tensors[_peft_name(i, t, "A")] = np.ascontiguousarray(a[i].T)  # r x in
        tensors[_peft_name(i, t, "B")] = np.ascontiguousarray(b[i].T)  # out x r
  targets = [t for t in lcfg.targets if t in adapter["layers"].get(lora_lib.TARGET_GROUPS[t], {})]
  peft_cfg = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
      "r": lcfg.rank, "lora_alpha": lcfg.alpha, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
      "target_modules": [HF_TARGET_MODULES[t].split(".")[-1] for t in targets], "inference_mode": True,
      "use_rslora": False, "use_dora": False, "modules_to_save": None, "init_lora_weights": True,
  }
  with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
    json.dump(peft_cfg, f, indent=2)
  save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})


def load_peft_adapter(path: str, cfg: config_lib.ModelConfig) -> tuple[dict, lora_lib.LoraConfig]:
  """Inverse of ``export_peft_adapter`` (plain LoRA only)."""
  with open(os.path.join(path, "adapter_config.json")) as f:
    pc = json.load(f)
  if pc.get("peft_type") != "LORA" or pc.get("use_rslora") or pc.get("use_dora"):
    raise ValueError(f"{path}: only plain LoRA adapters are supported, got {pc.get('peft_type')}")
  by_module = {v.split(".")[-1]: k for k, v in HF_TARGET_MODULES.items()}
  targets = tuple(by_module[m] for m in pc["target_modules"])
  lcfg = lora_lib.LoraConfig(rank=int(pc["r"]), alpha=float(pc["lora_alpha"]), targets=targets)
  adapter: dict = {"layers": {}}
  with safe_open(os.path.join(path, "adapter_model.safetensors"), framework="np") as f:
    names = set(f.keys())
    for t in targets:
      ab = {}
      for which, key in (("A", "a"), ("B", "b")):
        per_layer = []
        for i in range(cfg.n_layers):
          name = _peft_name(i, t, which)
          if name not in names:
            raise ValueError(f"{path}: adapter lacks {name}")
          per_layer.append(f.get_tensor(name).T)
        ab[key] = jnp.asarray(np.stack(per_layer).astype(np.float32))
      adapter["layers"].setdefault(lora_lib.TARGET_GROUPS[t], {})[t] = ab
  return adapter, lcfg
