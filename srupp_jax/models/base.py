"""What every model config shares: the compute dtype, the kernels' options, reading a config
section into a frozen config class, and the evaluation-mode split of a model."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from pallas_kernels import KernelOptions, TPUKernelOptions

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}



def compute_dtype(name: str):
    """The jnp dtype of a `train.compute_dtype` name; ValueError naming the key otherwise
    (the one check, for SRU++ and the baselines)."""
    if name not in DTYPES:
        raise ValueError(f"train.compute_dtype={name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]



def kernel_options(m) -> tuple:
    """(KernelOptions, TPUKernelOptions) of a config's `model` section (0: the kernel's
    default for the shape)."""
    options = lambda key: {k: v or None for k, v in m[key].items()}
    return KernelOptions(**options("kernel")), TPUKernelOptions(**options("tpu_kernel"))



def check_kernel_options(kernel: KernelOptions, tpu_kernel: TPUKernelOptions) -> None:
    """ValueError naming a kernel option that is not an integer (model.kernel.*, model.tpu_kernel.*)."""
    for group, options in (("kernel", kernel), ("tpu_kernel", tpu_kernel)):
        for name, value in options.as_kwargs().items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"model.{group}.{name}={value!r}; expected an integer")



def split_for_eval(model):
    """(graphdef, params, rest) of `model` in evaluation mode (no dropout); the module's own
    train/eval mode is left as it was."""
    training = not model.dropout.deterministic
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if training:
        model.train()
    return graphdef, params, rest


def config_from(cls, config, names=None, **values):
    """The one way a model's frozen config class `cls` is read from a run's config: `values`
    (what the data decide, e.g. special ids) first, then each field from config.model under
    its name (or `names[field]`, the config's name for it; lists as tuples), the kernels'
    options (`kernel_options`) and dtype from config.train.compute_dtype. A run's config has
    every key of configs/base.py (a workdir's config.json is completed when read), so a field
    the config lacks is a programming error (KeyError)."""
    names, m = names or {}, config.model
    kernel, tpu_kernel = kernel_options(m)
    given = dict(dtype=config.train.compute_dtype, kernel=kernel, tpu_kernel=tpu_kernel,
                 **values)
    fields = {}
    for f in dataclasses.fields(cls):
        value = given[f.name] if f.name in given else m[names.get(f.name, f.name)]
        fields[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**fields)


def describe(model_config) -> str:
    """"d=64, d_proj=16, num_layers=4, ..." of a frozen model config: its size and setting
    fields (the kernels' options left out), for a log line."""
    return ", ".join(f"{f.name}={getattr(model_config, f.name)}"
                     for f in dataclasses.fields(model_config)
                     if f.name not in ("kernel", "tpu_kernel"))
