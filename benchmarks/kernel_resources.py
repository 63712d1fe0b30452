"""What Triton makes of the Pallas recurrence kernels, without a GPU: registers, spills, loads.

    pip install triton   # the compiler only; no GPU or driver is needed
    python benchmarks/kernel_resources.py [--block_d 32] [--num_warps 1]
        [--prefetch 0,4,8] [--dtype bfloat16] [--arch 90] [--out FILE]

For each (block_d, num_warps, prefetch) the forward and backward kernels are lowered by Pallas to
Triton IR (the text Pallas prints with `debug=True`), compiled by the `triton` package for
sm_<arch> down to a cubin, and read back with the cuobjdump that ships with it: registers per
thread, local memory per thread (spills; anything above 0 is traffic the kernel did not ask
for), and the global loads and stores of the SASS by width (LDG.E = 4 bytes, .64 = 8, .128 = 16
per thread). This is a static report: it says what each variant costs in registers and whether
the prefetch buffers stay in registers, not how fast it runs (benchmarks/recurrence.py on a GPU
says that). The Triton in the `triton` package may differ from the one inside jaxlib that
compiles the kernels for real; the report names both versions.
"""
import argparse
import collections
import contextlib
import functools
import io
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402

from pallas_kernels import sru_recurrence_pallas  # noqa: E402
from report import save_json  # noqa: E402

SHAPE = (16, 1024, 4096)   # batch, length, d: enwik8-base columns; only constants depend on it


def triton_modules(block_d, num_warps, prefetch, dtype):
    """{kernel name: Triton IR text} of the forward and backward kernels of one variant."""
    batch, length, d = SHAPE
    U = jax.ShapeDtypeStruct((batch, length, 3, d), dtype)
    x = jax.ShapeDtypeStruct((batch, length, d), dtype)
    p = jax.ShapeDtypeStruct((2, d), jnp.float32)

    def loss(U, v, b, x):
        h, c = sru_recurrence_pallas(U, v, b, x, interpret=False, block_d=block_d,
                                     num_warps=num_warps, prefetch=prefetch)
        return jnp.sum(h.astype(jnp.float32)) + jnp.sum(c)

    printed = io.StringIO()
    with mock.patch.object(pl, "pallas_call", functools.partial(pl.pallas_call, debug=True)), \
            contextlib.redirect_stdout(printed):
        jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).trace(U, p, p, x).lower(
            lowering_platforms=("cuda",))
    return {m.group(1): _strip_locations(m.group(0))
            for m in re.finditer(r"^module @(\w+) \{.*?^\}", printed.getvalue(), re.M | re.S)}


def _strip_locations(text):
    """Drop the debug locations of the printed IR (`[unknown]`, `"name"(#loc12)`)."""
    text = text.replace(" [unknown]", "")
    return re.sub(r'\s+"[^"\n]*"\((#loc\d+|"[^"\n]*")?\)', "", text)


_SASS = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);"
                   r"\s*/\* 0x[0-9a-f]{16} \*/\s*\n\s*/\* (0x[0-9a-f]{16}) \*/")


def load_lead(sass):
    """(min, median) steps of arithmetic between each global load of the time loop (the
    longest backward branch) and the first instruction that waits on its scoreboard.

    Volta-to-Hopper control bits, in the second 64-bit word of an instruction: bits 46-48 the
    scoreboard a variable-latency result sets (7: none), bits 52-57 the scoreboards it waits
    for. The loop is walked cyclically from each load. None when there is no loop."""
    ins = [dict(addr=int(a, 16), op=op, args=args, sets=int(w, 16) >> 46 & 7,
                waits=int(w, 16) >> 52 & 0x3F) for a, op, args, w in _SASS.findall(sass)]
    loops = [(int(i["args"].split()[0], 16), i["addr"]) for i in ins
             if i["op"] == "BRA" and int(i["args"].split()[0], 16) < i["addr"]]
    if not loops:
        return None
    start, end = max(loops, key=lambda bounds: bounds[1] - bounds[0])
    body = [i for i in ins if start <= i["addr"] <= end]
    leads = []
    for k, load in enumerate(body):
        if not load["op"].startswith("LDG") or load["sets"] == 7:
            continue
        ex2 = 0
        for j in range(1, len(body) + 1):
            nxt = body[(k + j) % len(body)]
            if nxt["waits"] >> load["sets"] & 1:
                break
            ex2 += nxt["op"].startswith("MUFU.EX2")
        leads.append(ex2 / 2)
    return (min(leads), statistics.median(leads)) if leads else None


def compile_report(ttir, num_warps, arch):
    """Registers, local bytes and SASS global memory instructions of one kernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ttir")
        with open(src, "w") as f:
            f.write(ttir)
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                options=dict(num_warps=num_warps))
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        dump = lambda flag: subprocess.run([os.path.join(tools, "cuobjdump"), flag, cubin],
                                           capture_output=True, text=True, check=True).stdout
        usage, sass = dump("--dump-resource-usage"), dump("--dump-sass")
    field = lambda name: int(re.search(rf"{name}:(\d+)", usage).group(1))
    ops = collections.Counter(re.findall(r"\b((?:LDG|STG)\.E(?:\.\w+)*)", sass))
    return dict(registers=field("REG"), local_bytes=field("LOCAL"), stack=field("STACK"),
                shared=field("SHARED"), sass_lines=sass.count("\n"),
                global_ops=dict(sorted(ops.items())), lead=load_lead(sass))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(v) for v in s.split(",")]
    p.add_argument("--block_d", type=ints, default=[32])
    p.add_argument("--num_warps", type=ints, default=[1])
    p.add_argument("--prefetch", type=ints, default=[0, 4, 8])
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100)")
    p.add_argument("--out", default="benchmarks/results/kernel_resources.json")
    a = p.parse_args(argv)
    import triton
    rows = []
    for block_d in a.block_d:
        for num_warps in a.num_warps:
            if num_warps * 32 > block_d:       # threads without a column of their own
                continue
            for prefetch in a.prefetch:
                modules = triton_modules(block_d, num_warps, prefetch, jnp.dtype(a.dtype))
                for name, ttir in sorted(modules.items()):
                    rows.append(dict(kernel=name, block_d=block_d, num_warps=num_warps,
                                     prefetch=prefetch, dtype=a.dtype,
                                     **compile_report(ttir, num_warps, a.arch)))
    env = dict(jax=jax.__version__, triton=triton.__version__, arch=f"sm_{a.arch}",
               python=platform.python_version(), shape=SHAPE)
    print(f"jax {env['jax']} (Pallas lowering), triton {env['triton']} (compile), "
          f"{env['arch']}, {a.dtype}")
    print(f"{'kernel':20} {'block_d':>7} {'warps':>5} {'prefetch':>8} {'regs':>5} "
          f"{'local B':>7} {'lead min/med':>12}  global loads/stores in SASS")
    for r in rows:
        ops = " ".join(f"{k}x{v}" for k, v in r["global_ops"].items())
        lead = "-" if r["lead"] is None else "{:g} / {:g}".format(*r["lead"])
        print(f"{r['kernel']:20} {r['block_d']:>7} {r['num_warps']:>5} {r['prefetch']:>8} "
              f"{r['registers']:>5} {r['local_bytes']:>7} {lead:>12}  {ops}")
    save_json(a.out, env=env, rows=rows)
    return rows


if __name__ == "__main__":
    main()
