"""Solvers of the SRU c-recurrence over time-major float32 arrays [L, B, d], and the step
functions every backend of `recurrence.sru_recurrence` shares (paper eq. 2-5):

  _solve_scan    the reference: one `lax.scan` step per time step
  _solve_assoc   Newton (DEER, Lim et al. 2023) iterations, each a diagonal linear recurrence
                 solved by one associative scan (`linear_recurrence`); gradients from one
                 reverse associative scan at the solution (custom_vjp); falls back to the
                 scan with a warning past NEWTON_MAX_ITERS
"""
from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

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
