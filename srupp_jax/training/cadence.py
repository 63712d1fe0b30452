"""When the training loop evaluates, stops and traces (srupp_jax/training/trainer.py).

  StopRule(train_config, start, seconds)   dev evaluations and the stop rules, in one place
  Profile(workdir, (first, last), say)     a jax.profiler trace of steps first+1..last
"""
from __future__ import annotations

import os

import jax


class StopRule:
    """When the loop evaluates and when it stops, in one place: after train.steps (x the
    accumulation) micro-steps it has finished; at train.stop_at, or once train.time_budget
    seconds of training steps have passed, it has stopped (saved, resumable); dev evaluations
    every train.eval_every steps, at the end, and once the training seconds pass each of
    train.eval_marks. Training seconds count the steps only (not evaluation or saving, nor the
    first step of each start, which compiles); timing waits for every step, so only runs with
    a budget or marks are timed."""

    def __init__(self, t, start: int, seconds: float):
        self.total = t.steps * t.grad_accum_steps
        self.stop_at, self.eval_every = t.stop_at, t.eval_every
        self.budget = t.get("time_budget", 0.0)
        self.marks = sorted(t.get("eval_marks", ()))
        self.timed = bool(self.budget or self.marks)
        self.start, self.seconds = start, seconds

    def out_of_time(self) -> bool:
        return bool(self.budget) and self.seconds >= self.budget

    def timed_step(self, step: int, seconds: float) -> None:
        self.seconds += seconds * (step > self.start)

    def eval_due(self, done: int) -> bool:
        passed = bool(self.marks) and self.seconds >= self.marks[0]
        while self.marks and self.seconds >= self.marks[0]:
            self.marks.pop(0)
        return done % self.eval_every == 0 or done == self.total or passed or self.out_of_time()

    def stopped(self, done: int) -> bool:
        return done < self.total and (done == self.stop_at or self.out_of_time())


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
