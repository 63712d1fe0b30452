"""The offline default classification task: which standard-library package is a line of Python
from? (`data.name = "stdlib_lines"`, configs/classify_default.py.)

Real text on every machine, no download: the lines of the `.py` files of nine pure-Python
packages of the standard library (`PACKAGES`: http, importlib, logging, multiprocessing,
unittest, urllib, wsgiref, xml, xmlrpc), each labelled with its package. A line is kept when,
its runs of spaces made one and its ends stripped, it has at least `MIN_CHARS` characters:
code, comments and docstring lines alike. A text that occurs in two packages is dropped (no
example is irreducibly ambiguous); repeats within a package are kept once. 24,577 examples on
Python 3.11, the commonest class 17% of them. The classes overlap without being hopeless:
"self.assertEqual(result, expected)" is unittest, "if not isinstance(name, str):" could be
anything (a naive Bayes over character 4-grams, fitted once to train while this task was
chosen, got 82% of test right: identifiers memorised go far here).

The files are those of the embedded corpus (`corpus.corpus_files`: sorted relative paths, the
same exclusions) that lie wholly after its first `LM_BYTES` bytes, the slice configs/default.py
trains its language model on: no line of this task was seen by that model, so fine-tuning from
it (README) transfers knowledge of Python, not of these lines.

Splits: the examples in a fixed random order (numpy's legacy RandomState(0), stable across
numpy versions); test the first `TEST_SIZE`, valid the next `VALID_SIZE`, train the rest, each
kept in corpus order. Generating takes a fraction of a second, so nothing is cached. The text
depends on the Python version: `key()`, recorded with the data, hashes the Python version and
the files' paths and sizes (as the embedded corpus's key does).
"""
from __future__ import annotations

import hashlib
import os
import platform
from typing import Dict, List, Tuple

import numpy as np

from srupp_jax.data import corpus
from srupp_jax.data.labelled import Examples

PACKAGES = ("http", "importlib", "logging", "multiprocessing", "unittest", "urllib", "wsgiref",
            "xml", "xmlrpc")
MIN_CHARS = 20
LM_BYTES = 4_000_000      # configs/default.py's data.max_bytes (tests/test_classification_data)
VALID_SIZE, TEST_SIZE = 1000, 2000
VERSION = 1               # bump when the selection, the rules or the splits change


def package_files() -> List[Tuple[str, str, str]]:
    """(package, relative path, absolute path) of every file of PACKAGES after the first
    LM_BYTES of the embedded corpus, in corpus order."""
    return [(rel.split("/")[0], rel, full) for rel, full, start in corpus.with_offsets()
            if start >= LM_BYTES and rel.split("/")[0] in PACKAGES]


def key() -> str:
    """The cache key: the Python version, VERSION and the (path, size) of every file read."""
    h = hashlib.sha256(f"{platform.python_version()}|{VERSION}|{LM_BYTES}|{MIN_CHARS}".encode())
    for _, rel, full in package_files():
        h.update(f"|{rel}:{os.path.getsize(full)}".encode())
    return h.hexdigest()[:16]


def examples() -> Examples:
    """Every example (package, line) in corpus order (see the module docstring)."""
    seen: Dict[str, str] = {}
    shared = set()
    for package, _, full in package_files():
        with open(full, encoding="utf-8", errors="replace") as f:
            for line in f.read().splitlines():
                text = " ".join(line.split())
                if len(text) < MIN_CHARS:
                    continue
                if seen.setdefault(text, package) != package:
                    shared.add(text)
    kept = [(p, t) for t, p in seen.items() if t not in shared]
    missing = sorted(set(PACKAGES) - {p for p, _ in kept})
    if missing:
        raise FileNotFoundError(f"the standard library of this Python ({corpus.stdlib_dir()}) "
                                f"lacks the package(s) {', '.join(missing)} that the "
                                "stdlib_lines task needs; use your own data: "
                                "--config=configs/classify_text.py --config.data.path=DIR")
    return Examples([p for p, _ in kept], [t for _, t in kept])


def generate() -> Dict[str, Examples]:
    """{train, valid, test: Examples} (the module docstring's splits)."""
    every = examples()
    order = np.random.RandomState(0).permutation(len(every))
    test = np.sort(order[:TEST_SIZE])
    valid = np.sort(order[TEST_SIZE:TEST_SIZE + VALID_SIZE])
    train = np.sort(order[TEST_SIZE + VALID_SIZE:])
    return dict(train=every.take(train), valid=every.take(valid), test=every.take(test))
