"""CI's constraints file pins every package setup.py asks for, so a clean clone installs what CI
was last green with."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _canon(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _setup_requirements() -> list[str]:
  text = open(os.path.join(ROOT, "setup.py")).read()
  core = re.search(r"CORE = \[(.*?)\]", text, re.S).group(1)
  test = re.search(r'"test": \[(.*?)\]', text, re.S).group(1)
  return [re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in re.findall(r'"([^"]+)"', core + test)]


def test_constraints_pin_every_requirement_exactly():
  pins = {}
  for line in open(os.path.join(ROOT, ".ci", "constraints.txt")):
    line = line.split("#")[0].strip()
    if line:
      name, sep, version = line.partition("==")
      assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.]*", version), line  # exact, no local label
      pins[_canon(name)] = version
  reqs = _setup_requirements()
  assert {"jax", "flax", "optax", "torch"} <= {_canon(r) for r in reqs}
  assert not [r for r in reqs if _canon(r) not in pins], pins
  assert "jaxlib" in pins  # transitive packages are pinned too


def test_ci_installs_with_the_constraints():
  readme = open(os.path.join(ROOT, "README.md")).read()
  block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
  assert "-c .ci/constraints.txt" in block
