"""The run's entry points, for any task (`config.task`): what main.py's modes call.

    train_and_evaluate(config, workdir)    train in workdir, resuming (srupp_jax.trainer)
    evaluate_checkpoint(config, workdir)   dev and test metrics of the best checkpoint
    restore_for_inference(config, workdir) (model, params, rest, step) (srupp_jax.inference)
    smoke(config)                          one forward and backward pass on random inputs
    validate_config(config, num_devices)   every check of the keys (srupp_jax.config_keys),
                                           the trainer and the task, before anything is
                                           read or built
    build_model(config, rngs)              the model of a config resolved against its data

The loop itself is srupp_jax/trainer.py; what differs between tasks, srupp_jax/tasks/.
"""
from __future__ import annotations

from srupp_jax import config_keys, inference, tasks, trainer


def validate_config(config, num_devices: int, num_processes: int = 1) -> None:
    """Raise ValueError naming the bad value (or a key configs/base.py lacks) before anything
    is read, built or compiled."""
    config_keys.check(config)
    tasks.make(config).validate(num_devices, num_processes)
    trainer.validate(config)


def train_and_evaluate(config, workdir: str, *, force: bool = False,
                       allow_config_change: bool = False) -> dict:
    """Train `config`'s task in `workdir` (srupp_jax.trainer.train_and_evaluate)."""
    config_keys.check(config)
    return trainer.train_and_evaluate(tasks.make(config), workdir, force=force,
                                      allow_config_change=allow_config_change)


def build_model(config, rngs):
    """The model `config` describes (config.model.vocab_size must be known)."""
    return tasks.make(config).build_model(rngs)


def restore_for_inference(config, workdir: str, which: str = "best"):
    """(model, params, rest, step) of the best (else latest, else older) checkpoint."""
    task = tasks.make(config)
    if config.model.vocab_size == 0:
        task = inference.prepared(config)
    return inference.restore(task, workdir, which)


evaluate_checkpoint = inference.evaluate_checkpoint


def smoke(config) -> float:
    """One forward and backward pass of `config`'s model on random inputs (main.py
    --mode=smoke); prints the sizes and returns the mean loss in nats."""
    config_keys.check(config)
    return tasks.make(config).smoke()
