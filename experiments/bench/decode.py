"""Measurement 4, ``decode``: greedy ``decode.generate`` of a batch of views of one task (with its
adapter) vs HF ``generate`` on the same left-padded batch, and the decode phase vs the HBM roofline."""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments.bench import harness, hf_torch, models
from experiments.bench.report import fmt, no_bandwidth, table
from ttt_jax.data import tokens as tokens_lib
from ttt_jax.model import decode
from ttt_jax.model import lora as lora_lib


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
  w = models.nbytes(params) + (models.nbytes(adapter) if adapter is not None else 0)
  if not mcfg.tie_embeddings:
    w -= models.nbytes(params["embed"])
  kv_per_token = 2 * mcfg.n_layers * mcfg.kv_dim * jnp.dtype(mcfg.dtype).itemsize
  mean_ctx = float(np.mean(prompt_lens_B)) + (new_tokens - 1) / 2.0
  B = len(prompt_lens_B)
  bytes_per_step = w + B * mean_ctx * kv_per_token
  return (B * bandwidth / bytes_per_step if bandwidth else None), bytes_per_step


def hf_generate_timing(model, prompt_BxT, mask_BxT, new_tokens: int, cfg, device: str
                       ) -> tuple[float, np.ndarray]:
  """(median seconds, new tokens_BxN) of HF greedy ``generate`` for exactly ``new_tokens`` tokens."""
  torch = hf_torch.import_torch()
  model.eval()
  ids = torch.as_tensor(prompt_BxT, device=device).long()
  am = torch.as_tensor(mask_BxT, device=device).long()

  def gen():
    with torch.no_grad():
      return model.generate(input_ids=ids, attention_mask=am, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=int(tokens_lib.PAD), eos_token_id=None)

  seconds, out = harness.median_seconds(gen, hf_torch.torch_sync, warmup=cfg.warmup, iters=cfg.iters)
  return seconds, out[:, ids.shape[1]:].cpu().numpy()


def run_model(cfg, model_name: str, env: dict) -> list[dict]:
  """Every batch size of one model: HF generate first, then ours (whole call, and prefill alone)."""
  dc = cfg.decode
  N, chunk = int(dc.new_tokens), int(dc.chunk) or None
  mcfg = models.model_config(model_name, cfg, param_dtype=dc.param_dtype)
  if mcfg.max_seq_len < int(dc.prompt_len) + N:
    mcfg = mcfg.replace(max_seq_len=int(dc.prompt_len) + N)
  lcfg = models.lora_config(cfg) if dc.with_lora else None
  params = models.shared_params(mcfg, cfg.seed)
  adapter = None if lcfg is None else trained_like_adapter(mcfg, lcfg, jax.random.key(cfg.seed + 1))
  prompts = {Bv: decode_prompts(mcfg.vocab_size, Bv, int(dc.prompt_len), int(dc.prompt_len_spread),
                                cfg.seed + Bv) for Bv in dc.batch_sizes}
  rows = {Bv: {"measurement": "decode", "model": model_name, "batch": Bv, "prompt_len": int(dc.prompt_len),
               "new_tokens": N, "tokens": Bv * N, "with_lora": bool(dc.with_lora),
               "chunk": chunk or decode.default_chunk(N)} for Bv in prompts}
  hf_out = {}
  if env["hf"]:
    model = hf_torch.build_hf_model(mcfg, params, lcfg=lcfg, adapter=adapter, dtype=dc.param_dtype,
                                    device=env["torch_device"])
    for Bv, (toks, mask) in prompts.items():
      logging.info("decode %s B=%d: HF generate", model_name, Bv)
      seconds, hf_out[Bv] = hf_generate_timing(model, toks, mask, N, cfg, env["torch_device"])
      rows[Bv].update(hf_s=seconds, hf_tok_s=Bv * N / seconds)
    hf_torch.free_torch(model)
  gen = functools.partial(decode.generate, cfg=mcfg, lora_cfg=lcfg, max_new_tokens=N, eos_id=-1,
                          pad_id=tokens_lib.PAD, chunk=chunk)  # eos_id=-1: never stop, like min_new_tokens
  # The very prefill that generate runs (already compiled by it), timed alone to split prefill from decoding.
  prefill = functools.partial(decode._prefill_jit, cfg=mcfg, lora_cfg=lcfg)  # pylint: disable=protected-access
  for Bv, (toks, mask) in prompts.items():
    logging.info("decode %s B=%d: ours", model_name, Bv)
    toks_d, mask_d = jnp.asarray(toks), jnp.asarray(mask)
    with harness.profiled(cfg, "decode", f"decode_{model_name}_B{Bv}"):
      seconds, out = harness.median_seconds(lambda: gen(params, adapter, toks_d, mask_d), harness.jax_sync,
                                            warmup=cfg.warmup, iters=cfg.iters)
    t_prefill, _ = harness.median_seconds(lambda: prefill(params, adapter, toks_d, mask_d), harness.jax_sync,
                                          warmup=cfg.warmup, iters=cfg.iters)
    t_decode = max(seconds - t_prefill, 1e-9)
    roof, bytes_step = decode_roofline_tok_s(params, adapter, mcfg, mask.sum(axis=1), N, env["hbm_bandwidth"])
    r = rows[Bv]
    r.update(ours_s=seconds, ours_tok_s=Bv * N / seconds, ours_prefill_s=t_prefill,
             ours_decode_tok_s=Bv * (N - 1) / t_decode, bytes_per_step=bytes_step, roofline_tok_s=roof,
             roofline_frac=(Bv * (N - 1) / t_decode / roof) if roof else None)
    if Bv in hf_out:
      r.update(speedup=r["hf_s"] / seconds, token_agreement=float(np.mean(np.asarray(out) == hf_out[Bv])))
  return list(rows.values())


def run(cfg, env: dict) -> list[dict]:
  return [r for name in cfg.decode.models for r in run_model(cfg, name, env)]


def markdown(rows: list[dict], env: dict) -> list[str]:
  na_bw = no_bandwidth(env)
  return ["### 4. Augmented decoding: a batch of views of one task, greedy (targets: >= 5x HF generate, "
          ">= 50% of the bandwidth roofline)", "",
          table(["model", "views", "prompt + new", "ours ms", "HF generate ms", "speed ratio (HF/ours)",
                 "ours tok/s", "HF tok/s", "ours prefill ms", "ours decode-phase tok/s", "roofline tok/s",
                 "of roofline", "tokens equal to HF"],
                [[r["model"], str(r["batch"]), f"{r['prompt_len']} + {r['new_tokens']}", fmt(r["ours_s"], "ms"),
                  fmt(r.get("hf_s"), "ms"), fmt(r.get("speedup"), "x"), fmt(r["ours_tok_s"], "int"),
                  fmt(r.get("hf_tok_s"), "int"), fmt(r["ours_prefill_s"], "ms"),
                  fmt(r["ours_decode_tok_s"], "int"), na_bw or fmt(r["roofline_tok_s"], "int"),
                  na_bw or fmt(r["roofline_frac"], "pct"), fmt(r.get("token_agreement"), "pct")]
                 for r in rows]), "",
          "Both sides generate exactly `new` tokens per view (ours: no EOS id; HF: `min_new_tokens`), with "
          "the task's LoRA adapter unmerged. Roofline: weights + adapter + the live KV cache read once per "
          f"step at HBM bandwidth; the decode phase is total minus prefill; ours decodes in chunks of "
          f"{', '.join(sorted({str(r['chunk']) for r in rows}))} steps (a step reads fewer idle cache slots "
          "than that).", ""]
