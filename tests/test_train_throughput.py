"""The model-FLOP count behind the CPU-speed ratio: 6 x the parameters that are matmul weights."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments import train_throughput
from ttt_jax.model import store, transformer


def test_step_flops_counts_every_matmul_weight_and_the_attention():
  cfg = train_throughput.model_config(64, 2, "float32", True)
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  flat = store.flatten(params)
  matmul = sum(int(np.prod(v.shape)) for k, v in flat.items() if k.endswith("kernel") or k == "lm_head")
  attention = 12 * cfg.n_layers * 3 * 50 * 50 * cfg.q_dim
  assert train_throughput.step_flops(cfg, 3, 50) == 6 * matmul * 3 * 50 + attention


def test_decode_flops_count_every_matmul_weight_once_and_the_live_cache():
  cfg = train_throughput.model_config(64, 2, "float32", True)
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  flat = store.flatten(params)
  matmul = sum(int(np.prod(v.shape)) for k, v in flat.items() if k.endswith("kernel") or k == "lm_head")
  assert train_throughput.decode_flops_per_token(cfg, 100) == 2 * matmul + 4 * cfg.n_layers * 100 * cfg.q_dim


def test_decode_measurement_runs():
  cfg = train_throughput.model_config(64, 2, "float32", True)
  r = train_throughput.measure_decode(cfg, rows=2, prompt=8, new=4, iters=1)
  # the rates are the counted work over the measured time (how fast is BENCHMARKS.md's business)
  assert r["tok_s"] == pytest.approx(2 * 4 / r["s"])
  assert r["read_gbs"] == pytest.approx(train_throughput.decode_bytes(cfg, 2, 8, 4) / r["s"] / 1e9)


def test_decode_bytes_count_every_matmul_weight_and_the_live_cache_each_step():
  cfg = train_throughput.model_config(64, 2, "float32", True)
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  flat = store.flatten(params)
  matmul = sum(int(np.prod(v.shape)) for k, v in flat.items() if k.endswith("kernel") or k == "lm_head")
  live = 8 + 4 / 2
  assert train_throughput.decode_bytes(cfg, 3, 8, 4) == 4 * (4 * matmul + 4 * 2 * cfg.n_layers * 3 * live * cfg.kv_dim)


def test_baseline_decoder_of_this_revision_gives_the_same_tokens():
  """``--decode_baseline`` loads a revision's decoder beside the current one: at HEAD both
  decode the same tokens (a clean clone has the history it reads)."""
  cfg = train_throughput.model_config(64, 2, "float32", True)
  r = train_throughput.measure_decode(cfg, rows=2, prompt=8, new=4, iters=1,
                                      baseline=train_throughput.decoder_at("HEAD"))
  assert r["same_tokens"] and {"s", "baseline_s", "tok_s", "read_gbs"} <= set(r)


def test_dot_profile_counts_every_product_of_forward_and_backward_through_a_scan():
  """A 3-layer scanned MLP's gradient: forward x @ w and, per layer, the two backward products
  (dx and dw), each counted once per scan step; FLOPs are 2 x M x K x N per product."""
  import jax.numpy as jnp
  from experiments.bench import dot_profile

  def loss(w_LxDxD, x_BxD):
    y, _ = jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x_BxD, w_LxDxD)
    return jnp.sum(y)

  B, D, L = 6, 8, 3
  jaxpr = jax.make_jaxpr(jax.grad(loss))(jnp.ones((L, D, D)), jnp.ones((B, D)))
  dots = dot_profile.collect_dots(jaxpr.jaxpr)
  assert sum(dots.values()) == 3 * L  # forward, dx, dw per layer
  assert sum(d.flops * n for d, n in dots.items()) == 3 * L * 2 * B * D * D
  r = dot_profile.dot_bound(jax.grad(loss), jnp.ones((L, D, D)), jnp.ones((B, D)))
  assert r["calls"] == 3 * L and r["flops"] == 3 * L * 2 * B * D * D and "seconds" in r
