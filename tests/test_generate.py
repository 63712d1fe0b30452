"""Fast inference (srupp_jax/inference/generate.py, main.py --mode=generate).

What is exactly equal (float32, up to rounding):
  * token by token carrying LMState with mem_len >= sequence length  ==  the whole sequence in
    one call (causal mask), and == chunks of C tokens with the same memory;
  * token by token with mem_len = N < length  ==  one call over the whole sequence with an
    explicit sliding-window mask (each position sees the N previous positions and itself),
    == `windowed_log_probs` in chunks with memory N (the prompt path of `generate`).
  (Chunks of C > 1 with the ordinary causal mask and memory N see N + up to C positions, so
  they are NOT equal to token by token once N < length; generate never does that.)
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from srupp_jax.inference.generate import generate, generate_iter, sample_logits, windowed_log_probs
from srupp_jax.models.srupp_lm import SRUppConfig, SRUppLM
from tests.helpers import jit_log_probs, token_by_token

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 2e-6, 2e-6


def tiny(k=1, num_layers=3, cutoffs=None, seed=0):
    config = SRUppConfig(29, 16, 4, num_layers, k=k, cutoffs=cutoffs or (), dropout=0.1,
                         attn_dropout=0.1)
    model = SRUppLM(config, rngs=nnx.Rngs(seed))
    for layer in model.rnn.layers:
        if hasattr(layer.transform, "alpha"):
            layer.transform.alpha[...] = 0.8  # attention matters
    model.eval()
    return model


def tokens(batch, length, seed=0):
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, 29, jnp.int32)


def banded_full(model, seq, window):
    """The whole sequence in one call, each position attending to `window` previous ones."""
    x = model.embed(seq)
    length = seq.shape[1]  # static under jit
    p, j = jnp.arange(length)[:, None], jnp.arange(length)[None, :]
    mask = (j <= p) & (j >= p - window)
    c0 = jnp.zeros((model.num_layers, seq.shape[0], model.d))
    h, _, _ = model.rnn(x, c0, attend=mask)
    return jax.nn.log_softmax(model.head(h), axis=-1)


@pytest.mark.parametrize("k,num_layers", [(1, 3), (5, 5)])
def test_incremental_equals_full_forward(k, num_layers):
    model = tiny(k, num_layers)
    assert sum(model.rnn.has_attention) == (3 if k == 1 else 1)
    seq = tokens(2, 10)
    full, _ = jit_log_probs(model)(seq, None)
    np.testing.assert_allclose(token_by_token(model, seq, 10), full, rtol=RTOL, atol=ATOL)
    state, parts, step = model.init_state(2, 12), [], jit_log_probs(model)
    for s in range(0, 10, 4):  # chunks 4, 4, 2 with memory >= length
        logp, state = step(seq[:, s:s + 4], state)
        parts.append(logp)
    np.testing.assert_allclose(jnp.concatenate(parts, 1), full, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("k,num_layers", [(1, 3), (5, 5)])
def test_incremental_with_short_memory_is_a_sliding_window(k, num_layers):
    model = tiny(k, num_layers)
    seq = tokens(2, 12, seed=1)
    step = token_by_token(model, seq, 3)
    graphdef, variables = nnx.split(model)
    merged = lambda f: jax.jit(lambda *a: f(nnx.merge(graphdef, variables), *a))
    np.testing.assert_allclose(step, merged(banded_full)(seq, 3), rtol=RTOL, atol=ATOL)
    state, parts, windowed = model.init_state(2, 3), [], merged(windowed_log_probs)
    for s in range(0, 12, 5):  # generate's prompt path: chunks 5, 5, 2 with memory 3
        logp, state = windowed(seq[:, s:s + 5], state)
        parts.append(logp)
    np.testing.assert_allclose(jnp.concatenate(parts, 1), step, rtol=RTOL, atol=ATOL)
    if k == 1:  # the plain causal chunk sees more than the window: not the same function
        causal = jit_log_probs(model)(seq, model.init_state(2, 3))[0]
        assert not np.allclose(causal, step, atol=1e-4)


def greedy_reference(model, prompt, num_tokens, mem_len):
    """Python loop: feed the prompt one token at a time, then argmax decoding."""
    state = model.init_state(prompt.shape[0], mem_len)
    step = jit_log_probs(model)
    for t in range(prompt.shape[1] - 1):
        _, state = step(prompt[:, t:t + 1], state)
    tok, out = prompt[:, -1], []
    for _ in range(num_tokens):
        logp, state = step(tok[:, None], state)
        tok = jnp.argmax(logp[:, 0], axis=-1).astype(jnp.int32)
        out.append(tok)
    return np.stack(out, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("cutoffs", [None, [10, 20]])
def test_greedy_and_top1_equal_python_argmax_loop(cutoffs):
    model = tiny(cutoffs=cutoffs)
    prompt = tokens(2, 5, seed=2)
    ref = greedy_reference(model, prompt, 8, mem_len=6)
    kw = dict(key=jax.random.PRNGKey(3), mem_len=6)
    np.testing.assert_array_equal(generate(model, prompt, 8, temperature=0.0, **kw), ref)
    np.testing.assert_array_equal(generate(model, prompt, 8, top_k=1, **kw), ref)


def test_prompt_longer_than_memory():
    model = tiny()
    prompt = tokens(2, 13, seed=4)
    kw = dict(key=jax.random.PRNGKey(0), mem_len=4, temperature=0.0)
    out = generate(model, prompt, 6, **kw)  # chunks of 4 = mem_len
    assert out.shape == (2, 6) and out.dtype == jnp.int32
    np.testing.assert_array_equal(out, greedy_reference(model, prompt, 6, mem_len=4))
    np.testing.assert_array_equal(generate(model, prompt, 6, chunk=1, **kw), out)


@pytest.mark.slow
def test_same_key_same_sample_and_blocks_equal_one_scan():
    model = tiny()
    model.train()  # generate switches to eval mode itself and restores the mode
    prompt = tokens(3, 4, seed=5)
    kw = dict(mem_len=8, temperature=1.3, top_p=0.95)
    a = generate(model, prompt, 10, key=jax.random.PRNGKey(7), **kw)
    b = generate(model, prompt, 10, key=jax.random.PRNGKey(7), **kw)
    c = generate(model, prompt, 10, key=jax.random.PRNGKey(8), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    blocks = list(generate_iter(model, prompt, 10, key=jax.random.PRNGKey(7), block=4, **kw))
    assert [blk.shape for blk in blocks] == [(3, 4), (3, 4), (3, 2)]
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), a)
    assert not model.dropout.deterministic  # mode restored
    assert int(jnp.min(a)) >= 0 and int(jnp.max(a)) < 29


def test_sample_logits_filters():
    probs = jnp.array([0.05, 0.5, 0.15, 0.3])
    logits = jnp.tile(jnp.log(probs), (4000, 1))
    key = jax.random.PRNGKey(0)
    drawn = lambda **kw: set(np.unique(sample_logits(key, logits, **kw)).tolist())
    assert drawn() == {0, 1, 2, 3}
    assert drawn(top_p=0.4) == {1}
    assert drawn(top_p=0.75) == {1, 3}            # 0.5 + 0.3 >= 0.75
    assert drawn(top_p=0.9) == {1, 3, 2}          # 0.8 < 0.9 <= 0.95
    assert drawn(top_k=2) == {1, 3}
    assert drawn(top_k=2, top_p=0.4) == {1}
    assert drawn(temperature=0.0) == {1}
    out = sample_logits(key, logits, top_k=100)  # k >= V: no filter
    assert out.shape == (4000,) and out.dtype == jnp.int32
    frac = np.mean(np.asarray(sample_logits(key, logits, top_p=0.75)) == 1)
    assert abs(frac - 0.5 / 0.8) < 0.03             # renormalised nucleus


@pytest.mark.parametrize("kw,match", [(dict(temperature=-0.5), "temperature=-0.5"),
                                      (dict(top_k=-1), "top_k=-1"),
                                      (dict(top_p=0.0), "top_p=0.0"),
                                      (dict(top_p=1.5), "top_p=1.5")])
def test_sample_logits_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        sample_logits(jax.random.PRNGKey(0), jnp.zeros((1, 5)), **kw)


@pytest.mark.slow
def test_main_generate_end_to_end(tmp_path):
    workdir = str(tmp_path / "wd")
    overrides = ["--config=configs/default.py", f"--workdir={workdir}",
                 "--config.model.d=16", "--config.model.d_proj=4",
                 "--config.model.num_layers=2", "--config.train.steps=3",
                 "--config.train.warmup_steps=1", "--config.train.batch_size=2",
                 "--config.train.unroll=8", "--config.eval.unroll=16",
                 "--config.eval.mem_len=16", "--config.eval.max_tokens=500",
                 "--config.data.max_bytes=100000"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = lambda *args: subprocess.run([sys.executable, "main.py", *overrides, *args],
                                       cwd=ROOT, env=env, capture_output=True, text=True,
                                       timeout=300)
    trained = run()
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = run("--mode=generate", "--prompt=def f(", "--num_tokens=20", "--top_k=5",
              "--seed=3")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("def f(") and out.stdout.endswith("\n")
    assert len(out.stdout) > len("def f(\n")


def test_generate_without_checkpoint_names_the_workdir(tmp_path):
    from configs import default
    from srupp_jax.programs.modes import restore
    config = default.get_config()
    config.model.d, config.model.d_proj, config.model.num_layers = 16, 4, 2
    config.model.vocab_size = 256
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
        restore(config, str(tmp_path))
