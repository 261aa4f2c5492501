"""Measurement 3, ``multitask``: K adapters trained by one vmapped ``jit_multitask_step`` vs the same K
tasks' steps one after another with ``jit_train_step`` (same work, ours on both sides)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import logging

from experiments.bench import harness, models
from experiments.bench.report import fmt, table
from ttt_jax.model import lora as lora_lib
from ttt_jax.model import transformer
from ttt_jax.train import steps


def run(cfg, env: dict) -> list[dict]:
  del env
  mc = cfg.multitask
  mcfg = models.model_config(mc.model, cfg, param_dtype=cfg.lora_base_param_dtype, remat=bool(mc.remat))
  lcfg, ocfg = models.lora_config(cfg), models.optim_config(mc.model)
  params = models.shared_params(mcfg, cfg.seed)
  apply_fn = functools.partial(transformer.forward_hidden, cfg=mcfg, lora_cfg=lcfg)  # as TTT runs it
  single = steps.jit_train_step(apply_fn, ocfg, lora=True, **models.jit_kw(cfg))
  B, T, rows = int(mc.batch_size), int(mc.seq_len), []
  for K in mc.ks:
    logging.info("multitask %s K=%d", mc.model, K)
    adapters = [models.init_lora(mcfg, lcfg, jax.random.key(cfg.seed + k)) for k in range(K)]
    batches = [jax.tree.map(jnp.asarray, models.synthetic_batch(mcfg.vocab_size, B, T, cfg.seed + k))
               for k in range(K)]
    multi = steps.jit_multitask_step(apply_fn, ocfg, **models.jit_kw(cfg))
    state_K = steps.init_multitask_state(lora_lib.stack(adapters), ocfg, jnp.full((K,), models.BIG, jnp.int32))
    t_vmap, _ = harness.time_train_step(cfg, multi, state_K, params,
                                        jax.tree.map(lambda *xs: jnp.stack(xs), *batches),
                                        what="multitask", name=f"multitask_{mc.model}_K{K}")
    del state_K
    states = [steps.init_state(jax.tree.map(jnp.copy, a), ocfg, models.BIG) for a in adapters]

    def sequential(states=states, batches=batches):
      losses = []
      for k in range(len(states)):
        states[k], m = single(states[k], params, batches[k])
        losses.append(m["loss"])
      return [s.trainable for s in states], losses

    t_seq, _ = harness.median_seconds(sequential, harness.jax_sync, warmup=cfg.warmup, iters=cfg.iters)
    del states
    tokens = K * B * T
    rows.append({"measurement": "multitask", "model": mc.model, "k": K, "batch": B, "seq_len": T,
                 "tokens": tokens, "vmapped_s": t_vmap, "sequential_s": t_seq,
                 "vmapped_tok_s": tokens / t_vmap, "sequential_tok_s": tokens / t_seq,
                 "speedup": t_seq / t_vmap})
  return rows


def markdown(rows: list[dict], env: dict) -> list[str]:
  del env
  return ["### 3. Many tasks at once: one vmapped step for K adapters vs K steps in a row "
          "(target: >= 3x for arc-small)", "",
          table(["model", "K", "B x T per task", "vmapped ms", "sequential ms", "throughput ratio",
                 "vmapped tok/s", "sequential tok/s"],
                [[r["model"], str(r["k"]), f"{r['batch']} x {r['seq_len']}", fmt(r["vmapped_s"], "ms"),
                  fmt(r["sequential_s"], "ms"), fmt(r["speedup"], "x"), fmt(r["vmapped_tok_s"], "int"),
                  fmt(r["sequential_tok_s"], "int")] for r in rows]), ""]
