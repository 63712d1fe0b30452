"""The one front door for errors, shared by every program (main.py / srupp, the study, prepare,
plot): a mistake of the user becomes one line `error: ...` and exit status 2, a run that cannot
go on one line and exit status 1, Ctrl-C outside training one line and 130, SIGTERM outside
training (`stop_on_sigterm`: preparing data, evaluating) one line and 75; those two lines
name the phase that was stopped (srupp_jax/phases.py) and say to rerun the command.

    with errors.front_door(traceback=FLAGS.traceback):
        run_the_program()
    return errors.call(main_body, traceback=False)      # the same, returning the status

User errors: ValueError (a bad value, named with its fix), OSError (a missing file, a workdir
that is a file, read-only or full: the path and the reason), absl's flag errors and
UsageError. Run faults (`RunFault`): a checkpoint that cannot be saved or restored, a workdir
in use by another trainer, and FloatingPointError (non-finite losses). Anything else is a
programming error and raises with its stack. `OneLineArgumentParser` gives argparse programs
the same one-line form. Importing this module imports nothing heavy (no jax).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import sys
import threading
from typing import Callable, Iterable, NoReturn, Tuple

from absl import app, flags

from srupp_jax import phases

USAGE_EXIT = 2
RUN_FAULT_EXIT = 1
INTERRUPTED_EXIT = 130
STOPPED_EXIT = 75           # EX_TEMPFAIL, as a preempted training run: rerun the command


class RunFault(RuntimeError):
    """A run that cannot go on (its saved state is safe): exit status 1."""


class Stopped(BaseException):
    """SIGTERM outside the training loop (stop_on_sigterm): exit status 75. A BaseException,
    as KeyboardInterrupt, so that no `except Exception` keeps the program going."""


def _raise_stopped(signum, frame) -> None:  # noqa: ARG001
    raise Stopped()


def stop_on_sigterm() -> None:
    """SIGTERM raises Stopped in the main thread (its cleanup runs: nothing half-written is
    kept), where it would end the process silently; the training loop installs its own
    handler while it trains (srupp_jax/training/workdir.py). A no-op outside the main
    thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)


def require(checks: Iterable[Tuple[bool, str]]) -> None:
    """The form of every config check: raise ValueError with the message of the first
    (ok, message) pair that is not ok.

        require([(t.steps >= 1, f"train.steps={t.steps}; expected >= 1"), ...])

    A message names the config key and its value, then what was expected (and the fix when it
    is not obvious), so that the command line can print it as one line (`error: ...`, exit 2).
    """
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


USER_ERRORS = (ValueError, OSError, app.UsageError, flags.Error)
RUN_FAULTS = (RunFault, FloatingPointError)

_HINTS = {
    errno.ENOSPC: "free some space or use another directory",
    errno.EDQUOT: "free some space or use another directory",
    errno.EROFS: "a read-only file system; use another directory",
    errno.EACCES: "check its permissions or use another directory",
    errno.EPERM: "check its permissions or use another directory",
}


def hint(code: int) -> str:
    """What to do about an OSError of errno `code` (a full disk, a read-only file system,
    permissions) as ' (...)', or ''."""
    return f" ({_HINTS[code]})" if code in _HINTS else ""


def reason(error: OSError) -> str:
    """What went wrong in an OSError of the file system, with what to do: 'No space left on
    device (free some space or use another directory)'."""
    return (error.strerror or str(error)) + hint(error.errno)


def os_message(error: OSError) -> str:
    """An OSError of the file system as 'PATH: reason (hint)' (its own message otherwise)."""
    if not error.strerror:
        return str(error)
    if not error.filename:                  # a message of ours (OSError(errno, message))
        return error.strerror
    return f"{error.filename}: {reason(error)}"


def one_line(error: BaseException) -> str:
    """The message of `error` on one line; for a config file that raised (config_flags puts the
    file's traceback in its message), the flag and the last line of that traceback."""
    if isinstance(error, OSError):
        text = os_message(error)
    elif isinstance(error, KeyError) and error.args:
        text = str(error.args[0])              # str(KeyError) would quote (and escape) it
    else:
        text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:
        lines = [lines[0].split(": Error whilst parsing")[0] + ":", lines[-1]]
    return " ".join(lines) or type(error).__name__


def fail(error: BaseException | str, code: int = USAGE_EXIT) -> NoReturn:
    """Print `error: MESSAGE` (one line) to stderr and exit with `code`."""
    message = error if isinstance(error, str) else one_line(error)
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


OURS = (*RUN_FAULTS, *USER_ERRORS, KeyboardInterrupt, Stopped)


def _stopped_line(how: str) -> str:
    where = phases.describe()
    return (f"{how}{' while ' + where if where else ''}; nothing half-written is kept: rerun "
            "the same command to finish")


def report(error: BaseException) -> int:
    """Print the one line of `error` (one of OURS) to stderr; returns its exit status."""
    code = (RUN_FAULT_EXIT if isinstance(error, RUN_FAULTS) else
            INTERRUPTED_EXIT if isinstance(error, KeyboardInterrupt) else
            STOPPED_EXIT if isinstance(error, Stopped) else USAGE_EXIT)
    message = (_stopped_line("interrupted (Ctrl-C)") if isinstance(error, KeyboardInterrupt)
               else _stopped_line("stopped by SIGTERM") if isinstance(error, Stopped)
               else one_line(error))
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


@contextlib.contextmanager
def front_door(traceback: bool = False):
    """Run the body; user errors exit 2, run faults 1, Ctrl-C 130, each with one line
    (`traceback=True`: they raise with their stack instead). Other exceptions raise."""
    try:
        yield
    except OURS as e:
        if traceback:
            raise
        sys.exit(report(e))


def call(body: Callable[[], int], *, traceback: bool = False) -> int:
    """body()'s return value, or the exit status of its error after its one line
    (front_door for a `main` that returns its status)."""
    try:
        return body()
    except OURS as e:
        if traceback:
            raise
        return report(e)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line `error: ... (see --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")
