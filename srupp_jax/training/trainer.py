"""The training loop, for any task (srupp_jax/tasks): nothing here knows a task or a model.

`train_and_evaluate(task, workdir)` owns what every run shares: the device mesh, the workdir
lock and record (config.json), SIGTERM / SIGINT, the `TrainState` (saved and restored as one
set of trees), the metrics kept on the device between fetches, the cadence of logging,
evaluation and checkpoints, the stop rules, profiling, and how the run ends (its status). The
task supplies the rest (tasks/base.py): config checks, data, the model, the carry, the batch
of a step, the loss, evaluation and the best-checkpoint metric.

Resume is exact: a step's batch is a pure function of the step, and the carry, optimizer state
and dropout RNG are checkpointed.
"""
from __future__ import annotations

import contextlib
import json
import time
from typing import Any, NamedTuple

import jax
from absl import logging
from flax import nnx

from srupp_jax import phases
from srupp_jax.errors import require
from srupp_jax.training import fine_tune, run_config, sharding
from srupp_jax.training.checkpoint import Checkpoints
from srupp_jax.training.metrics import check_record, last_metrics, train_seconds
from srupp_jax.training.optim import SCHEDULES, make_optimizer
from srupp_jax.training.report import Pace, Profile, Report
from srupp_jax.training.rng import model_rngs, prng_impl
from srupp_jax.training.steps import Window, count_params, initial_loss_scale, make_train_step
from srupp_jax.training.workdir import StopSignals, WorkdirLock, say_end


class TrainState(NamedTuple):
    """What a run carries from step to step; its fields are the trees of a checkpoint."""
    params: Any       # nnx.Param state
    rest: Any         # every other model state (dropout RNG counters, ...)
    opt_state: Any    # optax state (with the step counts of the schedule)
    carry: Any        # the task's carry (batch-first arrays) or None
    loss_scale: Any = None   # float16: the dynamic loss scale's state (steps.py), else None

    def trees(self) -> dict:
        """The fields that hold arrays, by name: what a checkpoint stores (no empty carry)."""
        return {k: v for k, v in self._asdict().items() if jax.tree.leaves(v)}

    def args(self) -> tuple:
        """The train step's leading arguments (the loss scale only where there is one)."""
        return tuple(self) if self.loss_scale is not None else tuple(self)[:4]


def validate(config) -> None:
    """The checks of the trainer's own keys (train.*), before anything is read or built."""
    t = config.train
    prng_impl(config)
    require([
        (t.steps >= 1, f"train.steps={t.steps}; expected >= 1"),
        (0 <= t.warmup_steps < t.steps, f"train.warmup_steps={t.warmup_steps}; expected 0 <= "
         f"warmup < train.steps={t.steps}: add e.g. --config.train.warmup_steps={t.steps // 10}"),
        *[(t[key] > 0, f"train.{key}={t[key]}; expected > 0") for key in ("lr", "clip_norm")],
        (t.weight_decay >= 0, f"train.weight_decay={t.weight_decay}; expected >= 0"),
        (t.grad_accum_steps >= 1, f"train.grad_accum_steps={t.grad_accum_steps}; expected >= 1"),
        *[(t[key] >= 1, f"train.{key}={t[key]}; expected >= 1")
          for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                      "max_bad_steps")],
        (t.stop_at >= 0, f"train.stop_at={t.stop_at}; expected >= 0 (0 = train.steps)"),
        (len(t.profile_steps) == 2 and 0 <= t.profile_steps[0] <= t.profile_steps[1],
         f"train.profile_steps={tuple(t.profile_steps)}; expected (first, last) with "
         "0 <= first <= last (steps first+1..last are traced; (0, 0) = off)"),
        (t.time_budget >= 0,
         f"train.time_budget={t.time_budget}; expected >= 0 seconds (0 = none)"),
        (t.schedule in SCHEDULES,
         f"train.schedule={t.schedule!r}; expected one of {', '.join(SCHEDULES)}"),
        (t.loss_scale >= 1 and t.loss_scale_period >= 1,
         f"train.loss_scale={t.loss_scale}, train.loss_scale_period={t.loss_scale_period}; "
         "expected >= 1 and >= 1"),
    ])


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
        self.budget = t.time_budget
        self.marks = sorted(t.eval_marks)
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


def train_and_evaluate(task, workdir: str, *, force: bool = False,
                       allow_config_change: bool = False, given=()) -> dict:
    """Train `task` in `workdir`, resuming from its checkpoints; returns the last metrics with
    `status` (finished, stopped, preempted or interrupted: srupp_jax.training.workdir) and `step`.
    force: take over the workdir lock of another trainer (a stale lock on another host);
    allow_config_change: go on with a config that differs from the workdir's record (the
    changes are recorded, run_config.record_changes); given: the config keys set on the
    command line (a run with train.init_from refuses to override them: fine_tune.py).
    """
    sharding.initialize_distributed()
    source = fine_tune.prepare(task, workdir, given)      # train.init_from
    mesh = sharding.from_config(task.config.mesh)
    task.validate(mesh.devices.size, jax.process_count())
    validate(task.config)
    task.load()                               # the data; task.config gets what they decide
    config, t, main = task.config, task.config.train, jax.process_index() == 0
    changes = run_config.record_changes(workdir, config, allow=allow_config_change)
    check_record(workdir)                     # metrics.jsonl, before anything is written
    with contextlib.ExitStack() as stack:
        if main:
            stack.enter_context(WorkdirLock(workdir, force=force))
        model = task.build_model(model_rngs(config), measure=True)
        logging.info("model %s: %s parameters", task.arch, f"{count_params(model):,}")
        if main:
            say_plan(task, mesh.devices.size)
        graphdef, tx, state, fresh_carry = initial_state(task, model, mesh)
        ckpt, meta, start, state, window, pending = open_checkpoints(stack, task, workdir,
                                                                     state, source, mesh)
        if start >= t.steps * t.grad_accum_steps and not pending:
            return finished_run(workdir, start)
        if main:
            run_config.save(config, workdir, changes, start)     # eval and generate read it
        timed = t.time_budget or t.eval_marks
        rule = StopRule(t, start, train_seconds(workdir, start) if timed else 0.0)
        report = stack.enter_context(Report(workdir, task, rule, mesh, start, window))
        report.setup(start, task.setup)
        signals = stack.enter_context(StopSignals())
        profile, pace = Profile(workdir, t.profile_steps, report.say), Pace(config, start, rule.total)
        train_step = make_train_step(graphdef, tx, task.loss,
                                     t.loss_scale_period if t.compute_dtype == "float16" else 0)
        evaluate = task.evaluator(model, mesh)
        ended = pending and redo_stopped_eval(workdir, start, rule.total, report, ckpt,
                                              signals, lambda: evaluate(*state[:2], "dev"))
        if ended:
            return ended
        put = lambda step: [sharding.global_batch(a, mesh) for a in task.batch(step)]
        status, done, batch = "finished", start, put(start)
        phases.enter("train.compile")          # the first step compiles
        for step in range(start, rule.total):
            if rule.out_of_time():
                status = "stopped"
                break
            tick = time.perf_counter()
            profile.before(step)
            if task.resets_carry(step):
                state = state._replace(carry=fresh_carry())
            *new_state, step_metrics = train_step(*state.args(), *batch)
            state, done = TrainState(*new_state), step + 1
            report.add(step_metrics)
            if rule.timed:
                jax.block_until_ready(step_metrics)
                rule.timed_step(step, time.perf_counter() - tick)
            if done < rule.total:
                batch = put(done)              # the next batch goes to the device meanwhile
            profile.after(done, state)
            pace.after(done, state)
            ckpt.check()             # an asynchronous save that failed stops the run here
            if done % t.log_every == 0 or done == rule.total:
                report.train(done, model)
            due = rule.eval_due(done)
            dev = signals.stoppable(evaluate, state.params, state.rest, "dev") if due else None
            stopped_eval = due and dev is None          # by a signal: the rerun does it first
            if dev is not None:
                report.record(done, "dev", dev)
            status = signals.agreed_status() or ("stopped" if rule.stopped(done) else status)
            if done % t.checkpoint_every == 0 or done == rule.total or status != "finished":
                best = None if dev is None else dev.get(task.best_metric)
                window = sharding.onto_mesh(report.window, mesh)
                ckpt.save(done, dict(state.trees(), window=window),
                          meta=dict(meta, pending_eval=True) if stopped_eval else meta,
                          metrics=None if best is None else {task.best_metric: best})
                phases.enter("checkpoint.save")
            if status != "finished":
                report.fetch(done)
                say_end(status, done, rule.out_of_time(), stopped_eval)
                break
        ckpt.wait()
        phases.enter("train.record")
        return dict(report.last, status=status, step=done)


def say_plan(task, num_devices: int) -> None:
    """Log the memory plan of the step (tasks/plan.py) in one line; a plan that cannot be
    made is a warning, never the end of the run."""
    try:
        logging.info(task.memory_plan_line(num_devices))
    except Exception as e:      # noqa: BLE001
        logging.warning("no memory plan (%s: %s)", type(e).__name__, str(e).splitlines()[0])


def initial_state(task, model, mesh):
    """(graphdef, optimizer, TrainState on the mesh, a function giving a fresh carry)."""
    phases.enter("train.start")
    t, fsdp = task.config.train, task.config.mesh.fsdp
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps, weight_decay=t.weight_decay,
                        clip_norm=t.clip_norm, grad_accum_steps=t.grad_accum_steps,
                        schedule=t.schedule)
    params = jax.device_put(params, sharding.param_shardings(mesh, params, fsdp))
    rest, opt_state = sharding.onto_mesh((rest, tx.init(params)), mesh)
    carry_shardings = sharding.batch_shardings(mesh, task.init_carry(model))
    # A fresh carry each time: on one device device_put returns its argument, and the
    # donating train step frees it, so an initial carry must never be kept for reuse.
    fresh_carry = lambda: jax.device_put(task.init_carry(model), carry_shardings)
    scale = (sharding.onto_mesh(initial_loss_scale(t.loss_scale), mesh)
             if t.compute_dtype == "float16" else None)
    return (graphdef, tx, TrainState(params, rest, opt_state, fresh_carry(), scale),
            fresh_carry)


def open_checkpoints(stack, task, workdir: str, state, source, mesh):
    """(Checkpoints, meta, step, TrainState, metric window, pending) of `workdir`: restored
    from its newest readable checkpoint (restore), else started from train.init_from's
    `source` (fine_tune.py; one that does not fit is refused before any file is written)."""
    t = task.config.train
    tuned = source is not None and not fine_tune.saved_steps(workdir)
    if tuned:
        state = fine_tune.start_from(task, source, state)
    ckpt = stack.enter_context(Checkpoints(f"{workdir}/checkpoints", keep=t.keep_checkpoints,
                                           best_metric=task.best_metric,
                                           best_mode=task.best_mode))
    meta = {"config": json.loads(task.config.model.to_json())}  # names sizes on a mismatch
    start, state, window, pending = restore(ckpt, state, meta["config"], mesh)
    if start == 0 and source is not None and not tuned:        # every checkpoint unreadable
        state = fine_tune.start_from(task, source, state)
    return ckpt, meta, start, state, window, pending


def restore(ckpt: Checkpoints, state: TrainState, config: dict, mesh):
    """(step, TrainState, metric window or None, pending) from the newest readable
    checkpoint, or (0, state, None, False) for a new run. The window (steps since the last
    logged one) makes the first row logged after a resume the same as without the restart;
    pending: the checkpoint's dev evaluation was stopped by a signal (done first)."""
    like = dict(state.trees(), window=sharding.onto_mesh(Window.empty(), mesh))
    restored = ckpt.restore(like, config=config, optional=("window",))
    if restored is None:
        return 0, state, None, False
    step, items = restored
    pending = ckpt.pending_eval(step)
    logging.info("resumed from step %d%s", step, "; its dev evaluation, which a signal "
                 "stopped, comes first" if pending else "")
    window = items.pop("window", None)
    return step, state._replace(**items), window, pending


def redo_stopped_eval(workdir: str, start: int, total: int, report, ckpt, signals, dev_eval):
    """Resuming at a checkpoint whose dev evaluation a signal stopped: that evaluation first,
    recorded and attached to the checkpoint. None to go on; the run's end when a signal stops
    it again, or when it was the last step's."""
    if not report.redo_dev(start, ckpt, signals.stoppable(dev_eval)):
        say_end(signals.status, start, stopped_eval=True)
        return dict(report.last, status=signals.status, step=start)
    return finished_run(workdir, start) if start >= total else None


def finished_run(workdir: str, step: int) -> dict:
    """The last train and dev metrics of a workdir whose training has finished."""
    logging.info("%s has finished training (step %d); its final metrics follow. Use "
                 "--mode=eval to evaluate it, or another --workdir.", workdir, step)
    return dict(last_metrics(workdir, step), status="finished", step=step)
