"""Every Python snippet in README.md and docs/*.md runs as written: a file's snippets run in
order in one fresh process from the repository root (a later snippet may use an earlier one's
names), so the documentation cannot drift from the API."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return _SNIPPET.findall(f.read())


DOCS = [p for p in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
        if snippets(p)]


def test_the_docs_have_snippets():
  assert len(DOCS) >= 5, DOCS


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCS, ids=lambda p: os.path.relpath(p, ROOT))
def test_snippets_run(path):
  code = "\n".join(snippets(path))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, f"{os.path.relpath(path, ROOT)}'s snippets failed:\n{proc.stderr[-3000:]}"
