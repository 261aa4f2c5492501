"""Documentation links: every relative link in README.md and docs/*.md points to an existing file
(and, with a #fragment, to an existing heading), and README.md stays short.

Also a script: ``python tests/test_docs_links.py [FILE.md ...]`` checks the given files (default:
every tracked-looking .md file of the repository) and prints each broken link.
"""

from __future__ import annotations

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 300

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose_lines(text: str) -> list[str]:
  """The lines outside fenced code blocks."""
  out, fenced = [], False
  for line in text.splitlines():
    if _FENCE.match(line):
      fenced = not fenced
      continue
    if not fenced:
      out.append(line)
  return out


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
  text = text.strip().lower()
  text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and underscores
  return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
  """Every heading anchor of a Markdown file (repeated headings get -1, -2, ... as on GitHub)."""
  with open(path, encoding="utf-8") as f:
    lines = _prose_lines(f.read())
  seen: dict[str, int] = {}
  out = set()
  for line in lines:
    m = _HEADING.match(line)
    if not m:
      continue
    s = slug(m.group(2))
    n = seen.get(s, 0)
    seen[s] = n + 1
    out.add(s if n == 0 else f"{s}-{n}")
  return out


def links(path: str) -> list[str]:
  """The link targets of a Markdown file, outside code blocks and inline code."""
  with open(path, encoding="utf-8") as f:
    lines = _prose_lines(f.read())
  return [m.group(1) for line in lines for m in _LINK.finditer(_INLINE_CODE.sub("", line))]


def broken_links(path: str) -> list[str]:
  """The relative links of ``path`` whose file (or heading) does not exist."""
  bad = []
  for target in links(path):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
      continue  # http:, https:, mailto: ...: not checked here
    file_part, _, fragment = target.partition("#")
    dest = (os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part
            else path)
    if not os.path.exists(dest):
      bad.append(f"{os.path.relpath(path, ROOT)}: {target} (no such file)")
    elif fragment and dest.endswith(".md") and fragment not in anchors(dest):
      bad.append(f"{os.path.relpath(path, ROOT)}: {target} (no heading #{fragment})")
  return bad


def doc_files() -> list[str]:
  return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def test_relative_links_resolve():
  bad = [b for p in doc_files() for b in broken_links(p)]
  assert not bad, "broken links:\n" + "\n".join(bad)


def test_docs_have_links_to_check():
  # Guards the checker itself: a regex that matched nothing would pass vacuously.
  assert any(t.startswith("docs/") for t in links(os.path.join(ROOT, "README.md")))
  assert any("#" in t for p in doc_files() for t in links(p))


def test_slug_follows_github():
  assert slug("Config fields (`experiments/configs/pipeline.py`)") == (
      "config-fields-experimentsconfigspipelinepy")
  assert slug("Attempt selection (`select.method`: `vote` | `poe` | `vote+poe`)") == (
      "attempt-selection-selectmethod-vote--poe--votepoe")


def test_readme_is_short():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    n = len(f.read().splitlines())
  assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it to {README_MAX_LINES}"


def test_readme_keeps_the_ci_test_command():
  # .ci/run runs the command between these markers.
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  block = text.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
  lines = [l for l in block.splitlines() if l.strip() and not l.startswith("```")]
  assert lines == ["pip install -c .ci/constraints.txt -e '.[test]' && python -m pytest -q"]


if __name__ == "__main__":
  files = sys.argv[1:] or sorted(
      p for p in glob.glob(os.path.join(ROOT, "**", "*.md"), recursive=True)
      if not any(part.startswith(".") or part in ("runs", "node_modules")
                 for part in os.path.relpath(p, ROOT).split(os.sep)))
  problems = [b for p in files for b in broken_links(os.path.abspath(p))]
  print("\n".join(problems) or f"all relative links resolve ({len(files)} files)")
  sys.exit(1 if problems else 0)
