"""Suite-wide setting: XLA compiles the tests' programs with its backend optimisations off.

Most of the suite's time is XLA compiling tiny programs once each; the tests check values, not
speed, and every equality they assert holds between programs compiled the same way. The
binaries and benchmarks compile as usual. Set before JAX starts (this file loads first), and
inherited by the tests' subprocesses; ``TTT_JAX_TEST_XLA_OPT=1`` keeps XLA's defaults.
"""

import os

_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

if os.environ.get("TTT_JAX_TEST_XLA_OPT") != "1" and "xla_backend_optimization_level" not in \
    os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()
