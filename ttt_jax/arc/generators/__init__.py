"""Procedural ARC-like task generators (numpy only), for initial fine-tuning.

``FAMILIES`` maps a family name to a ``Family``; ``generate(name, rng, difficulty)``
returns a verified ``ttt_jax.arc.task.Task``. See docs/generators.md.
"""

from ttt_jax.arc.generators.core import (FAMILIES, Family, GenerationError, Retry, d4,
                                         generate, generate_task_set, randomise, register)
# Importing the theme modules registers their families.
from ttt_jax.arc.generators import (composite, counting, drawing, geometry, logic,  # noqa: F401
                                    objects, patterns)

__all__ = ["FAMILIES", "Family", "GenerationError", "Retry", "d4", "generate",
           "generate_task_set", "randomise", "register"]
