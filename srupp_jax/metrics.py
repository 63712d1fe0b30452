"""Training metrics: a JSONL + TensorBoard writer and a progress bar (FLOPs and MFU: flops.py).

No TensorFlow anywhere (`clu.metric_writers` imports it; see DESIGN section 8): TensorBoard
event files are written with `tensorboardX`, the progress bar is `tqdm`.

  MetricWriter(workdir)        .write(step, {"loss": ..}, split="train") appends one JSON line
                               to workdir/metrics.jsonl and TensorBoard scalars to
                               workdir/tensorboard/<split>/. Each record carries `hours`, the
                               wall-clock training hours of the run, continued across restarts.
  read_metrics(path)           the JSONL back as a list of dicts ("nan"/"inf" back to floats).
  Progress(total, tokens_per_step=..)   tqdm bar with ETA, loss and tokens/s (moving window).

Multi-host: create the MetricWriter on process 0 only (`jax.process_index() == 0`).
"""
from __future__ import annotations

import collections
import json
import math
import os
import sys
import time
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

METRICS_FILE = "metrics.jsonl"
RESERVED_KEYS = ("step", "split", "time", "hours")    # set by the writer, not by scalars

__all__ = ["METRICS_FILE", "MetricWriter", "read_metrics", "last_hours", "Progress"]


# ----------------------------------------------------------------------------- JSONL + TB

def _json_value(v: Any) -> Any:
    """A scalar as a JSON-safe value: ints stay ints, other numbers become floats, non-finite
    floats become the strings "nan", "inf", "-inf" (so every line stays strict JSON)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int):
        return v
    try:
        f = float(v)               # numpy / jax scalars, 0-d arrays
    except (TypeError, ValueError) as e:
        raise TypeError(f"metric value {v!r} of type {type(v).__name__} is not a number") from e
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _decode(record: dict) -> dict:
    return {k: (_NONFINITE[v] if k != "split" and isinstance(v, str) and v in _NONFINITE else v)
            for k, v in record.items()}


def read_metrics(path: str, *, split: Optional[str] = None, strict: bool = False) -> list[dict]:
    """Load a metrics.jsonl written by MetricWriter (or a workdir containing one).

    Returns the records in file order, "nan"/"inf"/"-inf" strings turned back into floats;
    with `split`, only that split's records. A line cut short by a crash mid-write (the last
    line, or one a restarted writer wrote after) is skipped, with a warning unless it is the
    last line; `strict=True` raises ValueError naming the file and line number instead.
    Raises FileNotFoundError naming the path when the file does not exist.
    """
    path = os.fspath(path)
    if os.path.isdir(path) or (not os.path.exists(path) and not path.endswith(".jsonl")):
        path = os.path.join(path, METRICS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file not found: {path}")
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            msg = f"{path}:{i + 1}: not valid JSON ({e}): {line[:200]!r}"
            if strict:
                raise ValueError(msg) from e
            if i != len(lines) - 1:    # an unfinished last line is expected after a crash
                warnings.warn(f"skipping a truncated record: {msg}", stacklevel=2)
            continue
        if split is None or rec.get("split") == split:
            records.append(_decode(rec))
    return records


def last_hours(path: str) -> float:
    """The `hours` of the last complete record in a metrics.jsonl; 0.0 if none / no file.

    Reads only the file's tail, so it is cheap for long runs."""
    if not os.path.isfile(path):
        return 0.0
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        block, data = 1 << 16, b""
        pos = end
        while pos > 0:
            pos = max(0, pos - block)
            f.seek(pos)
            data = f.read(end - pos)
            lines = data.split(b"\n")
            # lines[0] may be cut at `pos`, so only trust it when we read from the start.
            candidates = lines if pos == 0 else lines[1:]
            for line in reversed(candidates):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue                 # truncated line from a crash
                h = rec.get("hours") if isinstance(rec, dict) else None
                if isinstance(h, (int, float)) and math.isfinite(h):
                    return float(h)
            block *= 4
    return 0.0


def _drop_records_after(path: str, step: int) -> None:
    """Rewrite a metrics.jsonl without the records of steps after `step` (atomic replace)."""
    if not os.path.isfile(path):
        return
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    kept = []
    for line in lines:
        try:
            if line.strip() and json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue                                  # a truncated line: dropped as well
    if len(kept) == sum(bool(line.strip()) for line in lines):
        return
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in kept))
    os.replace(path + ".tmp", path)


class MetricWriter:
    """Append metrics to `workdir/metrics.jsonl` and (optionally) TensorBoard.

    Args:
      workdir: run directory (created if missing).
      tensorboard: also write TensorBoard scalars with tensorboardX under
        `workdir/tensorboard/<split>/` (tag = scalar name, x = step).
      devices: number of accelerator devices of the run, stored in every record as `devices`
        (the plot multiplies `hours` by it to give device hours). None: `jax.device_count()`.
      clock: wall clock for the `time` field (tests); elapsed hours use `time.monotonic`.
      resume_step: a run resumed from this step: records of later steps (written before the
        restart, and about to be written again) are removed from metrics.jsonl first.

    Each `write` appends one line
      {"step": int, "split": str, "time": unix seconds, "hours": float, "devices": int, **scalars}
    and flushes it to disk (a `devices` entry in `scalars` overrides the writer's count). `hours` is the training wall time of the whole run: the `hours` of
    the last record already in metrics.jsonl (a restarted run) plus the time since this
    writer was opened, so a resumed run keeps counting (the time between the crash and the
    restart is not counted). Non-finite scalars are stored as "nan"/"inf"/"-inf" strings;
    `read_metrics` turns them back into floats.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True, devices: Optional[int] = None,
                 clock: Callable[[], float] = time.time, resume_step: Optional[int] = None):
        self.workdir = os.fspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.path = os.path.join(self.workdir, METRICS_FILE)
        if devices is None:
            import jax
            devices = jax.device_count()
        if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            raise ValueError(f"devices={devices!r}; expected a positive integer")
        self.devices = devices
        self._clock = clock
        self.start_hours = last_hours(self.path)   # before dropping rows: hours spent count
        if resume_step is not None:
            _drop_records_after(self.path, resume_step)
        self._t0 = time.monotonic()
        needs_newline = False
        if os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")
        if needs_newline:                      # a truncated line must not swallow our record
            self._file.write("\n")
        self._tensorboard = tensorboard
        self._tb: dict[str, Any] = {}
        if tensorboard:
            try:
                import tensorboardX  # noqa: F401
            except ImportError as e:
                raise ImportError("MetricWriter(tensorboard=True) needs tensorboardX "
                                  "(pip install tensorboardX); or pass tensorboard=False") from e

    @property
    def hours(self) -> float:
        """Training hours of the run so far (previous sessions included)."""
        return self.start_hours + (time.monotonic() - self._t0) / 3600.0

    def _tb_writer(self, split: str):
        w = self._tb.get(split)
        if w is None:
            from tensorboardX import SummaryWriter
            w = SummaryWriter(logdir=os.path.join(self.workdir, "tensorboard", split))
            self._tb[split] = w
        return w

    def write(self, step: int, scalars: Mapping[str, Any], *, split: str = "train") -> dict:
        """Record `scalars` at `step` for `split`; returns the record written."""
        if self._file is None:
            raise ValueError(f"MetricWriter for {self.path} is closed")
        if isinstance(step, bool):
            raise TypeError(f"step={step!r}; expected an integer")
        step = int(step)
        if not isinstance(split, str) or not split or "/" in split or os.sep in split:
            raise ValueError(f"split={split!r}; expected a non-empty name without path separators")
        record: dict[str, Any] = {"step": step, "split": split, "time": self._clock(),
                                  "hours": self.hours, "devices": self.devices}
        for k, v in scalars.items():
            if not isinstance(k, str) or not k:
                raise ValueError(f"metric name {k!r}; expected a non-empty string")
            if k in RESERVED_KEYS:
                raise ValueError(f"metric name {k!r} is reserved (reserved: {RESERVED_KEYS})")
            if k == "devices":                 # overrides the writer's device count
                if isinstance(v, bool) or int(v) != v or int(v) < 1:
                    raise ValueError(f"devices={v!r}; expected a positive integer")
                record[k] = int(v)
                continue
            record[k] = _json_value(v)
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._tensorboard:
            w = self._tb_writer(split)
            for k, v in record.items():
                if k not in RESERVED_KEYS and k != "devices":
                    w.add_scalar(k, _NONFINITE.get(v, v) if isinstance(v, str) else v, step)
        return record

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        for w in self._tb.values():
            w.flush()

    def close(self) -> None:
        if self._file is None:
            return
        self.flush()
        self._file.close()
        self._file = None
        for w in self._tb.values():
            w.close()
        self._tb = {}

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- progress bar

class Progress:
    """A tqdm progress bar over training steps with ETA, loss and tokens/s.

    Args:
      total_steps: the last step; `initial`: the step the run (re)starts from.
      tokens_per_step: tokens processed per step, all devices (batch * unroll).
      window: number of recent `update` calls the tokens/s rate is averaged over (a moving
        window, so the first step's compile time drops out after `window` updates).
      disable: True hides the bar; None (default) hides it when stderr is not a terminal.
        `tokens_per_sec` is computed either way.
      clock: monotonic clock (tests).
    """

    def __init__(self, total_steps: int, *, initial: int = 0, tokens_per_step: int,
                 window: int = 20, disable: Optional[bool] = None, desc: str = "train",
                 clock: Callable[[], float] = time.perf_counter):
        if total_steps < 0 or initial < 0:
            raise ValueError(f"total_steps={total_steps}, initial={initial}; expected >= 0")
        if tokens_per_step <= 0:
            raise ValueError(f"tokens_per_step={tokens_per_step}; expected > 0")
        if window < 1:
            raise ValueError(f"window={window}; expected >= 1")
        from tqdm import tqdm
        if disable is None:
            disable = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        self.tokens_per_step = tokens_per_step
        self.step = initial
        self.loss: Optional[float] = None
        self._clock = clock
        self._hist = collections.deque([(clock(), initial)], maxlen=window + 1)
        self._bar = tqdm(total=total_steps, initial=initial, desc=desc, unit="step",
                         dynamic_ncols=True, file=sys.stderr, disable=disable, smoothing=0.1)

    def update(self, step: int, loss: Optional[float] = None) -> None:
        """Move the bar to `step` (absolute) and show `loss` (a float or None)."""
        step = int(step)
        self._hist.append((self._clock(), step))
        if loss is not None:
            self.loss = float(loss)
        if step > self.step:
            self._bar.update(step - self.step)
        self.step = step
        if not self._bar.disable:
            parts = []
            if self.loss is not None:
                parts.append(f"loss={self.loss:.4f}")
            parts.append(f"tok/s={self.tokens_per_sec:,.0f}")
            self._bar.set_postfix_str(" ".join(parts), refresh=False)

    @property
    def steps_per_sec(self) -> float:
        """Steps per second over the moving window (0.0 before any progress)."""
        (t0, s0), (t1, s1) = self._hist[0], self._hist[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else 0.0

    @property
    def tokens_per_sec(self) -> float:
        """Tokens per second over the moving window (0.0 before any progress)."""
        return self.steps_per_sec * self.tokens_per_step

    def write(self, msg: str) -> None:
        """Print a line without breaking the bar."""
        self._bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
