"""A trained model back from its workdir, for evaluation and generation (not training).

    model, params, rest, step = restore(task, workdir)     # best, else latest, else older

`task` is any object with the Task interface's build_model, config, best_metric and best_mode
(srupp_jax/tasks/base.py). Nothing is written to the workdir; a checkpoint that fails to load
or verify is quarantined and an older one used (srupp_jax.training.checkpoint), as in
training.
"""
from __future__ import annotations

import json

from flax import nnx

from srupp_jax.training.rng import model_rngs


def restore(task, workdir: str, which: str = "best"):
    """Build `task`'s model and restore the best (falling back to the latest, then older)
    readable checkpoint of `workdir`: returns (model, params, rest, step).
    FileNotFoundError if there is none."""
    from srupp_jax.training.checkpoint import Checkpoints

    model = task.build_model(model_rngs(task.config))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    hint = f"; train first with --mode=train --workdir={workdir}"
    try:
        ckpt = Checkpoints(f"{workdir}/checkpoints", read_only=True,
                           best_metric=task.best_metric, best_mode=task.best_mode)
    except FileNotFoundError as e:
        raise FileNotFoundError(str(e) + hint) from None
    try:    # not the optimizer or the training carry
        restored = ckpt.restore({"params": params, "rest": rest}, which=which,
                                config=json.loads(task.config.model.to_json()))
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints" + hint)
    step, items = restored
    return model, items["params"], items["rest"], step


