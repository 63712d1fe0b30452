"""SRU++ language models: embedding -> dropout -> SRU++ stack -> dropout -> output layer.

One class serves both settings of the paper:
  character level (enwik8):  an embedding table and a full softmax output layer, initialised as
      the reference training script does (U[-sqrt(3/d), sqrt(3/d)] matrices, zero bias);
  word level (Wiki-103, Billion Word): `cutoffs` given -> adaptive input embeddings and an
      adaptive softmax with tied weights (Baevski & Auli 2019).

The model runs one segment of M tokens at a time and carries `LMState` across segments: the
recurrent state c of every layer and, for attention layers, the layer inputs of the last
`mem_len` positions (Transformer-XL style memory, gradient stopped). Losses are per-token
negative log-likelihoods in nats, so BPC = mean / ln 2 and PPL = exp(mean).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from srupp_jax.adaptive import AdaptiveInput, AdaptiveSoftmax
from srupp_jax.layers import SRUpp


class LMState(NamedTuple):
    """What a language model carries from one segment to the next.

    c: [num_layers, batch, d] float32 recurrent state.
    memory: per layer, [batch, mem_len, d] layer inputs of the previous positions (attention
      layers only; None for the others).
    memory_pad: [batch, mem_len] bool, True for memory slots that hold nothing yet.
    """
    c: jax.Array
    memory: tuple
    memory_pad: jax.Array


def _uniform(limit: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                     -limit, limit)


class SRUppLM(nnx.Module):
    """SRU++ language model.

    Args:
      vocab_size; d (hidden size, also the embedding size); d_proj (d'); num_layers;
      k / attention_last_n / num_heads / dropout / attn_dropout / highway_bias / layer_norm /
      impl: as in `SRUpp`;
      cutoffs: None for a character-level model; a list for adaptive input + adaptive softmax
        with tied weights; adaptive_factor: the size ratio between successive clusters.
    """

    def __init__(self, vocab_size: int, d: int, d_proj: int, num_layers: int = 10, *,
                 k: int = 1, attention_last_n: Optional[int] = None, num_heads: int = 1,
                 dropout: float = 0.0, attn_dropout: float = 0.0, highway_bias: float = -2.0,
                 layer_norm: bool = False, cutoffs: Optional[Sequence[int]] = None,
                 adaptive_factor: float = 4.0, impl: str = "auto", dtype=None,
                 rngs: nnx.Rngs):
        if vocab_size < 2:
            raise ValueError(f"vocab_size={vocab_size}; expected >= 2")
        self.vocab_size, self.d, self.num_layers = vocab_size, d, num_layers
        self.adaptive = cutoffs is not None
        limit = math.sqrt(3.0 / d)
        if self.adaptive:
            self.embed = AdaptiveInput(vocab_size, d, list(cutoffs), factor=adaptive_factor,
                                       rngs=rngs)
            self.head = AdaptiveSoftmax(vocab_size, d, list(cutoffs), factor=adaptive_factor,
                                        tie_to=self.embed, rngs=rngs)
        else:
            self.embed = nnx.Embed(vocab_size, d, embedding_init=_uniform(limit), rngs=rngs)
            self.head = nnx.Linear(d, vocab_size, kernel_init=_uniform(limit), dtype=dtype,
                                   rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.rnn = SRUpp(d, d, d_proj, num_layers, k=k, attention_last_n=attention_last_n,
                         num_heads=num_heads, dropout=dropout, attn_dropout=attn_dropout,
                         highway_bias=highway_bias, layer_norm=layer_norm, causal=True,
                         impl=impl, dtype=dtype, rngs=rngs)

    def init_state(self, batch: int, mem_len: int) -> LMState:
        """Zero state and empty memory of `mem_len` slots (all marked empty)."""
        if mem_len < 0:
            raise ValueError(f"mem_len={mem_len}; expected >= 0")
        memory = tuple(jnp.zeros((batch, mem_len, self.d), jnp.float32) if attn else None
                       for attn in self.rnn.has_attention)
        return LMState(jnp.zeros((self.num_layers, batch, self.d), jnp.float32), memory,
                       jnp.ones((batch, mem_len), bool))

    def hidden(self, tokens, state: Optional[LMState] = None, *, same_length: bool = False,
               attn_mask=None):
        """tokens [batch, L] int -> (top-layer output [batch, L, d] after dropout, new state).

        attn_mask: [L, mem_len + L] bool overriding the causal (or same-length) mask, e.g. the
        sliding window of `attention.attention_mask(..., window=mem_len)`.
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens has shape {tokens.shape}; expected [batch, length]")
        batch, length = tokens.shape
        state = self.init_state(batch, 0) if state is None else state
        mem_len = state.memory_pad.shape[1]
        x = self.dropout(self.embed(tokens))
        memory = None if mem_len == 0 else [
            None if m is None else m.astype(x.dtype) for m in state.memory]
        h, c, saved = self.rnn(x, state.c, memory=memory,
                               memory_mask_pad=state.memory_pad if mem_len else None,
                               attn_mask=attn_mask, same_length=same_length)
        keep = lambda old, new: jnp.concatenate([old, new], axis=1)[:, -mem_len:] \
            if mem_len else old
        new_memory = tuple(None if m is None else keep(m, s.astype(m.dtype))
                           for m, s in zip(state.memory, saved))
        new_pad = keep(state.memory_pad, jnp.zeros((batch, length), bool))
        return self.dropout(h), LMState(c, new_memory, new_pad)

    def nll(self, tokens, targets, state: Optional[LMState] = None, *,
            same_length: bool = False):
        """Per-token negative log-likelihood [batch, L] float32 (nats), and the new state."""
        if targets.shape != tokens.shape:
            raise ValueError(f"targets has shape {targets.shape}; expected {tokens.shape}")
        h, state = self.hidden(tokens, state, same_length=same_length)
        if self.adaptive:  # never materialises the full-vocabulary distribution
            return self.head.nll(h, targets), state
        logp = self._head_log_probs(h)
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], state

    def log_probs(self, tokens, state: Optional[LMState] = None, *,
                  same_length: bool = False, attn_mask=None):
        """Log-distribution over the vocabulary [batch, L, vocab] float32, and the new state."""
        h, state = self.hidden(tokens, state, same_length=same_length, attn_mask=attn_mask)
        return self._head_log_probs(h), state

    def _head_log_probs(self, h):
        """[batch, L, d] -> float32 log-distribution [batch, L, vocab] of the output layer."""
        if self.adaptive:
            return self.head.log_probs(h)
        return jax.nn.log_softmax(self.head(h).astype(jnp.float32), axis=-1)


def split_for_eval(model: SRUppLM):
    """(graphdef, params, rest) of `model` in evaluation mode (no dropout); the module's own
    train/eval mode is left as it was."""
    training = not model.dropout.deterministic
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if training:
        model.train()
    return graphdef, params, rest
