"""Training and evaluation of SRU++ language models (paper section 4, appendix B).

`train_and_evaluate(config, workdir)` trains on B contiguous streams, M tokens a step, carrying
the recurrent state and attention memory across steps; evaluates on the dev split; keeps the
last N checkpoints and the best by dev loss; resumes exactly where it stopped (data are a pure
function of the step, and the carried state and dropout RNG are checkpointed).
`evaluate_checkpoint(config, workdir)` restores the best (or latest) checkpoint and reports
dev and test BPC (characters) or perplexity (words) over whole splits;
`restore_for_inference(config, workdir)` is its restore step (model, params, rest, step).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from srupp_jax import sharding
from srupp_jax.data.streams import Streams
from srupp_jax.models import SRUppConfig, SRUppLM, compute_dtype, split_for_eval
from srupp_jax.optim import lr_schedule, make_optimizer
from srupp_jax.recurrence import Backend, describe_backend, fastest_backend
from srupp_jax.rng import model_rngs, prng_impl



# ----------------------------------------------------------------------------------------------
# Config checks and model construction.
# ----------------------------------------------------------------------------------------------

def validate_config(config, num_devices: int, num_processes: int = 1) -> None:
    """Raise ValueError naming the bad value before anything is built or compiled."""
    m, t, e = config.model, config.train, config.eval
    _validate_arch(m)
    prng_impl(config)                        # train.prng_impl
    if m.get("arch", "srupp") == "srupp":
        SRUppConfig.from_config(config)      # the model's own checks, one place
    else:
        compute_dtype(t.compute_dtype)       # the one key of SRUppConfig's the baselines use
    checks = [
        (t.batch_size >= 1, f"train.batch_size={t.batch_size}; expected >= 1"),
        (t.batch_size % num_devices == 0,
         f"train.batch_size={t.batch_size} is not divisible by the {num_devices} devices"),
        (t.batch_size % num_processes == 0,
         f"train.batch_size={t.batch_size} is not divisible by the {num_processes} processes"),
        (t.unroll >= 1, f"train.unroll={t.unroll}; expected >= 1"),
        (t.steps >= 1, f"train.steps={t.steps}; expected >= 1"),
        (0 <= t.warmup_steps < t.steps,
         f"train.warmup_steps={t.warmup_steps}; expected 0 <= warmup < train.steps={t.steps}"),
        (t.grad_accum_steps >= 1, f"train.grad_accum_steps={t.grad_accum_steps}; expected >= 1"),
        *[(t[key] >= 1, f"train.{key}={t[key]}; expected >= 1")
          for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                      "max_bad_steps")],
        (t.stop_at >= 0, f"train.stop_at={t.stop_at}; expected >= 0 (0 = train.steps)"),
        (len(t.profile_steps) == 2 and 0 <= t.profile_steps[0] <= t.profile_steps[1],
         f"train.profile_steps={tuple(t.profile_steps)}; expected (first, last) with "
         "0 <= first <= last (steps first+1..last are traced; (0, 0) = off)"),
        (e.batch_size >= 1 and e.unroll >= 1 and e.mem_len >= 0,
         f"eval.batch_size={e.batch_size}, eval.unroll={e.unroll}, eval.mem_len={e.mem_len}; "
         "expected >= 1, >= 1, >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    _validate_data(config)


def _validate_data(config) -> None:
    """The checks of the dataset keys."""
    from srupp_jax.data.datasets import NAMES, TEXT
    m, d = config.model, config.data
    checks = [
        (d.name in NAMES + (TEXT,),
         f"data.name={d.name!r}; expected one of {', '.join(NAMES + (TEXT,))}"),
        (d.max_bytes == 0 or d.name == "default",
         f"data.max_bytes={d.max_bytes} applies to data.name='default' only; drop it (or set "
         f"--config.data.max_bytes=0) for data.name={d.name!r}"),
        (d.name != "text" or d.path,
         "data.name='text' needs a file: set --config.data.path=FILE_OR_FOLDER_OF_TXT"),
        (m.vocab_size >= 0, f"model.vocab_size={m.vocab_size}; expected >= 0 (0 = the data's)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def resolve_config(config):
    """(config with the keys the data decide filled in, LMData): see srupp_jax.run_config."""
    from srupp_jax import run_config
    data = load_data(config)
    return run_config.resolve(config, data), data


ARCHS = ("srupp", "transformer_xl", "sha_rnn")


def _validate_arch(m) -> None:
    """The baselines' own keys (configs/txl_*.py, configs/sharnn_*.py)."""
    arch = m.get("arch", "srupp")
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r}; expected one of {ARCHS}")
    if arch == "srupp":
        return
    if m.get("d_inner", 0) < 1:
        raise ValueError(f"model.d_inner={m.get('d_inner')}; expected >= 1 for {arch}")
    if arch == "transformer_xl" and not m.get("d_head", 0) and m.d % m.num_heads:
        raise ValueError(f"model.d={m.d} is not divisible by model.num_heads={m.num_heads} "
                         "(or set model.d_head)")
    if arch == "sha_rnn":
        layers = tuple(m.get("attention_layers", ()))
        if any(not 1 <= i <= m.num_layers for i in layers):
            raise ValueError(f"model.attention_layers={layers}; expected layer numbers in "
                             f"1..{m.num_layers}")


def load_data(config):
    """The token arrays and vocabulary `config.data` names (see srupp_jax.data.datasets)."""
    from srupp_jax.data.datasets import load_tokens
    d = config.data
    text = (dict(path=d.path, valid_path=d.valid_path, test_path=d.test_path, unit=d.unit)
            if d.name == "text" else None)
    return load_tokens(d.name, data_dir=d.data_dir or None, cache_dir=d.cache_dir or None,
                       max_bytes=d.max_bytes or None, text_source=text)


def build_model(config, rngs: nnx.Rngs, *, impl: str | None = None):
    """The language model that `config.model` describes: `model.arch` "srupp" (the default
    when the key is absent), "transformer_xl" or "sha_rnn" (the paper's baselines). impl:
    the SRU++ recurrence backend instead of model.impl (`measured_impl`)."""
    m = config.model
    if m.vocab_size < 1:
        raise ValueError(f"model.vocab_size={m.vocab_size}: resolve the config against its data "
                         "first (train.resolve_config)")
    arch = m.get("arch", "srupp")
    dtype = compute_dtype(config.train.compute_dtype)
    if arch == "transformer_xl":
        from srupp_jax.transformer_xl import TransformerXLLM
        return TransformerXLLM(m.vocab_size, m.d, m.num_layers, m.num_heads, m.d_inner,
                               d_head=m.get("d_head", 0) or None, dropout=m.dropout,
                               attn_dropout=m.attn_dropout,
                               cutoffs=list(m.cutoffs) if m.cutoffs else None,
                               adaptive_factor=m.adaptive_factor, dtype=dtype, rngs=rngs)
    if arch == "sha_rnn":
        from srupp_jax.sha_rnn import SHARNNLM
        return SHARNNLM(m.vocab_size, m.d, m.num_layers, m.d_inner,
                        attention_layers=tuple(m.attention_layers), dropout=m.dropout,
                        attn_dropout=m.attn_dropout, dtype=dtype, rngs=rngs)
    model_config = SRUppConfig.from_config(config)
    if impl is not None:
        model_config = dataclasses.replace(model_config, impl=impl)
    model = SRUppLM(model_config, rngs=rngs)
    logging.warning("recurrence: %s", describe_backend(model.backend))
    return model


def measured_impl(config) -> str | None:
    """What `train_and_evaluate` builds an SRU++ model with when model.impl is "auto" on a
    GPU: the backend `fastest_backend` measures fastest at the per-device training shape
    (process 0's choice on every process, so that all compile the same program). None
    otherwise, and build_model resolves "auto" without timing (eval, generate, the study's
    size count)."""
    m, t = config.model, config.train
    if m.get("arch", "srupp") != "srupp" or m.impl != "auto" or jax.default_backend() != "gpu":
        return None
    shape = (max(1, t.batch_size // jax.device_count()), t.unroll, m.d, m.k)
    backend, times = fastest_backend(*shape, dtype=t.compute_dtype,
                                     kernel=SRUppConfig.from_config(config).kernel)
    if jax.process_count() > 1:
        backend = list(Backend)[int(multihost_utils.broadcast_one_to_all(
            np.int32(list(Backend).index(backend))))]
    measured = ", ".join(f"{name} {ms:.2f} ms" for name, ms in times.items())
    logging.warning("recurrence timed at %s %s: %s", "x".join(map(str, shape)),
                    t.compute_dtype, measured)
    return backend.value


def count_params(model) -> int:
    """Number of parameters (tied matrices once)."""
    return int(sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


# ----------------------------------------------------------------------------------------------
# Compiled steps.
# ----------------------------------------------------------------------------------------------

class StepMetrics(NamedTuple):
    loss: jax.Array        # mean nll (nats) of the batch
    grad_norm: jax.Array   # global norm before clipping
    applied: jax.Array     # False when the loss or gradient was not finite (update skipped)


class Window(NamedTuple):
    """Training metrics accumulated on the device between two fetches by the host, so that the
    loop never waits for a step to finish (scalars; float32 sums, int32 counts)."""
    loss_sum: jax.Array    # sum of the losses of applied steps
    applied: jax.Array     # steps whose update was applied
    skipped: jax.Array     # steps with a non-finite loss or gradient (update skipped)
    bad_run: jax.Array     # consecutive skipped steps up to the last one (carried over)
    worst_run: jax.Array   # longest run of consecutive skipped steps in the window
    grad_norm: jax.Array   # of the last applied step

    @staticmethod
    def empty(bad_run: int = 0) -> "Window":
        i = lambda v=0: jnp.asarray(v, jnp.int32)
        return Window(jnp.float32(0), i(), i(), i(bad_run), i(bad_run), jnp.float32(jnp.nan))


@jax.jit
def accumulate(window: Window, sm: StepMetrics) -> Window:
    ok = sm.applied
    run = jnp.where(ok, 0, window.bad_run + 1)
    return Window(window.loss_sum + jnp.where(ok, sm.loss, 0.0), window.applied + ok,
                  window.skipped + ~ok, run, jnp.maximum(window.worst_run, run),
                  jnp.where(ok, sm.grad_norm, window.grad_norm))


def make_train_step(graphdef, tx):
    """jit-compiled (params, rest, opt_state, carry, inputs, targets) -> updated + StepMetrics.

    A non-finite loss or gradient leaves parameters, optimizer state and carried state as they
    were (the caller counts such steps and stops after several in a row).
    """
    def step(params, rest, opt_state, carry, inputs, targets):
        model = nnx.merge(graphdef, params, rest)

        def loss_fn(model):
            nll, new_carry = model.nll(inputs, targets, carry)
            return nll.mean(), new_carry

        (loss, new_carry), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        grad_norm = optax.tree.norm(grads)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        return (keep(new_params, params), new_rest, keep(new_opt, opt_state),
                keep(new_carry, carry), StepMetrics(loss, grad_norm, ok))

    return jax.jit(step, donate_argnums=(0, 2, 3))


def make_eval_step(graphdef, same_length: bool):
    """jit-compiled (params, rest, carry, inputs, targets, weights) -> (sum of weights * nll,
    new carry)."""
    def step(params, rest, carry, inputs, targets, weights):
        model = nnx.merge(graphdef, params, rest)
        nll, carry = model.nll(inputs, targets, carry, same_length=same_length)
        return jnp.sum(nll * weights), carry

    return jax.jit(step)


# ----------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------

def split_metrics(mean_nll: float, unit: str, prefix: str) -> dict[str, float]:
    """loss in nats plus BPC (bytes/characters) or perplexity (words)."""
    out = {f"{prefix}_loss": mean_nll}
    if unit == "word":
        out[f"{prefix}_ppl"] = math.exp(min(mean_nll, 700.0))
    else:
        out[f"{prefix}_bpc"] = mean_nll / math.log(2)
    return out


def make_evaluator(model: SRUppLM, config, mesh):
    """A function (params, rest, tokens, max_tokens=0) -> mean nll (nats) over `tokens` (or
    its first `max_tokens`), every target predicted once; the step compiles once per segment
    shape (full, the last partial one, the tail).

    B_e contiguous streams, segments of eval.unroll tokens, eval.mem_len tokens of attention
    memory carried across segments, the same-length mask when eval.same_length; the fewer
    than B_e tokens after the last stream are predicted last, continuing it (Streams).
    """
    e = config.eval
    # Streams over devices (and hosts, each reading its own) when the batch divides the mesh;
    # otherwise (e.g. batch 1 on 8 devices) every process evaluates all streams replicated.
    shard = e.batch_size % mesh.devices.size == 0
    procs, index = (jax.process_count(), jax.process_index()) if shard else (1, 0)
    graphdef, _, _ = split_for_eval(model)
    step = make_eval_step(graphdef, e.same_length)

    def evaluate(params, rest, tokens: np.ndarray, max_tokens: int = 0,
                 desc: str = "") -> float:
        """desc: a tqdm bar of that name over the segments (on stderr); "" shows none."""
        from tqdm import tqdm
        if max_tokens:
            tokens = tokens[:max_tokens + 1]
        streams = Streams(tokens, e.batch_size // procs, e.unroll, num_processes=procs,
                          process_index=index)
        carry = model.init_state(e.batch_size, e.mem_len)
        if shard:
            carry = jax.device_put(carry, sharding.carry_shardings(mesh, carry))
        total = 0.0
        segments = -(-streams.stream_length // e.unroll) + bool(streams.dropped_tokens)
        for batch in tqdm(streams.eval_batches(), desc=desc, total=segments, unit="segment",
                          disable=not desc or jax.process_index() != 0):
            if shard:
                batch = [sharding.global_batch(a, mesh) for a in batch]
            s, carry = step(params, rest, carry, *batch)
            total += float(s)
        return total / (len(tokens) - 1)     # every target once (Streams.eval_batches)

    return evaluate


# ----------------------------------------------------------------------------------------------
# The training loop.
# ----------------------------------------------------------------------------------------------

def smoke(config) -> float:
    """One forward and backward pass of `config`'s model on random tokens (main.py
    --mode=smoke); prints the sizes and returns the mean loss in nats."""
    validate_config(config, 1)
    if config.model.vocab_size == 0:   # the vocabulary's size: needs the prepared data
        config, _ = resolve_config(config)
    model = build_model(config, model_rngs(config))
    graphdef, variables = nnx.split(model)
    B, M, V = config.train.batch_size, config.train.unroll, config.model.vocab_size
    tokens = jax.random.randint(jax.random.PRNGKey(config.seed), (B, M + 1), 0, V)
    state = model.init_state(B, M)

    @jax.jit
    def loss_and_grad(variables, state):
        m = nnx.merge(graphdef, variables)
        loss_fn = lambda m: m.nll(tokens[:, :-1], tokens[:, 1:], state)[0].mean()
        return nnx.value_and_grad(loss_fn)(m)

    start = time.time()
    loss, grads = loss_and_grad(variables, state)
    m = config.model
    print(f"{m.get('arch', 'srupp')} LM: {count_params(model):,} parameters, {m.num_layers} "
          f"layers, d={m.d}, d'={m.d_proj}, k={m.k}, backend {jax.default_backend()}")
    print(f"random tokens B={B} M={M}: loss {float(loss):.4f} nats (ln V = {math.log(V):.4f}), "
          f"grad norm {float(optax.tree.norm(grads)):.4f}, {time.time() - start:.1f}s incl. "
          "compile")
    return float(loss)


def _format(metrics: dict) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in metrics.items())


def _model_meta(config) -> dict:
    """What a checkpoint records of its run: the model config, to name sizes on a mismatch."""
    return json.loads(config.model.to_json())


def train_and_evaluate(config, workdir: str, *, force: bool = False) -> dict:
    """Train `config` in `workdir`, resuming from its checkpoints; returns the last metrics
    with `status` (finished, stopped, preempted or interrupted: srupp_jax.workdir) and `step`.

    force: take over the workdir lock of another trainer (a stale lock on another host).
    """
    from srupp_jax import run_config
    from srupp_jax.checkpoint import Checkpoints
    from srupp_jax.flops import flops_per_token, mfu, peak_flops_per_device
    from srupp_jax.metrics import MetricWriter, read_metrics
    from srupp_jax.progress import Progress
    from srupp_jax.workdir import StopSignals, WorkdirLock

    sharding.initialize_distributed()
    mesh = sharding.make_mesh(config.mesh.num_devices or None)
    validate_config(config, mesh.devices.size, jax.process_count())
    config, data = resolve_config(config)       # vocab_size (and cutoffs) from the data
    t, m = config.train, config.model
    marks = _data_marks(data)
    lock = WorkdirLock(workdir, force=force) if jax.process_index() == 0 else None
    if jax.process_index() == 0:
        run_config.save(config, workdir)         # eval and generate read it back
    ckpt = None
    try:
        model = build_model(config, model_rngs(config), impl=measured_impl(config))
        logging.warning("model %s: %s parameters", m.get("arch", "srupp"),
                        f"{count_params(model):,}")
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        total_steps = t.steps * t.grad_accum_steps  # micro-steps; the optimizer updates every k
        tx = make_optimizer(t.lr, t.warmup_steps, t.steps, weight_decay=t.weight_decay,
                            clip_norm=t.clip_norm, grad_accum_steps=t.grad_accum_steps)
        schedule = lr_schedule(t.lr, t.warmup_steps, t.steps)
        params = jax.device_put(params, sharding.param_shardings(mesh, params, config.mesh.fsdp))
        rest, opt_state = sharding.onto_mesh((rest, tx.init(params)), mesh)
        carry_sh = sharding.carry_shardings(mesh, model.init_state(t.batch_size, t.unroll))
        # A fresh carry each time: on one device device_put returns its argument, and the
        # donating train step frees it, so an initial state must never be kept for reuse.
        fresh_carry = lambda: jax.device_put(model.init_state(t.batch_size, t.unroll), carry_sh)
        carry = fresh_carry()

        ckpt = Checkpoints(f"{workdir}/checkpoints", keep=t.keep_checkpoints)
        meta = {"config": _model_meta(config)}
        start = 0
        restored = ckpt.restore({"params": params, "rest": rest, "opt_state": opt_state,
                                 "carry": carry}, config=meta["config"])
        if restored is not None:
            start, items = restored
            params, rest = items["params"], items["rest"]
            opt_state, carry = items["opt_state"], items["carry"]
            logging.warning("resumed from step %d", start)
        if start >= total_steps:
            return _finished_run(workdir, start, read_metrics)

        streams = Streams(data.train, t.batch_size // jax.process_count(), t.unroll,
                          num_processes=jax.process_count(), process_index=jax.process_index())
        train_step = make_train_step(graphdef, tx)
        evaluate = make_evaluator(model, config, mesh)
        flops = flops_per_token(model, config)
        peak = peak_flops_per_device()
        writer = (MetricWriter(workdir, resume_step=start) if jax.process_index() == 0
                  else None)
        progress = Progress(total_steps, initial=start, tokens_per_step=t.batch_size * t.unroll,
                            disable=None if jax.process_index() == 0 else True)
        say = progress.write if jax.process_index() == 0 else (lambda _: None)
        signals = StopSignals()
        last, status, done = {}, "finished", start
        window = Window.empty()
        put = lambda step: [sharding.global_batch(a, mesh) for a in streams.batch(step)]
        first_profiled, last_profiled = t.profile_steps
        # Time budget (srupp_jax.study): train.time_budget seconds of training steps (not
        # evaluation or saving, nor the first step of each start, which compiles), dev
        # evaluations once the training seconds reach each of train.eval_marks. Timing waits
        # for every step, so only timed runs do; each process times itself (single process).
        budget, eval_marks = t.get("time_budget", 0.0), sorted(t.get("eval_marks", ()))
        timed = bool(budget or eval_marks)
        seconds = _train_seconds(workdir, start) if timed else 0.0

        def fetch(done):
            """Bring the window's metrics to the host (the loop's only wait for the device)."""
            nonlocal window
            w = jax.device_get(window)
            window = Window.empty(int(w.bad_run))
            if w.skipped:
                logging.warning("%d step(s) up to step %d had a non-finite loss or gradient; "
                                "their updates were skipped", w.skipped, done)
            if w.worst_run >= t.max_bad_steps:
                raise FloatingPointError(
                    f"{int(w.worst_run)} consecutive steps with a non-finite loss or gradient "
                    f"(by step {done}); stopping. Lower train.lr or check the data.")
            mean = float(w.loss_sum / w.applied) if w.applied else None
            progress.update(done, mean)
            return mean, float(w.grad_norm)

        try:
            batch = put(start)
            for step in range(start, total_steps):
                if budget and seconds >= budget:
                    status = "stopped"
                    break
                tick = time.perf_counter()
                if step == first_profiled and last_profiled > first_profiled:
                    jax.profiler.start_trace(os.path.join(workdir, "profile"))
                if step % streams.steps_per_epoch == 0 and step > 0:  # streams wrap
                    carry = fresh_carry()
                params, rest, opt_state, carry, sm = train_step(params, rest, opt_state, carry,
                                                                *batch)
                window = accumulate(window, sm)
                done = step + 1
                if timed:
                    jax.block_until_ready(sm)
                    seconds += (time.perf_counter() - tick) * (step > start)
                if done < total_steps:
                    batch = put(done)      # the next batch goes to the device meanwhile
                if done == last_profiled and last_profiled > first_profiled:
                    jax.block_until_ready(params)
                    jax.profiler.stop_trace()
                    say(f"profile of steps {first_profiled + 1}..{done} in {workdir}/profile")
                ckpt.check()   # an asynchronous save that failed stops the run here
                final = done == total_steps
                if done % t.log_every == 0 or final:
                    mean, grad_norm = fetch(done)
                    if mean is not None:
                        last = dict(split_metrics(mean, data.unit, "train"),
                                    lr=float(schedule(done // t.grad_accum_steps)),
                                    grad_norm=grad_norm, tokens_per_sec=progress.tokens_per_sec,
                                    devices=mesh.devices.size, **marks)
                        if timed:
                            last["train_seconds"] = seconds
                        util = mfu(progress.tokens_per_sec, flops, peak,
                                   num_devices=mesh.devices.size)
                        if util is not None:
                            last["mfu"] = util
                        if writer:
                            writer.write(done, last, split="train")
                        say(f"step {done}: " + _format(last))
                over_budget = bool(budget) and seconds >= budget
                at_mark = bool(eval_marks) and seconds >= eval_marks[0]
                while eval_marks and seconds >= eval_marks[0]:
                    eval_marks.pop(0)
                dev = None
                if done % t.eval_every == 0 or final or at_mark or over_budget:
                    dev = dict(split_metrics(evaluate(params, rest, data.valid,
                                                      config.eval.max_tokens), data.unit, "dev"),
                               **marks)
                    if timed:
                        dev["train_seconds"] = seconds
                    last.update(dev)
                    if writer:
                        writer.write(done, dev, split="dev")
                    say(f"step {done}: " + _format(dev))
                signalled = signals.agreed_status()
                if signalled:
                    status = signalled
                elif (done == t.stop_at or over_budget) and not final:
                    status = "stopped"
                if done % t.checkpoint_every == 0 or final or status != "finished":
                    ckpt.save(done, {"params": params, "rest": rest, "opt_state": opt_state,
                                     "carry": carry},
                              metrics={"dev_loss": dev["dev_loss"]} if dev else None, meta=meta)
                if status != "finished":
                    fetch(done)
                    logging.warning("%s at step %d: checkpoint saved; rerun the same command "
                                    "to resume", status, done)
                    break
            ckpt.wait()
        finally:
            progress.close()
            signals.uninstall()
            if writer:
                writer.close()
        return dict(last, status=status, step=done)
    finally:
        if ckpt is not None:
            ckpt.close()
        if lock is not None:
            lock.release()


def _data_marks(data) -> dict:
    """{"standard_data": 0} for data prepared from modified source files (added to every
    metric a run reports), else {}."""
    if data.info.get("standard_source", True):
        return {}
    logging.warning("the %s data were prepared from modified source files (%s): metrics are "
                    "marked standard_data=0", data.name, data.info["source"]["note"])
    return {"standard_data": 0}


def _finished_run(workdir: str, step: int, read_metrics) -> dict:
    """The last train and dev metrics of a workdir whose training has finished."""
    logging.warning("%s has finished training (step %d); its final metrics follow. Use "
                    "--mode=eval to evaluate it, or another --workdir to train again.",
                    workdir, step)
    last = {}
    try:
        for row in read_metrics(workdir):
            if row["step"] <= step:
                last.update({k: v for k, v in row.items()
                             if k not in ("split", "time", "hours", "step")})
    except FileNotFoundError:
        pass
    return dict(last, status="finished", step=step)


def _train_seconds(workdir: str, step: int) -> float:
    """Training seconds recorded in `workdir`'s metrics up to `step` (0 for a fresh run)."""
    from srupp_jax.metrics import read_metrics
    try:
        records = read_metrics(workdir)
    except FileNotFoundError:
        return 0.0
    return max([r["train_seconds"] for r in records
                if r["step"] <= step and "train_seconds" in r] or [0.0])


def restore_for_inference(config, workdir: str, which: str = "best"):
    """Build `config`'s model and restore the best (falling back to the latest, then older)
    readable checkpoint of `workdir`: returns (model, params, rest, step).
    FileNotFoundError if there is none; nothing is created in the workdir."""
    from srupp_jax.checkpoint import Checkpoints

    if config.model.vocab_size == 0:
        config, _ = resolve_config(config)
    model = build_model(config, model_rngs(config))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    hint = f"; train first with --mode=train --workdir={workdir}"
    try:
        ckpt = Checkpoints(f"{workdir}/checkpoints", read_only=True)
    except FileNotFoundError as e:
        raise FileNotFoundError(str(e) + hint) from None
    try:    # not the optimizer or the training carry
        restored = ckpt.restore({"params": params, "rest": rest}, which=which,
                                config=_model_meta(config))
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints" + hint)
    step, items = restored
    return model, items["params"], items["rest"], step


def evaluate_checkpoint(config, workdir: str, which: str = "best") -> dict[str, float]:
    """Restore the best (falling back to the latest) checkpoint; dev and test metrics over
    the whole splits (eval.max_tokens limits only the dev evaluations during training)."""
    sharding.initialize_distributed()
    mesh = sharding.make_mesh(config.mesh.num_devices or None)
    validate_config(config, mesh.devices.size, jax.process_count())
    config, data = resolve_config(config)
    model, params, rest, step = restore_for_inference(config, workdir, which)
    params, rest = sharding.onto_mesh((params, rest), mesh)
    out = {"step": step, **_data_marks(data)}
    evaluate = make_evaluator(model, config, mesh)
    for name, tokens in (("dev", data.valid), ("test", data.test)):
        out.update(split_metrics(evaluate(params, rest, tokens, desc=f"eval {name}"),
                                 data.unit, name))
    return out
