"""Vocabularies: raw bytes (enwik8, default corpus) and whitespace words (WikiText-103, lm1b).

ByteVocab: ids are the byte values 0..255 (vocab_size 256). The reference (Transformer-XL /
SRU++ `prep_enwik8.py` pipeline) instead maps the set of bytes that occur in enwik8 to 0..n-1
(about 205 ids); the extra ids here are never targets, so BPC is the same measure; only the
embedding / softmax tables are slightly larger.

WordVocab (Transformer-XL convention): a line is `line.split()` (Python whitespace split) and
ends with the separator `<eos>` (`add_eos`); lm1b sentences also start with it (`add_bos`,
Transformer-XL's `add_double_eos`), so every sentence is `<eos> w1 ... wn <eos>`. The vocabulary
is built from the train split: counts include the added `<eos>` tokens, tokens with fewer than
`min_count` occurrences (or beyond `max_size`) are dropped and their occurrences counted as
`<unk>`; `<eos>` and `<unk>` are always kept. Order: count descending, then token ascending
(deterministic, frequent tokens first, as adaptive softmax cutoffs expect). Out-of-vocabulary
words encode to `<unk>` (WikiText-103 already contains `<unk>`).
"""
from __future__ import annotations

import array
import collections
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

EOS = "<eos>"
UNK = "<unk>"


def _as_ids(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} "
                         f"dtype {ids.dtype}")
    return ids


class ByteVocab:
    """Bytes as tokens: id = byte value, vocab_size 256."""

    vocab_size = 256
    unit = "byte"

    def __len__(self) -> int:
        return 256

    def encode(self, data: Union[bytes, bytearray, memoryview, str]) -> np.ndarray:
        """bytes (or str, encoded as UTF-8) -> [N] int32 ids."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        return np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int32)

    def decode_bytes(self, ids) -> bytes:
        ids = _as_ids(ids)
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError(f"byte ids must be in [0, 255], got range "
                             f"[{ids.min()}, {ids.max()}]")
        return ids.astype(np.uint8).tobytes()

    def decode(self, ids) -> str:
        """[N] ids -> text (UTF-8, invalid sequences replaced by U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class WordVocab:
    """Whitespace-token vocabulary; `tokens[i]` is the token of id i."""

    unit = "word"

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        for special in (EOS, UNK):
            if special not in tokens:
                raise ValueError(f"vocabulary must contain {special!r}")
        for t in tokens:
            if not t or t.split() != [t]:
                raise ValueError(f"vocabulary tokens must be non-empty without whitespace, "
                                 f"got {t!r}")
        self.tokens: List[str] = tokens
        self.index: Dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.eos_id = self.index[EOS]
        self.unk_id = self.index[UNK]

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, lines: Iterable[Union[str, bytes]], *, min_count: int = 1,
              max_size: Optional[int] = None, add_eos: bool = True,
              add_bos: bool = False) -> "WordVocab":
        """Vocabulary of the train `lines` (see the module docstring for the rules)."""
        if int(min_count) != min_count or min_count < 1:
            raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
        if max_size is not None and (int(max_size) != max_size or max_size < 2):
            raise ValueError(f"max_size must be None or an integer >= 2, got {max_size!r}")
        counts = collections.Counter()
        n_lines = 0
        for line in lines:
            if isinstance(line, (bytes, bytearray)):
                line = line.decode("utf-8")
            counts.update(line.split())
            n_lines += 1
        counts[EOS] += n_lines * (int(add_eos) + int(add_bos))
        counts[UNK] += 0
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept, dropped = [], 0
        for tok, c in order:
            if tok in (EOS, UNK) or c >= min_count:
                kept.append((tok, c))
            else:
                dropped += c
        if max_size is not None:
            body = [kv for kv in kept if kv[0] not in (EOS, UNK)]
            specials = [kv for kv in kept if kv[0] in (EOS, UNK)]
            n_body = max_size - len(specials)
            dropped += sum(c for _, c in body[n_body:])
            kept = body[:n_body] + specials
        kept = [(t, c + dropped) if t == UNK else (t, c) for t, c in kept]
        kept.sort(key=lambda kv: (-kv[1], kv[0]))
        return cls([t for t, _ in kept])

    def encode(self, lines: Union[str, bytes, Iterable[Union[str, bytes]]], *,
               add_eos: bool = True, add_bos: bool = False) -> np.ndarray:
        """Lines (one str, or an iterable of str/bytes) -> [N] int32 ids, one `<eos>` after each
        line (`add_eos`) and one before it (`add_bos`); unknown words -> `<unk>`."""
        if isinstance(lines, (str, bytes, bytearray)):
            lines = [lines]
        get, unk, eos = self.index.get, self.unk_id, self.eos_id
        out = array.array("i")
        for line in lines:
            if isinstance(line, (bytes, bytearray)):
                line = line.decode("utf-8")
            if add_bos:
                out.append(eos)
            out.extend([get(w, unk) for w in line.split()])
            if add_eos:
                out.append(eos)
        return np.frombuffer(out, dtype=np.int32).copy() if len(out) else np.zeros(0, np.int32)

    def decode(self, ids) -> str:
        """[N] ids -> tokens joined by single spaces (`<eos>` kept as a token)."""
        ids = _as_ids(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.tokens)):
            raise ValueError(f"ids must be in [0, {len(self.tokens)}), got range "
                             f"[{ids.min()}, {ids.max()}]")
        return " ".join(self.tokens[i] for i in ids.tolist())

    def save(self, path) -> None:
        """One token per line, UTF-8, in id order."""
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for t in self.tokens:
                f.write(t + "\n")

    @classmethod
    def load(cls, path) -> "WordVocab":
        with open(path, "r", encoding="utf-8", newline="\n") as f:
            return cls([line.rstrip("\n") for line in f])
