"""srupp_jax.training.checkpoint (tiny trees; Orbax on CPU). Faults of whole runs: test_faults.py."""
from __future__ import annotations

import os
import signal
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srupp_jax.training.checkpoint import CheckpointError, CheckpointMismatchError, Checkpoints
from srupp_jax.training.workdir import StopSignals


class Carry(NamedTuple):
    h: Any
    c: Any
    mem: Any


def _items(seed: int = 0):
    """nnx.State with typed PRNG keys, an optax-like state, a NamedTuple with None leaves."""
    rng = np.random.default_rng(seed)
    model = nnx.Dropout(0.1, rngs=nnx.Rngs(dropout=seed))
    model.linear = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
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
    }


def _bits(tree):
    leaves = jax.tree.leaves(tree)
    return [(str(x.dtype), np.asarray(jax.random.key_data(x)
                                      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                                      else x).tobytes()) for x in leaves]


def test_roundtrip_bitwise(tmp_path):
    items = _items(3)
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(5, items, metrics={"dev_loss": 2.0})
        ck.wait()
        assert ck.steps() == [5]
        step, out = ck.restore(_items(0))   # same structure, other values
    assert step == 5 and set(out) == set(items)
    assert isinstance(out["params"], nnx.State)
    assert isinstance(out["carry"], Carry) and out["carry"].c is None
    assert out["carry"].mem[1] is None and out["carry"].h.dtype == jnp.bfloat16
    for name in items:
        assert jax.tree.structure(out[name]) == jax.tree.structure(items[name])
        assert _bits(out[name]) == _bits(items[name]), name
    np.testing.assert_array_equal(jax.random.normal(out["rng"], (3,)),
                                  jax.random.normal(items["rng"], (3,)))
    with Checkpoints(tmp_path / "ck", read_only=True) as ck:   # a subset of the items
        step, sub = ck.restore({"params": _items(1)["params"]})
    assert step == 5 and set(sub) == {"params"} and _bits(sub["params"]) == _bits(items["params"])


def test_keeps_the_newest_n_plus_the_best(tmp_path):
    d = tmp_path / "ck"
    with Checkpoints(d, keep=3) as ck:
        for step in range(1, 7):
            ck.save(step, {"w": jnp.full((2,), step, jnp.float32)},
                    metrics={"dev_loss": 0.5 if step == 2 else 10.0 - step})
        ck.wait()
        assert ck.steps() == [2, 4, 5, 6] and ck.best_step() == 2
        step, out = ck.restore({"w": jnp.zeros((2,))}, which="best")
        assert step == 2 and float(out["w"][0]) == 2.0
        for step in (7, 8, 9):                  # saves without metrics: kept while newest
            ck.save(step, {"w": jnp.zeros((2,))})
    with Checkpoints(d, keep=3) as ck:          # reopened: the same state
        assert ck.steps() == [2, 7, 8, 9] and ck.best_step() == 2
        with pytest.raises(CheckpointError, match="step 9 was not saved"):
            ck.save(9, {"w": jnp.zeros((2,))})  # exists: never silently skipped
        with pytest.raises(CheckpointError, match="step 5 was not saved"):
            ck.save(5, {"w": jnp.zeros((2,))})  # older than the newest


def test_restore_into_named_sharding(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    x = jax.device_put(jnp.arange(4, dtype=jnp.float32), sharding)
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(1, {"x": x})
        _, out = ck.restore({"x": x})
    assert out["x"].sharding == sharding
    np.testing.assert_array_equal(out["x"], x)


def test_no_checkpoints(tmp_path):
    with Checkpoints(tmp_path / "empty") as ck:
        assert ck.restore({"x": jnp.ones(2)}) is None and ck.best_step() is None
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        Checkpoints(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()


def test_a_shape_mismatch_names_the_config_difference(tmp_path):
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(1, {"p": {"w": jnp.ones((4, 8))}}, meta={"config": {"d": 4, "layers": 2}})
        with pytest.raises(CheckpointMismatchError, match="d: checkpoint 4, config 6"):
            ck.restore({"p": {"w": jnp.ones((6, 8))}}, config={"d": 6, "layers": 2})
        with pytest.raises(CheckpointMismatchError, match=r"\['w'\] is \[4, 8\] in the "
                                                          r"checkpoint, \[6, 8\] in the model"):
            ck.restore({"p": {"w": jnp.ones((6, 8))}})
        with pytest.raises(CheckpointMismatchError, match="has no 'q'"):
            ck.restore({"q": {"w": jnp.ones((4, 8))}})
        assert ck.steps() == [1]                # a mismatch is not corruption: nothing moved


@pytest.mark.parametrize("mode", ["garbage", "delete"])
def test_unreadable_latest_falls_back_and_is_quarantined(tmp_path, mode):
    d = tmp_path / "ck"
    with Checkpoints(d) as ck:
        for step in (1, 2):
            ck.save(step, {"w": jnp.full((4,), step, jnp.float32)})
    if mode == "garbage":
        for root, _, files in os.walk(d / "2" / "w"):
            for f in files:
                if os.sep + "d" in root:
                    with open(os.path.join(root, f), "wb") as fh:
                        fh.write(b"\x00garbage" * 3)
    else:
        os.remove(d / "2" / "w" / "manifest.ocdbt")
    with Checkpoints(d) as ck:
        step, out = ck.restore({"w": jnp.zeros((4,), jnp.float32)})
        assert step == 1 and ck.steps() == [1]
        np.testing.assert_array_equal(out["w"], np.ones(4, np.float32))
    assert (d / "quarantine" / "2").is_dir()
    os.remove(d / "1" / "w" / "manifest.ocdbt")
    with Checkpoints(d) as ck, pytest.raises(CheckpointError, match=r"steps \[1\] moved to"):
        ck.restore({"w": jnp.zeros((4,), jnp.float32)})


def test_stop_signals_record_the_first_and_restore_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with StopSignals() as signals:
        assert signals.status is None
        os.kill(os.getpid(), signal.SIGINT)     # no KeyboardInterrupt: only recorded
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.status == "interrupted"
    assert {s: signal.getsignal(s) for s in before} == before
