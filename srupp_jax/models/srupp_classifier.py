"""The SRU++ text classifier: embedding -> dropout -> SRU++ encoder -> pooling -> dropout ->
classifier (`config.task = "classification"`, `model.arch = "srupp"`).

  tokens [B, L], lengths [B]  ->  x = dropout(E[tokens])                         [B, L, d]
  h = SRUpp(x, mask_pad)       bidirectional (default): d / 2 per direction, attention over
                               the whole text; unidirectional: a language model's stack
                               (causal attention, forward recurrence)             [B, L, d]
  v = pool(h)                  `model.pooling` (classifier.Pooling)               [B, d]
  logits = dropout(v) W_c + b_c                                                   [B, C]

Padding (right of each text's `lengths` positions) is masked as attention keys and in the
recurrence, where a padded step keeps c and outputs 0 (the library's `mask_pad`, True =
padding), so a text's logits do not depend on how much padding its batch has.

The embedding and the stack have exactly the shapes and names of `SRUppLM`'s (an embedding of
d per token, or adaptive input with the same cutoffs; `rnn` an `SRUpp(d, d, d', ...)` when
unidirectional), so a unidirectional classifier can start from a language model of this
project (`tasks/transfer.py`): with the LM's parameters its `rnn` output is the LM's own.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import KernelOptions, TPUKernelOptions
from srupp_jax.errors import require
from srupp_jax.models.base import check_kernel_options, compute_dtype, config_from
from srupp_jax.models.classifier import (
    ClassifierModel,
    Pooling,
    check_built,
    padding,
    shared_checks,
)
from srupp_jax.models.flops import estimate_flops_per_token
from srupp_jax.nn.adaptive import AdaptiveInput
from srupp_jax.nn.attention import attention_layers, check_heads
from srupp_jax.nn.clusters import check_cutoffs, cluster_dims
from srupp_jax.nn.linear import linear
from srupp_jax.nn.recurrence import IMPLS, resolve_backend
from srupp_jax.nn.remat import check_remat
from srupp_jax.nn.sru import SRUpp


@dataclasses.dataclass(frozen=True)
class SRUppClassifierConfig:
    """The SRU++ classifier's hyperparameters (paper notation), checked once.

    vocab_size, num_classes: from the data (0 until it is read); d: hidden size (the
    embedding's too; d / 2 per direction when bidirectional); d_proj: d'; num_layers; k or
    attention_last_n: where attention sits (as SRUppConfig); num_heads; dropout,
    attn_dropout; highway_bias; layer_norm; bidirectional (model.encoder_bidirectional);
    pooling; cutoffs, adaptive_factor: adaptive input embeddings (a word LM's); impl, kernel,
    tpu_kernel: the recurrence backend and the kernels' options; remat: gradient
    checkpointing (nn/remat.py); dtype: compute dtype.
    Every bad value raises ValueError naming its config key (model.<name>).
    """
    vocab_size: int
    num_classes: int
    d: int
    d_proj: int
    num_layers: int = 2
    k: int = 1
    attention_last_n: int = -1
    num_heads: int = 1
    dropout: float = 0.0
    attn_dropout: float = 0.0
    highway_bias: float = -2.0
    layer_norm: bool = False
    bidirectional: bool = True
    pooling: str = "mean"
    cutoffs: tuple = ()
    adaptive_factor: float = 4.0
    impl: str = "auto"
    kernel: KernelOptions = KernelOptions()
    tpu_kernel: TPUKernelOptions = TPUKernelOptions()
    remat: str = "none"
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "cutoffs", tuple(self.cutoffs or ()))
        require(shared_checks(self) + [
            (self.d >= 1, f"model.d={self.d}; expected >= 1"),
            (self.d_proj >= 1, f"model.d_proj={self.d_proj}; expected >= 1"),
            (not self.bidirectional or self.d % 2 == 0,
             f"model.d={self.d} with model.encoder_bidirectional=True; expected an even d "
             "(d / 2 per direction)"),
            (self.impl in IMPLS, f"model.impl={self.impl!r}; expected one of "
                                 f"{', '.join(IMPLS)}"),
        ])
        compute_dtype(self.dtype)
        check_heads(self.d_proj, self.num_heads, prefix="model.")
        placement = attention_layers(self.num_layers, self.k, self.attention_last_n,
                                     prefix="model.")
        if self.attention_last_n < 0 and not any(placement):
            raise ValueError(f"model.k={self.k} with model.num_layers={self.num_layers} leaves "
                             "no attention layer; expected k <= num_layers")
        if self.cutoffs and self.vocab_size:
            check_cutoffs(self.cutoffs, self.vocab_size)
            cluster_dims(self.d, self.adaptive_factor, len(self.cutoffs) + 1)
        check_kernel_options(self.kernel, self.tpu_kernel)
        check_remat(self.remat)

    @classmethod
    def from_config(cls, config, **overrides) -> "SRUppClassifierConfig":
        """From config.model (bidirectional from model.encoder_bidirectional) and
        config.train.compute_dtype; `overrides` replace any field."""
        return config_from(cls, config, {"bidirectional": "encoder_bidirectional"},
                           **overrides)

    def build(self, rngs: nnx.Rngs) -> "SRUppClassifier":
        return SRUppClassifier(self, rngs=rngs)

    def flops_per_token(self, length: float) -> float:
        """Forward + backward FLOPs per text token at mean text length `length` (keys per
        query), by `flops.estimate_flops_per_token` (both directions together hold the
        matrices of one d-wide stack; the classifier layer counted per token, an upper
        bound)."""
        attn = sum(attention_layers(self.num_layers, self.k, self.attention_last_n))
        return estimate_flops_per_token(self.d, self.d_proj, self.num_layers, attn,
                                        max(self.num_classes, 1), float(length))


def _uniform(limit: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype,
                                                                     -limit, limit)


class SRUppClassifier(ClassifierModel, nnx.Module):
    """The SRU++ classifier of an `SRUppClassifierConfig` (see the module docstring)."""

    def __init__(self, config: SRUppClassifierConfig, *, rngs: nnx.Rngs):
        c = config
        check_built(c)
        self.config = c
        dtype = compute_dtype(c.dtype)
        if c.cutoffs:      # a word LM's adaptive input
            self.embed = AdaptiveInput(c.vocab_size, c.d, list(c.cutoffs),
                                       factor=c.adaptive_factor, scale_embedding=False,
                                       rngs=rngs)    # as the SRU++ LM's (srupp_lm.py)
        else:              # the LM's init: U[-sqrt(3/d), sqrt(3/d)]
            self.embed = nnx.Embed(c.vocab_size, c.d, embedding_init=_uniform(math.sqrt(3 / c.d)),
                                   rngs=rngs)
        self.dropout = nnx.Dropout(c.dropout, rngs=rngs)
        self.backend = resolve_backend(c.impl)
        self.rnn = SRUpp(c.d, c.d // 2 if c.bidirectional else c.d, c.d_proj, c.num_layers,
                         k=c.k, attention_last_n=None if c.attention_last_n < 0 else
                         c.attention_last_n, num_heads=c.num_heads, dropout=c.dropout,
                         attn_dropout=c.attn_dropout, bidirectional=c.bidirectional,
                         highway_bias=c.highway_bias, layer_norm=c.layer_norm,
                         impl=self.backend, kernel=c.kernel, tpu_kernel=c.tpu_kernel,
                         remat=c.remat, dtype=dtype, rngs=rngs)
        self.pool = Pooling(c.d, c.pooling, bidirectional=c.bidirectional, dtype=dtype,
                            rngs=rngs)
        self.head = linear(c.d, c.num_classes, bias=True, dtype=dtype, rngs=rngs)

    def encode(self, tokens, lengths):
        """tokens [B, L] int, lengths [B] -> (h [B, L, d], pad [B, L] bool)."""
        pad = padding(lengths, tokens.shape[1])
        h, _, _ = self.rnn(self.dropout(self.embed(tokens)), mask_pad=pad)
        return h, pad
