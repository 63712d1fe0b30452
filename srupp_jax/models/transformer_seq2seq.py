"""The Transformer baseline of Table 8: Lin et al. 2020's IWSLT'14 De-En model.

Read from asappresearch/imitkd (`configs/iwslt/teacher.yaml`, `generation/modules/`): encoder and
decoder of 8 layers each (the yaml's num_layers: 8, as the paper says), d_model 256, 4 heads,
feed-forward 1024, dropout 0.1 everywhere (embeddings, sub-layer outputs, feed-forward, attention
weights: torch's nn.MultiheadAttention(dropout=0.1)), post-layer-norm sub-layers
(x = LN(x + dropout(sublayer(x))), as torch.nn.Transformer; no final norm), embeddings
N(0, d^-1/2) scaled by sqrt(d) plus interleaved sinusoidal positions, Xavier-uniform matrices,
and the output layer (with a bias) tied to the target embedding. Their two sides have separate
vocabularies and tables; here the joint vocabulary has one table for both (so the parameter
count is 14,745,600 + V * 257 against their 14,745,600 + (V_src + V_tgt) * 256 + V_tgt; Table 8:
20.1M). Their loss is plain cross entropy (torch.nn.CrossEntropyLoss): label_smoothing=0 here
reproduces it.

  TransformerSeq2SeqConfig   frozen, validated; from_config(config), build(rngs), flops_per_token
  TransformerSeq2Seq         encode / decode / log_probs / loss (seq2seq.Seq2SeqModel) and the
                             decoding interface of decode.py (encode, init_decode_state,
                             decode_step), with cached keys/values of the source (per layer,
                             computed once) and of the previous targets.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from srupp_jax.errors import require
from srupp_jax.models.base import compute_dtype, config_from
from srupp_jax.models.seq2seq import (
    Encoded,
    Seq2SeqModel,
    check_special_ids,
    check_tokens,
    shared_checks,
)
from srupp_jax.nn.attention import attention_mask, multihead_attention
from srupp_jax.nn.linear import PositionwiseFF, linear, norm, xavier_uniform


def sinusoid(positions, d: int, dtype=jnp.float32):
    """Positional encodings [..., d] of integer positions [...]: sin(p w_i) at feature 2i,
    cos(p w_i) at 2i + 1, w_i = 10000^(-2i/d) (Vaswani et al.; the layout of Lin et al.)."""
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return pe.reshape(pe.shape[:-2] + (d,)).astype(dtype)


class TransformerDecodeState(NamedTuple):
    """Incremental state, batch-first: per decoder layer the self-attention keys/values of the
    positions so far ([B, max_len, H, d_head], written at t) and the cross-attention keys/values
    of the source ([B, S, H, d_head]); src_ok [B, S] bool (non-pad source)."""
    self_k: tuple
    self_v: tuple
    cross_k: tuple
    cross_v: tuple
    src_ok: jax.Array


class MultiHeadAttention(nnx.Module):
    """torch.nn.MultiheadAttention: one input projection [d, 3d] (q | k | v, with bias,
    Xavier over the whole matrix), heads, softmax attention (dropout on the weights), W_o."""

    def __init__(self, d: int, num_heads: int, *, attn_dropout: float = 0.0, dtype=None,
                 rngs: nnx.Rngs):
        self.d, self.num_heads = d, num_heads
        self.w_in = linear(d, 3 * d, bias=True, dtype=dtype, rngs=rngs)
        self.w_out = linear(d, d, bias=True, dtype=dtype, rngs=rngs)
        self.attn_dropout = attn_dropout
        self.deterministic = False
        self.rngs = rngs["dropout"].fork() if attn_dropout > 0 else None

    def _project(self, x, part: slice):
        w = self.w_in.kernel[...][:, part].astype(x.dtype)
        y = x @ w + self.w_in.bias[...][part].astype(x.dtype)
        return y.reshape(y.shape[:-1] + (self.num_heads, -1))

    def query(self, x):
        """x [B, L, d] -> heads [B, L, H, d_head]."""
        return self._project(x, slice(0, self.d))

    def keys_values(self, x):
        """x [B, N, d] -> (K, V), each [B, N, H, d_head]."""
        return self._project(x, slice(self.d, 2 * self.d)), self._project(x, slice(2 * self.d,
                                                                                    None))

    def attend(self, q, k, v, mask):
        """Heads q [B, L, H, dh], k, v [B, N, H, dh], mask bool broadcastable to
        [B, H, L, N] -> [B, L, d]."""
        training = self.attn_dropout > 0 and not self.deterministic
        a = multihead_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask,
                                dropout_rate=self.attn_dropout if training else 0.0,
                                dropout_rng=self.rngs() if training else None)
        return self.w_out(a.reshape(a.shape[:2] + (self.d,)))


class EncoderLayer(nnx.Module):
    def __init__(self, d, num_heads, d_ff, *, dropout, attn_dropout, dtype, rngs):
        self.attn = MultiHeadAttention(d, num_heads, attn_dropout=attn_dropout, dtype=dtype,
                                       rngs=rngs)
        self.norm = norm(d, dtype=dtype, rngs=rngs)
        self.ff = PositionwiseFF(d, d_ff, dropout=dropout, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x, mask):
        k, v = self.attn.keys_values(x)
        x = self.norm(x + self.dropout(self.attn.attend(self.attn.query(x), k, v, mask)))
        return self.ff(x)


class DecoderLayer(nnx.Module):
    def __init__(self, d, num_heads, d_ff, *, dropout, attn_dropout, dtype, rngs):
        kw = dict(attn_dropout=attn_dropout, dtype=dtype, rngs=rngs)
        self.self_attn = MultiHeadAttention(d, num_heads, **kw)
        self.cross_attn = MultiHeadAttention(d, num_heads, **kw)
        self.norm1 = norm(d, dtype=dtype, rngs=rngs)
        self.norm2 = norm(d, dtype=dtype, rngs=rngs)
        self.ff = PositionwiseFF(d, d_ff, dropout=dropout, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x, self_kv, self_mask, cross_kv, cross_mask):
        """x [B, L, d]; self_kv: this layer's (K, V) of the targets so far (including x's);
        cross_kv: (K, V) of the source; masks bool, broadcastable to [B, H, L, N]."""
        a = self.self_attn.attend(self.self_attn.query(x), *self_kv, self_mask)
        x = self.norm1(x + self.dropout(a))
        a = self.cross_attn.attend(self.cross_attn.query(x), *cross_kv, cross_mask)
        x = self.norm2(x + self.dropout(a))
        return self.ff(x)


def layer_checks(c) -> list:
    """The (ok, message) checks of the Transformer layers' sizes in a config `c` (d_model,
    num_heads, d_ff), naming their config keys; the encoder-decoder's and the classifier's."""
    return [
        (c.d_model >= 2 and c.d_model % 2 == 0,
         f"model.d={c.d_model}; expected an even number >= 2 (sinusoids)"),
        (c.num_heads >= 1 and c.d_model % c.num_heads == 0,
         f"model.d={c.d_model} is not divisible by model.num_heads={c.num_heads}"),
        (c.d_ff >= 1, f"model.d_inner={c.d_ff}; expected >= 1"),
    ]


@dataclasses.dataclass(frozen=True)
class TransformerSeq2SeqConfig:
    """Hyperparameters of the Transformer baseline, checked once (defaults: Lin et al.'s).

    vocab_size (joint; 0 until the data are read); d_model; num_heads; d_ff; encoder_layers,
    decoder_layers; dropout, attn_dropout; label_smoothing; pad_id, bos_id, eos_id; dtype.
    ValueError names the config key (model.<name>)."""
    vocab_size: int
    d_model: int = 256
    num_heads: int = 4
    d_ff: int = 1024
    encoder_layers: int = 8
    decoder_layers: int = 8
    dropout: float = 0.1
    attn_dropout: float = 0.1
    label_smoothing: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    dtype: str = "float32"

    def __post_init__(self):
        require(shared_checks(self) + layer_checks(self))
        check_special_ids(self)
        compute_dtype(self.dtype)

    @classmethod
    def from_config(cls, config, **overrides) -> "TransformerSeq2SeqConfig":
        """From config.model (`base.config_from`: d_model from model.d, d_ff from
        model.d_inner as for Transformer-XL, the other fields by name) and
        config.train.compute_dtype; `overrides` replace any of them."""
        return config_from(cls, config, {"d_model": "d", "d_ff": "d_inner"}, **overrides)

    def build(self, rngs: nnx.Rngs) -> "TransformerSeq2Seq":
        return TransformerSeq2Seq(self, rngs=rngs)

    def flops_per_token(self, src_len: float, tgt_len: float) -> float:
        """Forward + backward FLOPs per target token of a pair of these (mean) lengths, as
        `Seq2SeqConfig.flops_per_token`: 6 per matrix weight per token, 12 * keys * d per query
        of each attention (S keys in the encoder and cross attention, T in self-attention)."""
        d, f = self.d_model, self.d_ff
        s, t = float(src_len), float(tgt_len)
        if s < 1 or t < 1:
            raise ValueError(f"src_len={src_len}, tgt_len={tgt_len}; expected >= 1")
        enc = 6.0 * (4 * d * d + 2 * d * f) + 12.0 * s * d
        dec = 6.0 * (6 * d * d + 2 * d * f) + 12.0 * (s + t) * d
        cross_kv = 6.0 * 2 * d * d                     # per source token, per decoder layer
        total = (s * (self.encoder_layers * enc + self.decoder_layers * cross_kv)
                 + t * (self.decoder_layers * dec + 6.0 * d * self.vocab_size))
        return total / t


class TransformerSeq2Seq(Seq2SeqModel, nnx.Module):
    """Lin et al.'s Transformer encoder-decoder of a `TransformerSeq2SeqConfig`."""

    def __init__(self, config: TransformerSeq2SeqConfig, *, rngs: nnx.Rngs):
        c = config
        self._start(c)
        self.d, self.num_heads = c.d_model, c.num_heads
        kw = dict(dropout=c.dropout, attn_dropout=c.attn_dropout, dtype=self.dtype, rngs=rngs)
        self.embed = nnx.Embed(c.vocab_size, c.d_model,
                               embedding_init=jax.nn.initializers.normal(c.d_model ** -0.5),
                               rngs=rngs)
        self.encoder = nnx.List([EncoderLayer(c.d_model, c.num_heads, c.d_ff, **kw)
                                 for _ in range(c.encoder_layers)])
        self.decoder = nnx.List([DecoderLayer(c.d_model, c.num_heads, c.d_ff, **kw)
                                 for _ in range(c.decoder_layers)])
        for stack in (self.encoder, self.decoder):   # as Lin et al.: Xavier for every matrix
            for path, p in nnx.iter_graph(stack):
                if isinstance(p, nnx.Param) and p.ndim == 2:
                    p[...] = xavier_uniform()(rngs.params(), p.shape, p.dtype)
        self.out_bias = nnx.Param(jnp.zeros((c.vocab_size,), jnp.float32))
        self.dropout = nnx.Dropout(c.dropout, rngs=rngs)

    def _embed(self, tokens, positions):
        x = self.embed(tokens) * math.sqrt(self.d) + sinusoid(positions, self.d)
        return self.dropout(x.astype(self.dtype))

    def _head(self, h):
        return self._output_logits(self.dropout(h), self.embed.embedding[...],
                                   self.out_bias[...])

    def encode(self, src) -> Encoded:
        """src [B, S] int -> Encoded(out [B, S, d], pad [B, S])."""
        check_tokens("src", src)
        pad = src == self.pad_id
        x = self._embed(src, jnp.arange(src.shape[1]))
        mask = ~pad[:, None, None, :]
        for layer in self.encoder:
            x = layer(x, mask)
        return Encoded(x, pad)

    def decode(self, encoded: Encoded, tgt_in):
        """Teacher forcing: tgt_in [B, T] int -> logits [B, T, V] float32."""
        length = tgt_in.shape[1]
        x = self._embed(tgt_in, jnp.arange(length))
        self_mask = attention_mask(length, 0)[None, None] & (tgt_in != self.pad_id)[
            :, None, None, :]
        cross_mask = ~encoded.pad[:, None, None, :]
        for layer in self.decoder:
            x = layer(x, layer.self_attn.keys_values(x), self_mask,
                      layer.cross_attn.keys_values(encoded.out), cross_mask)
        return self._head(x)

    def init_decode_state(self, encoded: Encoded, max_len: int) -> TransformerDecodeState:
        """Room for `max_len` target positions; the source keys/values of every layer."""
        batch = encoded.out.shape[0]
        room = jnp.zeros((batch, max_len, self.num_heads, self.d // self.num_heads), self.dtype)
        cross = [layer.cross_attn.keys_values(encoded.out) for layer in self.decoder]
        n = len(self.decoder)
        return TransformerDecodeState((room,) * n, (room,) * n, tuple(k for k, _ in cross),
                                      tuple(v for _, v in cross), ~encoded.pad)

    def decode_step(self, state: TransformerDecodeState, tokens, t):
        """Position t: tokens [B] int -> (log-probabilities [B, V] float32, the new state)."""
        x = self._embed(tokens[:, None], jnp.full((1,), t))
        self_mask = (jnp.arange(state.self_k[0].shape[1]) <= t)[None, None, None, :]
        cross_mask = state.src_ok[:, None, None, :]
        ks, vs = [], []
        for i, layer in enumerate(self.decoder):
            k, v = layer.self_attn.keys_values(x)
            k = jax.lax.dynamic_update_slice(state.self_k[i], k.astype(state.self_k[i].dtype),
                                             (0, t, 0, 0))
            v = jax.lax.dynamic_update_slice(state.self_v[i], v.astype(state.self_v[i].dtype),
                                             (0, t, 0, 0))
            x = layer(x, (k, v), self_mask, (state.cross_k[i], state.cross_v[i]), cross_mask)
            ks.append(k)
            vs.append(v)
        logp = jax.nn.log_softmax(self._head(x)[:, 0], axis=-1)
        return logp, state._replace(self_k=tuple(ks), self_v=tuple(vs))
