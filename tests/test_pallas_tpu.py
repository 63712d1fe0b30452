"""The Pallas TPU recurrence kernels against the scan reference (in the TPU-semantics interpreter
on CPU, `pltpu.InterpretParams`: scratch and unwritten outputs start as NaN, so a carry read
before it is written shows), their Mosaic lowering for TPU (jax.export with platforms=("tpu",),
which needs no TPU), their options, and the choice of backend per platform."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.pallas import tpu as pltpu

from helpers import assert_close, first_fast, random_recurrence_inputs
from pallas_kernels import TPUKernelOptions, sru_recurrence_tpu
from pallas_kernels.tpu_options import VMEM_LIMIT, VMEM_TARGET, default_tpu_options
from srupp_jax.nn.recurrence import Backend, interpret_kernels, resolve_backend, sru_recurrence

INTERPRET = pltpu.InterpretParams(uninitialized_memory="nan")

# (batch, length, k, d, skip, pad, dropout, reverse, kernel options)
CASES = [
    (2, 7, 3, 5, True, False, False, False, {}),                    # one chunk, d < 128
    (1, 1, 3, 1, True, False, False, False, {}),                    # length 1, batch 1, d 1
    (3, 1, 4, 6, True, True, True, True, {}),                       # length 1, k = 4, reversed
    (3, 9, 4, 130, True, True, True, True, dict(block_b=2, chunk=4)),  # pad B 3->4, L 9->12
    (2, 11, 3, 1100, True, True, False, False, dict(block_d=1024, chunk=3)),  # 2 column blocks
    (4, 5, 3, 7, False, False, True, True, dict(chunk=2)),          # no skip term, dropout
    (2, 10, 4, 9, True, True, True, False, dict(block_b=1, chunk=5)),  # chunk divides L
]
# bf16 inputs: (16, 128) tiles, so a column block is a multiple of 2048 columns.
BF16_CASES = [CASES[3], (1, 6, 3, 2100, True, True, False, True, dict(block_d=2048, chunk=4)),
              CASES[5]]

F32_RTOL = 1e-5
BF16_RTOL = 2e-2   # h, dU and dx are stored in bf16 (8 bits of mantissa) by both implementations

# The XLA:CPU optimisations, not the work, dominate the interpreted kernels' compile here.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _inputs(batch, length, k, d, skip, pad, dropout, reverse, dtype):
    kw = random_recurrence_inputs(1000 * k + 10 * length + d, batch, length, k, d, skip=skip,
                                  pad=pad, dropout=dropout, dtype=dtype)
    return dict(kw, reverse=reverse)


def _run(fn, kw):
    """(h, c) and the gradients of a scalar loss with respect to every float input."""
    keys = [n for n in ("U", "v", "b", "x", "c0", "mask_c") if kw.get(n) is not None]

    def loss(*vals):  # depends on h and c nonlinearly, with a different weight per column
        h, c = fn(**dict(kw, **dict(zip(keys, vals))))
        value = (jnp.sum(jnp.sin(h.astype(jnp.float32)) * jnp.arange(1, h.shape[-1] + 1))
                 + jnp.sum(jnp.tanh(c)))
        return value, (h, c)

    grad_fn = jax.value_and_grad(loss, argnums=tuple(range(len(keys))), has_aux=True)
    (_, (h, c)), grads = _jit(grad_fn)(*[kw[n] for n in keys])
    return h, c, dict(zip(keys, grads))


def _tpu(**opts):
    return lambda **kw: sru_recurrence_tpu(**kw, interpret=INTERPRET, **opts)


def _check(case, dtype, rtol):
    *shape_flags, opts = case
    kw = _inputs(*shape_flags, dtype)
    h, c, g = _run(_tpu(**opts), kw)
    h_ref, c_ref, g_ref = _run(lambda **a: sru_recurrence(**a, impl="scan"), kw)
    assert h.dtype == kw["U"].dtype and c.dtype == jnp.float32
    assert_close(h, h_ref, rtol, "h")
    assert_close(c, c_ref, rtol, "c")
    if "mask_pad" in kw:  # padded steps output exact zeros
        assert np.all(np.asarray(h, np.float32)[np.asarray(kw["mask_pad"])] == 0)
    assert set(g) == set(g_ref)
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


@pytest.mark.slow
def test_blocks_and_chunks_do_not_change_one_bit():
    """block_b, block_d and chunk decide which program and grid step compute a column's step
    (and how much padding there is), never one bit of h, c or a gradient."""
    kw = _inputs(3, 7, 4, 1030, True, True, True, True, jnp.float32)
    h, c, g = _run(_tpu(block_b=3, chunk=7), kw)
    for opts in (dict(block_b=1, chunk=1), dict(block_b=2, block_d=1024, chunk=3)):
        h2, c2, g2 = _run(_tpu(**opts), kw)
        for name, a, b in [("h", h, h2), ("c", c, c2)] + [(n, g[n], g2[n]) for n in g]:
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {opts}")


def test_dispatch_from_sru_recurrence():
    """sru_recurrence(impl="pallas_tpu") runs this kernel with its options (interpreted on
    CPU: interpret=None) and matches the scan."""
    kw = _inputs(2, 6, 3, 5, True, True, True, True, jnp.float32)
    with interpret_kernels():
        h, c = sru_recurrence(**kw, impl="pallas_tpu", tpu_kernel=TPUKernelOptions(chunk=4))
    h_direct, c_direct = sru_recurrence_tpu(**kw, chunk=4)
    np.testing.assert_array_equal(h, h_direct)
    np.testing.assert_array_equal(c, c_direct)
    h_ref, c_ref = sru_recurrence(**kw, impl="scan")
    assert_close(h, h_ref, F32_RTOL, "h")
    assert_close(c, c_ref, F32_RTOL, "c")


# ----------------------------------------------------------------------------------------------
# The Mosaic lowering: jax.export for TPU works on a CPU-only machine.
# ----------------------------------------------------------------------------------------------

PAPER = (8, 1024, 3072)     # per-device batch, unroll M, d of the paper's enwik8 model


def _export_grad(batch, length, d, k, dtype, skip, masks, reverse, **opts):
    """jax.export of jit(grad) of a loss through the kernel, for TPU (interpret=False)."""
    f = lambda shape, t=jnp.float32: jax.ShapeDtypeStruct(shape, t)
    args = dict(U=f((batch, length, k, d), dtype), v=f((2, d)), b=f((2, d)), c0=f((batch, d)))
    if skip and k == 3:
        args["x"] = f((batch, length, d), dtype)
    if masks:
        args.update(mask_c=f((batch, d)), mask_pad=f((batch, length), jnp.bool_))
    names = list(args)

    def loss(*vals):
        kw = dict(zip(names, vals))
        h, c = sru_recurrence_tpu(**kw, reverse=reverse, interpret=False, **opts)
        return jnp.sum(h.astype(jnp.float32)) + jnp.sum(c)

    floats = tuple(i for i, n in enumerate(names) if n != "mask_pad")
    return jax.export.export(jax.jit(jax.grad(loss, argnums=floats)), platforms=("tpu",))(
        *args.values())


@pytest.mark.parametrize("shape, k, dtype, skip, masks, reverse", [
    (PAPER, 3, jnp.bfloat16, True, False, False),   # the paper's LM layer, default options
    (PAPER, 4, jnp.float32, True, True, True),
    ((3, 37, 1100), 3, jnp.float32, False, True, False),   # padding of B, L and d
])
def test_lowers_for_tpu_forward_and_backward(shape, k, dtype, skip, masks, reverse):
    """jit(grad) through the kernel exports for TPU with one Mosaic call per kernel (forward
    with the saved state, backward), with the options the defaults pick; the export
    serialises. A kernel Mosaic cannot lower (a bad block shape, an unsupported primitive)
    fails here."""
    exported = _export_grad(*shape, k, dtype, skip, masks, reverse)
    text = exported.mlir_module()
    assert text.count("stablehlo.custom_call @tpu_custom_call") == 2
    assert re.findall(r'kernel_name = "(\w+)"', text) == ["sru_recurrence_tpu_fwd",
                                                          "sru_recurrence_tpu_bwd"]
    assert exported.platforms == ("tpu",) and len(exported.serialize()) > 0


def test_default_options_at_the_papers_shape():
    """bf16 (16, 128) tiles: all 3072 columns in one block, 2 of the 8 rows (6144 elements a
    step, 4 programs on the parallel axes), chunks of 16 steps (a divisor of 1024) within
    VMEM_TARGET; float32 halves the chunk."""
    batch, length, d = PAPER
    assert default_tpu_options(batch, length, d, 3, True, False, jnp.bfloat16) == \
        TPUKernelOptions(block_b=2, block_d=3072, chunk=16)
    assert default_tpu_options(batch, length, d, 3, True, False, jnp.float32) == \
        TPUKernelOptions(block_b=2, block_d=3072, chunk=8)
    # d past 4096: the multiple of 16 x 128 columns that pads the least (8192 = 2 x 4096).
    assert default_tpu_options(4, 512, 8192, dtype=jnp.bfloat16).block_d == 4096
    assert VMEM_TARGET < VMEM_LIMIT < 16 << 20


@pytest.mark.parametrize("opts, match", [
    (dict(block_d=100), r"block_d=100; expected a positive multiple of 128"),
    (dict(block_d=1152), r"block_d=1152; expected a multiple of 1024 \(8 x 128 tiles"),
    (dict(block_b=0), r"block_b=0; expected a positive integer"),
    (dict(chunk=2.5), r"chunk=2.5; expected a positive integer"),
    (dict(chunk=1024), r"block_b=2, block_d=3072, chunk=1024 need .* MiB of VMEM, more than "
                       r"the 12 MiB allowed"),
])
def test_bad_options_are_named(opts, match):
    U = jax.ShapeDtypeStruct((8, 1024, 3, 3072), jnp.float32)
    v = jax.ShapeDtypeStruct((2, 3072), jnp.float32)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(functools.partial(sru_recurrence_tpu, **opts), U, v, v)


# ----------------------------------------------------------------------------------------------
# Backends per platform.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl, platform, backend", [
    ("auto", "tpu", Backend.PALLAS_TPU), ("auto", "gpu", Backend.PALLAS),
    ("auto", "cpu", Backend.SCAN), ("pallas_tpu", "tpu", Backend.PALLAS_TPU),
    ("assoc", "tpu", Backend.ASSOC), (Backend.SCAN, "gpu", Backend.SCAN),
])
def test_resolve_backend_per_platform(impl, platform, backend):
    assert resolve_backend(impl, platform) is backend


@pytest.mark.parametrize("impl, backend", [("pallas_tpu", Backend.PALLAS_TPU),
                                           ("pallas", Backend.PALLAS)])
def test_a_kernel_on_a_cpu_runs_interpreted_only_when_asked(impl, backend):
    with pytest.raises(ValueError, match=f"model.impl='{impl}' .* cannot run on CPU"):
        resolve_backend(impl, "cpu")
    with interpret_kernels():
        assert resolve_backend(impl, "cpu") is backend


@pytest.mark.parametrize("impl, platform, match", [
    ("pallas", "tpu", r"model.impl='pallas' is the GPU kernel and cannot run on TPU; use one "
                      r"of auto \(here pallas_tpu\), scan, assoc, pallas_tpu$"),
    ("pallas_tpu", "gpu", r"model.impl='pallas_tpu' is the TPU kernel and cannot run on GPU; "
                          r"use one of auto \(here pallas\), scan, assoc, pallas$"),
    (Backend.PALLAS_TPU, "gpu", r"model.impl='pallas_tpu' is the TPU kernel"),
])
def test_a_kernel_the_platform_cannot_run_is_one_clear_error(impl, platform, match):
    with pytest.raises(ValueError, match=match):
        resolve_backend(impl, platform)


def test_models_take_the_tpu_kernel_on_a_tpu_with_the_configs_options(monkeypatch):
    """configs' model.tpu_kernel (0: the default) reaches the kernel through SRUppConfig and
    the layers; on a TPU impl="auto" builds the TPU kernel, and "pallas" fails at build."""
    import importlib
    from srupp_jax.nn import recurrence
    from srupp_jax.models.srupp_lm import SRUppConfig, SRUppLM
    config = importlib.import_module("configs.default").get_config()
    config.model.update(vocab_size=29, d=16, d_proj=4, num_layers=2, impl="pallas_tpu")
    config.model.tpu_kernel.update(chunk=3, block_b=0)
    model_config = SRUppConfig.from_config(config)
    assert model_config.tpu_kernel == TPUKernelOptions(chunk=3)
    seen = []
    real = recurrence.sru_recurrence_tpu

    def spy(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("block_b", "block_d", "chunk")})
        return real(*args, **kwargs)

    monkeypatch.setattr(recurrence, "sru_recurrence_tpu", spy)
    with recurrence.interpret_kernels():
        model = SRUppLM(model_config, rngs=nnx.Rngs(0))
        tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 5), 0, 29)
        nll, _ = model.nll(tokens, tokens)
    assert model.backend is Backend.PALLAS_TPU and bool(jnp.isfinite(nll).all())
    assert seen and all(s == dict(block_b=None, block_d=None, chunk=3) for s in seen)
    with pytest.raises(ValueError, match="model.tpu_kernel.chunk=1.5; expected an integer"):
        SRUppConfig(29, 16, 4, tpu_kernel=TPUKernelOptions(chunk=1.5))

    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert SRUppLM(SRUppConfig(29, 16, 4, num_layers=2), rngs=nnx.Rngs(0)).backend is \
        Backend.PALLAS_TPU
    with pytest.raises(ValueError, match="model.impl='pallas' is the GPU kernel"):
        SRUppLM(SRUppConfig(29, 16, 4, num_layers=2, impl="pallas"), rngs=nnx.Rngs(0))
