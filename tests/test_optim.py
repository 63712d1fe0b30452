"""Tests for srupp_jax.training.optim: schedule, decay mask, decoupled decay, clipping, accumulation."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from srupp_jax.models.srupp_lm import SRUppConfig, SRUppLM
from srupp_jax.training.optim import lr_schedule, make_optimizer, weight_decay_mask


_CACHE = {}


def _small_params():
    """A small real model (built once per module: module construction dominates the runtime)."""
    if "params" not in _CACHE:
        model = SRUppLM(SRUppConfig(29, 16, 4, num_layers=2), rngs=nnx.Rngs(0))
        _CACHE["split"] = nnx.split(model, nnx.Param, ...)
    graphdef, params, rest = _CACHE["split"]
    return nnx.merge(graphdef, params, rest), params


def _named_leaves(tree):
    return [(jax.tree_util.keystr(p), x)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)]


def _random_tree(tree, seed, scale=1.0):
    """Random normal leaves (numpy-generated: no per-shape XLA compiles) in `tree`'s structure."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: jnp.asarray(scale * rng.standard_normal(x.shape), jnp.float32), tree)


def _jitted(tx):
    """The same transformation with jitted init/update (one compile instead of many eager ops)."""
    return optax.GradientTransformation(jax.jit(tx.init), jax.jit(tx.update))


def test_schedule_endpoints_and_shape():
    lr, end, warm, total = 3e-4, 1e-5, 10, 30
    s = lr_schedule(lr, warm, total, end_lr=end)
    np.testing.assert_allclose(s(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(s(warm // 2), lr / 2, rtol=1e-6)
    np.testing.assert_allclose(s(warm), lr, rtol=1e-6)
    np.testing.assert_allclose(s(total), end, rtol=1e-5)
    np.testing.assert_allclose(s(total + 5), end, rtol=1e-5)
    np.testing.assert_allclose(s(warm + (total - warm) // 2), (lr + end) / 2, rtol=1e-5)
    warmup = np.array([float(s(i)) for i in range(warm + 1)])
    assert np.all(np.diff(warmup) > 0)
    decay = np.array([float(s(i)) for i in range(warm, total + 1)])
    assert np.all(np.diff(decay) < 0)


def test_mask_on_model_params():
    _, params = _small_params()
    mask = weight_decay_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    names = dict(_named_leaves(params))
    decided = dict(_named_leaves(mask))
    for name, x in names.items():
        last = name.replace(".value", "").split("[")[-1].strip("]'\"")
        if last in ("b", "v", "bias", "scale", "alpha") or x.ndim < 2:
            assert decided[name] is False, name
        else:
            assert x.ndim >= 2 and decided[name] is True, name
    # the model has each kind: matrices, alpha scalars, LN, SRU v/b ([2, dirs, d]), head bias
    assert any(v for v in decided.values())
    assert sum("alpha" in n for n in names) == 2
    assert all(not decided[n] for n in names if "alpha" in n or "layer_norm" in n
               or n.endswith("['v'].value") or n.endswith("['b'].value") or "bias" in n)
    assert all(decided[n] for n in names if "kernel" in n or "embedding" in n)


def test_mask_on_plain_dict():
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
              "alpha": jnp.zeros(()), "table": jnp.ones((5, 2)),
              "sru": {"v": jnp.ones((2, 1, 4)), "b": jnp.ones((2, 1, 4))}}
    assert weight_decay_mask(params) == {
        "dense": {"kernel": True, "bias": False}, "alpha": False, "table": True,
        "sru": {"v": False, "b": False}}


def test_zero_grad_update_is_pure_decoupled_decay():
    lr, wd, warm, total, step = 1e-2, 0.1, 3, 20, 7
    _, params = _small_params()
    params = _random_tree(params, 1)  # nonzero everywhere, including alpha and biases
    tx = make_optimizer(lr, warm, total, weight_decay=wd)
    zeros = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for _ in range(step):  # advance the counters; params stay fixed
        _, state = update(zeros, state, params)
    updates, _ = update(zeros, state, params)
    lr_t = float(lr_schedule(lr, warm, total)(step))
    assert lr_t > 0
    mask = weight_decay_mask(params)
    for (name, u), p, m in zip(_named_leaves(updates), jax.tree.leaves(params),
                               jax.tree.leaves(mask)):
        if m:
            np.testing.assert_allclose(u, -lr_t * wd * np.asarray(p), rtol=1e-5, atol=1e-9,
                                       err_msg=name)
        else:
            np.testing.assert_array_equal(u, np.zeros_like(p), err_msg=name)


def test_clipping_scales_global_norm_to_one():
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    g = _random_tree(params, 2)
    norm = np.sqrt(sum(float(np.sum(np.asarray(x) ** 2)) for x in jax.tree.leaves(g)))
    g = jax.tree.map(lambda x: np.asarray(x) * np.float32(10.0 / norm), g)
    np.testing.assert_allclose(float(optax.tree.norm(g)), 10.0, rtol=1e-5)
    clipped = _jitted(make_optimizer(1e-2, 0, 10, weight_decay=0.0, clip_norm=1.0))
    unclipped = _jitted(make_optimizer(1e-2, 0, 10, weight_decay=0.0, clip_norm=1e9))
    u_clip, _ = clipped.update(g, clipped.init(params), params)
    u_pre, _ = unclipped.update(jax.tree.map(lambda x: x / np.float32(10.0), g),
                                unclipped.init(params), params)
    u_raw, _ = unclipped.update(g, unclipped.init(params), params)
    for a, b in zip(jax.tree.leaves(u_clip), jax.tree.leaves(u_pre)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    # RAdam's first steps (SMA below threshold) are not scale invariant: clipping is visible
    assert not np.allclose(jax.tree.leaves(u_clip)[0], jax.tree.leaves(u_raw)[0])
    # a gradient already below the threshold is untouched
    small = jax.tree.map(lambda x: x / np.float32(20.0), g)
    u_small, _ = clipped.update(small, clipped.init(params), params)
    u_small_ref, _ = unclipped.update(small, unclipped.init(params), params)
    for a, b in zip(jax.tree.leaves(u_small), jax.tree.leaves(u_small_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_grad_accumulation_equals_mean_gradient():
    params = {"w": jnp.full((3, 4), 0.5), "b": jnp.full(4, 0.5)}
    g1, g2 = _random_tree(params, 3, 0.05), _random_tree(params, 4, 0.05)
    acc = _jitted(make_optimizer(1e-2, 0, 10, grad_accum_steps=2))
    one = _jitted(make_optimizer(1e-2, 0, 10))
    s = acc.init(params)
    u1, s = acc.update(g1, s, params)
    for x in jax.tree.leaves(u1):
        np.testing.assert_array_equal(x, np.zeros_like(x))
    u2, s = acc.update(g2, s, params)
    mean = jax.tree.map(lambda a, b: (np.asarray(a) + np.asarray(b)) / 2, g1, g2)
    ref, _ = one.update(mean, one.init(params), params)
    for a, b in zip(jax.tree.leaves(u2), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    assert any(np.abs(np.asarray(x)).max() > 0 for x in jax.tree.leaves(u2))


def test_with_nnx_optimizer():
    model, params = _small_params()
    opt = nnx.Optimizer(model, make_optimizer(1e-2, 0, 10), wrt=nnx.Param)
    before = jax.tree.map(np.asarray, params)
    nnx.jit(lambda o, m, g: o.update(m, g))(
        opt, model, jax.tree.map(lambda x: np.zeros(x.shape, np.float32), params))
    after = nnx.state(model, nnx.Param)
    mask = jax.tree.leaves(weight_decay_mask(params))
    for m, b, a in zip(mask, jax.tree.leaves(before), jax.tree.leaves(after)):
        if m and np.abs(b).max() > 0:
            np.testing.assert_allclose(a, b * (1 - 1e-2 * 0.1), rtol=1e-5)
        elif not m:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(lr=0.0, warmup_steps=1, total_steps=10), "lr=0.0"),
    (dict(lr=-1e-3, warmup_steps=1, total_steps=10), "lr=-0.001"),
    (dict(lr=1e-3, warmup_steps=-1, total_steps=10), "warmup_steps=-1"),
    (dict(lr=1e-3, warmup_steps=10, total_steps=10), "total_steps=10"),
    (dict(lr=1e-3, warmup_steps=5, total_steps=3), "total_steps=3"),
    (dict(lr=1e-3, warmup_steps=1, total_steps=10, grad_accum_steps=0), "grad_accum_steps=0"),
    (dict(lr=1e-3, warmup_steps=1, total_steps=10, clip_norm=0.0), "clip_norm=0.0"),
    (dict(lr=1e-3, warmup_steps=1, total_steps=10, weight_decay=-0.1), "weight_decay=-0.1"),
])
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        make_optimizer(**kwargs)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="total_steps=4"):
        lr_schedule(1e-3, 4, 4)
    with pytest.raises(ValueError, match="end_lr=-1"):
        lr_schedule(1e-3, 1, 4, end_lr=-1)
