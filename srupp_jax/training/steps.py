"""The compiled training step of any task, and the metrics it leaves on the device.

    step = make_train_step(graphdef, tx, loss)     loss(model, carry, *batch) ->
                                                   (summed loss, weight, new carry)
    params, rest, opt_state, carry, metrics = step(params, rest, opt_state, carry, *batch)
    window = accumulate(window, metrics)           on device; the host fetches it now and then

The step minimises the weighted mean loss (sum / weight, so padded batches average over real
targets only). A non-finite loss or gradient leaves parameters, optimizer state and carry as
they were (`applied` False); the trainer counts such steps and stops after several in a row.

float16 (`train.compute_dtype`): dynamic loss scaling with `jmp.DynamicLossScale`. With
`loss_scale_period` N > 0 the step takes and returns the scale's state after the carry,

    params, rest, opt_state, carry, scale, metrics = step(params, rest, opt_state, carry,
                                                          scale, *batch)

(scale = `initial_loss_scale(s)`: {"scale": float32, "counter": int32}): the loss is multiplied
by the scale before the backward pass and the gradients divided by it; a step whose gradients
are not finite is skipped (as above) and the scale halved, an `overflow` that does not count
as a bad step while the scale can still go down; after N finite steps in a row it doubles.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jmp
import optax
from flax import nnx


class StepMetrics(NamedTuple):
    loss: jax.Array        # weighted mean loss (nats) of the batch
    grad_norm: jax.Array   # global norm before clipping
    applied: jax.Array     # False when the loss or gradient was not finite (update skipped)
    overflow: jax.Array = False        # skipped, and the float16 loss scale lowered
    loss_scale: jax.Array = jnp.nan    # the float16 loss scale after the step (nan: none)


class Window(NamedTuple):
    """Training metrics accumulated on the device between two fetches by the host, so that the
    loop never waits for a step to finish (scalars; float32 sums, int32 counts)."""
    loss_sum: jax.Array    # sum of the losses of applied steps
    applied: jax.Array     # steps whose update was applied
    skipped: jax.Array     # steps with a non-finite loss or gradient (update skipped)
    bad_run: jax.Array     # consecutive skipped steps up to the last one (carried over)
    worst_run: jax.Array   # longest run of consecutive skipped steps in the window
    grad_norm: jax.Array   # of the last applied step
    overflows: jax.Array   # skipped steps that lowered the float16 loss scale (not "bad")
    loss_scale: jax.Array  # the float16 loss scale after the last step (nan: none)

    @staticmethod
    def empty(bad_run: int = 0) -> "Window":
        i = lambda v=0: jnp.asarray(v, jnp.int32)
        nan = jnp.float32(jnp.nan)
        return Window(jnp.float32(0), i(), i(), i(bad_run), i(bad_run), nan, i(), nan)


@jax.jit
def accumulate(window: Window, sm: StepMetrics) -> Window:
    ok, overflow = sm.applied, sm.overflow
    run = jnp.where(ok, 0, window.bad_run + ~overflow)
    return Window(window.loss_sum + jnp.where(ok, sm.loss, 0.0), window.applied + ok,
                  window.skipped + ~ok, run, jnp.maximum(window.worst_run, run),
                  jnp.where(ok, sm.grad_norm, window.grad_norm), window.overflows + overflow,
                  jnp.asarray(sm.loss_scale, jnp.float32))


def initial_loss_scale(scale: float) -> dict:
    """The float16 loss scale's state at the start of a run (a checkpointed tree)."""
    return {"scale": jnp.float32(scale), "counter": jnp.int32(0)}


def make_train_step(graphdef, tx, loss, loss_scale_period: int = 0):
    """jit-compiled (params, rest, opt_state, carry, *batch) -> (params, rest, opt_state,
    carry, StepMetrics); params, opt_state and carry are donated. With loss_scale_period > 0
    (float16), the loss scale's state follows the carry in and out (module docstring).

    loss(model, carry, *batch) -> (summed loss, weight, new carry): the task's objective.
    """
    def step(params, rest, opt_state, carry, scale, *batch):
        model = nnx.merge(graphdef, params, rest)
        scaler = (jmp.DynamicLossScale(scale["scale"], scale["counter"], loss_scale_period)
                  if loss_scale_period else jmp.NoOpLossScale())

        def mean_loss(model):
            total, weight, new_carry = loss(model, carry, *batch)
            return scaler.scale(total / weight), (total / weight, new_carry)

        (_, (value, new_carry)), grads = nnx.value_and_grad(mean_loss, has_aux=True)(model)
        grads = scaler.unscale(grads)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        grad_norm = optax.tree.norm(grads)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(value) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        out = (keep(new_params, params), new_rest, keep(new_opt, opt_state),
               keep(new_carry, carry))
        if not loss_scale_period:
            return (*out, StepMetrics(value, grad_norm, ok))
        adjusted = scaler.adjust(ok)
        overflow = ~ok & (scaler.loss_scale > 1.0)        # the scale could still go down
        return (*out, {"scale": adjusted.loss_scale, "counter": adjusted.counter},
                StepMetrics(value, grad_norm, ok, overflow, adjusted.loss_scale))

    if loss_scale_period:
        return jax.jit(step, donate_argnums=(0, 2, 3))
    return jax.jit(lambda params, rest, opt_state, carry, *batch:
                   step(params, rest, opt_state, carry, None, *batch), donate_argnums=(0, 2, 3))


def count_params(model) -> int:
    """Number of parameters (tied matrices once)."""
    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))
