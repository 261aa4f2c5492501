from __future__ import annotations

import jax
import pytest

from ttt_jax.data import tokens
from ttt_jax.model import config, transformer

# Published parameter counts (HF model cards / safetensors metadata).
PUBLISHED = {
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3-8b": 8_030_261_248,
    "llama-3.1-8b": 8_030_261_248,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_presets_match_published_counts_without_allocating(name):
  cfg = config.get_config(name)
  shapes = jax.eval_shape(lambda k: transformer.init_params(cfg, k), jax.random.key(0))
  assert transformer.count_params(shapes) == PUBLISHED[name]


def test_arc_small_is_compact_vocab_and_in_range():
  cfg = config.get_config("arc-small")
  assert cfg.vocab_size == tokens.VOCAB_SIZE
  n = transformer.count_params(jax.eval_shape(lambda k: transformer.init_params(cfg, k), jax.random.key(0)))
  assert 10e6 <= n <= 30e6


def test_config_is_hashable_and_replace_works():
  cfg = config.get_config("llama-3.1-8b")
  assert hash(cfg) == hash(config.get_config("llama-3.1-8b"))
  other = cfg.replace(remat=True)
  assert other.remat and not cfg.remat and other != cfg
  assert config.get_config("tiny", dim=32).dim == 32


def test_bad_configs_raise_with_names():
  with pytest.raises(ValueError, match="n_kv_heads"):
    config.get_config("tiny", n_kv_heads=3)
  with pytest.raises(ValueError, match="rope"):
    config.get_config("tiny", rope_scaling={"rope_type": "yarn", "factor": 2.0})
  with pytest.raises(KeyError, match="unknown model preset"):
    config.get_config("gpt-5")


@pytest.mark.parametrize("new_layout", [False, True])
def test_from_hf_config_round_trips_through_to_hf_config(new_layout):
  cfg = config.get_config("llama-3.2-1b")
  hf = config.to_hf_config(cfg)
  if new_layout:  # transformers>=5 writes rope_parameters instead of rope_theta/rope_scaling
    hf["rope_parameters"] = dict(hf.pop("rope_scaling"), rope_theta=hf.pop("rope_theta"))
  back = config.from_hf_config(hf, name=cfg.name)
  assert back == cfg
