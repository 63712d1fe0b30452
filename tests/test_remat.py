"""Gradient checkpointing (model.remat): the same losses and gradients as without, for the
language model (with dropout, memory and carried state) and the encoder-decoder."""
import jax
import numpy as np
import pytest
from flax import nnx

from helpers import random_pairs, tiny_seq2seq
from srupp_jax.models.srupp_lm import SRUppConfig, SRUppLM

V = 23


def _lm_loss_and_grads(remat):
    model = SRUppLM(SRUppConfig(V, 12, 4, num_layers=3, k=2, dropout=0.1, attn_dropout=0.1,
                                impl="scan", remat=remat), rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 2, 8), 0, V)
    state = model.init_state(3, 8)

    @nnx.jit
    def step(model, state, inputs, targets):
        def loss(model):
            nll, new = model.nll(inputs, targets, state)
            return nll.mean(), new
        return nnx.value_and_grad(loss, has_aux=True)(model)

    out = []
    for segment in range(2):            # the second segment attends to the first's memory
        (value, state), grads = step(model, state, tokens[:, segment], tokens[:, segment])
        out.append((value, grads))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["layer", "attention"])
def test_lm_losses_and_gradients_are_those_without_remat(remat):
    want, got = _lm_loss_and_grads("none"), _lm_loss_and_grads(remat)
    for (v0, g0), (v1, g1) in zip(want, got):
        np.testing.assert_allclose(v1, v0, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


@pytest.mark.slow
def test_seq2seq_gradients_are_those_without_remat():
    src, tgt = random_pairs(0, 3, 7, 7, 13, src_lens=[7, 5, 2], tgt_lens=[7, 3, 6])
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]

    def grads(remat):
        model = tiny_seq2seq(vocab_size=13, remat=remat)
        loss = lambda m: (lambda s, n, w: s / w)(*m.loss(src, tgt_in, tgt_out))
        return nnx.jit(nnx.value_and_grad(loss))(model)

    v0, g0 = grads("none")
    for remat in ("layer", "attention"):
        v1, g1 = grads(remat)
        np.testing.assert_allclose(v1, v0, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_a_bad_remat_is_named():
    with pytest.raises(ValueError, match="model.remat='all'; expected one of none, layer, "
                                         "attention"):
        SRUppConfig(V, 12, 4, remat="all")
