"""Attention: the fused path against the plain reference, masks, and the SRU++ transform."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from srupp_jax.nn.attention import SRUppAttention, attention_mask, attention_reference


@pytest.mark.slow
@pytest.mark.parametrize("T,M,heads,same_length", [(5, 0, 1, False), (3, 4, 2, False),
                                                    (4, 4, 1, True), (1, 6, 3, True)])
def test_fused_attention_matches_reference(T, M, heads, same_length):
    keys = jax.random.split(jax.random.PRNGKey(T * 10 + M), 4)
    q = jax.random.normal(keys[0], (2, T, heads, 6))
    k = jax.random.normal(keys[1], (2, M + T, heads, 6))
    v = jax.random.normal(keys[2], (2, M + T, heads, 6))
    pad = jax.random.bernoulli(keys[3], 0.2, (2, M + T)).at[:, -1].set(False)
    mask = attention_mask(T, M, same_length=same_length)[None, None] & ~pad[:, None, None, :]

    def f(fn, q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v, mask=mask)))

    fused = lambda q, k, v, mask: jax.nn.dot_product_attention(q, k, v, mask=mask)
    ref = lambda q, k, v, mask: attention_reference(q, k, v, mask)
    assert_close(fused(q, k, v, mask), ref(q, k, v, mask), 1e-6, "out")
    g_fused = jax.grad(lambda *a: f(fused, *a), argnums=(0, 1, 2))(q, k, v)
    g_ref = jax.grad(lambda *a: f(ref, *a), argnums=(0, 1, 2))(q, k, v)
    for a, e in zip(g_fused, g_ref):
        assert_close(a, e, 1e-5, "grad")


def test_attention_mask_semantics():
    m = np.asarray(attention_mask(3, 2))
    # query i sits at key position 2 + i and sees keys 0..2+i
    np.testing.assert_array_equal(m, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    s = np.asarray(attention_mask(3, 3, same_length=True))
    assert np.all(s.sum(1) == 4)  # every query sees mem_len + 1 keys
    s = np.asarray(attention_mask(2, 5, same_length=True))
    assert np.all(s.sum(1) == 6)  # a shorter segment too: the window is the memory's
    assert attention_mask(3, 2, causal=False) is None


def test_attention_dropout_uses_the_reference_path_only_in_training():
    layer = SRUppAttention(8, 12, 4, attn_dropout=0.5, rngs=nnx.Rngs(0))
    layer.alpha[...] = jnp.asarray(1.0)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 8))
    mask = attention_mask(5, 0)
    a, b = layer(x, attend=mask), layer(x, attend=mask)
    assert not np.allclose(a, b)
    layer.eval()
    c = layer(x, attend=mask)
    layer_no_drop = SRUppAttention(8, 12, 4, rngs=nnx.Rngs(0))
    layer_no_drop.alpha[...] = jnp.asarray(1.0)
    layer_no_drop.eval()
    assert_close(c, layer_no_drop(x, attend=mask), 1e-6)


def test_attention_bad_inputs_are_named():
    with pytest.raises(ValueError, match="d_proj=6 is not divisible by num_heads=4"):
        SRUppAttention(8, 12, 6, num_heads=4, rngs=nnx.Rngs(0))
    layer = SRUppAttention(8, 12, 4, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 5, 8))
    with pytest.raises(ValueError, match=r"attend has shape \(5, 5\); expected \(5, 8\)"):
        layer(x, memory=jnp.ones((2, 3, 8)), attend=jnp.ones((5, 5), bool))
    with pytest.raises(ValueError, match=r"memory has shape \(2, 3, 7\)"):
        layer(x, memory=jnp.ones((2, 3, 7)))


@pytest.mark.parametrize("normalize_after,heads", [(True, 1), (False, 2)])
def test_step_with_a_kv_cache_equals_the_full_forward(normalize_after, heads):
    """Keys/values of a padded memory cached once, positions fed in chunks of 2, 1, 2 through
    `step` == `__call__` over [memory ; all positions] with the causal mask."""
    layer = SRUppAttention(7, 9, 6, num_heads=heads, normalize_after=normalize_after,
                           rngs=nnx.Rngs(0))
    layer.alpha[...] = jnp.asarray(0.8)
    layer.eval()
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    x = jax.random.normal(keys[0], (2, 5, 7))
    memory = jax.random.normal(keys[1], (2, 3, 7))
    memory_pad = jnp.asarray([[False, False, True], [False, True, True]])
    full = layer(x, memory=memory, memory_mask_pad=memory_pad, attend=attention_mask(5, 3))
    cache = layer.init_cache(memory, memory_pad, 6)          # one slot to spare
    outs = []
    for start, stop in ((0, 2), (2, 3), (3, 5)):
        u, cache = layer.step(x[:, start:stop], cache, start)
        outs.append(u)
    assert_close(jnp.concatenate(outs, 1), full, 1e-5, "step")
    assert cache.k.shape == (2, 9, 6) and cache.mem_len == 3
    np.testing.assert_array_equal(cache.valid[:, 3:], [[1] * 5 + [0]] * 2)
