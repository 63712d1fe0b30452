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

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import KernelOptions, TPUKernelOptions
from srupp_jax.adaptive import AdaptiveInput, AdaptiveSoftmax, check_cutoffs, cluster_dims
from srupp_jax.attention import Linear, check_heads
from srupp_jax.checks import require
from srupp_jax.flops import estimate_flops_per_token
from srupp_jax.layers import SRUpp, attention_layers
from srupp_jax.recurrence import IMPLS, resolve_backend

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The jnp dtype of a `train.compute_dtype` name; ValueError naming the key otherwise
    (the one check, for SRU++ and the baselines)."""
    if name not in DTYPES:
        raise ValueError(f"train.compute_dtype={name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


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


def kernel_options(m) -> tuple:
    """(KernelOptions, TPUKernelOptions) of a config's `model` section (0: the kernel's
    default for the shape)."""
    options = lambda key: {k: v or None for k, v in (m.get(key, None) or {}).items()}
    return KernelOptions(**options("kernel")), TPUKernelOptions(**options("tpu_kernel"))


def check_kernel_options(kernel: KernelOptions, tpu_kernel: TPUKernelOptions) -> None:
    """ValueError naming a kernel option that is not an integer (model.kernel.*, model.tpu_kernel.*)."""
    for group, options in (("kernel", kernel), ("tpu_kernel", tpu_kernel)):
        for name, value in options.as_kwargs().items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"model.{group}.{name}={value!r}; expected an integer")


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


def _uniform(limit: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                     -limit, limit)


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
                  same_length: bool = False, attn_mask=None):
        """Log-distribution over the vocabulary [batch, L, vocab] float32, and the new state."""
        h, state = self.hidden(tokens, state, same_length=same_length, attn_mask=attn_mask)
        return self._head_log_probs(h), state


@dataclasses.dataclass(frozen=True)
class SRUppConfig:
    """The hyperparameters of an SRU++ language model, in the paper's notation, checked once.

    Built from a run's config by `from_config` (config.model, config.train.compute_dtype, and
    vocab_size from the data); every bad value raises ValueError naming the config key.
    vocab_size: 0 while the data have not been read (checks against it wait; a model needs it).
    d: hidden size (also the embedding size); d_proj: d'; num_layers; k: attention every k
    layers, or attention_last_n >= 0: only in the last n; num_heads; dropout, attn_dropout;
    highway_bias; layer_norm; cutoffs: () for one softmax, else adaptive input and a tied
    adaptive softmax with clusters adaptive_factor times narrower; impl: recurrence backend
    ("auto" resolves on the device that builds the model); kernel: the GPU kernel's tuning
    options; tpu_kernel: the TPU kernel's;
    dtype: compute dtype name ("float32" | "bfloat16"; parameters stay float32).
    """
    vocab_size: int
    d: int
    d_proj: int
    num_layers: int = 10
    k: int = 1
    attention_last_n: int = -1
    num_heads: int = 1
    dropout: float = 0.0
    attn_dropout: float = 0.0
    highway_bias: float = -2.0
    layer_norm: bool = False
    cutoffs: tuple = ()
    adaptive_factor: float = 4.0
    impl: str = "auto"
    kernel: KernelOptions = KernelOptions()
    tpu_kernel: TPUKernelOptions = TPUKernelOptions()
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "cutoffs", tuple(self.cutoffs or ()))
        checks = [
            (self.vocab_size >= 0, f"model.vocab_size={self.vocab_size}; expected >= 0 "
                                   "(0 = the data's)"),
            (self.d >= 1, f"model.d={self.d}; expected >= 1"),
            (self.d_proj >= 1, f"model.d_proj={self.d_proj}; expected >= 1"),
            (self.num_layers >= 1, f"model.num_layers={self.num_layers}; expected >= 1"),
            (0 <= self.dropout < 1, f"model.dropout={self.dropout}; expected 0 <= p < 1"),
            (0 <= self.attn_dropout < 1,
             f"model.attn_dropout={self.attn_dropout}; expected 0 <= p < 1"),
            (self.impl in IMPLS, f"model.impl={self.impl!r}; expected one of "
                                 f"{', '.join(IMPLS)}"),
        ]
        require(checks)
        compute_dtype(self.dtype)
        placement = attention_layers(self.num_layers, self.k, self.attention_last_n,
                                     prefix="model.")
        check_heads(self.d_proj, self.num_heads, prefix="model.")
        if self.attention_last_n < 0 and not any(placement):
            raise ValueError(f"model.k={self.k} with model.num_layers={self.num_layers} leaves "
                             "no attention layer; expected k <= num_layers (or "
                             "model.attention_last_n=0 for a plain SRU stack)")
        if self.cutoffs:
            check_cutoffs(self.cutoffs, self.vocab_size)
            try:
                cluster_dims(self.d, self.adaptive_factor, len(self.cutoffs) + 1)
            except ValueError as e:
                raise ValueError(f"model.d={self.d}, model.adaptive_factor="
                                 f"{self.adaptive_factor}, {len(self.cutoffs)} cutoffs: {e}"
                                 ) from None
        check_kernel_options(self.kernel, self.tpu_kernel)

    @classmethod
    def from_config(cls, config) -> "SRUppConfig":
        """From a run's config: config.model (its SRU++ keys) and config.train.compute_dtype."""
        m = config.model
        kernel, tpu_kernel = kernel_options(m)
        return cls(vocab_size=m.vocab_size, d=m.d, d_proj=m.d_proj, num_layers=m.num_layers,
                   k=m.k, attention_last_n=m.attention_last_n, num_heads=m.num_heads,
                   dropout=m.dropout, attn_dropout=m.attn_dropout,
                   highway_bias=m.highway_bias, layer_norm=m.layer_norm,
                   cutoffs=tuple(m.cutoffs), adaptive_factor=m.adaptive_factor, impl=m.impl,
                   kernel=kernel, tpu_kernel=tpu_kernel, dtype=config.train.compute_dtype)


    def build(self, rngs: nnx.Rngs) -> "SRUppLM":
        return SRUppLM(self, rngs=rngs)


class SRUppLM(LanguageModel, nnx.Module):
    """SRU++ language model of an `SRUppConfig`; its recurrence backend is resolved once, here
    (`self.backend`)."""

    def __init__(self, config: SRUppConfig, *, rngs: nnx.Rngs):
        c = config
        if c.vocab_size < 2:
            raise ValueError(f"vocab_size={c.vocab_size}; expected >= 2")
        self.config = c
        self.vocab_size, self.d, self.num_layers = c.vocab_size, c.d, c.num_layers
        self.adaptive = bool(c.cutoffs)
        dtype = compute_dtype(c.dtype)
        limit = math.sqrt(3.0 / c.d)
        if self.adaptive:
            self.embed = AdaptiveInput(c.vocab_size, c.d, list(c.cutoffs),
                                       factor=c.adaptive_factor, rngs=rngs)
            self.head = AdaptiveSoftmax(c.vocab_size, c.d, list(c.cutoffs),
                                        factor=c.adaptive_factor, tie_to=self.embed, rngs=rngs)
        else:
            self.embed = nnx.Embed(c.vocab_size, c.d, embedding_init=_uniform(limit), rngs=rngs)
            self.head = Linear(c.d, c.vocab_size, kernel_init=_uniform(limit), dtype=dtype,
                               rngs=rngs)
        self.dropout = nnx.Dropout(c.dropout, rngs=rngs)
        self.backend = resolve_backend(c.impl)
        self.rnn = SRUpp(c.d, c.d, c.d_proj, c.num_layers, k=c.k,
                         attention_last_n=None if c.attention_last_n < 0 else c.attention_last_n,
                         num_heads=c.num_heads, dropout=c.dropout, attn_dropout=c.attn_dropout,
                         highway_bias=c.highway_bias, layer_norm=c.layer_norm, causal=True,
                         impl=self.backend, kernel=c.kernel, tpu_kernel=c.tpu_kernel,
                         dtype=dtype, rngs=rngs)

    def init_state(self, batch: int, mem_len: int) -> LMState:
        """Zero state and empty memory of `mem_len` slots (all marked empty)."""
        return empty_state(batch, mem_len, (self.num_layers, self.d), self.rnn.has_attention,
                           self.d)

    def hidden(self, tokens, state: Optional[LMState] = None, *, same_length: bool = False,
               attn_mask=None):
        """tokens [batch, L] int -> (top-layer output [batch, L, d] after dropout, new state).

        attn_mask: [L, mem_len + L] bool overriding the causal (or same-length) mask, e.g. the
        sliding window of `attention.attention_mask(..., window=mem_len)`.
        """
        state, mem_len, new_pad = self._start_segment(tokens, state)
        x = self.dropout(self.embed(tokens))
        memory = None if mem_len == 0 else [
            state.memory[i].astype(x.dtype) if i in state.memory else None
            for i in range(self.num_layers)]
        h, c, saved = self.rnn(x, state.c.swapaxes(0, 1),   # the stack's c is layer-major
                               memory=memory,
                               memory_mask_pad=state.memory_pad if mem_len else None,
                               attn_mask=attn_mask, same_length=same_length)
        new_memory = {i: roll_memory(m, saved[i].astype(m.dtype), mem_len)
                      for i, m in state.memory.items()}
        return self.dropout(h), LMState(c.swapaxes(0, 1), new_memory, new_pad)

    def flops_per_token(self, attn_len: float) -> float:
        """Forward + backward FLOPs per training token with `attn_len` keys per query
        (`flops.estimate_flops_per_token`)."""
        c = self.config
        return estimate_flops_per_token(c.d, c.d_proj, c.num_layers, sum(self.rnn.has_attention),
                                        c.vocab_size, attn_len, adaptive=self.adaptive,
                                        cutoffs=list(c.cutoffs) or None,
                                        adaptive_factor=c.adaptive_factor)

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
