"""The compiled training step of any task, and the metrics it leaves on the device.

    step = make_train_step(graphdef, tx, loss)     loss(model, carry, *batch) ->
                                                   (summed loss, weight, new carry)
    params, rest, opt_state, carry, metrics = step(params, rest, opt_state, carry, *batch)
    window = accumulate(window, metrics)           on device; the host fetches it now and then

The step minimises the weighted mean loss (sum / weight, so padded batches average over real
targets only). A non-finite loss or gradient leaves parameters, optimizer state and carry as
they were (`applied` False); the trainer counts such steps and stops after several in a row.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class StepMetrics(NamedTuple):
    loss: jax.Array        # weighted mean loss (nats) of the batch
    grad_norm: jax.Array   # global norm before clipping
    applied: jax.Array     # False when the loss or gradient was not finite (update skipped)


class Window(NamedTuple):
    """Training metrics accumulated on the device between two fetches by the host, so that the
    loop never waits for a step to finish (scalars; float32 sums, int32 counts)."""
    loss_sum: jax.Array    # sum of the losses of applied steps
    applied: jax.Array     # steps whose update was applied
    skipped: jax.Array     # steps with a non-finite loss or gradient (update skipped)
    bad_run: jax.Array     # consecutive skipped steps up to the last one (carried over)
    worst_run: jax.Array   # longest run of consecutive skipped steps in the window
    grad_norm: jax.Array   # of the last applied step

    @staticmethod
    def empty(bad_run: int = 0) -> "Window":
        i = lambda v=0: jnp.asarray(v, jnp.int32)
        return Window(jnp.float32(0), i(), i(), i(bad_run), i(bad_run), jnp.float32(jnp.nan))


@jax.jit
def accumulate(window: Window, sm: StepMetrics) -> Window:
    ok = sm.applied
    run = jnp.where(ok, 0, window.bad_run + 1)
    return Window(window.loss_sum + jnp.where(ok, sm.loss, 0.0), window.applied + ok,
                  window.skipped + ~ok, run, jnp.maximum(window.worst_run, run),
                  jnp.where(ok, sm.grad_norm, window.grad_norm))


def make_train_step(graphdef, tx, loss):
    """jit-compiled (params, rest, opt_state, carry, *batch) -> (params, rest, opt_state,
    carry, StepMetrics); params, opt_state and carry are donated.

    loss(model, carry, *batch) -> (summed loss, weight, new carry): the task's objective.
    """
    def step(params, rest, opt_state, carry, *batch):
        model = nnx.merge(graphdef, params, rest)

        def mean_loss(model):
            total, weight, new_carry = loss(model, carry, *batch)
            return total / weight, new_carry

        (value, new_carry), grads = nnx.value_and_grad(mean_loss, has_aux=True)(model)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        grad_norm = optax.tree.norm(grads)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(value) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        return (keep(new_params, params), new_rest, keep(new_opt, opt_state),
                keep(new_carry, carry), StepMetrics(value, grad_norm, ok))

    return jax.jit(step, donate_argnums=(0, 2, 3))


def count_params(model) -> int:
    """Number of parameters (tied matrices once)."""
    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))
