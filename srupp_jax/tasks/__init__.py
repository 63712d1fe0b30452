"""Tasks: what differs between training a language model and a translation model.

    task = tasks.make(config)       # config.task: "lm" (the default) or "translation"

The trainer (srupp_jax/trainer.py) runs any `Task` (tasks/base.py); a new task is a subclass
and one line in TASKS. Entries are import paths, so a run imports only its own task.
"""
from __future__ import annotations

import importlib

TASKS = {
    "lm": "srupp_jax.tasks.lm:LMTask",
    "translation": "srupp_jax.tasks.translation:TranslationTask",
}


def task_name(config) -> str:
    """`config.task` ("lm" when absent)."""
    return config.get("task", "lm")


def make(config):
    """The Task of `config`; ValueError naming `task` when it is not one of TASKS."""
    name = task_name(config)
    if name not in TASKS:
        raise ValueError(f"task={name!r}; expected one of {tuple(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(config)
