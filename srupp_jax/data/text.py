"""Your own text as a dataset (`data.name = "text"`): a file or a folder of `.txt` files.

`read_source(path)` returns the bytes of a file, or of every `*.txt` file under a folder in
sorted relative-path order, each file ending with a newline. `build(path, valid_path,
test_path, unit)` tokenizes them:
  unit "byte": ids are bytes (vocab 256); a contiguous 90/5/5 split of the bytes unless separate
               valid and test files are given.
  unit "word": whitespace words with `<eos>` after each line (WordVocab, vocabulary of the train
               part, min_count 1); the 90/5/5 split cuts between lines.
`fingerprint(...)` hashes the files' contents (sha256) and is the token cache key, so an edited
file is never served from an old cache.
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List

from srupp_jax.data import corpus
from srupp_jax.data.vocab import ByteVocab, WordVocab

UNITS = ("byte", "word")


def source_files(path: str) -> List[str]:
    """[path] for a file; the `*.txt` files under a folder, sorted; FileNotFoundError if none."""
    path = os.path.expanduser(os.fspath(path))
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(path)
                       for f in names if f.endswith(".txt"))
        if files:
            return files
        raise FileNotFoundError(f"data.path={path!r} is a folder without .txt files; give a "
                                "text file or a folder of .txt files")
    raise FileNotFoundError(f"data.path={path!r} does not exist; give a text file or a folder "
                            "of .txt files")


def read_source(path: str) -> bytes:
    """The bytes of `path` (a file, or a folder's .txt files joined, each ending in '\\n')."""
    files = source_files(path)
    if len(files) == 1:
        with open(files[0], "rb") as f:
            return f.read()
    parts = []
    for name in files:
        with open(name, "rb") as f:
            data = f.read()
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(parts)


def _check(path: str, valid_path: str, test_path: str, unit: str) -> None:
    if not path:
        raise ValueError("data.path is empty; set --config.data.path=FILE_OR_FOLDER")
    if bool(valid_path) != bool(test_path):
        raise ValueError(f"data.valid_path={valid_path!r}, data.test_path={test_path!r}; give "
                         "both (separate valid and test files) or neither (a 90/5/5 split)")
    if unit not in UNITS:
        raise ValueError(f"data.unit={unit!r}; expected 'byte' or 'word'")


def fingerprint(path: str, valid_path: str = "", test_path: str = "",
                unit: str = "byte") -> Dict[str, str]:
    """sha256 of each part's bytes (train source, valid, test) and the unit."""
    _check(path, valid_path, test_path, unit)
    parts = dict(source=path, valid=valid_path, test=test_path)
    return dict(unit=unit, **{k: hashlib.sha256(read_source(p)).hexdigest()
                              for k, p in parts.items() if p})


def _split_lines(text: bytes):
    lines = text.decode("utf-8", errors="replace").splitlines()
    tr, va, te = corpus.split_contiguous(lines)
    return list(tr), list(va), list(te)


def build(path: str, valid_path: str = "", test_path: str = "", unit: str = "byte"):
    """({train, valid, test: [N] int32 ids}, vocab) of the text (see the module docstring)."""
    _check(path, valid_path, test_path, unit)
    source = read_source(path)
    if unit == "byte":
        vocab = ByteVocab()
        if valid_path:
            parts = (source, read_source(valid_path), read_source(test_path))
        else:
            parts = corpus.split_contiguous(source)
        return dict(zip(("train", "valid", "test"), map(vocab.encode, parts))), vocab
    if valid_path:
        parts = [read_source(p).decode("utf-8", errors="replace").splitlines()
                 for p in (path, valid_path, test_path)]
    else:
        parts = _split_lines(source)
    vocab = WordVocab.build(parts[0])
    return dict(zip(("train", "valid", "test"), (vocab.encode(p) for p in parts))), vocab
