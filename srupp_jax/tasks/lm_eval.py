"""Evaluation of a language model: a whole split in segments, carrying the state, as the
paper's final evaluation (batch 1, eval.unroll segments, the previous eval.mem_len positions as
attention memory, the same-length mask) or batched for dev evaluations during training.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from srupp_jax.data.streams import Streams
from srupp_jax.models.base import split_for_eval
from srupp_jax.training import progress, sharding


def split_metrics(mean_nll: float, unit: str, prefix: str) -> dict[str, float]:
    """loss in nats plus BPC (bytes/characters) or perplexity (words)."""
    out = {f"{prefix}_loss": mean_nll}
    if unit == "word":
        out[f"{prefix}_ppl"] = math.exp(min(mean_nll, 700.0))
    else:
        out[f"{prefix}_bpc"] = mean_nll / math.log(2)
    return out


def make_eval_step(graphdef, same_length: bool):
    """jit-compiled (params, rest, carry, inputs, targets, weights) -> (sum of weights * nll,
    new carry)."""
    def step(params, rest, carry, inputs, targets, weights):
        model = nnx.merge(graphdef, params, rest)
        nll, carry = model.nll(inputs, targets, carry, same_length=same_length)
        return jnp.sum(nll * weights), carry

    return jax.jit(step)


def make_evaluator(model, config, mesh):
    """A function (params, rest, tokens, max_tokens=0, desc="") -> mean nll (nats) over
    `tokens` (or its first `max_tokens`), every target predicted once; the step compiles once
    per segment shape (full, the last partial one, the tail).

    B_e contiguous streams, segments of eval.unroll tokens, eval.mem_len tokens of attention
    memory carried across segments, the same-length mask when eval.same_length; the fewer
    than B_e tokens after the last stream are predicted last, continuing it (Streams). With
    eval.whole_windows only the targets of whole eval.unroll windows count (the reference's
    Billion Word evaluation drops the last partial window; with batch 1).
    """
    e = config.eval
    # Streams over devices (and hosts, each reading its own) when the batch divides the mesh;
    # otherwise (e.g. batch 1 on 8 devices) every process evaluates all streams replicated.
    shard = e.batch_size % mesh.devices.size == 0
    procs, index = (jax.process_count(), jax.process_index()) if shard else (1, 0)
    graphdef, _, _ = split_for_eval(model)
    step = make_eval_step(graphdef, e.same_length)

    def evaluate(params, rest, tokens: np.ndarray, max_tokens: int = 0,
                 desc: str = "") -> float:
        """desc: a progress bar of that name over the segments (progress.bar); "": lines
        only when it is slow."""
        if max_tokens:
            tokens = tokens[:max_tokens + 1]
        if e.whole_windows:
            tokens = tokens[:(len(tokens) - 1) // (e.unroll * e.batch_size) * e.unroll
                            * e.batch_size + 1]
        streams = Streams(tokens, e.batch_size // procs, e.unroll, num_processes=procs,
                          process_index=index)
        carry = model.init_state(e.batch_size, e.mem_len)
        if shard:
            carry = jax.device_put(carry, sharding.batch_shardings(mesh, carry))
        total = 0.0
        segments = -(-streams.stream_length // e.unroll) + bool(streams.dropped_tokens)
        batches = progress.bar(streams.eval_batches(),
                               desc if jax.process_index() == 0 else "", total=segments,
                               unit="segment", phase="eval.batch")
        for batch in batches:
            if shard:
                batch = [sharding.global_batch(a, mesh) for a in batch]
            s, carry = step(params, rest, carry, *batch)
            total += float(s)
        return total / (len(tokens) - 1)     # every target once (Streams.eval_batches)

    return evaluate
