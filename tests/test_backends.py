"""A kernel never takes a run down: under impl="auto" a recurrence backend that fails to lower,
compile or match the scan is skipped with one warning line, the next one is taken, and the
choice and its reason are logged and written as metrics.jsonl's first row. On this CPU the
GPU kernel is made to fail (an injected lowering error) with jax.default_backend() answering
"gpu", so that "auto" considers it."""
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srupp_jax.nn import recurrence
from srupp_jax.nn.recurrence import Backend, fastest_backend


def _lowering_error(*args, **kwargs):
    raise RuntimeError("Triton lowering failed (injected): unsupported layout")


def _wrong_numbers(U, v, b, x=None, **kwargs):
    h, c = recurrence.sru_recurrence(U, v, b, x, impl="scan", **{
        k: kwargs[k] for k in ("c0", "mask_c", "mask_pad", "reverse")})
    return h * 1.5, c


@pytest.fixture
def on_a_gpu(monkeypatch):
    """jax.default_backend() says "gpu": "auto" considers the GPU kernel (here it runs the
    `sru_recurrence_pallas` the test puts in place)."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    fastest_backend.cache_clear()
    yield monkeypatch
    fastest_backend.cache_clear()


@pytest.mark.parametrize("kernel, why", [
    (_lowering_error, "RuntimeError: Triton lowering failed (injected): unsupported layout"),
    (_wrong_numbers, "h differs from scan by"),
])
def test_a_failing_kernel_is_skipped_with_the_reason(on_a_gpu, kernel, why):
    on_a_gpu.setattr(recurrence, "sru_recurrence_pallas", kernel)
    backend, times, skipped = fastest_backend(2, 7, 5, 3, "float32", repeats=1)
    assert set(skipped) == {"pallas"} and skipped["pallas"].startswith(why)
    assert set(times) == {"assoc", "scan"} and backend is Backend(min(times, key=times.get))
    first, times, skipped = fastest_backend(2, 7, 5, 3, "float32", timed=False)
    assert first is Backend.ASSOC and times == {} and set(skipped) == {"pallas"}


def test_every_backend_failing_leaves_the_scan(on_a_gpu):
    on_a_gpu.setattr(recurrence, "sru_recurrence_pallas", _lowering_error)
    backend, times, skipped = fastest_backend(2, 7, 5, 3, "float32",
                                              candidates=(Backend.PALLAS,))
    assert backend is Backend.SCAN and times == {} and set(skipped) == {"pallas"}


@pytest.mark.slow
def test_training_falls_back_and_records_why(on_a_gpu, tmp_path, caplog):
    """A run under impl="auto" whose GPU kernel fails to lower: one warning line naming the
    error, training goes on with a backend that works, and metrics.jsonl's first row says
    which and why."""
    from test_train import tiny_config
    from srupp_jax.programs import modes
    on_a_gpu.setattr(recurrence, "sru_recurrence_pallas", _lowering_error)
    config = tiny_config(steps=2, warmup_steps=1, eval_every=2, checkpoint_every=2)
    with caplog.at_level(logging.INFO):
        last = modes.train(config, str(tmp_path))
    assert last["status"] == "finished" and np.isfinite(last["train_loss"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "recurrence pallas skipped" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert any(r.getMessage().startswith("memory plan per device: ") for r in caplog.records), [r.getMessage()[:80] for r in caplog.records if "plan" in r.getMessage()]
    assert "RuntimeError: Triton lowering failed (injected)" in warned[0]
    first = json.loads(open(tmp_path / "metrics.jsonl").readline())
    assert first["split"] == "setup" and first["step"] == 0
    assert first["recurrence"] in ("assoc", "scan")
    assert first["recurrence_reason"].startswith("model.impl=auto on GPU at 4x16x16 float32: ")
    assert "pallas failed (RuntimeError: Triton lowering failed (injected)" in \
        first["recurrence_reason"]
    assert "setup_step" not in last and "recurrence" not in last    # not a metric


def test_the_gpu_kernel_in_a_script_on_a_cpu_is_one_clear_error():
    U = jnp.ones((1, 3, 3, 4))
    v = b = jnp.zeros((2, 4))
    with pytest.raises(ValueError, match=r"^model.impl='pallas' is the GPU kernel and cannot "
                                         r"run on CPU; use one of auto \(here scan\), scan, "
                                         r"assoc$"):
        recurrence.sru_recurrence(U, v, b, impl="pallas")
