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
  assert len(scripts) >= 6
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


def _resolves(cfg, dotted: str) -> bool:
  node = cfg
  for part in dotted.split("."):
    if part not in node:
      return False
    node = node[part]
  return True


def test_section_recipes_name_only_fields_and_flags_that_exist():
  """The issue 13/16/17 recipes: every --config.FIELD is a field of the pipeline config (or of
  finetune.py:cpu, which `cpu_model_ttt_gain.sh positions|model` trains with), and every other
  flag is one of the measurement binaries they call."""
  from experiments.configs import finetune, pipeline  # pylint: disable=g-import-not-at-top
  configs = [pipeline.get_config(), pipeline.get_config("no_ttt"), finetune.get_config("cpu")]
  known = set()
  for module in ("answer_logprob", "selection_table", "generated_tasks"):
    known |= _flags_of(f"experiments.{module}")
  names = ("common.sh", "cpu_model_ttt_gain.sh", "candidate_search_poe.sh", "selftrain_rounds.sh")
  for name in names:
    text = open(os.path.join(ROOT, "experiments", "recipes", name)).read()
    fields = re.findall(r"--config\.([a-z_.0-9]+)=", text)
    assert fields or name == "common.sh", name
    for field in fields:
      assert any(_resolves(c, field) for c in configs), (name, field)
    for flag in re.findall(r"--([a-z_]+)=", text):
      if flag != "config":
        assert flag in known, (name, flag)
    for script in re.findall(r"\$P:([a-z_]+)", text):  # presets named after $P
      assert pipeline.get_config(script) is not None
