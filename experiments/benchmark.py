r"""Speed of the TTT building blocks against HF transformers + peft and against the hardware.

  python -m experiments.benchmark --config=experiments/configs/benchmark.py:gpu
  python -m experiments.benchmark --config=experiments/configs/benchmark.py:smoke   # CPU, seconds
  python -m experiments.benchmark --config=experiments/configs/benchmark.py:gpu --config.only=decode \
      --profile_dir=runs/profile --profile_what=decode

Five measurements, each a ratio or rate measured in this one run on one device, one module each
in ``experiments/bench/``: ``lora`` (the TTT step vs HF + peft), ``full`` (full fine-tuning MFU),
``multitask`` (K adapters vmapped vs one after another), ``decode`` (augmented decoding vs HF
generate and the HBM roofline) and ``pipeline`` (TTT and prediction tasks per minute).
``run_benchmarks(cfg)`` returns the rows and appends a section to ``cfg.benchmarks_md``.
"""

from __future__ import annotations

import os

# torch shares the GPU with JAX in this process: do not let XLA grab 75% of it up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import shlex  # pylint: disable=g-import-not-at-top,g-bad-import-order
import sys
import warnings

from absl import app, flags, logging

from experiments import cli
from experiments.bench import decode, full, harness, lora, models, multitask, pipeline, report

# Run order (decode before the training measurements claim memory); tables print in report order.
MODULES = {"lora": lora, "decode": decode, "multitask": multitask, "full": full, "pipeline": pipeline}
MEASUREMENTS = ("lora", "full", "multitask", "decode", "pipeline")


def write_reports(rows: list[dict], env: dict, cfg, command: str) -> str:
  """Appends this run's section to ``cfg.benchmarks_md``, writes ``cfg.json_out``; returns the section."""
  section = report.markdown_section(rows, env, cfg, command, {m: MODULES[m].markdown for m in MEASUREMENTS})
  report.save(section, rows, env, cfg, command)
  return section


def run_benchmarks(cfg, command: str = "") -> list[dict]:
  """Runs the enabled measurements of ``cfg`` (see experiments/configs/benchmark.py); returns the rows.

  Also appends a section to ``cfg.benchmarks_md`` and writes ``cfg.json_out`` (each skipped when "").
  """
  if cfg.profile_dir and cfg.profile_what not in MEASUREMENTS:
    raise ValueError(f"profile_what must be one of {MEASUREMENTS}, got {cfg.profile_what!r}")
  only = [m.strip() for m in cfg.get("only", "").split(",") if m.strip()]
  if set(only) - set(MEASUREMENTS):
    raise ValueError(f"only: unknown measurements {sorted(set(only) - set(MEASUREMENTS))}; known {MEASUREMENTS}")
  command = command or "experiments.benchmark.run_benchmarks(<config preset %r>)" % cfg.preset
  env = harness.environment(cfg)
  logging.info("benchmark on %s (peak %s FLOP/s, HBM %s B/s, HF %s)", env["device_kind"], env["peak_flops"],
               env["hbm_bandwidth"], env["hf"])
  rows: list[dict] = []
  models.clear_shared_params()
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")  # CPU cannot donate
    for name, module in MODULES.items():
      if (name in only) if only else bool(cfg[name].enabled):
        rows += module.run(cfg, env)
  models.clear_shared_params()
  write_reports(rows, env, cfg, command)
  return rows


def _define_flags():
  """Flags exist only when run as a binary, so importing ``run_benchmarks`` defines none."""
  cli.define_config_file(
      "config", os.path.join(os.path.dirname(__file__), "configs", "benchmark.py") + ":gpu",
      "Benchmark config file (and preset after ':').")
  flags.DEFINE_string("profile_dir", None, "Write a jax.profiler trace of one measurement here.")
  flags.DEFINE_enum("profile_what", None, list(MEASUREMENTS), "Which measurement to profile.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS.config
  if flags.FLAGS.profile_dir:
    cfg.profile_dir = flags.FLAGS.profile_dir
  if flags.FLAGS.profile_what:
    cfg.profile_what = flags.FLAGS.profile_what
  command = "python -m experiments.benchmark " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  rows = run_benchmarks(cfg, command=command)
  print(f"benchmark: {len(rows)} rows -> {cfg.benchmarks_md or '(no markdown)'}, {cfg.json_out or '(no json)'}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
