"""The fused Pallas recurrence kernels against the scan reference (interpret mode on CPU; the
real Triton lowering on a GPU), their lowering to Triton for CUDA, and their compile by the
`triton` package to H100 machine code (no GPU needed)."""
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close, first_fast, random_recurrence_inputs
from pallas_kernels import sru_recurrence_pallas
from pallas_kernels import KernelOptions
from pallas_kernels.sru_recurrence import SM_COUNT, default_options
from srupp_jax.nn.recurrence import interpret_kernels, sru_recurrence

# (batch, length, k, d, skip, pad, dropout, reverse, kernel options)
CASES = [
    (2, 7, 3, 5, True, False, False, False, {}),
    (1, 1, 3, 1, True, False, False, False, {}),                   # length 1, batch 1, d 1
    (3, 1, 4, 6, True, True, True, True, dict(prefetch=2)),        # length 1 < prefetch
    (1, 9, 4, 33, True, True, False, False, dict(block_d=8, prefetch=2)),  # odd d, 5 blocks
    (2, 6, 3, 33, True, False, True, True, dict(block_d=16, prefetch=1)),  # odd d, reversed
    (4, 5, 3, 7, False, False, True, True, {}),                    # no skip term, dropout, reverse
    (2, 11, 3, 12, False, True, False, False, dict(block_d=4, prefetch=3)),  # no skip, padding
    (2, 12, 3, 17, True, True, True, False, dict(prefetch=4)),
    (2, 10, 4, 9, True, True, True, True, dict(block_d=8, num_warps=2)),
]
# bf16 inputs: a subset covering k = 3 with/without x, k = 4, both directions, masks.
BF16_CASES = [CASES[3], CASES[4], CASES[5]]

F32_RTOL = 1e-5
BF16_RTOL = 2e-2   # h, dU and dx are stored in bf16 (8 bits of mantissa) by both implementations


# Compile these small test programs with LLVM's optimisations off: the XLA:CPU backend
# optimisations, not the work, dominate this file's runtime (threefry for the random inputs, the
# interpreted Pallas grid loops). Same HLO, so the numbers compared are computed the same way.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@functools.lru_cache(maxsize=None)
def _input_maker(batch, length, k, d, skip, pad, dropout, dtype):
    """The shared helper as one jitted program per shape (compiled once per shape)."""
    return _jit(functools.partial(random_recurrence_inputs, batch=batch, length=length, k=k, d=d,
                                  skip=skip, pad=pad, dropout=dropout, dtype=dtype))


def _inputs(batch, length, k, d, skip, pad, dropout, reverse, dtype):
    """Random inputs (never zeros) for one case, as keyword arguments of sru_recurrence."""
    kw = _input_maker(batch, length, k, d, skip, pad, dropout, dtype)(1000 * k + 10 * length + d)
    return dict(kw, reverse=reverse)


def _diff_keys(kw):
    """The float inputs to differentiate: U, v, b and, where given, x, c0, mask_c."""
    return [n for n in ("U", "v", "b", "x", "c0", "mask_c") if kw.get(n) is not None]


def _run(fn, kw):
    """Outputs (h, c) and the gradients of a scalar loss with respect to every float input,
    from one jitted program (one compile per implementation and case)."""
    keys = _diff_keys(kw)

    def loss(*vals):  # depends on h and c nonlinearly, with a different weight per column
        h, c = fn(**dict(kw, **dict(zip(keys, vals))))
        value = (jnp.sum(jnp.sin(h.astype(jnp.float32)) * jnp.arange(1, h.shape[-1] + 1))
                 + jnp.sum(jnp.tanh(c)))
        return value, (h, c)

    grad_fn = jax.value_and_grad(loss, argnums=tuple(range(len(keys))), has_aux=True)
    (_, (h, c)), grads = _jit(grad_fn)(*[kw[n] for n in keys])
    return h, c, dict(zip(keys, grads))


def _scan(**kw):
    return sru_recurrence(**kw, impl="scan")


def _check(case, dtype, rtol):
    *shape_flags, opts = case
    kw = _inputs(*shape_flags, dtype)
    pallas = lambda **a: sru_recurrence_pallas(**a, **opts)
    h, c, g = _run(pallas, kw)
    h_ref, c_ref, g_ref = _run(_scan, kw)
    assert h.dtype == kw["U"].dtype and h.shape == h_ref.shape
    assert c.dtype == jnp.float32
    assert_close(h, h_ref, rtol, "h")
    assert_close(c, c_ref, rtol, "c")
    if "mask_pad" in kw:  # padded steps output exact zeros
        assert np.all(np.asarray(h, np.float32)[np.asarray(kw["mask_pad"])] == 0)
    for name in g_ref:
        assert g[name].dtype == g_ref[name].dtype, name
        assert_close(g[name], g_ref[name], rtol, f"grad {name}")


@pytest.mark.parametrize("case", first_fast(CASES, unpack=False),
                         ids=lambda c: "x".join(map(str, c[:4])))
def test_matches_scan_f32(case):
    _check(case, jnp.float32, F32_RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("case", BF16_CASES, ids=lambda c: "x".join(map(str, c[:4])))
def test_matches_scan_bf16(case):
    _check(case, jnp.bfloat16, BF16_RTOL)


def test_dispatch_from_sru_recurrence():
    """sru_recurrence(impl="pallas") runs this kernel (same numbers) and matches the scan; on
    a CPU only inside interpret_kernels() (else one clear error: a script's GPU call on a
    laptop would run interpreted, about 100x slower)."""
    kw = _inputs(2, 6, 3, 5, True, True, True, True, jnp.float32)
    with pytest.raises(ValueError, match="model.impl='pallas' is the GPU kernel and cannot run "
                       "on CPU; use one of auto \\(here scan\\), scan, assoc"):
        sru_recurrence(**kw, impl="pallas")
    with interpret_kernels():               # the explicit option the tests use
        h, c = sru_recurrence(**kw, impl="pallas")
    h_direct, c_direct = sru_recurrence_pallas(**kw)
    np.testing.assert_array_equal(h, h_direct)
    np.testing.assert_array_equal(c, c_direct)
    h_ref, c_ref = _scan(**kw)
    assert_close(h, h_ref, F32_RTOL, "h")
    assert_close(c, c_ref, F32_RTOL, "c")


@pytest.mark.slow
@pytest.mark.parametrize("opts", [dict(block_d=32), dict(block_d=8, num_warps=2),
                                  dict(block_d=32, num_warps=1)])
def test_blocking_does_not_change_one_bit(opts):
    """block_d and num_warps change which program computes a column, not one bit of h, c or a
    gradient."""
    kw = _inputs(2, 5, 4, 20, True, True, True, True, jnp.float32)
    h, c, g = _run(functools.partial(sru_recurrence_pallas, block_d=4, prefetch=0), kw)
    h2, c2, g2 = _run(functools.partial(sru_recurrence_pallas, prefetch=0, **opts), kw)
    for name, a, b in [("h", h, h2), ("c", c, c2)] + [(n, g[n], g2[n]) for n in g]:
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("length, prefetch", [(5, 1), (5, 7), (13, 2), (16, 4), (23, 4)])
def test_prefetch_chunks_equal_the_plain_loop(length, prefetch):
    """prefetch P unrolls the time loop in chunks of P (`_chunked_loop`): loop iterations of
    2P steps, then L mod 2P steps (fewer than P, or between P and 2P), clamped loads past the
    end unused (P = 7 > L = 5). Same arithmetic per step as the plain loop; the compiler fuses
    the unrolled steps differently (on CPU, XLA contracts other multiply-adds), so the results
    agree to float32 rounding rather than bit for bit."""
    kw = _inputs(2, length, 4, 20, True, True, True, True, jnp.float32)
    h, c, g = _run(functools.partial(sru_recurrence_pallas, prefetch=0), kw)
    h2, c2, g2 = _run(functools.partial(sru_recurrence_pallas, prefetch=prefetch), kw)
    for name, a, b in [("h", h, h2), ("c", c, c2)] + [(n, g[n], g2[n]) for n in g]:
        assert_close(b, a, F32_RTOL, name)


def test_default_options_per_shape():
    """One column per thread, chunks of 8 steps; 2 warps per program only past 32 warps per
    SM (Hopper's limit of resident programs)."""
    assert default_options(1, 5) == default_options(32, 4096) == KernelOptions(32, 1, 8)
    assert default_options(64, 4096) == KernelOptions(64, 2, 8)
    assert 32 * 4096 <= 32 * 32 * SM_COUNT < 64 * 4096


@pytest.mark.parametrize("opts, match", [
    (dict(block_d=0), "block_d=0; expected a positive power of two"),
    (dict(block_d=24), "block_d=24"),
    (dict(block_d=8.0), "block_d=8.0"),
    (dict(block_d=True), "block_d=True"),
    (dict(num_warps=3), "num_warps=3; expected a positive power of two"),
    (dict(prefetch=-1), "prefetch=-1; expected an int from 0 to 8"),
    (dict(prefetch=9), "prefetch=9"),
])
def test_bad_kernel_options(opts, match):
    kw = _inputs(1, 2, 3, 5, True, False, False, False, jnp.float32)
    with pytest.raises(ValueError, match=match):
        sru_recurrence_pallas(**kw, **opts)


@pytest.mark.slow
@pytest.mark.parametrize("opts, grid_y, num_warps", [
    ({}, 2, 1),                                         # d = 40: block_d 32, 1 warp
    (dict(block_d=16, num_warps=1, prefetch=4), 3, 1),
])
def test_lowers_to_triton_for_cuda(opts, grid_y, num_warps):
    """Without a GPU: forward and backward lower to Triton kernels for CUDA (Pallas' own
    lowering to Triton IR runs here; Triton's compile to PTX needs the GPU), with the grid and
    warps asked for."""
    kw = _inputs(3, 6, 3, 40, True, True, True, True, jnp.bfloat16)
    keys = _diff_keys(kw)

    def loss(*vals):
        h, c = sru_recurrence_pallas(**dict(kw, **dict(zip(keys, vals))), interpret=False,
                                     **opts)
        return jnp.sum(h.astype(jnp.float32)) + jnp.sum(c)

    args = [kw[n] for n in keys]
    text = jax.jit(jax.grad(loss, argnums=tuple(range(len(keys))))).trace(*args).lower(
        lowering_platforms=("cuda",)).as_text()
    calls = [line for line in text.splitlines() if "__gpu$xla.gpu.triton" in line]
    assert len(calls) == 2, text[:2000]
    for line, name in zip(calls, ("sru_recurrence_fwd", "sru_recurrence_bwd")):
        assert f'name = "{name}"' in line
        assert "grid_x = 3 : i32" in line and f"grid_y = {grid_y} : i32" in line
        assert f"num_warps = {num_warps} : i32" in line


@pytest.mark.slow
@pytest.mark.parametrize("opts, lead", [(dict(block_d=64, num_warps=2, prefetch=0), (0, 1)),
                                        (dict(block_d=32, num_warps=1, prefetch=4), (2, 4))])
def test_compiles_with_triton_for_h100(opts, lead):
    """Without a GPU: the `triton` package compiles the Triton IR that Pallas emits for both
    kernels down to sm_90 machine code, with no register spills (no local memory), and the
    SASS reads and writes global memory; in the time loop, a load's median lead (steps of
    arithmetic before the thread waits for it) is below 1 for the plain loop and at least 2
    in chunks of 4 (3 with triton 3.6.0), i.e. the chunks keep loads in flight.
    (benchmarks/kernel_resources.py reports every variant.) Skipped where `triton` is not
    installed, or cannot parse this jax's IR (version skew)."""
    pytest.importorskip("triton", reason="needs the triton package (requirements-test.txt)")
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import kernel_resources

    modules = kernel_resources.triton_modules(dtype=jnp.bfloat16, **opts)
    assert sorted(modules) == ["sru_recurrence_bwd", "sru_recurrence_fwd"]
    for name, ttir in modules.items():
        try:
            report = kernel_resources.compile_report(ttir, opts["num_warps"], arch=90)
        except RuntimeError as e:
            if "Parse MLIR file failed" in str(e):
                pytest.skip(f"this triton cannot parse jax {jax.__version__}'s Triton IR")
            raise
        assert report["local_bytes"] == 0 and report["stack"] == 0, (name, report)
        assert 0 < report["registers"] <= 255, (name, report)
        ops = report["global_ops"]
        assert any(k.startswith("LDG") for k in ops) and any(k.startswith("STG") for k in ops)
        assert lead[0] <= report["lead"][1] < lead[1], (name, report["lead"])
