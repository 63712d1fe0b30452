"""SHA-RNN (Merity 2019, "Single Headed Attention RNN: Stop Thinking With Your Head").

  Boom                  d -> d_inner (GELU) -> sum of the d_inner / d chunks of width d: the
                        one-matrix feed-forward layer that keeps the vector length
  SingleHeadAttention   one head; q = LN(W_q x) * sigmoid(s_q), k = sigmoid(s_k) * m,
                        v = gate(s_v) * m over [memory ; segment] (no key/value matrices)
  SHABlock              LN -> LSTM -> dropout -> [attention] -> Boom, as in the released code
  SHARNNLM              embedding -> blocks -> dropout -> output tied to the embedding

A block (the released `Block` with residual=False):

    h = dropout(LSTM(LN_start(h)))
    if attention:  m = LN_mem(h);  h = LN_mid(h);  h = h + dropout(Attn(h, [memory ; m]))
    h = LN_ff(h) + dropout(Boom(LN_xff(h)))

The attention memory is the LN_mem outputs of the last `mem_len` positions (gradient stopped),
the LSTM state (c, h) is carried across segments; both travel in `LMState` (`c` holds
[batch, num_layers, 2 d]: the cell state c then the output h of each layer), so the model
plugs into the same training loop, evaluation, checkpoints and generation as `SRUppLM`.
The LSTM is Flax's `nnx.OptimizedLSTMCell`, run over time by `lstm_scan`.

Initialisation as the released code where it sets one: N(0, 0.1 / sqrt(d)) for the
embedding and linear layers, zero biases, gate parameters s_q, s_k, s_v at 0; the LSTM keeps
Flax's initialisers.
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
from srupp_jax.nn.attention import memory_attention_mask
from srupp_jax.nn.linear import linear, norm

SHA_RNN_LN_EPS = 1e-12  # the released code's LayerNorm epsilon


def _init(d):
    return jax.nn.initializers.normal(stddev=0.1 / math.sqrt(d))


def _layer_norm(d, dtype, rngs):
    return norm(d, epsilon=SHA_RNN_LN_EPS, dtype=dtype, rngs=rngs)


class Boom(nnx.Module):
    """x [.., d] -> sum over chunks of dropout(gelu(W x + b)) [.., d_inner] -> [.., d]."""

    def __init__(self, d: int, d_inner: int, *, dropout: float = 0.0, dtype=None,
                 rngs: nnx.Rngs):
        if d_inner < d:
            raise ValueError(f"d_inner={d_inner}; expected >= d={d}")
        self.d = d
        self.w = linear(d, d_inner, bias=True, init=_init(d), dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        z = self.dropout(jax.nn.gelu(self.w(x)))
        chunks = z.shape[-1] // self.d
        z = z[..., :chunks * self.d]               # trim the end, as the released code
        return z.reshape(*z.shape[:-1], chunks, self.d).sum(axis=-2)


class SingleHeadAttention(nnx.Module):
    """One attention head with learned per-feature gates instead of key/value matrices.

    q = LN(query W_q + b_q) * sigmoid(s_q);  k = sigmoid(s_k) * keys;
    v = (sigmoid(f) * tanh(c)) * keys with [c ; f] = W_v sigmoid(s_v) + b_v (the released
    code's "Overparam" of the value gate); dropout on q, v and the attention weights;
    A = softmax(q k^T / sqrt(d) + mask) v.
    """

    def __init__(self, d: int, *, dropout: float = 0.0, attn_dropout: float = 0.0,
                 dtype=None, rngs: nnx.Rngs):
        self.d = d
        self.w_q = linear(d, d, bias=True, init=_init(d), dtype=dtype, rngs=rngs)
        self.q_norm = _layer_norm(d, dtype, rngs)
        self.s_q = nnx.Param(jnp.zeros((d,), jnp.float32))
        self.s_k = nnx.Param(jnp.zeros((d,), jnp.float32))
        self.s_v = nnx.Param(jnp.zeros((d,), jnp.float32))
        self.w_v = linear(d, 2 * d, bias=True, init=_init(d), rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.attn_dropout = nnx.Dropout(attn_dropout, rngs=rngs)

    def value_gate(self):
        """[d] float32 gate of the values."""
        c, f = jnp.split(self.w_v(jax.nn.sigmoid(self.s_v[...])), 2)
        return jax.nn.sigmoid(f) * jnp.tanh(c)

    def __call__(self, query, keys, mask=None):
        """query [batch, L, d], keys [batch, K, d] (also the values); mask: bool broadcastable
        to [batch, L, K], True = attend. Returns [batch, L, d]."""
        q = self.q_norm(self.w_q(query)) * jax.nn.sigmoid(self.s_q[...]).astype(query.dtype)
        k = keys * jax.nn.sigmoid(self.s_k[...]).astype(keys.dtype)
        v = keys * self.value_gate().astype(keys.dtype)
        q, v = self.dropout(q), self.dropout(v)
        score = jnp.einsum("bid,bjd->bij", q, k).astype(jnp.float32) / math.sqrt(self.d)
        if mask is not None:
            score = jnp.where(mask, score, jnp.finfo(jnp.float32).min)
        prob = self.attn_dropout(jax.nn.softmax(score, axis=-1))
        return jnp.einsum("bij,bjd->bid", prob.astype(v.dtype), v)


def lstm_scan(cell: nnx.OptimizedLSTMCell, x, carry):
    """Run Flax's LSTM cell over time: x [batch, L, d_in], carry (c, h) [batch, d] float32 ->
    ((c, h), outputs [batch, L, d]).

    The cell's parameters and arithmetic (gates i, f, g, o from dense_i(x) + dense_h(h)),
    with dense_i applied to all L steps in one matmul before the `lax.scan` over dense_h;
    tested equal to `nnx.RNN(cell)`. The carry stays float32 whatever the compute dtype.
    """
    xi = cell.dense_i(x)

    def step(carry, xi_t):
        c, h = carry
        i, f, g, o = jnp.split(xi_t + cell.dense_h(h.astype(xi_t.dtype)), 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c.astype(jnp.float32), h.astype(jnp.float32)), h

    carry, hs = jax.lax.scan(step, carry, jnp.swapaxes(xi, 0, 1))
    return carry, jnp.swapaxes(hs, 0, 1).astype(x.dtype)


class SHABlock(nnx.Module):
    """One SHA-RNN block (see the module docstring); `attention` adds the attention head."""

    def __init__(self, d: int, d_inner: int, *, attention: bool, dropout: float = 0.0,
                 attn_dropout: float = 0.0, dtype=None, rngs: nnx.Rngs):
        self.d = d
        self.ln_start = _layer_norm(d, dtype, rngs)
        self.lstm = nnx.OptimizedLSTMCell(d, d, dtype=dtype, rngs=rngs)
        if attention:
            self.ln_mem = _layer_norm(d, dtype, rngs)
            self.ln_mid = _layer_norm(d, dtype, rngs)
            self.attn = SingleHeadAttention(d, dropout=dropout, attn_dropout=attn_dropout,
                                            dtype=dtype, rngs=rngs)
        else:
            self.attn = None
        self.ln_ff = _layer_norm(d, dtype, rngs)
        self.ln_xff = _layer_norm(d, dtype, rngs)
        self.boom = Boom(d, d_inner, dropout=dropout, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, h, state, *, memory=None, mask=None):
        """h [batch, L, d]; state [batch, 2 d] (c ; h) float32; memory [batch, M, d] or None;
        mask [batch or 1, L, M + L] bool. Returns (h, new state, saved [batch, L, d] (the
        attention's new memory entries, or None))."""
        c0, h0 = jnp.split(state, 2, axis=-1)
        (c, h_last), x = lstm_scan(self.lstm, self.ln_start(h), (c0, h0))
        h = self.dropout(x)
        saved = None
        if self.attn is not None:
            saved = self.ln_mem(h)
            h = self.ln_mid(h)
            keys = saved if memory is None else jnp.concatenate(
                [memory.astype(saved.dtype), saved], axis=1)
            h = h + self.dropout(self.attn(h, keys, mask))
        h = self.ln_ff(h) + self.dropout(self.boom(self.ln_xff(h)))
        new_state = jnp.concatenate([c, h_last], axis=-1).astype(jnp.float32)
        return h, new_state, saved


@dataclasses.dataclass(frozen=True)
class SHARNNConfig:
    """The hyperparameters of an SHA-RNN LM (`model.arch = "sha_rnn"`), checked once; every
    bad value a ValueError naming its config key. attention_layers: 1-based block numbers."""
    vocab_size: int
    d: int
    num_layers: int
    d_inner: int
    attention_layers: tuple = ()
    dropout: float = 0.0
    attn_dropout: float = 0.0
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "attention_layers", tuple(self.attention_layers))
        require([
            (self.vocab_size >= 0, f"model.vocab_size={self.vocab_size}; expected >= 0"),
            (self.d >= 1, f"model.d={self.d}; expected >= 1"),
            (self.num_layers >= 1, f"model.num_layers={self.num_layers}; expected >= 1"),
            (self.d_inner >= 1, f"model.d_inner={self.d_inner}; expected >= 1 for sha_rnn"),
            (all(1 <= i <= self.num_layers for i in self.attention_layers),
             f"model.attention_layers={self.attention_layers}; expected layer numbers in "
             f"1..{self.num_layers}"),
            (0 <= self.dropout < 1, f"model.dropout={self.dropout}; expected 0 <= p < 1"),
            (0 <= self.attn_dropout < 1,
             f"model.attn_dropout={self.attn_dropout}; expected 0 <= p < 1"),
        ])
        compute_dtype(self.dtype)

    @classmethod
    def from_config(cls, config) -> "SHARNNConfig":
        return config_from(cls, config)

    def build(self, rngs: nnx.Rngs) -> "SHARNNLM":
        return SHARNNLM(self.vocab_size, self.d, self.num_layers, self.d_inner,
                        attention_layers=self.attention_layers, dropout=self.dropout,
                        attn_dropout=self.attn_dropout, dtype=compute_dtype(self.dtype),
                        rngs=rngs)


class SHARNNLM(LanguageModel, nnx.Module):
    """SHA-RNN language model with the `SRUppLM` interface.

    Args:
      vocab_size; d (embedding and LSTM size); num_layers; d_inner (Boom width, 4 d in the
      article); attention_layers: 1-based numbers of the blocks with attention (the released
      code: the penultimate one); dropout; attn_dropout.
    """

    def __init__(self, vocab_size: int, d: int, num_layers: int, d_inner: int, *,
                 attention_layers: Sequence[int] = (), dropout: float = 0.0,
                 attn_dropout: float = 0.0, dtype=None, rngs: nnx.Rngs):
        if vocab_size < 2:
            raise ValueError(f"vocab_size={vocab_size}; expected >= 2")
        if any(not 1 <= i <= num_layers for i in attention_layers):
            raise ValueError(f"attention_layers={tuple(attention_layers)}; expected numbers in "
                             f"1..{num_layers}")
        self.vocab_size, self.d, self.num_layers = vocab_size, d, num_layers
        self.has_attention = tuple(i + 1 in attention_layers for i in range(num_layers))
        self.embed = nnx.Embed(vocab_size, d, embedding_init=_init(d), rngs=rngs)
        self.out_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))
        self.blocks = nnx.List([
            SHABlock(d, d_inner, attention=attn, dropout=dropout, attn_dropout=attn_dropout,
                     dtype=dtype, rngs=rngs) for attn in self.has_attention])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.dtype = dtype

    def init_state(self, batch: int, mem_len: int) -> LMState:
        """Zero LSTM state [batch, num_layers, 2 d] and, for attention blocks, an empty memory
        of `mem_len` slots."""
        return empty_state(batch, mem_len, (self.num_layers, 2 * self.d), self.has_attention,
                           self.d)

    def hidden(self, tokens, state: Optional[LMState] = None, *, same_length: bool = False,
               attend=None):
        """tokens [batch, L] int -> (top output [batch, L, d] after dropout, new state).
        attend: [L, mem_len + L] bool overriding the causal (or same-length) mask."""
        state, mem_len, new_pad = self._start_segment(tokens, state)
        mask = memory_attention_mask(tokens.shape[1], state.memory_pad, same_length=same_length,
                                     attend=attend)
        h = self.embed(tokens)
        h = self.dropout(h if self.dtype is None else h.astype(self.dtype))
        cs, new_memory = [], {}
        for i, (block, c) in enumerate(zip(self.blocks, jnp.swapaxes(state.c, 0, 1))):
            memory = state.memory.get(i)
            h, c, saved = block(h, c, memory=memory if mem_len else None, mask=mask)
            cs.append(c)
            if memory is not None:
                new_memory[i] = roll_memory(memory, jax.lax.stop_gradient(saved).astype(
                    memory.dtype), mem_len)
        return self.dropout(h), LMState(jnp.stack(cs, axis=1), new_memory, new_pad)

    def _head_log_probs(self, h):
        table = self.embed.embedding[...].astype(h.dtype)
        logits = (h @ table.T).astype(jnp.float32) + self.out_bias[...]
        return jax.nn.log_softmax(logits, axis=-1)

    def flops_per_token(self, attn_len: float) -> float:
        """Forward + backward FLOPs per training token: 6 per matrix weight used per token
        (LSTM input and recurrent matrices, Boom, W_q, the tied output layer), plus the
        attention scores and weighted sum (2 * 2 * attn_len * d forward, x3)."""
        d, n, n_attn = self.d, self.num_layers, sum(self.has_attention)
        d_inner = self.blocks[0].boom.w.kernel.shape[1]
        weights = n * (8 * d * d + d * d_inner) + n_attn * d * d + d * self.vocab_size
        return float(6 * weights + n_attn * 3 * 4 * attn_len * d)
