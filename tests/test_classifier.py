"""The classifiers (SRU++ encoder, Transformer baseline): a text's logits do not depend on its
batch's padding, each pooling against a NumPy reference, gradients, the transfer from a
language model (its stack's output reproduced, every mismatch one line) and the scores."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close, jit_method
from srupp_jax.inference import classify
from srupp_jax.models.classifier import POOLINGS, Pooling
from srupp_jax.models.srupp_classifier import SRUppClassifierConfig
from srupp_jax.models.srupp_lm import SRUppConfig
from srupp_jax.models.transformer_classifier import TransformerClassifierConfig
from srupp_jax.tasks import transfer

V, C = 29, 5


def srupp(bidirectional=True, pooling="mean", **kw):
    config = SRUppClassifierConfig(vocab_size=V, num_classes=C, d=10, d_proj=6, num_layers=2,
                                   num_heads=2, bidirectional=bidirectional, pooling=pooling,
                                   impl="scan", **kw)
    return _eval_with_alpha(config.build(nnx.Rngs(1)))


def transformer(pooling="mean"):
    config = TransformerClassifierConfig(vocab_size=V, num_classes=C, d_model=12, num_heads=3,
                                         d_ff=14, num_layers=2, pooling=pooling)
    model = config.build(nnx.Rngs(1))
    model.eval()
    return model


def _eval_with_alpha(model):
    """Evaluation mode, every attention's alpha away from its initial 0 (attention matters)."""
    from srupp_jax.nn.attention import SRUppAttention
    for i, (_, m) in enumerate(nnx.iter_graph(model)):
        if isinstance(m, SRUppAttention):
            m.alpha[...] = jnp.float32(0.5 + 0.3 * i)
    model.eval()
    return model


def texts(seed=0, lengths=(7, 1, 4, 9)):
    """Random token rows (1..V-1) of these lengths, right-padded with 0 to the longest + 2."""
    rng = np.random.RandomState(seed)
    L = max(lengths) + 2
    tokens = np.zeros((len(lengths), L), np.int32)
    for b, n in enumerate(lengths):
        tokens[b, :n] = rng.randint(1, V, n)
    return jnp.asarray(tokens), jnp.asarray(lengths, jnp.int32)


MODELS = [pytest.param(lambda p: srupp(True, p), id="srupp-bi"),
          pytest.param(lambda p: srupp(False, p), id="srupp-uni"),
          pytest.param(transformer, id="transformer")]


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("pooling", [pytest.param("last", marks=pytest.mark.slow), "attention"])
def test_logits_do_not_depend_on_padding(make, pooling):
    """The same texts with 2 or 7 positions of padding after the longest, in another order,
    and the longest alone without any: the same logits (every pooling reads positions by
    the lengths, so these two cover the others' masks too: test_pooling_against_numpy)."""
    logits = jit_method(make(pooling), "logits")
    tokens, lengths = texts()
    batched = np.asarray(logits(tokens, lengths))
    order = np.array([3, 1, 0, 2])
    longer = jnp.pad(tokens, ((0, 0), (0, 5)), constant_values=3)[order]   # other pad ids
    assert_close(logits(longer, lengths[order]), batched[order], 1e-5, "more padding")
    assert_close(logits(tokens[3:, :9], lengths[3:]), batched[3:], 1e-5, "no padding")
    assert np.abs(batched[0] - batched[2]).max() > 1e-4    # different texts, different logits


def _reference_pool(kind, h, pad, w=None, half=None):
    h, pad = np.asarray(h, np.float64), np.asarray(pad)
    out = []
    for b in range(h.shape[0]):
        real = h[b][~pad[b]]
        if kind == "mean":
            out.append(real.mean(0))
        elif kind == "max":
            out.append(real.max(0))
        elif kind == "first":
            out.append(h[b, 0])
        elif kind == "last":
            out.append(np.concatenate([real[-1, :half], h[b, 0, half:]]))
        else:
            s = real @ w
            p = np.exp(s - s.max())
            out.append((p / p.sum()) @ real)
    return np.stack(out)


@pytest.mark.parametrize("kind", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_pooling_against_numpy(kind, bidirectional):
    h = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 8))
    pad = np.arange(6)[None] >= np.array([6, 1, 3, 5])[:, None]
    pool = Pooling(8, kind, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    w = None if pool.score is None else np.asarray(pool.score.kernel[...])[:, 0]
    assert_close(pool(h, jnp.asarray(pad)),
                 _reference_pool(kind, h, pad, w, 4 if bidirectional else 8), 1e-5, kind)


@pytest.mark.parametrize("make", [MODELS[0], *(pytest.param(*m.values, id=m.id,
                                                         marks=pytest.mark.slow)
                                              for m in MODELS[1:])])
def test_gradients_reach_every_parameter_and_never_the_padding(make):
    model = make("attention")
    model.train()
    tokens, lengths = texts(1)
    pad_only = V - 1                                   # an id that occurs only as padding
    tokens = jnp.where(jnp.arange(tokens.shape[1])[None] >= lengths[:, None], pad_only,
                       jnp.minimum(tokens, V - 2))
    labels, weights = jnp.array([0, 4, 2, 1]), jnp.array([1.0, 1.0, 0.0, 1.0])

    @nnx.jit
    def gradients(model):
        def mean_loss(model):
            total, weight = model.loss(tokens, lengths, labels, weights)
            return total / weight
        return nnx.grad(mean_loss)(model)

    grads = gradients(model)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.isfinite(np.asarray(g)).all(), path
        if "embed" not in jax.tree_util.keystr(path):
            assert float(jnp.abs(g).max()) > 0, path
    table = next(g for p, g in jax.tree_util.tree_leaves_with_path(grads)
                 if "embed" in jax.tree_util.keystr(p))
    assert float(jnp.abs(table[pad_only]).max()) == 0.0


# --------------------------------------------------------------------------- transfer
def lm_and_source(unit="byte", vocab_size=V, **kw):
    """A random SRU++ LM (d 10, d' 6, 2 layers, 2 heads) and its `Source` for init_params."""
    lm = SRUppConfig(vocab_size=vocab_size, d=10, d_proj=6, num_layers=2, num_heads=2,
                     impl="scan", **kw).build(nnx.Rngs(7))
    _eval_with_alpha(lm)
    config = ml_collections.ConfigDict(dict(
        task="lm", data=dict(name="text", unit=unit),
        model=dict(arch="srupp", vocab_size=vocab_size, d=10, d_proj=6, num_layers=2, k=1,
                   num_heads=2)))
    return lm, types.SimpleNamespace(path="/runs/lm", config=config,
                                     params=nnx.split(lm, nnx.Param, ...)[1])


def run_config(bidirectional=False, unit="byte"):
    return ml_collections.ConfigDict(dict(data=dict(unit=unit), model=dict(
        vocab_size=V, encoder_bidirectional=bidirectional)))


@pytest.mark.slow
@pytest.mark.parametrize("flat", [False, True])
def test_a_transferred_stack_computes_the_language_models_hidden_states(flat):
    lm, source = lm_and_source()
    if flat:                                         # as the trainer restores them
        from srupp_jax.training.leaves import flatten
        source.params = {k: np.asarray(v) for k, v in flatten(source.params).items()}
    model = srupp(bidirectional=False)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    started = nnx.merge(graphdef, transfer.init_params(run_config(), params, source), rest)
    tokens, lengths = texts(2, lengths=(9, 9))
    expected, _ = jit_method(lm, "hidden")(tokens)  # evaluation mode: no dropout
    h, _ = jit_method(started, "encode")(tokens, lengths)
    assert_close(h[:, :9], expected[:, :9], 1e-6, "hidden")      # causal: the pads come after
    fresh = nnx.split(model, nnx.Param, ...)[1]
    assert_close(started.head.kernel[...], fresh["head"]["kernel"][...], 0, "head kept")


def _lines(error):
    return str(error.value).split(":\n", 1)[1].split(";\n")


def test_every_mismatch_is_one_line():
    _, source = lm_and_source()
    model = srupp(bidirectional=True)                # d / 2 per direction: other shapes
    params = nnx.split(model, nnx.Param, ...)[1]
    with pytest.raises(ValueError, match="train.init_from='/runs/lm' does not fit") as e:
        transfer.init_params(run_config(bidirectional=True), params, source)
    lines = _lines(e)
    assert "rnn.layers.0.v: [2, 1, 10] in the language model, [2, 2, 5] here" in lines
    assert "rnn.layers.1.b: [2, 1, 10] in the language model, [2, 2, 5] here" in lines
    assert any("encoder_bidirectional=False" in line for line in lines)
    assert len([x for x in lines if " here" in x]) == 4   # v and b of both layers (w_o: [6, 30])
    _, words = lm_and_source(unit="word", vocab_size=V + 3)
    with pytest.raises(ValueError) as e:
        transfer.init_params(run_config(), nnx.split(srupp(False), nnx.Param, ...)[1], words)
    assert _lines(e)[0] == "data.unit='byte' here, but the language model reads words; set " \
                           "--config.data.unit=word"
    assert any(line.startswith("embed.embedding: [32, 10]") for line in _lines(e))
    words.config.task = "translation"
    with pytest.raises(ValueError, match="the source is a 'translation' run"):
        transfer.init_params(run_config(unit="word"), nnx.split(srupp(False), nnx.Param,
                                                                 ...)[1], words)


# ----------------------------------------------------------------------------- scores
def test_scores_by_hand():
    gold = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    log_probs = np.log(np.eye(3)[pred] * 0.8 + 0.1)
    out = classify.scores(log_probs, gold, ["a", "b", "c"], "dev")
    assert out["dev_accuracy"] == pytest.approx(4 / 6)
    assert out["dev_loss"] == pytest.approx(-(4 * np.log(0.9) + 2 * np.log(0.1)) / 6)
    each = out["dev_classes"]
    assert each["a"] == dict(precision=1.0, recall=pytest.approx(2 / 3), f1=pytest.approx(0.8),
                             support=3)
    assert each["b"]["precision"] == 0.5 and each["b"]["recall"] == 0.5
    assert each["c"]["precision"] == 0.5 and each["c"]["recall"] == 1.0
    assert out["dev_macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert classify.confusion(pred, gold, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert classify.prediction_lines(log_probs[:2], ["a", "b", "c"], gold[:2]) == [
        "a\t0.9000\ta", "a\t0.9000\ta"]
