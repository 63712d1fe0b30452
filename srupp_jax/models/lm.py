"""The base of every language model here (SRU++, Transformer-XL, SHA-RNN): the state carried
from one segment to the next (`LMState`, batch-first) and the per-token loss and
log-distribution derived from a model's `hidden` and `_head_log_probs`."""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class LMState(NamedTuple):
    """What a language model carries from one segment to the next. Every array is batch-first,
    so sharding (and reordering, e.g. beams) acts on axis 0 of every leaf.

    c: [batch, num_layers, d] float32 recurrent state; None for a model without one
      (Transformer-XL).
    memory: {layer index: [batch, mem_len, d]}, the layer inputs of the previous positions, for
      the layers with attention only.
    memory_pad: [batch, mem_len] bool, True for memory slots that hold nothing yet.
    """
    c: Optional[jax.Array]
    memory: dict
    memory_pad: jax.Array



def empty_state(batch: int, mem_len: int, c_shape: Optional[tuple], has_attention,
                d_memory: int) -> LMState:
    """The LMState of a fresh segment stream: zero c [batch, *c_shape] (None without one),
    empty memory slots for the layers of `has_attention`, all marked empty."""
    if mem_len < 0:
        raise ValueError(f"mem_len={mem_len}; expected >= 0")
    c = None if c_shape is None else jnp.zeros((batch, *c_shape), jnp.float32)
    memory = {i: jnp.zeros((batch, mem_len, d_memory), jnp.float32)
              for i, attn in enumerate(has_attention) if attn}
    return LMState(c, memory, jnp.ones((batch, mem_len), bool))



def roll_memory(old, new, mem_len: int):
    """The last `mem_len` positions of [old; new] along axis 1 (memory [batch, mem_len, ...]
    after a segment [batch, L, ...]); `old` itself when mem_len is 0."""
    return jnp.concatenate([old, new], axis=1)[:, -mem_len:] if mem_len else old



class LanguageModel:
    """What every language model here derives from `hidden` (tokens -> top-layer output, new
    LMState) and `_head_log_probs` (that output -> log-probabilities): the per-token loss and
    the log-distribution. Shared by SRUppLM and the baselines (transformer_xl, sha_rnn)."""
    adaptive = False    # True: an adaptive softmax `head` computes the nll itself

    def _start_segment(self, tokens, state: Optional[LMState]):
        """For a segment `tokens` [batch, L]: the state it starts from (an empty one, no
        memory, when `state` is None), its mem_len, and memory_pad [batch, mem_len] after it."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens has shape {tokens.shape}; expected [batch, length]")
        batch, length = tokens.shape
        state = self.init_state(batch, 0) if state is None else state
        mem_len = state.memory_pad.shape[1]
        new_pad = roll_memory(state.memory_pad, jnp.zeros((batch, length), bool), mem_len)
        return state, mem_len, new_pad

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
                  same_length: bool = False, attend=None):
        """Log-distribution over the vocabulary [batch, L, vocab] float32, and the new state."""
        h, state = self.hidden(tokens, state, same_length=same_length, attend=attend)
        return self._head_log_probs(h), state
