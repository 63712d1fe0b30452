"""Batches of sentence pairs: by token count in length buckets, a pure function of the step.

A pair (source ids x, target ids y, without specials) becomes
  src     = x + [EOS]            padded with PAD to L       S = len(x) + 1 real positions
  tgt_in  = [BOS] + y            padded with PAD to L       (the decoder's inputs)
  tgt_out = y + [EOS]            padded with PAD to L       T = len(y) + 1 real positions
  weights = 1.0 on the T real target positions, 0.0 on padding and on filler rows
Real ids are never PAD (0), so the source padding mask is `src != pad_id`; `lengths` [B] gives
each row's S as well. Source-only data (classification: a text, no target) take `tgt=None`
(n = S below) and their own end and padding ids (`eos_id`, `pad_id`).

Buckets: a pair of length n = max(S, T) goes to the smallest bucket length L >= n
(`bucket_lengths(max_len)`: 8, 16, 24, 40, 64, 96, 144, 216, 256 for max_len 256, each about
1.5 times the last, multiples of 8, ending at max_len). Bucket L holds batches of
R_L = batch_tokens // L rows, rounded down to a multiple of `row_multiple` = lcm(num_devices,
num_processes) (at least one multiple, even if that exceeds batch_tokens), so every batch is
one of len(buckets) shapes [R_L, L] (src and tgt alike): jit compiles at most that many
programs for training (9 for max_len 256).

Training (`TrainBatches`): pairs with n > max_len are dropped (`dropped`, counted once).
Epoch e shuffles each bucket's pairs with numpy's legacy RandomState((seed, e)) (a stream that
is stable across numpy versions), cuts them into batches of R_L rows (a bucket's last batch is
filled up with weight-0 copies of its own rows), and shuffles the order of all batches of the
epoch. Their count, `steps_per_epoch`, is the same in every epoch, and step s is batch
s mod steps_per_epoch of epoch s // steps_per_epoch: `batch(step)` is a pure function of
(step, seed, the data), so a resumed run sees the same batches bit for bit. Every pair
(n <= max_len) is in exactly one batch with weight 1 per epoch. Process p of P builds only rows
[p R/P, (p+1) R/P) of each global batch (and reads only those pairs).

Evaluation (`eval_batches`): every sentence exactly once, sorted by length (the source's alone
when no targets are given), in the same bucket shapes; sentences longer than max_len are KEPT
(never truncated: a shortened source would score a translation of less than the reference) in
extra buckets whose lengths are multiples of max_len (a few more programs, only when such
sentences exist). `index` gives each row's position in the split (-1 for filler rows, which are
weight-0 copies of a real row), so hypotheses are written back in the original order.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from srupp_jax.data.subwords import BOS_ID, EOS_ID, PAD_ID


@dataclasses.dataclass
class Batch:
    """index: [B] int64 position of each row in its split (-1: filler row); src: [B, L] int32;
    tgt_in, tgt_out: [B, L] int32 and weights: [B, L] float32 (None for source-only batches);
    lengths: [B] int32 real source positions of each row (with EOS)."""
    index: np.ndarray
    src: np.ndarray
    tgt_in: Optional[np.ndarray] = None
    tgt_out: Optional[np.ndarray] = None
    weights: Optional[np.ndarray] = None
    lengths: Optional[np.ndarray] = None


def bucket_lengths(max_len: int, min_len: int = 8, growth: float = 1.5,
                   multiple: int = 8) -> Tuple[int, ...]:
    """Increasing bucket lengths from min_len to max_len (see the module docstring)."""
    if int(max_len) != max_len or max_len < 2:
        raise ValueError(f"max_len={max_len!r}; expected an integer >= 2")
    out = [min(min_len, max_len)]
    while out[-1] < max_len:
        out.append(min(max_len, int(math.ceil(out[-1] * growth / multiple)) * multiple))
    return tuple(out)


def _check(name: str, value, lo: int = 1) -> int:
    if int(value) != value or value < lo:
        raise ValueError(f"{name}={value!r}; expected an integer >= {lo}")
    return int(value)


def _rows(batch_tokens: int, length: int, multiple: int) -> int:
    return max(multiple, batch_tokens // length // multiple * multiple)


def _fill(idx: np.ndarray, rows: int) -> Tuple[np.ndarray, np.ndarray]:
    """(rows indices: idx then cyclic copies of it, [rows] bool real)."""
    real = np.zeros(rows, bool)
    real[:len(idx)] = True
    return np.resize(idx, rows), real


def make_batch(src, tgt, index: np.ndarray, real: np.ndarray, length: int,
               pad_id: int = PAD_ID, bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> Batch:
    """The arrays of rows `index` (positions in src/tgt; `real` False: weight-0 filler rows) at
    padded length `length`. src, tgt: Ragged (tgt None: a source-only batch). The module
    docstring gives the layout."""
    rows = len(index)
    src_arr = np.full((rows, length), pad_id, np.int32)
    lengths = np.array([len(src[i]) + 1 for i in index.tolist()], np.int32)
    with_tgt = tgt is not None
    if with_tgt:
        tgt_in = np.full((rows, length), pad_id, np.int32)
        tgt_out = np.full((rows, length), pad_id, np.int32)
        weights = np.zeros((rows, length), np.float32)
    for r, i in enumerate(index.tolist()):
        x = src[i]
        y = tgt[i] if with_tgt else x
        if max(len(x), len(y)) >= length:
            raise ValueError(f"pair {i} has {len(x)} source / {len(y)} target ids: too long "
                             f"for padded length {length} (with EOS)")
        src_arr[r, :len(x)] = x
        src_arr[r, len(x)] = eos_id
        if with_tgt:
            tgt_in[r, 0] = bos_id
            tgt_in[r, 1:len(y) + 1] = y
            tgt_out[r, :len(y)] = y
            tgt_out[r, len(y)] = eos_id
            weights[r, :len(y) + 1] = float(real[r])
    out_index = np.where(real, index, -1).astype(np.int64)
    if not with_tgt:
        return Batch(out_index, src_arr, lengths=lengths)
    return Batch(out_index, src_arr, tgt_in, tgt_out, weights, lengths)


class TrainBatches:
    """Training batches of one process (see the module docstring).

    Args:
      src, tgt: Ragged ids of the train split (translation_data.Ragged); tgt None: source-only
        rows (classification).
      batch_tokens: train.batch_tokens, padded positions per batch and side (rows * L).
      max_len: the longest pair kept (with its EOS); also the last bucket.
      buckets: bucket lengths (default bucket_lengths(max_len)).
      seed: the shuffle seed; num_devices: global devices (rows are a multiple of it);
      num_processes, process_index: this host's share of the rows.
      pad_id, eos_id: the padding and end ids of the rows (make_batch).

    Attributes: buckets, rows (per bucket), steps_per_epoch, num_pairs (kept), dropped.
    """

    def __init__(self, src, tgt, batch_tokens: int, *, max_len: int = 256,
                 buckets: Optional[Sequence[int]] = None, seed: int = 0, num_devices: int = 1,
                 num_processes: int = 1, process_index: int = 0, pad_id: int = PAD_ID,
                 eos_id: int = EOS_ID):
        self.batch_tokens = _check("train.batch_tokens", batch_tokens)
        self.max_len = _check("max_len", max_len, 2)
        self.num_processes = _check("num_processes", num_processes)
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index={process_index!r}; expected 0 <= process_index < "
                             f"num_processes={num_processes}")
        self.process_index, self.seed = int(process_index), int(seed)
        self.buckets = tuple(buckets) if buckets else bucket_lengths(self.max_len)
        if list(self.buckets) != sorted(set(self.buckets)) or self.buckets[-1] != self.max_len:
            raise ValueError(f"buckets={self.buckets!r}; expected increasing lengths ending at "
                             f"max_len={self.max_len}")
        multiple = math.lcm(_check("num_devices", num_devices), self.num_processes)
        self.src, self.tgt, self.ids = src, tgt, dict(pad_id=pad_id, eos_id=eos_id)
        n = (src.lengths if tgt is None else np.maximum(src.lengths, tgt.lengths)) + 1
        keep = n <= self.max_len
        self.dropped, self.num_pairs = int((~keep).sum()), int(keep.sum())
        if not self.num_pairs:
            raise ValueError(f"no train pair fits max_len={self.max_len} (with its EOS); raise "
                             "the maximum length")
        which = np.searchsorted(np.asarray(self.buckets), n)
        self.members = [np.nonzero(keep & (which == b))[0] for b in range(len(self.buckets))]
        self.rows = [_rows(self.batch_tokens, L, multiple) for L in self.buckets]
        self.steps_per_epoch = sum(-(-len(m) // r) for m, r in zip(self.members, self.rows))
        self._plan_epoch, self._plan = None, None

    def plan(self, epoch: int) -> List[Tuple[int, np.ndarray, np.ndarray]]:
        """[(bucket, [R] pair indices, [R] real)] of one epoch, in step order."""
        if self._plan_epoch != epoch:
            rng = np.random.RandomState([self.seed % (1 << 32), int(epoch) % (1 << 32)])
            batches = []
            for b, (members, rows) in enumerate(zip(self.members, self.rows)):
                perm = rng.permutation(members)
                for start in range(0, len(perm), rows):
                    batches.append((b, *_fill(perm[start:start + rows], rows)))
            order = rng.permutation(len(batches))
            self._plan_epoch, self._plan = epoch, [batches[i] for i in order]
        return self._plan

    def batch(self, step: int) -> Batch:
        """This process's rows of the global batch of training step `step` (>= 0)."""
        if int(step) != step or step < 0:
            raise ValueError(f"step must be an integer >= 0, got step={step!r}")
        epoch, j = divmod(int(step), self.steps_per_epoch)
        bucket, index, real = self.plan(epoch)[j]
        share = len(index) // self.num_processes
        own = slice(self.process_index * share, (self.process_index + 1) * share)
        return make_batch(self.src, self.tgt, index[own], real[own], self.buckets[bucket],
                          **self.ids)

    def epoch(self, step: int) -> int:
        return int(step) // self.steps_per_epoch

    def __len__(self) -> int:
        return self.steps_per_epoch


def eval_batches(src, tgt=None, batch_tokens: int = 4096, *, max_len: int = 256,
                 buckets: Optional[Sequence[int]] = None, num_devices: int = 1,
                 num_processes: int = 1, process_index: int = 0, pad_id: int = PAD_ID,
                 eos_id: int = EOS_ID) -> List[Batch]:
    """Every sentence of a split exactly once, sorted by length, in bucket shapes (module
    docstring). src, tgt: Ragged (tgt None: source-only batches for decoding). Returns this
    process's rows of each global batch; every process gets the same number of batches and
    shapes."""
    _check("batch_tokens", batch_tokens)
    _check("max_len", max_len, 2)
    buckets = list(buckets) if buckets else list(bucket_lengths(max_len))
    multiple = math.lcm(_check("num_devices", num_devices), _check("num_processes",
                                                                    num_processes))
    n = src.lengths + 1 if tgt is None else np.maximum(src.lengths, tgt.lengths) + 1
    if len(n) and n.max() > buckets[-1]:   # over-long: kept, in multiples of max_len
        top = int(-(-n.max() // max_len)) * max_len
        buckets += list(range(buckets[-1] + max_len, top + 1, max_len))
    which = np.searchsorted(np.asarray(buckets), n)
    out = []
    for b, length in enumerate(buckets):
        members = np.nonzero(which == b)[0]
        members = members[np.argsort(n[members], kind="stable")]
        rows = _rows(batch_tokens, length, multiple)
        share = rows // num_processes
        own = slice(process_index * share, (process_index + 1) * share)
        for start in range(0, len(members), rows):
            index, real = _fill(members[start:start + rows], rows)
            out.append(make_batch(src, tgt, index[own], real[own], length, pad_id=pad_id,
                                  eos_id=eos_id))
    return out
