"""A fresh run started from another workdir's parameters (`train.init_from=WORKDIR`).

    state = init_from.fresh_start(task, state, workdir)   # in the trainer, before any save

On a fresh start only (the workdir has no checkpoint yet; a resumed run continues from its
own), when config.train.init_from names a workdir: its parameters are restored as they were
saved (the best checkpoint by `task.init_from_best`, else the latest; checksums verified, no
model of the source built) and `task.init_params_from(params, source)` returns the parameters
to start from (tasks/base.py), put where this run's fresh ones were (the same shardings).
`source` is a `Source`: path, config (its config.json), params ({key path: array}, the
checkpoint's names, e.g. "['rnn']['layers'][0]['v'].value").

A train.init_from that is no trained run's workdir, or whose parameters do not fit, stops
with one line (exit 2) before anything is written to the workdir; a resumed run never reads
it (its source may be gone by then).
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
from absl import logging

from srupp_jax.training import run_config
from srupp_jax.training.checkpoint import Checkpoints


class Source(NamedTuple):
    """The workdir a run starts from: path, config (ConfigDict), params ({key path: array})."""
    path: str
    config: Any
    params: dict


def check(path: str) -> None:
    """FileNotFoundError naming train.init_from when `path` is no trained run's workdir."""
    if not path:
        return
    where = os.path.expanduser(path)
    missing = [name for name in (run_config.CONFIG_FILE, "checkpoints")
               if not os.path.exists(os.path.join(where, name))]
    if missing:
        raise FileNotFoundError(f"train.init_from={path!r} holds no {' or '.join(missing)}; "
                                "expected the workdir of a trained run")


def load(path: str, best_metric: str = "dev_loss", best_mode: str = "min") -> Source:
    """The Source of workdir `path` (its best checkpoint's params, else the latest)."""
    check(path)
    where = os.path.expanduser(path)
    ckpt = Checkpoints(os.path.join(where, "checkpoints"), read_only=True,
                       best_metric=best_metric, best_mode=best_mode)
    try:
        restored = ckpt.restore_saved("params", which="best")
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"train.init_from={path!r} has no checkpoint; train it first")
    step, params = restored
    logging.info("starting from the parameters of %s (step %d)", path, step)
    return Source(path, run_config.load(where), params)


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a saved step (then a run resumes instead of starting)."""
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def fresh_start(task, state, workdir: str):
    """`state` (a TrainState) with the params of train.init_from on a fresh start; unchanged
    otherwise (module docstring)."""
    path = task.config.train.get("init_from", "")
    if not path or has_checkpoints(workdir):
        return state
    source = load(path, *task.init_from_best)
    params = task.init_params_from(state.params, source)
    shardings = jax.tree.map(lambda x: x.sharding, state.params)
    return state._replace(params=jax.device_put(params, shardings))
