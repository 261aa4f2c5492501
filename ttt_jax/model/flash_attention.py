"""Causal self-attention in pure JAX whose memory grows with ``T``, not ``T**2``.

The XLA path (``jax.nn.dot_product_attention`` with a Bx1xTxT mask) keeps every layer's
B x N x T x T scores for the backward pass: at the paper's 8192 tokens that is 17 GB per
sequence per layer. cuDNN's fused kernel keeps only the output and one log-sum-exp per query;
this is the same algorithm for backends without it (a TPU without a Pallas kernel, a CPU at long
``T``, and the memory plan, which compiles on the host: ``experiments/memory_plan.py``).

Queries and keys go in blocks of ``C``; for each query block a loop over the key blocks up to
the diagonal keeps a running max, sum and output (the online softmax), so one C x C block of
scores per head exists at a time. The backward pass (``jax.custom_vjp``) recomputes each block's
probabilities from the saved log-sum-exp: the residuals are ``q, k, v, out, lse``. Loops, not
unrolled blocks, so buffers are reused whatever the backend's scheduler does.

The rule is the explicit mask's (``transformer.explicit_attention_mask``): query ``t`` sees key
``s`` when ``s <= t`` and ``s`` is a real token, and always itself, so padding rows stay finite
and every row equals the XLA path's.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 128  # query and key rows per block
_FLOOR = -1e30  # the running max's start: finite, so a block with no visible key gives no NaN


def _pad_time(x, C):
  return jnp.pad(x, [(0, 0), (0, -x.shape[1] % C)] + [(0, 0)] * (x.ndim - 2))


def _query_layout(x_BxTxNxH, K, C):
  """BxKxGxTpxH: grouped heads, time padded to a multiple of ``C``."""
  B, _, N, H = x_BxTxNxH.shape
  return _pad_time(x_BxTxNxH, C).reshape(B, -1, K, N // K, H).transpose(0, 2, 3, 1, 4)


def _blocked(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, valid_BxT, C):
  """Padded to a multiple of ``C`` and laid out head-major: q BxKxGxTpxH (pre-scaled), k and v
  BxKxTpxH, valid BxTp (padding keys invalid)."""
  H, K = q_BxTxNxH.shape[3], k_BxTxKxH.shape[2]
  q = _query_layout(q_BxTxNxH, K, C)
  q = q * jnp.asarray(1.0 / math.sqrt(H), q.dtype)
  k, v = (_pad_time(x, C).transpose(0, 2, 1, 3) for x in (k_BxTxKxH, v_BxTxKxH))
  return q, k, v, _pad_time(valid_BxT, C)


def _slice(x, start, size, axis):
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


def _scores(q_i, k_j, valid_j, i, j, C):
  """Masked f32 scores BxKxGxCxC of query block ``i`` against key block ``j``."""
  s = jnp.einsum("bkgch,bksh->bkgcs", q_i, k_j, preferred_element_type=jnp.float32)
  q_slot = i * C + jnp.arange(C)[:, None]
  k_slot = j * C + jnp.arange(C)[None, :]
  allowed = (valid_j[:, None, None, None, :] & (k_slot <= q_slot)) | (k_slot == q_slot)
  return jnp.where(allowed, s, -jnp.inf)


def _forward(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, valid_BxT, C):
  """(out BxTxNxH, lse BxKxGxTp)."""
  B, T, N, H = q_BxTxNxH.shape
  q, k, v, valid = _blocked(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, valid_BxT, C)
  KG = q.shape[1:3]

  def query_block(i):
    q_i = _slice(q, i * C, C, 3)

    def key_block(j, carry):
      m, l, acc = carry
      s = _scores(q_i, _slice(k, j * C, C, 2), _slice(valid, j * C, C, 1), i, j, C)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      p = jnp.exp(s - m_new[..., None])
      alpha = jnp.exp(m - m_new)
      pv = jnp.einsum("bkgcs,bksh->bkgch", p.astype(v.dtype), _slice(v, j * C, C, 2),
                      preferred_element_type=jnp.float32)
      return m_new, l * alpha + jnp.sum(p, axis=-1), acc * alpha[..., None] + pv

    init = (jnp.full((B, *KG, C), _FLOOR, jnp.float32), jnp.zeros((B, *KG, C), jnp.float32),
            jnp.zeros((B, *KG, C, H), jnp.float32))
    m, l, acc = jax.lax.fori_loop(0, i + 1, key_block, init)  # l > 0: a query sees itself
    return acc / l[..., None], m + jnp.log(l)

  out_n, lse_n = jax.lax.map(query_block, jnp.arange(q.shape[3] // C))  # n x BxKxGxC(xH)
  out = jnp.moveaxis(out_n, 0, 3).reshape(B, *KG, -1, H)[:, :, :, :T]
  out = out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H).astype(q_BxTxNxH.dtype)
  return out, jnp.moveaxis(lse_n, 0, 3).reshape(B, *KG, -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def causal_attention(q_BxTxNxH: jax.Array, k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array,
                     valid_BxT: jax.Array, block: int = DEFAULT_BLOCK) -> jax.Array:
  """Attention output BxTxNxH of grouped-query heads (N a multiple of K) under the explicit
  mask's rule, with ``valid_BxT`` marking real tokens."""
  return _forward(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, valid_BxT, block)[0]


def _fwd(q, k, v, valid, block):
  out, lse = _forward(q, k, v, valid, block)
  return out, (q, k, v, valid, out, lse)


def _bwd(C, res, dout_BxTxNxH):
  q_in, k_in, v_in, valid_in, out_in, lse = res
  B, T, N, H = q_in.shape
  f32 = jnp.float32
  q, k, v, valid = _blocked(q_in, k_in, v_in, valid_in, C)
  dout, out = (_query_layout(x, k.shape[1], C).astype(f32) for x in (dout_BxTxNxH, out_in))
  delta = jnp.sum(dout * out, axis=-1)  # the softmax backward's row term, BxKxGxTp

  def query_block(carry, i):
    dk, dv = carry
    q_i, do_i = _slice(q, i * C, C, 3), _slice(dout, i * C, C, 3)
    lse_i, delta_i = _slice(lse, i * C, C, 3), _slice(delta, i * C, C, 3)

    def key_block(j, c):
      dq_i, dk, dv = c
      k_j, v_j = _slice(k, j * C, C, 2), _slice(v, j * C, C, 2)
      p = jnp.exp(_scores(q_i, k_j, _slice(valid, j * C, C, 1), i, j, C) - lse_i[..., None])
      dp = jnp.einsum("bkgch,bksh->bkgcs", do_i, v_j.astype(f32))
      ds = p * (dp - delta_i[..., None])
      dq_i = dq_i + jnp.einsum("bkgcs,bksh->bkgch", ds, k_j.astype(f32))
      add = lambda acc, x: jax.lax.dynamic_update_slice_in_dim(acc, _slice(acc, j * C, C, 2) + x, j * C, 2)
      dk = add(dk, jnp.einsum("bkgcs,bkgch->bksh", ds, q_i.astype(f32)))
      dv = add(dv, jnp.einsum("bkgcs,bkgch->bksh", p, do_i))
      return dq_i, dk, dv

    dq_i, dk, dv = jax.lax.fori_loop(0, i + 1, key_block, (jnp.zeros(q_i.shape, f32), dk, dv))
    return (dk, dv), dq_i

  zeros = jnp.zeros(k.shape, f32)
  (dk, dv), dq_n = jax.lax.scan(query_block, (zeros, zeros), jnp.arange(q.shape[3] // C))
  K, G = q.shape[1:3]
  dq = jnp.moveaxis(dq_n, 0, 3).reshape(B, K, G, -1, H)[:, :, :, :T] / math.sqrt(H)
  dq = dq.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)
  unlay = lambda x: x[:, :, :T].transpose(0, 2, 1, 3)
  return dq.astype(q_in.dtype), unlay(dk).astype(k_in.dtype), unlay(dv).astype(v_in.dtype), None


causal_attention.defvjp(_fwd, _bwd)
