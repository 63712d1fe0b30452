"""The SRU++ encoder-decoder for translation (paper section 6, appendix B, Table 8).

  Seq2SeqConfig        frozen, validated hyperparameters; `from_config(config)`, `build(rngs)`,
                       `flops_per_token(src_len, tgt_len)`
  SRUppSeq2Seq         the model
  Seq2SeqModel         what every encoder-decoder here shares: `log_probs` and `loss` from
                       `encode` / `decode`; the Transformer baseline derives from it too
  label_smoothed_sums  the loss of a padded batch as sums and a weight

Model (shapes [batch, length, features]; src [B, S], tgt [B, T] int32, `pad_id` padding):
  x = dropout(E[tokens] * sqrt(d_embed))     one embedding E [V, d_embed] for both sides
  encoder: SRU++ stack, the input projected d_embed -> d first (`proj_input_to_hidden_first`
    of `sru.SRUpp`); attention over the whole source (no causal mask), source padding masked
    as keys and in the recurrence (padded steps keep c); forward recurrence, or bidirectional
    (d / 2 per direction) with `encoder_bidirectional`. X_src = its output [B, S, d].
  decoder: SRU++ stack likewise, causal; every attention layer treats X_src as extra attention
    context (appendix B): Q = W_q [X_src, X_tgt], K = W_k Q, V = W_v Q, and the Q_tgt rows
    attend to every non-pad source position and the targets up to their own.
  output: logits = (dropout(h) W_p) E^T + b   (W_p: d -> d_embed; tied to the embedding).

Why so small (inferred: neither asappresearch/imitkd nor asappresearch/sru holds the SRU++
translation code): with Lin et al.'s embedding wrapper (an embedding of 256 per side, the output
tied to the target's), the layers of d = 1024, d' = 256, 6 + 6 layers and this input/output
projection hold 14,997,516 parameters; the Transformer of Table 8 holds 14,745,600 besides its
embeddings, so 20.1M there leaves ~5.35M of embeddings and 20.35M here (Table 8: 20.4M); k = 2
removes W_kv and alpha from 6 layers (-786,438: 19.56M, Table 8: 19.6M). Without the input
projection (a first layer reading 256 features) it would be ~19.95M. Here the two sides share
one table of the joint vocabulary, so the embedding part is V * d_embed + V (the output bias).

Decoding (`decode.py`): `encode` once, `init_decode_state`, then `decode_step` per position
with the recurrent c of every layer and each attention layer's cached keys/values of the source
and of the previous targets, all batch-first.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import KernelOptions, TPUKernelOptions
from srupp_jax.errors import require
from srupp_jax.models.base import check_kernel_options, compute_dtype, config_from
from srupp_jax.models.flops import ELEMENTWISE_FLOPS_PER_D
from srupp_jax.models.seq2seq import (
    Encoded,
    Seq2SeqModel,
    check_special_ids,
    check_tokens,
    shared_checks,
)
from srupp_jax.nn.attention import attention_layers, check_heads, linear
from srupp_jax.nn.recurrence import IMPLS, resolve_backend
from srupp_jax.nn.remat import check_remat
from srupp_jax.nn.sru import SRUpp


class SRUppDecodeState(NamedTuple):
    """The SRU++ decoder's incremental state, batch-first: c [batch, layers, d] float32 and,
    per decoder layer, the attention's `attention.KVCache` (None for layers without)."""
    c: jax.Array
    caches: tuple


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    """The SRU++ encoder-decoder's hyperparameters (paper notation), checked once; defaults are
    Table 8's (d 1024, d' 256, 6 + 6 layers, attention in every layer).

    vocab_size: the joint vocabulary (0 while the data have not been read); d: hidden size;
    d_proj: d'; d_embed: the shared embedding's width; encoder_layers, decoder_layers;
    k: attention every k layers (both stacks); num_heads; dropout (embeddings, hidden path,
    transforms, output), attn_dropout (attention weights); highway_bias;
    encoder_bidirectional: a bidirectional encoder of d / 2 per direction (the paper says
    nothing; sru.SRUpp's default and ours: forward); label_smoothing; pad_id, bos_id, eos_id
    (the data's); impl: recurrence backend; kernel, tpu_kernel: the GPU and TPU kernels'
    options; remat: gradient checkpointing (nn/remat.py); dtype: compute dtype.
    Every bad value raises ValueError naming its config key (model.<name>).
    """
    vocab_size: int
    d: int = 1024
    d_proj: int = 256
    d_embed: int = 256
    encoder_layers: int = 6
    decoder_layers: int = 6
    k: int = 1
    num_heads: int = 1
    dropout: float = 0.1
    attn_dropout: float = 0.0
    highway_bias: float = -2.0
    encoder_bidirectional: bool = False
    label_smoothing: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    impl: str = "auto"
    kernel: KernelOptions = KernelOptions()
    tpu_kernel: TPUKernelOptions = TPUKernelOptions()
    remat: str = "none"
    dtype: str = "float32"

    def __post_init__(self):
        require(shared_checks(self) + [
            (self.d >= 1, f"model.d={self.d}; expected >= 1"),
            (self.d_embed >= 1, f"model.d_embed={self.d_embed}; expected >= 1"),
            (not self.encoder_bidirectional or self.d % 2 == 0,
             f"model.d={self.d} with model.encoder_bidirectional=True; expected an even d "
             "(d / 2 per direction)"),
            (self.impl in IMPLS, f"model.impl={self.impl!r}; expected one of "
                                 f"{', '.join(IMPLS)}"),
        ])
        check_special_ids(self)
        check_remat(self.remat)
        compute_dtype(self.dtype)
        check_heads(self.d_proj, self.num_heads, prefix="model.")
        for side in ("encoder", "decoder"):
            layers = getattr(self, f"{side}_layers")
            if not any(attention_layers(layers, self.k, prefix="model.")):
                raise ValueError(f"model.k={self.k} with model.{side}_layers={layers} leaves "
                                 f"the {side} no attention layer; expected k <= {layers}")
        check_kernel_options(self.kernel, self.tpu_kernel)

    @classmethod
    def from_config(cls, config, **overrides) -> "Seq2SeqConfig":
        """From a run's config (`base.config_from`): the keys of config.model named as the
        fields, config.train.compute_dtype; `overrides` (e.g. vocab_size and the special ids
        from the data) replace any of them."""
        return config_from(cls, config, **overrides)

    def build(self, rngs: nnx.Rngs) -> "SRUppSeq2Seq":
        return SRUppSeq2Seq(self, rngs=rngs)

    def flops_per_token(self, src_len: float, tgt_len: float) -> float:
        """Forward + backward FLOPs per target token of a sentence pair of these (mean)
        lengths, by the convention of `flops.estimate_flops_per_token`: 6 per matrix weight
        applied per token, 12 * keys * d' per query of an attention layer (q.k and p.v, full
        score matrices: S keys in the encoder, S + T in the decoder), the elementwise work.
        Per pair: S * (encoder + each decoder attention layer's W_q, W_kv over X_src)
        + T * (decoder + output layer); divided by T."""
        d, dp, de = self.d, self.d_proj, self.d_embed
        s, t = float(src_len), float(tgt_len)
        if s < 1 or t < 1:
            raise ValueError(f"src_len={src_len}, tgt_len={tgt_len}; expected >= 1")

        def stack(layers, keys):
            attn = sum(attention_layers(layers, self.k))
            w = (de * d if de != d else 0) + layers * (d * dp + 3 * d * dp) + attn * 2 * dp * dp
            return 6.0 * w + 12.0 * keys * dp * attn + 3.0 * ELEMENTWISE_FLOPS_PER_D * d * layers

        dec_attn = sum(attention_layers(self.decoder_layers, self.k))
        memory = 6.0 * dec_attn * (d * dp + 2 * dp * dp)
        output = 6.0 * ((d * de if d != de else 0) + de * self.vocab_size)
        total = (s * (stack(self.encoder_layers, s) + memory)
                 + t * (stack(self.decoder_layers, s + t) + output))
        return total / t


def _embed_init(d_embed: int):
    return jax.nn.initializers.normal(stddev=d_embed ** -0.5)   # unit scale after * sqrt(d)


class SRUppSeq2Seq(Seq2SeqModel, nnx.Module):
    """The SRU++ encoder-decoder of a `Seq2SeqConfig` (see the module docstring)."""

    def __init__(self, config: Seq2SeqConfig, *, rngs: nnx.Rngs):
        c = config
        self._start(c)
        dtype = self.dtype
        self.backend = resolve_backend(c.impl)
        self.embed = nnx.Embed(c.vocab_size, c.d_embed, embedding_init=_embed_init(c.d_embed),
                               rngs=rngs)
        self.scale = math.sqrt(c.d_embed)
        common = dict(k=c.k, num_heads=c.num_heads, dropout=c.dropout,
                      attn_dropout=c.attn_dropout, highway_bias=c.highway_bias,
                      proj_input_to_hidden_first=True, impl=self.backend, kernel=c.kernel,
                      tpu_kernel=c.tpu_kernel, remat=c.remat, dtype=dtype, rngs=rngs)
        bi = c.encoder_bidirectional
        self.encoder = SRUpp(c.d_embed, c.d // 2 if bi else c.d, c.d_proj, c.encoder_layers,
                             bidirectional=bi, causal=False, **common)
        self.decoder = SRUpp(c.d_embed, c.d, c.d_proj, c.decoder_layers, causal=True, **common)
        self.out_proj = (linear(c.d, c.d_embed, dtype=dtype, rngs=rngs)
                         if c.d != c.d_embed else None)
        self.out_bias = nnx.Param(jnp.zeros((c.vocab_size,), jnp.float32))
        self.dropout = nnx.Dropout(c.dropout, rngs=rngs)

    def _embed(self, tokens):
        return self.dropout((self.embed(tokens) * self.scale).astype(self.dtype))

    def _memory(self, encoded: Encoded):
        return [encoded.out if attn else None for attn in self.decoder.has_attention]

    def _head(self, h):
        h = self.dropout(h)
        if self.out_proj is not None:
            h = self.out_proj(h)
        return self._output_logits(h, self.embed.embedding[...], self.out_bias[...])

    def encode(self, src) -> Encoded:
        """src [B, S] int -> Encoded(X_src [B, S, d], pad [B, S])."""
        check_tokens("src", src)
        pad = src == self.pad_id
        out, _, _ = self.encoder(self._embed(src), mask_pad=pad)
        return Encoded(out, pad)

    def decode(self, encoded: Encoded, tgt_in):
        """Teacher forcing: tgt_in [B, T] int -> logits [B, T, V] float32."""
        x = self._embed(tgt_in)
        h, _, _ = self.decoder(x, mask_pad=tgt_in == self.pad_id,
                               memory=self._memory(encoded), memory_mask_pad=encoded.pad)
        return self._head(h)

    def init_decode_state(self, encoded: Encoded, max_len: int) -> SRUppDecodeState:
        """The decoder's state before position 0, with room for `max_len` positions: zero c,
        and each attention layer's keys/values of X_src (computed here, once)."""
        batch = encoded.out.shape[0]
        caches = self.decoder.init_cache(self._memory(encoded), encoded.pad, max_len)
        c = jnp.zeros((batch, self.decoder.num_layers, self.decoder.out_size), jnp.float32)
        return SRUppDecodeState(c, caches)

    def decode_step(self, state: SRUppDecodeState, tokens, t):
        """Position t: tokens [B] int (the previous output, bos at t = 0) -> (log-probabilities
        [B, V] float32 of the next token, the new state). Evaluation mode."""
        x = self._embed(tokens[:, None])
        h, c, caches = self.decoder.step(x, jnp.swapaxes(state.c, 0, 1), state.caches, t)
        logp = jax.nn.log_softmax(self._head(h)[:, 0], axis=-1)
        return logp, SRUppDecodeState(jnp.swapaxes(c, 0, 1), caches)
