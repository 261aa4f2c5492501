"""Atomic JSON writes: a reader (a resumed run, another process) sees the whole file or none."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, value: Any, **dump_kwargs: Any) -> None:
  """Writes ``value`` to a temporary sibling, then renames it over ``path``; no temporary is left."""
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
  try:
    with open(tmp, "w") as f:
      json.dump(value, f, **dump_kwargs)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
