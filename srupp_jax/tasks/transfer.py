"""A classifier started from a language model of this project (`train.init_from=LM_WORKDIR`).

The trainer, on a fresh start only, restores the source workdir's parameters (best, else
latest) and calls `task.init_params_from(params, source)` (`source.path`, `source.config`:
its config.json, `source.params`: its parameters, an nnx.State or a flat {key path: array}
dict). For the classification task (`init_params`):

  transferred  the embedding (`embed`: a table, or a word model's adaptive input) and the
               SRU++ stack (`rnn`: every layer's attention or projection, v, b, norms);
  kept fresh   the pooling and the classifier layer (the LM's output layer is dropped).

It fits when the source is an SRU++ language model (task "lm", arch "srupp") of the same unit
(bytes: vocabulary 256; words: the classifier takes the LM's vocabulary, `source_words`, and
its cutoffs, `resolve`) and every transferred array has the shape it has here: d, d',
num_layers, k and num_heads as the LM's, and a unidirectional encoder
(`model.encoder_bidirectional=False`: the LM's stack runs forward). Otherwise ValueError with
one line per mismatch (the unit or vocabulary, then each array), nothing trained or written.
"""
from __future__ import annotations

import re

import ml_collections
import numpy as np

from srupp_jax.training import leaves

TRANSFERRED = ("embed", "rnn")


def source_unit(source_config) -> str:
    """"byte" or "word": the tokens of a language model's data (its config)."""
    from srupp_jax.data.datasets import unit_of
    d = source_config.data
    return unit_of(d.name, d.unit)


def load_source_config(path: str) -> ml_collections.ConfigDict:
    """The config.json of workdir `path`; FileNotFoundError naming train.init_from if none."""
    from srupp_jax.training import run_config
    config = run_config.load(path)
    if config is None:
        raise FileNotFoundError(f"train.init_from={path!r} holds no {run_config.CONFIG_FILE}; "
                                "expected the workdir of a trained language model")
    return config


def source_words(path: str):
    """The word vocabulary of the language model in workdir `path` (read from its data, which
    must still be where its config says)."""
    from srupp_jax.tasks.lm import load_data
    return load_data(load_source_config(path)).vocab


def resolve(config, source_config) -> None:
    """Set config.model's vocab_size and adaptive-input cutoffs to the source LM's (words)."""
    m, s = config.model, source_config.model
    if source_unit(source_config) == "word":
        m.vocab_size = s.vocab_size
        if not m.cutoffs:
            m.cutoffs, m.adaptive_factor = tuple(s.cutoffs), s.adaptive_factor


def _name(path: str) -> str:
    """"['rnn']['layers'][0]['v'].value" -> "rnn.layers.0.v"."""
    path = path.removesuffix(".value")
    return ".".join(re.findall(r"\['?([^'\]]+)'?\]", path))


def flat_params(params) -> dict:
    """{dotted name: array} of an nnx.State, a nested dict, or a flat {key path: array}."""
    if isinstance(params, dict) and params and all(
            isinstance(k, str) and k.startswith("[") for k in params):
        return {_name(k): v for k, v in params.items()}
    return {_name(k): v for k, v in leaves.flatten(params).items()}


def _vocabulary_lines(config, source) -> list:
    s = source.config
    lines = []
    if s.get("task", "lm") != "lm" or s.model.get("arch", "srupp") != "srupp":
        lines.append(f"the source is a {s.get('task', 'lm')!r} run of model.arch="
                     f"{s.model.get('arch', 'srupp')!r}; expected an SRU++ language model "
                     "(task 'lm', arch 'srupp')")
    unit, theirs = config.data.unit, source_unit(s)
    if unit != theirs:
        lines.append(f"data.unit={unit!r} here, but the language model reads {theirs}s; set "
                     f"--config.data.unit={theirs}")
    elif config.model.vocab_size != s.model.vocab_size:
        lines.append(f"vocabulary: {s.model.vocab_size} entries in the language model, "
                     f"{config.model.vocab_size} here")
    return lines


def init_params(config, params, source):
    """`params` (this run's fresh nnx.State) with the embedding and the SRU++ stack of the
    language model `source`; ValueError with one line per mismatch (module docstring)."""
    lines = _vocabulary_lines(config, source)
    ours = leaves.flatten(params)
    theirs = flat_params(source.params)
    names = {path: _name(path) for path in ours}
    wanted = {n for n in names.values() if n.split(".")[0] in TRANSFERRED}
    for n in sorted(wanted):
        path = next(p for p, name in names.items() if name == n)
        if n not in theirs:
            lines.append(f"{n}: not in the language model")
        elif tuple(np.shape(theirs[n])) != tuple(np.shape(ours[path])):
            lines.append(f"{n}: {list(np.shape(theirs[n]))} in the language model, "
                         f"{list(np.shape(ours[path]))} here")
    extra = sorted(n for n in theirs if n.split(".")[0] in TRANSFERRED and n not in wanted)
    lines += [f"{n}: in the language model, not here" for n in extra]
    if lines:
        if config.model.get("encoder_bidirectional", False):
            lines.append("a language model's stack runs forward: set "
                         "--config.model.encoder_bidirectional=False")
        s = source.config.model
        lines.append(f"(the language model: d={s.d}, d_proj={s.d_proj}, num_layers="
                     f"{s.num_layers}, k={s.get('k', 1)}, num_heads={s.get('num_heads', 1)})")
        raise ValueError(f"train.init_from={source.path!r} does not fit this model:\n"
                         + ";\n".join(lines))
    values = [np.asarray(theirs[names[p]], np.asarray(x).dtype) if names[p] in wanted else x
              for p, x in ours.items()]
    return leaves.unflatten(params, values)
