"""The leaves of a pytree as a checkpoint stores them (srupp_jax.training.checkpoint).

  flatten(tree)              {key path: leaf} in leaf order, e.g. {"['mu']['w']": [2, 3] array};
                             typed PRNG keys become their uint32 key data
  unflatten(like, values)    the inverse: `values` (in that order) in the structure of `like`
  array_name(i, path)        the file-system-safe name of leaf i inside a checkpoint
  describe(leaves)           [[key path, shape, dtype, checksum], ...], checksums on device
  abstract(x)                the jax.ShapeDtypeStruct (with sharding) to restore x into
  mismatch(...)              the message naming the sizes a stored tree and a model differ in

A checksum is two uint32 sums over the bits of an array (plain and position-weighted), so a
changed or moved byte changes it; XLA computes them where the arrays live (no host copy).
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_key(x) -> bool:
    """True for a typed PRNG key array (jax.random.key)."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def flatten(tree) -> dict[str, Any]:
    """{key path: leaf} in leaf order; typed PRNG keys become their uint32 key data."""
    return {jax.tree_util.keystr(path): jax.random.key_data(leaf) if is_key(leaf) else leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(like, values: list):
    """`values` (leaf order of `like`) in the tree structure of `like`; key data where `like`
    holds typed PRNG keys become keys of the same implementation again."""
    values = [jax.random.wrap_key_data(v, impl=jax.random.key_impl(x)) if is_key(x) else v
              for v, x in zip(values, jax.tree.leaves(like))]
    return jax.tree.unflatten(jax.tree.structure(like), values)


def array_name(i: int, path: str) -> str:
    """A file-system-safe, unique array name for leaf i."""
    return f"l{i:05d}_" + re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")[:100]


def _checksum(x) -> jax.Array:
    """[2] uint32: the plain and the position-weighted sum of the bits of x."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        u = x.astype(jnp.uint32)
    else:
        u = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}"))
        u = u.astype(jnp.uint32)
    u = u.ravel()
    w = jnp.arange(1, u.size + 1, dtype=jnp.uint32) * jnp.uint32(2654435761)
    return jnp.stack([jnp.sum(u, dtype=jnp.uint32), jnp.sum(u * w, dtype=jnp.uint32)])


_checksums = jax.jit(lambda leaves: [_checksum(x) for x in leaves])


def describe(leaves: dict[str, Any]) -> list[list]:
    """[[key path, shape, dtype, checksum], ...] of the leaves (a `flatten` dict)."""
    sums = [np.asarray(s).tolist() for s in _checksums(list(leaves.values()))]
    return [[p, list(np.shape(x)), str(getattr(x, "dtype", None) or np.asarray(x).dtype), s]
            for (p, x), s in zip(leaves.items(), sums)]


def abstract(x) -> jax.ShapeDtypeStruct:
    """Shape, dtype and sharding of x (a host value or a bare shape, e.g. of nnx.eval_shape:
    the first local device)."""
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    if not isinstance(x, jax.ShapeDtypeStruct):
        x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


def mismatch(step: int, name: str, stored: list[list], like: dict[str, Any],
             stored_config: dict | None, config: dict | None) -> str | None:
    """A message naming what differs between the stored tree `name` (its `describe` list) and
    the leaves `like` (a `flatten` dict), or None when every shape agrees. With `config`, the
    config keys that differ from `stored_config`; else the first array that differs."""
    ours = {p: list(np.shape(x)) for p, x in like.items()}
    theirs = {p: shape for p, shape, *_ in stored}
    if ours == theirs:
        return None
    stored_config = stored_config or {}
    diff = [f"{k}: checkpoint {stored_config.get(k)!r}, config {config.get(k)!r}"
            for k in sorted(set(stored_config) | set(config))
            if stored_config.get(k) != config.get(k)] if config else []
    arrays = [f"{p} is {theirs.get(p)} in the checkpoint, {ours.get(p)} in the model"
              for p in dict.fromkeys([*theirs, *ours]) if theirs.get(p) != ours.get(p)]
    return (f"checkpoint step {step} does not match the model of this config: "
            + ("; ".join(diff) if diff else f"{name} {arrays[0]}")
            + f" ({len(arrays)} arrays differ). Use the config the run was trained with.")
