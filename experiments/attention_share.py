r"""Share of a CPU training step spent in attention, by differences (issue 28's profile).

Times one jitted forward + backward of the 128x4 compact-vocabulary model three ways: as is,
with ``jax.nn.dot_product_attention`` replaced by a copy of the values (the step without
attention's work), and with the blocked form at several block sizes.

  python -m experiments.attention_share --batch=16 --tokens=512
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import train_throughput
from ttt_jax.model import transformer

_BATCH = flags.DEFINE_integer("batch", 16, "sequences per step")
_TOKENS = flags.DEFINE_integer("tokens", 512, "tokens per sequence")
_BLOCKS = flags.DEFINE_list("blocks", ["64", "128", "256"], "query block sizes of the blocked form")


def step_ms(cfg, toks_BxT, iters: int = 5) -> float:
  """Median milliseconds of value_and_grad of the mean log-probability of token 0."""
  params = transformer.init_params(cfg, jax.random.key(0))
  mask = jnp.ones(toks_BxT.shape, bool)
  pos = transformer.positions_from_mask(mask)

  def loss(p):
    return jnp.mean(jax.nn.log_softmax(transformer.forward(p, None, toks_BxT, pos, mask, cfg=cfg))[..., 0])

  f = jax.jit(jax.value_and_grad(loss))
  jax.block_until_ready(f(params))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(f(params))
    times.append(time.perf_counter() - t)
  return 1000 * statistics.median(times)


def _values_only(q, k, v, mask=None, **_):
  del k, mask
  return jnp.repeat(v, q.shape[2] // v.shape[2], axis=2)


def main(argv):
  del argv
  B, T = _BATCH.value, _TOKENS.value
  cfg = train_throughput.model_config(128, 4, "float32", True)
  toks = jnp.asarray(np.random.default_rng(0).integers(0, 16, size=(B, T)), jnp.int32)
  rows = [("explicit mask", step_ms(cfg, toks))]
  real = jax.nn.dot_product_attention
  jax.nn.dot_product_attention = _values_only
  try:
    rows.append(("attention removed", step_ms(cfg, toks)))
  finally:
    jax.nn.dot_product_attention = real
  for blk in _BLOCKS.value:
    transformer.ATTENTION_BLOCK = int(blk)
    rows.append((f"blocked, {blk}-query blocks", step_ms(cfg.replace(attention_impl="blocked"), toks)))
  print(f"| 128x4, {B} x {T} | step ms | tokens/s |\n|---|---|---|")
  for name, ms in rows:
    print(f"| {name} | {ms:.0f} | {B * T / ms * 1000:.0f} |")
  print(f"attention's share of the explicit-mask step: {(rows[0][1] - rows[1][1]) / rows[0][1]:.0%}")


if __name__ == "__main__":
  app.run(main)
