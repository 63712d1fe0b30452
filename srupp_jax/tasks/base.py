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

from srupp_jax.nn.recurrence import AUTO, Backend, fastest_backend, resolve_backend


class Task:
    """The base of every task; see the module docstring for the contract."""

    name = ""
    best_metric, best_mode = "dev_loss", "min"
    modes = ("train", "eval", "smoke", "plan", "export", "show_config")  # main.py's modes

    def __init__(self, config):
        self.config = config
        self.marks: dict = {}
        self.setup: dict = {}     # what build_model chose and why (metrics.jsonl's setup row)

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

    def global_rows(self) -> int:
        """Batch rows of a training step over all devices (the memory plan)."""
        raise NotImplementedError

    def plan_inputs(self, model, rows: int) -> tuple:
        """(carry, batch) of one device's step with `rows` rows, as jax.ShapeDtypeStructs."""
        raise NotImplementedError

    def memory_plan(self, num_devices: int, device_memory_gib: float = 0.0):
        """(Plan, the smallest change that fits or "") of a training step: tasks/plan.py."""
        from srupp_jax.tasks import plan
        p = plan.memory_plan(self, num_devices, device_memory_gib)
        return p, plan.smallest_fix(p, self.config, num_devices)

    def memory_plan_line(self, num_devices: int) -> str:
        """The memory plan in one line (logged at the start of training)."""
        from srupp_jax.tasks import plan
        return plan.one_line(*self.memory_plan(num_devices))

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


def measured_impl(model_config, batch: int, length: int, *, timed: bool = True):
    """(model config, reason): `model_config` (a frozen model config; one with an SRU++
    recurrence has `impl` and `d`) with impl "auto" on a GPU or TPU replaced by the backend
    `fastest_backend` finds working and fastest at the per-device shape [batch, length]
    (timed=False: the first that works, untimed: eval, generate), and the reason for the
    choice, one line. A backend that fails to lower, compile or match the scan there is
    skipped with one warning line naming the error. With several processes, process 0's choice
    is taken by all, so that all compile the same program. Unchanged for other impls, on a CPU
    and for models without a recurrence (reason "" for those)."""
    impl = getattr(model_config, "impl", None)
    platform = jax.default_backend()
    if impl is None:
        return model_config, ""
    if impl != "auto" or platform not in AUTO:
        chosen = resolve_backend(impl).value
        return model_config, (f"model.impl={impl}" if impl != "auto" else
                              f"model.impl=auto on {platform.upper()}: {chosen}")
    shape = (batch, length, model_config.d, 3)    # an SRU++ layer's U: 3 slices (d_in == d)
    where = f"{'x'.join(map(str, shape[:3]))} {model_config.dtype}"
    backend, times, skipped = fastest_backend(*shape, dtype=model_config.dtype,
                                              kernel=model_config.kernel, timed=timed)
    for name, why in skipped.items():
        logging.warning("recurrence %s skipped (it failed at %s): %s", name, where, why)
    if jax.process_count() > 1:
        backend = list(Backend)[int(multihost_utils.broadcast_one_to_all(
            np.int32(list(Backend).index(backend))))]
    parts = [f"{name} failed ({why})" for name, why in skipped.items()]
    if times:
        parts.append("timed " + ", ".join(f"{n} {ms:.2f} ms" for n, ms in times.items()))
        logging.info("recurrence timed at %s: %s", where, parts[-1][6:])
    reason = f"model.impl=auto on {platform.upper()} at {where}: {backend.value}" + (
        f" ({'; '.join(parts)})" if parts else "")
    return dataclasses.replace(model_config, impl=backend.value), reason
