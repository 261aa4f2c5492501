r"""Speed of the TTT building blocks against HF transformers + peft and against the hardware.

  python -m experiments.benchmark --config=experiments/configs/benchmark.py:gpu
  python -m experiments.benchmark --config=experiments/configs/benchmark.py:smoke   # CPU, seconds
  python -m experiments.benchmark --config=experiments/configs/benchmark.py:gpu \
      --profile_dir=runs/profile --profile_what=decode

Four measurements, each a ratio measured in this one run on one device:

1. ``lora``: one LoRA AdamW step (the TTT step) of ``steps.jit_train_step(lora=True)`` vs the
   same update in PyTorch with HF ``LlamaForCausalLM`` (SDPA attention) + peft, built from *our*
   random weights, same rank/alpha/targets, same loss, clipping and AdamW.
2. ``full``: one full fine-tuning step (ours): tokens/s and model FLOP utilisation.
3. ``multitask``: K adapters trained by one ``jit_multitask_step`` vs the same K tasks' steps
   one after another with ``jit_train_step``.
4. ``decode``: greedy ``decode.generate`` of a batch of views of one task (with its adapter)
   vs HF ``generate`` on the same left-padded batch, and the decode phase vs the HBM roofline.

Timing: ``warmup`` untimed calls (the first compiles), then the median of ``iters`` calls, each
ended by ``jax.block_until_ready`` / ``torch.cuda.synchronize``. All PyTorch work of a model runs
before its JAX work, so the JAX allocator (no preallocation here) has not yet claimed the memory.
``run_benchmarks(cfg)`` returns the rows and appends a section to ``cfg.benchmarks_md``.
"""

from __future__ import annotations

import os

# torch shares the GPU with JAX in this process: do not let XLA grab 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import contextlib  # pylint: disable=g-import-not-at-top,g-bad-import-order
import datetime
import functools
import json
import math
import platform
import shlex
import statistics
import sys
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from ttt_jax.data import batching
from ttt_jax.data import tokens as tokens_lib
from ttt_jax.model import config as config_lib
from ttt_jax.model import decode, hf, transformer
from ttt_jax.model import lora as lora_lib
from ttt_jax.train import metrics, optim, steps

# HBM bytes/s per device, by ``device_kind`` substring (first match wins). Peak FLOP/s comes from
# ``ttt_jax.train.metrics.PEAK_FLOPS``.
HBM_BANDWIDTH = (
    ("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12), ("H200", 4.8e12),
    ("A100", 2.0e12), ("L4", 0.3e12), ("TPU v6", 1.64e12), ("TPU v5p", 2.76e12), ("TPU v5", 0.82e12),
    ("TPU v4", 1.2e12),
)
MEASUREMENTS = ("lora", "full", "multitask", "decode")
_BIG = 1_000_000  # total_steps of timed states: the schedule never ends during a benchmark


def hbm_bandwidth_per_device(device: Optional[jax.Device] = None) -> Optional[float]:
  kind = (device or jax.devices()[0]).device_kind
  for name, bw in HBM_BANDWIDTH:
    if name.lower() in kind.lower():
      return bw
  return None


# ----- timing -----

def median_seconds(call: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int, iters: int,
                   clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
  """Median wall time of ``iters`` synced calls after ``warmup`` untimed ones; also the first output.

  ``clock`` is injectable so the arithmetic can be tested without timing anything."""
  if iters < 1:
    raise ValueError(f"iters must be >= 1, got {iters}")
  first = None
  for i in range(warmup):
    out = sync(call())
    first = out if i == 0 else first
  times = []
  for _ in range(iters):
    t0 = clock()
    out = sync(call())
    times.append(clock() - t0)
    first = out if first is None else first
  return statistics.median(times), first


def _jax_sync(x):
  return jax.block_until_ready(x)


def _profiled(cfg, what: str, name: str):
  if cfg.profile_dir and cfg.profile_what == what:
    path = os.path.join(cfg.profile_dir, name)
    logging.info("profiling %s into %s", name, path)
    return jax.profiler.trace(path)
  return contextlib.nullcontext()


# ----- models and data shared by both sides -----

class _Example(NamedTuple):
  tokens_T: np.ndarray
  loss_mask_T: np.ndarray


def synthetic_batch(vocab_size: int, batch_size: int, seq_len: int, seed: int) -> batching.Batch:
  """Full-length random sequences (no padding) through the project's batching (shift, weights)."""
  rng = np.random.default_rng(seed)
  examples = []
  for _ in range(batch_size):
    toks = rng.integers(0, vocab_size, seq_len + 1).astype(np.int32)
    mask = np.ones(seq_len + 1, bool)
    mask[0] = False
    examples.append(_Example(toks, mask))
  return batching.pad_examples(examples, seq_len, batch_size)


def model_config(name: str, cfg, **overrides) -> config_lib.ModelConfig:
  return config_lib.get_config(name, **{**dict(cfg.model_overrides), **overrides})


def lora_config(cfg) -> lora_lib.LoraConfig:
  return lora_lib.LoraConfig(rank=int(cfg.lora_cfg.rank), alpha=float(cfg.lora_cfg.alpha),
                             targets=tuple(cfg.lora_cfg.targets))


def optim_config(model_name: str) -> optim.OptimConfig:
  return optim.ttt_optim_config(model_name)


def _nbytes(tree) -> int:
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


# ----- the HF transformers + peft side -----

def _torch():
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
  return "cuda" if _torch().cuda.is_available() else "cpu"


def _torch_sync(x):
  torch = _torch()
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
  torch = _torch()
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


def _hf_lora_timing(model, batch: batching.Batch, ocfg: optim.OptimConfig, cfg, device: str
                    ) -> tuple[float, float]:
  """(median step seconds, first-step loss) of a peft AdamW step equal to ours (loss, clip, wd)."""
  torch = _torch()
  model.train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=ocfg.learning_rate, betas=(ocfg.b1, ocfg.b2), eps=ocfg.eps,
                          weight_decay=ocfg.weight_decay, fused=device == "cuda")
  toks, mask, targets = (torch.as_tensor(np.asarray(x), device=device).long()
                         for x in (batch.tokens, batch.mask, batch.targets))
  w = torch.as_tensor(np.asarray(batch.weights), device=device).float().flatten()

  def step():
    logits = model(input_ids=toks, attention_mask=mask).logits
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    loss = (nll * w).sum() / w.sum().clamp_min(1.0)
    loss.backward()
    if ocfg.clip_norm is not None:
      torch.nn.utils.clip_grad_norm_(trainable, ocfg.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()

  seconds, first = median_seconds(step, _torch_sync, warmup=cfg.warmup, iters=cfg.iters)
  return seconds, float(first)


def _hf_generate_timing(model, prompt_BxT, mask_BxT, new_tokens: int, cfg, device: str
                        ) -> tuple[float, np.ndarray]:
  torch = _torch()
  model.eval()
  ids = torch.as_tensor(prompt_BxT, device=device).long()
  am = torch.as_tensor(mask_BxT, device=device).long()

  def gen():
    with torch.no_grad():
      return model.generate(input_ids=ids, attention_mask=am, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=int(tokens_lib.PAD), eos_token_id=None)

  seconds, out = median_seconds(gen, _torch_sync, warmup=cfg.warmup, iters=cfg.iters)
  return seconds, out[:, ids.shape[1]:].cpu().numpy()


def _free_torch(*objs):
  del objs
  torch = _torch()
  if torch.cuda.is_available():
    torch.cuda.empty_cache()


# ----- measurements -----

_PARAMS: dict = {}  # (config without remat, seed) -> params, shared by the measurements of one run


def _params(mcfg, seed: int) -> dict:
  """Random base parameters; remat does not change them, so the measurements share one copy."""
  key = (mcfg.replace(remat=False), seed)
  if key not in _PARAMS:
    _PARAMS[key] = transformer.init_params(key[0], jax.random.key(seed))
  return _PARAMS[key]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_lora(mcfg, lcfg, key):
  return lora_lib.init_lora(mcfg, lcfg, key)  # jitted: one compile, not one per eager op


def _flops_per_token(mcfg, n_params: int, seq_len: int, *, lora: bool, n_trainable: int = 0) -> float:
  return metrics.train_flops_per_token(n_params, mcfg.n_layers, mcfg.q_dim, seq_len, lora=lora,
                                       n_trainable=n_trainable)


def _jit_kw(cfg) -> dict:
  opts = dict(cfg.get("compiler_options") or {})
  return {"compiler_options": opts} if opts else {}


def _mfu(flops: float, seconds: float, peak: Optional[float]) -> Optional[float]:
  return flops / seconds / peak if peak else None


def bench_lora(cfg, model_name: str, env: dict) -> list[dict]:
  """Measurement 1 for one model: every sequence length, HF first, then ours."""
  mcfg = model_config(model_name, cfg, param_dtype=cfg.lora_base_param_dtype, remat=bool(cfg.lora.remat))
  lcfg, ocfg = lora_config(cfg), optim_config(model_name)
  params = _params(mcfg, cfg.seed)
  adapter = _init_lora(mcfg, lcfg, jax.random.key(cfg.seed + 1))
  n_params, n_trainable = transformer.count_params(params), lora_lib.count_params(adapter)
  B = int(cfg.lora.batch_size)
  batches = {T: synthetic_batch(mcfg.vocab_size, B, T, cfg.seed + T) for T in cfg.lora.seq_lens}
  rows = {T: {"measurement": "lora", "model": model_name, "batch": B, "seq_len": T, "tokens": B * T,
              "params": n_params, "trainable": n_trainable, "rank": lcfg.rank} for T in batches}
  if env["hf"]:
    model = build_hf_model(mcfg, params, lcfg=lcfg, adapter=adapter, dtype=cfg.lora_base_param_dtype,
                           device=env["torch_device"], remat=bool(cfg.lora.remat))
    hf_params, hf_trainable = hf_param_counts(model)
    for T, batch in batches.items():
      logging.info("lora %s T=%d: HF + peft", model_name, T)
      seconds, loss = _hf_lora_timing(model, batch, ocfg, cfg, env["torch_device"])
      rows[T].update(hf_s=seconds, hf_loss0=loss, hf_params=hf_params, hf_trainable=hf_trainable)
    _free_torch(model)
  apply_fn = functools.partial(transformer.forward, cfg=mcfg, lora_cfg=lcfg)
  for T, batch in batches.items():
    logging.info("lora %s T=%d: ours", model_name, T)
    step = steps.jit_train_step(apply_fn, ocfg, lora=True, **_jit_kw(cfg))
    box = [steps.init_state(jax.tree.map(jnp.copy, adapter), ocfg, _BIG)]
    batch_dev = jax.tree.map(jnp.asarray, batch)

    def call(step=step, box=box, batch_dev=batch_dev):
      box[0], m = step(box[0], params, batch_dev)
      return box[0].trainable, m["loss"]

    with _profiled(cfg, "lora", f"lora_{model_name}_{T}"):
      seconds, (_, loss) = median_seconds(call, _jax_sync, warmup=cfg.warmup, iters=cfg.iters)
    flops = B * T * _flops_per_token(mcfg, n_params, T, lora=True, n_trainable=n_trainable)
    r = rows[T]
    r.update(ours_s=seconds, ours_loss0=float(loss), flops=flops, ours_tok_s=B * T / seconds,
             ours_mfu=_mfu(flops, seconds, env["peak_flops"]))
    if "hf_s" in r:
      r.update(hf_tok_s=B * T / r["hf_s"], hf_mfu=_mfu(flops, r["hf_s"], env["peak_flops"]),
               speedup=r["hf_s"] / seconds)
      if abs(r["ours_loss0"] - r["hf_loss0"]) > 0.05 * abs(r["hf_loss0"]):
        logging.warning("lora %s T=%d: step-0 losses differ (ours %.4f, HF %.4f): not the same model?",
                        model_name, T, r["ours_loss0"], r["hf_loss0"])
    del box
  return list(rows.values())


def bench_full(cfg, model_name: str, env: dict) -> list[dict]:
  """Measurement 2 for one model: tokens/s and MFU of a full AdamW step (float32 master weights)."""
  mcfg = model_config(model_name, cfg, remat=bool(cfg.full.remat))
  ocfg = optim_config(model_name)
  apply_fn = functools.partial(transformer.forward, cfg=mcfg)
  B, rows = int(cfg.full.batch_size), []
  params = _params(mcfg, cfg.seed)
  n_params = transformer.count_params(params)
  for T in cfg.full.seq_lens:
    logging.info("full %s T=%d", model_name, T)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(mcfg.vocab_size, B, T, cfg.seed + T))
    step = steps.jit_train_step(apply_fn, ocfg, lora=False, **_jit_kw(cfg))
    box = [steps.init_state(jax.tree.map(jnp.copy, params), ocfg, _BIG)]

    def call(step=step, box=box, batch=batch):
      box[0], m = step(box[0], None, batch)
      return box[0].trainable, m["loss"]

    with _profiled(cfg, "full", f"full_{model_name}_{T}"):
      seconds, _ = median_seconds(call, _jax_sync, warmup=cfg.warmup, iters=cfg.iters)
    flops = B * T * _flops_per_token(mcfg, n_params, T, lora=False)
    rows.append({"measurement": "full", "model": model_name, "batch": B, "seq_len": T, "tokens": B * T,
                 "params": n_params, "param_dtype": mcfg.param_dtype, "dtype": mcfg.dtype, "ours_s": seconds, "ours_tok_s": B * T / seconds, "flops": flops,
                 "ours_tflops_s": flops / seconds / 1e12, "ours_mfu": _mfu(flops, seconds, env["peak_flops"])})
    del box
  return rows


def bench_multitask(cfg, env: dict) -> list[dict]:
  """Measurement 3: K tasks by one vmapped step vs K single-task steps in a row (same work)."""
  del env
  mc = cfg.multitask
  mcfg = model_config(mc.model, cfg, param_dtype=cfg.lora_base_param_dtype, remat=bool(mc.remat))
  lcfg, ocfg = lora_config(cfg), optim_config(mc.model)
  params = _params(mcfg, cfg.seed)
  apply_fn = functools.partial(transformer.forward, cfg=mcfg, lora_cfg=lcfg)
  single = steps.jit_train_step(apply_fn, ocfg, lora=True, **_jit_kw(cfg))
  B, T, rows = int(mc.batch_size), int(mc.seq_len), []
  for K in mc.ks:
    logging.info("multitask %s K=%d", mc.model, K)
    adapters = [_init_lora(mcfg, lcfg, jax.random.key(cfg.seed + k)) for k in range(K)]
    batches = [jax.tree.map(jnp.asarray, synthetic_batch(mcfg.vocab_size, B, T, cfg.seed + k))
               for k in range(K)]
    batch_K = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    multi = steps.jit_multitask_step(apply_fn, ocfg, **_jit_kw(cfg))
    box_K = [steps.init_multitask_state(lora_lib.stack(adapters), ocfg, jnp.full((K,), _BIG, jnp.int32))]
    boxes = [steps.init_state(jax.tree.map(jnp.copy, a), ocfg, _BIG) for a in adapters]

    def vmapped(multi=multi, box_K=box_K, batch_K=batch_K):
      box_K[0], m = multi(box_K[0], params, batch_K)
      return box_K[0].trainable, m["loss"]

    def sequential(boxes=boxes, batches=batches):
      losses = []
      for k in range(len(boxes)):
        boxes[k], m = single(boxes[k], params, batches[k])
        losses.append(m["loss"])
      return [b.trainable for b in boxes], losses

    with _profiled(cfg, "multitask", f"multitask_{mc.model}_K{K}"):
      t_vmap, _ = median_seconds(vmapped, _jax_sync, warmup=cfg.warmup, iters=cfg.iters)
    t_seq, _ = median_seconds(sequential, _jax_sync, warmup=cfg.warmup, iters=cfg.iters)
    tokens = K * B * T
    rows.append({"measurement": "multitask", "model": mc.model, "k": K, "batch": B, "seq_len": T,
                 "tokens": tokens, "vmapped_s": t_vmap, "sequential_s": t_seq,
                 "vmapped_tok_s": tokens / t_vmap, "sequential_tok_s": tokens / t_seq,
                 "speedup": t_seq / t_vmap})
    del box_K, boxes
  return rows


@functools.partial(jax.jit, static_argnums=(0, 1))
def trained_like_adapter(mcfg, lcfg: lora_lib.LoraConfig, key: jax.Array) -> dict:
  """A fresh adapter with ``b`` random too (not zero), as after TTT, so the LoRA path changes the output."""
  key_a, key_b = jax.random.split(key)
  adapter = lora_lib.init_lora(mcfg, lcfg, key_a)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(adapter)
  keys = jax.random.split(key_b, len(leaves))
  out = [0.02 * jax.random.normal(k, x.shape, x.dtype) if path[-1].key == "b" else x
         for k, (path, x) in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, out)


def decode_prompts(vocab_size: int, batch: int, prompt_len: int, spread: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Left-padded random prompts of ``prompt_len - spread .. prompt_len`` tokens (views differ in length)."""
  rng = np.random.default_rng(seed)
  lengths = prompt_len - rng.integers(0, spread + 1, batch)
  lengths[0] = prompt_len  # the padded length is the longest prompt
  colours = min(vocab_size, 10)  # grid colours in the compact vocabulary; any ids for big vocabularies
  low = 0 if vocab_size <= tokens_lib.VOCAB_SIZE else tokens_lib.VOCAB_SIZE
  high = colours if vocab_size <= tokens_lib.VOCAB_SIZE else vocab_size
  prompts = [rng.integers(low, high, n).astype(np.int32) for n in lengths]
  tokens_BxT = np.full((batch, prompt_len), tokens_lib.PAD, np.int32)
  mask_BxT = np.zeros((batch, prompt_len), bool)
  for b, p in enumerate(prompts):
    tokens_BxT[b, prompt_len - len(p):] = p
    mask_BxT[b, prompt_len - len(p):] = True
  return tokens_BxT, mask_BxT


def decode_roofline_tok_s(params, adapter, mcfg, prompt_lens_B: np.ndarray, new_tokens: int,
                          bandwidth: Optional[float]) -> tuple[Optional[float], float]:
  """(tokens/s if every decode step only read its weights and the live KV cache at HBM speed, bytes/step).

  Weights: every parameter once per step (an untied embedding table is only gathered, so it is
  left out), plus the adapter. KV cache: each sequence reads ``2 * L * kv_dim`` values per cached
  token, averaged over the decode steps (prompt + i for step i).
  """
  w = _nbytes(params) + (_nbytes(adapter) if adapter is not None else 0)
  if not mcfg.tie_embeddings:
    w -= _nbytes(params["embed"])
  kv_per_token = 2 * mcfg.n_layers * mcfg.kv_dim * jnp.dtype(mcfg.dtype).itemsize
  mean_ctx = float(np.mean(prompt_lens_B)) + (new_tokens - 1) / 2.0
  B = len(prompt_lens_B)
  bytes_per_step = w + B * mean_ctx * kv_per_token
  return (B * bandwidth / bytes_per_step if bandwidth else None), bytes_per_step


def bench_decode(cfg, model_name: str, env: dict) -> list[dict]:
  """Measurement 4 for one model: greedy generation of a batch of views, ours vs HF generate."""
  dc = cfg.decode
  N = int(dc.new_tokens)
  mcfg = model_config(model_name, cfg, param_dtype=dc.param_dtype)
  if mcfg.max_seq_len < int(dc.prompt_len) + N:
    mcfg = mcfg.replace(max_seq_len=int(dc.prompt_len) + N)
  lcfg = lora_config(cfg) if dc.with_lora else None
  params = _params(mcfg, cfg.seed)
  adapter = None if lcfg is None else trained_like_adapter(mcfg, lcfg, jax.random.key(cfg.seed + 1))
  prompts = {Bv: decode_prompts(mcfg.vocab_size, Bv, int(dc.prompt_len), int(dc.prompt_len_spread),
                                cfg.seed + Bv) for Bv in dc.batch_sizes}
  rows = {Bv: {"measurement": "decode", "model": model_name, "batch": Bv, "prompt_len": int(dc.prompt_len),
               "new_tokens": N, "tokens": Bv * N, "with_lora": bool(dc.with_lora)} for Bv in prompts}
  hf_out = {}
  if env["hf"]:
    model = build_hf_model(mcfg, params, lcfg=lcfg, adapter=adapter, dtype=dc.param_dtype,
                           device=env["torch_device"])
    for Bv, (toks, mask) in prompts.items():
      logging.info("decode %s B=%d: HF generate", model_name, Bv)
      seconds, hf_out[Bv] = _hf_generate_timing(model, toks, mask, N, cfg, env["torch_device"])
      rows[Bv].update(hf_s=seconds, hf_tok_s=Bv * N / seconds)
    _free_torch(model)
  gen = functools.partial(decode.generate, cfg=mcfg, lora_cfg=lcfg, max_new_tokens=N, eos_id=-1,
                          pad_id=tokens_lib.PAD)  # eos_id=-1: never stop early, like min_new_tokens on HF
  # The very prefill that generate runs (already compiled by it), timed alone to split prefill from decoding.
  prefill = functools.partial(decode._prefill_jit, cfg=mcfg, lora_cfg=lcfg)  # pylint: disable=protected-access
  for Bv, (toks, mask) in prompts.items():
    logging.info("decode %s B=%d: ours", model_name, Bv)
    toks_d, mask_d = jnp.asarray(toks), jnp.asarray(mask)
    with _profiled(cfg, "decode", f"decode_{model_name}_B{Bv}"):
      seconds, out = median_seconds(lambda: gen(params, adapter, toks_d, mask_d), _jax_sync,
                                    warmup=cfg.warmup, iters=cfg.iters)
    t_prefill, _ = median_seconds(lambda: prefill(params, adapter, toks_d, mask_d), _jax_sync,
                                  warmup=cfg.warmup, iters=cfg.iters)
    t_decode = max(seconds - t_prefill, 1e-9)
    roof, bytes_step = decode_roofline_tok_s(params, adapter, mcfg, mask.sum(axis=1), N, env["hbm_bandwidth"])
    r = rows[Bv]
    r.update(ours_s=seconds, ours_tok_s=Bv * N / seconds, ours_prefill_s=t_prefill,
             ours_decode_tok_s=Bv * (N - 1) / t_decode, bytes_per_step=bytes_step, roofline_tok_s=roof,
             roofline_frac=(Bv * (N - 1) / t_decode / roof) if roof else None)
    if Bv in hf_out:
      r.update(speedup=r["hf_s"] / seconds,
               token_agreement=float(np.mean(np.asarray(out) == hf_out[Bv])))
  return list(rows.values())


# ----- report -----

def environment(cfg) -> dict:
  """Device, peaks and versions recorded beside the figures."""
  dev = jax.devices()[0]
  env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "jax_backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
         "python": platform.python_version(), "jax": jax.__version__, "host": platform.machine()}
  import jaxlib  # pylint: disable=g-import-not-at-top
  env["jaxlib"] = jaxlib.__version__
  env["peak_flops"] = float(cfg.peak_flops) or metrics.peak_flops_per_device(dev)
  env["hbm_bandwidth"] = float(cfg.hbm_bandwidth) or hbm_bandwidth_per_device(dev)
  env["hf"] = bool(cfg.hf) and hf_available()
  if cfg.hf and not env["hf"]:
    logging.warning("torch / transformers / peft not importable: HF columns are skipped")
  if env["hf"]:
    import peft  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    torch = _torch()
    env.update(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
               torch_device=torch_device(), torch_threads=torch.get_num_threads())
    if env["torch_device"] == "cuda":
      env["torch_device_name"] = torch.cuda.get_device_name(0)
  return env


def _fmt(x, kind: str = "") -> str:
  if x is None:
    return "n/a"
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  if kind == "ms":
    return f"{1e3 * x:.2f}"
  if kind == "pct":
    return f"{100 * x:.1f}%"
  if kind == "x":
    return f"{x:.2f}x"
  if kind == "int":
    return f"{x:,.0f}"
  if kind == "loss":
    return f"{x:.4f}"
  return str(x)


def _table(header: list[str], lines: list[list[str]]) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(line) + " |" for line in lines]
  return "\n".join(out)


def markdown_section(rows: list[dict], env: dict, cfg, command: str) -> str:
  """One BENCHMARKS.md section: provenance lines, then a table per measurement."""
  na = "n/a (no peak)" if not env["peak_flops"] else None
  na_bw = "n/a (no bandwidth)" if not env["hbm_bandwidth"] else None
  versions = f"jax {env['jax']}, jaxlib {env['jaxlib']}, python {env['python']}"
  if env["hf"]:
    versions += f", torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}"
  device = f"{env['device_kind']} x{env['device_count']} (JAX backend {env['jax_backend']})"
  if env["hf"]:
    device += f"; torch on {env.get('torch_device_name', env['torch_device'])}"
  lines = [f"## {cfg.label}: {env['date']}", "",
           f"- device: {device}",
           f"- date: {env['date']}",
           f"- versions: {versions}",
           f"- peak bf16: {_fmt(env['peak_flops'] and env['peak_flops'] / 1e12)} TFLOP/s; "
           f"HBM: {_fmt(env['hbm_bandwidth'] and env['hbm_bandwidth'] / 1e12)} TB/s"
           + ("" if not (na or na_bw) else " (no table entry for this device, so MFU / roofline columns say n/a; "
              "give them with --config.peak_flops / --config.hbm_bandwidth)"),
           f"- config: preset `{cfg.preset}`, model overrides {dict(cfg.model_overrides)}, LoRA rank "
           f"{cfg.lora_cfg.rank} alpha {cfg.lora_cfg.alpha} targets {','.join(cfg.lora_cfg.targets)}; "
           f"median of {cfg.iters} timed calls after {cfg.warmup} warm-up"
           + (f"; train steps compiled with {dict(cfg.compiler_options)}" if cfg.get("compiler_options") else ""),
           f"- command: `{command}`", ""]
  by = lambda m: [r for r in rows if r["measurement"] == m]
  if by("lora"):
    lines += ["### 1. LoRA training step (TTT step): ours vs HF transformers + peft (target: >= 2x)", "",
              _table(["model", "B x T", "ours ms", "HF+peft ms", "speed ratio (HF/ours)", "ours tok/s",
                      "HF tok/s", "ours MFU", "HF MFU", "step-0 loss ours / HF", "params ours / HF",
                      "trainable ours / HF"],
                     [[r["model"], f"{r['batch']} x {r['seq_len']}", _fmt(r["ours_s"], "ms"),
                       _fmt(r.get("hf_s"), "ms"), _fmt(r.get("speedup"), "x"), _fmt(r["ours_tok_s"], "int"),
                       _fmt(r.get("hf_tok_s"), "int"), na or _fmt(r["ours_mfu"], "pct"),
                       na or _fmt(r.get("hf_mfu"), "pct"),
                       f"{_fmt(r['ours_loss0'], 'loss')} / {_fmt(r.get('hf_loss0'), 'loss')}",
                       f"{_fmt(r['params'], 'int')} / {_fmt(r.get('hf_params'), 'int')}",
                       f"{_fmt(r['trainable'], 'int')} / {_fmt(r.get('hf_trainable'), 'int')}"]
                      for r in by("lora")]), "",
              "MFU counts 4N + 6 N_lora + 8 L T d_attn FLOPs per token (`ttt_jax.train.metrics`).", ""]
  if by("full"):
    lines += ["### 2. Full fine-tuning step (target: MFU >= 50% for llama-3.2-1b at 4096)", "",
              _table(["model", "B x T", "step ms", "tok/s", "TFLOP/s", "MFU"],
                     [[r["model"], f"{r['batch']} x {r['seq_len']}", _fmt(r["ours_s"], "ms"),
                       _fmt(r["ours_tok_s"], "int"), f"{r['ours_tflops_s']:.3f}", na or _fmt(r["ours_mfu"], "pct")]
                      for r in by("full")]), "",
              f"MFU counts 6N + 12 L T d_attn FLOPs per token; {by('full')[0]['param_dtype']} master weights, "
              f"{by('full')[0]['dtype']} compute.", ""]
  if by("multitask"):
    lines += ["### 3. Many tasks at once: one vmapped step for K adapters vs K steps in a row "
              "(target: >= 3x for arc-small)", "",
              _table(["model", "K", "B x T per task", "vmapped ms", "sequential ms", "throughput ratio",
                      "vmapped tok/s", "sequential tok/s"],
                     [[r["model"], str(r["k"]), f"{r['batch']} x {r['seq_len']}", _fmt(r["vmapped_s"], "ms"),
                       _fmt(r["sequential_s"], "ms"), _fmt(r["speedup"], "x"), _fmt(r["vmapped_tok_s"], "int"),
                       _fmt(r["sequential_tok_s"], "int")] for r in by("multitask")]), ""]
  if by("decode"):
    lines += ["### 4. Augmented decoding: a batch of views of one task, greedy (targets: >= 5x HF generate, "
              ">= 50% of the bandwidth roofline)", "",
              _table(["model", "views", "prompt + new", "ours ms", "HF generate ms", "speed ratio (HF/ours)",
                      "ours tok/s", "HF tok/s", "ours prefill ms", "ours decode-phase tok/s", "roofline tok/s",
                      "of roofline", "tokens equal to HF"],
                     [[r["model"], str(r["batch"]), f"{r['prompt_len']} + {r['new_tokens']}", _fmt(r["ours_s"], "ms"),
                       _fmt(r.get("hf_s"), "ms"), _fmt(r.get("speedup"), "x"), _fmt(r["ours_tok_s"], "int"),
                       _fmt(r.get("hf_tok_s"), "int"), _fmt(r["ours_prefill_s"], "ms"),
                       _fmt(r["ours_decode_tok_s"], "int"), na_bw or _fmt(r["roofline_tok_s"], "int"),
                       na_bw or _fmt(r["roofline_frac"], "pct"), _fmt(r.get("token_agreement"), "pct")]
                      for r in by("decode")]), "",
              "Both sides generate exactly `new` tokens per view (ours: no EOS id; HF: `min_new_tokens`), with "
              "the task's LoRA adapter unmerged. Roofline: weights + adapter + the live KV cache read once per "
              "step at HBM bandwidth; the decode phase is total minus prefill.", ""]
  return "\n".join(lines) + "\n"


_HEADER = """# Benchmarks

Written by `experiments/benchmark.py` (see the README's Benchmarks section). Every figure is a ratio measured in one
run on one device; sections are appended, newest last.

"""


def write_reports(rows: list[dict], env: dict, cfg, command: str) -> str:
  section = markdown_section(rows, env, cfg, command)
  if cfg.benchmarks_md:
    os.makedirs(os.path.dirname(os.path.abspath(cfg.benchmarks_md)), exist_ok=True)
    new = not os.path.exists(cfg.benchmarks_md)
    with open(cfg.benchmarks_md, "a") as f:
      f.write((_HEADER if new else "\n") + section)
  if cfg.json_out:
    os.makedirs(os.path.dirname(os.path.abspath(cfg.json_out)), exist_ok=True)
    with open(cfg.json_out, "w") as f:
      json.dump({"env": env, "command": command, "config": cfg.to_dict(), "rows": rows}, f, indent=1,
                default=str)
  return section


def run_benchmarks(cfg, command: str = "") -> list[dict]:
  """Runs the enabled measurements of ``cfg`` (see experiments/configs/benchmark.py); returns the rows.

  Also appends a section to ``cfg.benchmarks_md`` and writes ``cfg.json_out`` (each skipped when "").
  """
  if cfg.profile_dir and cfg.profile_what not in MEASUREMENTS:
    raise ValueError(f"profile_what must be one of {MEASUREMENTS}, got {cfg.profile_what!r}")
  only = [m.strip() for m in cfg.get("only", "").split(",") if m.strip()]
  if set(only) - set(MEASUREMENTS):
    raise ValueError(f"only: unknown measurements {sorted(set(only) - set(MEASUREMENTS))}; known {MEASUREMENTS}")
  run = {m: (m in only) if only else bool(cfg[m].enabled) for m in MEASUREMENTS}
  command = command or "experiments.benchmark.run_benchmarks(<config preset %r>)" % cfg.preset
  env = environment(cfg)
  logging.info("benchmark on %s (peak %s FLOP/s, HBM %s B/s, HF %s)", env["device_kind"], env["peak_flops"],
               env["hbm_bandwidth"], env["hf"])
  rows: list[dict] = []
  _PARAMS.clear()
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")  # CPU cannot donate
    if run["lora"]:
      for name in cfg.lora.models:
        rows += bench_lora(cfg, name, env)
    if run["decode"]:
      for name in cfg.decode.models:
        rows += bench_decode(cfg, name, env)
    if run["multitask"]:
      rows += bench_multitask(cfg, env)
    if run["full"]:
      for name in cfg.full.models:
        rows += bench_full(cfg, name, env)
  _PARAMS.clear()
  write_reports(rows, env, cfg, command)
  return rows


def _define_flags():
  """Flags exist only when run as a binary, so importing ``run_benchmarks`` defines none."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(__file__), "configs", "benchmark.py") + ":gpu",
      "Benchmark config file (and preset after ':').")
  flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of one measurement here.")
  flags.DEFINE_enum("profile_what", None, list(MEASUREMENTS), "Which measurement to profile.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS.config
  if flags.FLAGS.profile_dir:
    cfg.profile_dir = flags.FLAGS.profile_dir
  if flags.FLAGS.profile_what:
    cfg.profile_what = flags.FLAGS.profile_what
  command = "python -m experiments.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  rows = run_benchmarks(cfg, command=command)
  print(f"benchmark: {len(rows)} rows -> {cfg.benchmarks_md or '(no markdown)'}, {cfg.json_out or '(no json)'}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
