"""Your own parallel text (`data.name = "parallel"`): a folder in the Moses / fairseq layout.

  data.path/train.SRC  train.TGT      one sentence a line, line i of both files is one pair
  data.path/valid.SRC  valid.TGT      optional (both or neither)
  data.path/test.SRC   test.TGT       optional (both or neither)

with SRC, TGT = `data.src`, `data.tgt` (e.g. "de", "en"). Files are UTF-8; a final newline is
optional, a "\\r" before it (Windows line ends) is dropped, and lines split only at "\\n" (not at
the other characters `str.splitlines` splits at, such as U+2028). A split without files is cut
from train (`held_out`): `HELD_FRACTION` = 2% of the train pairs, at least 1 and at most
`HELD_MAX` = 3,000, chosen by a fixed permutation (numpy's legacy RandomState(0), whose stream
is stable across numpy versions) and kept in file order; train keeps the rest, in order.

Bad input stops with one line naming the file and the fix: a folder that does not exist or has
no train files, one side of a split without the other, line counts that differ, an empty side of
a pair (line number), bytes that are not UTF-8 (byte offset).
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Tuple

import numpy as np

SPLITS = ("train", "valid", "test")
HELD_FRACTION = 0.02
HELD_MAX = 3000
Pairs = Tuple[List[str], List[str]]


def split_files(path: str, src: str, tgt: str) -> Dict[str, Tuple[str, str]]:
    """{split: (source file, target file)} of the splits that have files (train always)."""
    if not src or not tgt or src == tgt:
        raise ValueError(f"data.src={src!r}, data.tgt={tgt!r}; give the two file suffixes of "
                         "the language pair, e.g. --config.data.src=de --config.data.tgt=en")
    path = os.path.expanduser(os.fspath(path or ""))
    if not path:
        raise ValueError("data.path is empty; set --config.data.path=FOLDER holding "
                         f"train.{src} and train.{tgt}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"data.path={path!r} is not a folder; give a folder holding "
                                f"train.{src} and train.{tgt} (and optionally valid.*, test.*)")
    out = {}
    for split in SPLITS:
        files = [os.path.join(path, f"{split}.{lang}") for lang in (src, tgt)]
        present = [os.path.isfile(f) for f in files]
        if all(present):
            out[split] = (files[0], files[1])
        elif any(present):
            have, miss = (files[0], files[1]) if present[0] else (files[1], files[0])
            raise FileNotFoundError(f"{have} exists but {miss} does not: add {miss}, or remove "
                                    f"{os.path.basename(have)}" + (
                                        "" if split == "train" else
                                        f" (then {split} is split from train)"))
    if "train" not in out:
        listing = sorted(os.listdir(path))
        raise FileNotFoundError(
            f"data.path={path!r} holds no train.{src} and train.{tgt} "
            f"({'it is empty' if not listing else 'it holds ' + ', '.join(listing[:6])}); "
            f"expected {{train,valid,test}}.{{{src},{tgt}}}, one sentence a line")
    return out


def read_lines(file: str) -> List[str]:
    """The lines of a UTF-8 text file (see the module docstring for the line rules)."""
    with open(file, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{file}: the bytes at offset {e.start} are not UTF-8 ({e.reason}); "
                         "convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)") from None
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n") if text else []
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_pairs(src_file: str, tgt_file: str) -> Pairs:
    """(source lines, target lines) of one split, checked: equal counts, no empty side."""
    src, tgt = read_lines(src_file), read_lines(tgt_file)
    if len(src) != len(tgt):
        raise ValueError(f"{src_file} has {len(src)} lines but {tgt_file} has {len(tgt)}: line "
                         "i of both files is one pair, so fix the files to equal line counts")
    for i, (s, t) in enumerate(zip(src, tgt)):
        if not s.strip() or not t.strip():
            empty = src_file if not s.strip() else tgt_file
            raise ValueError(f"{empty} line {i + 1} is empty: every pair needs both sides; "
                             "remove that line from both files or fill it in")
    if not src:
        raise ValueError(f"{src_file} and {tgt_file} are empty; give at least one pair")
    return src, tgt


def held_out(n: int, count: int, seed: int = 0, *, fraction: float = HELD_FRACTION,
             maximum: int = HELD_MAX, what: str = "train pairs",
             files: str = "valid.* and test.* files") -> List[np.ndarray]:
    """`count` disjoint sorted index sets of size k = clip(fraction of n, 1, maximum) from
    range(n), by a fixed permutation; ValueError naming `what` and `files` when n is too
    small."""
    k = int(min(maximum, max(1, round(fraction * n))))
    if n < count * k + 1:
        raise ValueError(f"only {n} {what}: too few to split off {count} held-out set(s) "
                         f"of {k}; add {files} or more examples")
    perm = np.random.RandomState(seed).permutation(n)
    return [np.sort(perm[j * k:(j + 1) * k]) for j in range(count)]


def load_folder(path: str, src: str, tgt: str) -> Tuple[Dict[str, Pairs], Dict]:
    """({split: (source lines, target lines)} for train, valid, test; info).

    info: files (sha256 of every file read) and held_out (the splits cut from train)."""
    files = split_files(path, src, tgt)
    pairs = {split: read_pairs(*f) for split, f in files.items()}
    missing = [s for s in SPLITS if s not in pairs]
    if missing:
        train_src, train_tgt = pairs["train"]
        sets = held_out(len(train_src), len(missing))
        for split, idx in zip(missing, sets):
            pairs[split] = ([train_src[i] for i in idx], [train_tgt[i] for i in idx])
        keep = np.ones(len(train_src), bool)
        keep[np.concatenate(sets)] = False
        pairs["train"] = ([s for s, k in zip(train_src, keep) if k],
                          [t for t, k in zip(train_tgt, keep) if k])
    info = dict(files=fingerprint(files), held_out=missing)
    return {s: pairs[s] for s in SPLITS}, info


def fingerprint(files: Dict[str, Tuple[str, str]]) -> Dict[str, str]:
    """{file name: sha256 of its bytes}: the cache key, so an edited file is never served from
    an old cache."""
    out = {}
    for pair in files.values():
        for file in pair:
            with open(file, "rb") as f:
                out[os.path.basename(file)] = hashlib.sha256(f.read()).hexdigest()
    return out
