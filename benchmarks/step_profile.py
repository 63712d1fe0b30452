"""Where a train step's time goes, by source line: a jax.profiler trace of a few steps, each op
XLA ran mapped to the innermost srupp_jax line that made it (through the compiled HLO's stack
frames), summed per step.

    python benchmarks/step_profile.py --config study_enwik8 --variant cpu --d 64 --d_proj 16 \\
        --layers 10 --unroll 64 --batch 8 --impl scan            # the toy SRU++ k=1 of issue 22

The model and step are benchmarks/training.py's (`paper_config`, `steps.make_train_step`).
"fwd" / "bwd": the op belongs to the forward pass or to the backward (a transpose in its name).
On XLA:CPU an op is a thunk; the lines of a `while` (the recurrence's scan) are counted as the
loop. The untraced step time is printed beside the traced one (the tracer's own cost).
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import training  # noqa: E402
from srupp_jax.programs import modes  # noqa: E402
from srupp_jax.training.optim import make_optimizer  # noqa: E402
from srupp_jax.training.rng import model_rngs  # noqa: E402
from srupp_jax.training.steps import make_train_step  # noqa: E402
from srupp_jax.tasks.lm import lm_loss  # noqa: E402


def source_lines(hlo: str) -> dict:
    """{instruction name: (op_name, "file.py:line function")} of an HLO module's text, the
    innermost frame under srupp_jax/ or pallas_kernels/ (else the innermost one)."""
    tables = {"FileNames": {}, "FunctionNames": {}, "FileLocations": {}, "StackFrames": {}}
    section, ops = None, {}
    for line in hlo.splitlines():
        text = line.strip()
        if text in tables:
            section = text
            continue
        if section and re.match(r"^\d+ ", text):
            key, rest = text.split(" ", 1)
            fields = dict(re.findall(r"(\w+)=(\d+)", rest))
            tables[section][int(key)] = rest.strip('"') if section in (
                "FileNames", "FunctionNames") else fields
            continue
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{([^}]*)\}", line)
        if m:
            op = re.search(r'op_name="([^"]*)"', m.group(2))
            frame = re.search(r"stack_frame_id=(\d+)", m.group(2))
            ops[m.group(1)] = (op.group(1) if op else "", int(frame.group(1)) if frame else 0)

    def where(frame):
        chain = []
        while frame and len(chain) < 200:
            f = tables["StackFrames"][frame]
            loc = tables["FileLocations"][int(f["file_location_id"])]
            chain.append((tables["FileNames"][int(loc["file_name_id"])],
                          tables["FunctionNames"][int(loc["function_name_id"])], loc["line"]))
            parent = int(f.get("parent_frame_id", 0))
            frame = 0 if parent == frame else parent
        ours = [c for c in chain if "/srupp_jax/" in c[0] or "/pallas_kernels/" in c[0]]
        file, func, line = (ours or chain or [("?", "?", "?")])[0]
        return f"{os.path.basename(file)}:{line} {func.split('.')[-1]}"

    return {name: (op, where(frame)) for name, (op, frame) in ops.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="study_enwik8")
    p.add_argument("--variant", default="cpu")
    for key in ("d", "d_proj", "layers", "unroll"):
        p.add_argument(f"--{key}", type=int, default=0, help="0 = the config's")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--impl", default="scan")
    p.add_argument("--dtype", default="")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    config = training.paper_config(a, a.variant, a.batch, a.impl)
    t = config.train
    model = modes.build_model(config, model_rngs(config))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps, weight_decay=t.weight_decay,
                        clip_norm=t.clip_norm)
    state = [params, rest, tx.init(params), model.init_state(t.batch_size, t.unroll)]
    step = make_train_step(graphdef, tx, lm_loss)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (t.batch_size, t.unroll + 1), 0,
                                config.model.vocab_size, jnp.int32)
    batch = (tokens[:, :-1], tokens[:, 1:])
    lines = source_lines(step.lower(*state, *batch).compile().as_text())

    def run(n):
        start = time.perf_counter()
        for _ in range(n):
            state[:] = step(*state, *batch)[:4]
        jax.block_until_ready(state)
        return (time.perf_counter() - start) / n

    run(3)
    untraced = run(a.steps)
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder, create_perfetto_trace=True)
        traced = run(a.steps)
        jax.profiler.stop_trace()
        trace = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)[0]
        events = json.load(gzip.open(trace))["traceEvents"]
    ops = sorted((e for e in events if e.get("ph") == "X" and e["name"] in lines),
                 key=lambda e: (e["tid"], e["ts"]))
    total, count, ends = collections.Counter(), collections.Counter(), {}
    for e in ops:                      # only the outermost op on its thread (a loop, not its body)
        open_ends = [end for end in ends.get(e["tid"], []) if end > e["ts"]]
        ends[e["tid"]] = open_ends + [e["ts"] + e["dur"]]
        if open_ends:
            continue
        op, where = lines[e["name"]]
        key = ("bwd" if "transpose" in op else "fwd", where)
        total[key] += e["dur"] / 1e3 / a.steps
        count[key] += 1 / a.steps
    print(f"step {1e3 * untraced:.1f} ms untraced, {1e3 * traced:.1f} ms traced; ops "
          f"{sum(total.values()):.1f} ms and {sum(count.values()):.0f} a step "
          f"({t.batch_size} x {t.unroll} tokens, {jax.default_backend()}, "
          f"train.prng_impl={t.prng_impl})")
    print("| ms / step | ops / step | pass | source |")
    print("| ---: | ---: | --- | --- |")
    for (kind, where), ms in total.most_common(a.top):
        print(f"| {ms:.2f} | {count[(kind, where)]:.0f} | {kind} | {where} |")
    return total


if __name__ == "__main__":
    main()
