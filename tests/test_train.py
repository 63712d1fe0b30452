"""Training end to end on the embedded corpus: train -> checkpoint -> eval, resume, configs."""
import importlib
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from srupp_jax.programs import modes
from srupp_jax.nn.attention import attention_layers
from srupp_jax.training.steps import make_train_step
from srupp_jax.tasks.lm import lm_loss
from srupp_jax.tasks.lm_eval import make_evaluator
from srupp_jax.training.optim import make_optimizer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**train_overrides):
    """configs/default.py shrunk to seconds: d=16, 2 layers, 8 streams x 16 tokens."""
    config = importlib.import_module("configs.default").get_config()
    m, t, e = config.model, config.train, config.eval
    m.vocab_size = 256  # bytes (the data would give the same; build_model needs it resolved)
    m.d, m.d_proj, m.num_layers = 16, 4, 2
    m.dropout = m.attn_dropout = 0.1
    config.data.max_bytes = 200_000
    t.batch_size, t.unroll, t.steps, t.warmup_steps = 4, 16, 6, 2
    t.log_every, t.eval_every, t.checkpoint_every = 1, 3, 3
    e.batch_size, e.unroll, e.mem_len, e.max_tokens = 2, 32, 32, 2_000
    for key, value in train_overrides.items():
        setattr(t, key, value)
    return config


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["train_loss"] for r in rows if r["split"] == "train"}


def test_train_checkpoint_eval_end_to_end(tmp_path):
    config = tiny_config()
    last = modes.train(config, str(tmp_path))
    assert np.isfinite(last["train_loss"]) and "dev_bpc" in last
    losses = _losses(tmp_path)
    assert sorted(losses) == list(range(1, 7))
    assert (tmp_path / "tensorboard").exists()
    out = modes.evaluate(config, str(tmp_path))
    assert out["step"] in (3, 6)
    assert 0 < out["dev_bpc"] < 9 and 0 < out["test_bpc"] < 9


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path):
    """2N steps straight == N steps, stop, restart, N more (same losses, exactly)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    modes.train(tiny_config(), str(straight))
    modes.train(tiny_config(stop_at=3), str(resumed))  # as if preempted at 3
    assert sorted(_losses(resumed)) == [1, 2, 3]
    modes.train(tiny_config(), str(resumed))
    a, b = _losses(straight), _losses(resumed)
    assert sorted(b) == list(range(1, 7))
    assert a == b, (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("same_length", [True, False])
def test_batched_eval_predicts_every_token_once(same_length):
    """Evaluation with 2 streams equals evaluating each stream alone with batch 1, the tail
    token after the last stream included: N - 1 = 2 L + 1 targets, L = 16, unroll 8 (so both
    ways cut the same segments), memory 8."""
    config = tiny_config()
    e = config.eval
    e.unroll, e.mem_len, e.same_length = 8, 8, same_length
    model = modes.build_model(config, nnx.Rngs(0))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, 2 * 16 + 2)
    L, n = 16, len(tokens)

    def total(batch_size, toks):
        e.batch_size = batch_size
        return make_evaluator(model, config, mesh)(params, rest, toks) * (len(toks) - 1)

    first = total(1, tokens[:L + 1])    # stream 0: targets 1 .. L
    last = total(1, tokens[L:])         # stream 1 and the tail: targets L+1 .. N-1
    np.testing.assert_allclose(total(2, tokens), first + last, rtol=1e-6)
    assert n - 1 == 2 * L + 1


@pytest.mark.slow
def test_resume_mid_accumulation_is_bit_identical(tmp_path):
    """With gradient accumulation (k = 2, 3 updates = 6 micro-steps), stopping after micro-step
    3, half-way through an accumulation, and resuming gives exactly the straight run's losses:
    the accumulated gradient and the micro-step counter travel in the checkpoint."""
    config = lambda **kw: tiny_config(steps=3, warmup_steps=1, grad_accum_steps=2, **kw)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    modes.train(config(), str(straight))
    modes.train(config(stop_at=3), str(resumed))
    modes.train(config(), str(resumed))
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == list(range(1, 7)) and a == b, (a, b)


@pytest.mark.parametrize("key,value,match", [
    ("model.d_proj", 6, "model.d_proj=6 is not divisible by model.num_heads=4"),
    ("model.k", 0, r"model.k=0; expected >= 1"),
    ("train.batch_size", 3, "train.batch_size=3 is not divisible by the 2 devices"),
    ("train.warmup_steps", 10, r"train.warmup_steps=10; expected 0 <= warmup < train.steps=6"),
    ("model.impl", "cuda", "model.impl='cuda'"),
    ("model.cutoffs", (5, 3), r"model.cutoffs=\(5, 3\)"),
    ("train.compute_dtype", "float64", "train.compute_dtype='float64'"),
    ("train.prng_impl", "philox", "train.prng_impl='philox'; expected one of threefry2x32"),
])
def test_bad_config_values_are_named(key, value, match):
    config = tiny_config()
    config.model.num_heads = 4 if key == "model.d_proj" else 1
    section, name = key.split(".")
    setattr(getattr(config, section), name, value)
    with pytest.raises(ValueError, match=match):
        modes.validate_config(config, num_devices=2)


def test_unknown_config_key_stops_main():
    out = subprocess.run([sys.executable, "main.py", "--config=configs/default.py",
                          "--config.model.dd=3", "--mode=smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "dd" in out.stderr


PAPER_CONFIGS = ["enwik8.py", "enwik8.py:k5", "enwik8_large.py:ratio8", "wiki103.py",
                 "wiki103_large.py:ratio8_k5", "billion_word.py:large"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_builds_and_steps_at_toy_size(name):
    """Every paper config: its layer/attention structure and heads, at toy width, one step."""
    file, _, variant = name.partition(":")
    module = importlib.import_module("configs." + file[:-3])
    config = module.get_config(variant) if variant else module.get_config()
    m, t = config.model, config.train
    attention = attention_layers(m.num_layers, m.k,
                                 None if m.attention_last_n < 0 else m.attention_last_n)
    m.d, m.d_proj, m.vocab_size = 16, 4, 256
    if m.cutoffs:
        m.vocab_size, m.cutoffs = 60, tuple(10 * (i + 1) for i in range(len(m.cutoffs)))
        m.adaptive_factor = 2.0  # d = 16 has no room for factor-4 clusters
    t.batch_size, t.unroll, t.compute_dtype = 2, 8, "float32"
    modes.validate_config(config, 1)
    model = modes.build_model(config, nnx.Rngs(0))
    assert model.rnn.has_attention == attention
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps)
    step = make_train_step(graphdef, tx, lm_loss)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 9), 0, m.vocab_size)
    *_, metrics = step(params, rest, tx.init(params), model.init_state(2, 8),
                       tokens[:, :-1], tokens[:, 1:])
    assert bool(metrics.applied) and np.isfinite(float(metrics.loss))


@pytest.mark.slow
def test_non_finite_losses_skip_updates_then_stop(tmp_path):
    """An absurd learning rate blows the model up: the bad updates are skipped (the logged
    losses stay those of finite steps) and the run stops with a clear message."""
    config = tiny_config(lr=1e30, max_bad_steps=3, steps=50, eval_every=100,
                         checkpoint_every=100)
    with pytest.raises(FloatingPointError, match="3 consecutive steps with a non-finite loss"):
        modes.train(config, str(tmp_path))
    assert all(np.isfinite(v) for v in _losses(tmp_path).values())


@pytest.mark.slow
def test_profile_window_writes_a_trace(tmp_path):
    """train.profile_steps=(2, 4) traces steps 3..4 into workdir/profile; training and its
    losses are unchanged by it."""
    last = modes.train(tiny_config(profile_steps=(2, 4)), str(tmp_path))
    assert last["status"] == "finished"
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    with pytest.raises(ValueError, match=r"train.profile_steps=\(4, 2\)"):
        modes.validate_config(tiny_config(profile_steps=(4, 2)), num_devices=1)
