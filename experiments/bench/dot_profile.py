"""What a step's matrix products alone cost on this machine: a shape-by-shape matmul bound.

The matmul rate of one large square product says what the matrix units can do; a small
model's step is made of other products (contractions over a 32-wide head, weight gradients
that contract over every token, batched per-head scores). ``dot_bound`` walks the step's
jaxpr (forward and backward, through scans, remat and jit), collects every ``dot_general``
with how many times it runs, times each distinct one alone under ``jit`` on this machine, and
sums: the time the step would take if everything but its products were free. Model FLOPs
over that time is the best matmul-rate ratio the step's shapes allow here; the step's
measured time minus it is the rest (softmax, masks, norms, RoPE, gathers, the optimizer).
XLA may fuse a transpose into a product differently inside the step than alone, so the bound
is an estimate of the products' own cost, not a trace of the step.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Dot:
  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  lhs_dtype: str
  rhs_dtype: str
  dimension_numbers: Any
  out_dtype: Any

  @property
  def flops(self) -> int:
    (lc, rc), (lb, rb) = self.dimension_numbers
    contract = int(np.prod([self.lhs[i] for i in lc]))
    batch = int(np.prod([self.lhs[i] for i in lb]))
    lhs_free = int(np.prod([d for i, d in enumerate(self.lhs) if i not in lc and i not in lb]))
    rhs_free = int(np.prod([d for i, d in enumerate(self.rhs) if i not in rc and i not in rb]))
    return 2 * batch * contract * lhs_free * rhs_free

  def name(self) -> str:
    (lc, rc), (lb, rb) = self.dimension_numbers
    return f"{list(self.lhs)}x{list(self.rhs)} contract {list(lc)}/{list(rc)} batch {list(lb)}/{list(rb)}"


def _sub_jaxprs(value: Any):
  if isinstance(value, jex.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jex.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def collect_dots(jaxpr: jex.Jaxpr, times: int = 1, out: dict | None = None) -> dict[Dot, int]:
  """Every ``dot_general`` of ``jaxpr`` and its sub-jaxprs with how many times it runs (a scan's
  body counts ``length`` times; a while loop's body, whose trip count is not static, once)."""
  out = {} if out is None else out
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      l, r = (v.aval for v in eqn.invars)
      d = Dot(tuple(l.shape), tuple(r.shape), str(l.dtype), str(r.dtype),
              eqn.params["dimension_numbers"], eqn.params.get("preferred_element_type"))
      out[d] = out.get(d, 0) + times
      continue
    mult = times * (int(eqn.params["length"]) if eqn.primitive.name == "scan" else 1)
    branches = eqn.params.get("branches") if eqn.primitive.name == "cond" else None
    for name, value in eqn.params.items():
      if branches is not None and name == "branches":
        collect_dots(value[-1].jaxpr, mult, out)  # one branch runs: count the last
        continue
      for sub in _sub_jaxprs(value):
        collect_dots(sub, mult, out)
  return out


def time_dot(d: Dot, min_seconds: float = 0.2, iters: int = 5) -> float:
  """Median seconds of the product alone under jit (after ``min_seconds`` of warm-up)."""
  f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, d.dimension_numbers, preferred_element_type=d.out_dtype))
  a, b = jnp.ones(d.lhs, d.lhs_dtype), jnp.ones(d.rhs, d.rhs_dtype)
  t_end = time.perf_counter() + min_seconds
  while time.perf_counter() < t_end:
    jax.block_until_ready(f(a, b))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def dot_bound(fn: Callable, *args: Any, top: int = 5) -> dict:
  """Products of ``fn(*args)``: their FLOPs, their summed standalone time, the slowest few."""
  dots = collect_dots(jax.make_jaxpr(fn)(*args).jaxpr)
  rows = []
  for d, n in dots.items():
    t = time_dot(d)
    rows.append({"dot": d.name(), "count": n, "flops": d.flops * n, "seconds": t * n,
                 "gflops": d.flops / t / 1e9})
  rows.sort(key=lambda r: -r["seconds"])
  return {"products": len(rows), "calls": sum(r["count"] for r in rows),
          "flops": sum(r["flops"] for r in rows), "seconds": sum(r["seconds"] for r in rows),
          "slowest": rows[:top]}
