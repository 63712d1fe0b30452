"""The linear layers, the feed-forward block and the layer norm that every model here shares.

  Linear          nnx.Linear computed as one 2-D product over the flattened leading axes
  linear(..)      a Linear with the reference's init (Xavier-uniform, no bias unless asked)
  norm(d)   nnx.LayerNorm with torch's epsilon, so converted models match
  Factorized      x W_1 W_2 (SRU's projection_size)
  PositionwiseFF  LN(x + W_2 relu(W_1 x)), the Transformer feed-forward sub-layer

Shapes: [..., d_in] -> [..., d_out]; parameters in float32, computed in `dtype` (Flax's
convention: None computes in the inputs' promoted dtype with the float32 parameters).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

LN_EPS = 1e-5  # torch.nn.LayerNorm's default, so converted models match.


def xavier_uniform(scale: float = 1.0):
    """Xavier/Glorot uniform init of a [fan_in, fan_out] matrix, optionally scaled."""
    base = jax.nn.initializers.glorot_uniform()
    return lambda key, shape, dtype=jnp.float32: scale * base(key, shape, dtype)


class Linear(nnx.Linear):
    """`nnx.Linear` applied to x [..., d_in] as one [N, d_in] x [d_in, d_out] product over the
    flattened leading axes (same parameters, same result). On XLA:CPU the weight gradient of
    the product over [batch, L, d_in] (a dot with two contracting axes) runs about 3x slower
    than over [batch * L, d_in] (BENCHMARKS.md, issue 22); every model's layers use this one."""

    def __call__(self, x):
        y = super().__call__(x.reshape(-1, x.shape[-1]))
        return y.reshape(*x.shape[:-1], y.shape[-1])


def linear(d_in: int, d_out: int, *, bias: bool = False, init=None, scale: float = 1.0,
           dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs) -> Linear:
    """A Linear [d_in -> d_out]: kernel from `init` (default Xavier-uniform times `scale`, as
    the reference's nn.Linear + its init), a zero bias only if `bias`."""
    return Linear(d_in, d_out, use_bias=bias, kernel_init=init or xavier_uniform(scale),
                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def norm(d: int, *, epsilon: float = LN_EPS, dtype=None, rngs: nnx.Rngs):
    """Layer norm over the last axis of size d (torch's epsilon unless given)."""
    return nnx.LayerNorm(d, epsilon=epsilon, dtype=dtype, rngs=rngs)


class Factorized(nnx.Module):
    """x W_1 W_2 with an inner dimension (SRU's `projection_size`, Figure 2b without norm)."""

    def __init__(self, d_in: int, out_features: int, d_proj: int, *, dtype=None,
                 rngs: nnx.Rngs):
        self.w_1 = linear(d_in, d_proj, dtype=dtype, rngs=rngs)
        self.w_2 = linear(d_proj, out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.w_2(self.w_1(x))


class PositionwiseFF(nnx.Module):
    """LN(x + dropout(W_2 dropout(relu(W_1 x + b_1)) + b_2)): [batch, L, d] -> same.

    Kernels from `init` (default N(0, 0.02), Transformer-XL's), zero biases."""

    def __init__(self, d_model: int, d_inner: int, *, dropout: float = 0.0, init=None,
                 dtype=None, rngs: nnx.Rngs):
        init = init or jax.nn.initializers.normal(stddev=0.02)
        self.w_1 = linear(d_model, d_inner, bias=True, init=init, dtype=dtype, rngs=rngs)
        self.w_2 = linear(d_inner, d_model, bias=True, init=init, dtype=dtype, rngs=rngs)
        self.layer_norm = norm(d_model, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        y = self.dropout(self.w_2(self.dropout(jax.nn.relu(self.w_1(x)))))
        return self.layer_norm(x + y)
