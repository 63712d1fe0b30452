"""Your own text as a dataset (`data.name = "text"`): a file or a folder of `.txt` files.

`read_source(path)` returns the bytes of a file, or of every `*.txt` file under a folder in
sorted relative-path order, each file ending with a newline. `build(path, valid_path,
test_path, unit)` tokenizes them:
  unit "byte": ids are bytes (vocab 256); a contiguous 90/5/5 split of the bytes unless separate
               valid and test files are given.
  unit "word": whitespace words with `<eos>` after each line (WordVocab.build: the official
               "counts" rule over the train part, `<unk>` added last when train lacks it, for
               the words of valid and test that train does not have); the 90/5/5 split cuts
               between lines.
`fingerprint(...)` hashes the files' contents (sha256) and is the token cache key, so an edited
file is never served from an old cache; it reads the files on every load, so it is also where a
file with NUL bytes (a binary file?) gets its one warning line.

Tokenizing words of a LARGE text says how far it has got (a line at every tenth of each pass,
and at least every 30 s off a terminal). Errors name the file: an empty file (or folder of
empty files) and its size, and, for words, bytes that are not UTF-8 with the file and the
offset.
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, List, Tuple

from absl import logging

from srupp_jax import phases
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


def read_files(path: str, key: str = "data.path") -> List[Tuple[str, bytes]]:
    """[(file, its bytes)] of `path` (source_files); ValueError naming `key` when they hold
    no bytes at all."""
    files = []
    for name in source_files(path):
        with open(name, "rb") as f:
            files.append((name, f.read()))
    if not any(data for _, data in files):
        what = "is empty" if os.path.isfile(os.path.expanduser(path)) else (
            f"holds only empty .txt files ({len(files)})")
        raise ValueError(f"{key}={path!r} {what} (0 bytes); give a file with some text")
    return files


def _joined(files: List[Tuple[str, bytes]]) -> bytes:
    if len(files) == 1:
        return files[0][1]
    return b"".join(data if data.endswith(b"\n") else data + b"\n" for _, data in files)


def read_source(path: str, key: str = "data.path") -> bytes:
    """The bytes of `path` (a file, or a folder's .txt files joined, each ending in '\\n')."""
    return _joined(read_files(path, key))


def read_text(path: str, key: str = "data.path") -> str:
    """read_source as UTF-8 text; ValueError naming the file and the byte offset of the first
    byte that is not UTF-8."""
    files = read_files(path, key)
    for name, data in files:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{name} is not UTF-8 text (byte {e.start:,} of {len(data):,}): "
                "data.unit='word' reads UTF-8; convert it (e.g. iconv -t utf-8) or train on its "
                "bytes with --config.data.unit=byte") from None
    return _joined(files).decode("utf-8")


def source_size(path: str) -> int:
    """Bytes in `path` (a file, or a folder's .txt files)."""
    return sum(os.path.getsize(name) for name in source_files(path))


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
    parts = dict(source=("data.path", path), valid=("data.valid_path", valid_path),
                 test=("data.test_path", test_path))
    out, binary = dict(unit=unit), []
    for part, (key, p) in parts.items():
        if p:
            files = read_files(p, key)
            binary += [name for name, data in files if b"\0" in data]
            out[part] = hashlib.sha256(_joined(files)).hexdigest()
    if binary:
        more = f" and {len(binary) - 3} more files" if len(binary) > 3 else ""
        logging.warning("%s%s: NUL bytes (a binary file?); training on its %ss as they are",
                        ", ".join(binary[:3]), more, unit)
    return out


def _split_lines(text: str):
    tr, va, te = corpus.split_contiguous(text.splitlines())
    return list(tr), list(va), list(te)


LARGE = 1_000_000      # characters (bytes) from which tokenizing says what it does


def _shown(lines: List[str], what: str):
    """`lines`, with progress lines (srupp_jax.phases.progress) in millions of characters when
    they are LARGE."""
    total = sum(len(line) + 1 for line in lines)
    if total < LARGE:
        return lines
    return phases.progress(lines, what, total=total / 1e6, unit="M chars",
                           phase="data.tokenize", size=lambda line: (len(line) + 1) / 1e6)


def build(path: str, valid_path: str = "", test_path: str = "", unit: str = "byte"):
    """({train, valid, test: [N] int32 ids}, vocab) of the text (see the module docstring).
    Words show how far counting and encoding have got (progress lines)."""
    _check(path, valid_path, test_path, unit)
    if unit == "byte":
        vocab = ByteVocab()
        source = read_source(path)
        if valid_path:
            parts = (source, read_source(valid_path, "data.valid_path"),
                     read_source(test_path, "data.test_path"))
        else:
            parts = corpus.split_contiguous(source)
        return dict(zip(("train", "valid", "test"), map(vocab.encode, parts))), vocab
    if valid_path:
        parts = [read_text(p, key).splitlines() for p, key in (
            (path, "data.path"), (valid_path, "data.valid_path"), (test_path, "data.test_path"))]
    else:
        parts = _split_lines(read_text(path))
    vocab = WordVocab.build(_shown(parts[0], f"words of {path}: counting"), add_unk=True)
    encoded = [vocab.encode(_shown(p, f"words of {path}: encoding {split}"))
               for p, split in zip(parts, ("train", "valid", "test"))]
    return dict(zip(("train", "valid", "test"), encoded)), vocab
