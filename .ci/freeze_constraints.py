"""Writes .ci/constraints.txt: the exact installed version of every package ttt_jax[test] needs.

Run in an environment where `pip install -e '.[test]'` just passed the suite:
    python .ci/freeze_constraints.py > .ci/constraints.txt
It walks the requirement graph from ttt_jax (with the `test` extra) through
importlib.metadata, so unrelated packages installed on the machine are left out.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys

ROOT, EXTRAS = "ttt_jax", {"test"}


def _canon(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _deps(dist: md.Distribution, extras: set[str]) -> list[str]:
  out = []
  for req in dist.requires or []:
    name, _, marker = req.partition(";")
    marker = marker.strip()
    if marker:
      # keep a requirement whose marker holds here, for the extras asked for
      from packaging.markers import Marker  # pylint: disable=g-import-not-at-top
      envs = [{"extra": e} for e in (extras or {""})]
      if not any(Marker(marker).evaluate(env) for env in envs):
        continue
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?", name)
    sub = set(x.strip() for x in (m.group(2) or "[]")[1:-1].split(",") if x.strip())
    out.append((m.group(1), sub))
  return out


def main() -> None:
  seen: dict[str, str] = {}
  todo = [(ROOT, EXTRAS)]
  done: set[tuple[str, frozenset]] = set()
  while todo:
    name, extras = todo.pop()
    key = (_canon(name), frozenset(extras))
    if key in done:
      continue
    done.add(key)
    try:
      dist = md.distribution(name)
    except md.PackageNotFoundError:
      continue  # an optional dependency whose marker did not select it here
    if _canon(name) != ROOT.replace("_", "-"):
      # "2.13.0+cpu" -> "2.13.0": a pin without the local label matches the CPU build
      seen[_canon(dist.metadata["Name"])] = dist.version.split("+")[0]
    todo.extend(_deps(dist, extras))
  print("# Exact versions CI was last green with (.ci/freeze_constraints.py; see README).")
  print(f"# Python {sys.version.split()[0]}.")
  for name in sorted(seen):
    print(f"{name}=={seen[name]}")


if __name__ == "__main__":
  main()
