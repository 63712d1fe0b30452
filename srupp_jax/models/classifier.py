"""The base of every text classifier here (SRU++, the Transformer baseline): pooling an encoder's
output into one vector per text, the classifier layer, the loss, and the checks their configs
share.

A text is tokens [B, L] int with lengths [B] (its real positions, the end id included; the
rest is padding). A model's `encode(tokens, lengths)` gives h [B, L, d] and pad [B, L] (True =
padding); then

    v = pool(h, pad)                           [B, d]
    logits = dropout(v) W_c + b_c              [B, num_classes]

  Pooling          `model.pooling`: "mean" or "max" over the real positions; "first" (the
                   output at position 0); "last" (each direction's final state: the forward
                   features at the last real position, the backward ones at position 0);
                   "attention" (softmax over the real positions of a learned score w . h_t,
                   then the weighted sum of h: Yang et al. 2016 with one vector)
  ClassifierModel  logits, log_probs and the loss from `encode`, `pool`, `head`, `dropout`
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from srupp_jax.nn.linear import linear

POOLINGS = ("mean", "max", "first", "last", "attention")


def padding(lengths, length: int):
    """pad [B, length] bool, True after the first lengths[b] positions of row b."""
    return jnp.arange(length)[None, :] >= jnp.asarray(lengths)[:, None]


class Pooling(nnx.Module):
    """h [B, L, d], pad [B, L] -> [B, d] (the module docstring's kinds).

    Args: d: features of h; kind: one of POOLINGS; bidirectional: h holds [forward ;
    backward] features, d / 2 each ("last" takes each direction's final state)."""

    def __init__(self, d: int, kind: str, *, bidirectional: bool = False, dtype=None,
                 rngs: nnx.Rngs):
        if kind not in POOLINGS:
            raise ValueError(f"model.pooling={kind!r}; expected one of {', '.join(POOLINGS)}")
        self.kind, self.half = kind, d // 2 if bidirectional else d
        self.score = linear(d, 1, dtype=dtype, rngs=rngs) if kind == "attention" else None

    def __call__(self, h, pad):
        real = ~pad[..., None]
        if self.kind == "mean":
            count = jnp.maximum(real.sum(axis=1), 1).astype(h.dtype)
            return jnp.where(real, h, 0).sum(axis=1) / count
        if self.kind == "max":
            return jnp.where(real, h, jnp.finfo(h.dtype).min).max(axis=1)
        if self.kind == "first":
            return h[:, 0]
        if self.kind == "last":
            last = jnp.maximum((~pad).sum(axis=1) - 1, 0)
            at_last = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
            return jnp.concatenate([at_last[:, :self.half], h[:, 0, self.half:]], axis=-1)
        scores = self.score(h)[..., 0].astype(jnp.float32)
        weights = jax.nn.softmax(jnp.where(pad, -jnp.inf, scores), axis=-1)
        return jnp.einsum("bl,bld->bd", weights.astype(h.dtype), h)


class ClassifierModel:
    """What every classifier derives from its `encode(tokens, lengths) -> (h, pad)`, `pool`
    (Pooling), `dropout` and `head` (d -> num_classes)."""

    def logits(self, tokens, lengths):
        """tokens [B, L] int, lengths [B] int -> logits [B, num_classes] float32."""
        if tokens.ndim != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"tokens {tokens.shape}, lengths {lengths.shape}; expected "
                             "[batch, length] and [batch]")
        h, pad = self.encode(tokens, lengths)
        return self.head(self.dropout(self.pool(h, pad))).astype(jnp.float32)

    def log_probs(self, tokens, lengths):
        """log p(class | text): [B, num_classes] float32."""
        return jax.nn.log_softmax(self.logits(tokens, lengths), axis=-1)

    def loss(self, tokens, lengths, labels, weights):
        """(summed weights * cross entropy, summed weights) of a batch: labels [B] int,
        weights [B] float (0 for filler rows)."""
        nll = optax.softmax_cross_entropy_with_integer_labels(self.logits(tokens, lengths),
                                                              labels)
        weights = weights.astype(jnp.float32)
        return jnp.sum(nll * weights), jnp.sum(weights)


def shared_checks(c) -> list:
    """The (ok, message) checks every classifier config `c` shares, naming the config keys."""
    return [
        (c.vocab_size >= 0, f"model.vocab_size={c.vocab_size}; expected >= 0 (0 = the data's)"),
        (c.num_classes >= 0, f"model.num_classes={c.num_classes}; expected >= 0 (0 = the "
                             "number of labels in train)"),
        (c.num_layers >= 1, f"model.num_layers={c.num_layers}; expected >= 1"),
        (0 <= c.dropout < 1, f"model.dropout={c.dropout}; expected 0 <= p < 1"),
        (0 <= c.attn_dropout < 1, f"model.attn_dropout={c.attn_dropout}; expected 0 <= p < 1"),
        (c.pooling in POOLINGS,
         f"model.pooling={c.pooling!r}; expected one of {', '.join(POOLINGS)}"),
    ]


def check_built(c) -> None:
    """ValueError when a model is built before the data gave its sizes."""
    if c.vocab_size < 2 or c.num_classes < 2:
        raise ValueError(f"model.vocab_size={c.vocab_size}, model.num_classes={c.num_classes}; "
                         "expected >= 2 each (read the data first: task.load)")
