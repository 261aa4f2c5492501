"""The model-FLOP count behind the CPU-speed ratio: 6 x the parameters that are matmul weights."""

from __future__ import annotations

import jax
import numpy as np

from experiments import train_throughput
from ttt_jax.model import store, transformer


def test_step_flops_counts_every_matmul_weight_and_the_attention():
  cfg = train_throughput.model_config(64, 2, "float32", True)
  params = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  flat = store.flatten(params)
  matmul = sum(int(np.prod(v.shape)) for k, v in flat.items() if k.endswith("kernel") or k == "lm_head")
  attention = 12 * cfg.n_layers * 3 * 50 * 50 * cfg.q_dim
  assert train_throughput.step_flops(cfg, 3, 50) == 6 * matmul * 3 * 50 + attention
