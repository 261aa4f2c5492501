"""The HF transformers + peft side of the comparisons, built from *our* weights.

Nothing here imports torch at module import time: ``hf_available()`` says whether it can run.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ttt_jax.model import config as config_lib
from ttt_jax.model import hf
from ttt_jax.model import lora as lora_lib


def import_torch():
  """torch, imported on first use (the JAX-only measurements never need it)."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def hf_available() -> bool:
  try:
    import peft  # pylint: disable=g-import-not-at-top,unused-import
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    import transformers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def torch_device() -> str:
  return "cuda" if import_torch().cuda.is_available() else "cpu"


def torch_sync(x):
  torch = import_torch()
  if torch.cuda.is_available():
    torch.cuda.synchronize()
  return x


def hf_state_dict(params: dict, mcfg: config_lib.ModelConfig, names) -> dict[str, np.ndarray]:
  """Our parameters under HF tensor ``names``, through the loader's own table (``hf.LLAMA_RULES``)."""
  out = {}
  for name in names:
    hit = hf._match(name)  # pylint: disable=protected-access
    if hit is None:
      raise ValueError(f"hf_state_dict: HF tensor {name!r} matches no rule in hf.LLAMA_RULES")
    rule, path, layer = hit
    if path == ("lm_head",) and mcfg.tie_embeddings:
      continue  # HF ties it to the embedding
    x = params
    for p in path:
      x = x[p]
    x = x if layer is None else x[layer]
    x = np.asarray(jax.device_get(x.astype(jnp.float32)))
    out[name] = x.T if rule.transpose else x
  return out


def _peft_param_name(layer: int, target: str, which: str) -> str:
  return f"base_model.model.model.layers.{layer}.{hf.HF_TARGET_MODULES[target]}.lora_{which}.default.weight"


def hf_llama_config(mcfg: config_lib.ModelConfig, *, use_cache: bool = True):
  """``transformers.LlamaConfig`` of ``mcfg`` with SDPA attention."""
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.LlamaConfig(**config_lib.to_hf_config(mcfg), attn_implementation="sdpa", use_cache=use_cache)


def peft_lora_config(lcfg: lora_lib.LoraConfig):
  """peft's ``LoraConfig`` with our rank, alpha and targets (q -> q_proj, ...), no dropout."""
  import peft  # pylint: disable=g-import-not-at-top
  return peft.LoraConfig(r=lcfg.rank, lora_alpha=lcfg.alpha, lora_dropout=0.0, bias="none",
                         target_modules=[hf.HF_TARGET_MODULES[t].split(".")[-1] for t in lcfg.targets])


def build_hf_model(mcfg: config_lib.ModelConfig, params: dict, *, lcfg: Optional[lora_lib.LoraConfig] = None,
                   adapter: Optional[dict] = None, dtype: str = "float32", device: str = "cpu",
                   remat: bool = False):
  """HF ``LlamaForCausalLM`` (SDPA) holding our ``params``; wrapped by peft with our adapter when given.

  The adapter's ``a``/``b`` are copied into peft's ``lora_A``/``lora_B`` (float32, peft's default
  autocast), so both sides compute the same function.
  """
  torch = import_torch()
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
  hcfg = hf_llama_config(mcfg, use_cache=not remat)
  with torch.device(device):
    model = transformers.LlamaForCausalLM._from_config(hcfg, dtype=tdtype)  # pylint: disable=protected-access
  sd = hf_state_dict(params, mcfg, [n for n in model.state_dict() if not n.endswith("inv_freq")])
  with torch.no_grad():
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()},
                                                strict=False)
  allowed_missing = {"lm_head.weight"} if mcfg.tie_embeddings else set()
  if set(missing) - allowed_missing or unexpected:
    raise ValueError(f"build_hf_model: missing {missing}, unexpected {unexpected}")
  if remat:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
  if lcfg is None:
    return model
  model = peft.get_peft_model(model, peft_lora_config(lcfg))
  if adapter is not None:
    named = dict(model.named_parameters())
    with torch.no_grad():
      for group, mods in adapter["layers"].items():
        for t, ab in mods.items():
          a, b = (np.asarray(jax.device_get(ab[k].astype(jnp.float32))) for k in ("a", "b"))
          for i in range(mcfg.n_layers):
            named[_peft_param_name(i, t, "A")].copy_(torch.from_numpy(np.ascontiguousarray(a[i].T)))
            named[_peft_param_name(i, t, "B")].copy_(torch.from_numpy(np.ascontiguousarray(b[i].T)))
  return model


def hf_param_counts(model) -> tuple[int, int]:
  """(base parameters, trainable parameters) of an HF (peft) model, tied tensors counted once."""
  seen, base, trainable = set(), 0, 0
  for name, p in model.named_parameters(remove_duplicate=True):
    if id(p) in seen:
      continue
    seen.add(id(p))
    if p.requires_grad:
      trainable += p.numel()
    if "lora_" not in name:
      base += p.numel()
  return base, trainable


def free_torch(*objs):
  del objs
  torch = import_torch()
  if torch.cuda.is_available():
    torch.cuda.empty_cache()


def versions() -> dict:
  """Library versions and the device torch runs on, for the report's provenance."""
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch = import_torch()
  env = dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
             torch_device=torch_device(), torch_threads=torch.get_num_threads())
  if env["torch_device"] == "cuda":
    env["torch_device_name"] = torch.cuda.get_device_name(0)
  return env
