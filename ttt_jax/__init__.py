"""ttt_jax: test-time training for ARC in pure JAX (after Akyürek et al., arXiv 2411.07279)."""

__version__ = "0.1.0"
