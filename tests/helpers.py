"""Shared test helpers: random recurrence inputs (never zeros), tolerances, incremental
decoding of a language model checked against its full forward, and scripts on fake devices."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from srupp_jax.inference.generate import generate

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_on_fake_devices(template: str, tmp_path, *, timeout: int, devices: int = 8, **env):
    """The JSON a script prints after "RESULT", run in a subprocess on `devices` fake CPU
    devices (XLA_FLAGS must be set before jax starts). `template` is Python source with
    {root}, {tests} and {tmp} fields (the checkout, tests/, tmp_path); `env` adds variables.
    Fails the test with the script's stderr when it exits non-zero."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", **env)
    script = template.format(root=str(ROOT), tests=str(ROOT / "tests"), tmp=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def random_recurrence_inputs(seed, batch, length, k, d, *, skip=True, pad=False,
                             dropout=False, dtype=jnp.float32, v_scale=1.0, u_scale=1.0,
                             b_scale=1.0):
    """Keyword arguments for sru_recurrence on random inputs.

    v ~ U[-v_scale, v_scale] (the reference init is v_scale = 1), U ~ N(0, u_scale^2),
    b ~ N(0, b_scale^2), c0 ~ N(0, 1); optional padding (about 1 step in 4) and dropout mask.
    """
    keys = jax.random.split(jax.random.PRNGKey(seed), 7)
    kw = dict(
        U=(u_scale * jax.random.normal(keys[0], (batch, length, k, d))).astype(dtype),
        v=jax.random.uniform(keys[1], (2, d), minval=-v_scale, maxval=v_scale),
        b=b_scale * jax.random.normal(keys[2], (2, d)),
        x=(jax.random.normal(keys[3], (batch, length, d)).astype(dtype)
           if skip and k == 3 else None),
        c0=jax.random.normal(keys[4], (batch, d)),
    )
    if pad:
        kw["mask_pad"] = jax.random.bernoulli(keys[5], 0.25, (batch, length))
    if dropout:
        kw["mask_c"] = jax.random.bernoulli(keys[6], 0.7, (batch, d)) / 0.7
    return kw


def assert_close(actual, expected, rtol, name=""):
    """|actual - expected| <= rtol * max|expected| elementwise (scale-aware relative check)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    scale = max(np.max(np.abs(expected)), 1e-30)
    err = np.max(np.abs(actual - expected)) / scale
    assert err <= rtol, f"{name}: relative error {err:.3g} > {rtol:.3g}"


def numpy_recurrence(U, v, b, x=None, c0=None, mask_c=None, mask_pad=None, reverse=False):
    """The SRU recurrence written out step by step in float64 NumPy (ARCHITECTURE.md, the recurrence)."""
    U = np.asarray(U, np.float64)
    batch, length, k, d = U.shape
    v, b = np.asarray(v, np.float64), np.asarray(b, np.float64)
    x_skip = U[:, :, 3] if k == 4 else (None if x is None else np.asarray(x, np.float64))
    c = np.zeros((batch, d)) if c0 is None else np.asarray(c0, np.float64)
    m = np.ones((batch, d)) if mask_c is None else np.asarray(mask_c, np.float64)
    pad = np.zeros((batch, length), bool) if mask_pad is None else np.asarray(mask_pad, bool)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    h = np.zeros((batch, length, d))
    for t in (reversed(range(length)) if reverse else range(length)):
        f = sig(U[:, t, 1] + v[0] * c + b[0])
        r = sig(U[:, t, 2] + v[1] * c + b[1])
        c_new = f * c + (1 - f) * U[:, t, 0]
        h_t = c_new * m * r if x_skip is None else x_skip[:, t] + (c_new - x_skip[:, t]) * m * r
        keep = ~pad[:, t, None]
        h[:, t] = np.where(keep, h_t, 0.0)
        c = np.where(keep, c_new, c)
    return h, c


def jit_log_probs(model):
    """jax.jit of model.log_probs(tokens, state, attend=mask) (eager calls token by token
    are slow); mask: optional, None by default."""
    graphdef, variables = nnx.split(model)
    return jax.jit(lambda tok, state, mask=None: nnx.merge(graphdef, variables).log_probs(
        tok, state, attend=mask))


def token_by_token(model, seq, mem_len):
    """Log-probabilities [batch, L, vocab] of `seq` [batch, L] fed one token at a time,
    carrying the state from model.init_state(batch, mem_len)."""
    state = model.init_state(seq.shape[0], mem_len)
    out, step = [], jit_log_probs(model)
    for t in range(seq.shape[1]):
        logp, state = step(seq[:, t:t + 1], state)
        out.append(logp)
    return jnp.concatenate(out, axis=1)


def check_incremental_decoding(model, seq, prompt_len=4, num_tokens=6):
    """For a language model (SRUppLM or a baseline) and `seq` [batch, L]: token by token with
    memory for all of `seq` == one forward over `seq` (relative 1e-5); greedy `generate` after
    the prompt seq[:, :prompt_len] == the argmax of one forward over prompt and output."""
    log_probs = jit_log_probs(model)
    full, _ = log_probs(seq, None)
    assert_close(token_by_token(model, seq, seq.shape[1]), full, 1e-5, "token by token")
    prompt = seq[:, :prompt_len]
    gen = generate(model, prompt, num_tokens, key=jax.random.PRNGKey(0), mem_len=16,
                   temperature=0)
    lp, _ = log_probs(jnp.concatenate([prompt, gen], 1)[:, :-1], None)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(lp[:, prompt_len - 1:], -1)),
                                  np.asarray(gen))


def check_segments_with_memory(model, seq, first, short_mem=None, atol=1e-5):
    """Two segments seq[:, :first] and seq[:, first:] ([batch, L]) carrying the state: with
    memory of `first` slots == one forward over `seq` (causal mask); with `short_mem` < first
    slots == one forward with the mask that cuts the keys the memory dropped, which differs
    from the causal forward by more than `atol` (relative tolerance 1e-5 throughout)."""
    log_probs = jit_log_probs(model)
    full, _ = log_probs(seq, None)
    state = model.init_state(seq.shape[0], first)        # memory holds all of segment 1
    a, state = log_probs(seq[:, :first], state)
    b, _ = log_probs(seq[:, first:], state)
    assert_close(jnp.concatenate([a, b], 1), full, 1e-5, "memory >= segment")
    if short_mem is None:
        return
    state = model.init_state(seq.shape[0], short_mem)
    a, state = log_probs(seq[:, :first], state)
    b, _ = log_probs(seq[:, first:], state)
    p, j = np.arange(seq.shape[1])[:, None], np.arange(seq.shape[1])[None, :]
    mask = (j <= p) & ((p < first) | (j >= first - short_mem))
    cut, _ = log_probs(seq, None, jnp.asarray(mask))
    assert_close(jnp.concatenate([a, b], 1), cut, 1e-5, "memory < segment")
    assert not np.allclose(cut[:, first:], full[:, first:], atol=atol)  # the cut mattered


def check_second_segment_gradients(model, seq, *, stop_carry=False, differs=1e-6):
    """Segment 2 (tokens seq[:, 5:10], targets seq[:, 6:11]; seq [batch, >= 11]) after
    segment 1 (seq[:, :4], memory of 4 slots): the gradient of its loss with segment 1 run
    inside with the same parameters (stop_carry: its state cut as the training loop cuts the
    carry) reaches every parameter and equals the gradient with segment 1's state held fixed
    (the model lets none through its memory); the loss moves by more than `differs` when that
    state is replaced by an empty one. Returns (the model, segment 1's state) for more checks."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = seq.shape[0]

    def second_segment_loss(params, state=None):
        m = nnx.merge(graphdef, params, rest)
        if state is None:  # run segment 1 inside, with the same parameters
            _, state = m.nll(seq[:, :4], seq[:, 1:5], m.init_state(batch, 4))
            if stop_carry:
                state = jax.tree.map(jax.lax.stop_gradient, state)
        return m.nll(seq[:, 5:10], seq[:, 6:11], state)[0].mean()

    m = nnx.merge(graphdef, params, rest)
    first_segment = lambda params: nnx.merge(graphdef, params, rest).nll(
        seq[:, :4], seq[:, 1:5], m.init_state(batch, 4))[1]
    fixed_state = jax.jit(first_segment)(params)    # as computed inside the joint gradient
    grad = jax.jit(jax.grad(second_segment_loss))
    joint = grad(params)
    fixed = grad(params, fixed_state)
    for (path, g), g2 in zip(jax.tree_util.tree_leaves_with_path(joint), jax.tree.leaves(fixed)):
        assert float(jnp.max(jnp.abs(g))) > 0, path
        assert_close(g, g2, 1e-6, str(path))
    loss = jax.jit(second_segment_loss)
    fresh = loss(params, m.init_state(batch, 4))
    assert abs(float(fresh) - float(loss(params, fixed_state))) > differs
    return m, fixed_state


# ----------------------------------------------------------------------------------------------
# The written vocabulary rules of the official SRU++ experiments (issue 27), as plain loops.
# ----------------------------------------------------------------------------------------------

def written_counts_rule(lines):
    """`<eos>` first, then the words of train by count, descending, ties in order of first
    occurrence; a line is its whitespace words (no lower-casing), `<eos>` not counted."""
    counts, first = {}, {}
    for line in lines:
        for w in line.split():
            counts[w] = counts.get(w, 0) + 1
            first.setdefault(w, len(first))
    ranked = sorted(counts, key=lambda w: (-counts[w], first[w]))
    return ["<eos>"] + [w for w in ranked if w != "<eos>"]     # added first, never again


def written_byte_values_rule(data: bytes):
    """enwik8's: id = rank of the byte value among the distinct byte values of the file."""
    values = sorted(set(data))
    return values, [values.index(b) for b in data]


# ----------------------------------------------------------------------------------------------
# Encoder-decoders (tests/test_seq2seq.py, tests/test_decode.py).
# ----------------------------------------------------------------------------------------------

PAD, BOS, EOS = 0, 1, 2


def tiny_seq2seq(kind="srupp", vocab_size=13, **kw):
    """A tiny encoder-decoder in evaluation mode with odd sizes (pad 0, bos 1, eos 2); SRU++
    with every alpha set away from its initial 0, so that attention matters."""
    from srupp_jax.nn.attention import SRUppAttention
    from srupp_jax.models.srupp_seq2seq import Seq2SeqConfig
    from srupp_jax.models.transformer_seq2seq import TransformerSeq2SeqConfig
    if kind == "srupp":
        base = dict(d=8, d_proj=6, num_heads=2, d_embed=5, encoder_layers=2, decoder_layers=2,
                    impl="scan")
        config = Seq2SeqConfig(vocab_size=vocab_size, **{**base, **kw})
    else:
        base = dict(d_model=8, num_heads=2, d_ff=12, encoder_layers=2, decoder_layers=2)
        config = TransformerSeq2SeqConfig(vocab_size=vocab_size, **{**base, **kw})
    model = config.build(nnx.Rngs(0))
    for i, (_, m) in enumerate(nnx.iter_graph(model)):
        if isinstance(m, SRUppAttention):
            m.alpha[...] = jnp.float32(0.6 + 0.3 * (i % 3))
    model.eval()
    return model


def random_pairs(seed, batch, src_len, tgt_len, vocab_size, *, src_lens=None, tgt_lens=None):
    """Random (src [batch, src_len], tgt [batch, tgt_len]) int32 of real tokens (3 .. V-1),
    right-padded with PAD after src_lens / tgt_lens real tokens (None: no padding)."""
    ks, kt = jax.random.split(jax.random.PRNGKey(seed))
    src = np.array(jax.random.randint(ks, (batch, src_len), 3, vocab_size), np.int32)
    tgt = np.array(jax.random.randint(kt, (batch, tgt_len), 3, vocab_size), np.int32)
    for arr, lens in ((src, src_lens), (tgt, tgt_lens)):
        for b, n in enumerate(lens or ()):
            arr[b, n:] = PAD
    return jnp.asarray(src), jnp.asarray(tgt)


def jit_method(model, name):
    """model.<name>(*args) under jax.jit, the model's variables passed as arguments (read when
    called, so later changes to the model count)."""
    graphdef, _ = nnx.split(model)
    fn = jax.jit(lambda variables, *args: getattr(nnx.merge(graphdef, variables), name)(*args))
    return lambda *args: fn(nnx.split(model)[1], *args)


def step_by_step(model, src, tgt_in):
    """Log-probabilities [B, T, V] of tgt_in fed one token at a time through encode,
    init_decode_state and decode_step (jitted)."""
    graphdef, variables = nnx.split(model)
    merged = lambda v: nnx.merge(graphdef, v)
    init = jax.jit(lambda v, s: merged(v).init_decode_state(merged(v).encode(s),
                                                            tgt_in.shape[1]))
    step = jax.jit(lambda v, st, tok, t: merged(v).decode_step(st, tok, t))
    st, out = init(variables, src), []
    for t in range(tgt_in.shape[1]):
        logp, st = step(variables, st, tgt_in[:, t], t)
        out.append(logp)
    return jnp.stack(out, axis=1)


def first_fast(cases, *, unpack: bool = True) -> list:
    """Parameter sets of which the first runs in the fast tier and the rest are marked slow
    (`-m "not slow"`): the reference checked at one size there, at every size in the full
    suite. unpack: each case is a tuple of several arguments (False: one argument)."""
    import pytest
    return [case if i == 0 else pytest.param(*(case if unpack else (case,)),
                                             marks=pytest.mark.slow)
            for i, case in enumerate(cases)]
