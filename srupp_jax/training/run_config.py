"""A run's config, saved in the workdir and read back by eval/generate (the keys the data
decide are filled in by the task first, e.g. tasks.lm.resolve_config).

`save(config, workdir)` writes `workdir/config.json` at the start of training; `load(workdir)` reads it back (None for a workdir without one), so
`--mode=eval` and `--mode=generate` rebuild exactly the model that was trained.

The record stays true: `record_changes(workdir, config, allow=...)` compares a rerun's config
with the recorded one before anything is written. Keys that only drive or observe the run
(CONTROL: stop_at, the log / eval / checkpoint intervals, profiling, the time budget, eval.*,
decode.*, mesh.*, where the data live) may change freely; `train.steps` may change (a run extended or
cut short), and the change is recorded; any other difference is refused, naming the keys,
unless the user allows it (`--allow_config_change`): then each change is appended to
`workdir/config_changes.jsonl` as {"step", "key", "old", "new"}, so the record always says
what trained. The vocabulary (FIXED: data.vocab_rule, data.vocab_sha256) never changes: the
model would meet other ids for the same text. A record made before a key existed implies the
value of its time (RECORDED_BEFORE). `save` writes config.json once the run is known to start.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

import ml_collections

from srupp_jax import files
from srupp_jax.configs import base
from srupp_jax.training.rng import SAVED_BEFORE

CONFIG_FILE = "config.json"
CHANGES_FILE = "config_changes.jsonl"
CONTROL = ("train.stop_at", "train.log_every", "train.eval_every", "train.checkpoint_every",
           "train.keep_checkpoints", "train.profile_steps", "train.max_bad_steps",
           "train.time_budget", "train.eval_marks", "eval.", "decode.", "mesh.",
           "data.data_dir", "data.cache_dir",
           "model.remat", "cpu_variant")    # remat: the same losses, less memory
EXTENSIBLE = ("train.steps",)
FIXED = ("data.vocab_rule", "data.vocab_sha256")


def _vocab_rule_before(old: Mapping) -> str:
    """The ids of a run recorded before data.vocab_rule: byte values (256) for bytes, enwik8
    included; words counted with ties in alphabetical order and `<unk>` added."""
    if old.get("task", "lm") != "lm":
        return ""                   # only language models record their vocabulary
    name = old.get("data.name")
    byte = name in ("default", "enwik8") or (name == "text" and old.get("data.unit") == "byte")
    return "bytes" if byte else "counts_alphabetical"


# Keys added after runs were recorded without them: the value such a run trained with (or a
# function of the rest of its record).
RECORDED_BEFORE = {"train.prng_impl": SAVED_BEFORE, "train.loss_scale": 2.0 ** 15,
                   "train.loss_scale_period": 2000, "data.vocab_rule": _vocab_rule_before}


def recorded(old: Mapping, key: str):
    """The value of `key` in the flat record `old`, or the one RECORDED_BEFORE implies."""
    if key in old:
        return old[key]
    value = RECORDED_BEFORE[key]
    return value(old) if callable(value) else value


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the configs use; dicts recursively."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def flat(tree: Mapping, prefix: str = "") -> dict:
    """{"model.d": 64, ...} of a nested dict (lists as tuples)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = _tuples(value)
    return out


def record_changes(workdir: str, config: ml_collections.ConfigDict, *,
                   allow: bool = False) -> list:
    """The differences [(key, recorded, new), ...] between `workdir`'s recorded config and
    `config` that the record must keep (see the module docstring; CONTROL keys and keys the
    record lacks are left out). ValueError naming the keys when one of them changes what
    trains and `allow` is False."""
    saved = load(workdir)
    if saved is None:
        return []
    _changes(workdir)                                  # checked before anything is written
    old = flat(saved.to_dict())
    old = dict({k: recorded(old, k) for k in RECORDED_BEFORE}, **old)
    new = flat(config.to_dict())
    changes = [(k, old[k], new.get(k)) for k in sorted(old)
               if k in new and old[k] != new[k] and not k.startswith(CONTROL)
               and not (k in FIXED and old[k] == "")]     # "": not recorded, now filled
    fixed = [c for c in changes if c[0] in FIXED]
    if fixed:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in fixed)
        raise ValueError(f"{workdir} was trained on the token ids of another vocabulary "
                         f"({listed}): the same text gives other ids now, so it cannot go on "
                         "(not even with --allow_config_change); train in a new --workdir "
                         "(README: Datasets)")
    refused = [c for c in changes if c[0] not in EXTENSIBLE]
    if refused and not allow:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in refused)
        raise ValueError(f"{workdir} was trained with another config ({listed}); use another "
                         "--workdir, or add --allow_config_change to go on with the new values "
                         f"(recorded in {CHANGES_FILE})")
    return changes


def _changes(workdir: str) -> list:
    """The records of config_changes.jsonl ([] without one); DamagedFile naming a line that
    is not one."""
    path = os.path.join(workdir, CHANGES_FILE)
    if not os.path.exists(path):
        return []
    out = []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            if not isinstance(record, dict) or not {"step", "key"} <= set(record):
                raise ValueError("not a record of a change")
        except (ValueError, UnicodeDecodeError) as e:
            raise files.DamagedFile(
                f"{path} is damaged at line {i} ({str(e).splitlines()[0]}); it records the "
                "config changes of this run: restore it from a copy, or delete that line"
            ) from None
        out.append(record)
    return out


def save(config: ml_collections.ConfigDict, workdir: str, changes=(), step: int = 0) -> str:
    """Write `workdir/config.json`, after appending `changes` (record_changes) made at `step`
    to config_changes.jsonl (a change already recorded is not added twice: a run stopped
    between the two writes repeats them); both atomic. Returns the config's path."""
    os.makedirs(workdir, exist_ok=True)
    if changes:
        records = _changes(workdir)
        new = [{"step": step, "key": key, "old": old, "new": new} for key, old, new in changes]
        records += [r for r in new if r not in records]
        files.write_atomic(os.path.join(workdir, CHANGES_FILE),
                           "".join(json.dumps(r) + "\n" for r in records))
    path = os.path.join(workdir, CONFIG_FILE)
    files.write_atomic(path, config.to_json(indent=1, sort_keys=True) + "\n")
    return path


def load(workdir: str) -> Optional[ml_collections.ConfigDict]:
    """The config saved in `workdir` with every key configs/base.py has (a key added after the
    run was recorded takes the value such a run trained with, RECORDED_BEFORE, else base.py's
    default), or None when it has none; DamagedFile naming the file when it is not a config
    (truncated, empty, garbled)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    fix = ("it records the config this run trained with: restore it from a copy, or delete "
           "it and give the --config (and overrides) the run was trained with")
    saved = files.read_json(path, fix)
    if not isinstance(saved, dict) or not {"model", "train", "data"} <= set(saved):
        raise files.DamagedFile(f"{path} is damaged (not a config: no model, train and data "
                                f"sections); {fix}")
    return complete(_tuples(saved))


def complete(saved: Mapping) -> ml_collections.ConfigDict:
    """configs/base.py's config with `saved` (a nested dict) on top, and RECORDED_BEFORE for
    the keys `saved` lacks: the one place missing keys are filled, so code reads every key
    directly."""
    config = base.get_config().to_dict()
    before = flat(saved)
    missing = set(flat(config)) - set(before)
    _merge(config, saved)
    for key in missing & set(RECORDED_BEFORE):
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = recorded(before, key)
    return ml_collections.ConfigDict(config)


def _merge(into: dict, values: Mapping) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def override(config: ml_collections.ConfigDict,
             values: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Set each dotted path of `values` (e.g. {"eval.mem_len": 256}) in `config`; ValueError
    for a path that `config` does not have."""
    for path, value in values.items():
        *parents, key = path.split(".")
        node = config
        for p in parents:
            node = node.get(p) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            raise ValueError(f"--config.{path}: the saved config has no key {path!r}")
        node[key] = value
    return config
