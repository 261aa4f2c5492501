r"""Training-step throughput (tokens/s) of model sizes x batch shapes on this machine.

Used to choose the CPU training recipe (docs/training.md): a full fine-tuning step of each
size on random episodes, compiled once, then the median of ``--iters`` timed steps. It first
measures this machine's jitted matmul rate in the same run, and prints each step's model
FLOP/s (6 x matmul parameters x tokens, plus the attention scores and values, computed in
full: 12 x layers x B x T^2 x q_dim) and its ratio to that rate (issue 28's figure).

  python -m experiments.train_throughput --sizes=128x4 --shapes=16x512,4x2048

``--attention=xla,blocked`` compares the explicit-mask attention with the blocked form that
skips the masked upper triangle (the model FLOPs count full attention for both). ``--decode``
then times greedy decoding of the first size and states its model FLOP/s against the same
matmul rate (2 x matmul params per token plus attention over the live cache), and its bytes
read (weights plus the live KV cache, every step) against this machine's read bandwidth,
measured in the same run. ``--decode_baseline=REV`` also times the decoder of git revision
REV (its ``ttt_jax/model/{transformer,decode}.py``, loaded beside the current ones) on the
same prompts, alternating calls, and checks the tokens are equal: a before/after in one run.
``--dot_profile`` times each step's matrix products alone (``experiments/bench/dot_profile.py``):
how long the step would take if nothing but its products cost anything.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ttt_jax.data import batching, tokens
from ttt_jax.model import config, decode, transformer
from ttt_jax.train import optim, steps

_SIZES = flags.DEFINE_list("sizes", ["64x2", "128x4", "192x4", "256x6"], "DIMxLAYERS per model")
_SHAPES = flags.DEFINE_list("shapes", ["8x1024", "16x512"], "BATCHxTOKENS per step")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "compute dtypes to compare")
_GRID = flags.DEFINE_bool("grid_positions", True, "use the grid-aware position option")
_ATTENTION = flags.DEFINE_list("attention", ["xla", "blocked"], "attention_impl values to compare")
_DECODE = flags.DEFINE_string("decode", "64x128+256", "greedy decode of the first size: ROWSxPROMPT+NEW ('' skips)")
_DECODE_BASELINE = flags.DEFINE_string("decode_baseline", "", "git revision whose decoder --decode also times")
_ITERS = flags.DEFINE_integer("iters", 5, "timed steps per cell")
_DOTS = flags.DEFINE_bool("dot_profile", False, "also time every matrix product of each step alone "
                          "(experiments/bench/dot_profile.py): the step's matmul bound on this machine")


def model_config(dim: int, layers: int, dtype: str, grid: bool, attention: str = "xla") -> config.ModelConfig:
  """A compact-vocabulary model of ``dim`` x ``layers`` (head size 32, MLP 3x, GQA 2:1 heads)."""
  heads = max(2, dim // 32)
  return config.ModelConfig(vocab_size=tokens.VOCAB_SIZE, dim=dim, n_layers=layers, n_heads=heads,
                            n_kv_heads=max(1, heads // 2), head_dim=32, ffn_dim=3 * dim,
                            max_seq_len=4096, dtype=dtype, grid_positions=grid, attention_impl=attention,
                            name=f"d{dim}l{layers}")


MATMUL_SHAPES = ((8192, 128, 384), (8192, 128, 128), (2048, 2048, 2048))


def matmul_rate(iters: int) -> dict[str, float]:
  """GFLOP/s of a jitted float32 ``a @ b`` for each (M, K, N) in MATMUL_SHAPES (median)."""
  out = {}
  for m, k, n in MATMUL_SHAPES:
    a = jnp.ones((m, k), jnp.float32)
    b = jnp.ones((k, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    t_end = time.perf_counter() + 0.5  # warm the thread pool: a cold first second runs at half rate
    while time.perf_counter() < t_end:
      jax.block_until_ready(f(a, b))
    times = []
    for _ in range(max(iters, 10)):
      t0 = time.perf_counter()
      jax.block_until_ready(f(a, b))
      times.append(time.perf_counter() - t0)
    out[f"{m}x{k}x{n}"] = 2 * m * k * n / statistics.median(times) / 1e9
  return out


def step_flops(mcfg: config.ModelConfig, batch: int, length: int) -> float:
  """Model FLOPs of one training step: 6 x matmul params x tokens + full attention."""
  d, L = mcfg.dim, mcfg.n_layers
  per_layer = d * (mcfg.q_dim + 2 * mcfg.kv_dim) + mcfg.q_dim * d + 3 * d * mcfg.ffn_dim
  matmul_params = L * per_layer + d * mcfg.vocab_size  # + the output head
  attention = 12 * L * batch * length * length * mcfg.q_dim
  return 6.0 * matmul_params * batch * length + attention


def measure(mcfg: config.ModelConfig, batch: int, length: int, iters: int) -> dict:
  """Median seconds of one full fine-tuning step; tokens/s; parameter count."""
  params = transformer.init_params(mcfg, jax.random.key(0))
  ocfg = optim.OptimConfig(learning_rate=1e-3, warmup_steps=1)
  state = steps.init_state(params, ocfg, 100)
  step = jax.jit(steps.make_train_step(functools.partial(transformer.forward_hidden, cfg=mcfg), ocfg,
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
  out = {"params": transformer.count_params(params), "step_s": sec, "tok_s": batch * length / sec,
         "gflops": step_flops(mcfg, batch, length) / sec / 1e9}
  if _DOTS.value:
    from experiments.bench import dot_profile  # pylint: disable=g-import-not-at-top
    out["dots"] = dot_profile.dot_bound(step, state, None, b)
  return out


def decode_flops_per_token(mcfg: config.ModelConfig, context: float) -> float:
  """FLOPs of one decoded token: 2 x matmul params + scores and values over ``context`` slots."""
  d = mcfg.dim
  per_layer = d * (mcfg.q_dim + 2 * mcfg.kv_dim) + mcfg.q_dim * d + 3 * d * mcfg.ffn_dim
  return 2.0 * (mcfg.n_layers * per_layer + d * mcfg.vocab_size) + 4.0 * mcfg.n_layers * context * mcfg.q_dim


def read_bandwidth(iters: int, n_bytes: int = 1 << 28) -> float:
  """GB/s of a jitted float32 sum over ``n_bytes`` (median): the rate a decode step can read at."""
  x = jnp.ones((n_bytes // 4,), jnp.float32)
  f = jax.jit(jnp.sum)
  jax.block_until_ready(f(x))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(f(x))
    times.append(time.perf_counter() - t0)
  return n_bytes / statistics.median(times) / 1e9


def decode_bytes(mcfg: config.ModelConfig, rows: int, prompt: int, new: int) -> float:
  """Bytes every decode step reads, summed over the steps: float32 weights plus the keys and
  values of the live slots of every row (the prefill not counted)."""
  per_layer = mcfg.dim * (mcfg.q_dim + 2 * mcfg.kv_dim) + mcfg.q_dim * mcfg.dim + 3 * mcfg.dim * mcfg.ffn_dim
  weights = 4.0 * (mcfg.n_layers * per_layer + mcfg.dim * mcfg.vocab_size)
  live = prompt + new / 2  # mean live slots over the steps
  return new * (weights + 4.0 * 2 * mcfg.n_layers * rows * live * mcfg.kv_dim)


def decoder_at(rev: str):
  """``ttt_jax.model.decode`` as of git revision ``rev``, importing that revision's transformer
  (every other module is the current one)."""
  root = pathlib.Path(__file__).resolve().parents[1]
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="decoder_at_"))
  modules = {}
  for name in ("transformer", "decode"):
    src = subprocess.run(["git", "-C", str(root), "show", f"{rev}:ttt_jax/model/{name}.py"], check=True,
                         capture_output=True, text=True).stdout
    src = src.replace("from ttt_jax.model import transformer\n", "")
    path = tmp / f"{name}_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
    module = importlib.util.module_from_spec(spec)
    if name == "decode":
      module.transformer = modules["transformer"]
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    modules[name] = module
  return modules["decode"]


def measure_decode(mcfg: config.ModelConfig, rows: int, prompt: int, new: int, iters: int,
                   baseline=None) -> dict:
  """Median seconds of ``decode.generate`` (prefill included) producing exactly ``new`` tokens a
  row; with a ``baseline`` decode module, its median too (calls alternate) and token equality."""
  params = transformer.init_params(mcfg, jax.random.key(0))
  toks = np.random.default_rng(1).integers(0, tokens.VOCAB_SIZE, (rows, prompt)).astype(np.int32)
  mask = np.ones((rows, prompt), bool)
  runs = {"s": decode, "baseline_s": baseline} if baseline else {"s": decode}
  runs = {k: functools.partial(m.generate, params, None, toks, mask, cfg=mcfg, max_new_tokens=new, eos_id=-1,
                               pad_id=tokens.PAD)  # an EOS id no token has: every row runs to the end
          for k, m in runs.items()}
  outs = {k: np.asarray(run()) for k, run in runs.items()}
  times = {k: [] for k in runs}
  for _ in range(iters):
    for k, run in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      times[k].append(time.perf_counter() - t0)
  out = {k: statistics.median(v) for k, v in times.items()}
  sec = out["s"]
  flops = rows * (new * decode_flops_per_token(mcfg, prompt + new / 2) + prompt * decode_flops_per_token(mcfg, prompt / 2))
  out.update(tok_s=rows * new / sec, gflops=flops / sec / 1e9, read_gbs=decode_bytes(mcfg, rows, prompt, new) / sec / 1e9)
  if baseline:
    out["same_tokens"] = bool(np.array_equal(outs["s"], outs["baseline_s"]))
  return out


def main(argv):
  del argv
  first = matmul_rate(_ITERS.value)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} (JAX {jax.__version__}, "
        f"backend {jax.default_backend()})")
  rows, dots = [], []
  for size in _SIZES.value:
    dim, layers = map(int, size.split("x"))
    for dtype in _DTYPES.value:
      for shape in _SHAPES.value:
        b, t = map(int, shape.split("x"))
        for attention in _ATTENTION.value:
          r = measure(model_config(dim, layers, dtype, _GRID.value, attention), b, t, _ITERS.value)
          rows.append((f"| {dim}x{layers} | {r['params'] / 1e6:.2f}M | {dtype} | {attention} | {b} x {t} | "
                       f"{r['step_s']:.2f} | {r['tok_s']:.0f} | {r['gflops']:.1f} |", r["gflops"]))
          if "dots" in r:
            dots.append((f"{dim}x{layers} {attention} {b} x {t}", r["step_s"], r["gflops"] * r["step_s"],
                         r["dots"]))
          print(f"measured {rows[-1][0]}", flush=True)
  dec = None
  if _DECODE.value:
    n_rows, rest = _DECODE.value.split("x")
    prompt, new = map(int, rest.split("+"))
    dim, layers = map(int, _SIZES.value[0].split("x"))
    baseline = decoder_at(_DECODE_BASELINE.value) if _DECODE_BASELINE.value else None
    dec = (dim, layers, n_rows, prompt, new,
           measure_decode(model_config(dim, layers, "float32", _GRID.value), int(n_rows), prompt, new, _ITERS.value,
                          baseline))
  bandwidth = read_bandwidth(_ITERS.value)
  last = matmul_rate(_ITERS.value)  # this machine's rate drifts: the reference is the better reading
  for name, rates in (("start", first), ("end", last)):
    print(f"matmul rate at the {name} (jitted float32 a @ b, GFLOP/s): " +
          ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
  ref = max(first["8192x128x384"], last["8192x128x384"])  # the 128-wide model's projection shape
  print(f"reference: {ref:.0f} GFLOP/s (8192x128x384, the better of the two readings)")
  print("| model | params | dtype | attention | batch x tokens | step (s) | tokens/s | model GFLOP/s | of matmul rate |")
  print("|---|---|---|---|---|---|---|---|---|")
  for line, gflops in rows:
    print(f"{line} {gflops / ref:.0%} |")
  if dots:
    print("\nThe steps' matrix products, each timed alone (experiments/bench/dot_profile.py):")
    print("| step | step (s) | products (distinct / calls) | products alone (s) | share of the step | "
          "products' own GFLOP/s | model GFLOP/s if only the products ran | of matmul rate | the rest (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, step_s, gflop, d in dots:
      print(f"| {name} | {step_s:.3f} | {d['products']} / {d['calls']} | {d['seconds']:.3f} | "
            f"{d['seconds'] / step_s:.0%} | {d['flops'] / d['seconds'] / 1e9:.1f} | {gflop / d['seconds']:.1f} | "
            f"{gflop / d['seconds'] / ref:.0%} | {step_s - d['seconds']:.3f} |")
    for name, _, _, d in dots:
      print(f"slowest products of {name}: " + "; ".join(
          f"{r['dot']} x{r['count']}: {r['seconds'] * 1e3:.1f} ms at {r['gflops']:.0f} GFLOP/s"
          for r in d["slowest"]))
  if dec:
    dim, layers, n_rows, prompt, new, r = dec
    print(f"decode {dim}x{layers}, {n_rows} rows x ({prompt} prompt + {new} new), greedy, float32: "
          f"{r['s']:.2f} s, {r['tok_s']:.0f} new tokens/s, {r['gflops']:.1f} model GFLOP/s "
          f"= {r['gflops'] / ref:.0%} of the matmul rate (the FLOP bound; prefill counted); "
          f"reads {r['read_gbs']:.1f} GB/s of weights and live KV cache = {r['read_gbs'] / bandwidth:.0%} "
          f"of this machine's read bandwidth ({bandwidth:.1f} GB/s, a jitted sum; prefill not counted)", flush=True)
    if "baseline_s" in r:
      print(f"decode baseline (revision {_DECODE_BASELINE.value}'s decoder, calls alternating): "
            f"{r['baseline_s']:.2f} s; this revision {r['s']:.2f} s = {r['baseline_s'] / r['s']:.2f}x its "
            f"tokens/s; tokens equal: {r['same_tokens']}", flush=True)


if __name__ == "__main__":
  app.run(main)
