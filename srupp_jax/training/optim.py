"""The paper's optimizer (section 4, appendix B).

RAdam (b1 0.9, b2 0.999), learning rate 3e-4 with linear warmup then one cosine cycle (or, for
Lin et al.'s IWSLT'14 recipe, the inverse square root of the step), decoupled
weight decay 0.1 on matrices only, gradient clipping at global norm 1.0:

    chain(clip_by_global_norm(clip_norm),
          scale_by_radam(b1, b2),
          add_decayed_weights(weight_decay, mask=weight_decay_mask),
          scale_by_learning_rate(lr_schedule(...)))

optionally wrapped in `optax.MultiSteps` for gradient accumulation (the mean of k micro-batch
gradients is applied every k-th call; the other calls return zero updates).

`optax.radam` has no weight decay, hence the explicit chain. The decay is decoupled (AdamW style):
it is added after the RAdam rescaling, so a parameter p moves by -lr_t * weight_decay * p per
step on top of the RAdam step.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

# Parameter names that are never decayed whatever their rank: biases, layer norm scales, the
# attention residual scalar alpha and the SRU peephole weights v and biases b ([2, dirs, d]).
NO_DECAY_NAMES = frozenset({"b", "v", "bias", "scale", "alpha"})


SCHEDULES = ("cosine", "rsqrt")


def lr_schedule(lr: float, warmup_steps: int, total_steps: int,
                end_lr: float = 0.0, kind: str = "cosine") -> optax.Schedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then (kind "cosine", the paper's) one
    cosine cycle to `end_lr`, or (kind "rsqrt", the Noam schedule of Lin et al.'s IWSLT
    Transformer) lr * sqrt(warmup_steps / step).

    Cosine: 0 at step 0, `lr` at step `warmup_steps`, `end_lr` at step `total_steps` (and
    after); `total_steps` counts the warmup steps too.
    """
    _check_schedule_args(lr, warmup_steps, total_steps, end_lr)
    if kind not in SCHEDULES:
        raise ValueError(f"train.schedule={kind!r}; expected one of {', '.join(SCHEDULES)}")
    if kind == "rsqrt":
        warm = max(int(warmup_steps), 1)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, float(lr), warm),
             lambda s: float(lr) * jnp.sqrt(warm / (s + warm))], [warm])
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=float(lr), warmup_steps=int(warmup_steps),
        decay_steps=int(total_steps),  # optax: decay_steps INCLUDES the warmup steps
        end_value=float(end_lr))


def _key_name(key) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return key


def _param_name(path) -> Any:
    """The last path entry that names the parameter (skips nnx's trailing `.value`)."""
    names = [_key_name(k) for k in path]
    while names and names[-1] in ("value", "raw_value"):
        names.pop()
    return names[-1] if names else None


def weight_decay_mask(params):
    """Pytree of bools with the structure of `params`: True where weight decay applies.

    Decayed: matrices (ndim >= 2: dense kernels, embedding tables). Not decayed: anything with
    ndim < 2 (biases, layer norm scale/bias, scalars such as alpha) and, whatever their rank, the
    parameters named in `NO_DECAY_NAMES` (the SRU peephole `v` and bias `b`, stored [2, dirs, d]).
    Works on an `nnx.State` of `nnx.Param` (e.g. `nnx.state(model, nnx.Param)`) and on plain
    nested dicts of arrays.
    """
    def decide(path, leaf):
        if getattr(leaf, "ndim", 0) < 2:
            return False
        return _param_name(path) not in NO_DECAY_NAMES
    return jax.tree_util.tree_map_with_path(decide, params)


def _check_schedule_args(lr, warmup_steps, total_steps, end_lr):
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got lr={lr!r}")
    if int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got warmup_steps={warmup_steps!r}")
    if int(total_steps) != total_steps or total_steps <= warmup_steps:
        raise ValueError(f"total_steps must be an integer > warmup_steps={warmup_steps!r}, "
                         f"got total_steps={total_steps!r}")
    if not end_lr >= 0:
        raise ValueError(f"end_lr must be >= 0, got end_lr={end_lr!r}")


def make_optimizer(lr: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.1,
                   clip_norm: float = 1.0, b1: float = 0.9, b2: float = 0.999,
                   grad_accum_steps: int = 1, end_lr: float = 0.0, schedule: str = "cosine"
                   ) -> optax.GradientTransformation:
    """RAdam + linear-warmup/cosine schedule + decoupled weight decay + global-norm clipping.

    `total_steps` and `warmup_steps` count optimizer updates (with `grad_accum_steps` k > 1, one
    update every k calls). Use with `nnx.Optimizer(model, tx, wrt=nnx.Param)` or plain optax.
    """
    _check_schedule_args(lr, warmup_steps, total_steps, end_lr)
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got weight_decay={weight_decay!r}")
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got clip_norm={clip_norm!r}")
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"b1 and b2 must be in [0, 1), got b1={b1!r}, b2={b2!r}")
    if int(grad_accum_steps) != grad_accum_steps or grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be an integer >= 1, "
                         f"got grad_accum_steps={grad_accum_steps!r}")
    tx = optax.chain(
        optax.clip_by_global_norm(float(clip_norm)),
        optax.scale_by_radam(b1=b1, b2=b2),
        optax.add_decayed_weights(float(weight_decay), mask=weight_decay_mask),
        optax.scale_by_learning_rate(lr_schedule(lr, warmup_steps, total_steps, end_lr,
                                                 schedule)),
    )
    if grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(grad_accum_steps)).gradient_transformation()
    return tx
