"""The recipe scripts behind RESULTS.md sections parse, and name only flags their binaries define."""

from __future__ import annotations

import glob
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_recipe_script_parses():
  scripts = glob.glob(os.path.join(ROOT, "experiments", "recipes", "*.sh"))
  assert len(scripts) >= 3
  for path in scripts:
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, (path, r.stderr)


def test_pair_format_recipes_use_flags_that_exist():
  from experiments import taskemb_eval  # pylint: disable=unused-import,g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  known = set(flags.FLAGS)
  for name in ("pair_format_ablations.sh", "pair_format_selection.sh"):
    text = open(os.path.join(ROOT, "experiments", "recipes", name)).read()
    for flag in re.findall(r"--([a-z_]+)=", text):
      if flag != "config":
        assert flag in known, (name, flag)
    for field in re.findall(r"--config\.([a-z_]+)=", text):  # taskemb_train's config fields
      from experiments.configs import taskemb  # pylint: disable=g-import-not-at-top
      assert field in taskemb.get_config("cpu"), (name, field)
