"""The transforms that compute U for an SRU++ layer (paper eq. 5-7 and Figure 2).

  SRUppAttention   Q = x W_q;  K, V = Q W_k, Q W_v over [memory ; segment];
                   U = layernorm(Q + alpha * A) W_o  with A = softmax(Q K^T / sqrt(d') + mask) V
  ProjectedLinear  U = layernorm(x W_1) W_2           (layers without attention, Figure 2b)

Both map [batch, length, d_in] -> [batch, length, out_features] with d' = d_proj inner features.
Decoding one step at a time: `SRUppAttention.init_cache` computes the keys and values of a memory
(e.g. an encoder's output) once into a `KVCache` with room for `max_len` positions, and
`SRUppAttention.step` appends the new positions' keys and values and attends causally, equal to
`__call__` over [memory ; all positions] with the causal mask.
Initialisation follows `sru.SRUppAttention` / `sru.SRUppProjectedLinear`: Xavier-uniform matrices,
alpha = 0, and the last matrix scaled by sqrt(1 - dropout).
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from srupp_jax.nn.linear import linear, norm


def check_heads(d_proj: int, num_heads: int, *, prefix: str = "") -> None:
    """The one check of an attention size against its heads; ValueError naming both (after
    `prefix`, e.g. "model.")."""
    if d_proj < 1:
        raise ValueError(f"{prefix}d_proj={d_proj}; expected >= 1")
    if num_heads < 1 or d_proj % num_heads:
        raise ValueError(f"{prefix}d_proj={d_proj} is not divisible by {prefix}num_heads="
                         f"{num_heads}")


def attention_layers(num_layers: int, k: int = 1, last_n: Optional[int] = None, *,
                     prefix: str = "") -> tuple[bool, ...]:
    """Which layers have attention: every k-th (k=1: all) or only the last `last_n` (None or
    -1: use k), as a tuple (a model keeps it as static, hashable structure).

    The one home of the placement rules; ValueError names the bad value, its name after
    `prefix` (SRUppConfig passes "model.", so the message names the config key)."""
    last_n = None if last_n is None or last_n == -1 else last_n
    if k < 1:
        raise ValueError(f"{prefix}k={k}; expected >= 1 (attention every k layers)")
    if last_n is not None and not 0 <= last_n <= num_layers:
        raise ValueError(f"{prefix}attention_last_n={last_n}; expected -1 or 0..{num_layers} "
                         "(-1: attention every k layers)")
    if last_n is not None and k != 1:
        raise ValueError(f"{prefix}k={k} and {prefix}attention_last_n={last_n}: set only one "
                         "(attention every k layers, or only in the last n)")
    if last_n is not None:
        return tuple(num_layers - i <= last_n for i in range(num_layers))
    return tuple((i + 1) % k == 0 for i in range(num_layers))


def attention_mask(q_len: int, mem_len: int, *, causal: bool = True,
                   same_length: bool = False, window: Optional[int] = None
                   ) -> Optional[jax.Array]:
    """Boolean mask [q_len, mem_len + q_len], True where query i may attend to key j.

    Keys are [memory ; segment]; query i sits at key position p = mem_len + i.
      causal:      j <= p.
      window=N:    additionally j >= p - N: the last N positions and itself (sliding window;
                   what decoding one token at a time with N tokens of memory sees).
      same_length: window = q_len, so every query sees q_len + 1 keys once memory is full, as
                   in the reference's evaluation mask.
    Returns None when nothing is masked (causal=False and no window).
    """
    if same_length and window is None:
        window = q_len
    if not causal and window is None:
        return None
    p = mem_len + jnp.arange(q_len)[:, None]
    j = jnp.arange(mem_len + q_len)[None, :]
    mask = j <= p
    if window is not None:
        mask = mask & (j >= p - window)
    return mask


def attention_reference(q, k, v, mask=None, bias=None, *, dropout_rate=0.0, dropout_rng=None):
    """Plain softmax attention, the reference for the fused path (and the path with dropout).

    q: [batch, T, heads, head_dim]; k, v: [batch, S, heads, head_dim];
    mask: bool broadcastable to [batch, heads, T, S]; bias: additive float, same broadcast.
    Returns [batch, T, heads, head_dim].
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bthd,bshd->bhts", q * scale, k).astype(jnp.float32)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bhts,bshd->bthd", weights.astype(v.dtype), v)


def multihead_attention(q, k, v, mask=None, bias=None, *, dropout_rate=0.0, dropout_rng=None):
    """Softmax attention (shapes as `attention_reference`): the fused
    `jax.nn.dot_product_attention`, or the reference when attention dropout applies
    (dropout_rate > 0, with dropout_rng), which the fused path does not do, and for float16
    on a CPU (whose dot_general lacks the float16 x float16 -> float32 product it uses)."""
    cpu_f16 = q.dtype == jnp.float16 and jax.default_backend() == "cpu"
    if dropout_rate > 0.0 or cpu_f16:
        return attention_reference(q, k, v, mask, bias, dropout_rate=dropout_rate,
                                   dropout_rng=dropout_rng)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)


@struct.dataclass
class KVCache:
    """Keys and values of one attention layer for decoding position by position.

    k, v: [batch, mem_len + max_len, d'] (compute dtype): the memory's keys and values in the
      first mem_len slots, decoded position t's in slot mem_len + t.
    valid: [batch, mem_len + max_len] bool, True for a key to attend to: the memory's non-pad
      slots and the positions written so far.
    mem_len: static (a Python int), so every array is batch-first and a beam search reorders
      a cache by gathering axis 0 of each.
    """
    k: jax.Array
    v: jax.Array
    valid: jax.Array
    mem_len: int = struct.field(pytree_node=False, default=0)


def warn_if_all_padding(mask_pad) -> None:
    """A warning for a concrete mask_pad whose rows are all padding, the sign of an inverted
    mask (True = a real token): those rows' outputs are zeros. Traced masks are not seen."""
    if mask_pad is None or isinstance(mask_pad, jax.core.Tracer):
        return
    rows = np.flatnonzero(np.asarray(mask_pad).all(axis=1))
    if rows.size:
        warnings.warn(f"mask_pad marks every position of batch row(s) {rows.tolist()[:8]} as "
                      "padding (True = padding), so their outputs are zeros; if True meant "
                      "a real token, pass ~mask_pad", stacklevel=3)


def _combine_masks(attend, mask_pad, memory_mask_pad, batch, q_len, mem_len):
    """Bool mask [batch, 1, T, S] and additive bias [T, S] from the caller's masks (or None)."""
    bias = None
    mask = None
    if attend is not None:
        if attend.shape != (q_len, mem_len + q_len):
            raise ValueError(f"attend has shape {attend.shape}; expected "
                             f"{(q_len, mem_len + q_len)} (queries, memory + queries)")
        if attend.dtype == jnp.bool_:
            mask = attend[None, None]
        else:
            bias = attend.astype(jnp.float32)[None, None]
    if mask_pad is not None or memory_mask_pad is not None:
        pad = jnp.zeros((batch, q_len), bool) if mask_pad is None else mask_pad.astype(bool)
        if mem_len:
            mem_pad = (jnp.zeros((batch, mem_len), bool) if memory_mask_pad is None
                       else memory_mask_pad.astype(bool))
            pad = jnp.concatenate([mem_pad, pad], axis=1)
        key_ok = ~pad[:, None, None, :]
        mask = key_ok if mask is None else mask & key_ok
    return mask, bias


class SRUppAttention(nnx.Module):
    """Single- or multi-head attention transform of an SRU++ layer.

    Args:
      d_in: input features; out_features: size of U (k * d per direction).
      d_proj: attention size d'; num_heads: heads (d' must divide by them; default 1).
      dropout: before W_o; attn_dropout: on the attention weights.
      layer_norm: use the layer norm at all (default True); normalize_after: post-LN (the
        paper's, default) on Q + alpha A, else pre-LN on Q before K, V.
      dtype, rngs: as SRUpp. alpha starts at 0, so a fresh layer's U ignores attention.
    `remat` (set by SRUpp(remat="attention")): compute the attention weights again in the
    backward pass instead of keeping them.
    """
    def __init__(self, d_in: int, out_features: int, d_proj: int, *, num_heads: int = 1,
                 dropout: float = 0.0, attn_dropout: float = 0.0, layer_norm: bool = True,
                 normalize_after: bool = True, dtype=None, rngs: nnx.Rngs):
        check_heads(d_proj, num_heads)
        self.d_proj, self.num_heads = d_proj, num_heads
        self.attn_dropout = attn_dropout
        self.normalize_after = normalize_after
        self.deterministic = False
        self.w_q = linear(d_in, d_proj, dtype=dtype, rngs=rngs)
        self.w_kv = linear(d_proj, 2 * d_proj, dtype=dtype, rngs=rngs)
        self.w_o = linear(d_proj, out_features, scale=(1.0 - dropout) ** 0.5, dtype=dtype,
                          rngs=rngs)
        self.alpha = nnx.Param(jnp.zeros((), jnp.float32))
        self.layer_norm = (norm(d_proj, dtype=dtype, rngs=rngs)
                           if layer_norm else None)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.rngs = rngs["dropout"].fork() if attn_dropout > 0 else None
        self.remat = False

    def __call__(self, x, *, memory=None, mask_pad=None, memory_mask_pad=None,
                 attend=None):
        """U for a segment.

        Args:
          x: [batch, L, d_in]; memory: [batch, M, d_in] keys/values before the segment, or None.
          mask_pad: [batch, L] bool, True where a position is padding (no key for anyone);
            memory_mask_pad: [batch, M] bool, likewise for the memory.
          attend: [L, M + L] bool, True where a query may attend to a key, or an additive
            float bias; None: every query attends to every key (SRUpp adds the causal mask).

        Returns:
          U [batch, L, out_features].
        """
        batch, q_len, _ = x.shape
        mem_len = 0 if memory is None else memory.shape[1]
        if memory is not None and (memory.ndim != 3 or memory.shape[0] != batch
                                   or memory.shape[2] != x.shape[2]):
            raise ValueError(f"memory has shape {memory.shape}; expected "
                             f"[{batch}, M, {x.shape[2]}]")
        xs = x if memory is None else jnp.concatenate([memory.astype(x.dtype), x], axis=1)
        residual, z = self._queries(xs)
        k, v = jnp.split(self.w_kv(z), 2, axis=-1)
        mask, bias = _combine_masks(attend, mask_pad, memory_mask_pad, batch, q_len, mem_len)
        a = self._attend(z[:, mem_len:], k, v, mask, bias)
        return self._output(residual[:, mem_len:], a)

    def _queries(self, x):
        """(W_q x, the queries Q: W_q x, pre-layer-normed when normalize_after is False);
        keys and values are W_kv Q."""
        z = self.w_q(x)
        if self.layer_norm is not None and not self.normalize_after:
            return z, self.layer_norm(z)
        return z, z

    def _attend(self, q, k, v, mask, bias):
        """A [batch, L, d'] from Q [batch, L, d'] and K, V [batch, S, d'] (split into heads).
        With `remat` (model.remat = "attention") the scores and weights [batch, L, S] are not
        kept for the backward pass but computed again there (jax.checkpoint)."""
        heads = lambda a: a.reshape(a.shape[0], a.shape[1], self.num_heads, -1)
        training = self.attn_dropout > 0 and not self.deterministic
        attend = functools.partial(multihead_attention,
                                   dropout_rate=self.attn_dropout if training else 0.0)
        if self.remat:
            attend = jax.checkpoint(attend)
        a = attend(heads(q), heads(k), heads(v), mask, bias,
                   dropout_rng=self.rngs() if training else None)
        return a.reshape(q.shape[0], q.shape[1], self.d_proj)

    def _output(self, residual, a):
        """U = W_o dropout(layernorm(residual + alpha * A)) (post-LN; no norm when pre-LN)."""
        out = residual + self.alpha[...].astype(a.dtype) * a
        if self.layer_norm is not None and self.normalize_after:
            out = self.layer_norm(out)
        return self.w_o(self.dropout(out))

    def init_cache(self, memory, memory_mask_pad, max_len: int) -> KVCache:
        """The cache for decoding up to `max_len` positions after `memory` [batch, M, d_in]
        (None: no memory; with batch taken from memory_mask_pad [batch, M] bool, True = pad,
        or None: no padding). Keys and values of the memory are computed here, once."""
        if memory is None:
            if memory_mask_pad is None:
                raise ValueError("init_cache needs memory or memory_mask_pad (for the batch)")
            memory = jnp.zeros((memory_mask_pad.shape[0], 0, self.w_q.in_features))
        batch, mem_len, _ = memory.shape
        k, v = jnp.split(self.w_kv(self._queries(memory)[1]), 2, axis=-1)
        room = jnp.zeros((batch, max_len, self.d_proj), k.dtype)
        pad = (jnp.zeros((batch, mem_len), bool) if memory_mask_pad is None
               else memory_mask_pad.astype(bool))
        valid = jnp.concatenate([~pad, jnp.zeros((batch, max_len), bool)], axis=1)
        return KVCache(jnp.concatenate([k, room], 1), jnp.concatenate([v, room], 1), valid,
                       mem_len)

    def step(self, x, cache: KVCache, t):
        """Decode positions t .. t+L-1: x [batch, L, d_in]; t: int scalar (may be traced).

        Their keys and values go into the cache's slots mem_len + t ...; query i attends to the
        valid memory and the positions <= t + i. Returns (U [batch, L, out], the new cache).
        Equal to `__call__` on [memory ; positions 0 .. t+L-1] with the causal mask. Positions
        past the cache's max_len are not checked (the slot index clamps under jit).
        """
        batch, length, _ = x.shape
        residual, z = self._queries(x)
        k, v = jnp.split(self.w_kv(z), 2, axis=-1)
        slot = cache.mem_len + t
        k_all = jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), (0, slot, 0))
        v_all = jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), (0, slot, 0))
        valid = jax.lax.dynamic_update_slice(cache.valid, jnp.ones((batch, length), bool),
                                             (0, slot))
        keys = jnp.arange(valid.shape[1])
        causal = keys[None, :] <= slot + jnp.arange(length)[:, None]           # [L, N]
        mask = valid[:, None, None, :] & causal[None, None]
        a = self._attend(z, k_all.astype(z.dtype), v_all.astype(z.dtype), mask, None)
        return self._output(residual, a), KVCache(k_all, v_all, valid, cache.mem_len)


class ProjectedLinear(nnx.Module):
    """U = W_2 dropout(layernorm(W_1 x)): the SRU++ layer without attention (Figure 2b).

    Args:
      d_in: input features; out_features: size of U (k * d per direction); d_proj: the inner
        size d'; dropout: before W_2 (W_2 is initialised scaled by sqrt(1 - dropout), as the
        reference); layer_norm: the norm on W_1 x (default True); dtype, rngs: as SRUpp.
    """

    def __init__(self, d_in: int, out_features: int, d_proj: int, *, dropout: float = 0.0,
                 layer_norm: bool = True, dtype=None, rngs: nnx.Rngs):
        self.w_1 = linear(d_in, d_proj, dtype=dtype, rngs=rngs)
        self.w_2 = linear(d_proj, out_features, scale=(1.0 - dropout) ** 0.5, dtype=dtype,
                          rngs=rngs)
        self.layer_norm = (norm(d_proj, dtype=dtype, rngs=rngs)
                           if layer_norm else None)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        """x: [batch, L, d_in] -> U [batch, L, out_features]."""
        z = self.w_1(x)
        if self.layer_norm is not None:
            z = self.layer_norm(z)
        return self.w_2(self.dropout(z))


def memory_attention_mask(length: int, memory_pad, *, same_length: bool = False,
                          attend=None):
    """[batch, L, mem_len + L] bool (True = attend): `attend` ([L, mem_len + L]; default the
    causal or same-length mask), never an empty memory slot (memory_pad [batch, mem_len])."""
    batch, mem_len = memory_pad.shape
    if attend is None:
        attend = attention_mask(length, mem_len, same_length=same_length)
    elif attend.shape != (length, mem_len + length):
        raise ValueError(f"attend has shape {attend.shape}; expected "
                         f"{(length, mem_len + length)}")
    pad = jnp.concatenate([memory_pad, jnp.zeros((batch, length), bool)], axis=1)
    return attend[None] & ~pad[:, None, :]
