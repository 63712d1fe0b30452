"""Convert models of the PyTorch package `sru` (3.0.0.dev6) into srupp_jax modules.

  from_torch_srupp(module)   sru.SRUpp instance -> srupp_jax.nn.sru.SRUpp
  from_torch_sru(module)     sru.SRU instance   -> srupp_jax.nn.sru.SRU
  load_torch_srupp(path, num_heads=...)
                             a .pt state dict (torch.load(..., weights_only=True)) -> SRUpp

In eval mode the converted module gives the PyTorch output: for x float32 [batch, L, d_in],
`jax_model(x)[0]` equals `torch_model(x.transpose(0, 1))[0].transpose(0, 1)`. PyTorch is
time-major and we are batch-major: transpose inputs, masks ([L, batch] -> [batch, L]) and
memories ([M, batch, d] -> [batch, M, d]) accordingly. The reference applies no attention mask
unless one is passed, so converted SRU++ stacks have causal=False; pass causal=True (or an
`attend` mask) for language modelling. torch is needed for conversion only.

Layout: the reference's U has features ordered (direction, unit, k); ours are (k, direction,
unit), so the last matrix of each transform is permuted once here.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from srupp_jax.nn.sru import SRU, SRUpp


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy() if hasattr(t, "detach") else np.asarray(t)


def _u_matrix(weight, k: int, dirs: int, d: int) -> jnp.ndarray:
    """torch Linear weight [dirs*d*k, d_in] (rows (dir, unit, k)) -> ours [d_in, k*dirs*d]."""
    w = _np(weight).T
    d_in = w.shape[0]
    return jnp.asarray(w.reshape(d_in, dirs, d, k).transpose(0, 3, 1, 2).reshape(d_in, -1))


def _set(param, value) -> None:
    value = jnp.asarray(_np(value) if not isinstance(value, jnp.ndarray) else value)
    ours = param[...]
    if ours.shape != value.shape:
        raise ValueError(f"shape mismatch converting a parameter: ours {ours.shape}, "
                         f"theirs {value.shape}")
    param[...] = value.astype(ours.dtype)


def _set_layer_norm(ln, sd, prefix) -> None:
    _set(ln.scale, sd[prefix + "weight"])
    _set(ln.bias, sd[prefix + "bias"])


def _load_layer(layer, sd: Mapping[str, Any], p: str) -> None:
    """Copy one reference SRUCell / SRUppCell (keys under prefix p) into our SRULayer."""
    dirs, d, k = layer.dirs, layer.d, layer.k
    _set(layer.v, _np(sd[p + "weight_c"]).reshape(2, dirs, d))
    _set(layer.b, _np(sd[p + "bias"]).reshape(2, dirs, d))
    if layer.scale_x != 1.0:
        layer.scale_x = float(_np(sd[p + "scale_x"]).reshape(-1)[0])
    if layer.layer_norm is not None:
        _set_layer_norm(layer.layer_norm, sd, p + "layer_norm.")
    t, tp = layer.transform, p + "transform_module."
    if hasattr(t, "w_q"):  # SRUppAttention
        _set(t.w_q.kernel, _np(sd[tp + "linear1.weight"]).T)
        _set(t.w_kv.kernel, _np(sd[tp + "linear2.weight"]).T)
        _set(t.w_o.kernel, _u_matrix(sd[tp + "linear3.weight"], k, dirs, d))
        _set(t.alpha, _np(sd[tp + "alpha"]).reshape(()))
    elif tp + "linear1.weight" in sd:  # SRUppProjectedLinear
        _set(t.w_1.kernel, _np(sd[tp + "linear1.weight"]).T)
        _set(t.w_2.kernel, _u_matrix(sd[tp + "linear2.weight"], k, dirs, d))
    elif tp + "0.weight" in sd:  # SRU with projection_size: Sequential(Linear, Linear)
        _set(t.w_1.kernel, _np(sd[tp + "0.weight"]).T)
        _set(t.w_2.kernel, _u_matrix(sd[tp + "1.weight"], k, dirs, d))
    else:
        _set(t.kernel, _u_matrix(sd[tp + "weight"], k, dirs, d))
    if getattr(t, "layer_norm", None) is not None:
        _set_layer_norm(t.layer_norm, sd, tp + "layer_norm.")


def _num_layers(sd) -> int:
    idx = {int(m.group(1)) for key in sd for m in [re.match(r"rnn_lst\.(\d+)\.", key)] if m}
    if not idx:
        raise ValueError("no 'rnn_lst.<i>.' keys in the state dict: not an sru.SRU / sru.SRUpp")
    return max(idx) + 1


def _srupp_from_state_dict(sd: Mapping[str, Any], *, bidirectional: bool, num_heads: int,
                           dropout: float, attn_dropout: float, normalize_after: bool,
                           rescale: bool, causal: bool, impl: str) -> SRUpp:
    """Build an SRUpp whose sizes and attention placement are read off the state dict."""
    num_layers = _num_layers(sd)
    has_attn = [f"rnn_lst.{i}.transform_module.alpha" in sd for i in range(num_layers)]
    d_proj, first_in = _np(sd["rnn_lst.0.transform_module.linear1.weight"]).shape
    out_size = _np(sd["rnn_lst.0.weight_c"]).shape[0] // 2  # weight_c: [2 * dirs * d]
    dirs = 2 if bidirectional else 1
    if out_size % dirs:
        raise ValueError(f"output size {out_size} is odd but bidirectional=True")
    in_to_hidden = "input_to_hidden.weight" in sd
    d_in = _np(sd["input_to_hidden.weight"]).shape[1] if in_to_hidden else first_in
    every = [k for k in range(1, num_layers + 1)
             if [(i + 1) % k == 0 for i in range(num_layers)] == has_attn]
    n_attn = sum(has_attn)
    if every:
        k, last_n = every[0], None
    elif has_attn == [num_layers - i <= n_attn for i in range(num_layers)]:
        k, last_n = 1, n_attn
    else:
        raise ValueError(f"attention in layers {has_attn} is neither every k-th nor the last n")
    model = SRUpp(d_in, out_size // dirs, d_proj, num_layers, k=k, attention_last_n=last_n,
                  num_heads=num_heads, dropout=dropout, attn_dropout=attn_dropout,
                  bidirectional=bidirectional,
                  layer_norm="rnn_lst.0.layer_norm.weight" in sd,
                  normalize_after=normalize_after,
                  attn_layer_norm="rnn_lst.0.transform_module.layer_norm.weight" in sd,
                  rescale=rescale, proj_input_to_hidden_first=in_to_hidden, causal=causal,
                  impl=impl, rngs=nnx.Rngs(0))
    if in_to_hidden:
        _set(model.input_to_hidden.kernel, _np(sd["input_to_hidden.weight"]).T)
    for i, layer in enumerate(model.layers):
        _load_layer(layer, sd, f"rnn_lst.{i}.")
    return model


def from_torch_srupp(module, *, causal: bool = False, impl: str = "auto") -> SRUpp:
    """An srupp_jax SRUpp with the hyperparameters and weights of an `sru.SRUpp` instance."""
    attn = [m.transform_module for m in module.rnn_lst if hasattr(m.transform_module, "alpha")]
    return _srupp_from_state_dict(
        module.state_dict(), bidirectional=bool(module.bidirectional),
        num_heads=attn[0].num_heads if attn else 1, dropout=float(module.dropout),
        attn_dropout=attn[0].attn_dropout if attn else 0.0,
        normalize_after=bool(module.rnn_lst[0].normalize_after),
        rescale=bool(module.rnn_lst[0].rescale), causal=causal, impl=impl)


def load_torch_srupp(path, *, prefix: str = "", bidirectional: bool = False,
                     num_heads: int = 1, dropout: float = 0.0, attn_dropout: float = 0.0,
                     normalize_after: bool = False, rescale: bool = False,
                     causal: bool = True, impl: str = "auto") -> SRUpp:
    """An SRUpp from a saved PyTorch state dict (a .pt file, loaded with weights_only=True).

    `prefix` selects the SRUpp inside a larger model's state dict (e.g. "rnn." for the
    reference's language models). What a state dict does not record (directions, heads,
    dropout rates, norm placement, rescale) is passed in; sizes and the attention layers are
    read off the tensors. causal defaults to True here: saved models are language models.
    """
    import torch  # conversion only

    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} holds a {type(sd).__name__}; expected a state dict")
    sd = {key[len(prefix):]: val for key, val in sd.items() if key.startswith(prefix)}
    return _srupp_from_state_dict(sd, bidirectional=bidirectional, num_heads=num_heads,
                                  dropout=dropout, attn_dropout=attn_dropout,
                                  normalize_after=normalize_after, rescale=rescale,
                                  causal=causal, impl=impl)


def from_torch_sru(module, *, impl: str = "auto") -> SRU:
    """An srupp_jax SRU with the hyperparameters and weights of an `sru.SRU` instance."""
    first = module.rnn_lst[0]
    if module.input_to_hidden is not None:
        raise ValueError("sru.SRU with proj_input_to_hidden_first=True is not supported")
    if first.activation_type != 0 or first.v1 or first.rnn_dropout > 0:
        raise ValueError("deprecated SRU options (use_tanh, v1, rnn_dropout) are not supported")
    model = SRU(module.input_size, module.hidden_size, module.num_layers,
                dropout=float(module.dropout), bidirectional=bool(module.bidirectional),
                projection_size=int(first.projection_size), highway_bias=first.highway_bias,
                layer_norm=bool(module.use_layer_norm), normalize_after=first.normalize_after,
                has_skip_term=bool(module.has_skip_term), rescale=bool(first.rescale),
                impl=impl, rngs=nnx.Rngs(0))
    sd = module.state_dict()
    for i, layer in enumerate(model.layers):
        _load_layer(layer, sd, f"rnn_lst.{i}.")
    return model
