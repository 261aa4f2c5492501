"""JAX's persistent compilation cache, switched on by the binaries.

On 2 CPU cores most of a short pipeline run is XLA compiling the decode loop (minutes);
a cache directory makes every later run with the same shapes load those executables
instead. It is JAX's own cache (keyed on the program, its shapes, the JAX/XLA version and
the device). ``{host}`` in the path becomes this machine's name, so a home directory shared
by machines with different CPUs never hands one machine's executable to another.
"""

from __future__ import annotations

import os
import socket

from absl import logging


def enable(path: str, min_compile_seconds: float = 1.0) -> str:
  """Caches every compilation slower than ``min_compile_seconds`` under ``path`` ("" or
  "none": leave JAX's setting alone). Returns the directory used, or ""."""
  if not path or path.lower() == "none":
    return ""
  import jax  # deferred: configs import this module without JAX
  path = os.path.abspath(os.path.expanduser(path.replace("{host}", socket.gethostname())))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
  logging.info("JAX compilation cache: %s", path)
  return path
