"""The PRNG a run draws its initial weights and dropout masks from (`train.prng_impl`).

  prng_impl(config)    the validated implementation name of a run's config
  model_rngs(config)   nnx.Rngs(seed) whose keys are of that implementation

Every key of a model descends from the root key made here (nnx.Rngs streams fold in a counter
per draw; SRUppAttention forks its own stream), so the choice is one argument, not a global
JAX setting: code that makes keys of its own (tests, benchmarks, sampling in generate) keeps
JAX's default. Checkpoints store the keys' raw data; `leaves.unflatten` wraps it back into keys
of the model's implementation, so a resumed run continues the same stream bit for bit.

Implementations (jax.random.key(..., impl=...)):
  "threefry2x32"  JAX's default: counter-based, the same bits on every backend and sharding;
                  expensive where the masks are large (XLA:CPU runs its 20 rounds as a rolled
                  loop, each fold_in and mask a loop of its own).
  "rbg"           XLA's RngBitGenerator (Philox on CPU and GPU) for the masks, threefry for
                  split and fold_in (still one threefry per dropout call).
  "unsafe_rbg"    RngBitGenerator for the masks, and fold_in / split by hashing with it too: no
                  threefry in the step at all. The fastest (BENCHMARKS.md); T5X's "hardware RNG"
                  setting. "Unsafe" is JAX's word for key derivation that has not been studied
                  statistically; the masks themselves are Philox output.
With rbg and unsafe_rbg the bits are deterministic for a given program and device layout but
may change with the XLA version or the sharding (JAX documents it); resume is unaffected.
"""
from __future__ import annotations

import jax
from flax import nnx

PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
SAVED_BEFORE = "threefry2x32"   # runs saved before train.prng_impl existed drew from this


def prng_impl(config) -> str:
    """config.train.prng_impl, checked; a saved config without the key (an older run) is
    threefry2x32, the implementation its checkpoints hold keys of."""
    impl = config.train.prng_impl
    if impl not in PRNG_IMPLS:
        raise ValueError(f"train.prng_impl={impl!r}; expected one of {', '.join(PRNG_IMPLS)}")
    return impl


def model_rngs(config) -> nnx.Rngs:
    """nnx.Rngs(config.seed) with keys of train.prng_impl (nnx.Rngs(seed) itself for
    threefry2x32)."""
    return nnx.Rngs(jax.random.key(config.seed, impl=prng_impl(config)))
