"""SRU++ language models: embedding -> dropout -> SRU++ stack -> dropout -> output layer.

One class serves both settings of the paper:
  character level (enwik8):  an embedding table and a full softmax output layer, initialised as
      the reference training script does (U[-sqrt(3/d), sqrt(3/d)] matrices, zero bias);
  word level (Wiki-103, Billion Word): `cutoffs` given -> adaptive input embeddings and an
      adaptive softmax with tied tables (Baevski & Auli 2019), in the form and init of the
      released models' reference code (nn/adaptive.py): unscaled input, biased outputs,
      projections tied (Wiki-103) or not (Billion Word, `tie_proj=False`).

The model runs one segment of M tokens at a time and carries `LMState` across segments: the
recurrent state c of every layer and, for attention layers, the layer inputs of the last
`mem_len` positions (Transformer-XL style memory, gradient stopped). Losses are per-token
negative log-likelihoods in nats, so BPC = mean / ln 2 and PPL = exp(mean).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import KernelOptions, TPUKernelOptions
from srupp_jax.errors import require
from srupp_jax.models.base import check_kernel_options, compute_dtype, config_from
from srupp_jax.models.flops import estimate_flops_per_token
from srupp_jax.models.lm import LanguageModel, LMState, empty_state, roll_memory
from srupp_jax.nn.adaptive import AdaptiveInput, AdaptiveSoftmax
from srupp_jax.nn.attention import attention_layers, check_heads
from srupp_jax.nn.clusters import check_cutoffs, cluster_dims
from srupp_jax.nn.linear import linear
from srupp_jax.nn.recurrence import IMPLS, resolve_backend
from srupp_jax.nn.remat import check_remat
from srupp_jax.nn.sru import SRUpp


def _uniform(limit: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                     -limit, limit)


@dataclasses.dataclass(frozen=True)
class SRUppConfig:
    """The hyperparameters of an SRU++ language model, in the paper's notation, checked once.

    Built from a run's config by `from_config` (config.model, config.train.compute_dtype, and
    vocab_size from the data); every bad value raises ValueError naming the config key.
    vocab_size: 0 while the data have not been read (checks against it wait; a model needs it).
    d: hidden size (also the embedding size); d_proj: d'; num_layers; k: attention every k
    layers, or attention_last_n >= 0: only in the last n; num_heads; dropout, attn_dropout;
    highway_bias; layer_norm: each layer's own norm (the reference's --layer_norm);
    attn_layer_norm: the post-LN inside the transforms (eq. 7); cutoffs: () for one softmax,
    else adaptive input and a tied adaptive softmax with clusters adaptive_factor times
    narrower, the first d_embed wide (0: d), projections tied unless tie_proj is False,
    emb_dropout inside both; impl: recurrence backend
    ("auto" resolves on the device that builds the model); kernel: the GPU kernel's tuning
    options; tpu_kernel: the TPU kernel's; remat: gradient checkpointing (nn/remat.py);
    dtype: compute dtype name ("float32" | "bfloat16" | "float16"; parameters stay float32).
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
    attn_layer_norm: bool = True
    cutoffs: tuple = ()
    adaptive_factor: float = 4.0
    d_embed: int = 0
    tie_proj: bool = True
    emb_dropout: float = 0.0
    impl: str = "auto"
    kernel: KernelOptions = KernelOptions()
    tpu_kernel: TPUKernelOptions = TPUKernelOptions()
    remat: str = "none"
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "cutoffs", tuple(self.cutoffs or ()))
        check_remat(self.remat)
        checks = [
            (self.vocab_size >= 0, f"model.vocab_size={self.vocab_size}; expected >= 0 "
                                   "(0 = the data's)"),
            (self.d >= 1, f"model.d={self.d}; expected >= 1"),
            (self.d_proj >= 1, f"model.d_proj={self.d_proj}; expected >= 1"),
            (self.num_layers >= 1, f"model.num_layers={self.num_layers}; expected >= 1"),
            (0 <= self.dropout < 1, f"model.dropout={self.dropout}; expected 0 <= p < 1"),
            (0 <= self.attn_dropout < 1,
             f"model.attn_dropout={self.attn_dropout}; expected 0 <= p < 1"),
            (0 <= self.emb_dropout < 1,
             f"model.emb_dropout={self.emb_dropout}; expected 0 <= p < 1"),
            (self.d_embed >= 0, f"model.d_embed={self.d_embed}; expected >= 0 (0 = model.d)"),
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
                cluster_dims(self.d_embed or self.d, self.adaptive_factor, len(self.cutoffs) + 1)
            except ValueError as e:
                raise ValueError(f"model.d_embed={self.d_embed or self.d}, model.adaptive_factor="
                                 f"{self.adaptive_factor}, {len(self.cutoffs)} cutoffs: {e}"
                                 ) from None
        check_kernel_options(self.kernel, self.tpu_kernel)

    @classmethod
    def from_config(cls, config) -> "SRUppConfig":
        """From a run's config: config.model (its SRU++ keys) and config.train.compute_dtype."""
        return config_from(cls, config)

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
        if self.adaptive:   # the reference's: tables U[-limit, limit], unscaled input
            self.embed = AdaptiveInput(c.vocab_size, c.d, list(c.cutoffs), c.adaptive_factor,
                                       d_embed=c.d_embed or None, scale_embedding=False,
                                       dropout=c.emb_dropout, init=_uniform(limit), rngs=rngs)
            self.head = AdaptiveSoftmax(c.vocab_size, c.d, list(c.cutoffs), tie_to=self.embed,
                                        tie_proj=c.tie_proj, dropout=c.emb_dropout,
                                        init=_uniform(limit), rngs=rngs)
        else:
            self.embed = nnx.Embed(c.vocab_size, c.d, embedding_init=_uniform(limit), rngs=rngs)
            self.head = linear(c.d, c.vocab_size, bias=True, init=_uniform(limit),
                               dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(c.dropout, rngs=rngs)
        self.backend = resolve_backend(c.impl)
        self.rnn = SRUpp(c.d, c.d, c.d_proj, c.num_layers, k=c.k,
                         attention_last_n=None if c.attention_last_n < 0 else c.attention_last_n,
                         num_heads=c.num_heads, dropout=c.dropout, attn_dropout=c.attn_dropout,
                         highway_bias=c.highway_bias, layer_norm=c.layer_norm,
                         attn_layer_norm=c.attn_layer_norm, causal=True,
                         impl=self.backend, kernel=c.kernel, tpu_kernel=c.tpu_kernel,
                         remat=c.remat, dtype=dtype, rngs=rngs)

    def init_state(self, batch: int, mem_len: int) -> LMState:
        """Zero state and empty memory of `mem_len` slots (all marked empty)."""
        return empty_state(batch, mem_len, (self.num_layers, self.d), self.rnn.has_attention,
                           self.d)

    def hidden(self, tokens, state: Optional[LMState] = None, *, same_length: bool = False,
               attend=None):
        """tokens [batch, L] int -> (top-layer output [batch, L, d] after dropout, new state).

        attend: [L, mem_len + L] bool overriding the causal (or same-length) mask, e.g. the
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
                               attend=attend, same_length=same_length)
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
                                        adaptive_factor=c.adaptive_factor,
                                        d_embed=c.d_embed or None)

    def _head_log_probs(self, h):
        """[batch, L, d] -> float32 log-distribution [batch, L, vocab] of the output layer."""
        if self.adaptive:
            return self.head.log_probs(h)
        return jax.nn.log_softmax(self.head(h).astype(jnp.float32), axis=-1)


