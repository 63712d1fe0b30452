"""Translation speed, side by side in one run: training tokens/s of the SRU++ encoder-decoder
(k = 1 and k = 2) and the Transformer of Table 8, and decoding sentences/s (greedy and beam 5,
batch 1 and 64).

    python benchmarks/translation.py                       # Table 8 sizes, CPU or GPU
    python benchmarks/translation.py --sizes toy --steps 2 # seconds (tests)

Training: the step of `srupp_jax.training.steps.make_train_step` with the translation loss, RAdam and
clipping as configs/iwslt14.py, on random pairs of `--length` subwords a side in batches of
`--batch_tokens` padded tokens (rows = batch_tokens // length), vocabulary `--vocab`; tokens/s
counts target tokens. Decoding: `srupp_jax.inference.decode` on random sources of `--length` subwords,
the model's EOS made impossible so that every sentence runs to the length limit
(1.2 * length + 10): a fixed amount of work per sentence. Each time is the median of --steps
calls after --warmup; a table on stdout and JSON at --out (device, versions).
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

from srupp_jax.inference import decode  # noqa: E402
from srupp_jax.models.archs import config_class  # noqa: E402
from srupp_jax.data.subwords import BOS_ID, EOS_ID, PAD_ID  # noqa: E402
from srupp_jax.training.optim import make_optimizer  # noqa: E402
from srupp_jax.training.steps import count_params, make_train_step  # noqa: E402
from srupp_jax.tasks.translation import translation_loss  # noqa: E402

MODELS = {"srupp": ("iwslt14", ""), "srupp_k2": ("iwslt14", "k2"),
          "transformer": ("iwslt14_transformer", None)}
TOY = dict(srupp=dict(d=64, d_proj=16, d_embed=32, encoder_layers=2, decoder_layers=2),
           transformer=dict(d=32, num_heads=2, d_inner=64, encoder_layers=2, decoder_layers=2))


def model_config(name: str, args):
    module, variant = MODELS[name]
    get = importlib.import_module(f"configs.{module}").get_config
    config = get(variant) if variant is not None else get()
    config.model.vocab_size = args.vocab
    if args.sizes == "toy":
        config.model.update(TOY["transformer" if name == "transformer" else "srupp"])
    if args.dtype:
        config.train.compute_dtype = args.dtype
    cls = config_class("translation", config.model.arch)
    return config, cls.from_config(config, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)


def timed(fn, args):
    for _ in range(args.warmup):
        jax.block_until_ready(fn())
    samples = []
    for _ in range(args.steps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def train_row(name, args):
    config, cfg = model_config(name, args)
    t = config.train
    model = cfg.build(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps, weight_decay=t.weight_decay,
                        clip_norm=t.clip_norm, schedule=t.schedule)
    opt_state = tx.init(params)
    step = make_train_step(graphdef, tx, translation_loss)
    rows = max(1, args.batch_tokens // args.length)
    rng = np.random.default_rng(0)
    src, tgt = (rng.integers(4, args.vocab, (rows, args.length), dtype=np.int32)
                for _ in range(2))
    tgt_in = np.concatenate([np.full((rows, 1), BOS_ID, np.int32), tgt[:, :-1]], axis=1)
    state = [params, rest, opt_state, None]

    def one():
        out = step(*state, src, tgt_in, tgt)
        state[:] = out[:4]
        return out[4].loss

    seconds = timed(one, args)
    return dict(kind="train", model=name, params=count_params(model), batch=rows,
                length=args.length, step_ms=1e3 * seconds,
                tokens_per_sec=rows * args.length / seconds)


def decode_rows(name, args):
    _, cfg = model_config(name, args)
    model = cfg.build(nnx.Rngs(0))
    model.out_bias[...] = model.out_bias[...].at[EOS_ID].set(-1e9)   # run to the limit
    out = []
    for batch in args.decode_batches:
        src = np.random.default_rng(1).integers(4, args.vocab, (batch, args.length),
                                                dtype=np.int32)
        for beam in (1, 5):
            search = (lambda: decode.greedy(model, src)[0]) if beam == 1 else (
                lambda: decode.beam_search(model, src, beam_size=beam)[0])
            seconds = timed(search, args)
            out.append(dict(kind="decode", model=name, beam=beam, batch=batch,
                            length=args.length, ms=1e3 * seconds,
                            sentences_per_sec=batch / seconds))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--sizes", choices=("table8", "toy"), default="table8")
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--batch_tokens", type=int, default=4096)
    p.add_argument("--decode_batches", type=lambda s: [int(b) for b in s.split(",")],
                   default=[1, 64])
    p.add_argument("--dtype", default="", help="'' = the config's train.compute_dtype")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/translation.json")
    args = p.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        rows.append(train_row(name, args))
        rows.extend(decode_rows(name, args))
    print(f"{'model':12} {'params':>10} {'train tokens/s':>15} {'step ms':>9}")
    for r in rows:
        if r["kind"] == "train":
            print(f"{r['model']:12} {r['params']:>10,} {r['tokens_per_sec']:>15,.0f} "
                  f"{r['step_ms']:>9.1f}")
    print(f"{'model':12} {'search':>8} {'batch':>6} {'sentences/s':>12}")
    for r in rows:
        if r["kind"] == "decode":
            search = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
            print(f"{r['model']:12} {search:>8} {r['batch']:>6} {r['sentences_per_sec']:>12,.1f}")
    env = dict(device=jax.devices()[0].device_kind, backend=jax.default_backend(),
               jax=jax.__version__, python=platform.python_version(), cpus=os.cpu_count())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(env=env, args=vars(args), rows=rows), f, indent=1)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
