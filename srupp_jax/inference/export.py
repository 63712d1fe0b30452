"""A trained model as `jax.export` artifacts (serialized StableHLO) that a server runs with jax
alone, without this package (main.py --mode=export --workdir=W --output=DIR).

DIR holds, for a language model:
  lm_forward.bin   (params, tokens [b, l] int32, state) -> (log-probabilities [b, l, V]
                   float32, new state): one segment, the carried state in and out (c of every
                   layer and the attention memory of eval.mem_len positions); polymorphic in
                   batch b and length l
and for translation (SRU++ or Transformer encoder-decoders):
  encoder.bin      (params, src [b, S] int32) -> (x_src [b, S, d], pad [b, S] bool); S =
                   train.max_len (pad the source with pad_id), polymorphic in b
  decoder_init.bin (params, x_src, pad) -> state: the decoder's state before position 0
  decoder_step.bin (params, state, tokens [b] int32, t int32) -> (log-probabilities [b, V],
                   new state): one position (greedy or beam search is the server's loop)
with
  params.npz       the parameters, one array per name ("a/b/0/c": the model's paths)
  export.json      the functions' argument shapes ("b", "l" symbolic), the state's arrays and
                   their shapes, the vocabulary (tokens in id order; bytes: 256), the special
                   ids, and the platforms (cpu, cuda)
The recurrence runs as the scan (portable, exact); states are plain dicts of arrays.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from srupp_jax.models.base import split_for_eval

PLATFORMS = ("cpu", "cuda")


def _key(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _names(tree) -> list:
    """"a/b/0/c" for each leaf of `tree`, in its flattening order."""
    return ["/".join(_key(k) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _flat(tree) -> dict:
    return dict(zip(_names(tree), jax.tree.leaves(tree)))


def _spec(tree, sizes: dict) -> dict:
    """{name: [dims]} of a flat dict of ShapeDtypeStructs, symbolic dims by their names."""
    rename = {v: k for k, v in sizes.items()}
    return {k: {"shape": [rename.get(d, d) if not isinstance(d, int) else d for d in x.shape],
                "dtype": str(x.dtype)} for k, x in tree.items()}


class _Exporter:
    """Serializes functions of (params, ...) of one model into DIR."""

    def __init__(self, model, params, out_dir: str):
        self.graphdef, _, self.rest = split_for_eval(model)
        self.names, self.treedef = _names(params), jax.tree.structure(params)
        self.params = {k: np.asarray(v) for k, v in _flat(params).items()}
        self.out_dir, self.meta = out_dir, {"functions": {}, "platforms": list(PLATFORMS)}
        os.makedirs(out_dir, exist_ok=True)

    def model(self, flat_params):
        params = jax.tree.unflatten(self.treedef, [flat_params[n] for n in self.names])
        return nnx.merge(self.graphdef, params, self.rest)

    def add(self, name: str, fn, args: tuple, sizes: dict) -> None:
        """Export fn(model, *args) as DIR/name.bin; `args` are ShapeDtypeStructs (symbolic
        dims from `sizes`), each an array or a flat dict of them."""
        specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in self.params.items()}
        exported = jax.export.export(jax.jit(lambda p, *a: fn(self.model(p), *a)),
                                     platforms=PLATFORMS)(specs, *args)
        with open(os.path.join(self.out_dir, f"{name}.bin"), "wb") as f:
            f.write(exported.serialize())
        describe = lambda a: _spec(a, sizes) if isinstance(a, dict) else _spec({"_": a}, sizes)["_"]
        self.meta["functions"][name] = {"args": ["params"] + [describe(a) for a in args]}

    def finish(self, **meta) -> None:
        np.savez(os.path.join(self.out_dir, "params.npz"), **self.params)
        with open(os.path.join(self.out_dir, "export.json"), "w") as f:
            json.dump(dict(self.meta, **meta), f, indent=1)


def _state_dict(state) -> dict:
    """An LMState as a plain dict: c, memory_pad, memory_<layer>."""
    out = {"memory_pad": state.memory_pad, **{f"memory_{i}": m for i, m in state.memory.items()}}
    return out if state.c is None else dict(out, c=state.c)


def _lm_state(model, d: dict):
    from srupp_jax.models.lm import LMState
    memory = {int(k.split("_")[1]): v for k, v in d.items() if k.startswith("memory_")
              and k != "memory_pad"}
    return LMState(d.get("c"), memory, d["memory_pad"])


def export_lm(model, params, mem_len: int, vocab: list, out_dir: str) -> dict:
    """DIR/lm_forward.bin and the rest (module docstring) for a language model."""
    ex = _Exporter(model, params, out_dir)
    b, l = jax.export.symbolic_shape("b, l")
    state = jax.eval_shape(lambda: _state_dict(model.init_state(2, mem_len)))
    state = {k: jax.ShapeDtypeStruct((b, *v.shape[1:]), v.dtype) for k, v in state.items()}

    def forward(m, tokens, state):
        logp, new = m.log_probs(tokens, _lm_state(m, state))
        return logp, _state_dict(new)

    ex.add("lm_forward", forward, (jax.ShapeDtypeStruct((b, l), jnp.int32), state),
           {"b": b, "l": l})
    ex.finish(kind="lm", mem_len=mem_len, vocab=vocab,
              state={k: {"shape": ["b", *v.shape[1:]], "dtype": str(v.dtype),
                         "initial": 1 if k == "memory_pad" else 0} for k, v in state.items()})
    return ex.meta


def export_seq2seq(model, params, src_len: int, max_len: int, vocab: list, out_dir: str) -> dict:
    """DIR/encoder.bin, decoder_init.bin, decoder_step.bin (module docstring)."""
    from srupp_jax.models.seq2seq import Encoded
    ex = _Exporter(model, params, out_dir)
    (b,) = jax.export.symbolic_shape("b")
    src = jax.ShapeDtypeStruct((b, src_len), jnp.int32)
    enc = jax.eval_shape(lambda p: ex.model(p).encode(jnp.zeros((2, src_len), jnp.int32)),
                         ex.params)
    x_src = jax.ShapeDtypeStruct((b, *enc.out.shape[1:]), enc.out.dtype)
    pad = jax.ShapeDtypeStruct((b, src_len), jnp.bool_)
    treedef = {}

    def init(m, x, p):
        state = m.init_decode_state(Encoded(x, p), max_len)
        treedef["state"] = jax.tree.structure(state)
        return dict(zip(_names(state), jax.tree.leaves(state)))

    state = jax.eval_shape(lambda p: init(ex.model(p), jnp.zeros((2, *x_src.shape[1:]),
                                                                x_src.dtype),
                                          jnp.zeros((2, src_len), bool)), ex.params)
    order = list(state)            # the tree's order (a dict keeps its insertion order)

    def step(m, state, tokens, t):
        st = jax.tree.unflatten(treedef["state"], [state[n] for n in order])
        logp, new = m.decode_step(st, tokens, t)
        return logp, dict(zip(_names(new), jax.tree.leaves(new)))

    state = {k: jax.ShapeDtypeStruct((b, *v.shape[1:]), v.dtype) for k, v in state.items()}
    sizes = {"b": b}
    ex.add("encoder", lambda m, s: tuple(m.encode(s)), (src,), sizes)
    ex.add("decoder_init", init, (x_src, pad), sizes)
    ex.add("decoder_step", step, (state, jax.ShapeDtypeStruct((b,), jnp.int32),
                                  jax.ShapeDtypeStruct((), jnp.int32)), sizes)
    ex.finish(kind="translation", src_len=src_len, max_len=max_len, vocab=vocab,
              pad_id=model.pad_id, bos_id=model.bos_id, eos_id=model.eos_id)
    return ex.meta
