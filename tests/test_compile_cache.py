import socket

import jax
import jax.numpy as jnp

from ttt_jax import compile_cache


def test_enable_sets_jax_cache_and_off_leaves_it(tmp_path):
  before = jax.config.jax_compilation_cache_dir
  assert compile_cache.enable("") == "" and compile_cache.enable("none") == ""
  assert jax.config.jax_compilation_cache_dir == before
  try:
    got = compile_cache.enable(str(tmp_path / "c" / "{host}"), min_compile_seconds=0.0)
    assert got == str(tmp_path / "c" / socket.gethostname())
    assert jax.config.jax_compilation_cache_dir == got
    jax.jit(lambda x: jnp.cos(x) * 3.0 + 1.5)(jnp.ones(7)).block_until_ready()
    assert any((tmp_path / "c" / socket.gethostname()).iterdir())  # an executable was stored
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
