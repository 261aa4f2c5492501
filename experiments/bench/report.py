"""BENCHMARKS.md sections: provenance lines, then each measurement's own table; and the JSON rows."""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Optional

from ttt_jax.model import overrides as overrides_lib

HEADER = """# Benchmarks

Written by `experiments/benchmark.py` (see the README's Benchmarks section). Every figure is a ratio measured in one
run on one device; sections are appended, newest last.

"""


def fmt(x, kind: str = "") -> str:
  if x is None:
    return "n/a"
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  if kind == "ms":
    return f"{1e3 * x:.2f}"
  if kind == "pct":
    return f"{100 * x:.1f}%"
  if kind == "x":
    return f"{x:.2f}x"
  if kind == "int":
    return f"{x:,.0f}"
  if kind == "loss":
    return f"{x:.4f}"
  return str(x)


def table(header: list[str], lines: list[list[str]]) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(line) + " |" for line in lines]
  return "\n".join(out)


def no_peak(env: dict) -> Optional[str]:
  """What an MFU cell says when the device's peak FLOP/s is unknown (else None)."""
  return None if env["peak_flops"] else "n/a (no peak)"


def no_bandwidth(env: dict) -> Optional[str]:
  """What a roofline cell says when the device's HBM bandwidth is unknown (else None)."""
  return None if env["hbm_bandwidth"] else "n/a (no bandwidth)"


def provenance(env: dict, cfg, command: str) -> list[str]:
  versions = f"jax {env['jax']}, jaxlib {env['jaxlib']}, python {env['python']}"
  if env["hf"]:
    versions += f", torch {env['torch']}, transformers {env['transformers']}, peft {env['peft']}"
  device = f"{env['device_kind']} x{env['device_count']} (JAX backend {env['jax_backend']})"
  if env["hf"]:
    device += f"; torch on {env.get('torch_device_name', env['torch_device'])}"
  return [f"## {cfg.label}: {env['date']}", "",
          f"- device: {device}",
          f"- date: {env['date']}",
          f"- versions: {versions}",
          f"- peak bf16: {fmt(env['peak_flops'] and env['peak_flops'] / 1e12)} TFLOP/s; "
          f"HBM: {fmt(env['hbm_bandwidth'] and env['hbm_bandwidth'] / 1e12)} TB/s"
          + ("" if env["peak_flops"] and env["hbm_bandwidth"] else
             " (no table entry for this device, so MFU / roofline columns say n/a; "
             "give them with --config.peak_flops / --config.hbm_bandwidth)"),
          f"- config: preset `{cfg.preset}`, model overrides "
          f"{overrides_lib.set_overrides(cfg.model_overrides)}, LoRA rank "
          f"{cfg.lora_cfg.rank} alpha {cfg.lora_cfg.alpha} targets {','.join(cfg.lora_cfg.targets)}; "
          f"median of {cfg.iters} timed calls after {cfg.warmup} warm-up"
          + (f"; train steps compiled with {dict(cfg.compiler_options)}" if cfg.get("compiler_options") else ""),
          f"- command: `{command}`", ""]


def markdown_section(rows: list[dict], env: dict, cfg, command: str,
                     tables: dict[str, Callable[[list[dict], dict], list[str]]]) -> str:
  """One BENCHMARKS.md section: provenance, then ``tables[m](rows of m, env)`` for each measurement run."""
  lines = provenance(env, cfg, command)
  for name, make in tables.items():
    mine = [r for r in rows if r["measurement"] == name]
    if mine:
      lines += make(mine, env)
  return "\n".join(lines) + "\n"


def save(section: str, rows: list[dict], env: dict, cfg, command: str) -> None:
  """Appends ``section`` to ``cfg.benchmarks_md`` and writes ``cfg.json_out`` (each skipped when "")."""
  if cfg.benchmarks_md:
    os.makedirs(os.path.dirname(os.path.abspath(cfg.benchmarks_md)), exist_ok=True)
    new = not os.path.exists(cfg.benchmarks_md)
    with open(cfg.benchmarks_md, "a") as f:
      f.write((HEADER if new else "\n") + section)
  if cfg.json_out:
    os.makedirs(os.path.dirname(os.path.abspath(cfg.json_out)), exist_ok=True)
    with open(cfg.json_out, "w") as f:
      json.dump({"env": env, "command": command, "config": cfg.to_dict(), "rows": rows}, f, indent=1,
                default=str)
