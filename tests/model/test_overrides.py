"""``model_overrides`` sections: every ModelConfig field is a typed command-line flag in every
binary's config, unset fields change nothing, and set ones (bools included) reach the config."""

from __future__ import annotations

import dataclasses
import os

import jax
import pytest
from absl import flags
from ml_collections import config_flags

from ttt_jax.model import config, overrides, store, transformer
from ttt_jax.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = ("finetune.py", "finetune.py:quick", "finetune.py:gpu", "ttt.py", "ttt.py:quick",
           "pipeline.py", "benchmark.py:gpu", "benchmark.py:smoke")


def parse(config_spec: str, *args: str):
  """The config ``config_spec`` as a binary's command line ``args`` leaves it."""
  argv = ["prog", "--config=" + os.path.join(ROOT, "experiments", "configs", config_spec), *args]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
  fv(argv)
  return fv.config


def test_every_field_but_rope_scaling_is_a_typed_unset_placeholder():
  section = overrides.override_fields()
  names = {f.name for f in dataclasses.fields(config.ModelConfig)}
  assert set(section) == names - {"rope_scaling"}
  assert all(v is None for v in section.values())
  assert overrides.set_overrides(section) == {}
  types = overrides.field_types()
  assert types["dim"] is int and types["rope_theta"] is float and types["remat"] is bool
  assert types["attention_impl"] is str and types["dtype"] is str


def test_preset_values_are_kept_and_typos_refused():
  section = overrides.override_fields(dim=384, remat=True, rope_theta=100_000)
  assert overrides.set_overrides(section) == {"dim": 384, "remat": True, "rope_theta": 100_000.0}
  section.n_layers = 3  # what a test or a flag does to a placeholder
  assert overrides.set_overrides(section)["n_layers"] == 3
  with pytest.raises(TypeError):
    section.dim = "wide"
  with pytest.raises(ValueError, match="not a command-line ModelConfig field"):
    overrides.override_fields(dimm=3)
  with pytest.raises(ValueError, match="rope_scaling"):
    overrides.override_fields(rope_scaling={"rope_type": "default"})


def test_set_overrides_drops_unset_entries_of_any_mapping():
  assert overrides.set_overrides(None) == {}
  assert overrides.set_overrides({"dim": None, "remat": False, "name": "x"}) == {"remat": False,
                                                                               "name": "x"}


def sample(t: type) -> tuple[str, object]:
  """A flag string for type ``t`` and the value it should parse to (False: a bool that beats a
  preset's True)."""
  return {int: ("7", 7), float: ("0.25", 0.25), bool: ("False", False), str: ("xla", "xla")}[t]


@pytest.mark.parametrize("spec", CONFIGS)
def test_every_field_is_a_flag_of_every_binary_config(spec):
  untouched = parse(spec)
  preset = overrides.set_overrides(untouched.model_overrides)
  args, want = [], {}
  for name, t in overrides.field_types().items():
    text, value = sample(t)
    args.append(f"--config.model_overrides.{name}={text}")
    want[name] = value
  got = parse(spec, *args)
  assert overrides.set_overrides(got.model_overrides) == want
  one = parse(spec, "--config.model_overrides.dim=128")
  assert overrides.set_overrides(one.model_overrides) == {**preset, "dim": 128}


def test_bool_flags_both_ways():
  gpu = parse("finetune.py:gpu", "--config.model_overrides.remat=False",
              "--config.model_overrides.grid_positions=true", "--config.model_overrides.tie_embeddings")
  set_ = overrides.set_overrides(gpu.model_overrides)
  assert set_["remat"] is False and set_["grid_positions"] is True and set_["tie_embeddings"] is True
  assert overrides.set_overrides(parse("finetune.py:gpu").model_overrides)["remat"] is True


def test_untouched_sections_leave_configs_unchanged(tmp_path):
  quick = parse("finetune.py:quick")
  got = config.get_config("tiny", **overrides.set_overrides(quick.model_overrides))
  assert got == config.get_config("tiny").replace(max_seq_len=1024, dtype="float32")
  # a model directory's saved config + an empty section: the saved config itself
  saved = config.get_config("tiny").replace(grid_positions=True, remat=True, name="saved")
  store.save_model(str(tmp_path / "m"), transformer.init_params(saved, jax.random.key(0)), saved)
  _, loaded = checkpoint.load_base_model(
      str(tmp_path / "m"), "", overrides.set_overrides(parse("finetune.py").model_overrides))
  assert loaded == saved
  # the paper preset sets memory, not results (experiments/memory_plan.py): layer remat, and
  # attention "auto", which this CPU reads as the blockwise flash form
  assert overrides.set_overrides(parse("pipeline.py:paper").model_overrides) == {
      "remat": True, "attention_impl": "flash"}
  # the CPU-sized pipeline presets set one field: blocked attention, the rest as saved
  cpu = overrides.set_overrides(parse("pipeline.py").model_overrides)
  assert cpu == {"attention_impl": "blocked"}
  assert checkpoint.load_base_model(str(tmp_path / "m"), "", cpu)[1] == saved.replace(attention_impl="blocked")
  _, renamed = checkpoint.load_base_model(
      "", "tiny", overrides.set_overrides(parse("ttt.py", "--config.model_overrides.name=t2",
                                                "--config.model_overrides.dim=32").model_overrides))
  assert (renamed.name, renamed.dim) == ("t2", 32)
