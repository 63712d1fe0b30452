"""Contiguous language-model streams (Transformer-XL style), as the paper and the reference train.

A 1-D token array of length N is cut into B_total = batch_size * num_processes contiguous
streams of L = (N - 1) // B_total positions each. Global stream g reads inputs
tokens[g*L : (g+1)*L] and targets tokens[g*L + 1 : (g+1)*L + 1] (the token after each input), so
consecutive streams share one boundary token and, over all streams, every token after the first
is a target exactly once, except the (N - 1) - B_total*L < B_total tail tokens (`dropped_tokens`),
which training never sees and evaluation predicts as a continuation of the last stream.

Process p owns global streams p*B ... (p+1)*B - 1 and only ever slices those, so every host reads
only its own part of the array (which may be a `np.memmap`).

Training step s reads positions [(s mod steps_per_epoch) * M, +M) of every stream; the last
partial chunk of a stream is dropped, and after steps_per_epoch steps the streams wrap around.
`batch(step)` is a pure function of (step, process_index), so resuming at any step reproduces
the data exactly. The recurrent state and attention memory carry from step s to step s + 1
(reset them at epoch boundaries, where the stream jumps back to its start, if exactness matters).

`eval_batches(M)` walks all L positions in order with a final shorter chunk, then the tail, so
that every token after the first is predicted exactly once: exact BPC/PPL for any batch size.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np


class Streams:
    """B contiguous token streams of one process.

    Args:
      tokens: [N] integer token ids (np.ndarray or np.memmap; not copied).
      batch_size: B, streams of this process (the global batch is B * num_processes).
      unroll: M, tokens per stream per training step.
      num_processes, process_index: this host's share of the global batch.

    Attributes:
      stream_length: L, positions (input/target pairs) per stream.
      steps_per_epoch: L // M training steps before the streams wrap around.
      num_tokens: B * L, targets of this process in its B streams.
      dropped_tokens: r = (N - 1) - B_total * L < B_total tail tokens after the last stream:
        never trained on; `eval_batches` predicts them, continuing the last stream.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, unroll: int,
                 num_processes: int = 1, process_index: int = 0):
        tokens = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be 1-D [N], got shape {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        for name, value in (("batch_size", batch_size), ("unroll", unroll),
                            ("num_processes", num_processes)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if int(process_index) != process_index or not 0 <= process_index < num_processes:
            raise ValueError(f"process_index must be in [0, num_processes={num_processes}), "
                             f"got process_index={process_index!r}")
        self.batch_size, self.unroll = int(batch_size), int(unroll)
        self.num_processes, self.process_index = int(num_processes), int(process_index)
        n = int(tokens.shape[0])
        b_total = self.batch_size * self.num_processes
        self.stream_length = (n - 1) // b_total if n > 0 else 0
        if self.stream_length < self.unroll:
            raise ValueError(
                f"too few tokens for one step: N={n} tokens give (N - 1) // (batch_size * "
                f"num_processes) = {self.stream_length} positions per stream with "
                f"batch_size B={batch_size}, num_processes={num_processes}, but unroll M={unroll} "
                f"needs N >= B * num_processes * M + 1 = {b_total * self.unroll + 1}")
        self.steps_per_epoch = self.stream_length // self.unroll
        self.num_tokens = self.batch_size * self.stream_length
        self.dropped_tokens = (n - 1) - b_total * self.stream_length
        start = self.process_index * self.batch_size * self.stream_length
        own = tokens[start:start + self.num_tokens + 1]  # a view: only this process's streams
        self._inputs = own[:-1].reshape(self.batch_size, self.stream_length)
        self._targets = own[1:].reshape(self.batch_size, self.stream_length)
        last = self.process_index == self.num_processes - 1   # owns the last global stream
        self._tail = tokens[b_total * self.stream_length:] if last else None

    def _chunk(self, start: int, length: int) -> Tuple[np.ndarray, np.ndarray]:
        sl = slice(start, start + length)
        return (np.asarray(self._inputs[:, sl], np.int32),
                np.asarray(self._targets[:, sl], np.int32))

    def batch(self, step: int) -> Tuple[np.ndarray, np.ndarray]:
        """(inputs [B, M] int32, targets [B, M] int32) of training step `step` (>= 0).

        Pure in (step, process_index): positions [(step mod steps_per_epoch) * M, +M).
        """
        if int(step) != step or step < 0:
            raise ValueError(f"step must be an integer >= 0, got step={step!r}")
        return self._chunk((int(step) % self.steps_per_epoch) * self.unroll, self.unroll)

    def epoch(self, step: int) -> int:
        """How many times the streams have wrapped around before training step `step`."""
        return int(step) // self.steps_per_epoch

    def eval_batches(self, unroll: Optional[int] = None
                     ) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every target once: (inputs [B, m] int32, targets [B, m] int32, weights [B, m]
        float32) over the L positions in order with m = `unroll` (default: the training
        unroll), the last chunk shorter when m does not divide L; then, when there are
        `dropped_tokens` r > 0, one [B, r] tail chunk that continues the last global stream
        (row B - 1 of the last process, weight 1) and is padding elsewhere (weight 0). Every
        process yields the same shapes, so sharded evaluation stays in step.

        Summed over processes, the weights count each of the N - 1 targets exactly once.
        """
        m = self.unroll if unroll is None else unroll
        if int(m) != m or m < 1:
            raise ValueError(f"unroll must be an integer >= 1, got unroll={unroll!r}")
        for start in range(0, self.stream_length, int(m)):
            inputs, targets = self._chunk(start, int(m))
            yield inputs, targets, np.ones(inputs.shape, np.float32)
        r = self.dropped_tokens
        if r:
            inputs, targets = (np.zeros((self.batch_size, r), np.int32) for _ in range(2))
            weights = np.zeros((self.batch_size, r), np.float32)
            if self._tail is not None:
                inputs[-1], targets[-1] = self._tail[:-1], self._tail[1:]
                weights[-1] = 1.0
            yield inputs, targets, weights

    def __len__(self) -> int:
        return self.steps_per_epoch
