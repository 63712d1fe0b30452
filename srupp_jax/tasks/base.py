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

and reads `arch`, `best_metric` / `best_mode` (the checkpoint kept as best), `tokens_per_step`
(progress and tokens/s), `flops_per_token(model)` (MFU) and `marks` (added to every metric
row, e.g. {"standard_data": 0}). `smoke()` runs one forward and backward pass of the model.
"""
from __future__ import annotations


class Task:
    """The base of every task; see the module docstring for the contract."""

    name = ""
    best_metric, best_mode = "dev_loss", "min"

    def __init__(self, config):
        self.config = config
        self.marks: dict = {}

    @property
    def arch(self) -> str:
        return self.config.model.get("arch", "srupp")

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

    def smoke(self) -> float:
        raise NotImplementedError
