"""Classification speed, side by side in one run: training and prediction examples/s of the
SRU++ encoder classifier (configs/classify_default.py, bidirectional, and its unidirectional
:from_lm shape) and the Transformer encoder baseline of about the same number of parameters
(:transformer).

    python benchmarks/classification.py                         # the default task's sizes
    python benchmarks/classification.py --steps 1 --warmup 1    # seconds (tests)

Training: the step of `srupp_jax.training.steps.make_train_step` with the classification loss
and the config's optimizer, on random byte texts of `--length` positions (the default task's
mean is 44 with the end byte) in batches of `--batch_tokens` padded tokens (rows =
batch_tokens // length). Prediction: the jitted log-probabilities of `inference.classify`'s
predictor (evaluation mode) on batches of `--predict_batches` texts of the same length. Each
time is the median of --steps calls after --warmup; a table on stdout and JSON at --out
(device, versions).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from srupp_jax.models import archs  # noqa: E402
from srupp_jax.models.base import split_for_eval  # noqa: E402
from srupp_jax.tasks.classification import classification_loss  # noqa: E402
from srupp_jax.training.optim import make_optimizer  # noqa: E402
from srupp_jax.training.steps import count_params, make_train_step  # noqa: E402

MODELS = {"srupp": "", "srupp_forward": "from_lm", "transformer": "transformer"}
CLASSES = 9


def build(name: str, args):
    config = importlib.import_module("configs.classify_default").get_config(MODELS[name])
    config.model.vocab_size, config.model.num_classes = 256, CLASSES
    config.model.impl = args.impl if config.model.arch == "srupp" else config.model.impl
    return config, archs.model_config(config, "classification").build(nnx.Rngs(0))


def timed(fn, args):
    for _ in range(args.warmup):
        jax.block_until_ready(fn())
    samples = []
    for _ in range(args.steps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def texts(rows: int, args):
    rng = np.random.default_rng(0)
    tokens = rng.integers(32, 127, (rows, args.length), dtype=np.int32)
    return tokens, np.full(rows, args.length, np.int32), rng.integers(0, CLASSES, rows,
                                                                       dtype=np.int32)


def train_row(name, args):
    config, model = build(name, args)
    t = config.train
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps, weight_decay=t.weight_decay,
                        clip_norm=t.clip_norm)
    step = make_train_step(graphdef, tx, classification_loss)
    rows = max(1, args.batch_tokens // args.length)
    tokens, lengths, labels = texts(rows, args)
    weights = np.ones(rows, np.float32)
    state = [params, rest, tx.init(params), None]

    def one():
        out = step(*state, tokens, lengths, labels, weights)
        state[:] = out[:4]
        return out[4].loss

    seconds = timed(one, args)
    return dict(kind="train", model=name, params=count_params(model), batch=rows,
                length=args.length, step_ms=1e3 * seconds, examples_per_sec=rows / seconds,
                tokens_per_sec=rows * args.length / seconds)


def predict_rows(name, args):
    _, model = build(name, args)
    graphdef, params, rest = split_for_eval(model)
    log_probs = jax.jit(lambda p, r, t, n: nnx.merge(graphdef, p, r).log_probs(t, n))
    out = []
    for batch in args.predict_batches:
        tokens, lengths, _ = texts(batch, args)
        seconds = timed(lambda: log_probs(params, rest, tokens, lengths), args)
        out.append(dict(kind="predict", model=name, batch=batch, length=args.length,
                        ms=1e3 * seconds, examples_per_sec=batch / seconds))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--length", type=int, default=44)
    p.add_argument("--batch_tokens", type=int, default=2048)
    p.add_argument("--predict_batches", type=lambda s: [int(b) for b in s.split(",")],
                   default=[1, 64, 512])
    p.add_argument("--impl", default="auto", help="the SRU++ recurrence backend")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/classification.json")
    args = p.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        rows.append(train_row(name, args))
        rows.extend(predict_rows(name, args))
    print(f"{'model':14} {'params':>8} {'train examples/s':>17} {'step ms':>8}")
    for r in rows:
        if r["kind"] == "train":
            print(f"{r['model']:14} {r['params']:>8,} {r['examples_per_sec']:>17,.0f} "
                  f"{r['step_ms']:>8.1f}")
    print(f"{'model':14} {'batch':>6} {'predict examples/s':>19}")
    for r in rows:
        if r["kind"] == "predict":
            print(f"{r['model']:14} {r['batch']:>6} {r['examples_per_sec']:>19,.0f}")
    env = dict(device=jax.devices()[0].device_kind, backend=jax.default_backend(),
               jax=jax.__version__, python=platform.python_version(), cpus=os.cpu_count())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(env=env, args=vars(args), rows=rows), f, indent=1)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
