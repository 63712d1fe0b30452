"""Block sizes, padding and VMEM of the TPU recurrence kernel (`sru_recurrence_tpu`): its
tuning options, their checks and per-shape defaults, and the VMEM its blocks take.

A block holds `block_b` batch rows, `block_d` columns (block_d / 128 = `tiles` groups of 128
lanes, in sublanes) and, for the [B, L, ...] arrays, `chunk` time steps. VMEM stores the last
two axes in tiles of (8, 128) 4-byte or (16, 128) 2-byte elements, so `tiles` counts rounded up
to whole tiles; Pallas double-buffers every pipelined block.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

LANES = 128
VMEM_LIMIT = 12 << 20    # bytes a call may use: TPU cores have 16 MiB of scoped VMEM (v4, v5e)
VMEM_TARGET = 6 << 20    # what the default options stay under
MAX_TILES = 32           # default block_d: at most 32 x 128 = 4096 columns
SLAB = 8192              # default block_b x block_d: at most 8 float32 vregs per step and array
MAX_CHUNK = 128          # default chunk: at most 128 steps


@dataclasses.dataclass(frozen=True)
class TPUKernelOptions:
    """Tuning options of `sru_recurrence_tpu` (None: the per-shape default of
    `default_tpu_options`): batch rows and columns per program, time steps per chunk. They change
    speed and VMEM only, never a result. `config.model.tpu_kernel` in a config (0 there: None)."""
    block_b: Optional[int] = None
    block_d: Optional[int] = None
    chunk: Optional[int] = None

    def as_kwargs(self) -> dict:
        return dataclasses.asdict(self)


class TPUConfig(NamedTuple):
    """Static configuration of both kernels (hashable: a nondiff argument of the custom_vjp)."""
    k: int              # 3 or 4 slices in U (4: the skip term x' is U's 4th slice)
    has_x: bool         # skip term given as a separate x input (k = 3)
    has_m: bool         # mask_c given
    reverse: bool
    block_b: int        # batch rows per program
    tiles: int          # groups of 128 columns per program (block_d / 128)
    chunk: int          # time steps per grid step
    chunks: int         # grid steps along time (L' = chunks * chunk)
    interpret: Any      # False (Mosaic), True or a pltpu.InterpretParams


def sublanes(*dtypes) -> int:
    """Rows of a VMEM tile for the narrowest dtype: 8 for 4 bytes, 16 for 2."""
    return 32 // min(jnp.dtype(t).itemsize for t in dtypes)


def vmem_bytes(cfg: TPUConfig, u_dtype, x_dtype=None) -> int:
    """VMEM the larger of the two kernels uses: every pipelined block twice, plus scratch."""
    bb, T, k = cfg.block_b, cfg.chunk, cfg.k

    def block(leading, dtype=jnp.float32):
        itemsize = jnp.dtype(dtype).itemsize
        return leading * -(-cfg.tiles // sublanes(dtype)) * sublanes(dtype) * LANES * itemsize

    x = block(bb * T, x_dtype) if cfg.has_x else 0
    m = block(bb) if cfg.has_m else 0
    seq_u, seq_h, seq_c = block(bb * T * k, u_dtype), block(bb * T, u_dtype), block(bb * T)
    params, row = block(4), block(bb)
    forward = 2 * (seq_u + x + params + row + m + seq_h + row + seq_c) + row
    backward = (2 * (seq_u + x + params + m + seq_c + seq_h + 2 * row             # inputs
                     + seq_u + x + block(4 * bb) + row + m)                      # outputs
                + (6 + cfg.has_m) * row)                                          # scratch
    return max(forward, backward)


def tpu_config(batch, length, d, k, has_m, reverse, u_dtype, x_dtype, interpret, block_b,
            block_d, chunk) -> TPUConfig:
    """The kernels' configuration for these options (None: searched under VMEM_TARGET);
    x_dtype None: no x."""
    dtypes = (u_dtype,) if x_dtype is None else (u_dtype, x_dtype)
    sub, n = sublanes(*dtypes), -(-d // LANES)
    if block_d is None:       # all of d, or the multiple of `sub` tiles that pads d the least
        tiles = n if n <= MAX_TILES else min(range(sub, MAX_TILES + 1, sub),
                                             key=lambda t: (-(-n // t) * t, -t))
    else:
        if not _positive(block_d) or block_d % LANES:
            raise ValueError(f"block_d={block_d!r}; expected a positive multiple of {LANES}")
        tiles = min(block_d // LANES, n)
        if tiles < n and tiles % sub:
            raise ValueError(f"block_d={block_d}; expected a multiple of {sub * LANES} "
                             f"({sub} x {LANES} tiles for these dtypes) or at least d={d}")
    if block_b is None:       # the largest divisor of the batch within SLAB elements a step
        row = -(-tiles // sub) * sub * LANES          # a row's elements in whole tiles
        block_b = max(q for q in range(1, batch + 1)
                      if batch % q == 0 and (q == 1 or q * row <= SLAB))
    elif not _positive(block_b):
        raise ValueError(f"block_b={block_b!r}; expected a positive integer")
    make = lambda T: TPUConfig(k, x_dtype is not None, has_m, bool(reverse), int(block_b), tiles, T,
                             -(-length // T), interpret)
    if chunk is None:         # the most steps under VMEM_TARGET, a divisor of L if one is near
        fits = [T for T in range(1, min(MAX_CHUNK, length) + 1)
                if vmem_bytes(make(T), u_dtype, x_dtype) <= VMEM_TARGET] or [1]
        near = [T for T in fits if length % T == 0 and 2 * T >= fits[-1]]
        chunk = (near or fits)[-1]
    elif not _positive(chunk):
        raise ValueError(f"chunk={chunk!r}; expected a positive integer")
    cfg = make(min(int(chunk), length))
    used = vmem_bytes(cfg, u_dtype, x_dtype)
    if used > VMEM_LIMIT:
        raise ValueError(f"block_b={cfg.block_b}, block_d={cfg.tiles * LANES}, chunk={cfg.chunk}"
                         f" need {used / 2**20:.1f} MiB of VMEM, more than the "
                         f"{VMEM_LIMIT / 2**20:.0f} MiB allowed; use a smaller chunk or block")
    return cfg


def _positive(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1


def default_tpu_options(batch: int, length: int, d: int, k: int = 3, has_x: bool = True,
                        has_m: bool = False, dtype=jnp.float32) -> TPUKernelOptions:
    """The options used when none are given (see `tpu_config`):

      block_d  all of d (rounded up to 128) up to 4096 columns, else the multiple of 8 x 128
               (16 x 128 for bfloat16) up to 4096 that pads d the least: columns fill vregs;
      block_b  the largest divisor of the batch with block_b x block_d <= SLAB = 8192 elements
               (block_d / 128 rounded up to whole tiles: 8 float32 vregs per array and step;
               the step's arithmetic on independent vregs hides the latency of its sequential
               chain, while the loop carries stay near the 64 vector registers), which leaves
               several programs on the parallel axes;
      chunk    the most steps (up to 128) whose blocks fit VMEM_TARGET = 6 MiB, preferring a
               divisor of L within a factor 2 (no time padding): each grid step costs about
               0.35 us of pipeline overhead, so a chunk should move megabytes.

    Starting points from these counts, not measurements: no TPU has run them yet.
    """
    cfg = tpu_config(batch, length, d, k, has_m, False, dtype, dtype if has_x else None, False,
                  None, None, None)
    return TPUKernelOptions(cfg.block_b, cfg.tiles * LANES, cfg.chunk)
