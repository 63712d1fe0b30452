"""The interface between the trainer and a task.

A `Task` is built from a run's config and answers everything the trainer cannot know. The
trainer calls, in this order:

    task.validate(num_devices, num_processes)  the task's config checks (ValueError naming the
                                               key), before any data are read
    task.load()                                read the data; `task.config` gets the keys the
                                               data decide (e.g. model.vocab_size)
    task.build_model(rngs, measure=True)       the model (an nnx.Module); measure: may time
                                               backends at the training shape (training only)
    task.init_carry(model)                     the carry of a fresh start: a tree of
                                               batch-first arrays, or None (no carry)
    task.resets_carry(step)                    True where the data restart (carry rebuilt)
    task.batch(step)                           this process's rows of step's batch, a tuple
                                               of numpy arrays; a pure function of step, so
                                               resume is exact
    task.loss(model, carry, *batch)            (summed loss, weight, new carry), traced in the
                                               compiled step, which minimises sum / weight
    task.evaluator(model, mesh)                evaluate(params, rest, split) -> {"dev_loss":
                                               .., ...}: split "dev" during training, "dev" or
                                               "test" with full=True for --mode=eval
    task.train_metrics(mean_loss)              {"train_loss": .., ...} of a logged window

and reads `modes` (main.py's modes this task has; a task adds its own, e.g. generate), `arch`, `best_metric` / `best_mode` (the checkpoint kept as best), `tokens_per_step`
(progress and tokens/s), `flops_per_token(model)` (MFU) and `marks` (added to every metric
row, e.g. {"standard_data": 0}). `smoke()` runs one forward and backward pass of the model.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from srupp_jax.nn.recurrence import Backend, fastest_backend


class Task:
    """The base of every task; see the module docstring for the contract."""

    name = ""
    best_metric, best_mode = "dev_loss", "min"
    modes = ("train", "eval", "smoke", "show_config")    # main.py's modes that apply

    def __init__(self, config):
        self.config = config
        self.marks: dict = {}

    @property
    def arch(self) -> str:
        return self.config.model.arch

    def validate(self, num_devices: int, num_processes: int = 1) -> None:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def build_model(self, rngs, *, measure: bool = False):
        raise NotImplementedError

    def init_carry(self, model):
        return None

    def resets_carry(self, step: int) -> bool:
        return False

    def batch(self, step: int) -> tuple:
        raise NotImplementedError

    def loss(self, model, carry, *batch):
        raise NotImplementedError

    def evaluator(self, model, mesh):
        raise NotImplementedError

    def train_metrics(self, mean_loss: float) -> dict:
        return {"train_loss": mean_loss}

    @property
    def tokens_per_step(self) -> int:
        raise NotImplementedError

    def flops_per_token(self, model) -> float:
        raise NotImplementedError

    def smoke_inputs(self):
        """(this task's config with what the data would decide filled in without reading data
        where possible, a random batch shaped as `batch(step)`'s) for `smoke`."""
        raise NotImplementedError

    def smoke(self) -> float:
        """One forward and backward pass of the model on a random batch (main.py --mode=smoke,
        no data read where the task can avoid it); prints the sizes and returns the mean loss
        in nats."""
        import math
        import time

        import optax
        from flax import nnx

        from srupp_jax.models.base import describe
        from srupp_jax.training.rng import model_rngs
        from srupp_jax.training.steps import count_params

        self.validate(1)
        self.config, batch = self.smoke_inputs()
        model = self.build_model(model_rngs(self.config))
        carry = self.init_carry(model)
        graphdef, variables = nnx.split(model)

        @jax.jit
        def loss_and_grad(variables):
            def mean(m):
                total, weight, _ = self.loss(m, carry, *batch)
                return total / weight
            return nnx.value_and_grad(mean)(nnx.merge(graphdef, variables))

        start = time.time()
        loss, grads = loss_and_grad(variables)
        vocab = self.config.model.vocab_size
        print(f"{self.arch} {self.name} model: {count_params(model):,} parameters, backend "
              f"{jax.default_backend()}; {describe(model.config)}")
        print(f"random batch {' '.join('x'.join(map(str, b.shape)) for b in batch)}: loss "
              f"{float(loss):.4f} nats (ln V = {math.log(vocab):.4f}), grad norm "
              f"{float(optax.tree.norm(grads)):.4f}, {time.time() - start:.1f}s incl. compile")
        return float(loss)


def measured_impl(model_config, batch: int, length: int):
    """`model_config` (a frozen model config; one with an SRU++ recurrence has `impl` and `d`)
    with impl "auto" on a GPU replaced by the backend `fastest_backend` measures fastest at the
    per-device training shape [batch, length] (process 0's choice on every process, so that all
    compile the same program); unchanged otherwise (other impls, other devices, models without
    a recurrence)."""
    if getattr(model_config, "impl", None) != "auto" or jax.default_backend() != "gpu":
        return model_config
    shape = (batch, length, model_config.d, 3)    # an SRU++ layer's U: 3 slices (d_in == d)
    backend, times = fastest_backend(*shape, dtype=model_config.dtype,
                                     kernel=model_config.kernel)
    if jax.process_count() > 1:
        backend = list(Backend)[int(multihost_utils.broadcast_one_to_all(
            np.int32(list(Backend).index(backend))))]
    measured = ", ".join(f"{name} {ms:.2f} ms" for name, ms in times.items())
    logging.info("recurrence timed at %s %s: %s", "x".join(map(str, shape[:3])),
                 model_config.dtype, measured)
    return dataclasses.replace(model_config, impl=backend.value)
