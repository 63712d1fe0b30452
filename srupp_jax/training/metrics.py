"""Training metrics: metrics.jsonl and TensorBoard scalars, with no TensorFlow (the writers of
`clu` import it; the event files come from `tensorboardX`).

  MetricWriter(workdir)        .write(step, {"loss": ..}, split="train") appends one JSON line
                               to workdir/metrics.jsonl and TensorBoard scalars to
                               workdir/tensorboard/<split>/. Each record carries `hours`, the
                               wall-clock training hours of the run, continued across restarts.
  read_metrics(path)           the JSONL back as a list of dicts ("nan"/"inf" back to floats).
  last_hours(path)             the `hours` of its last complete record.
  train_seconds(workdir, step) training seconds of a timed run up to `step` (the study).
  last_metrics(workdir, step)  the latest value of every metric up to `step`.
  MetricWriter.note(step, info)  a "setup" line of text (the recurrence chosen and why, the
                               memory plan, the loss scale): not a metric.
  check_record(workdir)        DamagedFile naming a line of metrics.jsonl that is not a record
                               (one cut short by a stopped run, the last, is not damage).

Multi-host: create the MetricWriter on process 0 only (`jax.process_index() == 0`). The
progress bar: progress.py; FLOPs and MFU: flops.py.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from typing import Any, Callable, Mapping, Optional

from srupp_jax import files

METRICS_FILE = "metrics.jsonl"
RESERVED_KEYS = ("step", "split", "time", "hours")    # set by the writer, not by scalars
SETUP = "setup"     # the split of MetricWriter.note's lines: what a run chose when it started


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
    return f if math.isfinite(f) else str(f)      # "nan", "inf", "-inf"


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _decode(record: dict) -> dict:
    return {k: (_NONFINITE[v] if k != "split" and isinstance(v, str) and v in _NONFINITE else v)
            for k, v in record.items()}


def _lines(path: str) -> list[str]:
    """The lines of a text file, the last one possibly unfinished (or ""); bytes that are not
    UTF-8 become U+FFFD (a garbled line is then not JSON)."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        return f.read().split("\n")


def _blank(line: str) -> bool:
    return not line.strip(" \t\r\0")


def _records(path: str) -> list[tuple[str, dict]]:
    """(line, record) of every record of a metrics.jsonl, in order; its last line left out
    when it is unfinished (no newline after it, or NUL bytes: a run stopped while writing
    it). DamagedFile naming the first other line that is not a record."""
    lines = _lines(path)
    out = []
    for i, line in enumerate(lines):
        if _blank(line):
            continue
        try:
            record = json.loads(line)
            if not (isinstance(record, dict) and isinstance(record.get("step"), int)
                    and isinstance(record.get("split"), str)):
                raise ValueError("not a record with a step and a split")
        except ValueError as e:
            if all(_blank(rest) for rest in lines[i + 1:]) and (
                    i == len(lines) - 1 or "\0" in line):
                break                                  # unfinished: the run stopped here
            raise files.DamagedFile(
                f"{path} is damaged at line {i + 1} ({str(e).splitlines()[0]}): it is the "
                "record of this run's metrics; restore it from a copy, delete that line, or "
                f"move it aside (mv {path} {path}.damaged) to start a new one") from None
        out.append((line, record))
    return out


def check_record(workdir: str) -> None:
    """DamagedFile when workdir's metrics.jsonl has a line that is not a record (_records)."""
    path = os.path.join(os.fspath(workdir), METRICS_FILE)
    if os.path.isfile(path):
        _records(path)


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
    lines = _lines(path)
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
        pos = end = f.seek(0, os.SEEK_END)
        block = 1 << 16
        while pos > 0:
            pos = max(0, pos - block)
            f.seek(pos)
            lines = f.read(end - pos).split(b"\n")
            # lines[0] may be cut at `pos`, so only trust it when we read from the start.
            for line in reversed(lines if pos == 0 else lines[1:]):
                try:
                    rec = json.loads(line) if line.strip() else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue                 # truncated line from a crash
                h = rec.get("hours") if isinstance(rec, dict) else None
                if isinstance(h, (int, float)) and math.isfinite(h):
                    return float(h)
            block *= 4
    return 0.0


def train_seconds(workdir: str, step: int) -> float:
    """The training seconds (`train_seconds`, written by timed runs) recorded in `workdir`'s
    metrics up to `step`; 0.0 for a fresh run or one that was not timed."""
    try:
        records = read_metrics(workdir)
    except FileNotFoundError:
        return 0.0
    return max([r["train_seconds"] for r in records
                if r["step"] <= step and "train_seconds" in r] or [0.0])


def last_metrics(workdir: str, step: int) -> dict:
    """The latest value of every metric of `workdir`'s records up to `step` ({} for none), with
    the step of each split's latest row (`train_step`, `dev_step`)."""
    last = {}
    try:
        for row in read_metrics(workdir):
            if row["step"] <= step and row["split"] != SETUP:
                last.update({k: v for k, v in row.items() if k not in RESERVED_KEYS})
                last[f"{row['split']}_step"] = row["step"]     # the step they were measured at
    except FileNotFoundError:
        pass
    return last


def _keep_records(path: str, keep) -> None:
    """Rewrite a metrics.jsonl (atomically) with the records for which keep(record) holds, an
    unfinished last line dropped; untouched when that changes nothing."""
    if not os.path.isfile(path):
        return
    records = _records(path)
    kept = [line for line, record in records if keep(record)]
    if kept == [line for line in _lines(path) if line.strip()]:
        return
    files.write_atomic(path, "".join(line + "\n" for line in kept))


class Events:
    """A TensorBoard event file (tensorboardX's EventsWriter) written in the caller's thread:
    a full disk raises at the write, where tensorboardX's SummaryWriter would lose its writer
    thread and then wait forever on its full queue (the run hung). purge_step: TensorBoard
    hides the events of that step and later ones written before (a resumed run)."""

    def __init__(self, logdir: str, purge_step: Optional[int] = None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        os.makedirs(logdir, exist_ok=True)
        self._writer = EventsWriter(os.path.join(logdir, "events"))
        if purge_step is not None:
            self._writer.write_event(Event(step=purge_step, wall_time=time.time(),
                                           session_log=SessionLog(status=SessionLog.START)))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar
        self._writer.write_event(Event(step=step, wall_time=time.time(),
                                       summary=scalar(tag, value)))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


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
        restart, and about to be written again) are removed from metrics.jsonl first, as is
        the setup line of an earlier start from this same step (the new start writes its
        own), and TensorBoard hides its events after this step (tensorboardX's purge_step).

    Each `write` appends one line
      {"step": int, "split": str, "time": unix seconds, "hours": float, "devices": int, **scalars}
    and flushes it to disk (a `devices` entry in `scalars` overrides the writer's count).
    `hours` is the training wall time of the whole run: the `hours` of the last record already
    in metrics.jsonl (a restarted run) plus the time since this writer was opened, so a
    resumed run keeps counting (the time between the crash and the restart is not counted).
    Non-finite scalars are stored as "nan"/"inf"/"-inf" strings; `read_metrics` turns them
    back into floats.
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
        if resume_step is not None:     # and a line cut short by a stopped run, and the setup
            _keep_records(self.path, lambda r: r["step"] < resume_step or (  # line of a start
                r["step"] == resume_step and r["split"] != SETUP))       # from the same step
        self._t0 = time.monotonic()
        with open(self.path, "ab+") as f:      # a truncated line must not swallow our record
            f.seek(max(f.seek(0, os.SEEK_END) - 1, 0))
            if f.read(1) not in (b"", b"\n"):
                f.write(b"\n")
        self._file = open(self.path, "a", encoding="utf-8")
        self._tensorboard = tensorboard
        self._purge = None if not resume_step else resume_step + 1
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
        if split not in self._tb:
            self._tb[split] = Events(os.path.join(self.workdir, "tensorboard", split),
                                     self._purge)
        return self._tb[split]

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
        try:
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()
        except OSError as e:                     # a full disk: the error names the file
            raise files.named(e, self.path) from None
        if self._tensorboard:
            try:
                w = self._tb_writer(split)
                for k, v in record.items():
                    if k not in RESERVED_KEYS and k != "devices":
                        w.add_scalar(k, _NONFINITE.get(v, v) if isinstance(v, str) else v, step)
            except OSError as e:
                raise files.named(e, os.path.join(self.workdir, "tensorboard", split)) from None
        return record

    def forget(self, step: int, split: str) -> None:
        """Remove the record of `split` at `step` (an evaluation about to be redone)."""
        self._file.close()
        _keep_records(self.path, lambda r: (r["step"], r["split"]) != (step, split))
        self._file = open(self.path, "a", encoding="utf-8")

    def note(self, step: int, info: Mapping[str, Any], *, split: str = SETUP) -> None:
        """Record `info` (text or numbers, e.g. the recurrence backend a run chose and why) as
        one line of `split` (default "setup", the first line of each start); not a metric: no
        TensorBoard scalars, and `last_metrics` skips it."""
        record = {"step": int(step), "split": split, "time": self._clock(), "hours": self.hours,
                  "devices": self.devices, **{k: v if isinstance(v, str) else _json_value(v)
                                              for k, v in info.items()}}
        try:
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()
        except OSError as e:                     # a full disk: the error names the file
            raise files.named(e, self.path) from None

    def flush(self) -> None:
        """Everything written so far onto the disk (an OSError names metrics.jsonl)."""
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as e:
                raise files.named(e, self.path) from None
        for split, w in self._tb.items():
            try:
                w.flush()
            except OSError as e:
                raise files.named(e, os.path.join(self.workdir, "tensorboard", split)) from None

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            f, self._file = self._file, None
            tb, self._tb = self._tb, {}
            for w in tb.values():
                w.close()
            f.close()

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
