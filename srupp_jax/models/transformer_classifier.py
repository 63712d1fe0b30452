"""The Transformer encoder baseline of the classification task (`model.arch = "transformer"`),
for comparisons at the same size, as Table 8 has for translation.

The encoder of the translation baseline (transformer_seq2seq.py, Lin et al. 2020's layers):
embeddings N(0, d^-1/2) times sqrt(d) plus sinusoidal positions, dropout, then `num_layers`
post-layer-norm encoder layers (multi-head self-attention over the whole text, padding
masked as keys; the feed-forward block), Xavier-uniform matrices; then the pooling and the
classifier layer every classifier shares (classifier.py).

  TransformerClassifierConfig   frozen, validated; from_config(config) (d_model from model.d,
                                d_ff from model.d_inner), build(rngs), flops_per_token
  TransformerClassifier         encode(tokens, lengths) and ClassifierModel's logits / loss
"""
from __future__ import annotations

import dataclasses
import math

import jax
from flax import nnx

from srupp_jax.errors import require
from srupp_jax.models.base import compute_dtype, config_from
from srupp_jax.models.classifier import (
    ClassifierModel,
    Pooling,
    check_built,
    padding,
    shared_checks,
)
from srupp_jax.models.transformer_seq2seq import EncoderLayer, layer_checks, sinusoid
from srupp_jax.nn.linear import linear, xavier_uniform


@dataclasses.dataclass(frozen=True)
class TransformerClassifierConfig:
    """vocab_size, num_classes (the data's; 0 until read); d_model; num_heads; d_ff;
    num_layers; dropout, attn_dropout; pooling; dtype. ValueError names the config key."""
    vocab_size: int
    num_classes: int
    d_model: int
    num_heads: int = 4
    d_ff: int = 1024
    num_layers: int = 2
    dropout: float = 0.1
    attn_dropout: float = 0.1
    pooling: str = "mean"
    dtype: str = "float32"

    def __post_init__(self):
        require(shared_checks(self) + layer_checks(self))
        compute_dtype(self.dtype)

    @classmethod
    def from_config(cls, config, **overrides) -> "TransformerClassifierConfig":
        return config_from(cls, config, {"d_model": "d", "d_ff": "d_inner"}, **overrides)

    def build(self, rngs: nnx.Rngs) -> "TransformerClassifier":
        return TransformerClassifier(self, rngs=rngs)

    def flops_per_token(self, length: float) -> float:
        """Forward + backward FLOPs per text token at mean length `length`: 6 per matrix
        weight (4 d^2 attention + 2 d d_ff per layer, the classifier counted per token) and
        12 * keys * d per query of each layer (as TransformerSeq2SeqConfig)."""
        d, f = self.d_model, self.d_ff
        layer = 6.0 * (4 * d * d + 2 * d * f) + 12.0 * float(length) * d
        return self.num_layers * layer + 6.0 * d * max(self.num_classes, 1)


class TransformerClassifier(ClassifierModel, nnx.Module):
    """The Transformer encoder classifier of a `TransformerClassifierConfig`."""

    def __init__(self, config: TransformerClassifierConfig, *, rngs: nnx.Rngs):
        c = config
        check_built(c)
        self.config, self.d = c, c.d_model
        dtype = self.dtype = compute_dtype(c.dtype)
        self.embed = nnx.Embed(c.vocab_size, c.d_model,
                               embedding_init=jax.nn.initializers.normal(c.d_model ** -0.5),
                               rngs=rngs)
        self.encoder = nnx.List([
            EncoderLayer(c.d_model, c.num_heads, c.d_ff, dropout=c.dropout,
                         attn_dropout=c.attn_dropout, dtype=dtype, rngs=rngs)
            for _ in range(c.num_layers)])
        for _, p in nnx.iter_graph(self.encoder):      # as Lin et al.: Xavier for every matrix
            if isinstance(p, nnx.Param) and p.ndim == 2:
                p[...] = xavier_uniform()(rngs.params(), p.shape, p.dtype)
        self.dropout = nnx.Dropout(c.dropout, rngs=rngs)
        self.pool = Pooling(c.d_model, c.pooling, dtype=dtype, rngs=rngs)
        self.head = linear(c.d_model, c.num_classes, bias=True, dtype=dtype, rngs=rngs)

    def encode(self, tokens, lengths):
        """tokens [B, L] int, lengths [B] -> (h [B, L, d], pad [B, L] bool)."""
        length = tokens.shape[1]
        pad = padding(lengths, length)
        x = self.embed(tokens) * math.sqrt(self.d) + sinusoid(jax.numpy.arange(length), self.d)
        x = self.dropout(x.astype(self.dtype))
        mask = ~pad[:, None, None, :]
        for layer in self.encoder:
            x = layer(x, mask)
        return x, pad
