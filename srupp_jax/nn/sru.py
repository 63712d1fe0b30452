"""SRU and SRU++ layers and stacks as Flax NNX modules.

  SRULayer  one layer: a transform x -> U, then the elementwise recurrence (per direction).
            The transform is a plain matrix (SRU), a factorised one (SRU with projection),
            ProjectedLinear or SRUppAttention (SRU++).
  SRU       a stack of plain SRU layers (as `sru.SRU`).
  SRUpp     a stack of SRU++ layers with attention every k layers or in the last n layers,
            carrying recurrent state and per-layer attention memory (as `sru.SRUpp`).

Shapes are batch-major ([batch, length, features]); the recurrent state c of a stack is
[num_layers, batch, dirs * d]. U's features are laid out as [k, dirs, d] with slices
(candidate, forget, reset[, skip]). Decoding position by position (unidirectional layers,
evaluation mode): `SRUpp.init_cache` and `SRUpp.step` (per layer `SRULayer.step`), equal to
the full forward.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import KernelOptions, TPUKernelOptions
from srupp_jax.nn.attention import (
    KVCache,
    ProjectedLinear,
    SRUppAttention,
    attention_layers,
    attention_mask,
    check_heads,
    warn_if_all_padding,
)
from srupp_jax.nn.linear import Factorized, linear, norm
from srupp_jax.nn.recurrence import Backend, resolve_backend, sru_recurrence
from srupp_jax.nn.remat import check_remat, layer_runner


class SRULayer(nnx.Module):
    """One SRU / SRU++ layer: U = transform(x), then the recurrence in each direction.

    Args:
      d_in: input features.
      d: hidden size per direction (the output has dirs * d features).
      transform: how U is computed: "linear" (plain SRU, eq. 1; default), "projected" (SRU with
        projection_size), "projected_ln" (SRU++ without attention, Figure 2b) or "attention"
        (SRU++, eq. 5-7).
      d_proj: inner size d' of the projected and attention transforms.
      num_heads: attention heads (transform "attention").
      dropout: the hidden-path mask (one per sequence); transform_dropout: inside the
        transform; attn_dropout: on the attention weights.
      bidirectional: a backward recurrence too, outputs [forward, backward]; highway_bias:
        initial reset-gate bias (SRU++: -2; default 0).
      layer_norm / normalize_after: an optional layer norm of the layer (post on h when
        normalize_after, else pre on x); attn_layer_norm: the norm inside the SRU++ transform.
      has_skip_term: h = r * c + (1 - r) * x' (default) or h = r * c; rescale: the skip term
        times sqrt(1 + 2 exp(highway_bias)); weight_c_init: v ~ U[-w, w] (default 1).
      impl: recurrence backend ("auto", "scan", "assoc", "pallas", "pallas_tpu" or a
        recurrence.Backend), resolved here, once; kernel, tpu_kernel: the GPU and TPU kernels'
        tuning options (KernelOptions, TPUKernelOptions).
      dtype: compute dtype (None: Flax's promotion; the recurrence state is float32 always).
      rngs: nnx.Rngs for parameters and dropout.
    """

    def __init__(self, d_in: int, d: int, *, transform: str = "linear", d_proj: int = 0,
                 num_heads: int = 1, dropout: float = 0.0, transform_dropout: float = 0.0,
                 attn_dropout: float = 0.0, bidirectional: bool = False,
                 highway_bias: float = 0.0, layer_norm: bool = False,
                 normalize_after: bool = True, attn_layer_norm: bool = True,
                 has_skip_term: bool = True, rescale: bool = False, weight_c_init: float = 1.0,
                 impl="auto", kernel: KernelOptions | None = None,
                 tpu_kernel: TPUKernelOptions | None = None, dtype=None, rngs: nnx.Rngs):
        self.d_in, self.d = d_in, d
        self.dirs = 2 if bidirectional else 1
        self.out_size = self.dirs * d
        self.k = 4 if has_skip_term and d_in != self.out_size else 3
        self.has_skip_term = has_skip_term
        self.scale_x = (math.sqrt(1 + 2 * math.exp(highway_bias))
                        if rescale and has_skip_term else 1.0)
        self.backend = resolve_backend(impl)
        self.kernel = kernel or KernelOptions()
        self.tpu_kernel = tpu_kernel or TPUKernelOptions()
        self.normalize_after = normalize_after
        out_features = self.k * self.out_size
        if transform == "linear":
            self.transform = linear(d_in, out_features, dtype=dtype, rngs=rngs)
        elif transform == "projected":
            self.transform = Factorized(d_in, out_features, d_proj, dtype=dtype, rngs=rngs)
        elif transform == "projected_ln":
            self.transform = ProjectedLinear(d_in, out_features, d_proj,
                                             dropout=transform_dropout,
                                             layer_norm=attn_layer_norm, dtype=dtype, rngs=rngs)
        elif transform == "attention":
            self.transform = SRUppAttention(d_in, out_features, d_proj, num_heads=num_heads,
                                            dropout=transform_dropout,
                                            attn_dropout=attn_dropout,
                                            layer_norm=attn_layer_norm, dtype=dtype, rngs=rngs)
        else:
            raise ValueError(f"transform={transform!r}; expected 'linear', 'projected', "
                             "'projected_ln' or 'attention'")
        key = rngs.params()
        # v (the reference's weight_c): rows (forget, reset), then directions.
        self.v = nnx.Param(jax.random.uniform(key, (2, self.dirs, d), jnp.float32,
                                              -weight_c_init, weight_c_init))
        self.b = nnx.Param(jnp.zeros((2, self.dirs, d), jnp.float32).at[1].set(highway_bias))
        self.layer_norm = (norm(self.out_size if normalize_after else d_in, dtype=dtype,
                                      rngs=rngs)
                           if layer_norm else None)
        self.hidden_dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x, c0=None, *, mask_pad=None, memory=None, memory_mask_pad=None,
                 attend=None):
        """x: [batch, L, d_in]; c0: [batch, dirs * d] or None; mask_pad: [batch, L] bool;
        memory / memory_mask_pad / attend: see SRUppAttention (ignored by other transforms).
        Returns h [batch, L, dirs * d] and c [batch, dirs * d] (float32).
        """
        if x.ndim != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"x has shape {x.shape}; expected [batch, length, {self.d_in}]")
        batch, length, _ = x.shape
        residual = x
        if self.layer_norm is not None and not self.normalize_after:
            x = self.layer_norm(x)
        if isinstance(self.transform, SRUppAttention):
            U = self.transform(x, memory=memory, mask_pad=mask_pad,
                               memory_mask_pad=memory_mask_pad, attend=attend)
        elif memory is not None or attend is not None:
            raise ValueError("memory / attend given to a layer without attention")
        else:
            U = self.transform(x)
        return self._recur(U, residual, c0, mask_pad, self.backend)

    def step(self, x, c0, cache: Optional[KVCache] = None, t=0):
        """Decode positions t .. t+L-1 of a unidirectional layer, carrying its state.

        x: [batch, L, d_in]; c0: [batch, d] (the c after position t-1); cache: the attention's
        KVCache (`SRUppAttention.init_cache`) for an attention layer, None otherwise; t: int
        scalar. Returns h [batch, L, d], c [batch, d] and the new cache; equal to `__call__`
        on all positions with the causal mask. The recurrence of these few steps runs as the
        scan reference (elementwise work; no kernel launch per token).
        """
        if self.dirs != 1:
            raise ValueError("step: a bidirectional layer cannot decode position by position")
        residual = x
        if self.layer_norm is not None and not self.normalize_after:
            x = self.layer_norm(x)
        if isinstance(self.transform, SRUppAttention):
            if cache is None:
                raise ValueError("step: an attention layer needs its KVCache (init_cache)")
            U, cache = self.transform.step(x, cache, t)
        elif cache is not None:
            raise ValueError("step: a KVCache given to a layer without attention")
        else:
            U = self.transform(x)
        h, c = self._recur(U, residual, c0, None, Backend.SCAN)
        return h, c, cache

    def _recur(self, U, residual, c0, mask_pad, backend):
        """The recurrence of each direction on U [batch, L, k * dirs * d] (x' = residual when
        k = 3), then the optional post-norm. Returns h [batch, L, dirs * d], c [batch, dirs * d].
        """
        batch, length = U.shape[:2]
        U = U.reshape(batch, length, self.k, self.dirs, self.d)
        mask_c = None
        if not self.hidden_dropout.deterministic and self.hidden_dropout.rate > 0:
            mask_c = self.hidden_dropout(jnp.ones((batch, self.out_size), jnp.float32))
        skip = None
        if self.has_skip_term and self.k == 3:
            skip = residual * self.scale_x if self.scale_x != 1.0 else residual
        hs, cs = [], []
        for i in range(self.dirs):
            cols = slice(i * self.d, (i + 1) * self.d)
            h, c = sru_recurrence(
                U[:, :, :, i], self.v[:, i], self.b[:, i],
                None if skip is None else skip[..., cols],
                c0=None if c0 is None else c0[:, cols],
                mask_c=None if mask_c is None else mask_c[:, cols],
                mask_pad=mask_pad, reverse=i == 1, impl=backend, kernel=self.kernel,
                tpu_kernel=self.tpu_kernel)
            hs.append(h)
            cs.append(c)
        h = hs[0] if self.dirs == 1 else jnp.concatenate(hs, axis=-1)
        c = cs[0] if self.dirs == 1 else jnp.concatenate(cs, axis=-1)
        if self.layer_norm is not None and self.normalize_after:
            h = self.layer_norm(h)
        return h, c


def _check_state(c0, num_layers, batch, out_size):
    if c0 is not None and c0.shape != (num_layers, batch, out_size):
        raise ValueError(f"c0 has shape {c0.shape}; expected {(num_layers, batch, out_size)} "
                         "(num_layers, batch, dirs * d)")


class SRU(nnx.Module):
    """A stack of SRU layers (the plain SRU of the reference package `sru.SRU`, eq. 1-5).

    Args: d_in; d (per direction); num_layers (2); dropout: the hidden-path mask of every
      layer but the last, as `sru.SRU`; bidirectional; projection_size > 0: U = x W_1 W_2
      (0: U = x W); the others as SRULayer.
    """

    def __init__(self, d_in: int, d: int, num_layers: int = 2, *, dropout: float = 0.0,
                 bidirectional: bool = False, projection_size: int = 0,
                 highway_bias: float = 0.0, layer_norm: bool = False,
                 normalize_after: bool = False, has_skip_term: bool = True,
                 rescale: bool = False, weight_c_init: float = 1.0, impl="auto",
                 kernel: KernelOptions | None = None,
                 tpu_kernel: TPUKernelOptions | None = None, dtype=None, rngs: nnx.Rngs):
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers}; expected >= 1")
        self.num_layers = num_layers
        self.out_size = (2 if bidirectional else 1) * d
        self.layers = nnx.List([
            SRULayer(d_in if i == 0 else self.out_size, d,
                     transform="projected" if projection_size else "linear",
                     d_proj=projection_size, dropout=dropout if i + 1 < num_layers else 0.0,
                     bidirectional=bidirectional, highway_bias=highway_bias,
                     layer_norm=layer_norm, normalize_after=normalize_after,
                     has_skip_term=has_skip_term, rescale=rescale,
                     weight_c_init=weight_c_init, impl=impl, kernel=kernel,
                     tpu_kernel=tpu_kernel, dtype=dtype, rngs=rngs)
            for i in range(num_layers)])

    def __call__(self, x, c0=None, *, mask_pad=None):
        """x: [batch, L, d_in]; c0: [num_layers, batch, dirs * d] or None (zeros); mask_pad:
        [batch, L] bool, True = padding (keeps c, outputs 0). Returns h [batch, L, dirs * d],
        c [num_layers, batch, dirs * d] (float32)."""
        _check_state(c0, self.num_layers, x.shape[0], self.out_size)
        cs = []
        for i, layer in enumerate(self.layers):
            x, c = layer(x, None if c0 is None else c0[i], mask_pad=mask_pad)
            cs.append(c)
        return x, jnp.stack(cs)


class SRUpp(nnx.Module):
    """A stack of SRU++ layers (paper section 3; the PyTorch reference `sru.SRUpp`).

    A language model's causal stack, or an encoder's: with `bidirectional=True` every layer
    runs the recurrence both ways and attends over the whole input (never causal).

    Args (paper notation; the reference's names in brackets):
      d_in: input features [input_size].
      d: hidden size per direction [hidden_size]; the output has dirs * d features.
      d_proj: the attention size d' [proj_size], d / 4 or d / 8 in the paper.
      num_layers: layers (default 2).
      k: attention in every k-th layer (1: all; 5 of 10: layers 5 and 10)
        [attention_every_n_layers]; the others use the projection of Figure 2b.
      attention_last_n: attention only in the last n layers instead (exclusive with k != 1)
        [attention_last_n_layers].
      num_heads: attention heads (d' must divide by them; the paper: 1).
      dropout: on the hidden path (one mask per sequence) and inside the transforms;
        attn_dropout: on the attention weights.
      bidirectional: forward and backward recurrences, outputs concatenated.
      causal: the built-in attention mask when no `attend` is given. None (default): causal
        for a unidirectional stack (a language model or decoder), not for a bidirectional
        one; True with bidirectional=True is refused (the backward recurrence sees the
        future anyway). Converted reference modules use causal=False, as the reference
        applies no mask of its own.
      layer_norm / normalize_after: each layer's own optional norm (pre on x, or post on h);
        attn_layer_norm: the post-LN of eq. 7 (default True).
      highway_bias: initial reset-gate bias (-2); rescale, weight_c_init: as the reference;
      proj_input_to_hidden_first: project d_in -> dirs * d before the first layer.
      impl: recurrence backend ("auto", "scan", "assoc", "pallas", "pallas_tpu"), resolved
        once here; kernel, tpu_kernel: the GPU and TPU kernels' tuning options.
      remat: gradient checkpointing, "none" | "layer" | "attention" (srupp_jax/nn/remat.py):
        what the backward pass computes again instead of keeping.
      dtype: the compute dtype. None (Flax's convention): float32 parameters promote the
        inputs, so bfloat16 inputs give float32 outputs; jnp.bfloat16 computes the matrix
        products in bfloat16 (gates and the recurrent state c stay float32).
      rngs: nnx.Rngs for the initial parameters and the dropout masks.
    """

    def __init__(self, d_in: int, d: int, d_proj: int, num_layers: int = 2, *, k: int = 1,
                 attention_last_n: Optional[int] = None, num_heads: int = 1,
                 dropout: float = 0.0, attn_dropout: float = 0.0,
                 bidirectional: bool = False, layer_norm: bool = False,
                 normalize_after: bool = False, attn_layer_norm: bool = True,
                 highway_bias: float = -2.0, rescale: bool = False,
                 weight_c_init: float = 1.0, proj_input_to_hidden_first: bool = False,
                 causal: Optional[bool] = None, impl="auto", kernel: KernelOptions | None = None,
                 tpu_kernel: TPUKernelOptions | None = None, remat: str = "none", dtype=None,
                 rngs: nnx.Rngs):
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers}; expected >= 1")
        check_heads(d_proj, num_heads)
        self.remat = check_remat(remat)
        if bidirectional and causal:
            raise ValueError("causal=True with bidirectional=True: the backward recurrence "
                             "sees the future, so a bidirectional stack attends over the whole "
                             "input; pass causal=False (or leave it None), or "
                             "bidirectional=False for a causal stack")
        self.d_in, self.d, self.d_proj = d_in, d, d_proj
        self.num_layers = num_layers
        self.out_size = (2 if bidirectional else 1) * d
        self.causal = not bidirectional if causal is None else bool(causal)
        self.has_attention = attention_layers(num_layers, k, attention_last_n)
        to_hidden = proj_input_to_hidden_first and d_in != self.out_size
        self.input_to_hidden = (linear(d_in, self.out_size, dtype=dtype, rngs=rngs)
                                if to_hidden else None)
        first_in = self.out_size if to_hidden else d_in
        self.layers = nnx.List([
            SRULayer(first_in if i == 0 else self.out_size, d,
                     transform="attention" if attn else "projected_ln", d_proj=d_proj,
                     num_heads=num_heads, dropout=dropout if i + 1 < num_layers else 0.0,
                     transform_dropout=dropout, attn_dropout=attn_dropout,
                     bidirectional=bidirectional, highway_bias=highway_bias,
                     layer_norm=layer_norm, normalize_after=normalize_after,
                     attn_layer_norm=attn_layer_norm, rescale=rescale,
                     weight_c_init=weight_c_init, impl=impl, kernel=kernel,
                     tpu_kernel=tpu_kernel, dtype=dtype, rngs=rngs)
            for i, attn in enumerate(self.has_attention)])
        for layer, attn in zip(self.layers, self.has_attention):
            if attn and remat == "attention":
                layer.transform.remat = True

    def __call__(self, x, c0=None, *, mask_pad=None, memory: Optional[Sequence] = None,
                 memory_mask_pad=None, attend=None, same_length: bool = False):
        """Run the stack on one segment.

        Args:
          x: [batch, L, d_in] inputs.
          c0: [num_layers, batch, dirs * d] initial recurrent state, or None (zeros).
          mask_pad: [batch, L] bool, True where a position is PADDING (the reference's
            convention): padded positions are ignored as keys, keep c and output zeros.
          memory: one entry per layer, [batch, M, d_in_i] (the layer inputs of the previous
            segment, as returned) or None, attended to before the segment (Transformer-XL).
          memory_mask_pad: [batch, M] bool, True where a memory slot is padding.
          attend: [L, M + L] bool, True where a query MAY ATTEND to a key (or an additive
            float bias, 0 = attend); replaces the built-in causal / same-length mask.
          same_length: the evaluation mask in which every position sees L + 1 keys.

        Returns:
          (h [batch, L, dirs * d], c [num_layers, batch, dirs * d] float32, memory: the layer
          inputs [batch, L, d_in_i] of this segment, gradient stopped).
        """
        if x.ndim != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"x has shape {x.shape}; expected [batch, length, {self.d_in}]")
        batch, length, _ = x.shape
        _check_state(c0, self.num_layers, batch, self.out_size)
        if mask_pad is not None and mask_pad.shape != (batch, length):
            raise ValueError(f"mask_pad has shape {mask_pad.shape}; expected {(batch, length)}")
        warn_if_all_padding(mask_pad)
        if memory is not None and len(memory) != self.num_layers:
            raise ValueError(f"memory has {len(memory)} entries; expected one per layer "
                             f"({self.num_layers})")
        if self.input_to_hidden is not None:
            x = self.input_to_hidden(x)
        saved, cs = [], []
        run = layer_runner(self.remat)
        for i, layer in enumerate(self.layers):
            saved.append(jax.lax.stop_gradient(x))
            c_i = None if c0 is None else c0[i]
            mem = mask = mem_pad = None
            if self.has_attention[i]:
                mem, mem_pad, mask = None if memory is None else memory[i], memory_mask_pad, attend
                if mask is None:
                    mem_len = 0 if mem is None else mem.shape[1]
                    mask = attention_mask(length, mem_len, causal=self.causal,
                                          same_length=same_length)
            x, c = run(layer, x, c_i, mask_pad, mem, mem_pad, mask)
            cs.append(c)
        return x, jnp.stack(cs), saved

    def init_cache(self, memory: Sequence, memory_mask_pad, max_len: int) -> tuple:
        """Per layer, the KVCache for `step` (attention layers; None for the others).

        memory: one entry per layer, [batch, M, d_in_i] (what `__call__` takes, e.g. an
        encoder's output for every attention layer) or None; memory_mask_pad: [batch, M] bool
        (True = pad) or None; max_len: positions to decode."""
        if len(memory) != self.num_layers:
            raise ValueError(f"memory has {len(memory)} entries; expected one per layer "
                             f"({self.num_layers})")
        return tuple(layer.transform.init_cache(m, memory_mask_pad, max_len) if attn else None
                     for layer, attn, m in zip(self.layers, self.has_attention, memory))

    def step(self, x, c0, caches: tuple, t):
        """Decode positions t .. t+L-1 with carried state (a unidirectional, causal stack).

        x: [batch, L, d_in]; c0: [num_layers, batch, d]; caches: from `init_cache` (or the
        last step); t: int scalar. Returns (h [batch, L, d], c [num_layers, batch, d], caches),
        equal to `__call__` over all positions with the causal mask over [memory ; positions].
        """
        if x.ndim != 3 or x.shape[-1] != self.d_in:
            raise ValueError(f"x has shape {x.shape}; expected [batch, length, {self.d_in}]")
        _check_state(c0, self.num_layers, x.shape[0], self.out_size)
        if self.input_to_hidden is not None:
            x = self.input_to_hidden(x)
        cs, new_caches = [], []
        for i, layer in enumerate(self.layers):
            x, c, cache = layer.step(x, c0[i], caches[i], t)
            cs.append(c)
            new_caches.append(cache)
        return x, jnp.stack(cs), tuple(new_caches)
