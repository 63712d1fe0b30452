"""Transformer-XL language model (Dai et al. 2019), the attention-only baseline of the paper.

  rel_shift(x)                   the relative-shift trick: scores indexed by relative distance
                                 -> scores indexed by key position
  sinusoid_positions(K, d)       R: embeddings of the distances K-1, ..., 1, 0
  RelMultiHeadAttention          multi-head attention with relative positions and the learned
                                 global biases u and v, post-layer-norm
  PositionwiseFF                 LN(x + W_2 relu(W_1 x)), post-layer-norm
  TransformerXLLM                embedding -> N layers -> tied output (char) or adaptive
                                 input/softmax (words), with segment-level recurrence

Segment-level recurrence: every layer also attends to its own inputs of the previous `mem_len`
positions (the memory, gradient stopped), like SRU++'s attention memory; so the model carries
the same `LMState` as `SRUppLM` and plugs into the same training loop, evaluation, checkpoints
and generation. It has no recurrent state: its `c` is None.

Attention score of query i (key position p = M + i over [memory M ; segment L]) and key j
(paper section 3.3, with E x = the layer input, W_k,R the position projection):

    A_ij = (q_i + u) . k_j  +  (q_i + v) . (W_k,R R_{p - j})          then / sqrt(d_head)

The second term is computed for all distances at once, [L, K] over distances K-1 .. 0, and
shifted into key order by `rel_shift` (tested equal to the explicit O(L^2) formula).
Initialisation follows the reference code: N(0, 0.02) for matrices, embeddings and u, v;
layer-norm scale 1.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from srupp_jax.errors import require
from srupp_jax.models.base import compute_dtype, config_from
from srupp_jax.models.lm import LanguageModel, LMState, empty_state, roll_memory
from srupp_jax.nn.adaptive import AdaptiveInput, AdaptiveSoftmax
from srupp_jax.nn.attention import memory_attention_mask
from srupp_jax.nn.clusters import check_cutoffs, matrix_weights
from srupp_jax.nn.linear import PositionwiseFF, linear, norm

INIT = jax.nn.initializers.normal(stddev=0.02)


def rel_shift(x):
    """[..., L, K] scores over distances K-1, ..., 0 -> [..., L, K] scores over key positions.

    out[..., i, j] = x[..., i, j + L - 1 - i], i.e. the entry for distance (K - L + i) - j,
    valid for j <= K - L + i (keys a causal query may see); other entries are garbage that the
    causal mask removes. Pad one zero column on the left, reshape [L, K+1] -> [K+1, L], drop
    the first row, reshape back to [L, K].
    """
    *lead, length, klen = x.shape
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
    x = x.reshape(*lead, klen + 1, length)[..., 1:, :]
    return x.reshape(*lead, length, klen)


def sinusoid_positions(klen: int, d: int, dtype=jnp.float32):
    """R [klen, d]: [sin(p w), cos(p w)] for distances p = klen-1, ..., 0, w_i = 10000^(-2i/d)."""
    pos = jnp.arange(klen - 1, -1, -1, dtype=jnp.float32)
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = pos[:, None] * inv_freq[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1).astype(dtype)


class RelMultiHeadAttention(nnx.Module):
    """Relative multi-head attention sub-layer: LN(h + W_o Attn(h, [memory ; h])).

    Args: d_model; num_heads H; d_head; dropout (on the output); attn_dropout (on the weights).
    u and v ([H, d_head]) are passed in, shared by all layers as in the reference.
    """

    def __init__(self, d_model: int, num_heads: int, d_head: int, *, dropout: float = 0.0,
                 attn_dropout: float = 0.0, dtype=None, rngs: nnx.Rngs):
        self.num_heads, self.d_head = num_heads, d_head
        self.w_qkv = linear(d_model, 3 * num_heads * d_head, init=INIT, dtype=dtype, rngs=rngs)
        self.w_r = linear(d_model, num_heads * d_head, init=INIT, dtype=dtype, rngs=rngs)
        self.w_o = linear(num_heads * d_head, d_model, init=INIT, dtype=dtype, rngs=rngs)
        self.layer_norm = norm(d_model, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.attn_dropout = nnx.Dropout(attn_dropout, rngs=rngs)

    def scores(self, h, r, u, v, memory=None):
        """Unmasked, scaled scores [batch, H, L, M + L] (float32) and values [batch, K, H, dh].

        h: [batch, L, d_model]; r: [K, d_model] (distances K-1..0); u, v: [H, d_head];
        memory: [batch, M, d_model] or None.
        """
        batch, length, _ = h.shape
        mem_len = 0 if memory is None else memory.shape[1]
        cat = h if memory is None else jnp.concatenate([memory.astype(h.dtype), h], axis=1)
        heads = lambda a: a.reshape(*a.shape[:-1], self.num_heads, self.d_head)
        q, k, val = (heads(a) for a in jnp.split(self.w_qkv(cat), 3, axis=-1))
        q = q[:, mem_len:]
        r_k = heads(self.w_r(r.astype(h.dtype)))                        # [K, H, dh]
        ac = jnp.einsum("bihd,bjhd->bhij", q + u.astype(q.dtype), k)
        bd = rel_shift(jnp.einsum("bihd,jhd->bhij", q + v.astype(q.dtype), r_k))
        return (ac + bd).astype(jnp.float32) / math.sqrt(self.d_head), val

    def __call__(self, h, r, u, v, *, memory=None, mask=None):
        """h [batch, L, d_model] -> [batch, L, d_model]. mask: bool, broadcastable to
        [batch, H, L, M + L], True = attend (None: no mask)."""
        score, val = self.scores(h, r, u, v, memory)
        if mask is not None:
            score = jnp.where(mask, score, jnp.finfo(jnp.float32).min)
        prob = self.attn_dropout(jax.nn.softmax(score, axis=-1))
        a = jnp.einsum("bhij,bjhd->bihd", prob.astype(val.dtype), val)
        a = a.reshape(*a.shape[:2], self.num_heads * self.d_head)
        return self.layer_norm(h + self.dropout(self.w_o(a)))


class TransformerXLLayer(nnx.Module):
    """One decoder layer: relative attention sub-layer then feed-forward sub-layer."""

    def __init__(self, d_model, num_heads, d_head, d_inner, *, dropout=0.0, attn_dropout=0.0,
                 dtype=None, rngs: nnx.Rngs):
        self.attn = RelMultiHeadAttention(d_model, num_heads, d_head, dropout=dropout,
                                          attn_dropout=attn_dropout, dtype=dtype, rngs=rngs)
        self.ff = PositionwiseFF(d_model, d_inner, dropout=dropout, dtype=dtype, rngs=rngs)

    def __call__(self, h, r, u, v, *, memory=None, mask=None):
        return self.ff(self.attn(h, r, u, v, memory=memory, mask=mask))


@dataclasses.dataclass(frozen=True)
class TransformerXLConfig:
    """The hyperparameters of a Transformer-XL LM (`model.arch = "transformer_xl"`), checked
    once; every bad value a ValueError naming its config key. d_head 0: d / num_heads;
    cutoffs (): one softmax tied to the embedding, else adaptive input / softmax."""
    vocab_size: int
    d: int
    num_layers: int
    num_heads: int
    d_inner: int
    d_head: int = 0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    cutoffs: tuple = ()
    adaptive_factor: float = 1.0
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "cutoffs", tuple(self.cutoffs or ()))
        require([
            (self.vocab_size >= 0, f"model.vocab_size={self.vocab_size}; expected >= 0"),
            (self.d >= 1, f"model.d={self.d}; expected >= 1"),
            (self.num_layers >= 1, f"model.num_layers={self.num_layers}; expected >= 1"),
            (self.num_heads >= 1, f"model.num_heads={self.num_heads}; expected >= 1"),
            (self.d_inner >= 1, f"model.d_inner={self.d_inner}; expected >= 1 for "
                                "transformer_xl"),
            (self.d_head > 0 or self.d % self.num_heads == 0,
             f"model.d={self.d} is not divisible by model.num_heads={self.num_heads} (or set "
             "model.d_head)"),
            (0 <= self.dropout < 1, f"model.dropout={self.dropout}; expected 0 <= p < 1"),
            (0 <= self.attn_dropout < 1,
             f"model.attn_dropout={self.attn_dropout}; expected 0 <= p < 1"),
        ])
        compute_dtype(self.dtype)
        if self.cutoffs:
            check_cutoffs(self.cutoffs, self.vocab_size)

    @classmethod
    def from_config(cls, config) -> "TransformerXLConfig":
        return config_from(cls, config)

    def build(self, rngs: nnx.Rngs) -> "TransformerXLLM":
        return TransformerXLLM(self.vocab_size, self.d, self.num_layers, self.num_heads,
                               self.d_inner, d_head=self.d_head or None, dropout=self.dropout,
                               attn_dropout=self.attn_dropout, cutoffs=self.cutoffs or None,
                               adaptive_factor=self.adaptive_factor,
                               dtype=compute_dtype(self.dtype), rngs=rngs)


class TransformerXLLM(LanguageModel, nnx.Module):
    """Transformer-XL language model with the `SRUppLM` interface.

    Args:
      vocab_size; d_model; num_layers; num_heads; d_head (d_model // num_heads by default);
      d_inner (feed-forward width); dropout (embeddings, positions, sub-layer outputs,
      feed-forward); attn_dropout (attention weights);
      cutoffs: None -> embedding table with the output layer tied to it (plus a bias), as the
        reference's enwik8 model; a list -> adaptive input and a tied adaptive softmax,
        adaptive_factor the width ratio between clusters (1 = the reference's div_val 1).
    Methods as SRUppLM: init_state, hidden, nll, log_probs (same arguments and LMState).
    """

    def __init__(self, vocab_size: int, d_model: int, num_layers: int, num_heads: int,
                 d_inner: int, *, d_head: Optional[int] = None, dropout: float = 0.0,
                 attn_dropout: float = 0.0, cutoffs: Optional[Sequence[int]] = None,
                 adaptive_factor: float = 1.0, dtype=None, rngs: nnx.Rngs):
        if vocab_size < 2:
            raise ValueError(f"vocab_size={vocab_size}; expected >= 2")
        d_head = d_head or d_model // num_heads
        if d_head < 1:
            raise ValueError(f"d_head={d_head}; expected >= 1 (d_model={d_model}, "
                             f"num_heads={num_heads})")
        self.vocab_size, self.d, self.num_layers = vocab_size, d_model, num_layers
        self.has_attention = (True,) * num_layers
        self.adaptive = cutoffs is not None
        if self.adaptive:
            self.embed = AdaptiveInput(vocab_size, d_model, list(cutoffs),
                                       factor=adaptive_factor, rngs=rngs)
            self.head = AdaptiveSoftmax(vocab_size, d_model, list(cutoffs),
                                        tie_to=self.embed, rngs=rngs)
        else:
            self.embed = nnx.Embed(vocab_size, d_model, embedding_init=INIT, rngs=rngs)
            self.out_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))
        self.u = nnx.Param(INIT(rngs.params(), (num_heads, d_head)))
        self.v = nnx.Param(INIT(rngs.params(), (num_heads, d_head)))
        self.layers = nnx.List([
            TransformerXLLayer(d_model, num_heads, d_head, d_inner, dropout=dropout,
                               attn_dropout=attn_dropout, dtype=dtype, rngs=rngs)
            for _ in range(num_layers)])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.dtype = dtype

    def init_state(self, batch: int, mem_len: int) -> LMState:
        """Empty memory of `mem_len` slots per layer (all marked empty); no recurrent state."""
        return empty_state(batch, mem_len, None, self.has_attention, self.d)

    def _embed(self, tokens):
        x = self.embed(tokens)
        if not self.adaptive:  # AdaptiveInput scales by sqrt(d_model) itself
            x = x * math.sqrt(self.d)
        return x if self.dtype is None else x.astype(self.dtype)

    def hidden(self, tokens, state: Optional[LMState] = None, *, same_length: bool = False,
               attend=None):
        """tokens [batch, L] int -> (top-layer output [batch, L, d] after dropout, new state).

        attend: [L, mem_len + L] bool (True = attend) overriding the causal / same-length
        mask; memory slots marked empty in the state are never attended to.
        """
        state, mem_len, new_pad = self._start_segment(tokens, state)
        length = tokens.shape[1]
        mask = memory_attention_mask(length, state.memory_pad, same_length=same_length,
                                     attend=attend)[:, None]      # [batch, 1, L, M + L]
        x = self.dropout(self._embed(tokens))
        r = self.dropout(sinusoid_positions(mem_len + length, self.d, x.dtype))
        saved = []
        for i, layer in enumerate(self.layers):
            saved.append(x)
            x = layer(x, r, self.u[...], self.v[...],
                      memory=state.memory[i] if mem_len else None, mask=mask)
        new_memory = {i: roll_memory(m, jax.lax.stop_gradient(saved[i]).astype(m.dtype),
                                     mem_len) for i, m in state.memory.items()}
        return self.dropout(x), LMState(state.c, new_memory, new_pad)

    def _head_log_probs(self, h):
        if self.adaptive:
            return self.head.log_probs(h)
        table = self.embed.embedding[...].astype(h.dtype)
        logits = (h @ table.T).astype(jnp.float32) + self.out_bias[...]
        return jax.nn.log_softmax(logits, axis=-1)

    def flops_per_token(self, attn_len: float) -> float:
        """Forward + backward FLOPs per training token, by the convention of
        `flops.estimate_flops_per_token` for SRU++: 6 per matrix weight applied to the token
        (W_qkv, W_o, the feed-forward, the tied output layer; not the embedding lookup, nor
        W_r on the positions and the keys/values recomputed over the memory, which the code
        also runs), plus the attention scores and weighted sums (q.k, q.r and p.v:
        3 * 2 * attn_len * H * d_head forward, x3)."""
        layer = self.layers[0]
        hd = layer.attn.num_heads * layer.attn.d_head
        d_inner = layer.ff.w_1.kernel.shape[1]
        weights = self.num_layers * (4 * self.d * hd + 2 * self.d * d_inner)
        if self.adaptive:
            e = self.embed
            weights += matrix_weights(e.vocab_size, e.d_model, e.cutoffs, e.factor, e.d_embed)
        else:
            weights += self.d * self.vocab_size
        attn = self.num_layers * 3 * 3 * 2 * attn_len * hd
        return float(6 * weights + attn)

