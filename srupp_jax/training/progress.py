"""The training progress bar: tqdm with ETA, loss and tokens/s over a moving window.

  with Progress(total_steps, initial=start, tokens_per_step=batch * unroll) as bar:
      bar.update(step, loss=...)      # absolute step; loss: float or None
      bar.write("a line")             # printed above the bar, which stays intact

The bar goes to stderr and hides itself when stderr is not a terminal; `tokens_per_sec` is
computed either way (it is logged to metrics.jsonl). The trainer prints a plain line every
train.log_every steps in both cases.

  for batch in bar(batches, "eval dev", total=n, unit="segment"):   # evaluation loops
      ...

`bar` is srupp_jax.phases.progress: a tqdm bar on a terminal; elsewhere (CI logs, nohup,
SLURM) a line at every tenth of the loop and at least every 30 s, and one when it ends
("eval dev: 120 segments in 3.1 s").
"""
from __future__ import annotations

import collections
import sys
import time
from typing import Callable, Optional

from srupp_jax import phases

on_terminal = phases.on_terminal
bar = phases.progress        # loops of a long phase (evaluation): srupp_jax/phases.py


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
            disable = not on_terminal()
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
