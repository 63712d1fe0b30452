"""Training-step speed of a paper config against the official PyTorch SRU++, in one run.

    python benchmarks/training.py                          # enwik8 base, k=1 and k=5, B=8 and 32
    python benchmarks/training.py --d 64 --d_proj 16 --layers 2 --unroll 32 --batches 2 \\
        --impls scan --steps 3                              # toy, seconds on CPU

Ours: `configs/enwik8.py` (and its `:k5` variant) with only the sizes given here overridden,
the model's keys of `train.prng_impl` (or of each --prng_impls value, a row each), the train
step of `srupp_jax.training.steps.make_train_step` (RAdam chain, clipping, weight decay,
`train.compute_dtype`, a carried memory of M tokens) on random bytes, for each --impls
backend. Official: `sru.SRUpp` (3.0.0.dev6) in the recipe of its enwik8 script at the same
shape: embedding, SRU++ stack with memory from the previous step and a causal mask, output
layer, torch.optim.RAdam, gradient clipping 1.0, fp16 autocast with a GradScaler on CUDA
(float32 on CPU).

Timing: --warmup steps (compiling), then --steps steps, blocked on at the end; step ms is their
mean. tokens/s = B * M / step time. MFU = tokens/s x FLOPs per token / peak, FLOPs per token
from `srupp_jax.models.flops.estimate_flops_per_token` (matmuls 6 per weight per token, attention
scores over the 2M keys computed, elementwise work roughly), the same count for both rows;
peak is the device's dense bf16 peak (None where unknown, e.g. CPU). Peak memory: the device
allocator's peak (JAX memory_stats, torch.cuda.max_memory_allocated), None on CPU.

--runs VARIANT:BATCH,... picks the (variant, batch) pairs instead of every --variants x
--batches pair ('base' names the config without a variant), e.g. `--runs base:8,base:32,k5:8`.
--dtypes (train.compute_dtype: float32, bfloat16, float16 with dynamic loss scaling) and
--remats (model.remat: none, layer, attention) add a row of ours for each value, e.g.
`--dtypes bfloat16,float16 --remats none,layer`; the official rows stay its fp16 recipe.

Prints a table and writes JSON (rows: impl, k, batch, tokens_per_sec, step_ms, mfu,
peak_memory_gb; device and versions), rewritten after every row so that a run stopped by a
time limit keeps the rows it finished.
"""
import argparse
import importlib
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from srupp_jax.programs import modes  # noqa: E402
from srupp_jax.models.flops import estimate_flops_per_token  # noqa: E402
from srupp_jax.training.mfu import mfu, peak_flops_per_device  # noqa: E402
from srupp_jax.training.optim import make_optimizer  # noqa: E402
from srupp_jax.training.rng import model_rngs  # noqa: E402
from srupp_jax.training.steps import initial_loss_scale, make_train_step  # noqa: E402
from srupp_jax.tasks.lm import lm_loss  # noqa: E402
from report import save_json  # noqa: E402


def paper_config(args, variant: str, batch: int, impl: str):
    """The config file's settings with only the sizes of this benchmark overridden."""
    module = importlib.import_module("configs." + args.config)
    config = module.get_config(variant) if variant else module.get_config()
    m, t = config.model, config.train
    for key in ("d", "d_proj"):
        if getattr(args, key):
            setattr(m, key, getattr(args, key))
    if args.layers:
        m.num_layers = args.layers
    if args.unroll:
        t.unroll = args.unroll
    t.batch_size, m.impl = batch, impl
    m.vocab_size = m.vocab_size or args.vocab     # 0 in the config: the data's (no data here)
    if args.dtype:
        t.compute_dtype = args.dtype
    return config


def flops_per_token(config, attn_layers):
    m, t = config.model, config.train
    return estimate_flops_per_token(m.d, m.d_proj, m.num_layers, attn_layers, m.vocab_size,
                                    2 * t.unroll)


def time_ours(config, args):
    t = config.train
    model = modes.build_model(config, model_rngs(config))   # keys of train.prng_impl
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps, weight_decay=t.weight_decay,
                        clip_norm=t.clip_norm)
    opt_state = tx.init(params)
    period = t.loss_scale_period if t.compute_dtype == "float16" else 0
    step = make_train_step(graphdef, tx, lm_loss, period)
    carry = model.init_state(t.batch_size, t.unroll)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (t.batch_size, t.unroll + 1), 0,
                                config.model.vocab_size, jnp.int32)
    batch = (tokens[:, :-1], tokens[:, 1:])
    state = (params, rest, opt_state, carry) + ((initial_loss_scale(t.loss_scale),)
                                                if period else ())
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            jax.block_until_ready(state)
            start = time.perf_counter()
        *state, sm = step(*state, *batch)
    jax.block_until_ready((state, sm))
    seconds = (time.perf_counter() - start) / args.steps
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return seconds, None if peak is None else peak / 1e9, sum(model.rnn.has_attention)


def time_official(config, args):
    """sru.SRUpp in its enwik8 recipe at the same shape (see the module docstring)."""
    import sru
    import torch
    m, t = config.model, config.train
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    rnn = sru.SRUpp(m.d, m.d, m.d_proj, num_layers=m.num_layers, dropout=m.dropout,
                    attn_dropout=m.attn_dropout, num_heads=m.num_heads,
                    layer_norm=m.layer_norm, highway_bias=m.highway_bias,
                    attention_every_n_layers=m.k)
    embed, out = torch.nn.Embedding(m.vocab_size, m.d), torch.nn.Linear(m.d, m.vocab_size)
    modules = torch.nn.ModuleList([embed, rnn, out]).to(device).train()
    opt = torch.optim.RAdam(modules.parameters(), lr=t.lr, betas=(0.9, 0.999),
                            weight_decay=0.0)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    B, M = t.batch_size, t.unroll
    tokens = torch.randint(0, m.vocab_size, (M + 1, B), device=device)
    mask = torch.triu(torch.full((M, 2 * M), float("-inf"), device=device), diagonal=M + 1)
    memory = None

    def step(memory):
        with torch.autocast(device, dtype=torch.float16, enabled=cuda):
            x = embed(tokens[:-1])
            h, _, state = rnn(x, attn_mask=mask if memory else mask[:, M:], memory=memory)
            logits = out(h)
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, m.vocab_size),
                                                     tokens[1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(modules.parameters(), t.clip_norm)
        scaler.step(opt)
        scaler.update()
        return [s.detach() for s in state["saved_inputs"]]

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        memory = step(memory)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        memory = step(memory)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    attn = sum(type(c.transform_module).__name__ == "SRUppAttention" for c in rnn.rnn_lst)
    return seconds, peak, attn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="enwik8", help="a config module in configs/")
    p.add_argument("--variants", default=",k5", help="config variants ('' = the base)")
    p.add_argument("--batches", default="8,32")
    p.add_argument("--runs", default="", help="VARIANT:BATCH pairs instead of --variants x "
                   "--batches, e.g. base:8,base:32,k5:8")
    p.add_argument("--impls", default="auto", help="our recurrence backends, one row each")
    p.add_argument("--prng_impls", default="", help="train.prng_impl values, one row each of "
                   "ours ('' = the config's; e.g. threefry2x32,rbg)")
    p.add_argument("--official", action=argparse.BooleanOptionalAction, default=True,
                   help="also time sru.SRUpp (needs torch and sru==3.0.0.dev6)")
    p.add_argument("--vocab", type=int, default=256, help="vocabulary when the config takes "
                   "it from the data (enwik8: 256 bytes)")
    p.add_argument("--d", type=int, default=0, help="0 = the config's")
    p.add_argument("--d_proj", type=int, default=0)
    p.add_argument("--layers", type=int, default=0)
    p.add_argument("--unroll", type=int, default=0)
    p.add_argument("--dtype", default="", help="'' = the config's train.compute_dtype")
    p.add_argument("--dtypes", default="", help="train.compute_dtype values, a row of ours "
                   "each ('' = --dtype)")
    p.add_argument("--remats", default="none", help="model.remat values, a row of ours each")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                 "training.json"))
    args = p.parse_args(argv)
    pairs = runs(args)

    peak_flops = peak_flops_per_device()
    dev = jax.devices()[0]
    versions = dict(jax=jax.__version__, flax=flax.__version__,
                    python=platform.python_version())
    if args.official:
        import sru
        import torch
        versions.update(torch=torch.__version__, sru=getattr(sru, "__version__", "?"))
    prngs = args.prng_impls.split(",") if args.prng_impls else [""]
    dtypes = args.dtypes.split(",") if args.dtypes else [args.dtype]
    impls = [(i, p, d, r) for i in args.impls.split(",") for p in prngs for d in dtypes
             for r in args.remats.split(",")] + (
        [("official", "", "", "none")] if args.official else [])
    rows = []
    print("| impl | PRNG | dtype | remat | variant | k | B | tokens/s | step ms | MFU | peak GB |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant, batch in pairs:
        for impl, prng, dtype, remat in impls:
            config = paper_config(args, variant, batch, "auto" if impl == "official" else impl)
            if prng:
                config.train.prng_impl = prng
            if dtype:
                config.train.compute_dtype = dtype
            config.model.remat = remat
            timer = time_official if impl == "official" else time_ours
            seconds, peak_gb, attn = timer(config, args)
            tps = batch * config.train.unroll / seconds
            official = impl == "official"
            rows.append(dict(impl=impl, k=config.model.k, variant=variant or "base",
                             prng_impl=None if official else config.train.prng_impl,
                             dtype="float16 (autocast)" if official else
                             config.train.compute_dtype, remat=remat,
                             batch=batch, length=config.train.unroll,
                             attention_layers=int(attn), tokens_per_sec=tps,
                             step_ms=1000 * seconds, peak_memory_gb=peak_gb,
                             mfu=mfu(tps, flops_per_token(config, attn), peak_flops),
                             flops_per_token=flops_per_token(config, attn)))
            r, fmt = rows[-1], lambda v, f: "-" if v is None else format(v, f)
            print(f"| {r['impl']} | {r['prng_impl'] or '-'} | {r['dtype']} | {r['remat']} | "
                  f"{r['variant']} | {r['k']} | "
                  f"{r['batch']} | {r['tokens_per_sec']:,.0f} | {r['step_ms']:.1f} | "
                  f"{fmt(r['mfu'], '.3f')} | {fmt(r['peak_memory_gb'], '.1f')} |", flush=True)
            save_json(args.out, settings={**vars(args), "out": os.path.basename(args.out)},
                      rows=rows, versions=versions, host=dict(machine=platform.machine(),
                                                               cpus=os.cpu_count()),
                      device=dict(kind=dev.device_kind, platform=dev.platform,
                                  count=jax.device_count()))
    m = config.model
    print(f"device {dev.device_kind} ({jax.default_backend()}), configs/{args.config}.py d={m.d} "
          f"d'={m.d_proj} layers={m.num_layers} M={config.train.unroll} "
          f"dtype={config.train.compute_dtype}")
    return rows


def runs(args) -> list:
    """[(variant, batch), ...]: --runs, else every --variants x --batches pair."""
    if not args.runs:
        return [(v, int(b)) for v in args.variants.split(",") for b in args.batches.split(",")]
    pairs = []
    for spec in args.runs.split(","):
        variant, _, batch = spec.partition(":")
        if not batch.isdigit() or int(batch) < 1:
            raise SystemExit(f"--runs entry {spec!r}; expected VARIANT:BATCH, e.g. base:8")
        pairs.append(("" if variant == "base" else variant, int(batch)))
    return pairs


if __name__ == "__main__":
    main()
