"""The base of every encoder-decoder here (SRU++, the Transformer baseline): `log_probs` and the
label-smoothed `loss` from a model's `encode` / `decode`, and the checks their configs share.

  Seq2SeqModel         the shared methods (decoding, decode.py, also needs
                       `init_decode_state` and `decode_step`)
  Encoded              an encoder's output and its padding
  label_smoothed_sums  the loss of a padded batch as sums and a weight
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from srupp_jax.models.base import compute_dtype


class Encoded(NamedTuple):
    """An encoder's output: out [batch, S, d] and pad [batch, S] bool (True = padding)."""
    out: jax.Array
    pad: jax.Array



def label_smoothed_sums(logits, targets, pad_id: int, epsilon: float):
    """(smoothed_sum, nll_sum, weight) over the non-pad targets of logits [..., V] (float32):
    the cross entropy against (1 - epsilon) one-hot + epsilon / V (`optax.smooth_labels`),
    the plain negative log-likelihood, and the number of non-pad targets (float32), so that a
    task averages padded batches exactly (sum / weight)."""
    logits = logits.astype(jnp.float32)
    keep = targets != pad_id
    labels = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), epsilon)
    smoothed = optax.softmax_cross_entropy(logits, labels)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (jnp.sum(jnp.where(keep, smoothed, 0.0)), jnp.sum(jnp.where(keep, nll, 0.0)),
            jnp.sum(keep).astype(jnp.float32))



def check_tokens(name, tokens, batch=None):
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} has shape {tokens.shape} dtype {tokens.dtype}; expected "
                         "[batch, length] integers")
    if batch is not None and tokens.shape[0] != batch:
        raise ValueError(f"{name} has batch {tokens.shape[0]}; expected {batch} (as src)")



class Seq2SeqModel:
    """Shared by the encoder-decoders: `log_probs` and `loss` from `encode(src) -> Encoded`,
    `decode(encoded, tgt_in) -> logits [B, T, V]`; attributes pad_id, bos_id, eos_id,
    vocab_size, label_smoothing. Decoding (decode.py) also needs
    `init_decode_state(encoded, max_len)` and `decode_step(state, tokens [B], t)`."""

    def logits(self, src, tgt_in):
        """Teacher-forced logits [B, T, V] (float32) for src [B, S] and tgt_in [B, T]."""
        check_tokens("src", src)
        check_tokens("tgt_in", tgt_in, src.shape[0])
        return self.decode(self.encode(src), tgt_in).astype(jnp.float32)

    def log_probs(self, src, tgt_in):
        """log p(tgt_out[t] | src, tgt_in[<= t]) over the vocabulary: [B, T, V] float32."""
        return jax.nn.log_softmax(self.logits(src, tgt_in), axis=-1)

    def loss(self, src, tgt_in, tgt_out):
        """(smoothed_sum, nll_sum, weight) of `label_smoothed_sums` for a batch: src [B, S],
        tgt_in [B, T] (bos + target), tgt_out [B, T] (target + eos), int32, pad_id padding;
        epsilon = label_smoothing. The mean training loss is smoothed_sum / weight."""
        if tgt_out.shape != tgt_in.shape:
            raise ValueError(f"tgt_out has shape {tgt_out.shape}; expected {tgt_in.shape} "
                             "(as tgt_in)")
        return label_smoothed_sums(self.logits(src, tgt_in), tgt_out, self.pad_id,
                                   self.label_smoothing)

    def _start(self, c):
        """The attributes every encoder-decoder takes from its config `c` (vocabulary resolved:
        at least 2 ids), before building its layers."""
        if c.vocab_size < 2:
            raise ValueError(f"model.vocab_size={c.vocab_size}; expected >= 2")
        self.config = c
        self.vocab_size, self.label_smoothing = c.vocab_size, c.label_smoothing
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id
        self.dtype = compute_dtype(c.dtype)

    def _output_logits(self, h, table, bias):
        """Tied output layer: h [..., d_embed] -> h E^T + b [..., V] float32."""
        return (h @ table.astype(h.dtype).T).astype(jnp.float32) + bias



def shared_checks(c) -> list:
    """The (ok, message) checks every encoder-decoder config `c` shares: the vocabulary, the
    layers, the dropouts and label smoothing (each naming its config key)."""
    return [
        (c.vocab_size >= 0, f"model.vocab_size={c.vocab_size}; expected >= 0 (0 = the data's)"),
        (c.encoder_layers >= 1, f"model.encoder_layers={c.encoder_layers}; expected >= 1"),
        (c.decoder_layers >= 1, f"model.decoder_layers={c.decoder_layers}; expected >= 1"),
        (0 <= c.dropout < 1, f"model.dropout={c.dropout}; expected 0 <= p < 1"),
        (0 <= c.attn_dropout < 1, f"model.attn_dropout={c.attn_dropout}; expected 0 <= p < 1"),
        (0 <= c.label_smoothing < 1,
         f"model.label_smoothing={c.label_smoothing}; expected 0 <= epsilon < 1"),
    ]



def check_special_ids(c) -> None:
    """pad/bos/eos ids of a config `c` in [0, vocab_size) (once known), pad distinct from the
    others (bos may equal eos); ValueError naming the key."""
    ids = {"pad_id": c.pad_id, "bos_id": c.bos_id, "eos_id": c.eos_id}
    for name, value in ids.items():
        if value < 0 or (c.vocab_size and value >= c.vocab_size):
            raise ValueError(f"model.{name}={value}; expected 0 <= id < vocab_size="
                             f"{c.vocab_size}")
    if c.pad_id in (c.bos_id, c.eos_id):
        raise ValueError(f"model.pad_id={c.pad_id} equals model.bos_id={c.bos_id} or "
                         f"model.eos_id={c.eos_id}; expected a distinct padding id")
