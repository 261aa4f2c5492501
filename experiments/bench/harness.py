"""What every measurement shares: timing, profiling, the device and its limits.

Timing: ``warmup`` untimed calls (the first compiles), then the median of ``iters`` calls, each
ended by ``jax.block_until_ready`` / ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import time
from typing import Any, Callable, Optional

import jax
from absl import logging

from experiments.bench import hf_torch
from ttt_jax.train import metrics

# HBM bytes/s per device, by ``device_kind`` substring (first match wins). Peak FLOP/s comes from
# ``ttt_jax.train.metrics.PEAK_FLOPS``.
HBM_BANDWIDTH = (
    ("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12), ("H200", 4.8e12),
    ("A100", 2.0e12), ("L4", 0.3e12), ("TPU v6", 1.64e12), ("TPU v5p", 2.76e12), ("TPU v5", 0.82e12),
    ("TPU v4", 1.2e12),
)


def hbm_bandwidth_per_device(device: Optional[jax.Device] = None) -> Optional[float]:
  kind = (device or jax.devices()[0]).device_kind
  for name, bw in HBM_BANDWIDTH:
    if name.lower() in kind.lower():
      return bw
  return None


def median_seconds(call: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int, iters: int,
                   clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
  """Median wall time of ``iters`` synced calls after ``warmup`` untimed ones; also the first output.

  ``clock`` is injectable so the arithmetic can be tested without timing anything."""
  if iters < 1:
    raise ValueError(f"iters must be >= 1, got {iters}")
  first = None
  for i in range(warmup):
    out = sync(call())
    first = out if i == 0 else first
  times = []
  for _ in range(iters):
    t0 = clock()
    out = sync(call())
    times.append(clock() - t0)
    first = out if first is None else first
  return statistics.median(times), first


def jax_sync(x):
  return jax.block_until_ready(x)


def profiled(cfg, what: str, name: str):
  """A ``jax.profiler`` trace into ``cfg.profile_dir/name`` when ``what`` is the profiled measurement."""
  if cfg.profile_dir and cfg.profile_what == what:
    path = os.path.join(cfg.profile_dir, name)
    logging.info("profiling %s into %s", name, path)
    return jax.profiler.trace(path)
  return contextlib.nullcontext()


def environment(cfg) -> dict:
  """Device, peaks and versions recorded beside the figures."""
  dev = jax.devices()[0]
  env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "jax_backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
         "python": platform.python_version(), "jax": jax.__version__, "host": platform.machine()}
  import jaxlib  # pylint: disable=g-import-not-at-top
  env["jaxlib"] = jaxlib.__version__
  env["peak_flops"] = float(cfg.peak_flops) or metrics.peak_flops_per_device(dev)
  env["hbm_bandwidth"] = float(cfg.hbm_bandwidth) or hbm_bandwidth_per_device(dev)
  env["hf"] = bool(cfg.hf) and hf_torch.hf_available()
  if cfg.hf and not env["hf"]:
    logging.warning("torch / transformers / peft not importable: HF columns are skipped")
  if env["hf"]:
    env.update(hf_torch.versions())
  return env


def time_train_step(cfg, step, state, frozen, batch, *, what: str, name: str) -> tuple[float, Any]:
  """Median seconds of ``state, metrics = step(state, frozen, batch)`` (the state carried from call
  to call, traced when ``what`` is profiled) and the first call's loss."""
  box = [state]

  def call():
    box[0], m = step(box[0], frozen, batch)
    return box[0].trainable, m["loss"]

  with profiled(cfg, what, name):
    seconds, (_, loss) = median_seconds(call, jax_sync, warmup=cfg.warmup, iters=cfg.iters)
  return seconds, loss
