"""One step of the SRU recurrence and its derivative, shared by the kernels (the GPU one in
`sru_recurrence`, the TPU one in `sru_recurrence_tpu`), forward and backward:

    f = sigmoid(U_f + v_f c[t-1] + b_f),  r = sigmoid(U_r + v_r c[t-1] + b_r)
    c[t] = U_c + (c[t-1] - U_c) f,        h[t] = x' + (c[t] - x') mask_c r

All arguments are float32 arrays of one shape (the GPU kernel: [block_d] vectors; the TPU
kernel: [block_b, block_d / 128, 128] tiles), or broadcastable to it (the parameters);
`m` (mask_c), `x` (skip term x') and `keep` (not padded, a scalar bool) may be None.
"""
import jax
import jax.numpy as jnp


def gates(c_prev, u_f, u_r, p):
    """f[t], r[t] from c[t-1]; p = (v_f, v_r, b_f, b_r)."""
    v_f, v_r, b_f, b_r = p
    f = jax.nn.sigmoid(u_f + v_f * c_prev + b_f)
    r = jax.nn.sigmoid(u_r + v_r * c_prev + b_r)
    return f, r


def step(c_prev, u_c, u_f, u_r, x, m, keep, p):
    """(c[t], h[t]) from c[t-1]."""
    f, r = gates(c_prev, u_f, u_r, p)
    c = u_c + (c_prev - u_c) * f
    g = r if m is None else r * m
    h = c * g if x is None else x + (c - x) * g
    if keep is not None:
        c = jnp.where(keep, c, c_prev)
        h = jnp.where(keep, h, 0.0)
    return c, h


def step_vjp(c_prev, c, u_c, u_f, u_r, x, m, keep, p, dh, dc):
    """Adjoint of `step` at (c[t-1], c[t]): dh = dL/dh[t], dc = dL/dc[t] from later steps.

    Returns dL/dc[t-1] and the local gradients (du_c, du_f, du_r, dx, dm) where dx, dm are None
    when x, m are. The gates are recomputed from c[t-1]: two sigmoids per step are cheaper
    than storing f and r in the forward and reading them back.
    """
    v_f, v_r, _, _ = p
    f, r = gates(c_prev, u_f, u_r, p)
    if keep is not None:
        dh = jnp.where(keep, dh, 0.0)
    g = r if m is None else r * m
    c_minus_x = c if x is None else c - x
    dc = dc + dh * g                               # h depends on c[t] through c * g
    dr = dh * c_minus_x if m is None else dh * c_minus_x * m
    du_r = dr * r * (1.0 - r)
    du_c = dc * (1.0 - f)
    du_f = dc * (c_prev - u_c) * f * (1.0 - f)
    if keep is not None:                           # padded step: c[t] = c[t-1], no gate path
        du_c = jnp.where(keep, du_c, 0.0)
        du_f = jnp.where(keep, du_f, 0.0)
        dc_prev = jnp.where(keep, dc * f, dc)
    else:
        dc_prev = dc * f
    dc_prev = dc_prev + du_f * v_f + du_r * v_r
    dx = None if x is None else dh * (1.0 - g)
    dm = None if m is None else dh * c_minus_x * r
    return dc_prev, (du_c, du_f, du_r, dx, dm)
