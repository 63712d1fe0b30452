"""Which config keys exist, what each one means, and the check that a config has no other.

`configs/base.py` sets every key of every task at a neutral value, with a comment saying what
it means; it is the one list of valid keys:

    check(config, where="--config=my.py")   ValueError naming the first key base.py lacks
                                             (e.g. a misspelt `m.dd = 64` in a config file)
                                             and the nearest valid key
    nearest("train.stepz")                   "train.steps"
    describe(config)                         "key = value  # meaning" lines (--mode=show_config)

A study config (configs/study_*.py) adds a `study` section (srupp_jax/programs/study.py): its own
keys `metric`, `order`, `marks` and `runs`, each run a `label`, a `paper` row and `model` /
`train` overrides, whose keys must be base.py's. Only ml_collections is imported here.
"""
from __future__ import annotations

import ast
import difflib
import functools
import io
import os
import tokenize
from typing import Any, Dict, Iterator, Tuple

import ml_collections

BASE_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                         "base.py")
STUDY_KEYS = ("metric", "order", "marks", "runs")
STUDY_RUN_KEYS = ("label", "paper", "model", "train")
SHOW_CONFIG = "--mode=show_config lists the keys"


def flat(tree, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """("model.d", 64), ... for every leaf of a ConfigDict (or dict), sorted by key."""
    for key, value in tree.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


@functools.lru_cache(maxsize=None)
def known() -> Tuple[str, ...]:
    """Every valid key (dotted) other than the study's."""
    from srupp_jax.configs import base
    return tuple(k for k, _ in flat(base.get_config()))


def _described(key: str, meaning: Dict[str, Any]) -> str:
    """`key` or the nearest of its sections that base.py comments (model.kernel.block_d ->
    model.kernel)."""
    while key and key not in meaning:
        key = key.rpartition(".")[0]
    return key


@functools.lru_cache(maxsize=None)
def meanings() -> Dict[str, str]:
    """{"model.d": "hidden size d", ...}: the comments of base.py's assignments, continued
    on the comment lines below them, in the file's order."""
    with open(BASE_FILE, encoding="utf-8") as f:
        source = f.read()
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type == tokenize.COMMENT]
    comments = {t.start[0]: (t.start[1], t.string.lstrip("#").strip()) for t in tokens}
    alone = {t.start[0] for t in tokens if t.line.strip().startswith("#")}
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        path, target = [], node.targets[0]
        while isinstance(target, ast.Attribute):
            path.insert(0, target.attr)
            target = target.value
        if not (isinstance(target, ast.Name) and target.id == "config" and path):
            continue
        line, text = node.end_lineno, []
        if line in comments:
            column = comments[line][0]
            text.append(comments[line][1])
            line += 1
            while line in alone and comments[line][0] >= column - 2:    # continued
                text.append(comments[line][1])
                line += 1
        out[".".join(path)] = " ".join(text)
    return dict(sorted(out.items(), key=lambda kv: _line_of(kv[0], source)))


def _line_of(key: str, source: str) -> int:
    return source.find(f"config.{key} ")


def nearest(path: str) -> str | None:
    """The valid key closest to `path`: a sibling of its last part (train.stepz ->
    train.steps), else the closest key anywhere (model.steps -> train.steps), or None."""
    keys = known()
    parent, _, leaf = path.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
    match = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if match:
        return f"{parent}.{match[0]}" if parent else match[0]
    leaves = {k.rpartition(".")[2]: k for k in keys}
    match = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.8)
    if match:
        return leaves[match[0]]
    match = difflib.get_close_matches(path, keys, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown(path: str, value: Any = None, where: str = "", name: str | None = None) -> str:
    """The message for key `path` that is not a config key (`name`: how the user wrote it)."""
    near = nearest(path)
    shown = name or path
    return (f"{shown}{'' if value is None else f'={value!r}'} is not a config key"
            f"{f' (in {where})' if where else ''}; "
            + (f"did you mean {near}? " if near else "") + f"({SHOW_CONFIG})")


def check(config, where: str = "") -> None:
    """ValueError naming the first key of `config` that base.py (or the study section) does
    not define, with the nearest valid key; `where` names the config's source."""
    for path, value in flat(config):
        if not is_known(path):
            raise ValueError(unknown(target(path), value, where, name=path))


def is_known(path: str) -> bool:
    """Whether `path` (dotted) is a key of base.py or one the study section defines."""
    valid = _valid()
    if path in valid:
        return True
    section, _, rest = path.partition(".")
    return section == "study" and _study_key(rest, valid)


@functools.lru_cache(maxsize=None)
def _valid() -> frozenset:
    return frozenset(known())


def _study_key(rest: str, valid: frozenset) -> bool:
    """Whether `rest` (a path inside `study`) is one the study defines."""
    top, _, inner = rest.partition(".")
    if top != "runs":
        return top in STUDY_KEYS and not inner
    _, _, field = inner.partition(".")          # runs.NAME.FIELD[.KEY]
    kind, _, key = field.partition(".")
    if kind in ("model", "train"):
        return f"{kind}.{key}" in valid
    return kind in STUDY_RUN_KEYS and not key


def target(path: str) -> str:
    """study.runs.NAME.model.dd -> model.dd (what the suggestion is looked up for)."""
    parts = path.split(".")
    if parts[:2] == ["study", "runs"] and len(parts) >= 5 and parts[3] in ("model", "train"):
        return ".".join(parts[3:])
    return path


def describe(config) -> str:
    """Every key of `config` with its value and its meaning (base.py's comment), one a line,
    in base.py's order; keys base.py lacks (the study's) last."""
    meaning = meanings()
    rank = {k: i for i, k in enumerate(meaning)}
    items = sorted(flat(config), key=lambda kv: (
        rank.get(_described(kv[0], meaning), len(rank)), kv[0]))
    lines = []
    for path, value in items:
        text = f"{path} = {value!r}"
        note = meaning.get(_described(path, meaning), "")
        lines.append(f"{text:<44} # {note}" if note else text)
    return "\n".join(lines) + "\n"
