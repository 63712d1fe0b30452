"""Translating with a trained encoder-decoder: sentences in, sentences out.

    hyps = translate_ids(model, params, rest, sources, config)    [n] id arrays (no EOS)
    (main.py --mode=translate: srupp_jax.programs.modes.translate_file)

Sources are batched by length (`data.batches.eval_batches`, every sentence once, the order
restored), the encoder runs once per batch, and the decoder searches with `config.decode`:
beam_size (1: greedy), length_penalty, and at most max_len_a * n + max_len_b target subwords
for a source of n (`srupp_jax.inference.decode`). Evaluation mode, no dropout.
"""
from __future__ import annotations

from typing import List

import numpy as np

from srupp_jax.data.batches import eval_batches
from srupp_jax.data.subwords import EOS_ID, PAD_ID
from srupp_jax.data.translation_data import Ragged
from srupp_jax.inference import decode
from srupp_jax.training import progress


def translate_ids(model, sources: Ragged, config, *, desc: str = "") -> List[np.ndarray]:
    """The best hypothesis of every source (Ragged BPE ids without EOS) by `model` (an
    encoder-decoder with its trained parameters): [n_i] int32 id arrays without EOS or
    padding, in the sources' order. desc: a progress bar of that name (progress.bar; "":
    lines only when it is slow). Each search is bounded by the length rule (decode)."""
    d = config.decode
    search = (lambda src: decode.greedy(model, src, max_len_a=d.max_len_a,
                                        max_len_b=d.max_len_b)) if d.beam_size == 1 else (
        lambda src: decode.beam_search(model, src, beam_size=d.beam_size,
                                       length_penalty=d.length_penalty,
                                       max_len_a=d.max_len_a, max_len_b=d.max_len_b))
    out: List[np.ndarray] = [np.zeros(0, np.int32)] * len(sources)
    batches = eval_batches(sources, None, config.eval.batch_tokens, max_len=config.train.max_len)
    for batch in progress.bar(batches, desc, total=len(batches), unit="batch",
                              phase="eval.batch"):
        tokens = np.asarray(search(batch.src)[0])
        for row, i in zip(tokens, batch.index):
            if i >= 0:
                end = np.flatnonzero(row == EOS_ID)
                row = row[:end[0]] if len(end) else row
                out[i] = row[row != PAD_ID].astype(np.int32)
    return out


