"""Language models: losses, carried state and memory, adaptive heads, dropout, gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_close
from pallas_kernels import KernelOptions
from srupp_jax.models.srupp_lm import SRUppConfig, SRUppLM

VOCAB = 29


def _model(cutoffs=None, k=1, dropout=0.0, impl="scan", seed=0):
    config = SRUppConfig(VOCAB, 16, 4, num_layers=3, k=k, dropout=dropout, attn_dropout=dropout,
                         cutoffs=cutoffs or (), adaptive_factor=2.0, impl=impl)
    return SRUppLM(config, rngs=nnx.Rngs(seed))


def _tokens(batch, length, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (batch, length)))


@pytest.mark.slow
@pytest.mark.parametrize("cutoffs,k", [(None, 1), (None, 2), ([7, 15], 1), ([7, 15], 3)])
def test_segments_with_carried_state_equal_one_pass(cutoffs, k):
    """Segment by segment with state + memory == the whole sequence at once (eval mode).

    With memory of M >= one segment, segment 2 attends to segment 1 exactly as one causal pass
    over both does, and c carries the recurrence across the boundary.
    """
    model = _model(cutoffs, k)
    # alpha starts at 0 (attention off); turn it on so memory matters
    for layer in model.rnn.layers:
        if hasattr(layer.transform, "alpha"):
            layer.transform.alpha[...] = jnp.asarray(0.8)
    model.eval()
    tok = _tokens(2, 10)
    tgt = _tokens(2, 10, seed=1)
    full, _ = model.nll(tok, tgt)
    state = model.init_state(2, 5)
    part1, state = model.nll(tok[:, :5], tgt[:, :5], state)
    part2, state = model.nll(tok[:, 5:], tgt[:, 5:], state)
    assert_close(jnp.concatenate([part1, part2], axis=1), full, 2e-6, "nll")
    assert state.c.shape == (2, 3, 16)   # batch-first: [batch, layers, d]
    assert not np.any(np.asarray(state.memory_pad))


@pytest.mark.parametrize("cutoffs", [None, [7, 15]])
def test_nll_is_the_log_distribution(cutoffs):
    model = _model(cutoffs)
    model.eval()
    tok, tgt = _tokens(2, 6), _tokens(2, 6, seed=2)
    logp, _ = model.log_probs(tok)
    np.testing.assert_allclose(np.exp(np.asarray(logp)).sum(-1), 1.0, rtol=1e-5)
    nll, _ = model.nll(tok, tgt)
    expected = -np.take_along_axis(np.asarray(logp), np.asarray(tgt)[..., None], -1)[..., 0]
    assert_close(nll, expected, 1e-6)
    assert nll.dtype == jnp.float32


@pytest.mark.slow
def test_memory_gets_no_gradient_and_params_do():
    model = _model(k=1)
    for layer in model.rnn.layers:
        layer.transform.alpha[...] = jnp.asarray(0.5)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = model.init_state(2, 4)
    state = state._replace(memory={i: jax.random.normal(jax.random.PRNGKey(i), m.shape)
                                   for i, m in state.memory.items()},
                           memory_pad=jnp.zeros_like(state.memory_pad))

    def loss(params, memory):
        m = nnx.merge(graphdef, params, rest)
        m.eval()
        nll, _ = m.nll(_tokens(2, 4), _tokens(2, 4, 1), state._replace(memory=memory))
        return nll.mean()

    g_params, g_mem = jax.grad(loss, argnums=(0, 1))(params, state.memory)
    flat = jax.tree.leaves(g_params)
    assert all(np.all(np.isfinite(g)) for g in flat)
    assert sum(float(jnp.sum(jnp.abs(g))) > 0 for g in flat) == len(flat)
    # memory is a function input, so it does get a gradient through attention; what must not
    # is the memory the model *returns*: it is stop_gradient'ed layer inputs.
    assert any(float(jnp.sum(jnp.abs(g))) > 0 for g in g_mem.values())

    def returned_memory_sum(params):
        m = nnx.merge(graphdef, params, rest)
        _, new = m.nll(_tokens(2, 4), _tokens(2, 4, 1), state)
        return sum(jnp.sum(x) for x in new.memory.values())

    g = jax.grad(returned_memory_sum)(params)
    assert all(float(jnp.sum(jnp.abs(x))) == 0 for x in jax.tree.leaves(g))


def test_dropout_is_random_in_training_and_off_in_eval():
    model = _model(dropout=0.3)
    tok, tgt = _tokens(2, 6), _tokens(2, 6, 1)
    a, _ = model.nll(tok, tgt)
    b, _ = model.nll(tok, tgt)
    assert not np.allclose(a, b)
    model.eval()
    c, _ = model.nll(tok, tgt)
    d, _ = model.nll(tok, tgt)
    np.testing.assert_array_equal(c, d)


def test_char_lm_init_matches_reference_script():
    model = _model()
    limit = np.sqrt(3.0 / 16)
    emb = np.asarray(model.embed.embedding[...])
    assert emb.shape == (VOCAB, 16) and np.abs(emb).max() <= limit
    assert np.all(np.asarray(model.head.bias[...]) == 0)


def test_bad_inputs_are_named():
    model = _model()
    with pytest.raises(ValueError, match=r"tokens has shape \(5,\)"):
        model.nll(jnp.zeros((5,), jnp.int32), jnp.zeros((5,), jnp.int32))
    with pytest.raises(ValueError, match=r"targets has shape \(2, 3\); expected \(2, 4\)"):
        model.nll(jnp.zeros((2, 4), jnp.int32), jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="vocab_size=1"):
        SRUppLM(SRUppConfig(1, 8, 2), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("key,value,match", [
    ("d", 0, "model.d=0; expected >= 1"),
    ("d_proj", 0, "model.d_proj=0; expected >= 1"),
    ("num_layers", 0, "model.num_layers=0; expected >= 1"),
    ("attention_last_n", 4, "model.attention_last_n=4; expected -1 or 0..3"),
    ("dropout", 1.0, "model.dropout=1.0; expected 0 <= p < 1"),
    ("attn_dropout", -0.1, "model.attn_dropout=-0.1"),
    ("num_heads", 3, "model.d_proj=4 is not divisible by model.num_heads=3"),
    ("k", 4, "model.k=4 with model.num_layers=3 leaves no attention layer"),
    ("cutoffs", (5, 40), r"model.cutoffs=\(5, 40\); expected strictly increasing values in "
                         r"1..28"),
    ("adaptive_factor", 64.0, "model.d_embed=16, model.adaptive_factor=64.0, 1 cutoffs"),
    ("impl", "cuda", "model.impl='cuda'"),
    ("dtype", "float64", "train.compute_dtype='float64'"),
    ("kernel", KernelOptions(block_d=1.5), r"model.kernel.block_d=1.5; expected an integer"),
])
def test_every_bad_model_value_is_named_once(key, value, match):
    """SRUppConfig checks every field in one place, naming the config key (before any
    compile: it is a plain dataclass)."""
    good = dict(vocab_size=29, d=16, d_proj=4, num_layers=3,
                cutoffs=(5,) if key == "adaptive_factor" else ())
    with pytest.raises(ValueError, match=match):
        SRUppConfig(**dict(good, **{key: value}))


@pytest.mark.slow
def test_backend_resolved_once_and_kernel_options_reach_the_kernel(monkeypatch):
    """impl is resolved when the model is built (logged by the task's build_model), and
    config.model.kernel's options are what the Pallas kernel receives."""
    from srupp_jax.nn import recurrence
    from srupp_jax.nn.recurrence import Backend
    assert _model(impl="auto").backend is Backend.SCAN          # CPU: scan
    seen = []
    real = recurrence.sru_recurrence_pallas

    def spy(*args, **kwargs):
        seen.append({k: kwargs[k] for k in ("block_d", "num_warps", "prefetch")})
        return real(*args, **kwargs)

    monkeypatch.setattr(recurrence, "sru_recurrence_pallas", spy)
    options = KernelOptions(block_d=8, num_warps=1, prefetch=2)
    with recurrence.interpret_kernels():
        model = SRUppLM(SRUppConfig(VOCAB, 16, 4, num_layers=2, impl="pallas", kernel=options),
                        rngs=nnx.Rngs(0))
        assert model.backend is Backend.PALLAS
        tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 5), 0, VOCAB)
        nll, _ = model.nll(tokens, tokens)
    assert seen and all(s == options.as_kwargs() for s in seen) and bool(jnp.isfinite(nll).all())


def test_auto_on_a_gpu_builds_the_fastest_backend_at_the_training_shape(monkeypatch):
    """Training on a GPU: impl="auto" becomes the backend `fastest_backend` measured at
    (per-device batch, unroll, d, 3 slices of U) and the compute dtype, with the kernel options
    (tasks.base.measured_impl, by build_model(measure=True)); with several processes, the one
    process 0 measured. build_model alone (eval, generate) times nothing: it takes the first
    backend that works."""
    import dataclasses
    import importlib
    from srupp_jax import tasks
    from srupp_jax.tasks import base
    from srupp_jax.nn.recurrence import Backend
    config = importlib.import_module("configs.default").get_config()
    config.model.vocab_size = VOCAB
    asked = []

    def fastest(*shape, dtype, kernel, timed):
        asked.append((shape, dtype, kernel, timed))
        if not timed:       # the first backend that works, untimed
            return Backend.PALLAS, {}, {}
        return Backend.ASSOC, {"pallas": 2.0, "assoc": 1.0, "scan": 3.0}, {}

    monkeypatch.setattr(base, "fastest_backend", fastest)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    task = tasks.make(config)
    t, m = config.train, config.model
    shape = (t.batch_size // jax.device_count(), t.unroll)
    assert task.build_model(nnx.Rngs(0)).backend is Backend.PALLAS
    assert [a[3] for a in asked] == [False]
    model = task.build_model(nnx.Rngs(0), measure=True)
    assert model.backend is Backend.ASSOC
    assert asked[1] == ((*shape, m.d, 3), t.compute_dtype, model.config.kernel, True)
    assert task.setup == {"recurrence": "assoc", "recurrence_reason": (
        f"model.impl=auto on GPU at {shape[0]}x{shape[1]}x{m.d} {t.compute_dtype}: assoc "
        "(timed pallas 2.00 ms, assoc 1.00 ms, scan 3.00 ms)")}
    scan = dataclasses.replace(model.config, impl="scan")
    assert base.measured_impl(scan, *shape) == (scan, "model.impl=scan") and len(asked) == 2
    auto = dataclasses.replace(model.config, impl="auto")
    # Several processes: process 0's choice, broadcast, so that all compile the same program.
    sent = []

    def broadcast(index):
        sent.append(int(index))
        return np.int32(list(Backend).index(Backend.SCAN))

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(base.multihost_utils, "broadcast_one_to_all", broadcast)
    assert base.measured_impl(auto, *shape)[0].impl == "scan"
    assert sent == [list(Backend).index(Backend.ASSOC)]
