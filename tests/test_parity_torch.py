"""Parity with the PyTorch reference package `sru==3.0.0.dev6` (eval mode, float32).

The reference is time-major ([L, batch, ...]); srupp_jax is batch-major. Every case builds a
random `sru.SRUpp` / `sru.SRU`, perturbs the parameters that start at constants (alpha = 0,
biases, layer-norm affine) so every path matters, converts it and compares outputs.
"""
import os

import numpy as np
import pytest

if os.environ.get("CI"):  # CI installs requirements-test.txt: a missing reference is a failure
    import sru
    import torch
else:
    torch = pytest.importorskip("torch", reason="parity tests need requirements-test.txt")
    sru = pytest.importorskip("sru", reason="parity tests need sru==3.0.0.dev6")

import jax.numpy as jnp  # noqa: E402

from helpers import assert_close, first_fast  # noqa: E402
from srupp_jax.convert.torch_sru import from_torch_sru, from_torch_srupp, load_torch_srupp  # noqa: E402

pytestmark = pytest.mark.torch_ref
RTOL = 1e-5


def _perturb(module, seed=0):
    """Move every parameter off its constant init (alpha=0, LN 1/0, biases) reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("alpha"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return module.eval()


def _t(a):
    """[batch, L, ...] NumPy -> time-major torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.swapaxes(a, 0, 1)))


def _torch_run(module, x, **kw):
    with torch.no_grad():
        out = module(_t(x), **kw)
    return np.swapaxes(out[0].numpy(), 0, 1), out[1].numpy()


def _additive(mask):
    """Our boolean attention mask -> the reference's additive float mask (-10000 as it uses)."""
    return torch.from_numpy(np.where(np.asarray(mask), 0.0, -10000.0).astype(np.float32))


SRUPP_CASES = {
    # name: (d_in, d, d_proj, num_layers, kwargs)
    "k1_ratio4": (16, 16, 4, 2, {}),
    "k2": (16, 16, 4, 4, dict(attention_every_n_layers=2)),
    "k5_of_10": (8, 8, 2, 10, dict(attention_every_n_layers=5)),
    "last_layer_only": (16, 16, 4, 3, dict(attention_last_n_layers=1)),
    "ratio8": (12, 32, 4, 2, {}),                         # also d_in != d: 4 matrices, layer 1
    "multihead": (16, 16, 8, 2, dict(num_heads=2)),
    "layer_norm_pre": (16, 16, 4, 2, dict(layer_norm=True)),
    "layer_norm_post": (16, 16, 4, 2, dict(layer_norm=True, normalize_after=True)),
    "no_attn_ln_rescale": (16, 16, 4, 2, dict(attn_layer_norm=False, rescale=True)),
    "input_to_hidden": (10, 16, 4, 2, dict(proj_input_to_hidden_first=True)),
}


@pytest.mark.parametrize("name", first_fast(sorted(SRUPP_CASES), unpack=False))
def test_srupp_matches_reference(name):
    d_in, d, d_proj, layers, kw = SRUPP_CASES[name]
    torch.manual_seed(len(name))
    ref = _perturb(sru.SRUpp(d_in, d, d_proj, num_layers=layers, **kw))
    model = from_torch_srupp(ref)
    model.eval()
    x = np.random.default_rng(1).normal(size=(3, 7, d_in)).astype(np.float32)
    h_ref, c_ref = _torch_run(ref, x)
    h, c, saved = model(jnp.asarray(x))
    assert_close(h, h_ref, RTOL, "h")
    assert_close(c, c_ref, RTOL, "c")
    assert len(saved) == layers


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_srupp_with_memory_padding_and_masks(causal):
    """Memory of the previous segment, padding of current and memory positions, causal mask."""
    from srupp_jax.nn.attention import attention_mask
    torch.manual_seed(3)
    d_in, d, d_proj, layers, M, L, B = 12, 12, 4, 3, 5, 6, 3
    ref = _perturb(sru.SRUpp(d_in, d, d_proj, num_layers=layers, attention_every_n_layers=1))
    model = from_torch_srupp(ref, causal=causal)
    model.eval()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(B, L, d_in)).astype(np.float32)
    memory = [rng.normal(size=(B, M, d_in)).astype(np.float32) for _ in range(layers)]
    pad = np.zeros((B, L), bool)
    pad[0, -2:] = True                      # a shorter sequence
    mem_pad = np.zeros((B, M), bool)
    mem_pad[1, :2] = True                   # memory that starts late
    c0 = rng.normal(size=(layers, B, d)).astype(np.float32)
    kw = dict(c0=torch.from_numpy(c0), mask_pad=_t(pad), memory=[_t(m) for m in memory],
              memory_mask_pad=_t(mem_pad))
    if causal:
        kw["attn_mask"] = _additive(attention_mask(L, M))
    h_ref, c_ref = _torch_run(ref, x, **kw)
    h, c, _ = model(jnp.asarray(x), jnp.asarray(c0), mask_pad=jnp.asarray(pad),
                    memory=[jnp.asarray(m) for m in memory],
                    memory_mask_pad=jnp.asarray(mem_pad))
    assert_close(h, h_ref, RTOL, "h")
    assert_close(c, c_ref, RTOL, "c")


def test_same_length_mask_matches_reference_eval_mask():
    """Our same_length mask is the reference training script's evaluation mask
    (`Model.set_mask(L, same_length=True)` sliced as `Model.forward` slices it), including a
    last segment shorter than L after a full one: its window stays L."""
    from srupp_jax.nn.attention import attention_mask
    L = 4
    ones = torch.ones(2 * L, 2 * L)
    ref = (torch.triu(ones, diagonal=1) + torch.tril(ones, diagonal=-1 - L)) * -10000.0
    for mem in (0, L):
        for length in (L, 3, 1):
            ours = attention_mask(length, mem, same_length=True)
            ours = np.where(np.asarray(ours), 0.0, -10000.0)
            np.testing.assert_array_equal(ours, ref[mem:mem + length, :mem + length].numpy())


@pytest.mark.parametrize("kw", [dict(bidirectional=True), dict(bidirectional=True, projection_size=3),
                                dict(bidirectional=False, layer_norm=True, rescale=True,
                                     highway_bias=-1.0)])
def test_sru_matches_reference(kw):
    torch.manual_seed(5)
    ref = _perturb(sru.SRU(10, 8, num_layers=2, **kw))
    model = from_torch_sru(ref)
    model.eval()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 9, 10)).astype(np.float32)
    pad = np.zeros((3, 9), bool)
    pad[2, -3:] = True
    dirs = 2 if kw["bidirectional"] else 1
    c0 = rng.normal(size=(2, 3, dirs * 8)).astype(np.float32)
    h_ref, c_ref = _torch_run(ref, x, c0=torch.from_numpy(c0), mask_pad=_t(pad))
    h, c = model(jnp.asarray(x), jnp.asarray(c0), mask_pad=jnp.asarray(pad))
    assert_close(h, h_ref, RTOL, "h")
    assert_close(c, c_ref, RTOL, "c")


def test_pt_state_dict_loads_with_weights_only(tmp_path):
    torch.manual_seed(7)
    ref = _perturb(sru.SRUpp(16, 16, 4, num_layers=4, attention_every_n_layers=2, num_heads=2))
    path = tmp_path / "srupp.pt"
    torch.save({"rnn." + k: v for k, v in ref.state_dict().items()}, path)
    model = load_torch_srupp(path, prefix="rnn.", num_heads=2, causal=False)
    model.eval()
    assert model.has_attention == (False, True, False, True)
    x = np.random.default_rng(6).normal(size=(2, 5, 16)).astype(np.float32)
    h_ref, _ = _torch_run(ref, x)
    assert_close(model(jnp.asarray(x))[0], h_ref, RTOL, "h")
