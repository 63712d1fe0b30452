"""The language models released with the SRU++ paper, read into an SRUppLM.

The files are PyTorch state dicts of the `Model` classes of asappresearch/sru (branch 3.0.0-dev)
`experiments/srupp_experiments/train_enwik8.py`, `train_wt103.py` and `train_lm1b.py`:

  every file     rnn.rnn_lst.{i}.weight_c [2d], .bias [2d], .scale_x [1] (unused),
                 .transform_module.linear1.weight [d', d], .transform_module.layer_norm.* [d']
                 (the post-LN of eq. 7), .layer_norm.* [d] (only with the scripts' --layer_norm);
                 attention layers: .transform_module.alpha [1], .linear2.weight [2d', d']
                 (K, V), .linear3.weight [3d, d']; other layers: .linear2.weight [3d, d'].
  enwik8         embedding_layer.weight [V, d]; output_layer.weight [V, d], .bias [V].
  word models    output_layer.out_layers.{i}.weight [|V_i| (+ n-1 cluster rows for i = 0),
                 d_i], .bias; output_layer.out_projs.{i} [d, d_i]; embedding_layer.emb_projs.{i}
                 [d, d_i] (Wiki-103: the same matrices saved twice; Billion Word: its own). The
                 input tables are the output tables (not saved twice).

`read_layout(sd)` reads every `model` config key the tensors decide (d, d_proj, num_layers, k
or attention_last_n, layer norms, vocab_size, cutoffs, d_embed, adaptive_factor, tie_proj);
what they cannot tell (heads, dropout, the evaluation) is the config's. `load_params(model,
sd)` copies the tensors into an SRUppLM built from those keys (the U rows and torch's [out, in]
matrices reordered by torch_sru; shapes checked). torch is imported by `load_state_dict` only.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from srupp_jax.convert.torch_sru import _load_layer, _np, _set, attention_placement

RNN = "rnn.rnn_lst."
ENWIK8_KEYS = ("embedding_layer.weight", "output_layer.weight", "output_layer.bias")


def load_state_dict(path: str) -> dict:
    """{name: torch tensor} of a saved state dict (weights_only, memory-mapped when the file
    allows); ValueError naming the file when it is not one (another format, truncated, a
    pickle of other objects)."""
    try:
        import torch
    except ImportError:
        raise ValueError("--mode=import reads PyTorch files: install torch (pip install torch; "
                         "the CPU build is enough)") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--torch_checkpoint={path}: no such file")
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            sd = torch.load(path, map_location="cpu", weights_only=True)   # legacy format
    except Exception as e:   # torch raises many kinds for a bad file
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"--torch_checkpoint={path} is not a PyTorch state dict torch can "
                         f"read ({why}); is it the whole, downloaded .pt file?") from None
    if not isinstance(sd, Mapping) or not all(hasattr(v, "shape") for v in sd.values()):
        raise ValueError(f"--torch_checkpoint={path} holds a {type(sd).__name__}, not a state "
                         "dict of tensors")
    return dict(sd)


def _shape(sd, key) -> tuple:
    return tuple(sd[key].shape)


def _need(sd, keys, path) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} key(s) of the released models' layout: "
                         f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")


def _stack_layout(sd, path) -> dict:
    """The SRU++ stack's config keys, read from rnn.rnn_lst.* (ValueError when it is not an
    SRU++ stack of the released kind)."""
    layers = sorted({int(m.group(1)) for k in sd for m in [re.match(r"rnn\.rnn_lst\.(\d+)\.", k)]
                     if m})
    if not layers:
        raise ValueError(f"{path} has no rnn.rnn_lst.<i>.* keys: not a released SRU++ "
                         "language model")
    n = layers[-1] + 1
    tm = [f"{RNN}{i}.transform_module." for i in range(n)]
    has_attn = [t + "alpha" in sd for t in tm]
    if not any(has_attn):
        raise ValueError(f"{path} has no attention layer (no transform_module.alpha): an SRU "
                         "without attention, not an SRU++ model of the released kind")
    _need(sd, [f"{RNN}{i}.weight_c" for i in range(n)] + [t + "linear1.weight" for t in tm],
          path)
    k, last_n = attention_placement(has_attn)
    d_proj, d_in = _shape(sd, tm[0] + "linear1.weight")
    d = _shape(sd, f"{RNN}0.weight_c")[0] // 2
    if d_in != d or "rnn.input_to_hidden.weight" in sd:
        raise ValueError(f"{path}: the first layer reads {d_in} features but the stack is {d} "
                         "wide; the released models embed to d directly")
    return dict(d=d, d_proj=d_proj, num_layers=n, k=k,
                attention_last_n=-1 if last_n is None else last_n,
                layer_norm=f"{RNN}0.layer_norm.weight" in sd,
                attn_layer_norm=tm[0] + "layer_norm.weight" in sd)


def _adaptive_layout(sd, path, d) -> dict:
    """vocab_size, cutoffs, d_embed, adaptive_factor and tie_proj of the adaptive layers."""
    n = len({k for k in sd if re.match(r"output_layer\.out_layers\.\d+\.weight$", k)})
    keys = [f"output_layer.{name}.{i}{suffix}" for i in range(n) for name, suffix in
            (("out_layers", ".weight"), ("out_layers", ".bias"), ("out_projs", ""))]
    _need(sd, keys + [f"embedding_layer.emb_projs.{i}" for i in range(n)], path)
    rows = [_shape(sd, f"output_layer.out_layers.{i}.weight")[0] for i in range(n)]
    dims = [_shape(sd, f"output_layer.out_layers.{i}.weight")[1] for i in range(n)]
    cutoffs = [rows[0] - (n - 1)]
    for r in rows[1:]:
        cutoffs.append(cutoffs[-1] + r)
    factor = float(dims[0] / dims[1]) if n > 1 else 1.0
    if dims != [int(dims[0] // factor ** i) for i in range(n)]:
        raise ValueError(f"{path}: cluster widths {dims} are not d_embed // factor**i")
    for i in range(n):
        if _shape(sd, f"output_layer.out_projs.{i}") != (d, dims[i]):
            raise ValueError(f"{path}: output_layer.out_projs.{i} is "
                             f"{_shape(sd, f'output_layer.out_projs.{i}')}, expected "
                             f"{(d, dims[i])}")
    tied = all(np.array_equal(_np(sd[f"output_layer.out_projs.{i}"]),
                              _np(sd[f"embedding_layer.emb_projs.{i}"])) for i in range(n))
    return dict(vocab_size=cutoffs[-1], cutoffs=tuple(cutoffs[:-1]), d_embed=dims[0],
                adaptive_factor=factor, tie_proj=tied)


def expected_keys(layout: dict) -> set:
    """Every key a file of this layout holds."""
    keys = set()
    for i in range(layout["num_layers"]):
        p, t = f"{RNN}{i}.", f"{RNN}{i}.transform_module."
        keys |= {p + "weight_c", p + "bias", p + "scale_x", t + "linear1.weight",
                 t + "linear2.weight"}
        if layout["layer_norm"]:
            keys |= {p + "layer_norm.weight", p + "layer_norm.bias"}
        if layout["attn_layer_norm"]:
            keys |= {t + "layer_norm.weight", t + "layer_norm.bias"}
        if layout["attention"][i]:
            keys |= {t + "alpha", t + "linear3.weight"}
    if not layout["cutoffs"] and layout["kind"] == "enwik8":
        return keys | set(ENWIK8_KEYS)
    for i in range(len(layout["cutoffs"]) + 1):
        keys |= {f"output_layer.out_layers.{i}.weight", f"output_layer.out_layers.{i}.bias",
                 f"output_layer.out_projs.{i}", f"embedding_layer.emb_projs.{i}"}
    return keys


def read_layout(sd: Mapping[str, Any], path: str = "the state dict") -> dict:
    """{"kind": "enwik8" | "adaptive", "attention": per layer, and the `model` config keys the
    tensors decide}; ValueError naming the file and what is wrong (not an SRU++ LM, missing or
    unexpected keys)."""
    layout = _stack_layout(sd, path)
    d = layout["d"]
    if "embedding_layer.weight" in sd:
        _need(sd, ENWIK8_KEYS, path)
        V = _shape(sd, "embedding_layer.weight")[0]
        layout.update(kind="enwik8", vocab_size=V, cutoffs=())
        for key, shape in zip(ENWIK8_KEYS, ((V, d), (V, d), (V,))):
            if _shape(sd, key) != shape:
                raise ValueError(f"{path}: {key} is {_shape(sd, key)}, expected {shape}")
    elif "output_layer.out_layers.0.weight" in sd:
        layout.update(kind="adaptive", **_adaptive_layout(sd, path, d))
    else:
        raise ValueError(f"{path} has neither embedding_layer.weight (enwik8) nor "
                         "output_layer.out_layers.* (WikiText-103, Billion Word): not a "
                         "released SRU++ language model")
    layout["attention"] = [f"{RNN}{i}.transform_module.alpha" in sd
                           for i in range(layout["num_layers"])]
    extra = sorted(set(sd) - expected_keys(layout))
    if extra:
        raise ValueError(f"{path} has {len(extra)} key(s) the released models do not: "
                         f"{', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''}")
    _need(sd, sorted(expected_keys(layout)), path)
    return layout


def config_keys(layout: dict) -> dict:
    """The `model.*` config values of a layout (read_layout)."""
    return {k: v for k, v in layout.items() if k not in ("kind", "attention")}


def load_params(model, sd: Mapping[str, Any]) -> None:
    """Copy the released tensors into `model`, an SRUppLM built from read_layout's keys
    (ValueError on any shape that differs)."""
    for i, layer in enumerate(model.rnn.layers):
        _load_layer(layer, sd, f"{RNN}{i}.")
    if not model.adaptive:
        _set(model.embed.embedding, sd["embedding_layer.weight"])
        _set(model.head.kernel, _np(sd["output_layer.weight"]).T)
        _set(model.head.bias, sd["output_layer.bias"])
        return
    embed, head = model.embed, model.head
    c0 = head.bounds[0][1]
    first = _np(sd["output_layer.out_layers.0.weight"])
    first_bias = _np(sd["output_layer.out_layers.0.bias"])
    for i in range(head.num_clusters):
        weight = first[:c0] if i == 0 else sd[f"output_layer.out_layers.{i}.weight"]
        _set(embed.embeddings[i].embedding, weight)
        _set(head.biases[i], first_bias[:c0] if i == 0 else
             sd[f"output_layer.out_layers.{i}.bias"])
        _set(embed.projections[i].kernel, _np(sd[f"embedding_layer.emb_projs.{i}"]).T)
        if not head.tie_proj:
            _set(head.out_projs[i].kernel, sd[f"output_layer.out_projs.{i}"])
    if head.cluster_weight is not None:
        _set(head.cluster_weight, first[c0:])
        _set(head.cluster_bias, first_bias[c0:])
