"""What a training run tells while it runs, and the trace it can take (srupp_jax/training/
trainer.py runs them):

  Report    the on-device metric window fetched every train.log_every steps (the loop's only
            wait for the device), the train, dev and setup rows of metrics.jsonl and
            TensorBoard (process 0), the progress bar and its lines
  Profile   a jax.profiler trace of steps first+1..last (train.profile_steps)
  Pace      on a CPU, once: how long the configured steps will take, and the CPU variant
"""
from __future__ import annotations

import os
import time

import jax
from absl import logging

from srupp_jax import phases
from srupp_jax.training.metrics import MetricWriter
from srupp_jax.training.mfu import mfu, peak_flops_per_device
from srupp_jax.training.optim import lr_schedule
from srupp_jax.training.progress import Progress
from srupp_jax.training.steps import Window, accumulate


class Report:
    """What the run tells: the on-device metric window fetched every train.log_every steps
    (the loop's only wait for the device; train.max_bad_steps non-finite steps in a row stop
    the run), the train and dev rows of metrics.jsonl and TensorBoard (process 0), the
    progress bar and its lines, and `last`, the latest metrics of each split."""

    def __init__(self, workdir: str, task, rule, mesh, start: int, window=None):
        """window: the metric window a checkpoint restored (None: empty)."""
        t, main = task.config.train, jax.process_index() == 0
        self.task, self.rule, self.devices = task, rule, mesh.devices.size
        self.writer = MetricWriter(workdir, resume_step=start) if main else None
        self.progress = Progress(rule.total, initial=start, tokens_per_step=task.tokens_per_step,
                                 disable=None if main else True)
        self.say = self.progress.write if main else (lambda _: None)
        self.window = Window.empty() if window is None else window
        self.max_bad, self.last = t.max_bad_steps, {}
        self.schedule = lr_schedule(t.lr, t.warmup_steps, t.steps, kind=t.schedule)
        self.accum = t.grad_accum_steps
        self.flops, self.peak = None, peak_flops_per_device()

    def setup(self, start: int, info: dict) -> None:
        """Log what the run chose when it started (the recurrence backend and why, ...) and
        write it as the "setup" line of metrics.jsonl (the first line of each start)."""
        if info.get("recurrence_reason"):
            logging.info("recurrence %s: %s", info["recurrence"], info["recurrence_reason"])
        if self.writer and info:
            self.writer.note(start, dict(info, **self.task.marks))   # every row says them

    def add(self, step_metrics) -> None:
        self.window = accumulate(self.window, step_metrics)

    def fetch(self, done: int):
        """(mean loss of the applied steps since the last fetch or None, last grad norm)."""
        w = jax.device_get(self.window)
        self.window = Window.empty(int(w.bad_run))
        self.loss_scale = float(w.loss_scale)
        if w.overflows:
            logging.info("%d float16 step(s) up to step %d overflowed: skipped, loss scale now "
                         "%g", w.overflows, done, w.loss_scale)
        if w.skipped > w.overflows:
            logging.warning("%d step(s) up to step %d had a non-finite loss or gradient; their "
                            "updates were skipped", w.skipped - w.overflows, done)
        if w.worst_run >= self.max_bad:
            raise FloatingPointError(
                f"{int(w.worst_run)} consecutive steps with a non-finite loss or gradient (by "
                f"step {done}); stopping. Lower train.lr or check the data.")
        mean = float(w.loss_sum / w.applied) if w.applied else None
        self.progress.update(done, mean)
        return mean, float(w.grad_norm)

    def train(self, done: int, model) -> None:
        """The train row of a logged step (nothing when every step since the last was
        skipped)."""
        mean, grad_norm = self.fetch(done)
        if mean is None:
            return
        if self.flops is None:
            self.flops = self.task.flops_per_token(model)
        tps = self.progress.tokens_per_sec
        util = mfu(tps, self.flops, self.peak, num_devices=self.devices)
        self.record(done, "train", dict(
            self.task.train_metrics(mean), lr=float(self.schedule(done // self.accum)),
            grad_norm=grad_norm, tokens_per_sec=tps, devices=self.devices,
            **({} if util is None else {"mfu": util}),
            **({"loss_scale": self.loss_scale} if self.loss_scale == self.loss_scale else {})))
        phases.enter("train.log")

    def redo_dev(self, step: int, ckpt, dev) -> bool:
        """Record `dev`, the evaluation of checkpoint `step` that a signal had stopped, and
        attach its best metric to the checkpoint; False when it was stopped again (None)."""
        if dev is None:
            return False
        if self.writer:
            self.writer.forget(step, "dev")
        self.record(step, "dev", dev)
        ckpt.set_metrics(step, {self.task.best_metric: dev[self.task.best_metric]})
        return True

    def record(self, done: int, split: str, metrics: dict) -> None:
        metrics = dict(metrics, **self.task.marks,
                       **({"train_seconds": self.rule.seconds} if self.rule.timed else {}))
        self.last.update(metrics, **{f"{split}_step": done})   # the step they were measured at
        if self.writer:
            self.writer.write(done, metrics, split=split)
        self.say(f"step {done}: " + " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))

    def __enter__(self) -> "Report":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.progress.close()
        try:
            if self.writer:
                self.writer.close()
        except OSError:
            if exc_type is None:      # else the error on its way (e.g. a full disk) is told
                raise


class Profile:
    """A jax.profiler trace of steps first+1..last (train.profile_steps) in workdir/profile."""
    def __init__(self, workdir: str, steps, say):
        (self.first, self.last), self.workdir, self.say = steps, workdir, say

    def before(self, step: int) -> None:
        if step == self.first and self.last > self.first:
            jax.profiler.start_trace(os.path.join(self.workdir, "profile"))

    def after(self, done: int, state) -> None:
        if done == self.last and self.last > self.first:
            jax.block_until_ready(state.params)
            jax.profiler.stop_trace()
            self.say(f"profile of steps {self.first + 1}..{done} in {self.workdir}/profile")


class Pace:
    """On a CPU, once: times a few steps after the first (which compiles) and says how long
    the configured steps will take at that speed, naming the config's CPU variant
    (`cpu_variant`) when the run would take over LONG seconds."""
    STEPS, LONG = 3, 1800.0

    def __init__(self, config, start: int, total: int):
        self.variant, self.start, self.total = config.cpu_variant, start, total
        self.active = jax.default_backend() == "cpu" and total - start > self.STEPS + 1
        self.t0 = 0.0

    def after(self, done: int, state) -> None:
        if not self.active or done not in (self.start + 1, self.start + 1 + self.STEPS):
            return
        jax.block_until_ready(state.params)
        if done == self.start + 1:
            self.t0 = time.perf_counter()
            return
        self.active = False
        per = (time.perf_counter() - self.t0) / self.STEPS
        left = per * (self.total - done)
        hours, minutes = divmod(round(left / 60), 60)
        line = (f"on this CPU a step takes {per:.2f} s: the {self.total - done:,} steps left "
                f"will take about {hours} h {minutes} min")
        if left > self.LONG:
            hint = (f"for a CPU use --config={self.variant} (sized to learn within minutes)"
                    if self.variant else "a smaller model (model.d, model.num_layers) or a GPU")
            logging.warning("%s; %s", line, hint)
        else:
            logging.info(line)
