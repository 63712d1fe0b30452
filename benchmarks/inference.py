"""Inference speed (paper Table 7): evaluation tokens/s and generation latency, random weights.

    python benchmarks/inference.py                       # Wiki-103 large shape (needs a GPU)
    python benchmarks/inference.py --d 256 --d_proj 64 --vocab 5000 --cutoffs 1000,3000 \\
        --attn_len 512 --tokens 2048 --gen_tokens 64     # small, a minute on CPU

Model: the Wiki-103 large shape of the paper (d = 4096, d' = 1024, 10 layers, the released
models' adaptive input and softmax: cutoffs 19997/39997/199997 over 267,735 words, first
cluster 1024 wide, factor 4) with attention in every layer (k = 1) and its k = 5 variant
(attention in layers 5 and 10); --ks=1 --d 3072 --d_proj 768 is wiki103_base.pt's shape.

evaluation tokens/s: batch size 1, a random test stream of --tokens tokens, segments of
  --unroll tokens (default --attn_len) with --mem_len tokens of memory (default --attn_len) and
  the same-length mask, as the Wiki-103 evaluation config (eval.unroll = eval.mem_len = 2560):
  every query attends to at most attn_len + 1 keys. Per-token NLL through the adaptive
  softmax (`model.nll`), the segment step compiled once; timed after one warm-up segment.
ms/token: the compiled token-by-token decoding scan of `srupp_jax.inference.generate` alone (batch 1,
  one scan of --gen_tokens steps, each a model call on [1, 1] plus sampling from the full
  distribution, memory of --attn_len tokens already full), median of --repeats runs after a
  warm-up, divided by the steps.

Prints a table and writes JSON (device, versions, settings, results).
"""
import argparse
import functools
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from srupp_jax.inference import generate as gen  # noqa: E402
from srupp_jax.models.base import DTYPES, split_for_eval  # noqa: E402
from srupp_jax.models.srupp_lm import SRUppConfig, SRUppLM  # noqa: E402
from srupp_jax.tasks.lm_eval import make_eval_step  # noqa: E402
from report import save_json  # noqa: E402


def build(args, k):
    cutoffs = tuple(int(c) for c in args.cutoffs.split(",")) if args.cutoffs else ()
    model = SRUppLM(SRUppConfig(args.vocab, args.d, args.d_proj, args.layers, k=k,
                                cutoffs=cutoffs, adaptive_factor=4.0,
                                d_embed=args.d_embed if cutoffs else 0, impl=args.impl,
                                dtype=args.dtype), rngs=nnx.Rngs(0))
    model.eval()
    return model


def eval_tokens_per_sec(model, args):
    unroll = args.unroll or args.attn_len
    mem_len = args.attn_len if args.mem_len < 0 else args.mem_len
    n = (args.tokens // unroll) * unroll
    if n < 2 * unroll:
        raise ValueError(f"--tokens={args.tokens}: need at least 2 segments of {unroll}")
    stream = jax.random.randint(jax.random.PRNGKey(1), (1, n + 1), 0, args.vocab, jnp.int32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    step = make_eval_step(graphdef, same_length=True)
    carry = model.init_state(1, mem_len)
    weights = jnp.ones((1, unroll), jnp.float32)
    segment = lambda s: (stream[:, s:s + unroll], stream[:, s + 1:s + 1 + unroll], weights)
    total, carry = step(params, rest, carry, *segment(0))  # compile + warm-up
    jax.block_until_ready(total)
    start = time.perf_counter()
    for s in range(unroll, n, unroll):
        total, carry = step(params, rest, carry, *segment(s))
    jax.block_until_ready((total, carry))
    return (n - unroll) / (time.perf_counter() - start)


def ms_per_token(model, args):
    """The decoding scan of srupp_jax.inference.generate alone, from a full memory of attn_len tokens."""
    prompt = jax.random.randint(jax.random.PRNGKey(2), (1, args.attn_len), 0, args.vocab,
                                jnp.int32)
    graphdef, params, rest = split_for_eval(model)
    state = model.init_state(1, args.attn_len)
    state = gen._prefill(graphdef, params, rest, state, prompt)
    decode = functools.partial(gen._decode, graphdef, steps=args.gen_tokens, temperature=1.0,
                               top_k=0, top_p=1.0)
    last, key = prompt[:, -1], jax.random.PRNGKey(0)
    jax.block_until_ready(decode(params, rest, state, last, jnp.int32(0), key))  # compile
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(decode(params, rest, state, last, jnp.int32(0), key))
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / args.gen_tokens


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--d_proj", type=int, default=1024)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--vocab", type=int, default=267_735)
    p.add_argument("--cutoffs", default="19997,39997,199997", help="'' = full softmax")
    p.add_argument("--d_embed", type=int, default=1024, help="first adaptive cluster width")
    p.add_argument("--ks", default="1,5", help="attention every k layers, one row each")
    p.add_argument("--attn_len", type=int, default=2560)
    p.add_argument("--unroll", type=int, default=0, help="0 = attn_len")
    p.add_argument("--mem_len", type=int, default=-1, help="-1 = attn_len")
    p.add_argument("--tokens", type=int, default=2560 * 8, help="evaluation stream length")
    p.add_argument("--gen_tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--impl", default="auto")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results", "inference.json"))
    args = p.parse_args(argv)

    rows = []
    for k in [int(k) for k in args.ks.split(",")]:
        model = build(args, k)
        n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
        tps = eval_tokens_per_sec(model, args)
        ms = ms_per_token(model, args)
        rows.append(dict(variant=f"k={k}", k=k, params=int(n_params),
                         attention_layers=int(sum(model.rnn.has_attention)),
                         eval_tokens_per_sec=tps, gen_ms_per_token=ms))
        del model

    dev = jax.devices()[0]
    print(f"device {dev.device_kind} ({jax.default_backend()}), d={args.d} d'={args.d_proj} "
          f"layers={args.layers} vocab={args.vocab} cutoffs={args.cutoffs or '-'} "
          f"attn_len={args.attn_len} dtype={args.dtype}")
    print("| variant | params | attention layers | eval tokens/s (B=1) | generation ms/token |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['variant']} | {r['params'] / 1e6:.1f}M | {r['attention_layers']} | "
              f"{r['eval_tokens_per_sec']:,.0f} | {r['gen_ms_per_token']:.2f} |")
    save_json(args.out, settings={**vars(args), "out": os.path.basename(args.out)},
              results=rows,
              device=dict(kind=dev.device_kind, platform=dev.platform, count=jax.device_count()),
              versions=dict(jax=jax.__version__, flax=flax.__version__,
                            python=platform.python_version()),
              host=dict(machine=platform.machine(), cpus=os.cpu_count()))
    return rows


if __name__ == "__main__":
    main()
