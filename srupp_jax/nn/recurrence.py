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

import contextlib
import contextvars
import enum
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import (
    KernelOptions,
    TPUKernelOptions,
    sru_recurrence_pallas,
    sru_recurrence_tpu,
)
from pallas_kernels.inputs import check_inputs
from srupp_jax.nn.solvers import (  # noqa: F401  (re-exported: the recurrence's public names)
    JACOBIAN_CLIP,
    NEWTON_MAX_ITERS,
    NEWTON_TOL,
    NewtonInfo,
    _h_from_c,
    _newton,
    _shift,
    _solve_assoc,
    _solve_scan,
    linear_recurrence,
)

IMPLS = ("auto", "scan", "assoc", "pallas", "pallas_tpu")


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
# Where each kernel compiles; scan and assoc run everywhere. Elsewhere a kernel runs only in
# Pallas interpret mode, exact but about 100x slower, and only inside `interpret_kernels()`.
KERNEL_PLATFORMS = {Backend.PALLAS: ("gpu",), Backend.PALLAS_TPU: ("tpu",)}
_INTERPRET = contextvars.ContextVar("srupp_jax_interpret_kernels", default=False)


@contextlib.contextmanager
def interpret_kernels():
    """Within this block the Pallas kernels may run on a platform that cannot compile them (a
    CPU), in Pallas interpret mode: how the tests check them against the scan. Explicit, so
    that a GPU command copied to a laptop is an error instead of a run 100x slower."""
    token = _INTERPRET.set(True)
    try:
        yield
    finally:
        _INTERPRET.reset(token)


def runnable(platform: str) -> list:
    """The impl names that run on `platform` ("auto" first, with what it resolves to)."""
    return [f"auto (here {AUTO.get(platform, Backend.SCAN).value})"] + [
        b.value for b in Backend if platform in KERNEL_PLATFORMS.get(b, (platform,))]


def resolve_backend(impl, platform: str | None = None) -> Backend:
    """(impl, platform) -> the Backend that runs, the one resolution of `impl`: "auto" is
    pallas_tpu on a TPU, pallas on a GPU (training replaces "auto" there by the fastest backend
    that passes its check first, `tasks.base.measured_impl`), scan elsewhere. A kernel the
    platform cannot compile is a ValueError naming model.impl and the backends that run
    (inside `interpret_kernels()` it runs interpreted instead). impl: a name of IMPLS or a
    Backend; platform: "cpu", "gpu" or "tpu" (None: jax.default_backend()). Models resolve it
    once, when they are built."""
    platform = platform or jax.default_backend()
    if not isinstance(impl, Backend):
        if impl not in IMPLS:
            raise ValueError(f"model.impl={impl!r}; expected one of {', '.join(IMPLS)}")
        impl = AUTO.get(platform, Backend.SCAN) if impl == "auto" else Backend(impl)
    if platform not in KERNEL_PLATFORMS.get(impl, (platform,)) and not _INTERPRET.get():
        runs_on = " or ".join(p.upper() for p in KERNEL_PLATFORMS[impl])
        raise ValueError(f"model.impl={impl.value!r} is the {runs_on} kernel and cannot run on "
                         f"{platform.upper()}; use one of {', '.join(runnable(platform))}")
    return impl


def default_impl() -> str:
    """The backend "auto" resolves to on the current default device."""
    return resolve_backend("auto").value


def _grads(backend, U, v, b, kernel):
    """The compiled forward + backward of `backend` at these inputs: (h, c, dU, dv, db)."""
    def loss(U, v, b):
        h, c = sru_recurrence(U, v, b, impl=backend, kernel=kernel)
        return jnp.sum(jnp.sin(h.astype(jnp.float32))) + jnp.sum(jnp.tanh(c)), (h, c)

    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
    run = lambda: jax.block_until_ready(step(U, v, b))
    (dU, dv, db), (h, c) = run()
    return run, [np.asarray(a, np.float32) for a in (h, c, dU, dv, db)]


def _differs(got, want, dtype) -> str:
    """'' when each array of `got` is within the dtype's rounding of `want`, else what differs."""
    tol = 1e-3 if jnp.dtype(dtype) == jnp.float32 else 5e-2
    for name, g, w in zip(("h", "c", "dU", "dv", "db"), got, want):
        err = float(np.max(np.abs(g - w), initial=0.0)) / (1.0 + float(np.max(np.abs(w))))
        if not err <= tol:         # NaN fails too
            return f"{name} differs from scan by {err:.3g} (relative; tolerance {tol:g})"
    return ""


@functools.lru_cache(maxsize=None)
def fastest_backend(batch: int, length: int, d: int, k: int = 3, dtype: str = "bfloat16",
                    candidates: tuple[Backend, ...] | None = None, repeats: int = 3,
                    kernel: KernelOptions | None = None, timed: bool = True
                    ) -> tuple[Backend, dict[str, float], dict[str, str]]:
    """The backend whose forward + backward is fastest at this shape on the default device,
    measured here and now, among those that work: (backend, {name: milliseconds}, {name: why
    it was skipped}).

    Candidates default to every backend that runs natively on the device: pallas (on a GPU)
    or pallas_tpu (on a TPU), assoc and scan; assoc and scan on CPU. Each is compiled and run
    on random inputs of [batch, length, k, d] and its h, c and gradients compared with the
    scan's (the reference); one that fails to lower, compile or run (any exception) or differs
    from the scan is skipped, with the reason. The others are timed `repeats` times (the median
    counts), or with timed=False the first that works is taken untimed. What `impl="auto"`
    resolves to on a GPU or TPU (`tasks.base.measured_impl`), so that a kernel that does not
    work there never takes a run down, and one slower than another is never picked. Cached
    per process and shape.
    """
    if candidates is None:
        native = AUTO.get(jax.default_backend())   # the device's own kernel, if it has one
        candidates = ((native,) if native else ()) + (Backend.ASSOC, Backend.SCAN)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    U = jax.random.normal(keys[0], (batch, length, k, d), dtype)
    v = jax.random.uniform(keys[1], (2, d), minval=-1.0, maxval=1.0)
    b = jax.random.normal(keys[2], (2, d))
    _, want = _grads(Backend.SCAN, U, v, b, kernel)
    times, skipped = {}, {}
    for backend in candidates:
        try:
            run, got = _grads(backend, U, v, b, kernel)
            why = _differs(got, want, dtype)
        except Exception as e:     # noqa: BLE001  (lowering, Triton/Mosaic, CUDA: any of them)
            line = (str(e).strip().splitlines() or [""])[0][:300]
            why = f"{type(e).__name__}: {line}"
        if why:
            skipped[backend.value] = why
            continue
        if not timed:
            return backend, times, skipped
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append(1e3 * (time.perf_counter() - start))
        times[backend.value] = float(np.median(samples))
    if not times:
        return Backend.SCAN, times, skipped       # the reference itself ran above
    return Backend(min(times, key=times.get)), times, skipped


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
