"""Throughput bookkeeping: model FLOPs per token, device peak FLOP/s, MFU, ETA."""

from __future__ import annotations

import time
from typing import Any, Optional

import jax

# Dense bf16 peak FLOP/s per device, by ``device_kind`` substring (first match wins).
PEAK_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v4", 275e12), ("TPU v3", 123e12),
)


def peak_flops_per_device(device: Optional[jax.Device] = None) -> Optional[float]:
  kind = (device or jax.devices()[0]).device_kind
  for name, flops in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return flops
  return None  # CPU and unknown devices: MFU is not reported


def train_flops_per_token(n_params: int, n_layers: int, attn_dim: int, seq_len: int, *,
                          lora: bool, n_trainable: int = 0) -> float:
  """Model FLOPs of one training token (PaLM appendix B convention).

  Full fine-tuning: 6N for the matmuls plus 12*L*T*d for attention (T the padded length, an
  upper bound for causal attention). LoRA: the frozen base needs no weight gradients, so 4N
  plus 6 per adapter parameter, and 8*L*T*d for attention.
  """
  if lora:
    return 4.0 * n_params + 6.0 * n_trainable + 8.0 * n_layers * seq_len * attn_dim
  return 6.0 * n_params + 12.0 * n_layers * seq_len * attn_dim


class Throughput:
  """Wall-clock rates over a sliding log interval."""

  def __init__(self, total_steps: int, start_step: int = 0):
    self.total, self.start_step = total_steps, start_step
    self.t0 = self.t_last = time.perf_counter()
    self.tokens = 0.0
    self.flops = 0.0

  def add(self, tokens: float, flops: float) -> None:
    self.tokens += tokens
    self.flops += flops

  def report(self, step: int, n_devices: int, peak: Optional[float]) -> dict[str, Any]:
    now = time.perf_counter()
    dt = max(now - self.t_last, 1e-9)
    out = {"tokens_per_s": self.tokens / dt}
    if peak:
      out["mfu"] = self.flops / dt / (peak * n_devices)
    done = step - self.start_step
    if done > 0:
      out["eta_s"] = (now - self.t0) / done * (self.total - step)
    self.tokens = self.flops = 0.0
    self.t_last = now
    return out


def quiet_library_logs(prefixes: tuple[str, ...] = ("orbax",)) -> None:
  """Drops INFO lines that libraries log through absl (orbax logs every file it writes)."""
  import logging  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  class _Filter(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
      if record.levelno >= logging.WARNING:
        return True
      path = record.pathname.replace(os.sep, "/")
      return not any(f"/{p}/" in path for p in prefixes)

  logging.getLogger("absl").addFilter(_Filter())
