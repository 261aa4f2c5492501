from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from ttt_jax.parallel import mesh as mesh_lib
from ttt_jax.parallel import sharding

MESH = AbstractMesh((2, 2, 2), ("data", "fsdp", "model"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rules_align_to_trailing_dims():
  assert sharding.spec_for("layers/attn/q/kernel", (64, 128), MESH) == P("fsdp", "model")
  assert sharding.spec_for("layers/attn/q/kernel", (2, 64, 128), MESH) == P(None, "fsdp", "model")
  assert sharding.spec_for("layers/mlp/down/kernel", (2, 128, 64), MESH) == P(None, "model", "fsdp")
  assert sharding.spec_for("layers/attn_norm/scale", (2, 64), MESH) == P(None, None)
  # a mesh axis that does not divide its dimension is dropped, not an error
  assert sharding.spec_for("embed", (15, 64), MESH) == P(None, "fsdp")
  # task axis first; an axis is never used twice in one spec
  assert sharding.spec_for("layers/mlp/up/kernel", (4, 2, 64, 128), MESH, lead=P(("data", "fsdp"))) \
      == P(("data", "fsdp"), None, None, "model")
  assert sharding.spec_for("step", (), MESH, lead=P(("data", "fsdp"))) == P()


def test_mesh_sizes():
  m = mesh_lib.make_mesh()
  assert m.axis_names == ("data", "fsdp", "model") and m.devices.size == jax.device_count()
  with pytest.raises(ValueError, match="needs"):
    mesh_lib.make_mesh(data=3, fsdp=1, model=1)
  assert not mesh_lib.initialize_multihost()  # single process: a no-op


def test_sharded_step_matches_unsharded_on_8_cpu_devices():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  res = subprocess.run([sys.executable, os.path.join(ROOT, "tests/parallel/sharded_step_check.py")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert res.returncode == 0 and "SHARDED_OK" in res.stdout, res.stdout + res.stderr
