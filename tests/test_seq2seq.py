"""The encoder-decoders (seq2seq.SRUppSeq2Seq, transformer_seq2seq.TransformerSeq2Seq): masks,
padding, incremental decoding against the full forward, the loss, gradients, backends, configs,
parameter counts at Table 8's sizes and the FLOP counts."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import BOS, PAD, assert_close, random_pairs, step_by_step, tiny_seq2seq
from srupp_jax.nn.attention import SRUppAttention
from srupp_jax.nn.recurrence import interpret_kernels
from srupp_jax.models.srupp_seq2seq import Seq2SeqConfig
from srupp_jax.models.transformer_seq2seq import TransformerSeq2SeqConfig

V = 13
KINDS = {
    "srupp": dict(kind="srupp"),
    "srupp_k2_bi": dict(kind="srupp", k=2, encoder_bidirectional=True),   # layer 1: no attention
    "transformer": dict(kind="transformer"),
}


class Compiled:
    """A tiny model and its jitted methods, compiled once per module (variables passed as
    arguments); every test uses the shapes of `_batch` where it can, so compiles are shared."""

    def __init__(self, model):
        self.model = model
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        merged = lambda p: nnx.merge(self.graphdef, p, self.rest)
        self._log_probs = jax.jit(lambda p, s, t: merged(p).log_probs(s, t))
        self._encode = jax.jit(lambda p, s: merged(p).encode(s).out)

        def loss(p, s, t_in, t_out):
            smoothed, nll, weight = merged(p).loss(s, t_in, t_out)
            return smoothed, (nll, weight)
        self._loss_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))

    def log_probs(self, src, tgt_in):
        return self._log_probs(self.params, src, tgt_in)

    def encode(self, src):
        return self._encode(self.params, src)

    def loss_and_grad(self, src, tgt_in, tgt_out):
        return self._loss_grad(self.params, src, tgt_in, tgt_out)


@pytest.fixture(scope="module", params=list(KINDS))
def compiled(request):
    return Compiled(tiny_seq2seq(vocab_size=V, **KINDS[request.param]))


def _batch(seed=0, pad=True, src_lens=(7, 4, 2), tgt_lens=(6, 3, 5)):
    """src [3, 7] and tgt [3, 6], rows of src_lens / tgt_lens real tokens when `pad`; returns
    (src, tgt_in = bos + tgt[:-1], tgt_out = tgt)."""
    lens = dict(src_lens=src_lens, tgt_lens=tgt_lens) if pad else {}
    src, tgt = random_pairs(seed, 3, 7, 6, V, **lens)
    tgt_in = jnp.where(tgt == PAD, PAD, jnp.roll(tgt, 1, axis=1)).at[:, 0].set(BOS)
    return src, tgt_in, tgt


def _changed(a, b):
    """Per target position [T]: whether any output of any row changed."""
    return np.asarray(jnp.max(jnp.abs(a - b), axis=(0, 2)) > 1e-5)


def _other(tokens):
    """A different real token (3 .. V-1) in place of each real token."""
    return (tokens - 2) % (V - 3) + 3


@pytest.mark.slow
def test_decoder_sees_every_source_and_targets_up_to_its_own(compiled):
    src, tgt_in, _ = _batch(1, pad=False)
    base = compiled.log_probs(src, tgt_in)
    for t in (1, 3, 5):                                  # perturb target input t
        other = compiled.log_probs(src, tgt_in.at[:, t].set(_other(tgt_in[:, t])))
        assert not _changed(base, other)[:t].any(), t
        assert _changed(base, other)[t:].all(), t
    # a source token (first or last) reaches every target position and every encoder output
    for s in (0, 6):
        moved = src.at[:, s].set(_other(src[:, s]))
        assert _changed(base, compiled.log_probs(moved, tgt_in)).all(), s
        enc_change = jnp.max(jnp.abs(compiled.encode(moved) - compiled.encode(src)), axis=(0, 2))
        assert np.all(np.asarray(enc_change) > 1e-5), s


@pytest.mark.slow
def test_padding_never_changes_a_real_position(compiled):
    src, tgt_in, tgt_out = _batch()
    base = compiled.log_probs(src, tgt_in)
    more = compiled.log_probs(jnp.pad(src, ((0, 0), (0, 3))), jnp.pad(tgt_in, ((0, 0), (0, 2))))
    real = np.asarray(tgt_out != PAD)
    assert_close(np.asarray(more[:, :6])[real], np.asarray(base)[real], 1e-5, "appended pads")


@pytest.mark.slow
def test_incremental_decoding_equals_the_full_forward(compiled):
    src, tgt_in, _ = _batch(2, pad=False)
    full = compiled.log_probs(src, tgt_in)
    assert_close(step_by_step(compiled.model, src, tgt_in), full, 1e-5, "token by token")


# srupp_k2_bi has every kind of SRU++ layer (one gradient compile fewer)
@pytest.mark.slow
@pytest.mark.parametrize("compiled", ["srupp_k2_bi", "transformer"], indirect=True)
def test_loss_sums_and_gradients_reach_every_parameter(compiled):
    """Row 1 is all padding (a filler row): it adds nothing and no NaN."""
    src, tgt_in, tgt_out = _batch(3, src_lens=(7, 0, 2), tgt_lens=(6, 0, 5))
    (smoothed, (nll, weight)), grads = compiled.loss_and_grad(src, tgt_in, tgt_out)
    logp = np.asarray(compiled.log_probs(src, tgt_in), np.float64)
    real = np.asarray(tgt_out != PAD)
    tok_nll = -np.take_along_axis(logp, np.asarray(tgt_out)[..., None], -1)[..., 0]
    eps = compiled.model.label_smoothing
    tok_smooth = (1 - eps) * tok_nll - eps * logp.mean(-1)   # (1-eps) one-hot + eps / V
    assert float(weight) == real.sum()
    np.testing.assert_allclose(float(nll), tok_nll[real].sum(), rtol=1e-5)
    np.testing.assert_allclose(float(smoothed), tok_smooth[real].sum(), rtol=1e-5)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)) and float(jnp.max(jnp.abs(g))) > 0, \
            jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def scan_forward():
    """The scan reference's log-probabilities of `_batch(4)` (bidirectional encoder, k=2)."""
    src, tgt_in, _ = _batch(4)
    return Compiled(tiny_seq2seq(vocab_size=V, **KINDS["srupp_k2_bi"])).log_probs(src, tgt_in)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["assoc", "pallas"])    # pallas: interpret mode on CPU
def test_every_recurrence_backend_gives_the_same_forward(impl, scan_forward):
    src, tgt_in, _ = _batch(4)
    with interpret_kernels():
        other = Compiled(tiny_seq2seq(vocab_size=V, **{**KINDS["srupp_k2_bi"], "impl": impl}))
        assert_close(other.log_probs(src, tgt_in), scan_forward, 1e-5, impl)


# ----------------------------------------------------------------------------------------------
# Configs, sizes, FLOPs.
# ----------------------------------------------------------------------------------------------

def _run_config(**model):
    """configs/base.py's config (every key) with these model keys."""
    c = importlib.import_module("configs.base").get_config()
    c.model.update(model)
    return c


def test_from_config_reads_the_model_keys():
    sizes = dict(vocab_size=100, d=64, d_proj=16, d_embed=32, encoder_layers=2,
                 decoder_layers=3, d_inner=128, num_heads=4)
    ids = dict(pad_id=0, bos_id=1, eos_id=3)                          # the data's
    c = Seq2SeqConfig.from_config(_run_config(k=2, encoder_bidirectional=True,
                                              label_smoothing=0.2, **sizes), **ids)
    assert (c.vocab_size, c.d, c.d_proj, c.d_embed, c.k, c.encoder_layers, c.decoder_layers,
            c.encoder_bidirectional, c.label_smoothing, c.eos_id) == (
        100, 64, 16, 32, 2, 2, 3, True, 0.2, 3)
    t = TransformerSeq2SeqConfig.from_config(_run_config(**sizes), **ids)  # d_model, d_ff: d, d_inner
    assert (t.encoder_layers, t.decoder_layers, t.d_model, t.num_heads, t.d_ff) == (
        2, 3, 64, 4, 128)
    incomplete = _run_config(**sizes)
    del incomplete.model["d_embed"]        # a config without a base.py key is a program error
    with pytest.raises(KeyError):
        Seq2SeqConfig.from_config(incomplete, **ids)


@pytest.mark.parametrize("cls,bad,message", [
    (Seq2SeqConfig, dict(d=0), "model.d=0; expected >= 1"),
    (Seq2SeqConfig, dict(d_proj=6, num_heads=4), "model.d_proj=6 is not divisible"),
    (Seq2SeqConfig, dict(k=7), "model.k=7 with model.encoder_layers=6 leaves the encoder"),
    (Seq2SeqConfig, dict(k=0), "model.k=0; expected >= 1"),
    (Seq2SeqConfig, dict(d=7, encoder_bidirectional=True), "expected an even d"),
    (Seq2SeqConfig, dict(label_smoothing=1.0), "model.label_smoothing=1.0"),
    (Seq2SeqConfig, dict(pad_id=2), "model.pad_id=2 equals"),
    (Seq2SeqConfig, dict(eos_id=100), "model.eos_id=100; expected 0 <= id < vocab_size"),
    (Seq2SeqConfig, dict(impl="cuda"), "model.impl='cuda'"),
    (Seq2SeqConfig, dict(dropout=1.0), "model.dropout=1.0"),
    (TransformerSeq2SeqConfig, dict(d_model=250, num_heads=3), "not divisible by model.num"),
    (TransformerSeq2SeqConfig, dict(decoder_layers=0), "model.decoder_layers=0"),
])
def test_bad_config_values_are_named(cls, bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        cls(vocab_size=100, **bad)


def _param_count(config):
    model = nnx.eval_shape(lambda: config.build(nnx.Rngs(0)))
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_parameter_counts_at_table_8_sizes():
    """Beside the embedding (V * d_embed) and the output bias (V): SRU++ d=1024, d'=256,
    6 + 6 layers 14,997,516 (k=2: 786,438 fewer: W_kv and alpha of 6 layers); the 8 + 8 layer
    Transformer 14,745,600 (see the modules' docstrings for Table 8's 20.4M / 19.6M / 20.1M)."""
    vocab = 10_000
    emb = vocab * 256 + vocab
    assert _param_count(Seq2SeqConfig(vocab_size=vocab, impl="scan")) - emb == 14_997_516
    assert _param_count(Seq2SeqConfig(vocab_size=vocab, k=2, impl="scan")) - emb == 14_211_078
    assert _param_count(TransformerSeq2SeqConfig(vocab_size=vocab)) - emb == 14_745_600


def _kernels(module):
    return {"/".join(map(str, path)): p.shape for path, p in nnx.iter_graph(module)
            if isinstance(p, nnx.Param) and p.ndim == 2}


def test_flops_per_token_counts_the_models_matrices():
    """6 FLOPs per matrix weight and token, read off the built models, plus the attention and
    elementwise terms of the docstrings, equal flops_per_token * T."""
    S, T = 9.0, 7.0
    m = tiny_seq2seq(vocab_size=V, k=2, decoder_layers=3)
    c = m.config
    enc = sum(np.prod(s) for s in _kernels(m.encoder).values())
    dec = sum(np.prod(s) for s in _kernels(m.decoder).values())
    mem = sum(np.prod(l.transform.w_q.kernel.shape) + np.prod(l.transform.w_kv.kernel.shape)
              for l in m.decoder.layers if isinstance(l.transform, SRUppAttention))
    out = np.prod(m.out_proj.kernel.shape) + V * c.d_embed
    matrices = 6 * (S * (enc + mem) + T * (dec + out))
    attn = 12 * c.d_proj * (S * S * 1 + T * (S + T) * 1)           # 1 attention layer each
    elementwise = 3 * 30 * c.d * (S * 2 + T * 3)
    assert np.isclose(c.flops_per_token(S, T) * T, matrices + attn + elementwise)

    t = tiny_seq2seq("transformer", vocab_size=V)
    tc, d = t.config, t.config.d_model
    enc = sum(np.prod(s) for s in _kernels(t.encoder).values())
    dec = sum(np.prod(s) for s in _kernels(t.decoder).values())
    cross_kv = tc.decoder_layers * 2 * d * d                # the cross w_in's k, v columns
    matrices = 6 * (S * (enc + cross_kv) + T * (dec - cross_kv + V * d))
    attn = 12 * d * (S * S * tc.encoder_layers + T * (S + T) * tc.decoder_layers)
    assert np.isclose(tc.flops_per_token(S, T) * T, matrices + attn)
