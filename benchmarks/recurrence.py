"""Recurrence backends side by side: forward and forward+backward wall time per call.

    python benchmarks/recurrence.py [--impls scan,assoc] [--sizes 4x256x256,4x1024x256]
                                    [--dtype float32] [--out benchmarks/results/recurrence.json]

Each size is batch x length x d (k = 3 with a skip term, v ~ U[-1, 1] as the reference
initialises it). Times are medians of --repeats calls after one warm-up (compile excluded);
ratios are against the first backend listed. GB/s counts the bytes a fused kernel must move
(forward: read U and x, write h; forward+backward: that, plus the saved float32 c written and
read, and the gradients of U and x written with dh read) and is set against a device copy
measured in the same run (bytes read + written by `x + 1` on a 256 MiB array). Prints a table
and writes JSON with the device and versions. On a GPU add `pallas` to --impls.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from srupp_jax.recurrence import newton_info, sru_recurrence  # noqa: E402


def inputs(batch, length, d, dtype):
    ks = jax.random.split(jax.random.PRNGKey(0), 5)
    return dict(U=jax.random.normal(ks[0], (batch, length, 3, d)).astype(dtype),
                v=jax.random.uniform(ks[1], (2, d), minval=-1, maxval=1),
                b=jax.random.normal(ks[2], (2, d)),
                x=jax.random.normal(ks[3], (batch, length, d)).astype(dtype),
                c0=jax.random.normal(ks[4], (batch, d)))


def timed(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(repeats, nbytes=256 << 20):
    """Bytes read + written per second by an elementwise op on a large array."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    t = timed(jax.jit(lambda a: a + 1.0), (x,), repeats)
    return 2 * nbytes / t


def bytes_moved(batch, length, d, itemsize):
    """(forward, forward+backward) bytes of the recurrence at its memory-bound minimum."""
    n = batch * length * d
    fwd = n * itemsize * (3 + 1 + 1)                      # U (3 slices), x, h
    bwd = n * itemsize * (3 + 1 + 1) + n * itemsize + 2 * n * 4  # dU, dx, dh in; c out+in
    return fwd, fwd + bwd


def bench(impl, kw, repeats):
    names = ("U", "v", "b", "x", "c0")
    args = tuple(kw[n] for n in names)

    def run(*a):
        return sru_recurrence(**dict(zip(names, a)), impl=impl)

    def loss(*a):
        h, c = run(*a)
        return jnp.sum(h.astype(jnp.float32)) + jnp.sum(c)

    fwd = jax.jit(run)
    fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(names)))))
    return timed(fwd, args, repeats), timed(fwd_bwd, args, repeats)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impls", default="scan,assoc")
    p.add_argument("--sizes", default="4x256x256,4x1024x256,16x1024x64")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/recurrence.json")
    a = p.parse_args()
    impls = a.impls.split(",")
    copy_bw = copy_bandwidth(a.repeats)
    rows = []
    for size in a.sizes.split(","):
        batch, length, d = map(int, size.split("x"))
        kw = inputs(batch, length, d, jnp.dtype(a.dtype))
        iters = int(newton_info(kw["U"], kw["v"], kw["b"], c0=kw["c0"]).iterations)
        base = None
        b_fwd, b_all = bytes_moved(batch, length, d, jnp.dtype(a.dtype).itemsize)
        for impl in impls:
            fwd, fwd_bwd = bench(impl, kw, a.repeats)
            base = base or (fwd, fwd_bwd)
            rows.append(dict(impl=impl, batch=batch, length=length, d=d, dtype=a.dtype,
                             fwd_ms=1e3 * fwd, fwd_bwd_ms=1e3 * fwd_bwd,
                             fwd_ratio=fwd / base[0], fwd_bwd_ratio=fwd_bwd / base[1],
                             fwd_gbps=b_fwd / fwd / 1e9, fwd_bwd_gbps=b_all / fwd_bwd / 1e9,
                             newton_iterations=iters if impl == "assoc" else None))
    env = dict(device=str(jax.devices()[0]), device_kind=jax.devices()[0].device_kind,
               copy_gbps=copy_bw / 1e9,
               backend=jax.default_backend(), cpu_count=os.cpu_count(), jax=jax.__version__,
               python=platform.python_version(), machine=platform.machine())
    print(f"device: {env['device_kind']} ({env['backend']}), jax {env['jax']}, "
          f"{env['cpu_count']} CPUs, copy {env['copy_gbps']:.1f} GB/s")
    print(f"{'impl':8} {'B x L x d':>16} {'dtype':>9} {'fwd ms':>9} {'ratio':>6} {'GB/s':>7} "
          f"{'fwd+bwd ms':>11} {'ratio':>6} {'GB/s':>7} {'newton it':>9}")
    for r in rows:
        it = "" if r["newton_iterations"] is None else str(r["newton_iterations"])
        print(f"{r['impl']:8} {r['batch']:>4}x{r['length']:>5}x{r['d']:>5} {r['dtype']:>9} "
              f"{r['fwd_ms']:9.2f} {r['fwd_ratio']:6.2f} {r['fwd_gbps']:7.2f} "
              f"{r['fwd_bwd_ms']:11.2f} {r['fwd_bwd_ratio']:6.2f} {r['fwd_bwd_gbps']:7.2f} "
              f"{it:>9}")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(dict(env=env, rows=rows, command=" ".join(sys.argv)), f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
