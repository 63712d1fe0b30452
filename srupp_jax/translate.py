"""Translating with a trained encoder-decoder: sentences in, sentences out.

    hyps = translate_ids(model, params, rest, sources, config)    [n] id arrays (no EOS)
    translate_file(config, workdir, "in.de", "out.en")             main.py --mode=translate

Sources are batched by length (`data.batches.eval_batches`, every sentence once, the order
restored), the encoder runs once per batch, and the decoder searches with `config.decode`:
beam_size (1: greedy), length_penalty, and at most max_len_a * n + max_len_b target subwords
for a source of n (`srupp_jax.decode`). Evaluation mode, no dropout.
"""
from __future__ import annotations

import sys
from typing import List, Sequence

import numpy as np
from flax import nnx

from srupp_jax import decode, progress
from srupp_jax.data.batches import eval_batches
from srupp_jax.data.subwords import EOS_ID, PAD_ID
from srupp_jax.data.translation_data import Ragged


def translate_ids(model, sources: Ragged, config, *, desc: str = "") -> List[np.ndarray]:
    """The best hypothesis of every source (Ragged BPE ids without EOS) by `model` (an
    encoder-decoder with its trained parameters): [n_i] int32 id arrays without EOS or
    padding, in the sources' order. desc: a progress bar of that name (progress.bar)."""
    d = config.decode
    search = (lambda src: decode.greedy(model, src, max_len_a=d.max_len_a,
                                        max_len_b=d.max_len_b)) if d.beam_size == 1 else (
        lambda src: decode.beam_search(model, src, beam_size=d.beam_size,
                                       length_penalty=d.length_penalty,
                                       max_len_a=d.max_len_a, max_len_b=d.max_len_b))
    out: List[np.ndarray] = [np.zeros(0, np.int32)] * len(sources)
    batches = eval_batches(sources, None, config.eval.batch_tokens, max_len=config.train.max_len)
    for batch in progress.bar(batches, desc, unit="batch") if desc else batches:
        tokens = np.asarray(search(batch.src)[0])
        for row, i in zip(tokens, batch.index):
            if i >= 0:
                end = np.flatnonzero(row == EOS_ID)
                row = row[:end[0]] if len(end) else row
                out[i] = row[row != PAD_ID].astype(np.int32)
    return out


def read_lines(path: str) -> List[str]:
    """The lines of `path` ("-": stdin) without their newlines; ValueError naming the file
    and the byte offset when it is not UTF-8."""
    if path == "-":
        data, name = sys.stdin.buffer.read(), "stdin"
    else:
        with open(path, "rb") as f:
            data, name = f.read(), path
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv "
                         "-t utf-8") from None
    return text.splitlines()


def write_lines(path: str, lines: Sequence[str]) -> None:
    """`lines` to `path` ("-": stdout), one a line."""
    text = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def translate_file(config, workdir: str, input_path: str = "-", output_path: str = "-") -> int:
    """Restore the best checkpoint of `workdir` and translate `input_path` (one sentence a
    line, the source language; "-": stdin) to `output_path` ("-": stdout). Returns the number
    of sentences. Empty lines stay empty."""
    from srupp_jax import inference

    task = inference.prepared(config)
    model, params, rest, _ = inference.restore(task, workdir)
    nnx.update(model, params, rest)
    words = task.data.subwords
    lines = read_lines(input_path)
    sources = Ragged.from_rows(words.encode(lines, words.src_lang))
    hyps = translate_ids(model, sources, task.config)
    write_lines(output_path, [out if line.strip() else ""
                              for line, out in zip(lines, words.detokenize(hyps))])
    return len(lines)
