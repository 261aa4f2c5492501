"""The recipe scripts behind RESULTS.md sections parse, and name only flags their binaries define."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_recipe_script_parses():
  scripts = glob.glob(os.path.join(ROOT, "experiments", "recipes", "*.sh"))
  assert len(scripts) >= 3
  for path in scripts:
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, (path, r.stderr)


def _flags_of(module):
  """Flag names a binary defines, listed by a fresh process that imports it.

  Importing the binary here would register its flags in this process's global
  FLAGS, where another binary's tests may already have defined the same names.
  """
  code = (f"import {module}\nfrom absl import flags\n"
          "print('\\n'.join(sorted(flags.FLAGS)))")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                     cwd=ROOT, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
  return set(r.stdout.split())


def test_pair_format_recipes_use_flags_that_exist():
  from experiments.configs import taskemb  # pylint: disable=g-import-not-at-top
  known = _flags_of("experiments.taskemb_eval")
  assert {"tasks", "steps", "select"} <= known
  for name in ("pair_format_ablations.sh", "pair_format_selection.sh"):
    text = open(os.path.join(ROOT, "experiments", "recipes", name)).read()
    for flag in re.findall(r"--([a-z_]+)=", text):
      if flag != "config":
        assert flag in known, (name, flag)
    for field in re.findall(r"--config\.([a-z_]+)=", text):  # taskemb_train's config fields
      assert field in taskemb.get_config("cpu"), (name, field)
