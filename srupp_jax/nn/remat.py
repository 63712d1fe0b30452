"""Gradient checkpointing of an SRU++ stack (`model.remat`): what the backward pass computes
again instead of keeping from the forward pass, trading compute for memory.

  "none"       every activation is kept (the paper's setting; the fastest)
  "layer"      each layer's input only; the whole layer runs again in the backward pass
               (nnx.remat: about one more forward pass of compute, the activations of one
               layer at a time)
  "attention"  everything but the attention scores and weights [batch, L, M + L] of each
               attention layer, which are computed again (jax.checkpoint around the attention
               core, `attention.SRUppAttention._attend`)

The losses and gradients are those without checkpointing (tests/test_remat.py); the memory
each saves is measured in BENCHMARKS.md.
"""
from __future__ import annotations

from flax import nnx

REMAT = ("none", "layer", "attention")


def check_remat(remat: str) -> str:
    """`remat` itself; ValueError naming model.remat when it is not one of REMAT."""
    if remat not in REMAT:
        raise ValueError(f"model.remat={remat!r}; expected one of {', '.join(REMAT)}")
    return remat


def _run_layer(layer, x, c0, mask_pad, memory, memory_mask_pad, attend):
    """One layer of a stack, its arguments positional (for nnx.remat)."""
    return layer(x, c0, mask_pad=mask_pad, memory=memory, memory_mask_pad=memory_mask_pad,
                 attend=attend)


def layer_runner(remat: str):
    """run(layer, x, c0, mask_pad, memory, memory_mask_pad, attend) -> (h, c): the layer
    itself, or under nnx.remat for remat == "layer"."""
    return nnx.remat(_run_layer) if remat == "layer" else _run_layer
