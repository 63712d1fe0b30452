"""Tasks: what differs between training a language model and a translation model.

    task = tasks.make(config)       # config.task: "lm" (the default), "translation" or
                                    #   "classification"
    task = tasks.prepared(config)   # made, checked and its data loaded

The trainer (srupp_jax/training/trainer.py) runs any `Task` (tasks/base.py); a new task is a
subclass and one line in TASKS. Entries are import paths, so a run imports only its own task.

  base.py            the Task interface (and the hooks of train.init_from)
  lm.py              language models; lm_eval.py the evaluation of a split
  translation.py     translation (beam search, BLEU)
  classification.py  text classification; transfer.py its start from a language model
  plan.py            the memory plan of a training step, without compiling
"""
from __future__ import annotations

import importlib

TASKS = {
    "lm": "srupp_jax.tasks.lm:LMTask",
    "translation": "srupp_jax.tasks.translation:TranslationTask",
    "classification": "srupp_jax.tasks.classification:ClassificationTask",
}


def task_name(config) -> str:
    """`config.task` ("lm" when absent)."""
    return config.task


def task_class(config):
    """The Task subclass of `config`; ValueError naming `task` when it is not one of TASKS."""
    name = task_name(config)
    if name not in TASKS:
        raise ValueError(f"task={name!r}; expected one of {tuple(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make(config):
    """The Task of `config`; ValueError naming `task` when it is not one of TASKS."""
    return task_class(config)(config)


def prepared(config, num_devices: int = 1):
    """The Task of `config`, checked and loaded (its config resolved against the data) to
    evaluate, generate or import (`Task.for_training` False)."""
    import jax

    task = make(config)
    task.for_training = False
    task.validate(num_devices, jax.process_count())
    task.load()
    return task
