"""Greedy and beam search (srupp_jax.inference.decode) on tiny encoder-decoders: greedy against the
teacher-forced argmax, beam 1 against greedy, beam search against an exhaustive search,
early stopping, length limits, batching."""
import contextlib
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import BOS, EOS, PAD, random_pairs, tiny_seq2seq
from srupp_jax.inference import decode

V = 13
A, B = 0.5, 2          # max_len_a, max_len_b: limits floor(0.5 n + 2)


@pytest.fixture(scope="module", params=["srupp", "transformer"])
def model(request):
    return tiny_seq2seq(request.param, vocab_size=V, **({"k": 2} if request.param == "srupp"
                                                        else {}))


def _src(seed=0):
    """[3, 7] sources of 7, 4 and 2 real tokens: limits 5, 4, 3; T_out = 6."""
    return random_pairs(seed, 3, 7, 1, V, src_lens=[7, 4, 2])[0]


@functools.partial(jax.jit, static_argnums=0)
def _log_probs(graphdef, variables, src, tgt_in):
    return nnx.merge(graphdef, variables).log_probs(src, tgt_in)


def _teacher_forced(model, src, tokens):
    """log p of each output token given the previous ones: [B, T_out] (0 after eos)."""
    tgt_in = jnp.concatenate([jnp.full((src.shape[0], 1), BOS), tokens[:, :-1]], 1)
    tgt_in = jnp.where(tgt_in == EOS, PAD, tgt_in)     # no position after eos matters
    logp = _log_probs(*nnx.split(model), src, tgt_in)
    picked = jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]
    return logp, jnp.where(tokens == PAD, 0.0, picked)


def _check_output(tokens, limits):
    """Each row: real tokens, then eos within its limit, then pads only."""
    for row, limit in zip(np.asarray(tokens), limits):
        n = list(row).index(EOS)
        assert n <= limit and np.all(row[:n] > EOS) and np.all(row[n + 1:] == PAD), row


@pytest.mark.slow
def test_greedy_is_the_argmax_of_the_teacher_forced_model(model):
    src = _src()
    tokens, scores = decode.greedy(model, src, max_len_a=A, max_len_b=B)
    assert tokens.shape == (3, 6) and tokens.dtype == jnp.int32
    _check_output(tokens, [5, 4, 3])
    logp, picked = _teacher_forced(model, src, tokens)
    logp = logp.at[..., PAD].set(-jnp.inf).at[..., BOS].set(-jnp.inf)
    for b, limit in enumerate([5, 4, 3]):
        n = list(np.asarray(tokens[b])).index(EOS)
        expected = np.array(jnp.argmax(logp[b, :n + 1], -1))
        if n == limit:                                   # eos forced at the limit
            expected[-1] = EOS
        np.testing.assert_array_equal(np.asarray(tokens[b, :n + 1]), expected)
    np.testing.assert_allclose(scores, picked.sum(1), rtol=1e-5)


@pytest.mark.slow
def test_beam_1_is_greedy(model):
    src = _src(1)
    g_tokens, g_scores = decode.greedy(model, src, max_len_a=A, max_len_b=B)
    b_tokens, b_scores = decode.beam_search(model, src, beam_size=1, max_len_a=A, max_len_b=B)
    np.testing.assert_array_equal(b_tokens, g_tokens)
    np.testing.assert_allclose(b_scores, g_scores, rtol=1e-6)


@pytest.mark.slow
def test_beam_search_rows_do_not_depend_on_the_batch(model):
    src = _src(2)
    tokens, scores = decode.beam_search(model, src, beam_size=5, max_len_a=A, max_len_b=B)
    _check_output(tokens, [5, 4, 3])
    _, picked = _teacher_forced(model, src, tokens)
    np.testing.assert_allclose(scores, picked.sum(1), rtol=1e-5)    # alpha 0: log p
    for b in range(3):
        alone, s = decode.beam_search(model, src[b:b + 1], beam_size=5, max_len_a=A,
                                      max_len_b=B)
        np.testing.assert_array_equal(alone[0], tokens[b])
        np.testing.assert_allclose(s[0], scores[b], rtol=1e-5)


@contextlib.contextmanager
def _eos_bias(model, delta):
    """The model with `delta` added to the output bias of eos, for the duration."""
    bias = model.out_bias[...]
    model.out_bias[...] = bias.at[EOS].add(delta)
    try:
        yield model
    finally:
        model.out_bias[...] = bias


def test_lengths_stop_at_the_limit(model):
    """With eos made very unlikely every row runs to its own limit, then eos is forced."""
    src = _src(3)
    with _eos_bias(model, -30.0):
        for tokens, _ in (decode.greedy(model, src, max_len_a=A, max_len_b=B),
                          decode.beam_search(model, src, beam_size=5, max_len_a=A,
                                             max_len_b=B)):
            np.testing.assert_array_equal(np.argmax(np.asarray(tokens) == EOS, 1), [5, 4, 3])
            _check_output(tokens, [5, 4, 3])


def test_early_stop_returns_what_the_full_search_returns(model):
    """With eos likely, every sentence soon has a finished hypothesis no live beam can beat:
    the search stops there (before T_out), with the result of the search to the end."""
    src = _src(4)
    kw = dict(beam_size=5, length_penalty=0.0, max_len_a=A, max_len_b=float(B))
    with _eos_bias(model, 2.0):
        graphdef, variables = nnx.split(model)
        early = decode._beam(graphdef, variables, src, **kw)     # beam_search's compile
        full = decode._beam(graphdef, variables, src, early_stop=False, **kw)
    np.testing.assert_array_equal(early[0], full[0])
    np.testing.assert_allclose(early[1], full[1], rtol=1e-6)
    assert int(full[2]) == 6 and int(early[2]) < 6


class PrefixTable(nnx.Module):
    """A model of the decoding interface whose next-token log-probabilities come from a random,
    peaked table indexed by a hash of the source and the prefix: distributions that change
    with every token, on V = 5 (pad 0, bos 1, eos 2, real tokens 3 and 4)."""
    pad_id, bos_id, eos_id = PAD, BOS, EOS
    size = 97

    def __init__(self, seed):
        key = jax.random.PRNGKey(seed)
        self.table = nnx.Param(jax.nn.log_softmax(3.0 * jax.random.normal(key, (self.size, 5))))

    def encode(self, src):
        return src

    def init_decode_state(self, src, max_len):
        return jnp.sum(src * (jnp.arange(src.shape[1]) + 1), axis=1) % self.size

    def decode_step(self, state, tokens, t):
        state = (state * 31 + tokens + 1) % self.size
        return self.table[...][state], state


def _exhaustive(model, src_row, limit, alpha):
    """The best (hypothesis, score) over every output of <= limit real tokens then eos."""
    table = np.asarray(model.table[...], np.float64)
    best = None
    for n in range(limit + 1):
        for y in itertools.product((3, 4), repeat=n):
            hyp = list(y) + [EOS]
            state = int(model.init_decode_state(src_row[None], 0)[0])
            score = 0.0
            for last, tok in zip([BOS] + hyp[:-1], hyp):
                state = (state * 31 + last + 1) % model.size
                score += table[state, tok]
            score /= len(hyp) ** alpha
            if best is None or score > best[1]:
                best = (hyp, score)
    return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_equals_exhaustive_search(alpha):
    model = PrefixTable(seed=4)
    src = jnp.asarray([[3, 4, 4, 3, 2, 2], [4, 3, 3, 2, 0, 0], [3, 3, 4, 4, 0, 0]], jnp.int32)
    limits = [4, 3, 3]                                   # floor(0.5 n + 1), n = 6, 4, 4
    best = [_exhaustive(model, np.asarray(row), limit, alpha)
            for row, limit in zip(src, limits)]
    greedy, _ = decode.greedy(model, src, max_len_a=0.5, max_len_b=1)
    # 24 beams hold every prefix and every candidate (8 beams x 3 at the last free step)
    tokens, scores = decode.beam_search(model, src, beam_size=24, length_penalty=alpha,
                                        max_len_a=0.5, max_len_b=1)
    for b, (hyp, score) in enumerate(best):
        np.testing.assert_array_equal(np.asarray(tokens[b, :len(hyp)]), hyp)
        assert np.all(np.asarray(tokens[b, len(hyp):]) == PAD)
        np.testing.assert_allclose(float(scores[b]), score, rtol=1e-5)
    assert any(len(hyp) > 2 for hyp, _ in best)          # not a trivial eos-first answer
    assert not np.array_equal(np.asarray(greedy[:, :5]), np.asarray(tokens))  # search mattered


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="beam_size=0; expected an integer >= 1"):
        decode.check_settings(beam_size=0)
    with pytest.raises(ValueError, match="length_penalty=-1"):
        decode.check_settings(length_penalty=-1)
    with pytest.raises(ValueError, match="max_len_a=-0.5"):
        decode.check_settings(max_len_a=-0.5)
