"""Transformer-XL (srupp_jax/models/transformer_xl.py) against explicit references.

  * rel_shift scores == the explicit O(L^2) scores (q_i + u).k_j + (q_i + v).W_r R_{p-j},
    and the attention sub-layer == softmax over the causal keys written out in NumPy;
  * two segments with cached memory == one forward over the concatenation (memory >= first
    segment: the causal mask; memory shorter: the mask that cuts the first keys);
  * gradients reach every parameter but not through the memory;
  * incremental decoding == the full forward; greedy `generate` == argmax of the full forward.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srupp_jax.inference.generate import generate
from srupp_jax.models.transformer_xl import TransformerXLLM, rel_shift, sinusoid_positions
from tests.helpers import (assert_close, check_incremental_decoding,
                           check_second_segment_gradients, check_segments_with_memory)

V = 23


def tiny(cutoffs=None, seed=0, num_layers=2):
    model = TransformerXLLM(V, 12, num_layers, num_heads=3, d_inner=20, dropout=0.1,
                            attn_dropout=0.1, cutoffs=cutoffs, adaptive_factor=2.0,
                            rngs=nnx.Rngs(seed))
    model.eval()
    return model


def tokens(batch, length, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, V, jnp.int32)


def test_rel_shift_moves_distances_to_key_positions():
    L, K = 5, 9
    x = jax.random.normal(jax.random.PRNGKey(0), (2, L, K))
    out = np.asarray(rel_shift(x))
    for i in range(L):
        for j in range(K - L + i + 1):
            assert out[0, i, j] == x[0, i, j + L - 1 - i]
            assert out[1, i, j] == x[1, i, j + L - 1 - i]


@pytest.mark.slow
@pytest.mark.parametrize("length,mem_len", [(7, 5), (1, 3), (6, 0)])
def test_relative_attention_equals_explicit_scores(length, mem_len):
    d, H = 12, 3
    dh = d // H
    model = tiny()
    attn = model.layers[0].attn
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    h = jax.random.normal(keys[0], (2, length, d))
    memory = jax.random.normal(keys[1], (2, mem_len, d)) if mem_len else None
    u = jax.random.normal(keys[2], (H, dh))
    v = jax.random.normal(keys[3], (H, dh))
    K = mem_len + length
    r = sinusoid_positions(K, d)
    score, _ = attn.scores(h, r, u, v, memory)

    # explicit: every (i, j) pair, distance p - j computed directly
    f64 = lambda a: np.asarray(a, np.float64)
    cat = f64(h if memory is None else jnp.concatenate([memory, h], 1))
    w_qkv, w_r = f64(attn.w_qkv.kernel[...]), f64(attn.w_r.kernel[...])
    q, k, val = np.split(cat @ w_qkv, 3, axis=-1)
    q = q[:, mem_len:].reshape(2, length, H, dh)
    k, val = k.reshape(2, K, H, dh), val.reshape(2, K, H, dh)
    inv = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
    expected = np.full((2, H, length, K), -np.inf)
    for i in range(length):
        for j in range(mem_len + i + 1):
            dist = mem_len + i - j
            R = np.concatenate([np.sin(dist * inv), np.cos(dist * inv)])
            rk = (R @ w_r).reshape(H, dh)
            expected[:, :, i, j] = (np.einsum("bhd,bhd->bh", q[:, i] + f64(u), k[:, j])
                                    + np.einsum("bhd,hd->bh", q[:, i] + f64(v), rk))
    expected /= np.sqrt(dh)
    valid = np.isfinite(expected)
    assert_close(np.asarray(score)[valid], expected[valid], 1e-5, "scores")

    # the whole sub-layer: softmax over the causal keys, W_o, residual, post-LN
    mask = np.tril(np.ones((length, K), bool), k=mem_len)
    out = attn(h, r, u, v, memory=memory, mask=jnp.asarray(mask)[None, None])
    p = np.exp(expected - expected.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = np.einsum("bhij,bjhd->bihd", p, val).reshape(2, length, d) @ f64(attn.w_o.kernel[...])
    y = f64(h) + a
    y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    assert_close(out, y, 1e-5, "sub-layer")


@pytest.mark.parametrize("cutoffs", [None, [5, 11]])
def test_two_segments_with_memory_equal_one_forward(cutoffs):
    # memory keeps the last 3 of 5 (with cutoffs not again: the head does not change what the
    # memory does)
    check_segments_with_memory(tiny(cutoffs), tokens(2, 12), 5,
                               short_mem=None if cutoffs else 3, atol=1e-4)


def test_gradients_reach_every_parameter_but_not_through_memory():
    # the memory does carry information forward (the loss depends on it)
    check_second_segment_gradients(tiny(), tokens(2, 11), differs=1e-6)


def test_incremental_decoding_and_greedy_generate():
    model = tiny()
    seq = tokens(2, 9, seed=3)
    check_incremental_decoding(model, seq)
    prompt = seq[:, :4]
    sampled = generate(model, prompt, 6, key=jax.random.PRNGKey(1), mem_len=3)
    again = generate(model, prompt, 6, key=jax.random.PRNGKey(1), mem_len=3)
    np.testing.assert_array_equal(np.asarray(sampled), np.asarray(again))


def test_paper_sizes_within_five_percent():
    """configs/txl_enwik8.py (41M) and configs/txl_wiki103.py (151M), counted abstractly."""
    import importlib

    from srupp_jax.programs import modes
    for name, published, vocab in (("txl_enwik8", 41e6, 205), ("txl_wiki103", 151e6, 267_735)):
        config = importlib.import_module(f"configs.{name}").get_config()
        if not config.model.vocab_size:      # from the data: enwik8's 205 byte values (the
            config.model.vocab_size = vocab  # official rule), WikiText-103's words
        model = nnx.eval_shape(lambda: modes.build_model(config, nnx.Rngs(0)))
        n = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
        assert abs(n / published - 1) < 0.05, (name, n)
