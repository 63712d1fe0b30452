"""SHA-RNN (srupp_jax/models/sha_rnn.py) against explicit references.

  * the single-head attention and the Boom layer == the formulas written out in NumPy;
  * two segments carrying the LSTM state and the attention memory == one forward over the
    concatenation (memory >= first segment: causal mask; shorter: the cut mask);
  * gradients reach every parameter but not through the carried state;
  * incremental decoding == the full forward; greedy `generate` == argmax of the full forward.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srupp_jax.models.sha_rnn import SHARNNLM, lstm_scan
from tests.helpers import (assert_close, check_incremental_decoding,
                           check_second_segment_gradients, check_segments_with_memory)

V = 19


def tiny(seed=0, attention_layers=(2,)):
    model = SHARNNLM(V, 8, 3, 20, attention_layers=attention_layers, dropout=0.1,
                     attn_dropout=0.1, rngs=nnx.Rngs(seed))
    # gates away from their zero init, so that every term matters
    for block in model.blocks:
        if block.attn is not None:
            for s in (block.attn.s_q, block.attn.s_k, block.attn.s_v):
                s[...] = jax.random.normal(jax.random.PRNGKey(seed + 7), s.shape)
    model.eval()
    return model


def tokens(batch, length, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, V, jnp.int32)


def _ln(x, scale, bias, eps):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * scale \
        + bias


@pytest.mark.slow
def test_attention_and_boom_equal_numpy():
    model = tiny()
    attn, boom = model.blocks[1].attn, model.blocks[1].boom
    f64 = lambda a: np.asarray(a, np.float64)
    sig = lambda z: 1 / (1 + np.exp(-z))
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    L, K = 5, 9
    query = jax.random.normal(keys[0], (2, L, 8))
    mem = jax.random.normal(keys[1], (2, K, 8))
    mask = np.tril(np.ones((L, K), bool), k=K - L)
    out = attn(query, mem, jnp.asarray(mask)[None])

    q = _ln(f64(query) @ f64(attn.w_q.kernel[...]) + f64(attn.w_q.bias[...]),
            f64(attn.q_norm.scale[...]), f64(attn.q_norm.bias[...]), 1e-12)
    q = q * sig(f64(attn.s_q[...]))
    k = f64(mem) * sig(f64(attn.s_k[...]))
    cf = sig(f64(attn.s_v[...])) @ f64(attn.w_v.kernel[...]) + f64(attn.w_v.bias[...])
    v = f64(mem) * (sig(cf[8:]) * np.tanh(cf[:8]))
    s = np.einsum("bid,bjd->bij", q, k) / np.sqrt(8)
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert_close(out, np.einsum("bij,bjd->bid", p, v), 1e-5, "attention")

    x = f64(query)
    z = x @ f64(boom.w.kernel[...]) + f64(boom.w.bias[...])
    z = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    expected = z[..., :16].reshape(2, L, 2, 8).sum(-2)       # 20 -> 2 chunks of 8, 4 trimmed
    assert_close(boom(query), expected, 1e-5, "boom")


@pytest.mark.parametrize("length", [1, 7])
def test_lstm_scan_equals_the_cell_step_by_step(length):
    """lstm_scan (input matmul hoisted out of the scan) == a Python loop over the Flax cell's
    own __call__ (and == nnx.RNN over it), forward and gradients, random state."""
    cell = nnx.OptimizedLSTMCell(5, 6, rngs=nnx.Rngs(0))
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    x = jax.random.normal(keys[0], (3, length, 5))
    carry = (jax.random.normal(keys[1], (3, 6)), jax.random.normal(keys[2], (3, 6)))

    def loop(x, carry):
        outs = []
        for t in range(x.shape[1]):
            carry, y = cell(carry, x[:, t])
            outs.append(y)
        return carry, jnp.stack(outs, 1)

    def loss(fn, x, carry):
        (c, h), out = fn(x, carry)
        return jnp.sum(out * jnp.arange(6)) + jnp.sum(c ** 2) + jnp.sum(h)

    ours = lambda x, carry: lstm_scan(cell, x, carry)
    (c, h), out = ours(x, carry)
    (c2, h2), out2 = loop(x, carry)
    _, out3 = nnx.RNN(cell, return_carry=True)(x, initial_carry=carry)
    for a, b, name in ((out, out2, "out"), (c, c2, "c"), (h, h2, "h"), (out, out3, "rnn")):
        assert_close(a, b, 1e-6, name)
    g = jax.grad(lambda x, carry: loss(ours, x, carry), argnums=(0, 1))(x, carry)
    g2 = jax.grad(lambda x, carry: loss(loop, x, carry), argnums=(0, 1))(x, carry)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2)):
        assert_close(a, b, 1e-6, "grad")


@pytest.mark.slow
def test_segments_with_state_and_memory_equal_one_forward():
    check_segments_with_memory(tiny(), tokens(2, 13), 6, short_mem=2, atol=1e-5)


@pytest.mark.slow
def test_gradients_reach_every_parameter_but_not_through_the_carry():
    seq = tokens(2, 11)
    m, fixed_state = check_second_segment_gradients(tiny(), seq, stop_carry=True, differs=1e-5)
    # the attention memory alone is gradient-stopped inside the model
    memory_grad = jax.jit(jax.grad(lambda mem: m.hidden(
        seq[:, 5:10], fixed_state._replace(memory=mem))[1].memory[1].sum()))(fixed_state.memory)
    assert all(float(jnp.max(jnp.abs(g))) == 0 for g in jax.tree.leaves(memory_grad))


@pytest.mark.slow
def test_incremental_decoding_and_greedy_generate():
    check_incremental_decoding(tiny(attention_layers=(2, 3)), tokens(2, 9, seed=3))


@pytest.mark.parametrize("variant,published", [("", 54e6), ("sru", 42e6)])
def test_article_size_within_five_percent(variant, published):
    from srupp_jax.programs import modes
    from srupp_jax.training.steps import count_params
    config = importlib.import_module("configs.sharnn_enwik8").get_config(variant)
    config.model.vocab_size = 205                 # enwik8's byte values (from the data)
    modes.validate_config(config, 1)
    model = nnx.eval_shape(lambda: modes.build_model(config, nnx.Rngs(0)))
    n = count_params(model)
    assert abs(n / published - 1) < 0.05, n
