"""Files a later run reads: written atomically, checked when read. Shared by every layer (the
data caches, the workdir's records, evaluation outputs), like errors.py; no JAX.

    write_atomic(path, data)          bytes or str to `path` through a temporary sibling and a
                                      rename: a kill or a full disk leaves the old file or the
                                      new one, never a part; an OSError names the path
    read_json(path, fix)              a record's JSON; a truncated, empty or garbled file raises
                                      DamagedFile naming it and `fix` (exit 2, one line); one
                                      written by sealed(obj) carries the sha256 of its content
                                      (SEAL), so a change that is still JSON is found too
    manifest(root) / check(root, m)   {file: [size, sha256]} of a directory / DamagedFile for
                                      the first file that differs from it
    cached_dir(path, fill, what)      a cache directory: its meta.json when every file checks
                                      against the manifest in it; else (missing or damaged,
                                      said in one line) built by fill(tmp) -> meta in a
                                      temporary sibling, under an exclusive lock (a second
                                      builder waits, then reuses), and renamed into place
    building(path, what)              build a directory alone: that lock, a temporary folder
                                      beside `path` (those of killed builders removed), then
                                      move_into(built, path)
    exclusive(lock, what)             the lock: an flock, released by the kernel when its
                                      holder dies (a kill leaves no stale lock)

A cache is rebuilt when it is damaged; a record (config.json, metrics.jsonl, a prepared
dataset) is refused with one line that names the file and what to do, never used. A small
record of your own (a label list):

    files.write_atomic(path, files.sealed({"labels": labels}))
    labels = files.read_json(path, "delete it to build it again")["labels"]
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable, Optional

from srupp_jax import phases

META = "meta.json"
FORMAT = 1                  # meta.json's "files" manifest (caches without one are rebuilt)
SEAL = "_sha256"            # the key of a sealed JSON record's checksum


class DamagedFile(ValueError):
    """A file a run relies on is truncated, empty or garbled: its path and what to do."""


def named(error: OSError, path: str) -> OSError:
    """`error` (a write that failed: a full disk, a read-only file system) naming `path` when
    it names no file (the OSError of a write call names none)."""
    if error.filename or not error.strerror:
        return error
    return type(error)(error.errno, error.strerror, os.fspath(path))


def write_atomic(path: str, data) -> None:
    """Write `data` (bytes, or str as UTF-8) to `path` atomically (module docstring)."""
    path = os.fspath(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                   dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise named(e, path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def sealed(obj: dict) -> str:
    """The JSON text of the record `obj` with the sha256 of its content under SEAL."""
    return json.dumps(dict(obj, **{SEAL: _digest(obj)}), indent=1, sort_keys=True) + "\n"


def read_json(path: str, fix: str):
    """The JSON value of `path` (a sealed record: checked, and without its seal); DamagedFile
    naming it and `fix` when it is not JSON (empty, truncated, garbled) or not what was
    sealed. FileNotFoundError as open() raises it."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        why = "empty" if not raw.strip() else f"not JSON: {str(e).splitlines()[0]}"
        raise DamagedFile(f"{path} is damaged ({why})" + (f"; {fix}" if fix else "")) from None
    if isinstance(value, dict) and SEAL in value:
        seal = value.pop(SEAL)
        if seal != _digest(value):
            raise DamagedFile(f"{path} is damaged (its content differs from its checksum)"
                              + (f"; {fix}" if fix else ""))
    return value


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(root: str, skip=(META,)) -> dict:
    """{relative path: [size, sha256]} of every file under `root` (but `skip`)."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root)
            if rel not in skip:
                out[rel] = [os.path.getsize(full), sha256(full)]
    return dict(sorted(out.items()))


def check(root: str, files: dict, fix: str) -> None:
    """DamagedFile naming the first file under `root` that is missing or differs from
    `files` (a manifest), and `fix`."""
    for rel, (size, digest) in files.items():
        full = os.path.join(root, rel)
        if not os.path.isfile(full):
            why = "missing"
        elif os.path.getsize(full) != size:
            why = f"{os.path.getsize(full):,} bytes, expected {size:,}"
        elif sha256(full) != digest:
            why = "its sha256 differs from the one recorded when it was written"
        else:
            continue
        raise DamagedFile(f"{full} is damaged ({why})" + (f"; {fix}" if fix else ""))


def _open(path: str) -> dict:
    """meta.json of the cache `path` after checking every file; DamagedFile otherwise."""
    meta = read_json(os.path.join(path, META), "")
    if not isinstance(meta, dict) or meta.get("files_format") != FORMAT:
        raise DamagedFile(f"{path} has no checksums (written by an older srupp_jax)")
    check(path, meta["files"], "")
    return meta


def _fsync_tree(root: str) -> None:
    for folder, _, names in os.walk(root):
        for name in names + ["."]:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def exclusive(lock: str, what: str):
    """Hold an exclusive flock on the file `lock` (created) while building `what`; a second
    process waits, saying for what."""
    from absl import logging
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise named(e, lock) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info("waiting for another process building %s (lock %s)", what, lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)             # releases the lock


@contextlib.contextmanager
def building(path: str, what: str):
    """Build `path` (a directory) alone: hold the exclusive lock of `path` (exclusive), remove
    the temporary folders that builders killed before left beside it, and yield a new one
    (removed afterwards); move the result in with `move_into`."""
    parent, base = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with exclusive(os.path.join(parent, f".{base}.lock"), what):
        for stale in os.listdir(parent):
            if stale.startswith(f".{base}.tmp"):
                _remove(os.path.join(parent, stale))
        try:
            tmp = tempfile.mkdtemp(prefix=f".{base}.tmp", dir=parent)
        except OSError as e:
            raise named(e, parent) from None
        try:
            yield tmp
        finally:
            _remove(tmp)


def move_into(built: str, path: str) -> None:
    """Replace the directory `path` by `built` (synced first; the old one removed)."""
    _fsync_tree(built)
    _remove(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    os.rename(built, path)


def cached_dir(path: str, fill: Callable[[str], dict], what: str) -> dict:
    """The meta.json of the cache directory `path`, built first when it is missing or
    damaged (module docstring). fill(tmp) writes the files into the folder tmp and returns the
    meta (JSON); the manifest of its files is added as meta["files"]."""
    from absl import logging
    meta = _try_open(path)
    if meta is not None:
        return meta
    with building(path, what) as tmp:
        try:
            return _open(path)                # built by another process meanwhile
        except FileNotFoundError:
            pass
        except (DamagedFile, OSError) as e:
            logging.warning("%s: %s; rebuilding it", what, e)
        phases.enter("cache.build")
        try:
            meta = dict(fill(tmp))
            meta.update(files_format=FORMAT, files=manifest(tmp))
            with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
                f.write(sealed(meta))
            phases.enter("cache.publish")
            move_into(tmp, path)
        except OSError as e:              # a full disk: the cache named (it is not kept)
            raise named(e, path) from None
    return meta


def _try_open(path: str) -> Optional[dict]:
    """meta.json of a sound cache `path`, else None (missing or damaged: built under the
    lock, where a damaged one is reported and removed)."""
    try:
        return _open(path)
    except (DamagedFile, OSError):
        return None


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.remove(path)

