"""ttt_jax.atomic_json and grids_equal: the shared helpers for files and grids."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ttt_jax import atomic_json
from ttt_jax.arc.task import grids_equal


def test_write_json_replaces_whole_files_and_leaves_nothing_behind_on_failure(tmp_path):
  path = str(tmp_path / "a.json")
  atomic_json.write_json(path, {"x": 1}, indent=1)
  atomic_json.write_json(path, {"x": 2})
  assert json.load(open(path)) == {"x": 2}
  with pytest.raises(TypeError):
    atomic_json.write_json(path, {"x": object()})  # not serialisable: the old file stays whole
  assert json.load(open(path)) == {"x": 2} and os.listdir(tmp_path) == ["a.json"]


def test_grids_equal_takes_arrays_or_nested_lists_and_none_equals_nothing():
  g = np.array([[1, 2], [3, 4]], np.int8)
  assert grids_equal(g, [[1, 2], [3, 4]]) and grids_equal([[1, 2], [3, 4]], g)
  assert not grids_equal(g, g.T) and not grids_equal(g, g[:1]) and not grids_equal(g.reshape(1, 4), g)
  assert not grids_equal(None, g) and not grids_equal(None, None)
