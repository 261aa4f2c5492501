"""Parity with transformers.LlamaForCausalLM (torch, CPU, float32) on tiny random checkpoints."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import config, hf, lora, transformer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, T = 48, 24
CASES = {
    # GQA (4 query heads over 2 kv heads), untied head, weights sharded over several files with an index.
    "gqa_sharded": dict(rope_theta=10_000.0, tie_word_embeddings=False, shard="40KB"),
    # The llama3 rope scaling with a short original context, so all three frequency bands occur, and tied embeddings.
    "llama3_tied": dict(rope_theta=500_000.0, tie_word_embeddings=True, shard=None,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
}


def _hf_model(case, seed=0):
  kw = {k: dict(v) if isinstance(v, dict) else v for k, v in CASES[case].items() if k != "shard"}  # HF mutates
  torch.manual_seed(seed)
  hcfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                                  max_position_embeddings=256, **kw)
  model = transformers.LlamaForCausalLM(hcfg).eval()
  with torch.no_grad():  # HF inits norms to 1; randomise them so the scales are checked too
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  """case -> (HF model, directory it was saved to with save_pretrained)."""
  out = {}
  for case in CASES:
    model = _hf_model(case)
    path = str(tmp_path_factory.mktemp(case))
    shard = CASES[case]["shard"]
    model.save_pretrained(path, **({"max_shard_size": shard} if shard else {}))
    out[case] = (model, path)
  return out


@pytest.fixture(params=sorted(CASES))
def saved(request, checkpoints):
  return (request.param, *checkpoints[request.param])


def _tokens():
  return np.random.default_rng(0).integers(0, VOCAB, (2, T))


def _hf_logits(model, toks):
  with torch.no_grad():
    return model(torch.as_tensor(toks)).logits.float().numpy()


def test_load_checkpoint_matches_transformers_logits(saved):
  case, model, path = saved
  if CASES[case]["shard"]:
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
  params, cfg = hf.load_checkpoint(path, dtype="float32")
  cfg = cfg.replace(dtype="float32")
  assert cfg.tie_embeddings == CASES[case]["tie_word_embeddings"]
  assert ("lm_head" in params) != cfg.tie_embeddings
  toks = _tokens()
  mask = jnp.ones(toks.shape, bool)
  ours = jax.jit(lambda p, t, m: transformer.forward(p, None, t, transformer.positions_from_mask(m), m, cfg=cfg))(
      params, jnp.asarray(toks), mask)
  ref = _hf_logits(model, toks)
  err = np.max(np.abs(np.asarray(ours) - ref))
  assert err <= 1e-4, err


def test_config_from_hf_config_json(saved):
  case, model, path = saved
  cfg = hf.load_config(path)
  assert (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim) == (4, 2, 16, 96)
  assert cfg.rope_theta == CASES[case]["rope_theta"]
  expected = CASES[case].get("rope_scaling")
  assert cfg.rope_scaling == (dict(expected) if expected else None)


def test_load_rejects_unknown_and_missing_tensors(checkpoints, tmp_path):
  from safetensors.numpy import load_file, save_file
  _, path = checkpoints["llama3_tied"]  # the single-file one
  tensors = load_file(os.path.join(path, "model.safetensors"))
  for f in ("config.json",):
    with open(os.path.join(path, f)) as src, open(tmp_path / f, "w") as dst:
      dst.write(src.read())
  save_file(dict(tensors, **{"model.extra.weight": np.zeros(3, np.float32)}), str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match="model.extra.weight"):
    hf.load_checkpoint(str(tmp_path))
  tensors.pop("model.layers.1.mlp.up_proj.weight")
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"lacks .*up.*\[1\]"):
    hf.load_checkpoint(str(tmp_path))
