"""Tests for srupp_jax.checkpoint (tiny trees; orbax on CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srupp_jax.checkpoint import (
    Checkpointer,
    CheckpointStructureError,
    PreemptionFlag,
    from_pure,
    install_sigterm_handler,
    to_pure,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Carry(NamedTuple):
    h: Any
    c: Any
    mem: Any


def _items(seed: int = 0):
    rng = np.random.default_rng(seed)
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
    _, state = nnx.split(model)
    return {
        "params": state,
        "opt_state": {
            "mu": {"w": jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)},
            "count": jnp.asarray(seed + 7, jnp.int32),
            "nested": {"bf": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16),
                       "mask": jnp.asarray(rng.random(5) > 0.5)},
        },
        "carry": Carry(h=jnp.asarray(rng.normal(size=(2, 4)), jnp.bfloat16), c=None,
                       mem=[jnp.arange(3, dtype=jnp.int32) + seed, None]),
        "rng": jax.random.key(seed + 1),
        "raw_rng": jax.random.PRNGKey(seed + 2),
        "np": {"x": rng.normal(size=3).astype(np.float32), "scalar": 1.5 + seed},
        "meta": {"step": seed, "data_position": 1000 + seed, "name": "run", "lst": [1, 2]},
    }


def _bits(x):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None) or np.float32, jax.dtypes.prng_key):
        return ("key", str(jax.random.key_impl(x)), np.asarray(jax.random.key_data(x)))
    if isinstance(x, (jax.Array, np.ndarray)):
        a = np.asarray(x)
        return (str(a.dtype), a.shape, a.tobytes())
    return (type(x).__name__, (), x)


def assert_tree_bitwise_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        bx, by = _bits(x), _bits(y)
        assert bx[:2] == by[:2]
        if isinstance(bx[2], np.ndarray):
            np.testing.assert_array_equal(bx[2], by[2])
        else:
            assert bx[2] == by[2], (bx, by)


def test_roundtrip_bitwise(tmp_path):
    items = _items(3)
    with Checkpointer(tmp_path / "ck") as ck:
        assert ck.save(5, items, metrics={"dev_loss": 2.0})
        ck.wait()
        assert ck.all_steps() == [5]
        like = _items(0)  # same structure, different values
        step, out = ck.restore(like)
    assert step == 5
    assert set(out) == set(items)
    assert isinstance(out["params"], nnx.State)
    assert isinstance(out["carry"], Carry) and out["carry"].c is None and out["carry"].mem[1] is None
    assert out["carry"].h.dtype == jnp.bfloat16
    assert jax.dtypes.issubdtype(out["rng"].dtype, jax.dtypes.prng_key)
    assert isinstance(out["np"]["x"], np.ndarray) and isinstance(out["np"]["scalar"], float)
    assert out["meta"] == items["meta"]
    for name in items:
        if name != "meta":
            assert_tree_bitwise_equal(items[name], out[name])
    # restored keys are usable and identical in effect
    np.testing.assert_array_equal(jax.random.normal(out["rng"], (3,)), jax.random.normal(items["rng"], (3,)))
    # abstract targets work too, and a subset of the items can be restored
    abstract = {"params": jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), items["params"])}
    with Checkpointer(tmp_path / "ck") as ck2:
        step, sub = ck2.restore(abstract)
    assert step == 5 and set(sub) == {"params"}
    assert_tree_bitwise_equal(items["params"], sub["params"])


def test_pure_helpers():
    _, state = nnx.split(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    pure = to_pure(state)
    assert isinstance(pure, dict) and set(pure) == {"kernel", "bias"}
    pure2 = jax.tree_util.tree_map(lambda x: x + 1, pure)
    back = from_pure(state, pure2)
    assert isinstance(back, nnx.State)
    np.testing.assert_array_equal(back["kernel"][...], state["kernel"][...] + 1)
    np.testing.assert_array_equal(to_pure({"a": 1})["a"], 1)


def test_retention_last_n_plus_best_and_restore_best(tmp_path):
    d = tmp_path / "ck"
    ck = Checkpointer(d, keep=3, best_metric="dev_loss", best_mode="min", async_save=True)
    for step in range(1, 7):
        metrics = {"dev_loss": 0.5 if step == 2 else 10.0 - step}
        assert ck.save(step, {"w": jnp.full((2,), step, jnp.float32), "meta": {"step": step}},
                       metrics=metrics)
    ck.wait()
    assert ck.all_steps() == [2, 4, 5, 6]
    assert ck.best_step() == 2 and ck.latest_step() == 6
    like = {"w": jnp.zeros((2,), jnp.float32), "meta": {"step": 0}}
    step, out = ck.restore(like, which="best")
    assert step == 2 and out["meta"] == {"step": 2}
    np.testing.assert_array_equal(out["w"], [2.0, 2.0])
    step, out = ck.restore(like)
    assert step == 6 and out["meta"]["step"] == 6
    step, out = ck.restore(like, step=4)
    assert step == 4 and float(out["w"][0]) == 4.0
    with pytest.raises(FileNotFoundError, match="step 3"):
        ck.restore(like, step=3)
    # saves without metrics (periodic / preemption) are kept only among the newest `keep`
    for step in (7, 8, 9):
        ck.save(step, {"w": jnp.zeros((2,)), "meta": {}})
    ck.close()
    ck = Checkpointer(d, keep=3, best_metric="dev_loss", best_mode="min")  # re-open: state persists
    assert ck.all_steps() == [2, 7, 8, 9] and ck.best_step() == 2
    assert not ck.save(9, {"w": jnp.zeros((2,)), "meta": {}})  # already saved -> False
    ck.close()


def test_retention_max_mode_and_no_best_metric(tmp_path):
    with Checkpointer(tmp_path / "a", keep=1, best_metric="acc", best_mode="max", async_save=False) as ck:
        for step, acc in [(1, 0.1), (2, 0.9), (3, 0.5), (4, float("nan"))]:
            ck.save(step, {"x": jnp.ones(1)}, metrics={"acc": acc})
        assert ck.all_steps() == [2, 4] and ck.best_step() == 2
    with Checkpointer(tmp_path / "b", keep=2, best_metric=None) as ck:
        for step in range(1, 5):
            ck.save(step, {"x": jnp.ones(1)}, metrics={"dev_loss": float(step)})
        ck.wait()
        assert ck.all_steps() == [3, 4] and ck.best_step() is None
        with pytest.raises(ValueError, match="best_metric"):
            ck.restore({"x": jnp.ones(1)}, which="best")


def test_manual_prune_fallback_for_old_orbax(tmp_path, monkeypatch):
    import srupp_jax.checkpoint as ckmod

    monkeypatch.setattr(ckmod, "_has_preservation_policy", lambda: False)
    with Checkpointer(tmp_path / "ck", keep=3, best_metric="dev_loss") as ck:
        assert ck._manual_prune
        for step in range(1, 7):
            ck.save(step, {"x": jnp.ones(1)}, metrics={"dev_loss": 0.5 if step == 2 else 10.0 - step})
        ck.wait()
        assert ck.all_steps() == [2, 4, 5, 6] and ck.best_step() == 2


def test_restore_into_named_sharding(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    x = jax.device_put(jnp.arange(4, dtype=jnp.float32), sharding)
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"x": x})
        step, out = ck.restore({"x": jax.ShapeDtypeStruct((4,), jnp.float32, sharding=sharding)})
    assert out["x"].sharding == sharding
    np.testing.assert_array_equal(out["x"], x)


def test_reserved_item_names(tmp_path):
    with Checkpointer(tmp_path / "ck") as ck:
        for name in ("metrics", "treedefs_", "__x"):
            with pytest.raises(ValueError, match="reserved"):
                ck.save(1, {name: jnp.ones(2)})
        assert ck.all_steps() == []


def test_restore_without_checkpoints_returns_none(tmp_path):
    with Checkpointer(tmp_path / "empty") as ck:
        assert ck.restore({"x": jnp.ones(2)}) is None
        assert ck.restore({"x": jnp.ones(2)}, which="best") is None
        assert ck.latest_step() is None and ck.best_step() is None and ck.all_steps() == []


@pytest.mark.parametrize(
    "kwargs, value",
    [({"keep": 0}, "0"), ({"keep": -2}, "-2"), ({"best_mode": "mean"}, "mean")],
)
def test_bad_arguments(tmp_path, kwargs, value):
    with pytest.raises(ValueError, match=value):
        Checkpointer(tmp_path / "ck", **kwargs)


def test_bad_which_and_structure_mismatch(tmp_path):
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"p": {"a": jnp.ones(2), "b": jnp.zeros(3)}})
        with pytest.raises(ValueError, match="newest"):
            ck.restore({"p": {"a": jnp.ones(2)}}, which="newest")
        with pytest.raises(CheckpointStructureError, match="'p'"):
            ck.restore({"p": {"a": jnp.ones(2), "c": jnp.zeros(3)}})
        with pytest.raises(CheckpointStructureError, match="'q'"):
            ck.restore({"q": {"a": jnp.ones(2)}})


def _corrupt(step_dir, mode):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
    if mode == "garbage":  # overwrite every array data file of the "w" item
        targets = [f for f in files if os.sep + "w" + os.sep in f and os.sep + "d" + os.sep in f]
        assert targets
        for f in targets:
            with open(f, "wb") as fh:
                fh.write(b"\x00garbage" * 3)
    else:  # delete a required file (the OCDBT manifest of the "w" item)
        target = os.path.join(step_dir, "w", "manifest.ocdbt")
        assert os.path.exists(target)
        os.remove(target)


@pytest.mark.parametrize("mode", ["garbage", "delete"])
def test_corrupt_latest_falls_back_to_previous(tmp_path, mode):
    d = tmp_path / "ck"
    with Checkpointer(d, keep=3) as ck:
        for step in (1, 2):
            ck.save(step, {"w": jnp.full((4,), step, jnp.float32), "meta": {"step": step}})
    _corrupt(str(d / "2"), mode)
    with Checkpointer(d, keep=3) as ck:
        like = {"w": jnp.zeros((4,), jnp.float32), "meta": {"step": 0}}
        with pytest.warns(RuntimeWarning, match="step 2") as rec:
            step, out = ck.restore(like)
        assert step == 1 and out["meta"] == {"step": 1}
        np.testing.assert_array_equal(out["w"], np.ones(4, np.float32))
        assert any("Error" in str(w.message) or "rror" in str(w.message) for w in rec)


def test_sigterm_handler_sets_flag_and_restores_previous(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    flag = install_sigterm_handler()
    try:
        assert isinstance(flag, PreemptionFlag) and not flag.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # the Python-level handler runs between bytecodes
            if flag.is_set():
                break
            time.sleep(0.01)
        assert flag.is_set() and flag.signum == signal.SIGTERM
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before
    # via the Checkpointer: restored on close()
    ck = Checkpointer(tmp_path / "ck")
    f2 = ck.install_sigterm_handler()
    assert signal.getsignal(signal.SIGTERM) == f2._handler
    ck.close()
    assert signal.getsignal(signal.SIGTERM) == before


_SCRIPT = """
import sys, time
import jax.numpy as jnp
from srupp_jax.checkpoint import Checkpointer

ck = Checkpointer(sys.argv[1], keep=2, best_metric=None)
flag = ck.install_sigterm_handler()
step = 0
while True:
    step += 1
    counter = jnp.asarray(step, jnp.int32)           # "training step"
    if flag.is_set():
        ck.save(step, {"counter": counter, "meta": {"step": step}}, force=True)
        ck.wait()
        print("stopped", step, flush=True)
        break
    if step == 1 or step % 1000 == 0:                 # periodic saves
        ck.save(step, {"counter": counter, "meta": {"step": step}})
        if step == 1:
            ck.wait()
            print("ready", flush=True)
    time.sleep(0.01)
    if step > 5000:
        print("no signal", flush=True)
        sys.exit(3)
ck.close()
"""


def test_sigterm_subprocess_saves_current_step_and_exits_cleanly(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    d = tmp_path / "ck"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, str(script), str(d)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    stopped = [ln for ln in out.splitlines() if ln.startswith("stopped")]
    assert stopped, out
    stop_step = int(stopped[0].split()[1])
    assert stop_step > 1
    with Checkpointer(d, keep=2, best_metric=None) as ck:
        step, items = ck.restore({"counter": jnp.zeros((), jnp.int32), "meta": {"step": 0}})
    assert step == stop_step and int(items["counter"]) == stop_step
    assert items["meta"] == {"step": stop_step}
