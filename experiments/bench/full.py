"""Measurement 2, ``full``: one full fine-tuning AdamW step (ours): tokens/s and model FLOP utilisation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import logging

from experiments.bench import harness, models
from experiments.bench.report import fmt, no_peak, table
from ttt_jax.model import transformer
from ttt_jax.train import steps


def run_model(cfg, model_name: str, env: dict) -> list[dict]:
  """Every sequence length of one model (float32 master weights, ``model_overrides`` compute)."""
  mcfg = models.model_config(model_name, cfg, remat=bool(cfg.full.remat))
  ocfg = models.optim_config(model_name)
  apply_fn = functools.partial(transformer.forward_hidden, cfg=mcfg)  # as fine-tuning runs it
  B, rows = int(cfg.full.batch_size), []
  params = models.shared_params(mcfg, cfg.seed)
  n_params = transformer.count_params(params)
  for T in cfg.full.seq_lens:
    logging.info("full %s T=%d", model_name, T)
    batch = jax.tree.map(jnp.asarray, models.synthetic_batch(mcfg.vocab_size, B, T, cfg.seed + T))
    step = steps.jit_train_step(apply_fn, ocfg, lora=False, **models.jit_kw(cfg))
    state = steps.init_state(jax.tree.map(jnp.copy, params), ocfg, models.BIG)
    seconds, _ = harness.time_train_step(cfg, step, state, None, batch, what="full", name=f"full_{model_name}_{T}")
    del state
    flops = models.train_flops(mcfg, n_params, B, T, lora=False)
    rows.append({"measurement": "full", "model": model_name, "batch": B, "seq_len": T, "tokens": B * T,
                 "params": n_params, "param_dtype": mcfg.param_dtype, "dtype": mcfg.dtype, "ours_s": seconds,
                 "ours_tok_s": B * T / seconds, "flops": flops, "ours_tflops_s": flops / seconds / 1e12,
                 "ours_mfu": models.mfu(flops, seconds, env["peak_flops"])})
  return rows


def run(cfg, env: dict) -> list[dict]:
  return [r for name in cfg.full.models for r in run_model(cfg, name, env)]


def markdown(rows: list[dict], env: dict) -> list[str]:
  na = no_peak(env)
  return ["### 2. Full fine-tuning step (target: MFU >= 50% for llama-3.2-1b at 4096)", "",
          table(["model", "B x T", "step ms", "tok/s", "TFLOP/s", "MFU"],
                [[r["model"], f"{r['batch']} x {r['seq_len']}", fmt(r["ours_s"], "ms"),
                  fmt(r["ours_tok_s"], "int"), f"{r['ours_tflops_s']:.3f}", na or fmt(r["ours_mfu"], "pct")]
                 for r in rows]), "",
          f"MFU counts 6N + 12 L T d_attn FLOPs per token; {rows[0]['param_dtype']} master weights, "
          f"{rows[0]['dtype']} compute.", ""]
