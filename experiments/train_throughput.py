r"""Training-step throughput (tokens/s) of model sizes x batch shapes on this machine.

Used to choose the CPU training recipe (docs/training.md): a full fine-tuning step of each
size on random episodes, compiled once, then the median of ``--iters`` timed steps.

  python -m experiments.train_throughput --sizes=64x2,128x4,192x4,256x6 --shapes=8x1024,16x512
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ttt_jax.data import batching, tokens
from ttt_jax.model import config, transformer
from ttt_jax.train import optim, steps

_SIZES = flags.DEFINE_list("sizes", ["64x2", "128x4", "192x4", "256x6"], "DIMxLAYERS per model")
_SHAPES = flags.DEFINE_list("shapes", ["8x1024", "16x512"], "BATCHxTOKENS per step")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "compute dtypes to compare")
_GRID = flags.DEFINE_bool("grid_positions", True, "use the grid-aware position option")
_ITERS = flags.DEFINE_integer("iters", 5, "timed steps per cell")


def model_config(dim: int, layers: int, dtype: str, grid: bool) -> config.ModelConfig:
  """A compact-vocabulary model of ``dim`` x ``layers`` (head size 32, MLP 3x, GQA 2:1 heads)."""
  heads = max(2, dim // 32)
  return config.ModelConfig(vocab_size=tokens.VOCAB_SIZE, dim=dim, n_layers=layers, n_heads=heads,
                            n_kv_heads=max(1, heads // 2), head_dim=32, ffn_dim=3 * dim,
                            max_seq_len=4096, dtype=dtype, grid_positions=grid,
                            name=f"d{dim}l{layers}")


def measure(mcfg: config.ModelConfig, batch: int, length: int, iters: int) -> dict:
  """Median seconds of one full fine-tuning step; tokens/s; parameter count."""
  params = transformer.init_params(mcfg, jax.random.key(0))
  ocfg = optim.OptimConfig(learning_rate=1e-3, warmup_steps=1)
  state = steps.init_state(params, ocfg, 100)
  step = jax.jit(steps.make_train_step(functools.partial(transformer.forward, cfg=mcfg), ocfg,
                                       lora=False), donate_argnums=(0,))
  rng = np.random.default_rng(0)
  toks = rng.integers(0, tokens.VOCAB_SIZE, (batch, length)).astype(np.int32)
  mask = np.ones((batch, length), bool)
  b = batching.Batch(jnp.asarray(toks), jnp.asarray(np.tile(np.arange(length), (batch, 1))),
                     jnp.asarray(mask), jnp.asarray(toks), jnp.ones((batch, length), jnp.float32))
  state, m = step(state, None, b)  # compile
  jax.block_until_ready(m)
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    state, m = step(state, None, b)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  sec = statistics.median(times)
  return {"params": transformer.count_params(params), "step_s": sec, "tok_s": batch * length / sec}


def main(argv):
  del argv
  print("| model | params | dtype | batch x tokens | step (s) | tokens/s |")
  print("|---|---|---|---|---|---|")
  for size in _SIZES.value:
    dim, layers = map(int, size.split("x"))
    for dtype in _DTYPES.value:
      for shape in _SHAPES.value:
        b, t = map(int, shape.split("x"))
        r = measure(model_config(dim, layers, dtype, _GRID.value), b, t, _ITERS.value)
        print(f"| {dim}x{layers} | {r['params'] / 1e6:.2f}M | {dtype} | {b} x {t} | "
              f"{r['step_s']:.2f} | {r['tok_s']:.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
