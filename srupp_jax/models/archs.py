"""One table of architectures: `config.model.arch` -> the frozen config class of that model.

Each class is a validated, frozen dataclass of the model's hyperparameters (every bad value a
ValueError naming its config key) with `from_config(config)` and `build(rngs)`; the model it
builds counts its own FLOPs (`flops_per_token`). A task looks its architectures up here:

    language models ("lm" task)      srupp (default), transformer_xl, sha_rnn
    translation ("translation")      srupp, transformer

A new architecture is a config class and one line in its task's table. Entries are import
paths, so that a run imports only the model it builds.
"""
from __future__ import annotations

import importlib

LANGUAGE_MODELS = {
    "srupp": "srupp_jax.models.srupp_lm:SRUppConfig",
    "transformer_xl": "srupp_jax.models.transformer_xl:TransformerXLConfig",
    "sha_rnn": "srupp_jax.models.sha_rnn:SHARNNConfig",
}
TRANSLATION_MODELS = {
    "srupp": "srupp_jax.models.srupp_seq2seq:Seq2SeqConfig",
    "transformer": "srupp_jax.models.transformer_seq2seq:TransformerSeq2SeqConfig",
}
TABLES = {"lm": LANGUAGE_MODELS, "translation": TRANSLATION_MODELS}


def arch_name(config) -> str:
    """`config.model.arch` ("srupp" when absent)."""
    return config.model.arch


def config_class(task: str, arch: str):
    """The config class of `arch` in `task`'s table; ValueError naming model.arch otherwise."""
    table = TABLES[task]
    if arch not in table:
        raise ValueError(f"model.arch={arch!r}; expected one of {tuple(table)} for the "
                         f"{task!r} task")
    module, name = table[arch].split(":")
    return getattr(importlib.import_module(module), name)


def model_config(config, task: str):
    """The validated, frozen model config of `config` (its `model` section and
    `train.compute_dtype`) for `task`; a recurrence backend the platform cannot run (the GPU
    kernel on a CPU) and model.remat on a model without SRU++ layers are ValueErrors here,
    before anything is built or written."""
    from srupp_jax.nn.recurrence import resolve_backend

    arch = arch_name(config)
    remat = config.model.get("remat", "none")
    if remat != "none" and arch != "srupp":
        raise ValueError(f"model.remat={remat!r} applies to SRU++ models (model.arch='srupp'), "
                         f"not model.arch={arch!r}; drop it")
    model = config_class(task, arch).from_config(config)
    if getattr(model, "impl", None) is not None:
        resolve_backend(model.impl)
    return model
