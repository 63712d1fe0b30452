"""Embedded default corpus: the Python standard library's own source, present on any machine.

`embedded_corpus(max_bytes)` concatenates the `*.py` files under `sysconfig.get_paths()["stdlib"]`
in a FIXED order (sorted by relative POSIX path), each preceded by a one-line header
`# ==== <relative path> ====\\n` (the document separator), and cuts the result at `max_bytes`.
Excluded: `site-packages`/`dist-packages`, `test`/`tests` directories, `idlelib`, `lib2to3`,
`ensurepip`, `turtledemo`, `pydoc_data`, `__pycache__`, `config-*` build directories and hidden
directories. Only the files needed to reach `max_bytes` are read, so the default ~8 MB loads in
well under a second.

The text depends on the Python version (and the distribution's stdlib), so `info` records the
Python version and a sha256 fingerprint of the bytes: a run is reproducible on the same Python.
Tokens are bytes (vocabulary 256, see `vocab.ByteVocab`), and `split_contiguous` cuts
train/valid/test contiguously 90/5/5 like enwik8.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sysconfig
from typing import Dict, List, Tuple

DEFAULT_MAX_BYTES = 8_000_000
CORPUS_VERSION = 1  # bump when the file selection, order or separator changes
EXCLUDED_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "ensurepip",
    "turtledemo", "pydoc_data", "__pycache__",
})


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def _excluded(dirname: str) -> bool:
    return dirname in EXCLUDED_DIRS or dirname.startswith((".", "config-"))


def corpus_files(root: str | None = None) -> List[Tuple[str, str]]:
    """(relative POSIX path, absolute path) of every corpus file, in the fixed sorted order."""
    root = stdlib_dir() if root is None else root
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _excluded(d)]
        for f in filenames:
            if f.endswith(".py"):
                full = os.path.join(dirpath, f)
                out.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    out.sort()
    return out


def _header(rel: str) -> bytes:
    return f"# ==== {rel} ====\n".encode("utf-8")


def with_offsets() -> List[Tuple[str, str, int]]:
    """(relative path, absolute path, offset of its header in the full corpus) of every corpus
    file, in order: a file lies in `embedded_corpus(n)` iff its offset is below n."""
    out, offset = [], 0
    for rel, full in corpus_files():
        out.append((rel, full, offset))
        offset += len(_header(rel)) + os.path.getsize(full)
    return out


def _check_max_bytes(max_bytes) -> int:
    if max_bytes is None:
        return DEFAULT_MAX_BYTES
    if int(max_bytes) != max_bytes or max_bytes < 100:
        raise ValueError(f"max_bytes must be an integer >= 100, got max_bytes={max_bytes!r}")
    return int(max_bytes)


def corpus_key(max_bytes: int | None = None) -> str:
    """Cheap cache key (no file is read): sha256 of the Python version, corpus version, max_bytes
    and the (path, size) of the files that `embedded_corpus(max_bytes)` would read."""
    max_bytes = _check_max_bytes(max_bytes)
    h = hashlib.sha256(f"{platform.python_version()}|{CORPUS_VERSION}|{max_bytes}".encode())
    total = 0
    for rel, full in corpus_files():
        size = os.path.getsize(full)
        h.update(f"|{rel}:{size}".encode())
        total += len(_header(rel)) + size
        if total >= max_bytes:
            break
    return h.hexdigest()


def embedded_corpus(max_bytes: int | None = None) -> Tuple[bytes, Dict]:
    """(corpus bytes of length <= max_bytes, info).

    info: fingerprint (sha256 hex of the bytes), python_version, num_files (files read, the last
    possibly cut), num_bytes, max_bytes, stdlib (the directory read), corpus_version.
    """
    max_bytes = _check_max_bytes(max_bytes)
    parts, total, n = [], 0, 0
    for rel, full in corpus_files():
        with open(full, "rb") as f:
            data = _header(rel) + f.read()
        parts.append(data)
        total += len(data)
        n += 1
        if total >= max_bytes:
            break
    data = b"".join(parts)[:max_bytes]
    info = dict(fingerprint=hashlib.sha256(data).hexdigest(),
                python_version=platform.python_version(), num_files=n, num_bytes=len(data),
                max_bytes=max_bytes, stdlib=stdlib_dir(), corpus_version=CORPUS_VERSION)
    return data, info


def split_sizes(n: int) -> Tuple[int, int, int]:
    """(train, valid, test) sizes of a contiguous 90/5/5 split of n items.

    valid = test = n * 5 // 100 and train takes the rest; for the 100,000,000 bytes of enwik8
    this is exactly the standard 90M/5M/5M.
    """
    held = n * 5 // 100
    return n - 2 * held, held, held


def split_contiguous(data):
    """(train, valid, test) contiguous slices of `data` (bytes or 1-D array), 90/5/5."""
    a, b, _ = split_sizes(len(data))
    return data[:a], data[a:a + b], data[a + b:]
