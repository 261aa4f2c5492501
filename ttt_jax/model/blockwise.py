"""Token log-probabilities a block of tokens at a time, never the whole BxTxV logits tensor.

At a Llama vocabulary (128,256) the float32 logits of 8 x 2 x 8192 tokens alone take ~67 GB,
and a log-softmax copy as much again. Here each block of ``block`` tokens computes its logits
from the last hidden states (``transformer.forward_hidden``), reduces them to the target's
log-probability (and whether it is the argmax), and drops them; ``jax.checkpoint`` makes the
backward pass recompute a block's logits instead of saving them, so peak memory holds one
B x block x V tensor. As levanter's blockwise cross-entropy and tunix's chunked loss do.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from ttt_jax.model.transformer import Hidden

DEFAULT_BLOCK = 512  # tokens per block at most
BLOCK_BYTES = 256 << 20  # float32 logits per block at most (rows x block x vocabulary)


def auto_block(rows: int, vocab: int) -> int:
  """Tokens per block: ``DEFAULT_BLOCK``, halved until a block's float32 logits fit
  ``BLOCK_BYTES`` (a Llama vocabulary with 8 rows: 64 tokens), at least 16. Any block gives
  the same values: each token's log-probability is its own."""
  block = DEFAULT_BLOCK
  while block > 16 and rows * block * vocab * 4 > BLOCK_BYTES:
    block //= 2
  return block


@jax.checkpoint
def _block_scores(states_BxCxD, head_DxV, targets_BxC):
  logits_BxCxV = jnp.dot(states_BxCxD, head_DxV, preferred_element_type=jnp.float32)
  truth_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
  # An exact tie counts for the truth (``ttt_jax.infer.scoring``'s rule); no gradient through it.
  top_BxC = truth_BxC >= jax.lax.stop_gradient(jnp.max(logits_BxCxV, axis=-1))
  return truth_BxC - lse_BxC, top_BxC


def target_logprobs(hidden: Hidden, targets_BxT: jax.Array, *, block: Optional[int] = None
                    ) -> tuple[jax.Array, jax.Array]:
  """(log p(target) float32 BxT, target is the argmax bool BxT) at every position, where
  ``hidden`` holds the states that predict ``targets_BxT`` (already shifted by the caller).
  ``block``: tokens per block (None: ``auto_block``)."""
  states_BxTxD, head_DxV = hidden
  B, T, D = states_BxTxD.shape
  block = block or auto_block(B, head_DxV.shape[-1])
  n = -(-T // block)
  pad = n * block - T
  states = jnp.pad(states_BxTxD, ((0, 0), (0, pad), (0, 0))).reshape(B, n, block, D).swapaxes(0, 1)
  targets = jnp.pad(targets_BxT, ((0, 0), (0, pad))).reshape(B, n, block).swapaxes(0, 1)
  logp_NxBxC, top_NxBxC = jax.lax.map(lambda st: _block_scores(st[0], head_DxV, st[1]), (states, targets))
  unblock = lambda a_NxBxC: a_NxBxC.swapaxes(0, 1).reshape(B, n * block)[:, :T]
  return unblock(logp_NxBxC), unblock(top_NxBxC)


def token_nll(hidden: Hidden, targets_BxT: jax.Array, *, block: Optional[int] = None) -> jax.Array:
  """Per-token negative log-likelihood in float32 (``steps.token_nll`` without the logits)."""
  return -target_logprobs(hidden, targets_BxT, block=block)[0]
