"""Fused Pallas kernels (Triton lowering) for the elementwise SRU recurrence, forward and backward.

`sru_recurrence_pallas` has exactly the arguments, semantics and results of
`srupp_jax.nn.recurrence.sru_recurrence` (its reference is `impl="scan"`):

    f[t] = sigmoid(U_f[t] + v_f * c[t-1] + b_f)
    r[t] = sigmoid(U_r[t] + v_r * c[t-1] + b_r)
    c[t] = f[t] * c[t-1] + (1 - f[t]) * U_c[t]            (c[t] = c[t-1] at padded steps)
    h[t] = x'[t] + (c[t] - x'[t]) * mask_c * r[t]          (h[t] = 0 at padded steps)

Kernel design (one program per (batch row, block of `block_d` columns)):
  grid      (batch, cdiv(d, block_d)); block_d is a power of two (Triton block shapes must be),
            one column per thread by default; where block_d does not divide d, the columns past
            d in the last block are masked in every load and store. Options per shape:
            `default_options(batch, d)`.
  time      a `fori_loop` over the length inside the kernel, carrying c in float32; the reverse
            direction walks t = L-1 .. 0 by index arithmetic (no flipped copies). The kernel is
            bound by memory latency: B x d columns are only a few warps per SM, too few to hide
            a load's latency by switching warps, so each thread must keep many loads in flight.
            A step's loads do not depend on c, so the loop runs in chunks of `prefetch` = P
            steps, unrolled, whose loads are issued a whole chunk ahead of their use
            (`_chunked_loop`; in the sm_90 SASS at P = 8 a load gets a median 4.5-7 steps of
            arithmetic before the thread waits for it, against 0-1 in a plain loop).
            block_d and num_warps change speed only, prefetch also the float32 rounding (the
            unrolled steps compile differently); `benchmarks/gpu_recurrence.sh` sweeps them on
            a GPU and `benchmarks/kernel_resources.py` reports their registers and load lead
            without one.
  memory    the kernels get whole arrays and index them themselves: U[b, t, j, cols] for the
            k slices, so every load and store is one contiguous row of block_d elements.
  backward  a second kernel behind `jax.custom_vjp`, walking time in the opposite order with the
            adjoint dL/dc carried in float32. Saved for it: the inputs (already live) and the
            float32 state sequence c [batch, length, d]. The gates f and r are recomputed from
            c[t-1] and U (two sigmoids per step: cheaper than storing two more [B, L, d] float32
            arrays and reading them back), but c itself is saved because recomputing it would
            mean rerunning the sequential forward (or inverting the recurrence, which is
            unstable where f is near 1). The primal call (no gradient) does not write c.
  v, b      their gradients are sums over batch and time: each program accumulates its own
            (batch row, columns) partial over time in registers and writes it once to a
            [batch, 4, d] array (dv_f, dv_r, db_f, db_r); the batch sum is one `jnp.sum` outside
            (deterministic, no atomics).
  mask_c    its gradient (sum over time of dL/dh * (c - x') * r) is computed the same way; in
            practice it is a constant dropout mask. mask_pad gets no gradient.

State, gates and all gradients are float32 in registers whatever the input dtype; h, dU and dx
are stored in the dtype of U and x.

On CPU (or with interpret=True) the same kernels run in Pallas interpret mode; that is how the
tests check them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.inputs import check_inputs
from pallas_kernels.step import step, step_vjp

# ----------------------------------------------------------------------------------------------
# The one place that knows which Pallas version it talks to. jax 0.10 and 0.11 have masked
# loads and stores as `jax.experimental.pallas.triton.load(ref.at[idx], mask=, other=)` (and
# `.store`) and `triton.CompilerParams`; older releases (jax 0.4.x) had `pl.load(ref, idx, ...)`
# and `triton.TritonCompilerParams` (that branch is untested).
# ----------------------------------------------------------------------------------------------

def _index(idx):
    """Python int indices as int32 scalars (the interpret-mode discharge of jax 0.10 rejects
    plain Python ints here); slices (`pl.ds`) and traced indices pass through."""
    return tuple(np.int32(i) if isinstance(i, int) else i for i in idx)


try:
    from jax.experimental.pallas.triton import CompilerParams as _TritonParams
    from jax.experimental.pallas.triton import load as _triton_load
    from jax.experimental.pallas.triton import store as _triton_store

    def _load(ref, idx, mask=None, other=None):
        return _triton_load(ref.at[_index(idx)], mask=mask, other=None if mask is None else other)

    def _store(ref, idx, val, mask=None):
        _triton_store(ref.at[_index(idx)], val, mask=mask)

except ImportError:  # jax 0.4.x
    from jax.experimental.pallas.triton import TritonCompilerParams as _TritonParams

    def _load(ref, idx, mask=None, other=None):
        return pl.load(ref, _index(idx), mask=mask, other=None if mask is None else other)

    def _store(ref, idx, val, mask=None):
        pl.store(ref, _index(idx), val, mask=mask)


MAX_PREFETCH = 8         # P = 16: the sm_90 compile of the backward ran over 30 minutes
SM_COUNT = 132          # H100 SXM; only the defaults below use it


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """Tuning options of `sru_recurrence_pallas` (None: the per-shape default of
    `default_options`). They change speed and registers only, never a result beyond float32
    rounding. `config.model.kernel` in a config (0 there means None)."""
    block_d: Optional[int] = None
    num_warps: Optional[int] = None
    prefetch: Optional[int] = None

    def as_kwargs(self) -> dict:
        return dataclasses.asdict(self)


def default_options(batch: int, d: int) -> KernelOptions:
    """The options used for batch x d columns when none are given: one column per thread,
    chunks of 8 steps, 32 columns (1 warp) per program.

    The kernel is bound by memory latency, not bandwidth or arithmetic: B x d columns are at
    most a few warps per SM (8 x 3072 = 768 warps on 132 SMs), so what matters is how long each
    thread's loads are in flight before it waits for them (`prefetch`; 8 keeps every variant
    free of spills, BENCHMARKS.md) and that programs spread evenly over the SMs (1-warp
    programs). Past 32 warps per SM (B x d > 135,168), Hopper's limit of 32 resident programs
    per SM would run 1-warp programs in waves, so they get 2 warps. Starting points from that
    count, for the GPU sweep of `benchmarks/gpu_recurrence.sh` to confirm or replace.
    """
    num_warps = 2 if -(-batch * d // 32) > 32 * SM_COUNT else 1
    return KernelOptions(block_d=32 * num_warps, num_warps=num_warps, prefetch=8)


# ----------------------------------------------------------------------------------------------
# Kernels. Static configuration shared by both kernels.
# ----------------------------------------------------------------------------------------------

class _Config(NamedTuple):
    """Static configuration of both kernels (hashable: a nondiff argument of the custom_vjp)."""
    length: int
    d: int
    k: int              # 3 or 4 slices in U (4: the skip term is U's 4th slice)
    has_x: bool         # skip term given as a separate x input (k = 3)
    has_m: bool         # mask_c given
    has_pad: bool       # mask_pad given
    reverse: bool
    block_d: int
    num_warps: int
    prefetch: int       # steps whose loads are issued ahead of the step that uses them


def _columns(cfg):
    """This program's batch row, column slice and in-bounds column mask."""
    b = pl.program_id(0)
    col0 = pl.program_id(1) * cfg.block_d
    cols = pl.ds(col0, cfg.block_d)
    ok = (None if cfg.d % cfg.block_d == 0       # no mask: masked loads cost extra registers
          else col0 + jnp.arange(cfg.block_d, dtype=jnp.int32) < cfg.d)
    return b, cols, ok


def _time(cfg, s):
    """Time index of the s-th processed step (s = 0 .. L-1 in processing order)."""
    return cfg.length - 1 - s if cfg.reverse else s


def _split_inputs(cfg, refs):
    """Name the kernel's input refs: (U, x, v, b, c0, m, keep), absent ones None."""
    refs = list(refs)
    u_ref = refs.pop(0)
    x_ref = refs.pop(0) if cfg.has_x else None
    v_ref, b_ref, c0_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    m_ref = refs.pop(0) if cfg.has_m else None
    keep_ref = refs.pop(0) if cfg.has_pad else None
    return (u_ref, x_ref, v_ref, b_ref, c0_ref, m_ref, keep_ref), refs


def _common(cfg, in_refs):
    """What both kernels need: program position, parameters, c0, mask_c (loaded once) and a
    loader of the per-step inputs (U_c, U_f, U_r, x', keep) at time t, as float32."""
    u_ref, x_ref, v_ref, b_ref, c0_ref, m_ref, keep_ref = in_refs
    b, cols, ok = _columns(cfg)
    row = lambda ref, *idx: _load(ref, (*idx, cols), mask=ok, other=0.0).astype(jnp.float32)
    p = (row(v_ref, 0), row(v_ref, 1), row(b_ref, 0), row(b_ref, 1))
    c0 = row(c0_ref, b)
    m = None if m_ref is None else row(m_ref, b)

    def step_inputs(t):
        u = [row(u_ref, b, t, j) for j in range(cfg.k)]
        x = row(x_ref, b, t) if cfg.has_x else (u[3] if cfg.k == 4 else None)
        keep = None if keep_ref is None else _load(keep_ref, (b, t)) != 0
        return u[0], u[1], u[2], x, keep

    return b, cols, ok, p, c0, m, step_inputs


def _chunked_loop(cfg, load, body, carry):
    """carry = body(s, load(s), carry) for s = 0 .. L-1, with the loads of P = `cfg.prefetch`
    steps in flight while P other steps compute.

    A step's loads do not depend on the carried state, so they can be issued long before the
    step runs; what hides global-memory latency is how long a load is in flight before the
    thread waits for it. The steps are taken in chunks of P, unrolled, two chunks per loop
    iteration (buffers A and B):

        A = load(chunk 0)
        loop:  B = load(chunk 2i+1);  compute A;  A = load(chunk 2i+2);  compute B
        then the remaining L mod 2P steps, their loads all issued before they compute.

    Each buffer is loop-carried in place (A to A). The previous design carried P single steps
    and shifted them by one register each step; a register move waits for its load, so its
    SASS waited for each load one step after issuing it, whatever P. Here ptxas still
    interleaves the loads with the arithmetic, but a load is issued a median 4.5 (forward) and
    7 (backward) steps of arithmetic before its first wait at P = 8 (sm_90;
    `benchmarks/kernel_resources.py` reads the scoreboards of the SASS and reports it as
    `lead`). Loads past the end are clamped to step L-1 (valid, unused). P = 0 is the plain
    loop.
    """
    P, L = cfg.prefetch, cfg.length
    if P == 0:
        return lax.fori_loop(0, L, lambda s, c: body(s, load(s), c), carry)
    chunk = lambda s0: tuple(load(jnp.minimum(s0 + i, L - 1)) for i in range(P))

    def compute(s0, loaded, carry):
        for i, inputs in enumerate(loaded):
            carry = body(s0 + i, inputs, carry)
        return carry

    def pair(i, state):
        a, carry = state
        s0 = i * 2 * P
        b = chunk(s0 + P)
        carry = compute(s0, a, carry)
        a = chunk(s0 + 2 * P)
        return a, compute(s0 + P, b, carry)

    pairs = L // (2 * P)
    a, carry = lax.fori_loop(0, pairs, pair, (chunk(np.int32(0)), carry))
    s0 = pairs * 2 * P                        # a holds the loads of steps s0 .. s0+P-1
    rest = tuple(load(np.int32(s)) for s in range(s0 + P, L))
    return compute(np.int32(s0), a[:L - s0] + rest, carry)


def _forward_kernel(cfg, save_c, *refs):
    in_refs, out_refs = _split_inputs(cfg, refs)
    h_ref, c_last_ref = out_refs[:2]
    c_ref = out_refs[2] if save_c else None
    b, cols, ok, p, c0, m, step_inputs = _common(cfg, in_refs)

    def body(s, inputs, c_prev):
        t = _time(cfg, s)
        u_c, u_f, u_r, x, keep = inputs
        c, h = step(c_prev, u_c, u_f, u_r, x, m, keep, p)
        _store(h_ref, (b, t, cols), h.astype(h_ref.dtype), mask=ok)
        if c_ref is not None:
            _store(c_ref, (b, t, cols), c, mask=ok)
        return c

    c_last = _chunked_loop(cfg, lambda s: step_inputs(_time(cfg, s)), body, c0)
    _store(c_last_ref, (b, cols), c_last, mask=ok)


def _backward_kernel(cfg, *refs):
    in_refs, refs = _split_inputs(cfg, refs)
    c_ref, dh_ref, dc_last_ref = refs[:3]
    du_ref, rest = refs[3], refs[4:]
    dx_ref = rest.pop(0) if cfg.has_x else None
    dp_ref, dc0_ref = rest.pop(0), rest.pop(0)
    dm_ref = rest.pop(0) if cfg.has_m else None
    b, cols, ok, p, c0, m, step_inputs = _common(cfg, in_refs)
    L = cfg.length
    zeros = jnp.zeros((cfg.block_d,), jnp.float32)
    load_c = lambda t: _load(c_ref, (b, t, cols), mask=ok, other=0.0)

    def load(i):
        """Inputs of backward step i (processing step s = L-1-i): those of the forward step,
        dL/dh[t] and c[t-1] (c0 for the first processed step)."""
        s = L - 1 - i                                   # processing order, walked backwards
        t = _time(cfg, s)
        t_prev = _time(cfg, jnp.maximum(s - 1, 0))      # clamped; unused when s = 0
        c_prev = jnp.where(s > 0, load_c(t_prev), c0)
        dh = _load(dh_ref, (b, t, cols), mask=ok, other=0.0).astype(jnp.float32)
        return step_inputs(t), dh, c_prev

    def body(i, inputs, carry):
        dc, c, dv_f, dv_r, db_f, db_r, dm_acc = carry
        t = _time(cfg, L - 1 - i)
        (u_c, u_f, u_r, x, keep), dh, c_prev = inputs
        dc_prev, (du_c, du_f, du_r, dx, dm) = step_vjp(
            c_prev, c, u_c, u_f, u_r, x, m, keep, p, dh, dc)
        for j, du in enumerate((du_c, du_f, du_r)):
            _store(du_ref, (b, t, j, cols), du.astype(du_ref.dtype), mask=ok)
        if cfg.k == 4:
            _store(du_ref, (b, t, 3, cols), dx.astype(du_ref.dtype), mask=ok)
        elif dx_ref is not None:
            _store(dx_ref, (b, t, cols), dx.astype(dx_ref.dtype), mask=ok)
        dv_f = dv_f + du_f * c_prev
        dv_r = dv_r + du_r * c_prev
        db_f = db_f + du_f
        db_r = db_r + du_r
        if dm is not None:
            dm_acc = dm_acc + dm
        return dc_prev, c_prev, dv_f, dv_r, db_f, db_r, dm_acc

    dc_last = _load(dc_last_ref, (b, cols), mask=ok, other=0.0)
    c_last = load_c(_time(cfg, L - 1))
    init = (dc_last, c_last, zeros, zeros, zeros, zeros, zeros)
    dc0, _, dv_f, dv_r, db_f, db_r, dm_acc = _chunked_loop(cfg, load, body, init)
    for j, val in enumerate((dv_f, dv_r, db_f, db_r)):      # dp rows: dv_f, dv_r, db_f, db_r
        _store(dp_ref, (b, j, cols), val, mask=ok)
    _store(dc0_ref, (b, cols), dc0, mask=ok)
    if dm_ref is not None:
        _store(dm_ref, (b, cols), dm_acc, mask=ok)


# ----------------------------------------------------------------------------------------------
# pallas_call wrappers.
# ----------------------------------------------------------------------------------------------

def _call(kernel, cfg, batch, out_shape, interpret, args):
    """Run `kernel` over the (batch, column-block) grid with whole-array refs."""
    grid = (batch, pl.cdiv(cfg.d, cfg.block_d))
    whole = lambda a: pl.BlockSpec(a.shape, lambda i, j, n=a.ndim: (0,) * n)
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=grid,
        in_specs=[whole(a) for a in args],
        out_specs=[whole(o) for o in out_shape],
        interpret=interpret,
        compiler_params=None if interpret else _TritonParams(num_warps=cfg.num_warps),
        name=kernel.__name__,
    )(*args)


def _present(*arrays):
    return [a for a in arrays if a is not None]


def _forward(cfg, interpret, save_c, U, x, v, b, c0, m, keep):
    batch, length, _, d = U.shape
    out_shape = [jax.ShapeDtypeStruct((batch, length, d), U.dtype),
                 jax.ShapeDtypeStruct((batch, d), jnp.float32)]
    if save_c:
        out_shape.append(jax.ShapeDtypeStruct((batch, length, d), jnp.float32))
    kernel = functools.partial(_forward_kernel, cfg, save_c)
    kernel.__name__ = "sru_recurrence_fwd"
    return _call(kernel, cfg, batch, out_shape, interpret, _present(U, x, v, b, c0, m, keep))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recurrence(cfg, interpret, U, x, v, b, c0, m, keep):
    h, c_last = _forward(cfg, interpret, False, U, x, v, b, c0, m, keep)
    return h, c_last


def _recurrence_fwd(cfg, interpret, U, x, v, b, c0, m, keep):
    h, c_last, c = _forward(cfg, interpret, True, U, x, v, b, c0, m, keep)
    return (h, c_last), (U, x, v, b, c0, m, keep, c)


def _recurrence_bwd(cfg, interpret, res, cts):
    U, x, v, b, c0, m, keep, c = res
    dh, dc_last = cts
    batch, length, k, d = U.shape
    out_shape = [jax.ShapeDtypeStruct(U.shape, U.dtype)]
    if x is not None:
        out_shape.append(jax.ShapeDtypeStruct(x.shape, x.dtype))
    out_shape += [jax.ShapeDtypeStruct((batch, 4, d), jnp.float32),   # dv_f, dv_r, db_f, db_r
                  jax.ShapeDtypeStruct((batch, d), jnp.float32)]      # dc0
    if m is not None:
        out_shape.append(jax.ShapeDtypeStruct((batch, d), jnp.float32))
    kernel = functools.partial(_backward_kernel, cfg)
    kernel.__name__ = "sru_recurrence_bwd"
    args = _present(U, x, v, b, c0, m, keep) + [c, dh, dc_last.astype(jnp.float32)]
    outs = list(_call(kernel, cfg, batch, out_shape, interpret, args))
    dU = outs.pop(0)
    dx = outs.pop(0) if x is not None else None
    dp = jnp.sum(outs.pop(0), axis=0)          # the batch reduction, outside the kernel
    dc0 = outs.pop(0)
    dm = outs.pop(0) if m is not None else None
    return dU, dx, dp[0:2].astype(v.dtype), dp[2:4].astype(b.dtype), dc0, dm, None


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# ----------------------------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------------------------

def _check_int(name, value, ok, expected):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not ok(value):
        raise ValueError(f"{name}={value!r}; expected {expected}")
    return int(value)


def sru_recurrence_pallas(U, v, b, x=None, *, c0=None, mask_c=None, mask_pad=None,
                          reverse=False, interpret: Optional[bool] = None,
                          block_d: Optional[int] = None, num_warps: Optional[int] = None,
                          prefetch: Optional[int] = None):
    """The elementwise SRU recurrence as fused Pallas kernels (forward and backward).

    Same arguments and results as `srupp_jax.nn.recurrence.sru_recurrence` (see there), plus:
      interpret: run the kernels in Pallas interpret mode; None means interpret unless the
        default backend is "gpu".
      block_d: columns per program, a power of two.
      num_warps: warps per program, a power of two.
      prefetch: time steps per chunk of the time loop; the loads of one chunk are in flight
        while another computes (0: a plain loop; see `_chunked_loop`).
      None for any of the three: `default_options(batch, d)`. They change speed and registers,
      and results only by float32 rounding.

    Returns:
      h: [batch, length, d] in U's dtype; c: [batch, d] float32, the state after the last
      processed step (the first step when reverse).
    """
    check_inputs(U, v, b, x, c0, mask_c, mask_pad)
    batch, length, k, d = U.shape
    default = default_options(batch, d)
    power_of_two = lambda n: n >= 1 and not n & (n - 1)
    block_d = _check_int("block_d", default.block_d if block_d is None else block_d,
                         power_of_two, "a positive power of two (Triton block shapes must be)")
    num_warps = _check_int("num_warps", default.num_warps if num_warps is None else num_warps,
                           power_of_two, "a positive power of two")
    prefetch = _check_int("prefetch", default.prefetch if prefetch is None else prefetch,
                          lambda n: 0 <= n <= MAX_PREFETCH, f"an int from 0 to {MAX_PREFETCH}")
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    cfg = _Config(length, d, k, x is not None, mask_c is not None, mask_pad is not None,
                  bool(reverse), block_d, num_warps, prefetch)
    v = v.astype(jnp.float32)
    b = b.astype(jnp.float32)
    c0 = jnp.zeros((batch, d), jnp.float32) if c0 is None else c0.astype(jnp.float32)
    m = None if mask_c is None else mask_c.astype(jnp.float32)
    keep = None if mask_pad is None else (~mask_pad.astype(bool)).astype(jnp.int32)
    return _recurrence(cfg, bool(interpret), U, x, v, b, c0, m, keep)
