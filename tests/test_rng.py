"""train.prng_impl: the model's keys are of the configured implementation, travel through a
checkpoint's leaves as that implementation, and an older saved config (no key) means the
threefry keys its checkpoints hold."""
import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from srupp_jax.training import leaves, run_config
from srupp_jax.training.rng import PRNG_IMPLS, model_rngs, prng_impl


def _config(impl=None, seed=3):
    train = {} if impl is None else {"prng_impl": impl}
    return ml_collections.ConfigDict({"seed": seed, "train": train})


@pytest.mark.parametrize("impl", PRNG_IMPLS)
def test_keys_are_of_the_configured_implementation_and_survive_a_checkpoint(impl):
    rngs = model_rngs(_config(impl))
    stream = nnx.Dropout(0.5, rngs=rngs)
    key = rngs.dropout()
    assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl=impl))
    _, rest = nnx.split(stream)
    flat = leaves.flatten(rest)
    assert all(not leaves.is_key(v) for v in flat.values())   # raw uint32 data on disk
    back = leaves.unflatten(rest, list(flat.values()))
    for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(back)):
        if leaves.is_key(a):
            assert jax.random.key_impl(a) == jax.random.key_impl(b)
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    # the restored stream draws the same mask as the original
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
    again = nnx.merge(nnx.split(stream)[0], back)
    np.testing.assert_array_equal(stream(x), again(x))


def test_threefry_is_what_nnx_rngs_of_the_seed_gives():
    """train.prng_impl=threefry2x32 reproduces the runs from before the key existed."""
    ours, before = model_rngs(_config("threefry2x32")), nnx.Rngs(3)
    for _ in range(3):
        np.testing.assert_array_equal(jax.random.key_data(ours.params()),
                                      jax.random.key_data(before.params()))


def test_a_saved_config_without_the_key_is_threefry(tmp_path):
    """config.json of a run recorded before the key existed, read back (run_config.load
    completes it): threefry, not today's default."""
    (tmp_path / "config.json").write_text('{"seed": 3, "model": {}, "data": {}, "train": {"steps": 5}}')
    saved = run_config.load(str(tmp_path))
    assert prng_impl(saved) == "threefry2x32" and saved.train.steps == 5


def test_bad_value_is_named():
    with pytest.raises(ValueError, match=r"train.prng_impl='philox'; expected one of "
                                         r"threefry2x32, rbg, unsafe_rbg"):
        model_rngs(_config("philox"))
