"""The trainer's side of starting a run from another workdir's parameters (`train.init_from`:
fine-tuning, and the models `--mode=import` writes); the task's side and the contract are in
srupp_jax/tasks/base.py.

    source = fine_tune.prepare(task, workdir, given)     before the config is checked
    state = fine_tune.start_from(task, source, state)    on a fresh start (no checkpoint)

On a resume the workdir's own checkpoint wins and the source is not read again (its config
is: the run's architecture is the source's). The optimizer state is the fresh one of the new
run; config.json records train.init_from and train.init_step (the source's step used).
"""
from __future__ import annotations

import os

import jax
from absl import logging

from srupp_jax.training import run_config


def prepare(task, workdir: str, given=()):
    """The Source of `task.config.train.init_from` (None when it is ""), with the task's
    config adapted to it (`task.configure_from`; `given`: the keys set on the command line)
    and, on a rerun, train.init_step taken from the workdir's record."""
    path = task.config.train.init_from
    if not path:
        return None
    source = task.open_source(path)
    task.configure_from(source, given)
    saved = run_config.load(workdir)
    if saved is not None and saved.train.init_from == path:
        task.config.train.init_step = saved.train.init_step
    return source


def saved_steps(workdir: str) -> list:
    """The step folders of `workdir`/checkpoints (none: a fresh start, where a source applies)."""
    folder = os.path.join(workdir, "checkpoints")
    return [n for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []


def start_from(task, source, state):
    """`state` (a fresh TrainState) with the params the task takes from the source's best
    (else latest) checkpoint, placed as state.params are; records train.init_step."""
    source = task.restore_source(source)
    params = task.init_params_from(state.params, source)
    placement = jax.tree.map(lambda x: x.sharding, state.params)
    params = jax.device_put(params, placement)
    task.config.train.init_step = source.step
    logging.info("starting from %s (step %d): its parameters, a fresh optimizer", source.path,
                 source.step)
    return state._replace(params=params)
