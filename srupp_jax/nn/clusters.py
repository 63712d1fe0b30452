"""The clusters of adaptive input and softmax (nn/adaptive.py): their id ranges and widths,
the checks of cutoffs and ids, and the weights a token touches (for the FLOPs count).

Cutoffs c_1 < ... < c_{n-1} split a vocabulary of V ids into the clusters [0, c_1),
[c_1, c_2), ..., [c_{n-1}, V); cluster i is d_i = int(d_embed // factor**i) wide.
"""
from __future__ import annotations

import operator
from typing import Optional, Sequence

import jax
import jax.numpy as jnp


def check_cutoffs(cutoffs: Sequence[int], vocab_size: int = 0, *, source: str = "") -> None:
    """`model.cutoffs` by the rule of `cluster_bounds` (0: the vocabulary is not known yet),
    with a message naming the key and the data (`source`, e.g. "the wikitext103 vocabulary")."""
    try:
        cluster_bounds(vocab_size or max(cutoffs, default=0) + 1, cutoffs)
    except ValueError:
        what = f" but {source} has {vocab_size} entries" if source else ""
        upper = str(vocab_size - 1) if vocab_size else "vocab_size - 1"
        raise ValueError(f"model.cutoffs={tuple(cutoffs)}{what}; expected strictly increasing "
                         f"values in 1..{upper} (set --config.model.cutoffs for this "
                         "vocabulary)") from None


def cluster_bounds(vocab_size: int, cutoffs: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Validated [(lo, hi), ...] id ranges of the clusters given by `cutoffs`.

    Raises ValueError unless vocab_size > 0 and the cutoffs are integers with
    0 < c_1 < c_2 < ... < vocab_size.
    """
    vocab_size = positive_int("vocab_size", vocab_size)
    if isinstance(cutoffs, (str, bytes)) or not isinstance(cutoffs, Sequence):
        raise ValueError(f"cutoffs must be a sequence of integers, got {cutoffs!r}")
    bounds, prev = [], 0
    for i, c in enumerate(cutoffs):
        c = _as_int(f"cutoffs[{i}]", c)
        if c <= 0:
            raise ValueError(f"cutoffs[{i}] = {c}: cutoffs must be > 0")
        if c <= prev:
            raise ValueError(f"cutoffs[{i}] = {c}: cutoffs must be strictly increasing "
                             f"(previous cutoff is {prev}), got {list(cutoffs)}")
        if c >= vocab_size:
            raise ValueError(f"cutoffs[{i}] = {c}: cutoffs must be < vocab_size = {vocab_size} "
                             "(the last cluster always ends at vocab_size; do not list it)")
        bounds.append((prev, c))
        prev = c
    bounds.append((prev, vocab_size))
    return tuple(bounds)


def cluster_dims(d_embed: int, factor: float, n_clusters: int) -> tuple[int, ...]:
    """Cluster widths d_i = int(d_embed // factor**i) (fairseq's rule); each must be >= 1."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    dims = tuple(int(d_embed // factor ** i) for i in range(n_clusters))
    for i, d in enumerate(dims):
        if d < 1:
            raise ValueError(f"cluster {i} would have width int({d_embed} // {factor}**{i}) = {d}; "
                             "use a smaller factor, fewer cutoffs or a larger d_embed")
    return dims


def projected(dims: Sequence[int], d_model: int) -> bool:
    """Whether adaptive layers of these cluster widths have projections (all but the
    Transformer-XL reference's case, every cluster d_model wide)."""
    return any(d != d_model for d in dims)


def matrix_weights(vocab_size: int, d_model: int, cutoffs: Sequence[int], factor: float,
                   d_embed: Optional[int] = None) -> int:
    """Matrix weights an adaptive input + tied adaptive softmax apply to every token, as the
    code runs them (every cluster for every token): input projections sum_i d_i d_model;
    softmax projections sum_i d_model d_i; head d_0 (|V_0| + n - 1); tails sum_i d_i |V_i|.
    Embedding lookups and biases are not counted (flops.estimate_flops_per_token)."""
    bounds = cluster_bounds(vocab_size, cutoffs)
    dims = cluster_dims(d_embed or d_model, factor, len(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    proj = 2 * d_model * sum(dims) if projected(dims, d_model) else 0
    return proj + dims[0] * (len(bounds) - 1) + sum(d * n for d, n in zip(dims, sizes))


def _as_int(name: str, value, what: str = "an integer") -> int:
    """`value` as a Python int (numpy ints too; bools and floats are refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def positive_int(name: str, value) -> int:
    value = _as_int(name, value, "a positive integer")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def check_ids(name: str, ids, vocab_size: int, shape=None):
    """Static checks (integer dtype, shape); value check only for concrete arrays."""
    ids = jnp.asarray(ids) if not isinstance(ids, jax.Array) else ids
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {ids.dtype}")
    if shape is not None and tuple(ids.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(ids.shape)} must equal hidden.shape[:-1] = "
                         f"{tuple(shape)}")
    if not isinstance(ids, jax.core.Tracer) and ids.size:
        with jax.ensure_compile_time_eval():  # concrete even when closed over by a jit trace
            lo, hi = int(jnp.min(ids)), int(jnp.max(ids))
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains id {bad}, outside the vocabulary [0, {vocab_size})")
    return ids
