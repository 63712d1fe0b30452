"""Where a run is: its named phases, and how far a long one has got. Shared by every layer
(data, training, inference, the programs), like errors.py; it imports nothing heavy.

    phases.enter("cache.build")      # the code marks each phase it enters (never per step)
    phases.current()                 # "cache.build": the line of a stopped run names it
    for batch in phases.progress(batches, "eval dev", total=n, unit="batch",
                                 phase="eval.batch"):
        ...

`progress` draws a tqdm bar on a terminal; elsewhere (CI logs, nohup, SLURM) it logs a line at
every tenth of `total` and at least every `EVERY` seconds ("eval dev: 12/40 batches (30%),
5.2 s"), and one line when the loop ends ("eval dev: 40 batches in 17.3 s"). Without a `desc`
(the evaluations during training) it is quiet unless the loop is slow: a line every `EVERY`
seconds only. `size` counts an item as more than one unit (tokenizing: the characters of a
line).

The fault tests (tests/killing.py) steer a real run through two environment variables, read
once at import; a user's run has neither, and `enter` then only records the name:
  SRUPP_JAX_AT="PHASE[#N]=ACTION[;...]"  the N-th time (default 1) the process enters PHASE
      it acts: kill (SIGKILL itself), term (SIGTERM), int (SIGINT), sleep:SECONDS;
  SRUPP_JAX_PHASES=FILE  every phase entered is appended to FILE, one line each.
"""
from __future__ import annotations

import collections
import os
import signal
import sys
import time
from typing import Callable, Iterable, Iterator, Optional

# Every phase a run marks, with the words a message uses for it.
PHASES = {
    "prepare.build": "preparing a dataset",
    "prepare.record": "recording a prepared dataset",
    "cache.build": "building a data cache",
    "cache.write": "writing a data cache",
    "cache.publish": "publishing a data cache",
    "data.tokenize": "tokenizing text",
    "train.start": "starting training",
    "train.compile": "compiling the training step",
    "train.log": "training",
    "checkpoint.save": "saving a checkpoint",
    "eval.dev": "evaluating on dev",
    "eval.batch": "evaluating",
    "train.record": "writing the final record",
}
EVERY = 30.0          # seconds between progress lines off a terminal, at most

_current: Optional[str] = None
_counts: collections.Counter = collections.Counter()


def _plan(spec: str) -> dict:
    """{(phase, n): action} of SRUPP_JAX_AT (module docstring)."""
    plan = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        where, _, action = part.partition("=")
        name, _, n = where.partition("#")
        plan[(name, int(n or 1))] = action or "kill"
    return plan


_PLAN = _plan(os.environ.get("SRUPP_JAX_AT", ""))
_LOG = os.environ.get("SRUPP_JAX_PHASES", "")


def enter(name: str) -> None:
    """Mark that the process enters phase `name` (one of PHASES)."""
    global _current
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; expected one of {', '.join(PHASES)}")
    _current = name
    if not (_PLAN or _LOG):
        return
    _counts[name] += 1
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    action = _PLAN.get((name, _counts[name]))
    if action:
        _act(action)


def _act(action: str) -> None:
    kind, _, arg = action.partition(":")
    if kind == "sleep":
        time.sleep(float(arg))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), {"kill": signal.SIGKILL, "term": signal.SIGTERM,
                          "int": signal.SIGINT}[kind])


def current() -> Optional[str]:
    """The phase the process entered last (None before any)."""
    return _current


def describe(name: Optional[str] = None) -> str:
    """The words for phase `name` (default: the current one), "" before any."""
    name = _current if name is None else name
    return PHASES.get(name, "") if name else ""


def on_terminal() -> bool:
    """Whether stderr is a terminal (where progress bars are drawn)."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _amount(x: float) -> str:
    return f"{x:,.1f}" if isinstance(x, float) else f"{x:,}"


def _units(unit: str, n: float) -> str:
    if n == 1 or unit.endswith(("s", "B")):
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "x")) else "s")


def progress(items: Iterable, desc: str, *, total: Optional[float] = None, unit: str = "it",
             size: Optional[Callable] = None, phase: Optional[str] = None) -> Iterator:
    """`items`, showing how far the loop has got (module docstring). total: units in all
    (None: unknown); size(item): the units of an item (default 1); phase: entered at the
    start and at every tenth of the loop (or progress line)."""
    from absl import logging
    bar, quiet = None, not desc
    desc = desc or PHASES.get(phase or "", "working")
    if on_terminal() and not quiet:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    if phase:
        enter(phase)
    start = last = time.perf_counter()
    done, count, mark = 0, 0, 1
    try:
        for count, item in enumerate(items, 1):
            yield item
            step = size(item) if size else 1
            done += step
            now = time.perf_counter()
            tenth = bool(total) and done * 10 >= mark * total and done < total
            while total and done * 10 >= mark * total:
                mark += 1
            line = (tenth and not quiet) or now - last >= EVERY
            if bar is not None:
                bar.update(step)
            elif line:
                of = (f"/{_amount(total)} {_units(unit, total)} ({100 * done / total:.0f}%)"
                      if total else f" {_units(unit, done)}")
                logging.info("%s: %s%s, %.1f s", desc, _amount(done), of, now - start)
            if line:
                last = now
            if phase and (tenth or line):
                enter(phase)
    finally:
        if bar is not None:
            bar.close()
    if bar is None and not (quiet and last == start):
        shown = done if size else count
        logging.info("%s: %s %s in %.1f s", desc, _amount(shown), _units(unit, shown),
                     time.perf_counter() - start)
