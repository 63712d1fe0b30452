"""SRU++ as a building block without traps: a bidirectional stack is never causal, masks say
what True means (and an inverted mask_pad is flagged), the compute dtype is as documented."""
import warnings

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import srupp_jax

D_IN, D, D_PROJ = 8, 12, 4


def _stack(**kw):
    return srupp_jax.SRUpp(D_IN, D, D_PROJ, 2, rngs=nnx.Rngs(0), **kw)


def test_causal_follows_the_direction_and_a_causal_bidirectional_stack_is_refused():
    assert _stack().causal and not _stack(bidirectional=True).causal
    assert not _stack(causal=False).causal
    with pytest.raises(ValueError, match="causal=True with bidirectional=True"):
        _stack(bidirectional=True, causal=True)


def test_unidirectional_outputs_ignore_the_future_and_bidirectional_ones_see_it():
    x = jax.random.normal(jax.random.key(1), (2, 7, D_IN))
    later = x.at[:, 4:].add(1.0)
    for bidirectional, sees_future in ((False, False), (True, True)):
        stack = _stack(bidirectional=bidirectional)
        h, _, _ = stack(x)
        h2, _, _ = stack(later)
        assert bool(jnp.any(h[:, :4] != h2[:, :4])) == sees_future


def test_padding_mask_true_means_padding_and_an_inverted_one_is_flagged():
    stack = _stack(bidirectional=True)
    x = jax.random.normal(jax.random.key(2), (2, 5, D_IN))
    pad = jnp.array([[False] * 5, [False] * 3 + [True] * 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # a right mask draws no warning
        h, _, _ = stack(x, mask_pad=pad)
    assert bool((h[1, 3:] == 0).all()) and bool((h[1, :3] != 0).any())
    with pytest.warns(UserWarning, match=r"row\(s\) \[0\] as padding"):
        stack(x, mask_pad=~pad)                   # inverted: row 0 all "padding"


def test_compute_dtype_is_flax_promotion_unless_given():
    x = jax.random.normal(jax.random.key(3), (2, 5, D_IN)).astype(jnp.bfloat16)
    h, c, _ = _stack()(x)
    assert h.dtype == jnp.float32 and c.dtype == jnp.float32     # float32 parameters promote
    h, c, _ = _stack(dtype=jnp.bfloat16)(x)
    assert h.dtype == jnp.bfloat16 and c.dtype == jnp.float32    # the state stays float32


def test_the_public_surface_is_lazy_and_complete():
    import subprocess
    import sys
    code = ("import sys, srupp_jax; assert 'jax' not in sys.modules, 'eager import'; "
            "missing = [n for n in srupp_jax.__all__ if getattr(srupp_jax, n, None) is None]; "
            "assert not missing, missing; print(len(srupp_jax.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and int(out.stdout) >= 20, out.stderr[-2000:]
