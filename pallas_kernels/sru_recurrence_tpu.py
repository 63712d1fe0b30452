"""Fused Pallas TPU (Mosaic) kernels for the elementwise SRU recurrence, forward and backward.

`sru_recurrence_tpu` has the arguments, semantics and results of `sru_recurrence_pallas` (the
GPU kernel) and of `srupp_jax.nn.recurrence.sru_recurrence` (whose reference is impl="scan"); the
step and its adjoint are `pallas_kernels.step`, shared with the GPU kernel.

  layout    the wrapper pads and reshapes, never transposes: U [B, L, k, d] becomes
            [B', L', k, n, 128], x, h and the saved state [B, L, d] become [B', L', n, 128], and
            v, b, c0, mask_c [.., d] become [.., n, 128], with n = d' / 128. Columns are in the
            128 lanes and groups of 128 columns in sublanes, so one time step of a block is
            [block_b, block_d / 128, 128]: whole (8, 128) float32 vregs when block_d / 128 is a
            multiple of 8 (16 for bfloat16 arrays, whose tiles are (16, 128)).
  grid      (batch blocks, column blocks, time chunks). The first two are "parallel" (a
            megacore chip shares them between its TensorCores); time is "arbitrary", the
            sequential innermost axis. For each chunk of `chunk` steps the Pallas pipeline copies
            that chunk of every [B, L, ...] array into VMEM (double-buffered: the next chunk
            arrives while this one computes); the kernel walks its steps with a fori_loop and
            carries the state c from chunk to chunk in VMEM scratch. The reverse direction (and
            the backward kernel) walks chunks backwards by the index maps and steps backwards by
            index arithmetic: no flipped copies.
  padding   B, d and L are padded to whole blocks in the wrapper (d to a multiple of 128).
            Padded time steps are identity steps: U_c = 0 and U_f = +inf give f = 1, so
            c[t] = 0 + (c[t-1] - 0) * 1 = c[t-1] exactly, and every gradient through such a
            step is exactly zero (1 - f = 0, f (1 - f) = 0), so the kernels carry no masks.
            mask_pad is applied the same way (its steps become identity steps, h is zeroed there
            outside the kernel), which costs one elementwise pass over U when it is given.
  backward  a second kernel behind `jax.custom_vjp` walks time backwards, carrying dL/dc in
            VMEM scratch. The forward saves c[t-1] of every step (float32 [B', L', n, 128]), the
            gates are recomputed (`step.step_vjp`); dv, db (and dmask_c) are summed over time in
            scratch and written once per (batch block, column block), the batch sum is one
            jnp.sum outside (deterministic).
  options   block_b, block_d, chunk (`tpu_options`): checked, defaulted per shape
            (`default_tpu_options`), and their VMEM (`vmem_bytes`: every pipelined block twice,
            for double buffering, plus scratch, at the tiled size) held under VMEM_LIMIT.

State, gates and all gradients are float32 whatever the input dtype; h, dU and dx are stored in
the dtype of U and x. Off TPU (interpret=None) the kernels run in Pallas interpret mode;
interpret=False lowers them for TPU, which `jax.export(..., platforms=("tpu",))` does on any
machine (tests/test_pallas_tpu.py checks both).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.inputs import check_inputs
from pallas_kernels.step import step, step_vjp
from pallas_kernels.tpu_options import LANES, TPUKernelOptions, tpu_config

# ----------------------------------------------------------------------------------------------
# Kernels. Refs hold blocks: U [block_b, chunk, k, tiles, 128], x, h, the saved c[t-1], dh
# [block_b, chunk, tiles, 128], c0, mask_c, c_last [block_b, tiles, 128], v and b stacked
# [4, tiles, 128] (v_f, v_r, b_f, b_r).
# ----------------------------------------------------------------------------------------------

def _flip(n, i, flip):
    """i-th of n in processing order: n - 1 - i when walking backwards."""
    return n - 1 - i if flip else i


def _step_inputs(cfg, u_ref, x_ref, t):
    """U_c, U_f, U_r and x' of local time step t, float32 [block_b, tiles, 128]."""
    u = [u_ref[:, t, j].astype(jnp.float32) for j in range(cfg.k)]
    x = x_ref[:, t].astype(jnp.float32) if cfg.has_x else (u[3] if cfg.k == 4 else None)
    return u[0], u[1], u[2], x


def _forward_kernel(cfg, save, *refs):
    refs = list(refs)
    u_ref = refs.pop(0)
    x_ref = refs.pop(0) if cfg.has_x else None
    p_ref, c0_ref = refs.pop(0), refs.pop(0)
    m_ref = refs.pop(0) if cfg.has_m else None
    h_ref, c_last_ref = refs.pop(0), refs.pop(0)
    cs_ref = refs.pop(0) if save else None
    (c_scr,) = refs
    g = pl.program_id(2)

    @pl.when(g == 0)
    def _():
        c_scr[...] = c0_ref[...]

    p = tuple(p_ref[i] for i in range(4))
    m = None if m_ref is None else m_ref[...]

    def body(i, c_prev):
        t = _flip(cfg.chunk, i, cfg.reverse)
        c, h = step(c_prev, *_step_inputs(cfg, u_ref, x_ref, t), m, None, p)
        h_ref[:, t] = h.astype(h_ref.dtype)
        if cs_ref is not None:
            cs_ref[:, t] = c_prev
        return c

    c_scr[...] = lax.fori_loop(0, cfg.chunk, body, c_scr[...])

    @pl.when(g == cfg.chunks - 1)
    def _():
        c_last_ref[...] = c_scr[...]


def _backward_kernel(cfg, *refs):
    refs = list(refs)
    u_ref = refs.pop(0)
    x_ref = refs.pop(0) if cfg.has_x else None
    p_ref = refs.pop(0)
    m_ref = refs.pop(0) if cfg.has_m else None
    cs_ref, dh_ref, c_last_ref, dc_last_ref, du_ref = refs[:5]
    refs = refs[5:]
    dx_ref = refs.pop(0) if cfg.has_x else None
    dp_ref, dc0_ref = refs.pop(0), refs.pop(0)
    dm_ref = refs.pop(0) if cfg.has_m else None
    carry_scr, acc_scr = refs          # (dL/dc, c) and the sums (dv_f, dv_r, db_f, db_r[, dm])
    g = pl.program_id(2)

    @pl.when(g == 0)
    def _():
        carry_scr[0] = dc_last_ref[...]
        carry_scr[1] = c_last_ref[...]
        acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

    p = tuple(p_ref[i] for i in range(4))
    m = None if m_ref is None else m_ref[...]

    def body(i, state):
        dc, c, sums = state[0], state[1], state[2:]
        t = _flip(cfg.chunk, i, not cfg.reverse)
        u_c, u_f, u_r, x = _step_inputs(cfg, u_ref, x_ref, t)
        c_prev = cs_ref[:, t]
        dh = dh_ref[:, t].astype(jnp.float32)
        dc_prev, (du_c, du_f, du_r, dx, dm) = step_vjp(c_prev, c, u_c, u_f, u_r, x, m, None, p,
                                                       dh, dc)
        for j, du in enumerate((du_c, du_f, du_r, dx)[:cfg.k]):
            du_ref[:, t, j] = du.astype(du_ref.dtype)
        if dx_ref is not None:
            dx_ref[:, t] = dx.astype(dx_ref.dtype)
        terms = (du_f * c_prev, du_r * c_prev, du_f, du_r, dm)[:acc_scr.shape[0]]
        return (dc_prev, c_prev) + tuple(s + d for s, d in zip(sums, terms))

    init = (carry_scr[0], carry_scr[1]) + tuple(acc_scr[j] for j in range(acc_scr.shape[0]))
    state = lax.fori_loop(0, cfg.chunk, body, init)
    carry_scr[0] = state[0]
    carry_scr[1] = state[1]
    for j, s in enumerate(state[2:]):
        acc_scr[j] = s

    @pl.when(g == cfg.chunks - 1)
    def _():
        for j in range(4):
            dp_ref[:, j] = acc_scr[j]
        dc0_ref[...] = carry_scr[0]
        if dm_ref is not None:
            dm_ref[...] = acc_scr[4]


# ----------------------------------------------------------------------------------------------
# pallas_call wrappers on the blocked layout.
# ----------------------------------------------------------------------------------------------

def _specs(cfg, backward):
    """BlockSpecs: a maker for [B', L', (k,) n, 128] arrays, [B', n, 128] rows, stacked v and b."""
    bb, tiles, T = cfg.block_b, cfg.tiles, cfg.chunk
    block_t = lambda g: _flip(cfg.chunks, g, cfg.reverse != backward)

    def seq(with_k=False):
        mid = (cfg.k,) if with_k else ()
        return pl.BlockSpec((bb, T, *mid, tiles, LANES),
                            lambda i, j, g: (i, block_t(g), *(0,) * len(mid), j, 0))

    row = pl.BlockSpec((bb, tiles, LANES), lambda i, j, g: (i, j, 0))
    params = pl.BlockSpec((4, tiles, LANES), lambda i, j, g: (0, j, 0))
    return seq, row, params


def _call(kernel, name, cfg, shape, in_specs, out_specs, out_shape, scratch, args):
    batch_p, n_p = shape
    return pl.pallas_call(
        kernel, out_shape=out_shape,
        grid=(batch_p // cfg.block_b, n_p // cfg.tiles, cfg.chunks),
        in_specs=in_specs, out_specs=out_specs, scratch_shapes=scratch,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")),
        interpret=cfg.interpret, name=name)(*args)


def _present(*arrays):
    return [a for a in arrays if a is not None]


def _forward(cfg, save, U, x, p, c0, m):
    batch_p, length_p, _, n_p, _ = U.shape
    seq, row, params = _specs(cfg, backward=False)
    seq_shape = lambda dtype: jax.ShapeDtypeStruct((batch_p, length_p, n_p, LANES), dtype)
    out_shape = [seq_shape(U.dtype), jax.ShapeDtypeStruct(c0.shape, jnp.float32)]
    out_specs = [seq(), row]
    if save:
        out_shape.append(seq_shape(jnp.float32))
        out_specs.append(seq())
    in_specs = _present(seq(True), seq() if x is not None else None, params, row,
                        row if m is not None else None)
    return _call(functools.partial(_forward_kernel, cfg, save), "sru_recurrence_tpu_fwd", cfg,
                 (batch_p, n_p), in_specs, out_specs, out_shape,
                 [pltpu.VMEM((cfg.block_b, cfg.tiles, LANES), jnp.float32)],
                 _present(U, x, p, c0, m))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _recurrence(cfg, U, x, p, c0, m):
    h, c_last = _forward(cfg, False, U, x, p, c0, m)
    return h, c_last


def _recurrence_fwd(cfg, U, x, p, c0, m):
    h, c_last, cs = _forward(cfg, True, U, x, p, c0, m)
    return (h, c_last), (U, x, p, m, cs, c_last)


def _recurrence_bwd(cfg, res, cts):
    U, x, p, m, cs, c_last = res
    dh, dc_last = cts
    batch_p, _, _, n_p, _ = U.shape
    seq, row, params = _specs(cfg, backward=True)
    in_specs = _present(seq(True), seq() if x is not None else None, params,
                        row if m is not None else None) + [seq(), seq(), row, row]
    out_shape = _present(jax.ShapeDtypeStruct(U.shape, U.dtype),
                         None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype),
                         jax.ShapeDtypeStruct((batch_p, 4, n_p, LANES), jnp.float32),
                         jax.ShapeDtypeStruct(c_last.shape, jnp.float32),
                         None if m is None else jax.ShapeDtypeStruct(m.shape, jnp.float32))
    dp_spec = pl.BlockSpec((cfg.block_b, 4, cfg.tiles, LANES), lambda i, j, g: (i, 0, j, 0))
    out_specs = _present(seq(True), seq() if x is not None else None, dp_spec, row,
                         row if m is not None else None)
    rows = (cfg.block_b, cfg.tiles, LANES)
    scratch = [pltpu.VMEM((2,) + rows, jnp.float32),
               pltpu.VMEM((4 + cfg.has_m,) + rows, jnp.float32)]
    args = _present(U, x, p, m) + [cs, dh.astype(U.dtype), c_last, dc_last.astype(jnp.float32)]
    outs = list(_call(functools.partial(_backward_kernel, cfg), "sru_recurrence_tpu_bwd", cfg,
                      (batch_p, n_p), in_specs, out_specs, out_shape, scratch, args))
    dU = outs.pop(0)
    dx = outs.pop(0) if x is not None else None
    dp = jnp.sum(outs.pop(0), axis=0)          # the batch reduction, outside the kernel
    dc0 = outs.pop(0)
    dm = outs.pop(0) if m is not None else None
    return dU, dx, dp, dc0, dm


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# ----------------------------------------------------------------------------------------------
# Public API: padding to whole blocks and back (plain JAX, differentiated by JAX).
# ----------------------------------------------------------------------------------------------

def _blocked(a, pads, fill=0):
    """Pad `a` ([..., d]; `pads` per axis, d's last) and split d into [n, 128] lane tiles."""
    if any(p != (0, 0) for p in pads):
        a = jnp.pad(a, pads, constant_values=fill)
    return a.reshape(*a.shape[:-1], a.shape[-1] // LANES, LANES)


def sru_recurrence_tpu(U, v, b, x=None, *, c0=None, mask_c=None, mask_pad=None, reverse=False,
                       interpret=None, block_b: Optional[int] = None,
                       block_d: Optional[int] = None, chunk: Optional[int] = None):
    """The elementwise SRU recurrence as fused Pallas TPU kernels (forward and backward).

    Same arguments and results as `srupp_jax.nn.recurrence.sru_recurrence` (see there), plus:
      interpret: True, False or a `pltpu.InterpretParams` (the TPU-semantics interpreter);
        None means interpret unless the default backend is "tpu".
      block_b: batch rows per program; block_d: columns per program, a multiple of 128 (of
        8 x 128 for float32, 16 x 128 for bfloat16, unless it covers d); chunk: time steps per
        grid step, staged in VMEM (at most L). None for any: `default_tpu_options`. They change
        speed and VMEM, never a result; options needing more than VMEM_LIMIT are refused.

    Returns:
      h: [batch, length, d] in U's dtype; c: [batch, d] float32, the state after the last
      processed step (the first step when reverse).
    """
    check_inputs(U, v, b, x, c0, mask_c, mask_pad)
    batch, length, k, d = U.shape
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    cfg = tpu_config(batch, length, d, k, mask_c is not None, reverse, U.dtype,
                  None if x is None else x.dtype, interpret, block_b, block_d, chunk)
    extra_b = -(-batch // cfg.block_b) * cfg.block_b - batch
    extra_d = -(-d // (cfg.tiles * LANES)) * cfg.tiles * LANES - d
    extra_t = cfg.chunks * cfg.chunk - length
    time = (extra_t, 0) if reverse else (0, extra_t)   # padded steps are processed last
    rows, cols = (0, extra_b), (0, extra_d)

    Up = _blocked(U, (rows, time, (0, 0), cols))
    if mask_pad is not None or extra_t:                  # padded steps become identity steps
        pad = jnp.zeros((batch, length), bool) if mask_pad is None else mask_pad.astype(bool)
        pad = jnp.pad(pad, (rows, time), constant_values=True)
        identity = jnp.array([0.0, jnp.inf, 0.0, 0.0][:k], U.dtype)[:, None, None]  # U_c, U_f
        Up = jnp.where(pad[:, :, None, None, None] & (jnp.arange(k) < 2)[:, None, None],
                       identity, Up)
    xp = None if x is None else _blocked(x, (rows, time, cols))
    p = _blocked(jnp.concatenate([v, b]).astype(jnp.float32), ((0, 0), cols))
    c0 = jnp.zeros((batch, d), jnp.float32) if c0 is None else c0.astype(jnp.float32)
    c0p = _blocked(c0, (rows, cols))
    mp = None if mask_c is None else _blocked(mask_c.astype(jnp.float32), (rows, cols))

    h, c_last = _recurrence(cfg, Up, xp, p, c0p, mp)
    h = h.reshape(h.shape[0], h.shape[1], -1)[:batch, time[0]:time[0] + length, :d]
    if mask_pad is not None:
        h = jnp.where(mask_pad.astype(bool)[..., None], jnp.zeros((), h.dtype), h)
    return h, c_last.reshape(c_last.shape[0], -1)[:batch, :d]
