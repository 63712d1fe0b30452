"""A memory plan before the run: what one training step holds per device, estimated without
compiling or allocating anything (the model is built abstractly, `nnx.eval_shape`).

    plan = memory_plan(task, num_devices)      # bytes per device, by part
    print(describe(plan))                      # main.py --mode=plan

Parts: parameters (float32), gradients (float32, as many), optimizer state (RAdam's two
moments and counts; `mesh.fsdp_size` k splits these three over k devices), the carry and the
batch, and the activations the backward pass keeps: the residuals of the loss's VJP at the
per-device batch (`jax.vjp` traced by `jax.make_jaxpr`: every intermediate array it saves,
the inputs excluded), for each `model.remat` (none, layer, attention). At small sizes on a CPU
the total is within 20% of the compiled step's own memory analysis with remat none
(tests/test_plan.py; BENCHMARKS.md). XLA may keep less (fusion) or more (temporaries).

Where the device's memory is known (`memory_stats()["bytes_limit"]` on a GPU or TPU, or
`--device_memory` GiB), it says whether the step fits and the smallest change that would:
model.remat, then train.batch_size halved with train.grad_accum_steps doubled (the same
tokens per update), then mesh.fsdp_size.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
from absl import logging
from flax import nnx

from srupp_jax.nn.remat import REMAT
from srupp_jax.training.optim import make_optimizer
from srupp_jax.training.steps import make_train_step

GIB = 2.0 ** 30


@dataclasses.dataclass
class Plan:
    """Bytes per device of one training step, by part; activations per remat."""
    rows: int                 # batch rows per device
    params: int
    gradients: int
    optimizer: int
    inputs: int               # batch and carry
    activations: dict         # remat -> bytes
    remat: str                # the configured remat
    fsdp: int = 1
    device_memory: float = 0.0   # bytes (0: unknown)
    device: str = ""

    def total(self, remat: str | None = None, fsdp: int | None = None, rows: int | None = None):
        fsdp = fsdp or self.fsdp
        scale = (rows or self.rows) / self.rows
        state = (self.params + self.gradients + self.optimizer) / fsdp
        return state + scale * (self.inputs + self.activations[remat or self.remat])


def _nbytes(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize
                   for x in jax.tree.leaves(tree)))


def activation_bytes(graphdef, params, rest, loss, carry, batch) -> int:
    """Bytes of the arrays the backward pass of `loss` keeps (abstract inputs)."""
    def kept(p, r, carry, batch):
        def mean_loss(p, r):
            total, weight, _ = loss(nnx.merge(graphdef, p, r), carry, *batch)
            return total / weight
        return jax.vjp(mean_loss, p, r)[1]

    closed = jax.make_jaxpr(kept)(params, rest, carry, batch)
    inputs = {id(v) for v in closed.jaxpr.invars}
    kept = {id(v): v.aval for v in closed.jaxpr.outvars
            if id(v) not in inputs and hasattr(v, "aval") and type(v).__name__ != "Literal"}
    return int(sum(np.prod(a.shape, dtype=np.int64) * a.dtype.itemsize for a in kept.values()))


def memory_plan(task, num_devices: int, device_memory_gib: float = 0.0) -> Plan:
    """The Plan of `task`'s training step (its config's vocabulary resolved) on
    `num_devices` data-parallel devices."""
    config = task.config
    t = config.train
    rows = max(1, task.global_rows() // num_devices)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps, grad_accum_steps=t.grad_accum_steps)
    activations, parts = {}, None
    configured, impl = config.model.get("remat", "none"), config.model.get("impl", "auto")
    logger, setup = logging.get_absl_logger(), dict(task.setup)
    level = logger.level
    logger.setLevel(logging.WARNING)              # not the build's lines, three times
    try:        # the scan's activations (a kernel saves about as much; nothing is timed)
        config.model.impl = "scan"
        for remat in REMAT if task.arch == "srupp" else ("none",):
            config.model.remat = remat
            model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)
            carry, batch = task.plan_inputs(model, rows)
            activations[remat] = activation_bytes(graphdef, params, rest, task.loss, carry,
                                                  batch)
            if parts is None:
                opt = jax.eval_shape(tx.init, params)
                parts = (_nbytes(params), _nbytes(opt), _nbytes((carry, batch)))
    finally:
        config.model.remat, config.model.impl = configured, impl
        logger.setLevel(level)
        task.setup = setup                        # what the run chose, not the plan's builds
    limit, device = device_memory_gib * GIB, ""
    if not limit:
        dev = jax.local_devices()[0]
        stats = dev.memory_stats() if dev.platform != "cpu" else None
        limit = float((stats or {}).get("bytes_limit", 0))
        device = dev.device_kind if limit else ""
    return Plan(rows, parts[0], parts[0], parts[1], parts[2], activations,
                configured if configured in activations else "none",
                max(1, config.mesh.get("fsdp_size", 0)), limit, device)


def smallest_fix(plan: Plan, config, num_devices: int) -> str:
    """The first change that makes the step fit ('' when it fits or nothing found)."""
    if not plan.device_memory or plan.total() <= plan.device_memory:
        return ""
    order = [r for r in ("attention", "layer") if r in plan.activations and r != plan.remat]
    for remat in order:
        if plan.total(remat=remat) <= plan.device_memory:
            return f"--config.model.remat={remat}"
    t = config.train
    for k in (2, 4, 8, 16):
        rows = plan.rows // k
        if rows >= 1 and plan.total(rows=rows) <= plan.device_memory:
            return (f"--config.train.batch_size={t.batch_size // k} "
                    f"--config.train.grad_accum_steps={t.grad_accum_steps * k} (the same "
                    "tokens per update)")
    for k in (2, 4, 8):
        if num_devices % k == 0 and k > plan.fsdp and plan.total(fsdp=k) <= plan.device_memory:
            return f"--config.mesh.fsdp_size={k}"
    return ""


def describe(plan: Plan, fix: str = "") -> str:
    """The plan as a few lines (main.py --mode=plan)."""
    gib = lambda b: f"{b / GIB:.2f} GiB"
    lines = [f"memory per device, {plan.rows} batch rows a device (fsdp {plan.fsdp}):",
             f"  parameters       {gib(plan.params / plan.fsdp)} (float32)",
             f"  gradients        {gib(plan.gradients / plan.fsdp)}",
             f"  optimizer state  {gib(plan.optimizer / plan.fsdp)}",
             f"  batch and carry  {gib(plan.inputs)}",
             "  activations      " + ", ".join(f"remat {r}: {gib(b)}"
                                               for r, b in plan.activations.items()),
             f"  total            {gib(plan.total())} (remat {plan.remat})"]
    if plan.device_memory:
        fits = plan.total() <= plan.device_memory
        lines.append(f"  device memory    {gib(plan.device_memory)}{' ' + plan.device if plan.device else ''}: "
                     + ("fits" if fits else "does not fit"
                        + (f"; smallest change that fits: {fix}" if fix else
                           "; no single change found: a smaller model, or more devices")))
    else:
        lines.append("  device memory    unknown here (--device_memory=GIB to check a card)")
    return "\n".join(lines)


def one_line(plan: Plan, fix: str = "") -> str:
    """The plan as the one line training logs at its start."""
    gib = lambda b: f"{b / GIB:.2f}"
    acts = ", ".join(f"{r} {gib(b)}" for r, b in plan.activations.items())
    verdict = "" if not plan.device_memory else (
        f"; device {gib(plan.device_memory)} GiB: " + (
            "fits" if plan.total() <= plan.device_memory else f"does not fit ({fix or 'shrink'})"))
    return (f"memory plan per device: {gib(plan.params + plan.gradients + plan.optimizer)} GiB "
            f"params+grads+optimizer, activations {acts} GiB by remat, total "
            f"{gib(plan.total())} GiB (remat {plan.remat}){verdict}")


def compiled_memory(task, rows: int) -> dict:
    """What XLA's own memory analysis says of the compiled train step at `rows` rows per
    device (nothing allocated): argument, output, alias (donated) and temp bytes, and their
    total = argument + output - alias + temp; what the plan is checked against."""
    t = task.config.train
    model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps)
    carry, batch = task.plan_inputs(model, rows)
    step = make_train_step(graphdef, tx, task.loss)
    ma = step.lower(params, rest, jax.eval_shape(tx.init, params), carry, *batch).compile() \
        .memory_analysis()
    out = dict(argument=ma.argument_size_in_bytes, output=ma.output_size_in_bytes,
               alias=ma.alias_size_in_bytes, temp=ma.temp_size_in_bytes)
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out
