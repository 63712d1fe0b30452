"""Vocabularies: bytes and whitespace words, by the rules of the official SRU++ experiments
(asappresearch/sru `experiments/srupp_experiments/`), so that our runs and the released models
give the same text the same ids and their numbers compare.

Each vocabulary has a `rule` and a `fingerprint` (sha256 of the rule and the symbols in id
order) that the prepared data and every run's config.json record (`data.vocab_rule`,
`data.vocab_sha256`): a model never meets ids of another order (tasks/lm.py refuses it).

  "bytes"        ByteVocab(): id = byte value, 256 ids (the default corpus, your own text).
  "byte_values"  ByteVocab.of_bytes(data): the distinct byte values of the whole file, sorted
                 (`np.unique`), id = rank (enwik8: 205 ids over train, valid and test).
  "counts"       WordVocab.build(train lines): `<eos>` is id 0; then every train word by count,
                 descending, ties in order of first occurrence (`Counter.most_common`); a line
                 is `line.split()` (no lower-casing) and `<eos>` is not counted (WikiText-103:
                 267,735 ids, its `<unk>` an ordinary word). With add_unk (your own text) an
                 `<unk>` absent from train is added last, for the words of valid and test that
                 train lacks.
  "file"         WordVocab.from_file(path): id = line index of the first field of each line of
                 a vocabulary file (Billion Word's 1b_word_vocab.txt: `<S>` the separator,
                 `<UNK>` the unknown word; 793,471 ids).

Encoding words: each line's words then the separator (`add_eos`); a word the vocabulary lacks
is its unknown word, or a ValueError naming it when it has none.
"""
from __future__ import annotations

import array
import collections
import hashlib
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

EOS = "<eos>"
UNK = "<unk>"
RULES = ("bytes", "byte_values", "counts", "file")


def _as_ids(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} "
                         f"dtype {ids.dtype}")
    return ids


def _fingerprint(rule: str, payload: bytes) -> str:
    return hashlib.sha256(rule.encode() + b"\0" + payload).hexdigest()[:16]


class ByteVocab:
    """Bytes as tokens: `symbols` [n] uint8, the byte value of each id (sorted, distinct);
    None: all 256 (id = byte value, rule "bytes"), else rule "byte_values"."""

    unit = "byte"

    def __init__(self, symbols: Optional[Sequence[int]] = None):
        full = symbols is None
        symbols = np.arange(256) if full else np.asarray(symbols)
        if (symbols.ndim != 1 or not symbols.size or np.any(np.diff(symbols) <= 0)
                or symbols.min() < 0 or symbols.max() > 255):
            raise ValueError("byte vocabulary symbols must be distinct byte values in "
                             f"increasing order, got {symbols[:8].tolist()}...")
        self.symbols = symbols.astype(np.uint8)
        self.rule = "bytes" if full else "byte_values"
        self._ids = np.full(256, -1, np.int32)
        self._ids[self.symbols] = np.arange(len(self.symbols), dtype=np.int32)
        self.fingerprint = _fingerprint(self.rule, self.symbols.tobytes())

    @classmethod
    def of_bytes(cls, data: bytes) -> "ByteVocab":
        """The official enwik8 rule: the distinct byte values of `data`, sorted."""
        return cls(np.unique(np.frombuffer(bytes(data), np.uint8)))

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, data: Union[bytes, bytearray, memoryview, str]) -> np.ndarray:
        """bytes (or str, encoded as UTF-8) -> [N] int32 ids; ValueError for a byte value
        the vocabulary lacks."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        ids = self._ids[np.frombuffer(bytes(data), dtype=np.uint8)]
        if ids.size and ids.min() < 0:
            bad = np.frombuffer(bytes(data), np.uint8)[np.argmin(ids)]
            raise ValueError(f"byte 0x{bad:02x} is not in this vocabulary of {self.vocab_size} "
                             "byte values (the data's); leave it out of the text")
        return ids

    def decode_bytes(self, ids) -> bytes:
        ids = _as_ids(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"byte ids must be in [0, {self.vocab_size - 1}], got range "
                             f"[{ids.min()}, {ids.max()}]")
        return self.symbols[ids].tobytes()

    def decode(self, ids) -> str:
        """[N] ids -> text (UTF-8, invalid sequences replaced by U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class WordVocab:
    """Whitespace-token vocabulary; `tokens[i]` is the token of id i, `eos` the separator after
    each line, `unk` the unknown word (None: none, unknown words are an error)."""

    unit = "word"

    def __init__(self, tokens: Sequence[str], *, rule: str = "counts", eos: str = EOS,
                 unk: Optional[str] = UNK):
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        for special in (eos, unk):
            if special is not None and special not in tokens:
                raise ValueError(f"vocabulary must contain {special!r}")
        for t in tokens:
            if not t or t.split() != [t]:
                raise ValueError(f"vocabulary tokens must be non-empty without whitespace, "
                                 f"got {t!r}")
        if rule not in RULES:
            raise ValueError(f"rule={rule!r}; expected one of {RULES}")
        self.tokens: List[str] = tokens
        self.index: Dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self.rule, self.eos, self.unk = rule, eos, unk
        self.eos_id = self.index[eos]
        self.unk_id = None if unk is None else self.index[unk]
        self.fingerprint = _fingerprint(rule, "\n".join(tokens).encode("utf-8"))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, lines: Iterable[Union[str, bytes]], *, add_unk: bool = False) -> "WordVocab":
        """The "counts" rule (module docstring) over the train `lines`."""
        counts = collections.Counter()
        for line in lines:
            if isinstance(line, (bytes, bytearray)):
                line = line.decode("utf-8")
            counts.update(line.split())
        counts.pop(EOS, None)           # the reference adds it first, never as a counted word
        tokens = [EOS] + [w for w, _ in counts.most_common()]
        has_unk = UNK in counts or add_unk
        if add_unk and UNK not in counts:
            tokens.append(UNK)
        return cls(tokens, rule="counts", unk=UNK if has_unk else None)

    @classmethod
    def from_file(cls, path, *, eos: str = "<S>", unk: str = "<UNK>") -> "WordVocab":
        """The "file" rule: the first field of each non-empty line, in order (Billion Word's
        1b_word_vocab.txt, lines `word count`; `<S>` separates sentences)."""
        with open(path, "r", encoding="utf-8") as f:
            words = [line.split()[0] for line in f if line.strip()]
        return cls(list(dict.fromkeys(words)), rule="file", eos=eos, unk=unk)

    def encode(self, lines: Union[str, bytes, Iterable[Union[str, bytes]]], *,
               add_eos: bool = True) -> np.ndarray:
        """Lines (one str, or an iterable of str/bytes) -> [N] int32 ids, the separator after
        each line (`add_eos`); unknown words -> the unknown word (ValueError without one)."""
        if isinstance(lines, (str, bytes, bytearray)):
            lines = [lines]
        index, eos, unk = self.index, self.eos_id, self.unk_id
        out = array.array("i")
        for line in lines:
            if isinstance(line, (bytes, bytearray)):
                line = line.decode("utf-8")
            words = line.split()
            try:
                out.extend([index[w] for w in words])
            except KeyError:
                if unk is None:
                    bad = next(w for w in words if w not in index)
                    raise ValueError(f"the word {bad!r} is not in the vocabulary, which has no "
                                     "unknown word; leave it out") from None
                out.extend([index.get(w, unk) for w in words])
            if add_eos:
                out.append(eos)
        return np.frombuffer(out, dtype=np.int32).copy() if len(out) else np.zeros(0, np.int32)

    def decode(self, ids) -> str:
        """[N] ids -> tokens joined by single spaces (the separator kept as a token)."""
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
    def load(cls, path, **kw) -> "WordVocab":
        """A vocabulary `save` wrote; `kw`: its rule, eos and unk."""
        with open(path, "r", encoding="utf-8", newline="\n") as f:
            return cls([line.rstrip("\n") for line in f], **kw)
