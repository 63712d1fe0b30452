"""The recurrence backends against the scan reference, forward and gradients."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from helpers import assert_close, first_fast, numpy_recurrence, random_recurrence_inputs
from srupp_jax.nn.recurrence import linear_recurrence, newton_info, sru_recurrence

# (batch, length, k, d, skip, pad, dropout, reverse)
CASES = [
    (2, 7, 3, 5, True, False, False, False),
    (1, 1, 3, 1, True, False, False, False),      # length 1, batch 1, d 1
    (3, 1, 4, 6, True, True, True, True),         # length 1 reversed with masks
    (1, 13, 4, 33, True, True, False, False),     # odd d, projected skip term
    (4, 9, 3, 7, False, False, True, True),       # no skip term, dropout, reverse
    (2, 64, 3, 17, True, True, True, False),
    (2, 160, 4, 9, True, True, True, True),
]


def _loss(impl, kw, keys):
    """A scalar that depends on h and c nonlinearly, as a function of the float inputs."""
    def f(*vals):
        args = dict(kw, **dict(zip(keys, vals)))
        h, c = sru_recurrence(**args, impl=impl)
        return (jnp.sum(jnp.sin(h.astype(jnp.float32)) * jnp.arange(h.shape[-1]))
                + jnp.sum(jnp.tanh(c)))
    return f


def _float_keys(kw):
    return [k for k in ("U", "v", "b", "x", "c0") if kw.get(k) is not None]


@pytest.mark.parametrize("batch,length,k,d,skip,pad,dropout,reverse", first_fast(CASES))
def test_assoc_matches_scan(batch, length, k, d, skip, pad, dropout, reverse):
    kw = random_recurrence_inputs(length * 7 + d, batch, length, k, d, skip=skip, pad=pad,
                                  dropout=dropout)
    kw["reverse"] = reverse
    h_ref, c_ref = jax.jit(lambda: sru_recurrence(**kw, impl="scan"))()
    h, c = jax.jit(lambda: sru_recurrence(**kw, impl="assoc"))()
    assert_close(h, h_ref, 2e-6, "h")
    assert_close(c, c_ref, 2e-6, "c")
    if pad:  # padded steps output zeros
        assert np.all(np.asarray(h)[np.asarray(kw["mask_pad"])] == 0)

    keys = _float_keys(kw)
    vals = [kw[k_] for k_ in keys]
    g_ref = jax.jit(jax.grad(_loss("scan", kw, keys), argnums=tuple(range(len(keys)))))(*vals)
    g = jax.jit(jax.grad(_loss("assoc", kw, keys), argnums=tuple(range(len(keys)))))(*vals)
    for name, a, e in zip(keys, g, g_ref):
        assert_close(a, e, 5e-6, f"grad {name}")


def test_scan_gradients_are_exact():
    """The reference's own gradients against finite differences (float64 would be ideal;
    float32 finite differences with modest eps are what CPU jax offers by default)."""
    kw = random_recurrence_inputs(3, 2, 5, 3, 4, pad=True, dropout=True)
    keys = _float_keys(kw)
    f = _loss("scan", kw, keys)
    check_grads(f, [kw[k] for k in keys], order=1, modes=["rev"], eps=1e-3, atol=2e-2,
                rtol=2e-2)


@pytest.mark.slow
def test_bfloat16_inputs_compute_in_float32():
    kw = random_recurrence_inputs(5, 2, 40, 4, 12, pad=True, dtype=jnp.bfloat16)
    h, c = sru_recurrence(**kw, impl="assoc")
    assert h.dtype == jnp.bfloat16 and c.dtype == jnp.float32
    # The same bf16 values upcast by hand give the same result: state is float32 throughout.
    kw32 = dict(kw, U=kw["U"].astype(jnp.float32))
    h32, c32 = sru_recurrence(**kw32, impl="scan")
    assert_close(c, c32, 2e-6, "c")
    assert_close(h.astype(jnp.float32), h32.astype(jnp.bfloat16).astype(jnp.float32), 1e-2)
    g = jax.grad(lambda U: jnp.sum(sru_recurrence(**dict(kw, U=U), impl="assoc")[0]
                                   .astype(jnp.float32)))(kw["U"])
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


@pytest.mark.parametrize("name,scales,length,max_iters", [
    # trained-like: moderate pre-activations, the reference's v init (measured: 10)
    ("trained-like", dict(u_scale=1.0, b_scale=1.0, v_scale=1.0), 1024, 16),
    # saturated gates: large pre-activations push f and r to 0/1 (measured: 136)
    ("saturated", dict(u_scale=8.0, b_scale=4.0, v_scale=1.0), 512, 160),
    # |v| = 0.999 everywhere and a large state (measured: 112)
    ("v-near-1", dict(u_scale=3.0, b_scale=0.5, v_scale=1.0), 512, 128),
])
@pytest.mark.slow
def test_newton_converges(name, scales, length, max_iters):
    kw = random_recurrence_inputs(11, 4, length, 3, 16, **scales)
    if name == "v-near-1":
        kw["v"] = jnp.where(kw["v"] < 0, -0.999, 0.999)
    info = newton_info(kw["U"], kw["v"], kw["b"], c0=kw["c0"], max_iters=max_iters)
    assert bool(info.converged), (name, info)
    # Saturated gates make the problem ill-conditioned: float32 `scan` itself is ~4e-5 off the
    # float64 solution there. Hold assoc to float32 rounding of *this* problem: no worse than
    # 3x the sequential float32 error (and 2e-6 where that is tiny).
    h64, _ = numpy_recurrence(**kw)
    scale = np.max(np.abs(h64))
    err = lambda h: np.max(np.abs(np.asarray(h, np.float64) - h64)) / scale
    err_scan = err(sru_recurrence(**kw, impl="scan")[0])
    err_assoc = err(sru_recurrence(**kw, impl="assoc", max_iters=max_iters)[0])
    assert err_assoc <= max(2e-6, 3 * err_scan), (name, err_assoc, err_scan)


@pytest.mark.parametrize("case", CASES[:5])
def test_scan_matches_the_equations(case):
    """The scan reference against the recurrence written out in float64 NumPy."""
    batch, length, k, d, skip, pad, dropout, reverse = case
    kw = random_recurrence_inputs(1 + d, batch, length, k, d, skip=skip, pad=pad,
                                  dropout=dropout)
    h, c = sru_recurrence(**kw, reverse=reverse, impl="scan")
    h64, c64 = numpy_recurrence(**kw, reverse=reverse)
    assert_close(h, h64, 1e-6, "h")
    assert_close(c, c64, 1e-6, "c")


def test_newton_first_iterates_do_not_overflow():
    """Far from the solution the exact derivative dc[t]/dc[t-1] is about 2 in every step here
    (first iterate c = c0 = 6, f = sigmoid(v c0 + b_f) = 1/2 at v = 1, b_f = -6): its products
    over 300 steps overflow float32, and exact Newton needed 141 iterations (NaN receding two
    steps per iteration; 600 steps never converged). With the derivative clipped to [-1, 1] the
    solve takes 5, without a fallback, and values and gradients equal the scan's."""
    kw = random_recurrence_inputs(0, 2, 300, 3, 8)
    kw["c0"] = jnp.full_like(kw["c0"], 6.0)
    kw["v"] = kw["v"].at[0].set(1.0)
    kw["b"] = kw["b"].at[0].set(-6.0)
    info = newton_info(kw["U"], kw["v"], kw["b"], c0=kw["c0"])
    assert bool(info.converged) and int(info.iterations) <= 10, info
    keys = _float_keys(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a fallback to the scan would warn
        out = jax.value_and_grad(_loss("assoc", kw, keys), argnums=tuple(range(len(keys))))(
            *[kw[k] for k in keys])
    ref = jax.value_and_grad(_loss("scan", kw, keys), argnums=tuple(range(len(keys))))(
        *[kw[k] for k in keys])
    assert np.isfinite(float(out[0]))
    assert_close(out[0], ref[0], 1e-5, "loss")
    for name, g, g_ref in zip(keys, out[1], ref[1]):
        assert_close(g, g_ref, 1e-5, f"grad {name}")


def test_v_zero_is_exact_in_one_update():
    kw = random_recurrence_inputs(2, 3, 200, 3, 8)
    kw["v"] = jnp.zeros_like(kw["v"])
    info = newton_info(kw["U"], kw["v"], kw["b"], c0=kw["c0"])
    # first update reaches the exact solution, the second confirms a zero change
    assert int(info.iterations) <= 2 and float(info.error) <= 1e-6


def test_nonconvergence_falls_back_visibly():
    kw = random_recurrence_inputs(4, 2, 50, 3, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h, _ = sru_recurrence(**kw, impl="assoc", max_iters=1)
        h = np.asarray(h)
    assert any("fell back to the sequential scan" in str(w.message) for w in caught)
    h_ref, _ = sru_recurrence(**kw, impl="scan")
    assert_close(h, h_ref, 1e-6, "fallback result")


def test_linear_recurrence_both_directions():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (9, 3)), rng.normal(size=(9, 3))
    c0 = rng.normal(size=3)
    fwd = np.asarray(linear_recurrence(jnp.asarray(a), jnp.asarray(b), jnp.asarray(c0)))
    bwd = np.asarray(linear_recurrence(jnp.asarray(a), jnp.asarray(b), jnp.asarray(c0),
                                       reverse=True))
    c, ref_f = c0, []
    for t in range(9):
        c = a[t] * c + b[t]
        ref_f.append(c)
    c, ref_b = c0, [None] * 9
    for t in reversed(range(9)):
        c = a[t] * c + b[t]
        ref_b[t] = c
    np.testing.assert_allclose(fwd, np.stack(ref_f), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bwd, np.stack(ref_b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad,match", [
    (dict(U=jnp.ones((2, 3, 5, 4))), r"U has shape \(2, 3, 5, 4\)"),
    (dict(v=jnp.ones((3, 4))), r"v has shape \(3, 4\); expected \(2, 4\)"),
    (dict(x=jnp.ones((2, 3, 5))), r"x has shape \(2, 3, 5\); expected \(2, 3, 4\)"),
    (dict(c0=jnp.ones((4,))), r"c0 has shape \(4,\); expected \(2, 4\)"),
    (dict(mask_pad=jnp.ones((3, 2), bool)), r"mask_pad has shape \(3, 2\)"),
    (dict(impl="cuda"), r"impl='cuda'; expected one of"),
])
def test_bad_inputs_are_named(bad, match):
    kw = dict(U=jnp.ones((2, 3, 3, 4)) * 0.1, v=jnp.ones((2, 4)), b=jnp.ones((2, 4)),
              x=jnp.ones((2, 3, 4)))
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        sru_recurrence(**kw)


def test_fastest_backend_times_each_candidate_and_picks_the_fastest():
    """What impl="auto" uses on a GPU: forward + backward of every candidate timed at the
    shape, the smallest time wins (here on CPU: assoc and scan, pallas is interpreted)."""
    from srupp_jax.nn.recurrence import Backend, fastest_backend
    backend, times, skipped = fastest_backend(2, 9, 5, 3, "float32", repeats=2)
    assert skipped == {}
    assert set(times) == {"assoc", "scan"} and all(t > 0 for t in times.values())
    assert backend is Backend(min(times, key=times.get))
