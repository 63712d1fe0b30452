"""Checkpointing for the training loop, built on ``orbax.checkpoint.CheckpointManager``.

Usage in a training loop::

    ckpt = Checkpointer(workdir / "ckpt", keep=3, best_metric="dev_loss", best_mode="min")
    flag = ckpt.install_sigterm_handler()          # single-process preemption (see below)
    restored = ckpt.restore({"params": params, "opt_state": opt_state, "carry": carry,
                             "rng": rng, "meta": {"step": 0, "data_position": 0}})
    if restored is not None:
        step, items = restored
    while step < num_steps:
        ...train one step...
        step += 1
        if flag.is_set() or ckpt.reached_preemption(step):
            ckpt.save(step, items, force=True); ckpt.wait(); break   # then exit 0
        if step % save_every == 0:
            ckpt.save(step, items, metrics={"dev_loss": dev_loss})  # metrics optional
    ckpt.close()

Items
-----
``items`` is a dict ``name -> pytree``. Two kinds of item are recognised:

* **JSON items** -- a tree whose leaves are all plain Python scalars / strings / ``None``
  (e.g. ``{"step": 10, "data_position": 12345}``). Saved with ``ocp.args.JsonSave`` and
  restored with ``ocp.args.JsonRestore`` (so tuples come back as lists; use dicts).
* **Array items** -- anything else (``nnx.State``, pure dicts of arrays, optax states,
  NamedTuples with ``None`` leaves, typed PRNG key arrays...). The tree is flattened with
  ``jax.tree_util`` and saved with ``ocp.args.StandardSave`` as a *flat* dict of leaves
  (``"l00003_encoder_layers_0_kernel_value"`` ...); the key paths of the leaves are stored next to
  it in a JSON item ``treedefs_``. On restore the leaves are read into abstract targets
  (``jax.ShapeDtypeStruct`` with the dtype / shape / sharding of the leaves of ``items_like``) and
  unflattened with the tree structure of ``items_like``: the restored tree has exactly the pytree
  type of ``items_like`` (``nnx.State`` with its ``Variable`` wrappers, NamedTuples, ``None``
  leaves...). If the stored key paths differ from those of ``items_like`` a
  :class:`CheckpointStructureError` is raised (no fallback: it is a config mismatch, not
  corruption). Hence nnx states need no conversion; :func:`to_pure` / :func:`from_pure` are
  provided for callers that want checkpoints independent of the ``Variable`` classes.
  Typed PRNG keys (``jax.random.key``) are stored as their ``jax.random.key_data`` (uint32) and
  re-wrapped with ``jax.random.wrap_key_data(..., impl=key_impl(like))``. Leaves of ``items_like``
  that are numpy arrays / Python scalars come back as numpy arrays / Python scalars.

Retention policy
----------------
Kept: the newest ``keep`` checkpoints **plus** the single best checkpoint by ``best_metric``
(``best_mode`` "min" or "max"). ``CheckpointManagerOptions(max_to_keep=k, best_fn=...)`` alone
does NOT express this in orbax 0.12: with ``best_fn`` set, ``max_to_keep`` keeps the top-k *by
metric* (and, with ``keep_checkpoints_without_metrics=True``, every checkpoint saved without
metrics forever). We therefore pass an explicit ``preservation_policy``::

    AnyPreservationPolicy([LatestN(keep), BestN(n=1, keep_checkpoints_without_metrics=False)])

together with ``best_fn`` / ``best_mode`` (used by ``best_step()``). Checkpoints saved without
metrics (periodic or preemption saves) are kept only while they are among the newest ``keep``.
A checkpoint whose metrics lack ``best_metric`` (or have a NaN value) ranks worst. If this orbax
has no ``preservation_policy`` option (older releases) the same policy is applied by explicit
deletion after the saves have finished (in ``wait()`` / the next ``save()``).
With ``best_metric=None`` only the newest ``keep`` are retained and ``which="best"`` is an error.

Corruption
----------
``restore(which="latest")`` tries the steps newest-first; a step that fails to load is reported
with ``warnings.warn`` (and absl ``logging.warning``) naming the step and the error, and the next
older step is tried. ``restore(step=N)`` and ``restore(which="best")`` do not fall back.

Preemption
----------
Orbax's automatic save on preemption (``CheckpointManager.reached_preemption``) relies on JAX's
multi-process preemption service (``jax.distributed.initialize``); it is wrapped by
:meth:`Checkpointer.reached_preemption`. Single-process runs rely on
:func:`install_sigterm_handler`: the handler only sets a flag (no I/O inside the signal handler);
the loop checks ``flag.is_set()`` after each step, saves with ``force=True``, calls ``wait()`` and
exits. In multi-process runs every process must agree to stop at the same step, so use
``reached_preemption`` there (a SIGTERM flag seen by one host only would deadlock a collective save).
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import warnings
from typing import Any, Iterable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

__all__ = [
    "Checkpointer",
    "CheckpointStructureError",
    "PreemptionFlag",
    "install_sigterm_handler",
    "to_pure",
    "from_pure",
]

_TREEDEFS = "treedefs_"
_JSON_SCALARS = (bool, int, float, str, type(None))


class CheckpointStructureError(ValueError):
    """The stored tree structure differs from ``items_like``."""


# ----------------------------------------------------------------------------- nnx helpers
def to_pure(tree: Any) -> Any:
    """``nnx.State`` -> nested pure dict of arrays (other trees are returned unchanged)."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return tree
    if isinstance(tree, nnx.State):
        if hasattr(nnx, "to_pure_dict"):  # flax >= 0.11; State.to_pure_dict is deprecated
            return nnx.to_pure_dict(tree)
        return tree.to_pure_dict()
    return tree


def from_pure(like: Any, pure: Any) -> Any:
    """Inverse of :func:`to_pure`: put the arrays of ``pure`` into a copy of the ``nnx.State``
    ``like`` (other ``like`` trees: ``pure`` is returned unchanged)."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return pure
    if isinstance(like, nnx.State):
        out = jax.tree_util.tree_map(lambda x: x, like)  # copy, do not mutate `like`
        nnx.replace_by_pure_dict(out, pure)
        return out
    return pure


# ----------------------------------------------------------------------------- tree helpers
def _is_json_tree(tree: Any) -> bool:
    if isinstance(tree, _JSON_SCALARS):
        return not isinstance(tree, float) or math.isfinite(tree)
    if type(tree) in (dict,):
        return all(isinstance(k, str) for k in tree) and all(_is_json_tree(v) for v in tree.values())
    if type(tree) in (list,):
        return all(_is_json_tree(v) for v in tree)
    return False


def _is_prng_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _leaf_name(i: int, path: tuple) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", jax.tree_util.keystr(path)).strip("_")
    return (f"l{i:05d}_{s}" if s else f"l{i:05d}")[:120]


def _flatten(tree: Any) -> tuple[list[tuple[str, Any]], list[str]]:
    """Flat ``[(name, leaf)]`` (leaf order of ``tree``) and the key-path strings."""
    leaves_with_path = jax.tree_util.tree_flatten_with_path(tree)[0]
    named = [(_leaf_name(i, p), leaf) for i, (p, leaf) in enumerate(leaves_with_path)]
    return named, [jax.tree_util.keystr(p) for p, _ in leaves_with_path]


def _to_savable(leaf: Any) -> Any:
    if _is_prng_key(leaf):
        return jax.random.key_data(leaf)
    if isinstance(leaf, (jax.Array, np.ndarray)):
        return leaf
    if isinstance(leaf, (bool, int, float, complex, np.generic)):
        return np.asarray(leaf)
    raise TypeError(f"cannot checkpoint leaf of type {type(leaf).__name__}: {leaf!r}")


def _default_sharding() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    """Abstract restore target for one leaf of ``items_like``."""
    if _is_prng_key(leaf):
        if isinstance(leaf, jax.Array):
            data = jax.random.key_data(leaf)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=data.sharding)
        data = jax.eval_shape(jax.random.key_data, leaf)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=_default_sharding())
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding or _default_sharding())
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    arr = np.asarray(leaf)
    return jax.ShapeDtypeStruct(arr.shape, arr.dtype, sharding=_default_sharding())


def _from_restored(like: Any, value: Any) -> Any:
    if _is_prng_key(like):
        return jax.random.wrap_key_data(value, impl=jax.random.key_impl(like))
    if isinstance(like, (jax.Array, jax.ShapeDtypeStruct)):
        return value
    if isinstance(like, np.ndarray):
        return np.asarray(value)
    if isinstance(like, np.generic):
        return np.asarray(value).astype(like.dtype)[()]
    if isinstance(like, (bool, int, float, complex)):
        return type(like)(np.asarray(value).item())
    return value


# ----------------------------------------------------------------------------- SIGTERM
class PreemptionFlag:
    """Set by a signal handler; checked by the training loop after every step.

    ``uninstall()`` (also on context exit) restores the previous handlers. The handler does no
    I/O. Repeated signals just set the flag again (the loop is expected to save and exit).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self.signum: int | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()
        self.signum = None

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.signum = signum
        self._event.set()

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def uninstall(self) -> None:
        """Restore the handlers that were active before installation (idempotent)."""
        while self._previous:
            signum, prev = self._previous.popitem()
            signal.signal(signum, prev if prev is not None else signal.SIG_DFL)

    def __enter__(self) -> "PreemptionFlag":
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()


def install_sigterm_handler(signals: Iterable[int] = (signal.SIGTERM,)) -> PreemptionFlag:
    """Install a handler for ``signals`` (default SIGTERM) that only sets the returned flag.

    Must be called from the main thread (a Python restriction on ``signal.signal``).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_sigterm_handler must be called from the main thread")
    flag = PreemptionFlag()
    for signum in signals:
        flag._previous[signum] = signal.signal(signum, flag._handler)
    return flag


# ----------------------------------------------------------------------------- Checkpointer
def _has_preservation_policy() -> bool:
    try:
        import dataclasses

        names = {f.name for f in dataclasses.fields(ocp.CheckpointManagerOptions)}
        return "preservation_policy" in names and hasattr(ocp, "checkpoint_managers")
    except Exception:  # pragma: no cover
        return False


class Checkpointer:
    """Save / restore named pytrees with orbax; see the module docstring for the policies."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        best_metric: str | None = "dev_loss",
        best_mode: str = "min",
        async_save: bool = True,
    ) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.keep = keep
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.async_save = async_save
        self._flag: PreemptionFlag | None = None
        self._closed = False

        best_fn = self._metric_value if best_metric is not None else None
        opt_kwargs: dict[str, Any] = dict(
            best_fn=best_fn,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manual_prune = False
        if _has_preservation_policy():
            pp = ocp.checkpoint_managers
            policies: list[Any] = [pp.LatestN(n=keep)]
            if best_fn is not None:
                policies.append(
                    pp.BestN(
                        get_metric_fn=best_fn,
                        reverse=(best_mode == "min"),
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    )
                )
            opt_kwargs["preservation_policy"] = pp.AnyPreservationPolicy(policies)
        elif best_fn is None:
            opt_kwargs["max_to_keep"] = keep
        else:  # old orbax: keep everything, prune explicitly
            self._manual_prune = True
        self._mngr = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(**opt_kwargs)
        )

    # -- metric ranking ------------------------------------------------------------------
    def _worst(self) -> float:
        return math.inf if self.best_mode == "min" else -math.inf

    def _metric_value(self, metrics: Any) -> float:
        try:
            v = float(metrics[self.best_metric])
        except (KeyError, TypeError, ValueError):
            return self._worst()
        return self._worst() if math.isnan(v) else v

    # -- queries -------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        return sorted(int(s) for s in self._mngr.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """Step with the best ``best_metric``; None if no checkpoint carries that metric."""
        if self.best_metric is None:
            return None
        step = self._mngr.best_step()
        if step is None:
            return None
        metrics = self._metrics(step)
        if metrics is None or math.isinf(self._metric_value(metrics)):
            return None
        return int(step)

    def _metrics(self, step: int) -> Any:
        for info in getattr(self._mngr, "_checkpoints", []):
            if info.step == step:
                return info.metrics
        try:
            return self._mngr.metrics(step)
        except Exception:  # pragma: no cover
            return None

    def reached_preemption(self, step: int) -> bool:
        """Orbax/JAX preemption sync point (multi-process preemption service only)."""
        try:
            return bool(self._mngr.reached_preemption(step))
        except Exception:  # pragma: no cover - service not initialised
            return False

    # -- save ----------------------------------------------------------------------------
    def save(
        self,
        step: int,
        items: dict[str, Any],
        *,
        metrics: dict[str, float] | None = None,
        force: bool = False,
    ) -> bool:
        """Start saving ``items`` as ``step`` (asynchronously if ``async_save``).

        Returns False (and saves nothing) if ``step`` is already saved, or if orbax declines
        and ``force`` is False. ``force=True`` is for preemption saves.
        """
        self._check_open()
        if not isinstance(items, dict) or not items:
            raise ValueError("items must be a non-empty dict name -> pytree")
        for name in items:
            if name in (_TREEDEFS, "metrics") or not isinstance(name, str) or name.startswith("__"):
                raise ValueError(f"item name {name!r} is reserved or invalid (reserved: {_TREEDEFS!r}, 'metrics', '__*')")
        step = int(step)
        if step in self._mngr.all_steps():
            return False
        args: dict[str, Any] = {}
        treedefs: dict[str, list[str]] = {}
        for name, tree in items.items():
            if _is_json_tree(tree):
                args[name] = ocp.args.JsonSave(tree)
            else:
                named, paths = _flatten(tree)
                treedefs[name] = paths
                args[name] = ocp.args.StandardSave({k: _to_savable(v) for k, v in named})
        args[_TREEDEFS] = ocp.args.JsonSave(treedefs)
        if metrics is not None:
            metrics = {str(k): float(v) for k, v in metrics.items()}
        if self._manual_prune:
            self._mngr.wait_until_finished()
            self._prune()
        saved = self._mngr.save(step, args=ocp.args.Composite(**args), metrics=metrics, force=force)
        return bool(saved)

    def _prune(self) -> None:
        steps = self.all_steps()
        keep = set(steps[-self.keep :])
        best = self.best_step()
        if best is not None:
            keep.add(best)
        for s in steps:
            if s not in keep:
                self._mngr.delete(s)

    def wait(self) -> None:
        """Block until all pending saves are written (and old checkpoints pruned)."""
        self._mngr.wait_until_finished()
        if self._manual_prune:
            self._prune()

    # -- restore -------------------------------------------------------------------------
    def restore(
        self,
        items_like: dict[str, Any],
        *,
        step: int | None = None,
        which: str = "latest",
    ) -> tuple[int, dict[str, Any]] | None:
        """Restore the items named in ``items_like`` into its structure / dtypes / shardings.

        ``step`` given: that step (no fallback). Else ``which="latest"``: newest step that
        loads, warning about each step that fails; ``which="best"``: ``best_step()`` (no
        fallback). Returns ``(step, items)`` or None if there is no checkpoint.
        """
        self._check_open()
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        self._mngr.wait_until_finished()
        self._mngr.reload()
        if step is not None:
            if int(step) not in self.all_steps():
                raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}")
            return int(step), self._restore_step(int(step), items_like)
        if which == "best":
            if self.best_metric is None:
                raise ValueError("restore(which='best') needs best_metric")
            best = self.best_step()
            if best is None:
                return None
            return best, self._restore_step(best, items_like)
        steps = self.all_steps()
        if not steps:
            return None
        errors = []
        for s in reversed(steps):
            try:
                return s, self._restore_step(s, items_like)
            except CheckpointStructureError:
                raise
            except Exception as e:  # corrupt / partial checkpoint: try the previous one
                err = str(e) if len(str(e)) <= 500 else str(e)[:500] + "..."
                msg = (f"checkpoint step {s} in {self.directory} failed to load "
                       f"({type(e).__name__}: {err}); trying the previous checkpoint")
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                logging.warning(msg)
                errors.append((s, e))
        s, e = errors[0]
        raise RuntimeError(
            f"no checkpoint in {self.directory} could be restored (steps {[x for x, _ in errors]})"
        ) from e

    def _restore_step(self, step: int, items_like: dict[str, Any]) -> dict[str, Any]:
        treedefs = self._mngr.restore(
            step, args=ocp.args.Composite(**{_TREEDEFS: ocp.args.JsonRestore()})
        )[_TREEDEFS]
        args: dict[str, Any] = {}
        plans: dict[str, Any] = {}
        for name, like in items_like.items():
            if name not in treedefs and _is_json_tree(like):
                args[name] = ocp.args.JsonRestore()
                continue
            if name not in treedefs:
                raise CheckpointStructureError(
                    f"item {name!r} is not an array item of checkpoint step {step} (has {sorted(treedefs)})"
                )
            named, paths = _flatten(like)
            if list(paths) != list(treedefs[name]):
                raise CheckpointStructureError(
                    f"item {name!r} of checkpoint step {step} has leaves {treedefs[name][:8]}... "
                    f"({len(treedefs[name])}) but items_like has {paths[:8]}... ({len(paths)})"
                )
            target = {k: _abstract(v) for k, v in named}
            args[name] = ocp.args.StandardRestore(target)
            plans[name] = (like, named)
        restored = self._mngr.restore(step, args=ocp.args.Composite(**args))
        out: dict[str, Any] = {}
        for name in items_like:
            if name not in plans:
                out[name] = restored[name]
                continue
            like, named = plans[name]
            values = restored[name]
            leaves = [_from_restored(v, values[k]) for k, v in named]
            out[name] = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)
        return out

    # -- preemption / lifecycle --------------------------------------------------------------
    def install_sigterm_handler(self, signals: Iterable[int] = (signal.SIGTERM,)) -> PreemptionFlag:
        """Like :func:`install_sigterm_handler`; the previous handler is restored on ``close()``."""
        if self._flag is not None:
            return self._flag
        self._flag = install_sigterm_handler(signals)
        return self._flag

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Checkpointer is closed")

    def close(self) -> None:
        """Wait for pending saves, close the manager, restore the previous signal handler."""
        if self._closed:
            return
        try:
            self.wait()
            self._mngr.close()
        finally:
            self._closed = True
            if self._flag is not None:
                self._flag.uninstall()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
