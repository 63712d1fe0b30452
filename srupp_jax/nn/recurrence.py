"""The elementwise SRU recurrence (paper eq. 2-5) and its backends.

One public function, `sru_recurrence`, computes for every batch row and hidden unit

    f[t] = sigmoid(U_f[t] + v_f * c[t-1] + b_f)
    r[t] = sigmoid(U_r[t] + v_r * c[t-1] + b_r)
    c[t] = f[t] * c[t-1] + (1 - f[t]) * U_c[t]
    h[t] = x'[t] + (c[t] - x'[t]) * mask_c * r[t]     (= r c + (1 - r) x' when mask_c = 1)

with the details of the PyTorch package `sru` 3.0.0.dev6: `mask_c` is a dropout mask fixed over
time, padded steps keep `c[t] = c[t-1]` and output `h[t] = 0`, and the reverse direction runs the
same recurrence from the last step to the first.

Backends (`impl`):
  "scan"   `jax.lax.scan`, one step at a time: the exact reference.
  "assoc"  `jax.lax.associative_scan`. The c-recurrence is nonlinear in c when v != 0, so it is
           solved by Newton iterations over the whole sequence (DEER, Lim et al. 2023): each
           iteration linearises c[t] = F_t(c[t-1]) around the current guess (the derivative
           clipped to [-1, 1] so that no product of them overflows, see JACOBIAN_CLIP) and
           solves the resulting diagonal linear recurrence with one associative scan. With
           v = 0 the first iteration is exact. Gradients come from one reverse associative
           scan at the solution (custom_vjp), not from differentiating the iterations.
  "pallas" the fused GPU kernel in `pallas_kernels/` (Triton lowering; interpret mode on CPU).
  "pallas_tpu"  the fused TPU kernel in `pallas_kernels/` (Mosaic lowering; interpret mode on
           CPU).
  "auto"   `resolve_backend` per platform: "pallas_tpu" on a TPU; on a GPU, for training, the
           fastest of pallas, assoc and scan at the training shape, timed before the model is
           built (`fastest_backend`, `tasks.lm.measured_impl`), "pallas" elsewhere (eval,
           generate); "scan" on CPU (the faster there, see BENCHMARKS.md).

State, gates and the solve run in float32 whatever the input dtype; `h` comes back in U's dtype.
"""
from __future__ import annotations

import enum
import functools
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pallas_kernels import (
    KernelOptions,
    TPUKernelOptions,
    sru_recurrence_pallas,
    sru_recurrence_tpu,
)
from pallas_kernels.inputs import check_inputs

IMPLS = ("auto", "scan", "assoc", "pallas", "pallas_tpu")

# Newton stopping rule: stop once max |c_new - c_old| / (1 + |c_new|) <= NEWTON_TOL.
# Newton converges quadratically near the solution, so the iterate returned after an update of
# 1e-5 is at float32 rounding; tests hold it to the scan reference.
# Whatever the Jacobian, iteration i makes at least the first i steps exact, so the solve is
# exact after L iterations in exact arithmetic.
#
# JACOBIAN_CLIP: the update uses the derivative a[t] = dc[t]/dc[t-1] clipped to [-1, 1]
# (a quasi-Newton step). Any a gives the same fixed point, c[t] = F_t(c[t-1]), and keeps the
# first-i-steps-exact property; what clipping buys is that no product of a's in the associative
# scan can overflow. The exact a = f (1 + v (1 - f) (c[t-1] - U_c[t])) reaches about 1.9 far
# from the solution (the first iterate is c0 everywhere), and over a thousand steps its products
# overflowed to inf and then NaN in the columns where |a| > 1 persisted. Measured on the
# reference-init inputs of the benchmark (L = 1024-2048, 16K-4M columns): 290 to over 400
# iterations with the exact a (the NaN front recedes two steps per iteration), 11-14 clipped;
# unchanged (9-10, 112-136) on the inputs of tests/test_recurrence.py. Measured iteration counts
# are in BENCHMARKS.md; past the cap the solve falls back to the sequential scan with a warning.
NEWTON_TOL = 1e-5
NEWTON_MAX_ITERS = 128
JACOBIAN_CLIP = 1.0


class NewtonInfo(NamedTuple):
    """Diagnostics of one Newton solve: iterations used, last relative update, converged flag."""
    iterations: jax.Array
    error: jax.Array
    converged: jax.Array


# ----------------------------------------------------------------------------------------------
# One step, shared by every backend.
# ----------------------------------------------------------------------------------------------

def _c_step(c_prev, u_c, u_f, v_f, b_f, keep):
    """c[t] from c[t-1] (eq. 2 and 4); where `keep` is False (padding) c[t] = c[t-1]."""
    f = jax.nn.sigmoid(u_f + v_f * c_prev + b_f)
    c = u_c + (c_prev - u_c) * f
    return c if keep is None else jnp.where(keep, c, c_prev)


def _h_from_c(c, c_prev, u_r, v_r, b_r, x_skip, mask_c, keep):
    """h[t] (eq. 3 and 5) from c[t] and c[t-1]; zero where `keep` is False."""
    r = jax.nn.sigmoid(u_r + v_r * c_prev + b_r)
    g = r if mask_c is None else r * mask_c
    h = c * g if x_skip is None else x_skip + (c - x_skip) * g
    return h if keep is None else jnp.where(keep, h, 0.0)


def _shift(c, c0):
    """c[t-1] for every t, time-major: [c0, c[0], ..., c[L-2]]."""
    return jnp.concatenate([c0[None], c[:-1]], axis=0)


# ----------------------------------------------------------------------------------------------
# Solvers for the c sequence, time-major [L, B, d] float32.
# ----------------------------------------------------------------------------------------------

def _solve_scan(u_c, u_f, v_f, b_f, c0, keep):
    """The reference: one `lax.scan` step per time step."""
    def body(c_prev, xs):
        u_c_t, u_f_t, keep_t = xs
        c = _c_step(c_prev, u_c_t, u_f_t, v_f, b_f, keep_t)
        return c, c

    _, c = lax.scan(body, c0, (u_c, u_f, keep))
    return c


def _combine(first, second):
    """Compose two affine maps c -> a c + b (first applied first)."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def linear_recurrence(a, b, c0=None, reverse=False):
    """Solve c[t] = a[t] * c[t-1] + b[t] over axis 0 with one associative scan.

    a, b: [L, ...]; c0: initial state [...] (zero when None). With reverse=True the recurrence
    runs from the end: c[t] = a[t] * c[t+1] + b[t].
    """
    if c0 is not None:
        i = -1 if reverse else 0
        b = b.at[i].add(a[i] * c0)
    _, c = lax.associative_scan(_combine, (a, b), reverse=reverse, axis=0)
    return c


def _jacobian_diag(c_prev, u_c, u_f, v_f, b_f, keep):
    """F_t(c[t-1]) and its (diagonal) derivative dc[t]/dc[t-1], for all t at once."""
    step = functools.partial(_c_step, u_c=u_c, u_f=u_f, v_f=v_f, b_f=b_f, keep=keep)
    return jax.jvp(step, (c_prev,), (jnp.ones_like(c_prev),))


def _newton(u_c, u_f, v_f, b_f, c0, keep, tol, max_iters):
    """Newton (DEER) iterations for the c sequence. Returns (c, NewtonInfo)."""
    def update(c):
        c_prev = _shift(c, c0)
        fc, a = _jacobian_diag(c_prev, u_c, u_f, v_f, b_f, keep)
        a = jnp.clip(a, -JACOBIAN_CLIP, JACOBIAN_CLIP)
        return linear_recurrence(a, fc - a * c_prev, c0)

    def cond(state):
        i, _, err = state
        return (i < max_iters) & ~(err <= tol)   # NaN keeps iterating, then falls back

    def body(state):
        i, c, _ = state
        c_new = update(c)
        err = jnp.max(jnp.abs(c_new - c) / (1.0 + jnp.abs(c_new)))
        # max() may skip NaN (XLA:CPU does): a non-finite iterate is never converged.
        err = jnp.where(jnp.all(jnp.isfinite(c_new)), err, jnp.inf)
        return i + 1, c_new, err

    c_init = jnp.broadcast_to(c0, u_c.shape)
    init = (jnp.int32(0), c_init, jnp.float32(jnp.inf))
    iters, c, err = lax.while_loop(cond, body, init)
    converged = err <= tol  # False for NaN too
    return c, NewtonInfo(iters, err, converged)


def _warn_fallback(iters, err):
    warnings.warn(
        f"sru_recurrence(impl='assoc'): Newton did not converge (iterations={int(iters)}, "
        f"last relative update={float(err):.3g}); fell back to the sequential scan.",
        RuntimeWarning, stacklevel=2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _solve_assoc(u_c, u_f, v_f, b_f, c0, keep, tol, max_iters):
    """Newton solve with a visible fallback to the scan when it does not converge."""
    c, info = _newton(u_c, u_f, v_f, b_f, c0, keep, tol, max_iters)

    def fallback(_):
        jax.debug.callback(_warn_fallback, info.iterations, info.error)
        return _solve_scan(u_c, u_f, v_f, b_f, c0, keep)

    return lax.cond(info.converged, lambda c_: c_, fallback, c)


def _solve_assoc_fwd(u_c, u_f, v_f, b_f, c0, keep, tol, max_iters):
    c = _solve_assoc(u_c, u_f, v_f, b_f, c0, keep, tol, max_iters)
    return c, (u_c, u_f, v_f, b_f, c0, keep, c)


def _solve_assoc_bwd(tol, max_iters, res, g):
    """Adjoint at the solution: lam[t] = g[t] + a[t+1] lam[t+1], one reverse associative scan."""
    del tol, max_iters
    u_c, u_f, v_f, b_f, c0, keep, c = res
    c_prev = _shift(c, c0)
    _, a = _jacobian_diag(c_prev, u_c, u_f, v_f, b_f, keep)
    a_next = jnp.concatenate([a[1:], jnp.zeros_like(a[:1])], axis=0)
    lam = linear_recurrence(a_next, g, reverse=True)
    step = lambda cp, uc, uf, vf, bf: _c_step(cp, uc, uf, vf, bf, keep)
    _, vjp = jax.vjp(step, c_prev, u_c, u_f, v_f, b_f)
    d_c_prev, d_uc, d_uf, d_vf, d_bf = vjp(lam)
    d_keep = None if keep is None else jnp.zeros(keep.shape, jax.dtypes.float0)
    return d_uc, d_uf, d_vf, d_bf, d_c_prev[0], d_keep


_solve_assoc.defvjp(_solve_assoc_fwd, _solve_assoc_bwd)


# ----------------------------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------------------------

class Backend(enum.Enum):
    """How the recurrence runs (see the module docstring); "auto" resolves to one of these."""
    SCAN = "scan"
    ASSOC = "assoc"
    PALLAS = "pallas"
    PALLAS_TPU = "pallas_tpu"


# What "auto" is per platform (jax.default_backend()); scan on any other.
AUTO = {"tpu": Backend.PALLAS_TPU, "gpu": Backend.PALLAS}
# Where each kernel runs: compiled for its accelerator, or interpreted on CPU (exact but slow:
# how the tests check it). scan and assoc run everywhere.
KERNEL_PLATFORMS = {Backend.PALLAS: ("gpu", "cpu"), Backend.PALLAS_TPU: ("tpu", "cpu")}


def resolve_backend(impl, platform: str | None = None) -> Backend:
    """(impl, platform) -> the Backend that runs, the one resolution of `impl`: "auto" is
    pallas_tpu on a TPU, pallas on a GPU (training on a GPU replaces "auto" by the measured
    fastest first, `tasks.lm.measured_impl`), scan elsewhere. A kernel the platform cannot run is a
    ValueError naming model.impl. impl: a name of IMPLS or a Backend; platform: "cpu", "gpu" or
    "tpu" (None: jax.default_backend()). Models resolve it once, when they are built."""
    platform = platform or jax.default_backend()
    if not isinstance(impl, Backend):
        if impl not in IMPLS:
            raise ValueError(f"model.impl={impl!r}; expected one of {', '.join(IMPLS)}")
        impl = AUTO.get(platform, Backend.SCAN) if impl == "auto" else Backend(impl)
    if platform not in KERNEL_PLATFORMS.get(impl, (platform,)):
        runs_on = " or ".join(p.upper() for p in KERNEL_PLATFORMS[impl] if p != "cpu")
        auto = AUTO.get(platform, Backend.SCAN).value
        raise ValueError(f"model.impl={impl.value!r} is the {runs_on} kernel and cannot run on "
                         f"{platform.upper()}; use model.impl=auto (here {auto}) or scan")
    return impl


def default_impl() -> str:
    """The backend "auto" resolves to on the current default device."""
    return resolve_backend("auto").value


@functools.lru_cache(maxsize=None)
def fastest_backend(batch: int, length: int, d: int, k: int = 3, dtype: str = "bfloat16",
                    candidates: tuple[Backend, ...] | None = None, repeats: int = 3,
                    kernel: KernelOptions | None = None) -> tuple[Backend, dict[str, float]]:
    """The backend whose forward + backward is fastest at this shape on the default device,
    measured here and now: (backend, {name: milliseconds}).

    Candidates default to every backend that runs natively on the device: pallas (on a GPU)
    or pallas_tpu (on a TPU), assoc and scan; assoc and scan on CPU, where Pallas interprets
    its kernels. Each is compiled, run once, then timed `repeats` times on random inputs of
    [batch, length, k, d] (the median counts). What `impl="auto"` resolves to on a GPU
    (`tasks.lm.measured_impl`), so that it never picks a kernel slower than another on the device
    at hand. Cached per process and shape.
    """
    if candidates is None:
        native = AUTO.get(jax.default_backend())   # the device's own kernel, if it has one
        candidates = ((native,) if native else ()) + (Backend.ASSOC, Backend.SCAN)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    U = jax.random.normal(keys[0], (batch, length, k, d), dtype)
    v = jax.random.uniform(keys[1], (2, d), minval=-1.0, maxval=1.0)
    b = jax.random.normal(keys[2], (2, d))
    times = {}
    for backend in candidates:
        def loss(U, v, b, backend=backend):
            h, c = sru_recurrence(U, v, b, impl=backend, kernel=kernel)
            return jnp.sum(h.astype(jnp.float32)) + jnp.sum(c)
        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        jax.block_until_ready(step(U, v, b))
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(step(U, v, b))
            samples.append(1e3 * (time.perf_counter() - start))
        times[backend.value] = float(np.median(samples))
    return Backend(min(times, key=times.get)), times


def describe_backend(backend: Backend) -> str:
    """E.g. "pallas (GPU)": the backend and the device kind it runs on."""
    return f"{backend.value} ({jax.default_backend().upper()})"


def _time_major(U, x, mask_pad, reverse):
    """Split U into float32 time-major gate arrays [L, B, d], flipping time when reverse."""
    f32 = lambda a: jnp.swapaxes(a.astype(jnp.float32), 0, 1)
    flip = (lambda a: jnp.flip(a, 0)) if reverse else (lambda a: a)
    u = [flip(f32(U[:, :, i])) for i in range(U.shape[2])]
    x_skip = u[3] if len(u) == 4 else (None if x is None else flip(f32(x)))
    keep = None if mask_pad is None else flip(jnp.swapaxes(~mask_pad.astype(bool), 0, 1)[..., None])
    return u[0], u[1], u[2], x_skip, keep


def sru_recurrence(U, v, b, x=None, *, c0=None, mask_c=None, mask_pad=None, reverse=False,
                   impl="auto", kernel: KernelOptions | None = None,
                   tpu_kernel: TPUKernelOptions | None = None, tol=NEWTON_TOL,
                   max_iters=NEWTON_MAX_ITERS):
    """The elementwise SRU recurrence for one direction.

    Args:
      U: [batch, length, k, d], slices (candidate U_c, forget U_f, reset U_r[, skip x']).
      v: [2, d] peephole weights (v_f, v_r).
      b: [2, d] biases (b_f, b_r).
      x: [batch, length, d] skip term x' when k = 3; None for no skip term.
      c0: [batch, d] initial state (zeros when None).
      mask_c: [batch, d] dropout mask on the hidden path (already scaled by 1/(1-p)).
      mask_pad: [batch, length] bool, True at padded steps.
      reverse: run from the last step to the first (backward direction).
      impl: "auto" | "scan" | "assoc" | "pallas" | "pallas_tpu", or a Backend
        (`resolve_backend`).
      kernel: the GPU kernel's tuning options (impl "pallas"; None: its defaults).
      tpu_kernel: the TPU kernel's tuning options (impl "pallas_tpu"; None: its defaults).
      tol, max_iters: Newton stopping rule for impl="assoc".

    Returns:
      h: [batch, length, d] in U's dtype; c: [batch, d] float32, the state after the last
      processed step (the first step when reverse).
    """
    backend = resolve_backend(impl)
    check_inputs(U, v, b, x, c0, mask_c, mask_pad)
    if backend is Backend.PALLAS:
        return sru_recurrence_pallas(U, v, b, x, c0=c0, mask_c=mask_c, mask_pad=mask_pad,
                                     reverse=reverse, **(kernel or KernelOptions()).as_kwargs())
    if backend is Backend.PALLAS_TPU:
        return sru_recurrence_tpu(U, v, b, x, c0=c0, mask_c=mask_c, mask_pad=mask_pad,
                                  reverse=reverse,
                                  **(tpu_kernel or TPUKernelOptions()).as_kwargs())
    batch, _, _, d = U.shape
    v = v.astype(jnp.float32)
    b = b.astype(jnp.float32)
    c0 = jnp.zeros((batch, d), jnp.float32) if c0 is None else c0.astype(jnp.float32)
    mask_c = None if mask_c is None else mask_c.astype(jnp.float32)
    u_c, u_f, u_r, x_skip, keep = _time_major(U, x, mask_pad, reverse)

    if backend is Backend.SCAN:
        c = _solve_scan(u_c, u_f, v[0], b[0], c0, keep)
    else:
        c = _solve_assoc(u_c, u_f, v[0], b[0], c0, keep, float(tol), int(max_iters))
    h = _h_from_c(c, _shift(c, c0), u_r, v[1], b[1], x_skip, mask_c, keep)
    if reverse:
        h = jnp.flip(h, 0)
    return jnp.swapaxes(h, 0, 1).astype(U.dtype), c[-1]


def newton_info(U, v, b, *, c0=None, mask_pad=None, reverse=False, tol=NEWTON_TOL,
                max_iters=NEWTON_MAX_ITERS) -> NewtonInfo:
    """How the Newton solve of impl="assoc" went on these inputs (for tests and benchmarks)."""
    check_inputs(U, v, b, None, c0, None, mask_pad)
    batch, _, _, d = U.shape
    c0 = jnp.zeros((batch, d), jnp.float32) if c0 is None else c0.astype(jnp.float32)
    u_c, u_f, _, _, keep = _time_major(U, None, mask_pad, reverse)
    v = v.astype(jnp.float32)
    b = b.astype(jnp.float32)
    return _newton(u_c, u_f, v[0], b[0], c0, keep, float(tol), int(max_iters))[1]
