"""Recurrence backends side by side: forward and forward+backward wall time per call.

    python benchmarks/recurrence.py [--impls scan,assoc] [--sizes 4x256x256,4x1024x256]
                                    [--dtype float32] [--out benchmarks/results/recurrence.json]

Each size is batch x length x d (k = 3 with a skip term, v ~ U[-1, 1] as the reference
initialises it, random c0). --impls names, in the order they are run:

  scan, assoc, pallas, pallas_tpu   `sru_recurrence(impl=...)` of this package
  pallas:B[:W[:P]]          the GPU kernel with block_d=B, num_warps=W, prefetch=P (tuning)
  pallas_tpu:B[:D[:T]]      the TPU kernel with block_b=B, block_d=D, chunk=T (tuning)
  official                  the PyTorch package `sru` (3.0.0.dev6): on a CUDA device its CUDA
                            kernel (`elementwise_recurrence_gpu`, compiled with nvcc on first
                            use, computing in float32 whatever the input dtype); on CPU its C++
                            forward and its Python-loop autograd for forward+backward.

Before timing, every variant's forward h and final c are checked against `scan` on the same
inputs (relative error in the table; a variant off by more than --max_err stops the run).
Times are medians of --repeats calls after one warm-up (compile excluded), synchronised with
the device; ratios are against the first variant listed. GB/s counts the bytes a fused kernel
must move at minimum (forward: read U and x, write h; forward+backward: that, plus the saved
float32 c written and read, and the gradients of U and x written with dh read), the same count
for every variant, and is set against a device copy measured in the same run (bytes read +
written by 10 passes of `x + 1` over a 2 GiB array in one compiled loop; 256 MiB on CPU).
Prints a table and writes JSON with device and versions, rewritten after every row (a run
stopped by a time limit keeps the rows it finished).

On a TPU (the kernels compile with Mosaic; elsewhere Pallas interprets them, slowly):

    python benchmarks/recurrence.py --impls pallas_tpu,assoc,scan --dtype bfloat16 \
        --sizes 8x1024x3072,4x1024x256
"""
import argparse
import os
import platform
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from srupp_jax.nn.recurrence import interpret_kernels, newton_info, sru_recurrence  # noqa: E402
from report import save_json  # noqa: E402

NAMES = ("U", "v", "b", "x", "c0")


def inputs(batch, length, d, dtype):
    ks = jax.random.split(jax.random.PRNGKey(0), 5)
    return dict(U=jax.random.normal(ks[0], (batch, length, 3, d)).astype(dtype),
                v=jax.random.uniform(ks[1], (2, d), minval=-1, maxval=1),
                b=jax.random.normal(ks[2], (2, d)),
                x=jax.random.normal(ks[3], (batch, length, d)).astype(dtype),
                c0=jax.random.normal(ks[4], (batch, d)))


def timed(call, repeats):
    """Median seconds of `call()` (which returns once the device is done) after a warm-up."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(repeats, nbytes=None, passes=10):
    """Bytes read + written per second by `a + 1` over a large array, `passes` times in one
    compiled loop (one dispatch, so host overhead does not count). nbytes: 2 GiB on an
    accelerator (smaller arrays understate an H100 by ~2x), 256 MiB on CPU."""
    if nbytes is None:
        nbytes = (256 << 20) if jax.default_backend() == "cpu" else (2 << 30)
    x = jnp.ones((nbytes // 4,), jnp.float32)
    loop = jax.jit(lambda a: jax.lax.fori_loop(0, passes, lambda _, b: b + 1.0, a),
                   donate_argnums=0)
    state = [loop(x)]

    def call():
        state[0] = jax.block_until_ready(loop(state[0]))
    return 2 * nbytes * passes / timed(call, repeats)


def bytes_moved(batch, length, d, itemsize):
    """(forward, forward+backward) bytes of the recurrence at its memory-bound minimum."""
    n = batch * length * d
    fwd = n * itemsize * (3 + 1 + 1)                      # U (3 slices), x, h
    bwd = n * itemsize * (3 + 1 + 1) + n * itemsize + 2 * n * 4  # dU, dx, dh in; c out+in
    return fwd, fwd + bwd


KERNEL_OPTIONS = {"pallas": ("block_d", "num_warps", "prefetch"),
                  "pallas_tpu": ("block_b", "block_d", "chunk")}


def parse_impl(spec):
    """'pallas:64:2:4' -> ('pallas', dict(block_d=64, num_warps=2, prefetch=4)),
    'pallas_tpu:2:3072:16' -> ('pallas_tpu', dict(block_b=2, block_d=3072, chunk=16)); a bare
    name -> (name, {})."""
    name, *vals = spec.split(":")
    known = ("scan", "assoc", "pallas", "pallas_tpu", "official")
    if name not in known or (vals and name not in KERNEL_OPTIONS) or len(vals) > 3:
        raise SystemExit(f"--impls entry {spec!r}; expected one of {', '.join(known)}, "
                         "pallas:BLOCK_D[:NUM_WARPS[:PREFETCH]] or "
                         "pallas_tpu:BLOCK_B[:BLOCK_D[:CHUNK]]")
    try:
        opts = {k: int(v) for k, v in zip(KERNEL_OPTIONS.get(name, ()), vals)}
    except ValueError:
        raise SystemExit(f"--impls entry {spec!r}: the {name} options must be integers")
    return name, opts


def jax_variant(name, opts, kw):
    """(forward call, forward+backward call, forward (h, c) as NumPy) for this package."""
    if opts:
        import pallas_kernels
        kernel = {"pallas": pallas_kernels.sru_recurrence_pallas,
                  "pallas_tpu": pallas_kernels.sru_recurrence_tpu}[name]

        def run(*a):
            return kernel(**dict(zip(NAMES, a)), **opts)
    else:
        def run(*a):      # a kernel off its accelerator: interpreted (the CPU rehearsal)
            with interpret_kernels():
                return sru_recurrence(**dict(zip(NAMES, a)), impl=name)

    def loss(*a):
        h, c = run(*a)
        return jnp.sum(h.astype(jnp.float32)) + jnp.sum(c)

    args = tuple(kw[n] for n in NAMES)
    fwd = jax.jit(run)
    fwd_bwd = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(NAMES)))))
    h, c = fwd(*args)
    return (lambda: jax.block_until_ready(fwd(*args)),
            lambda: jax.block_until_ready(fwd_bwd(*args)),
            (np.asarray(h, np.float32), np.asarray(c, np.float32)))


def official_variant(kw):
    """The same three for the `sru` package's elementwise recurrence (time-major layout:
    U [L, B, d * k] with k fastest, x [L, B, d], weight_c = v and bias = b flattened)."""
    import torch
    from sru import ops

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Its CUDA path casts bf16 inputs to float32 itself; its CPU path takes float32 only.
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[str(kw["U"].dtype)]
    dtype = dtype if device == "cuda" else torch.float32
    batch, length, k, d = kw["U"].shape

    def tensor(a, cast=False):
        """A float32 NumPy copy of `a` on the torch device, in the input dtype if `cast`."""
        t = torch.from_numpy(np.array(a, np.float32, order="C")).to(device)
        return t.to(dtype) if cast else t

    U = tensor(np.transpose(np.asarray(kw["U"], np.float32), (1, 0, 3, 2))
               .reshape(length, batch, d * k), cast=True)
    x = tensor(np.transpose(np.asarray(kw["x"], np.float32), (1, 0, 2)), cast=True)
    weight_c, bias, c0 = tensor(kw["v"]).reshape(-1), tensor(kw["b"]).reshape(-1), tensor(kw["c0"])
    recurrence = ops.elementwise_recurrence_gpu if device == "cuda" else \
        ops.elementwise_recurrence_naive
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(*a):
        return recurrence(*a, 0, d, False, True)   # identity activation, one direction, skip

    def fwd():
        with torch.no_grad():
            out = run(U, x, weight_c, bias, c0)
        sync()
        return out

    leaves = [t.detach().clone().requires_grad_(True) for t in (U, x, weight_c, bias, c0)]

    def fwd_bwd():
        with warnings.catch_warnings():    # the CPU path warns that it is slow with autograd
            warnings.simplefilter("ignore")
            h, c = run(*leaves)
        grads = torch.autograd.grad(h.float().sum() + c.float().sum(), leaves)
        sync()
        return grads

    h, c = fwd()
    h = h.float().cpu().numpy().reshape(length, batch, d).transpose(1, 0, 2)
    return fwd, fwd_bwd, (h, c.float().cpu().numpy())


def rel_err(a, ref):
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def official_version():
    try:
        import sru
        import torch
        return dict(sru=getattr(sru, "__version__", "?"), torch=torch.__version__,
                    torch_cuda=torch.version.cuda,
                    torch_device=(torch.cuda.get_device_name()
                                  if torch.cuda.is_available() else "cpu"))
    except ImportError as e:
        return dict(error=str(e))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impls", default="scan,assoc")
    p.add_argument("--sizes", default="4x256x256,4x1024x256,16x1024x64")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--copy_mib", type=int, default=0,
                   help="size of the copy-bandwidth array (0: 2048 on an accelerator, 256 on CPU)")
    p.add_argument("--max_err", type=float, default=None,
                   help="largest relative error of h or c against scan (default 1e-4 for "
                        "float32, 2e-2 for bfloat16)")
    p.add_argument("--out", default="benchmarks/results/recurrence.json")
    a = p.parse_args(argv)
    impls = [(spec, *parse_impl(spec)) for spec in a.impls.split(",")]
    max_err = a.max_err or (1e-4 if a.dtype == "float32" else 2e-2)
    copy_bw = copy_bandwidth(a.repeats, (a.copy_mib << 20) or None)
    env = dict(device=str(jax.devices()[0]), device_kind=jax.devices()[0].device_kind,
               copy_gbps=copy_bw / 1e9,
               backend=jax.default_backend(), cpu_count=os.cpu_count(), jax=jax.__version__,
               python=platform.python_version(), machine=platform.machine())
    if any(name == "official" for _, name, _ in impls):
        env["official"] = official_version()
    rows = []
    for size in a.sizes.split(","):
        batch, length, d = map(int, size.split("x"))
        kw = inputs(batch, length, d, jnp.dtype(a.dtype))
        iters = int(newton_info(kw["U"], kw["v"], kw["b"], c0=kw["c0"]).iterations)
        h_ref, c_ref = jax_variant("scan", {}, kw)[2]
        b_fwd, b_all = bytes_moved(batch, length, d, jnp.dtype(a.dtype).itemsize)
        base = None
        for spec, name, opts in impls:
            fwd, fwd_bwd, (h, c) = (official_variant(kw) if name == "official"
                                    else jax_variant(name, opts, kw))
            err = max(rel_err(h, h_ref), rel_err(c, c_ref))
            if not err <= max_err:
                raise SystemExit(f"{spec} at {size} {a.dtype}: relative error {err:.2e} "
                                 f"against scan, more than --max_err {max_err:.0e}")
            t_fwd, t_all = timed(fwd, a.repeats), timed(fwd_bwd, a.repeats)
            base = base or (t_fwd, t_all)
            rows.append(dict(impl=spec, batch=batch, length=length, d=d, dtype=a.dtype,
                             rel_err=err, fwd_ms=1e3 * t_fwd, fwd_bwd_ms=1e3 * t_all,
                             fwd_ratio=t_fwd / base[0], fwd_bwd_ratio=t_all / base[1],
                             fwd_gbps=b_fwd / t_fwd / 1e9, fwd_bwd_gbps=b_all / t_all / 1e9,
                             fwd_copy_frac=b_fwd / t_fwd / copy_bw,
                             fwd_bwd_copy_frac=b_all / t_all / copy_bw,
                             newton_iterations=iters if name == "assoc" else None))
            print(f"{spec} at {size} {a.dtype}: fwd {1e3 * t_fwd:.3f} ms, fwd+bwd "
                  f"{1e3 * t_all:.3f} ms", flush=True)
            save_json(a.out, env=env, rows=rows)   # each row kept if a time limit stops the run
    print(f"device: {env['device_kind']} ({env['backend']}), jax {env['jax']}, "
          f"{env['cpu_count']} CPUs, copy {env['copy_gbps']:.1f} GB/s")
    print(f"{'impl':14} {'B x L x d':>16} {'dtype':>9} {'err':>8} {'fwd ms':>9} {'ratio':>6} "
          f"{'GB/s':>7} {'copy%':>6} {'fwd+bwd ms':>11} {'ratio':>6} {'GB/s':>7} {'copy%':>6} "
          f"{'newton':>6}")
    for r in rows:
        it = "" if r["newton_iterations"] is None else str(r["newton_iterations"])
        print(f"{r['impl']:14} {r['batch']:>4}x{r['length']:>5}x{r['d']:>5} {r['dtype']:>9} "
              f"{r['rel_err']:8.1e} {r['fwd_ms']:9.2f} {r['fwd_ratio']:6.2f} "
              f"{r['fwd_gbps']:7.2f} {100 * r['fwd_copy_frac']:6.1f} "
              f"{r['fwd_bwd_ms']:11.2f} {r['fwd_bwd_ratio']:6.2f} {r['fwd_bwd_gbps']:7.2f} "
              f"{100 * r['fwd_bwd_copy_frac']:6.1f} {it:>6}")
    return rows


if __name__ == "__main__":
    main()
