"""Run as one of two processes (see test_multihost.py): exchanges and barriers across processes."""

from __future__ import annotations

import json
import sys

import jax

from ttt_jax.parallel import mesh, multihost


def main(out_path: str) -> None:
  mesh.initialize_multihost()
  me = multihost.process_index()
  # Values of different lengths (the gather pads them) come back in process order.
  gathered = multihost.allgather_json("lengths", {"process": me, "pad": "x" * (50 * me)})
  multihost.barrier("after_lengths")
  try:  # processes at different barriers: an error on both, not a silent pass
    multihost.barrier(f"only_process_{me}")
    mismatch = None
  except AssertionError as e:
    mismatch = str(e)
  with open(out_path, "w") as f:
    json.dump({"count": jax.process_count(), "gathered": gathered, "mismatch": mismatch}, f)


if __name__ == "__main__":
  main(sys.argv[1])
