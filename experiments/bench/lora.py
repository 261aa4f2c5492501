"""Measurement 1, ``lora``: one LoRA AdamW step (the TTT step), ours vs HF transformers + peft.

Ours is ``steps.jit_train_step(lora=True)``; theirs is HF ``LlamaForCausalLM`` (SDPA attention) +
peft built from *our* random weights, with the same rank/alpha/targets, loss, clipping and AdamW.
All PyTorch work of a model runs before its JAX work, so the JAX allocator has not yet claimed
the memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments.bench import harness, hf_torch, models
from experiments.bench.report import fmt, no_peak, table
from ttt_jax.data import batching
from ttt_jax.model import lora as lora_lib
from ttt_jax.model import transformer
from ttt_jax.train import optim, steps


def hf_step_timing(model, batch: batching.Batch, ocfg: optim.OptimConfig, cfg, device: str) -> tuple[float, float]:
  """(median step seconds, first-step loss) of a peft AdamW step equal to ours (loss, clip, wd)."""
  torch = hf_torch.import_torch()
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

  seconds, first = harness.median_seconds(step, hf_torch.torch_sync, warmup=cfg.warmup, iters=cfg.iters)
  return seconds, float(first)


def run_model(cfg, model_name: str, env: dict) -> list[dict]:
  """Every sequence length of one model, HF first, then ours."""
  mcfg = models.model_config(model_name, cfg, param_dtype=cfg.lora_base_param_dtype, remat=bool(cfg.lora.remat))
  lcfg, ocfg = models.lora_config(cfg), models.optim_config(model_name)
  params = models.shared_params(mcfg, cfg.seed)
  adapter = models.init_lora(mcfg, lcfg, jax.random.key(cfg.seed + 1))
  n_params, n_trainable = transformer.count_params(params), lora_lib.count_params(adapter)
  B = int(cfg.lora.batch_size)
  batches = {T: models.synthetic_batch(mcfg.vocab_size, B, T, cfg.seed + T) for T in cfg.lora.seq_lens}
  rows = {T: {"measurement": "lora", "model": model_name, "batch": B, "seq_len": T, "tokens": B * T,
              "params": n_params, "trainable": n_trainable, "rank": lcfg.rank} for T in batches}
  if env["hf"]:
    model = hf_torch.build_hf_model(mcfg, params, lcfg=lcfg, adapter=adapter, dtype=cfg.lora_base_param_dtype,
                                    device=env["torch_device"], remat=bool(cfg.lora.remat))
    hf_params, hf_trainable = hf_torch.hf_param_counts(model)
    for T, batch in batches.items():
      logging.info("lora %s T=%d: HF + peft", model_name, T)
      seconds, loss = hf_step_timing(model, batch, ocfg, cfg, env["torch_device"])
      rows[T].update(hf_s=seconds, hf_loss0=loss, hf_params=hf_params, hf_trainable=hf_trainable)
    hf_torch.free_torch(model)
  apply_fn = functools.partial(transformer.forward_hidden, cfg=mcfg, lora_cfg=lcfg)  # as TTT runs it
  for T, batch in batches.items():
    logging.info("lora %s T=%d: ours", model_name, T)
    step = steps.jit_train_step(apply_fn, ocfg, lora=True, **models.jit_kw(cfg))
    state = steps.init_state(jax.tree.map(jnp.copy, adapter), ocfg, models.BIG)
    seconds, loss = harness.time_train_step(cfg, step, state, params, jax.tree.map(jnp.asarray, batch),
                                            what="lora", name=f"lora_{model_name}_{T}")
    del state
    flops = models.train_flops(mcfg, n_params, B, T, lora=True, n_trainable=n_trainable)
    r = rows[T]
    r.update(ours_s=seconds, ours_loss0=float(loss), flops=flops, ours_tok_s=B * T / seconds,
             ours_mfu=models.mfu(flops, seconds, env["peak_flops"]))
    if "hf_s" in r:
      r.update(hf_tok_s=B * T / r["hf_s"], hf_mfu=models.mfu(flops, r["hf_s"], env["peak_flops"]),
               speedup=r["hf_s"] / seconds)
      if abs(r["ours_loss0"] - r["hf_loss0"]) > 0.05 * abs(r["hf_loss0"]):
        logging.warning("lora %s T=%d: step-0 losses differ (ours %.4f, HF %.4f): not the same model?",
                        model_name, T, r["ours_loss0"], r["hf_loss0"])
  return list(rows.values())


def run(cfg, env: dict) -> list[dict]:
  return [r for name in cfg.lora.models for r in run_model(cfg, name, env)]


def markdown(rows: list[dict], env: dict) -> list[str]:
  na = no_peak(env)
  return ["### 1. LoRA training step (TTT step): ours vs HF transformers + peft (target: >= 2x)", "",
          table(["model", "B x T", "ours ms", "HF+peft ms", "speed ratio (HF/ours)", "ours tok/s",
                 "HF tok/s", "ours MFU", "HF MFU", "step-0 loss ours / HF", "params ours / HF",
                 "trainable ours / HF"],
                [[r["model"], f"{r['batch']} x {r['seq_len']}", fmt(r["ours_s"], "ms"),
                  fmt(r.get("hf_s"), "ms"), fmt(r.get("speedup"), "x"), fmt(r["ours_tok_s"], "int"),
                  fmt(r.get("hf_tok_s"), "int"), na or fmt(r["ours_mfu"], "pct"),
                  na or fmt(r.get("hf_mfu"), "pct"),
                  f"{fmt(r['ours_loss0'], 'loss')} / {fmt(r.get('hf_loss0'), 'loss')}",
                  f"{fmt(r['params'], 'int')} / {fmt(r.get('hf_params'), 'int')}",
                  f"{fmt(r['trainable'], 'int')} / {fmt(r.get('hf_trainable'), 'int')}"]
                 for r in rows]), "",
          "MFU counts 4N + 6 N_lora + 8 L T d_attn FLOPs per token (`ttt_jax.train.metrics`).", ""]
