"""Memory of the training step at the paper's enwik8 base shapes (Table 11: d 3072, d' 768, 10
layers, M 1024, bfloat16 compute) per model.remat: the compiled step's own memory analysis
(XLA on this machine's backend; nothing runs, nothing is allocated) against the memory plan
(srupp_jax/tasks/plan.py). Prints a table and writes JSON.

    python benchmarks/memory.py --batch 8 --out benchmarks/results/memory.json
    python benchmarks/memory.py --d 64 --batch 4 --unroll 64       # a quick small check
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from report import save_json  # noqa: E402
from srupp_jax import tasks  # noqa: E402
from srupp_jax.tasks.plan import GIB, compiled_memory, memory_plan  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--unroll", type=int, default=1024)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--remat", default="none,layer,attention")
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    rows = []
    for remat in a.remat.split(","):
        config = importlib.import_module("configs.enwik8").get_config()
        m, t = config.model, config.train
        m.vocab_size, m.d, m.d_proj, m.num_layers, m.remat = 256, a.d, a.d // 4, a.layers, remat
        m.impl = "scan"
        t.batch_size, t.unroll, t.compute_dtype = a.batch, a.unroll, a.dtype
        task = tasks.make(config)
        plan = memory_plan(task, 1)
        start = time.perf_counter()
        comp = compiled_memory(task, a.batch)
        row = dict(remat=remat, d=a.d, layers=a.layers, batch=a.batch, unroll=a.unroll,
                   dtype=a.dtype, plan_gib=plan.total() / GIB,
                   plan_activations_gib=plan.activations[remat] / GIB,
                   compiled_gib=comp["total"] / GIB, compiled_temp_gib=comp["temp"] / GIB,
                   compile_s=time.perf_counter() - start)
        rows.append(row)
        print(f"remat {remat:9s} plan {row['plan_gib']:7.2f} GiB (activations "
              f"{row['plan_activations_gib']:6.2f})  compiled {row['compiled_gib']:7.2f} GiB "
              f"(temp {row['compiled_temp_gib']:6.2f})  plan/compiled "
              f"{row['plan_gib'] / row['compiled_gib']:.2f}  [{row['compile_s']:.0f} s]",
              flush=True)
    if a.out:
        save_json(a.out, benchmark="memory", backend=jax.default_backend(),
                  versions=dict(jax=jax.__version__), rows=rows)
    return rows


if __name__ == "__main__":
    main()
