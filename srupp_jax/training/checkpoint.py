"""Checkpoints of a training run: a thin layer over `orbax.checkpoint.CheckpointManager`.

    ckpt = Checkpoints(f"{workdir}/checkpoints", keep=3)
    restored = ckpt.restore({"params": params, "opt_state": opt_state}, config=model_config)
    if restored is not None:
        step, items = restored
    ckpt.save(step, {"params": params, "opt_state": opt_state}, metrics={"dev_loss": 1.2})
    ckpt.close()

A step directory holds one `ocp.args.StandardSave` item per named tree and a JSON item `meta`.
Each tree is saved as a flat dict of its leaves named by key path (Orbax restores dicts of
arrays, not `nnx.State` with typed PRNG keys or optax states with None leaves); `meta` records
for every leaf its key path, shape, dtype and a checksum computed on device at save time, plus
the caller's `meta` (e.g. the model config). The leaves, checksums and mismatch messages:
srupp_jax.training.leaves.

Kept: the newest `keep` checkpoints plus the best by `best_metric` (`best_mode` "min": lower is
better, e.g. dev_loss; "max": higher, e.g. dev_bleu).

Never lost, never wrong:
- `save` raises CheckpointError when Orbax does not save the step (e.g. it already exists);
  `check()` raises a failed asynchronous save at the next step.
- `restore` verifies every array against its checksum. A checkpoint that fails to load or to
  verify is moved to `checkpoints/quarantine/<step>` (one log line naming it and the cause) and
  the next older one is tried; a checkpoint whose shapes differ from the model being restored
  raises CheckpointMismatchError naming the differing sizes (a config mismatch, not corruption).
- A `metrics` file Orbax cannot parse is moved aside before Orbax reads it (the checkpoint
  itself stays, ranked as having no metrics).
- A checkpoint saved when a signal stopped its evaluation carries `pending_eval` in its meta
  and no metrics: `pending_eval(step)` says so after a restore, and `set_metrics` attaches the
  metrics once the resumed run has evaluated it.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from srupp_jax import errors, files
from srupp_jax.errors import RunFault
from srupp_jax.training.leaves import abstract, array_name, describe, flatten, mismatch, unflatten

QUARANTINE = "quarantine"
META = "meta"
FORMAT = 2


class CheckpointError(RunFault):
    """A checkpoint could not be saved, or none could be restored."""


class CheckpointMismatchError(ValueError):
    """A checkpoint holds arrays of other shapes than the model being restored (config)."""


# ----------------------------------------------------------------------------- Checkpoints
class Checkpoints:
    """Save and restore named pytrees under `directory` (see the module docstring).

    read_only: for evaluation and generation: the directory must exist and nothing is created.
    """

    def __init__(self, directory: str, *, keep: int = 3, best_metric: str = "dev_loss",
                 best_mode: str = "min", read_only: bool = False):
        self.directory = os.path.abspath(os.fspath(directory))
        if read_only and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r}; expected 'min' or 'max'")
        self.best_metric = best_metric
        self.restored_meta: dict = {}     # the meta of the step `restore` returned
        self._set_aside_bad_metrics()
        sign = 1.0 if best_mode == "min" else -1.0       # Orbax ranks by the lowest value
        best_fn = lambda m: sign * float(m[best_metric]) if m and best_metric in m else math.inf
        policy = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn, best_mode="min", create=not read_only,
            preservation_policy=policy.AnyPreservationPolicy([
                policy.LatestN(n=keep),
                policy.BestN(get_metric_fn=best_fn, reverse=True, n=1,
                             keep_checkpoints_without_metrics=False)]))
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    # -- quarantine --------------------------------------------------------------------
    def _move_aside(self, src: str, name: str, why: str) -> None:
        """Move `src` to quarantine/<name> (process 0), then every process reloads."""
        dest = os.path.join(self.directory, QUARANTINE, name)
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            while os.path.exists(dest):
                dest += "_"
            shutil.move(src, dest)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"quarantine {name}")
        logging.warning("checkpoint: moved %s to %s: %s", src, dest, why)

    def _set_aside_bad_metrics(self) -> None:
        """Quarantine every step's metrics file that is not JSON (Orbax would fail on it)."""
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        for step in sorted(int(n) for n in names if n.isdigit()):
            path = os.path.join(self.directory, str(step), "metrics", "metrics")
            if not os.path.exists(path):
                continue
            try:
                with open(path) as f:
                    json.load(f)
            except (ValueError, UnicodeDecodeError) as e:
                self._move_aside(path, f"{step}.metrics", f"unreadable metrics ({e})")

    # -- queries -----------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(int(s) for s in self._mngr.all_steps())

    def best_step(self) -> int | None:
        """The step with the best `best_metric`, None if no checkpoint carries it."""
        step = self._mngr.best_step()
        metrics = self._mngr.metrics(step) if step is not None else None
        if not metrics or not math.isfinite(float(metrics.get(self.best_metric, math.nan))):
            return None
        return int(step)

    # -- save --------------------------------------------------------------------------
    def save(self, step: int, items: dict[str, Any], *, metrics: dict | None = None,
             meta: dict | None = None) -> None:
        """Start saving `items` (name -> pytree) as `step` (asynchronously); CheckpointError if
        Orbax declines, e.g. when `step` is not newer than every saved step."""
        self.check()
        leaves = {name: flatten(tree) for name, tree in items.items()}
        args = {name: ocp.args.StandardSave({array_name(i, p): x
                                             for i, (p, x) in enumerate(lv.items())})
                for name, lv in leaves.items()}
        described = {name: describe(lv) for name, lv in leaves.items()}
        args[META] = ocp.args.JsonSave(dict(meta or {}, format=FORMAT, leaves=described))
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        try:
            saved = self._mngr.save(int(step), args=ocp.args.Composite(**args), metrics=metrics)
        except Exception as e:       # e.g. a full disk while writing its metadata
            raise self._failed(e) from e
        if not saved:
            raise CheckpointError(f"checkpoint step {step} was not saved in {self.directory} "
                                  f"(existing steps {self.steps()})")

    def pending_eval(self, step: int) -> bool:
        """Whether the restored `step` was saved before its evaluation finished (a signal
        stopped it) and has no metrics yet."""
        return bool(self.restored_meta.get("pending_eval")) and not self._mngr.metrics(step)

    def set_metrics(self, step: int, metrics: dict) -> None:
        """Attach `metrics` to the saved `step` (written where Orbax keeps them, atomically)."""
        folder = os.path.join(self.directory, str(step), "metrics")
        if jax.process_index() == 0:
            os.makedirs(folder, exist_ok=True)
            files.write_atomic(os.path.join(folder, "metrics"),
                               json.dumps({k: float(v) for k, v in metrics.items()}))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"metrics {step}")
        self._mngr.reload()

    def check(self) -> None:
        """Raise the error of an asynchronous save that failed (e.g. disk full)."""
        try:
            self._mngr.check_for_errors()
        except Exception as e:
            raise self._failed(e) from e

    def _failed(self, e: Exception) -> CheckpointError:
        """The error of a save that failed; the file system's cause with what to do (a full
        disk: also as TensorStore reports it, `os_error_code='28'`)."""
        code = re.search(r"os_error_code='(\d+)'", str(e))     # TensorStore's form
        if isinstance(e, OSError):
            cause = errors.reason(e)
        elif code:
            cause = os.strerror(int(code.group(1))) + errors.hint(int(code.group(1)))
        else:
            cause = f"{type(e).__name__}: {e}"
        return CheckpointError(f"saving a checkpoint in {self.directory} failed: {cause}")

    def wait(self) -> None:
        try:
            self._mngr.wait_until_finished()
        except Exception as e:       # a save that failed in Orbax's threads (a full disk)
            raise self._failed(e) from e
        self.check()

    # -- restore -----------------------------------------------------------------------
    def restore(self, like: dict[str, Any], *, which: str = "latest",
                config: dict | None = None, optional=()):
        """Restore the trees named in `like` into its structure, dtypes and shardings (those
        named in `optional` only when the checkpoint has them).

        Tries the best step first when which == "best", then the steps newest first; a step
        that fails to load or verify is quarantined and the next one tried. Returns
        (step, items) or None when there is no checkpoint. `config`: the model config of this
        run, compared with the stored one to name the sizes a mismatch differs in.
        """
        return self._first_readable(
            which, lambda step: self._restore_step(step, like, config, optional))

    def restore_saved(self, name: str, *, which: str = "best"):
        """(step, {key path: array}) of tree `name` as it was saved (shapes and dtypes from
        the checkpoint, no model needed; arrays on the first local device, checksums
        verified), from the best (or latest) readable step; None without checkpoints."""
        def load(step):
            meta = self._mngr.restore(step, args=ocp.args.Composite(
                **{META: ocp.args.JsonRestore()}))[META]
            if name not in meta.get("leaves", {}):
                raise CheckpointMismatchError(f"checkpoint step {step} has no {name!r}")
            stored = meta["leaves"][name]
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            args = {array_name(i, p): jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=device)
                    for i, (p, shape, dtype, _) in enumerate(stored)}
            restored = self._mngr.restore(step, args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(args)}))[name]
            values = {p: restored[array_name(i, p)] for i, (p, *_) in enumerate(stored)}
            now = describe(values)
            for (path, _, _, stored_sum), (*_, checksum) in zip(stored, now):
                if checksum != stored_sum:
                    raise CheckpointError(f"{name}{path} fails its checksum (the file is "
                                          "corrupt)")
            return values
        return self._first_readable(which, load)

    def _first_readable(self, which: str, load):
        """(step, load(step)) of the best (which == "best") then the newest steps, moving
        each that fails to load to quarantine; None without checkpoints."""
        self.wait()
        self._mngr.reload()
        steps = self.steps()
        if not steps:
            return None
        best = self.best_step() if which == "best" else None
        order = ([best] if best is not None else []) + [s for s in reversed(steps) if s != best]
        tried = []
        for step in order:
            try:
                return step, load(step)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # unreadable, partial or corrupt
                cause = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                self._move_aside(os.path.join(self.directory, str(step)), str(step),
                                 f"checkpoint step {step} failed to load ({cause})")
                self._mngr.reload()
                tried.append(step)
        raise CheckpointError(f"no checkpoint in {self.directory} could be restored (steps "
                              f"{tried} moved to {os.path.join(self.directory, QUARANTINE)})")

    def _restore_step(self, step: int, like: dict[str, Any], config: dict | None,
                      optional=()):
        if os.path.exists(os.path.join(self.directory, str(step), "treedefs_")):
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} was written by an older srupp_jax "
                "(before checksums); restore it with that version, or train in a new workdir")
        meta = self._mngr.restore(step, args=ocp.args.Composite(
            **{META: ocp.args.JsonRestore()}))[META]
        self.restored_meta = meta
        stored_config = meta.get("config")
        like = {k: v for k, v in like.items() if k in meta["leaves"] or k not in optional}
        leaves = {name: flatten(tree) for name, tree in like.items()}
        for name, lv in leaves.items():
            if name not in meta["leaves"]:
                raise CheckpointMismatchError(f"checkpoint step {step} has no {name!r}")
            message = mismatch(step, name, meta["leaves"][name], lv, stored_config, config)
            if message:
                raise CheckpointMismatchError(message)
        args = {name: ocp.args.StandardRestore(
            {array_name(i, p): abstract(x) for i, (p, x) in enumerate(lv.items())})
            for name, lv in leaves.items()}
        restored = self._mngr.restore(step, args=ocp.args.Composite(**args))
        out = {}
        for name, lv in leaves.items():
            values = [restored[name][array_name(i, p)] for i, p in enumerate(lv)]
            now = describe(dict(zip(lv, values)))
            for (path, _, _, stored_sum), (*_, checksum) in zip(meta["leaves"][name], now):
                if checksum != stored_sum:
                    raise CheckpointError(f"{name}{path} fails its checksum (the file is "
                                          "corrupt)")
            out[name] = unflatten(like[name], values)
        return out

    def close(self) -> None:
        """Wait for the pending save (raising its error), then stop Orbax's threads."""
        try:
            self.wait()
        finally:
            self._mngr.close()

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:      # else the error already on its way is the one to tell
                raise
