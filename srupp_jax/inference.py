"""A trained model back from its workdir, for evaluation and generation (not training).

    model, params, rest, step = restore(task, workdir)     # best, else latest, else older
    metrics = evaluate_checkpoint(config, workdir)           # main.py --mode=eval

Nothing is created in the workdir but what a task's evaluation writes (translation: its
hypotheses); a checkpoint that fails to load or verify is quarantined and an older one used
(srupp_jax.checkpoint), as in training.
"""
from __future__ import annotations

import json

import jax
from flax import nnx

from srupp_jax import sharding, tasks
from srupp_jax.rng import model_rngs


def prepared(config, num_devices: int = 1):
    """The Task of `config`, checked and loaded (its config resolved against the data)."""
    task = tasks.make(config)
    task.validate(num_devices, jax.process_count())
    task.load()
    return task


def restore(task, workdir: str, which: str = "best"):
    """Build `task`'s model and restore the best (falling back to the latest, then older)
    readable checkpoint of `workdir`: returns (model, params, rest, step).
    FileNotFoundError if there is none."""
    from srupp_jax.checkpoint import Checkpoints

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


def evaluate_checkpoint(config, workdir: str, which: str = "best") -> dict:
    """Restore the best (falling back to the latest) checkpoint; dev and test metrics over
    the whole splits (eval.max_tokens limits only the dev evaluations during training)."""
    sharding.initialize_distributed()
    mesh = sharding.from_config(config.mesh)
    task = prepared(config, mesh.devices.size)
    model, params, rest, step = restore(task, workdir, which)
    params, rest = sharding.onto_mesh((params, rest), mesh)
    evaluate = task.evaluator(model, mesh)
    out = {"step": step, **task.marks}
    for split in ("dev", "test"):
        out.update(evaluate(params, rest, split, full=True, desc=f"eval {split}",
                            out_dir=workdir))
    return out
