import jax
import numpy as np

from ttt_jax.model import config, store, transformer


def test_round_trip_preserves_structure_config_and_logits(tmp_path):
  cfg = config.get_config("tiny", dtype="float32")
  params = transformer.init_params(cfg, jax.random.key(0))
  store.save_model(str(tmp_path), params, cfg, {"steps": 3}, dtype="float32")
  loaded, cfg2, meta = store.load_model(str(tmp_path))
  assert cfg2 == cfg and meta["steps"] == 3 and meta["stored_dtype"] == "float32"
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_bf16_storage_is_half_size_and_close(tmp_path):
  cfg = config.get_config("tiny", dtype="float32")
  params = transformer.init_params(cfg, jax.random.key(1))
  store.save_model(str(tmp_path / "f32"), params, cfg, dtype="float32")
  store.save_model(str(tmp_path / "bf16"), params, cfg)
  size = lambda d: (tmp_path / d / "params.safetensors").stat().st_size
  assert size("bf16") < 0.55 * size("f32")
  loaded, _, _ = store.load_model(str(tmp_path / "bf16"))
  tok = np.array([[13, 11, 1, 2, 10, 12]], np.int32)
  pos = np.arange(6)[None]
  mask = np.ones_like(tok, bool)
  a = transformer.forward(params, None, tok, pos, mask, cfg=cfg)
  b = transformer.forward(loaded, None, tok, pos, mask, cfg=cfg)
  np.testing.assert_allclose(a, b, atol=0.05)
