"""float16 training with dynamic loss scaling (train.compute_dtype = "float16"): the loss is
scaled and the gradients unscaled (jmp), a step whose gradients overflow is skipped and the
scale halved, the scale grows again after train.loss_scale_period good steps; it is logged,
checkpointed (resume stays bit-exact), and training follows the float32 curve."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from srupp_jax.programs import modes
from srupp_jax.training.steps import initial_loss_scale, make_train_step
from test_train import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Toy(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.full((3, 2), 0.5, jnp.float32))

    def __call__(self, x):
        return x.astype(jnp.float16) @ self.w[...].astype(jnp.float16)


def toy_loss(model, carry, x, factor):
    """A float16 forward; `factor` multiplies the loss: 1e38 overflows its gradient."""
    out = model(x).astype(jnp.float32)
    return jnp.sum(out ** 2) * factor[0], jnp.float32(x.shape[0]), carry


def test_an_injected_overflow_is_skipped_the_scale_halved_and_training_recovers():
    graphdef, params, rest = nnx.split(Toy(), nnx.Param, ...)
    tx = optax.sgd(0.1)
    step = make_train_step(graphdef, tx, toy_loss, loss_scale_period=2)
    opt, scale = tx.init(params), initial_loss_scale(2.0 ** 10)
    x = jnp.arange(12.0).reshape(4, 3) / 10
    seen = []
    for factor in (1.0, 1e38, 1.0, 1.0, 1.0):        # the second step overflows
        before = jax.tree.map(np.asarray, params)
        params, rest, opt, _, scale, m = step(params, rest, opt, None, scale, x,
                                              jnp.float32([factor]))
        moved = not np.array_equal(np.asarray(params["w"][...]), before["w"][...])
        seen.append((bool(m.applied), bool(m.overflow), float(m.loss_scale), moved))
    assert seen == [(True, False, 1024.0, True),      # counter 1 of 2
                    (False, True, 512.0, False),      # skipped: params as they were, halved
                    (True, False, 512.0, True),
                    (True, False, 1024.0, True),      # 2 good steps in a row: doubled
                    (True, False, 1024.0, True)]


def _rows(workdir, split="train"):
    return [r for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
            if r["split"] == split]


@pytest.mark.slow
def test_float16_resume_is_bit_exact_with_the_scale_checkpointed(tmp_path):
    """A run stopped and resumed equals a straight one: losses and loss scales (which the
    large initial scale makes move: overflow steps at the start, halving it)."""
    def config(**kw):
        c = tiny_config(compute_dtype="float16", steps=8, warmup_steps=2, **kw)
        c.train.loss_scale, c.train.loss_scale_period = 2.0 ** 20, 3
        return c

    modes.train(config(), str(tmp_path / "straight"))
    modes.train(config(stop_at=4), str(tmp_path / "resumed"))
    modes.train(config(), str(tmp_path / "resumed"))
    straight, resumed = _rows(tmp_path / "straight"), _rows(tmp_path / "resumed")
    key = lambda rows: [(r["step"], r["train_loss"], r["loss_scale"]) for r in rows]
    assert key(straight) == key(resumed)
    scales = [r["loss_scale"] for r in straight]
    assert scales[0] < 2.0 ** 20 and len(set(scales)) > 1


def _main(workdir, *args):
    sizes = ["--config.model.d=32", "--config.model.d_proj=8", "--config.model.num_layers=2",
             "--config.data.max_bytes=400000", "--config.train.batch_size=8",
             "--config.train.unroll=32", "--config.train.steps=200",
             "--config.train.warmup_steps=20", "--config.train.lr=0.01", "--config.train.log_every=10",
             "--config.train.eval_every=200", "--config.train.checkpoint_every=200",
             "--config.eval.max_tokens=4000", "--config.eval.unroll=64",
             "--config.eval.mem_len=64"]
    out = subprocess.run([sys.executable, "main.py", "--config=configs/default.py",
                          f"--workdir={workdir}", *sizes, *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_float16_follows_the_float32_curve_through_main(tmp_path):
    """The default model at small size, 200 steps through main.py in float32 and in float16
    with remat per layer (the T4 / V100 setting): the curves agree within 0.05 nats at every
    logged step, and the float16 run logs its loss scale."""
    _main(tmp_path / "f32")
    out = _main(tmp_path / "f16", "--config.train.compute_dtype=float16",
                "--config.model.remat=layer")
    f32, f16 = _rows(tmp_path / "f32"), _rows(tmp_path / "f16")
    assert [r["step"] for r in f32] == [r["step"] for r in f16]
    a = np.array([r["train_loss"] for r in f32])
    b = np.array([r["train_loss"] for r in f16])
    assert a[-1] < a[0] - 1.0                        # it learned
    assert np.max(np.abs(a - b)) < 0.05, np.abs(a - b)
    assert all(r["loss_scale"] >= 1 for r in f16) and "loss_scale" not in f32[0]
    dev = lambda w: _rows(w, "dev")[-1]["dev_loss"]
    assert abs(dev(tmp_path / "f16") - dev(tmp_path / "f32")) < 0.05
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("platform, kind, capability, dtype", [
    ("gpu", "Tesla T4", "7.5", "float16"), ("gpu", "Tesla V100-SXM2-16GB", "7.0", "float16"),
    ("gpu", "NVIDIA A100-SXM4-40GB", "8.0", "bfloat16"), ("gpu", "NVIDIA H100", "9.0", "bfloat16"),
    ("tpu", "TPU v4", None, "bfloat16"), ("cpu", "cpu", None, "float32")])
def test_the_precision_for_each_card(platform, kind, capability, dtype):
    """What the notebook picks (srupp_jax.training.precision): float16 on a T4 / V100,
    bfloat16 on an A100 / H100 / TPU."""
    from types import SimpleNamespace
    from srupp_jax.training import precision
    device = SimpleNamespace(platform=platform, device_kind=kind, compute_capability=capability)
    chosen, why = precision.for_device(device)
    assert chosen == dtype and kind.split()[0].upper() in why.upper()
