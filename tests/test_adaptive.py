"""Adaptive input / adaptive softmax (srupp_jax.nn.adaptive) on a tiny vocabulary.

vocab 37, d_model 16, cutoffs [5, 17], factor 2: clusters [0,5) d=16, [5,17) d=8, [17,37) d=4.
The reference is the written form of the released models' code (NumPy below): biases on every
output row, the cluster logits as the head's last rows applied to the projected hidden state,
the last head column scoring cluster 1.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srupp_jax.nn.adaptive import AdaptiveInput, AdaptiveSoftmax
from tests.helpers import assert_close

V, D, CUTOFFS, FACTOR = 37, 16, [5, 17], 2.0
B, L = 2, 21


def rngs(seed=0):
    """Rngs on the 'unsafe_rbg' PRNG: threefry takes seconds to compile per shape on CPU."""
    return nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg"))


class Pair(nnx.Module):
    """An input embedding and an output softmax, tied or not."""

    def __init__(self, *, tied, tie_proj=True, cutoffs=CUTOFFS, d_embed=None, seed=0):
        r = rngs(seed)
        self.inp = AdaptiveInput(V, D, cutoffs, FACTOR, d_embed=d_embed, rngs=r)
        self.out = AdaptiveSoftmax(V, D, cutoffs, FACTOR, tie_to=self.inp if tied else None,
                                   tie_proj=tie_proj, rngs=r)


@functools.cache
def _pair(tied, tie_proj=True, d_embed=None):
    return nnx.jit(lambda: Pair(tied=tied, tie_proj=tie_proj, d_embed=d_embed))()


def pair(tied, tie_proj=True, d_embed=None):
    """A fresh copy (sharing preserved) of a cached Pair, built under jit (eager inits
    compile one program per op and shape)."""
    return nnx.clone(_pair(tied, tie_proj, d_embed))


def hidden(seed=1, shape=(B, L, D)):
    """Random N(0, 1) hidden states (numpy: no PRNG compile)."""
    return jnp.asarray(np.random.RandomState(seed).standard_normal(shape), jnp.float32)


def all_targets(seed=2):
    """[B, L] ids covering every cluster: a permutation of range(V) plus random ids."""
    ids = np.concatenate([np.random.RandomState(seed).permutation(V),
                          np.random.RandomState(seed + 1).randint(0, V, B * L - V)])
    return jnp.asarray(ids.reshape(B, L), jnp.int32)


def n_params(module):
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def randomize_biases(sm, seed=3):
    """Every bias of a softmax away from its zero init (so the reference checks them)."""
    rng = np.random.RandomState(seed)
    for b in [*sm.biases, sm.cluster_bias]:
        b[...] = jnp.asarray(rng.standard_normal(b.shape), jnp.float32)


def reference_log_probs(sm, h):
    """log p [.., V] written out from the reference's AdaptiveLogSoftmax in float64 NumPy:
    head = log_softmax([(h P_0) E_0^T + b_0 ; (h P_0) C^T + b_C]); word w of cluster i >= 1:
    head[:, -i] + log_softmax((h P_i) E_i^T + b_i)[w - c_i]."""
    h = np.asarray(h, np.float64)
    lsm = lambda z: z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - z.max(-1, keepdims=True)
    def proj(i):
        k = np.asarray(sm.out_projs[i].kernel[...], np.float64)
        return h @ (k.T if sm.tie_proj else k)
    table = lambda i: np.asarray(sm.out_embeddings[i].embedding[...], np.float64)
    bias = lambda i: np.asarray(sm.biases[i][...], np.float64)
    head_w = np.concatenate([table(0), np.asarray(sm.cluster_weight[...], np.float64)])
    head_b = np.concatenate([bias(0), np.asarray(sm.cluster_bias[...], np.float64)])
    head = lsm(proj(0) @ head_w.T + head_b)
    parts = [head[..., :CUTOFFS[0]]]
    for i in range(1, len(CUTOFFS) + 1):
        parts.append(head[..., -i, None] + lsm(proj(i) @ table(i).T + bias(i)))
    return np.concatenate(parts, -1)


@pytest.mark.parametrize("tied,tie_proj,d_embed", [
    (False, True, None), (True, True, None), (True, False, None), (True, True, 12)])
def test_log_probs_normalised_and_nll_matches(tied, tie_proj, d_embed):
    sm = pair(tied, tie_proj, d_embed).out
    randomize_biases(sm)
    h, t = hidden(), all_targets()
    # one jit for speed (eager op-by-op dispatch is slow on CPU); eager paths: other tests
    lp, nll, nll_chunked = nnx.jit(
        lambda m, h, t: (m.log_probs(h), m.nll(h, t), m.nll(h, t, vocab_chunk=3)))(sm, h, t)
    assert lp.shape == (B, L, V) and lp.dtype == jnp.float32
    assert_close(jnp.exp(lp).sum(-1), jnp.ones((B, L)), 1e-5, "sum p")
    expected = -jnp.take_along_axis(lp, t[..., None], axis=-1)[..., 0]
    assert_close(nll, expected, 1e-5, "nll")
    assert_close(nll_chunked, expected, 1e-5, "nll chunked")
    assert_close(lp, reference_log_probs(sm, h), 1e-5, "reference")


def test_single_cluster_is_full_softmax():
    inp = AdaptiveInput(V, D, [], FACTOR, rngs=rngs(0))
    sm = AdaptiveSoftmax(V, D, [], tie_to=inp, rngs=rngs(1))
    assert inp.projections is None and sm.out_projs is None and sm.cluster_weight is None
    randomize_biases_ = np.random.RandomState(4).standard_normal(V)
    sm.biases[0][...] = jnp.asarray(randomize_biases_, jnp.float32)
    h, t = hidden(), all_targets()
    lsm = jax.nn.log_softmax(h @ inp.embeddings[0].embedding[...].T + randomize_biases_, -1)
    expected = -jnp.take_along_axis(lsm, t[..., None], axis=-1)[..., 0]
    assert_close(sm.nll(h, t), expected, 1e-6, "nll")
    assert_close(sm.log_probs(h), lsm, 1e-6, "log_probs")


def test_tied_shares_params_and_has_fewer():
    tied, untied = pair(True), pair(False)
    for i in range(3):
        assert tied.out.out_embeddings[i].embedding is tied.inp.embeddings[i].embedding
        assert tied.out.out_projs[i].kernel is tied.inp.projections[i].kernel
    # the softmax's own: biases (37), cluster rows (2 x 16) and their biases (2)
    own = V + 2 * 16 + 2
    tables, projs = 5 * 16 + 12 * 8 + 20 * 4, 16 * 16 + 16 * 8 + 16 * 4
    assert n_params(tied) == tables + projs + own
    assert n_params(untied) == 2 * (tables + projs) + own
    assert n_params(pair(True, tie_proj=False)) == tables + 2 * projs + own

    h = hidden()
    before = tied.out.log_probs(h)
    table = tied.inp.embeddings[2].embedding
    table[...] = table[...] + hidden(9, table.shape)  # input side
    after = tied.out.log_probs(h)
    assert not np.allclose(before[..., 17:], after[..., 17:])
    assert_close(after[..., :17] - before[..., :17], jnp.zeros_like(before[..., :17]), 1e-6)


def test_adaptive_input_manual():
    inp = pair(False).inp
    assert inp.dims == (16, 8, 4)
    t = all_targets()
    out = inp(t)
    assert out.shape == (B, L, D) and out.dtype == jnp.float32
    bounds = [(0, 5), (5, 17), (17, 37)]
    tables = [np.asarray(e.embedding[...]) for e in inp.embeddings]
    kernels = [np.asarray(p.kernel[...]) for p in inp.projections]
    for b in range(B):
        for l in range(L):
            w = int(t[b, l])
            i = next(k for k, (lo, hi) in enumerate(bounds) if lo <= w < hi)
            expected = tables[i][w - bounds[i][0]] @ kernels[i] * np.sqrt(D)   # scaled
            assert_close(out[b, l], expected, 1e-6, f"id {w}")
    unscaled = AdaptiveInput(V, D, CUTOFFS, FACTOR, scale_embedding=False, rngs=rngs(0))
    assert_close(unscaled(t) * np.sqrt(D), out, 1e-6, "scale")
    # traced out-of-range ids give zero vectors
    z = jax.jit(lambda ids: inp(ids))(jnp.array([[-1, V]]))
    assert_close(z, jnp.zeros((1, 2, D)), 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True])
def test_gradients_reach_every_cluster(tied):
    graphdef, state, rest = nnx.split(pair(tied), nnx.Param, ...)
    ids, t = all_targets(5), all_targets(7)

    @functools.partial(jax.jit, static_argnums=1)
    def grads(state, vocab_chunk):
        def loss(state):
            m = nnx.merge(graphdef, state, rest)     # bf16 hidden: the loss is still float32
            return m.out.nll(m.inp(ids).astype(jnp.bfloat16), t, vocab_chunk=vocab_chunk).mean()
        return jax.grad(loss)(state)

    dense = grads(state, None)
    for path, g in jax.tree_util.tree_leaves_with_path(dense):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path
    if tied:  # the chunked (scan + remat) logsumexp has the same gradients
        chunked = grads(state, 3)
        for (path, g), c in zip(jax.tree_util.tree_leaves_with_path(dense),
                                jax.tree.leaves(chunked)):
            assert_close(c, g, 1e-5, str(path))


@pytest.mark.slow
def test_dropout_only_in_training():
    sm = AdaptiveSoftmax(V, D, CUTOFFS, FACTOR, dropout=0.5, rngs=rngs(0))
    h, t = hidden(), all_targets()
    nll = nnx.jit(lambda m, h, t: m.nll(h, t))
    a, b = nll(sm, h, t), nll(sm, h, t)
    assert not np.allclose(a, b)                       # training mode: fresh masks per call
    sm.eval()
    lp = nnx.jit(lambda m, h: m.log_probs(h))(sm, h)
    assert_close(nll(sm, h, t), -jnp.take_along_axis(lp, t[..., None], -1)[..., 0], 1e-5)


@pytest.mark.parametrize("cutoffs,match", [
    ([17, 5], r"cutoffs\[1\] = 5"), ([5, 5], r"cutoffs\[1\] = 5"), ([0, 5], r"cutoffs\[0\] = 0"),
    ([5, 37], r"cutoffs\[1\] = 37"), ([5, 40], r"cutoffs\[1\] = 40"),
    ([-3], r"cutoffs\[0\] = -3"), ([5.5], "5.5")])
def test_bad_cutoffs(cutoffs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveInput(V, D, cutoffs, rngs=rngs(0))
    with pytest.raises(ValueError, match=match):
        AdaptiveSoftmax(V, D, cutoffs, rngs=rngs(0))


def test_bad_inputs():
    p = pair(True)
    with pytest.raises(ValueError, match="id 37"):
        p.inp(jnp.array([[1, 37]]))
    with pytest.raises(ValueError, match="id -1"):
        p.out.nll(hidden(), all_targets().at[0, 0].set(-1))
    with pytest.raises(ValueError, match="d_model = 16"):
        p.out.nll(hidden(shape=(B, L, 8)), all_targets())
    with pytest.raises(ValueError, match="hidden.shape"):
        p.out.nll(hidden(), all_targets()[:, :3])
    with pytest.raises(ValueError, match="integer"):
        p.out.nll(hidden(), all_targets().astype(jnp.float32))
    with pytest.raises(ValueError, match="width"):
        AdaptiveInput(V, 4, CUTOFFS, factor=4.0, rngs=rngs(0))
    with pytest.raises(ValueError, match="cutoffs"):
        AdaptiveSoftmax(V, D, [5], tie_to=p.inp, rngs=rngs(0))
