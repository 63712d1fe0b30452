"""Run a program as if its disk were full (or read-only) where it writes certain files:

    python tests/full_disk.py --match='*/metrics.jsonl' [--after=N] [--errno=ENOSPC] \\
        main.py --config=... | -m srupp_jax.data.prepare --dataset=...

Every file opened for writing (open, io.open, os.fdopen: Python's writes, NumPy's, json's,
TensorBoard's) whose path matches the glob --match fails its write calls after the first N
(over all such files) with OSError(errno) and no file name, as a real write to a full disk
does; everything else runs as usual. The program is main.py's or a module's own code
(runpy), so what it prints and its exit status are the user's.
"""
import argparse
import builtins
import errno as errnos
import fnmatch
import io
import os
import runpy
import sys


class Full:
    """A file whose writes fail (after `budget` more); reads and the rest pass through."""

    budget = 0

    def __init__(self, f, code: int):
        self._f, self._code = f, code

    def write(self, data):
        if Full.budget <= 0:
            raise OSError(self._code, os.strerror(self._code))
        Full.budget -= 1
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def install(pattern: str, after: int, code: int) -> None:
    real = io.open
    Full.budget = after

    def opener(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        if not any(c in mode for c in "wax+"):
            return f
        path = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else \
            os.path.abspath(os.fspath(file))
        return Full(f, code) if fnmatch.fnmatch(path, pattern) else f

    builtins.open = io.open = opener


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--match", required=True)
    parser.add_argument("--after", type=int, default=0)
    parser.add_argument("--errno", default="ENOSPC")
    args, rest = parser.parse_known_args()
    install(args.match, args.after, getattr(errnos, args.errno))
    if rest[0] == "-m":                   # as `python -m`: the working directory first
        sys.path[0] = os.getcwd()
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        sys.path[0] = os.path.dirname(os.path.abspath(rest[0]))
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
