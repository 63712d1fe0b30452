"""Your own labelled text (`data.name = "tsv"`): a folder of tab-separated files.

  data.path/train.tsv    one example a line: label<TAB>text     (required)
  data.path/valid.tsv    the same format                         (optional)
  data.path/test.tsv     the same format                         (optional)

Files are UTF-8; a final newline is optional and a "\\r" before it (Windows line ends) is
dropped; lines split only at "\\n". A line splits at its FIRST tab: the label is what comes
before it (any string without a tab, e.g. "positive" or "3"), the text the rest (surrounding
spaces stripped from both). The labels are listed in the order first seen in train.tsv; that
list is the model's class order and is recorded in the workdir (config.json, data.labels).

A split without a file is cut from train (`parallel.held_out`): `HELD_FRACTION` = 5% of the
train examples, at least 1 and at most `HELD_MAX`, by a fixed permutation (numpy's legacy
RandomState(0)), kept in file order; train keeps the rest in order.

Bad input stops with one line naming the file, the line and the fix: a folder that does not
exist or has no train.tsv, a line without a tab, an empty label or text, a label in
valid.tsv or test.tsv that train.tsv never has, bytes that are not UTF-8, an empty file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Dict, List, Tuple

import numpy as np

from srupp_jax.data.parallel import held_out

SPLITS = ("train", "valid", "test")
HELD_FRACTION = 0.05
HELD_MAX = 5000


@dataclasses.dataclass
class Examples:
    """One split as read: labels[i] (a string) and texts[i] of example i."""
    labels: List[str]
    texts: List[str]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, index) -> "Examples":
        return Examples([self.labels[i] for i in index], [self.texts[i] for i in index])


def split_files(path: str) -> Dict[str, str]:
    """{split: its file} of the splits that have one (train always)."""
    path = os.path.expanduser(os.fspath(path or ""))
    if not path:
        raise ValueError("data.path is empty; set --config.data.path=FOLDER holding train.tsv "
                         "(label<TAB>text a line)")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"data.path={path!r} is not a folder; give a folder holding "
                                "train.tsv (and optionally valid.tsv, test.tsv)")
    out = {s: os.path.join(path, f"{s}.tsv") for s in SPLITS
           if os.path.isfile(os.path.join(path, f"{s}.tsv"))}
    if "train" not in out:
        listing = sorted(os.listdir(path))
        held = ("it is empty" if not listing else "it holds " + ", ".join(listing[:6]))
        raise FileNotFoundError(f"data.path={path!r} holds no train.tsv ({held}); expected "
                                "train.tsv (and optionally valid.tsv, test.tsv), one "
                                "label<TAB>text a line")
    return out


def _decoded(file: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{file}, line {line}: the bytes at offset {e.start} are not UTF-8 "
                         f"({e.reason}); convert the file to UTF-8 (e.g. iconv -f LATIN1 -t "
                         "UTF-8)") from None


def read_tsv(file: str) -> Examples:
    """The examples of one file, every line checked (module docstring)."""
    with open(file, "rb") as f:
        text = _decoded(file, f.read())
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ValueError(f"{file} is empty; give at least one label<TAB>text line")
    labels, texts = [], []
    for i, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        label, tab, rest = line.partition("\t")
        label, rest = label.strip(), rest.strip()
        problem = ("has no tab" if not tab else "has an empty label" if not label
                   else "has an empty text" if not rest else "")
        if problem:
            raise ValueError(f"{file}, line {i} {problem}: expected label<TAB>text (a label, "
                             "a tab, then the text); fix or remove the line")
        labels.append(label)
        texts.append(rest)
    return Examples(labels, texts)


def label_order(labels: List[str]) -> List[str]:
    """The distinct labels in the order first seen."""
    return list(dict.fromkeys(labels))


def check_labels(file: str, examples: Examples, known: List[str]) -> None:
    """ValueError naming the first line of `file` whose label train.tsv never has."""
    seen = set(known)
    for i, label in enumerate(examples.labels, 1):
        if label not in seen:
            shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
            raise ValueError(f"{file}, line {i}: label {label!r} is not among train.tsv's "
                             f"labels ({shown}); a model can only predict labels it was "
                             "trained on: fix the label or add train examples of it")


def load_folder(path: str) -> Tuple[Dict[str, Examples], List[str], Dict]:
    """({split: Examples} for train, valid, test; the labels in train order; info).

    info: files (sha256 of every file read) and held_out (the splits cut from train)."""
    files = split_files(path)
    splits = {split: read_tsv(f) for split, f in files.items()}
    labels = label_order(splits["train"].labels)
    for split in ("valid", "test"):
        if split in splits:
            check_labels(files[split], splits[split], labels)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        train = splits["train"]
        sets = held_out(len(train), len(missing), fraction=HELD_FRACTION, maximum=HELD_MAX,
                        what="train examples", files="valid.tsv and test.tsv")
        for split, idx in zip(missing, sets):
            splits[split] = train.take(idx)
        keep = np.ones(len(train), bool)
        keep[np.concatenate(sets)] = False
        splits["train"] = train.take(np.flatnonzero(keep))
    info = dict(files=fingerprint(files), held_out=missing)
    return {s: splits[s] for s in SPLITS}, labels, info


def fingerprint(files: Dict[str, str]) -> Dict[str, str]:
    """{file name: sha256 of its bytes} (part of the subword cache key)."""
    out = {}
    for file in files.values():
        with open(file, "rb") as f:
            out[os.path.basename(file)] = hashlib.sha256(f.read()).hexdigest()
    return out


def write_tsv(file: str, examples: Examples) -> None:
    """`examples` as label<TAB>text lines (the generated default task's files)."""
    with open(file, "w", encoding="utf-8", newline="\n") as f:
        for label, text in zip(examples.labels, examples.texts):
            f.write(f"{label}\t{text}\n")
