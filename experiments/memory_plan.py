r"""Prints how much device memory each pipeline stage needs, without weights or a GPU.

  python -m experiments.memory_plan --model=llama-3.2-1b --config=experiments/configs/pipeline.py:paper
  python -m experiments.memory_plan --model=llama-3.1-8b --config=experiments/configs/pipeline.py:paper \
      --remat --out=runs/memory_8b.md

Each stage's jitted function (TTT step, prefill, decode loop, scoring, DFS step) is lowered on
abstract shapes from the pipeline config and compiled for this machine's backend; the table
gives XLA's compiled memory analysis (arguments, temporaries, peak, in GiB) and whether the
peak fits an H100 (80 GiB) and an H200 (141 GiB). ``ttt_jax.pipeline.memory_plan`` says how
to read it. ``--model``: a preset name (``ttt_jax.model.config.PRESETS``) or an HF Llama
directory (only its ``config.json`` is read). Exit code 1 when ``--require_fit`` names a size
some stage exceeds.
"""

import os
import time

from absl import flags

from experiments import cli

_CONFIG = cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "pipeline.py") + ":paper",
    "pipeline config file (and preset after ':') whose shapes are planned")
_MODEL = flags.DEFINE_string("model", "llama-3.2-1b", "model preset name or HF Llama directory")
_PARAM_DTYPE = flags.DEFINE_string("param_dtype", "bfloat16", "dtype the base weights are held in")
_REMAT = flags.DEFINE_bool("remat", None, "recompute each layer in the backward pass (default: the "
                           "config's model_overrides.remat, else off)")
_ATTENTION = flags.DEFINE_string("attention_impl", "cudnn", "attention of the cache-free passes (training, "
                                 "prefill, scoring): cudnn (what a GPU runs; modelled by flash on a host "
                                 "without one), flash, blocked, xla")
_STAGES = flags.DEFINE_list("stages", [], "stages to plan (default all: ttt, prefill, decode, scoring, dfs)")
_REQUIRE = flags.DEFINE_float("require_fit", 0.0, "exit 1 unless every stage's peak fits this many GiB")
_OUT = flags.DEFINE_string("out", "", "also append the table (markdown) to this file")


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f"memory_plan: unexpected arguments {argv[1:]}")
  from ttt_jax.model import config as config_lib, hf, overrides  # pylint: disable=g-import-not-at-top
  from ttt_jax.pipeline import memory_plan, ttt_stage  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  over = overrides.set_overrides(cfg.get("model_overrides"))
  if _REMAT.value is not None:
    over["remat"] = _REMAT.value
  over.update(param_dtype=_PARAM_DTYPE.value, attention_impl=None if _ATTENTION.value == "xla" else _ATTENTION.value)
  if _MODEL.value in config_lib.PRESETS:
    mcfg = config_lib.get_config(_MODEL.value, **over)
  elif os.path.isfile(os.path.join(_MODEL.value, "config.json")):
    mcfg = hf.load_config(_MODEL.value, **over)
  else:
    cli._usage_error("memory_plan", f"--model={_MODEL.value!r} is neither a preset ({', '.join(sorted(config_lib.PRESETS))}) "  # pylint: disable=protected-access
                     "nor a directory with a config.json")
  unknown = sorted(set(_STAGES.value) - set(memory_plan.STAGES))
  if unknown:
    cli._usage_error("memory_plan", f"unknown stages {unknown}; known: {', '.join(memory_plan.STAGES)}")  # pylint: disable=protected-access
  lcfg, ocfg, _ = ttt_stage.ttt_configs(cfg, mcfg)
  shapes = memory_plan.from_pipeline_config(cfg, mcfg)
  compiled, note = memory_plan.host_model_config(mcfg)
  import jax  # pylint: disable=g-import-not-at-top
  header = (f"memory plan: {mcfg.name} ({mcfg.num_params / 1e9:.2f}B parameters, {mcfg.param_dtype} weights, "
            f"{mcfg.dtype} compute, remat {'on' if mcfg.remat else 'off'}), LoRA rank {lcfg.rank} on "
            f"{','.join(lcfg.targets)}; {note}; compiled for {jax.default_backend()} "
            f"({flags.FLAGS['config'].config_filename})")  # pylint: disable=unsubscriptable-object
  print(header, flush=True)
  rows = []
  for stage in _STAGES.value or list(memory_plan.STAGES):
    t0 = time.perf_counter()
    rows += memory_plan.stage_memories(compiled, lcfg, ocfg, shapes, [stage])
    print(f"  {stage}: peak {rows[-1].peak_bytes / memory_plan.GIB:.2f} GiB "
          f"(compiled in {time.perf_counter() - t0:.0f} s)", flush=True)
  table = memory_plan.markdown_table(rows)
  print(table)
  if _OUT.value:
    with open(_OUT.value, "a") as f:
      f.write(f"{header}\n\n{table}\n\n")
  if _REQUIRE.value and not memory_plan.fits(rows, _REQUIRE.value):
    raise SystemExit(1)


if __name__ == "__main__":
  cli.run(main)
