"""PEFT export: the adapter loaded by ``peft`` on the HF model gives the JAX logits."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttt_jax.model import hf, lora, transformer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from tests.model.test_hf import _hf_logits, _hf_model, _tokens  # noqa: E402


def _nonzero_b(adapter, seed):
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jax.random.normal(jax.random.key(seed), x.shape) * 0.2 if p[-1].key == "b" else x, adapter)


@pytest.mark.parametrize("targets", [("q", "v", "o", "gate", "up", "down"), ("k", "down")])
def test_exported_adapter_matches_peft_on_hf_model(tmp_path, targets):
  model = _hf_model("gqa_sharded", seed=1)
  base_dir, out_dir = str(tmp_path / "base"), str(tmp_path / "adapter")
  model.save_pretrained(base_dir)
  params, cfg = hf.load_checkpoint(base_dir)
  cfg = cfg.replace(dtype="float32")
  lcfg = lora.LoraConfig(rank=4, alpha=8.0, targets=targets)
  adapter = _nonzero_b(lora.init_lora(cfg, lcfg, jax.random.key(0)), 1)
  hf.export_peft_adapter(adapter, lcfg, cfg, out_dir, base_model_name_or_path=base_dir)
  with open(os.path.join(out_dir, "adapter_config.json")) as f:
    assert json.load(f)["r"] == 4

  toks = _tokens()
  mask = jnp.ones(toks.shape, bool)
  fwd = jax.jit(lambda p, a, t: transformer.forward(p, a, t, transformer.positions_from_mask(mask), mask, cfg=cfg,
                                                    lora_cfg=lcfg))
  ours = np.asarray(fwd(params, adapter, jnp.asarray(toks)))
  base = _hf_logits(model, toks)
  assert np.max(np.abs(ours - base)) > 1e-2  # the adapter matters
  ref = _hf_logits(peft.PeftModel.from_pretrained(model, out_dir).eval(), toks)
  err = np.max(np.abs(ours - ref))
  assert err <= 1e-4, err

  back, lcfg_back = hf.load_peft_adapter(out_dir, cfg)
  assert lcfg_back == lcfg
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), back, adapter)
