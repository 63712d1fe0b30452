"""What a training run owns in its workdir, and how it ends.

  WorkdirLock(workdir)   an exclusive lock: `workdir/lock` holds the host, pid and start time of
                         the trainer that owns the workdir. A second trainer stops with a
                         message naming them. A lock left by a process that is gone (same host,
                         pid no longer running, e.g. after kill -9) is taken over with a warning;
                         `force=True` (main.py --force) takes over any lock, for a stale lock on
                         another host. The lock appears whole (written aside, then hard-linked
                         into place), so a lock that cannot be read is damaged: it stops the
                         run with one line naming it and --force.
  StopSignals()          SIGTERM (preemption) and SIGINT (Ctrl-C) only set a flag; the training
                         loop checks it after every step (all processes agree on it), saves
                         and returns. The signal is acknowledged at once on stderr ("Ctrl-C:
                         stopping after the current step: saving"). Inside `interrupting()`
                         (an evaluation, which can take minutes) a signal raises Interrupted
                         within seconds instead (one process only: several must stop at the
                         same step).
  check_writable(workdir) / check_readable(workdir)
                         a workdir that is a file, cannot be created or written (read-only,
                         permissions, a pseudo file system), or (to read) does not exist:
                         OSError / FileNotFoundError naming it, before anything is written
  say_end(status, step)  the line that says how a run ended and what to do next
  EXIT_CODES             how a run ended -> the process exit code (main.py):
                           finished     0   train.steps reached (or the workdir was finished)
                           stopped      0   train.stop_at reached
                           preempted   75   SIGTERM: saved; rerun the same command to resume
                                            (EX_TEMPFAIL: a scheduler may requeue it)
                           interrupted 130  SIGINT / Ctrl-C: saved; rerun to resume
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import tempfile
import threading
import time

from absl import logging

from srupp_jax.errors import RunFault

EXIT_CODES = {"finished": 0, "stopped": 0, "preempted": 75, "interrupted": 130}
LOCK_FILE = "lock"


class WorkdirLockedError(RunFault):
    """Another trainer holds the workdir."""


def _unusable(workdir: str, why: str, code: int = errno.EACCES) -> OSError:
    return OSError(code, f"workdir {workdir} {why}; use another --workdir")


def check_writable(workdir: str) -> None:
    """OSError naming `workdir` when a trainer could not use it: a file, a directory it cannot
    write, or a path it cannot create (checked by creating and removing a temporary directory
    beside it; nothing is left, nothing is written in the workdir)."""
    path = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise _unusable(workdir, "is a file, not a directory", errno.ENOTDIR)
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise _unusable(workdir, f"cannot be created: {parent} is a file", errno.ENOTDIR)
    what = "is" if parent == path else f"cannot be created: {parent} is"
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise _unusable(workdir, f"{what} on a read-only file system", errno.EROFS)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _unusable(workdir, f"{what} not writable (permissions)")
    if parent != path:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".srupp_probe_", dir=parent))
        except OSError as e:
            raise _unusable(workdir, f"cannot be created in {parent} ({e.strerror})",
                            e.errno) from None


def check_readable(workdir: str) -> None:
    """FileNotFoundError / NotADirectoryError naming `workdir` when it is no run's directory."""
    path = os.path.expanduser(os.fspath(workdir))
    if not os.path.exists(path):
        raise FileNotFoundError(f"workdir {workdir} does not exist; train first with "
                                f"--mode=train --workdir={workdir}")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"workdir {workdir} is a file, not a directory; give a run's "
                                 "--workdir")


def say_end(status: str, step: int, out_of_time: bool = False,
            stopped_eval: bool = False) -> None:
    """Log how a run that did not finish ended: a time budget used up is done (nothing to
    rerun); train.stop_at, SIGTERM and Ctrl-C are resumable by the same command (which first
    does the evaluation a signal stopped, `stopped_eval`)."""
    if stopped_eval:
        logging.info("step %d: the dev evaluation was stopped; the rerun does it first", step)
    if status == "stopped" and out_of_time:
        logging.info("step %d: train.time_budget used up; checkpoint saved", step)
    elif status == "stopped":
        logging.info("stopped at step %d (train.stop_at): checkpoint saved; rerun to go on",
                     step)
    else:
        logging.warning("%s at step %d: checkpoint saved; rerun the same command to resume",
                        status, step)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """Exclusive ownership of a workdir by one trainer (see the module docstring).

    Use as a context manager, or call `release()`; the lock file is removed on release.
    """

    def __init__(self, workdir: str, *, force: bool = False):
        self.path = os.path.join(os.fspath(workdir), LOCK_FILE)
        self.created = not os.path.exists(os.fspath(workdir))    # removed again if left empty
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(),
                      "start": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:
            os.makedirs(os.fspath(workdir), exist_ok=True)
            self._acquire(force)
        except OSError as e:     # a file, read-only, no space, a pseudo file system
            self._remove_if_empty()
            raise _unusable(workdir, f"cannot be written ({e.strerror})", e.errno) from None

    def _acquire(self, force: bool) -> None:
        folder = os.path.dirname(self.path)
        for name in os.listdir(folder):     # lock.PID.tmp of a trainer killed while locking
            pid = name[len(LOCK_FILE) + 1:-len(".tmp")]
            if name.startswith(LOCK_FILE + ".") and name.endswith(".tmp") and pid.isdigit() \
                    and not _pid_alive(int(pid)):
                os.remove(os.path.join(folder, name))
        while not self._create():
            holder = self._read()
            if holder is None:          # removed meanwhile
                continue
            if isinstance(holder, str):
                if force:
                    self._take_over(f"a damaged lock ({holder}; --force)")
                    continue
                raise WorkdirLockedError(
                    f"{self.path} is damaged ({holder}); if no trainer uses this workdir, "
                    "rerun with --force")
            same_host = holder.get("host") == self.owner["host"]
            if same_host and not _pid_alive(int(holder.get("pid", -1))):
                self._take_over(f"a stale lock of pid {holder.get('pid')} (no longer running)")
            elif force:
                self._take_over(f"the lock of pid {holder.get('pid')} on {holder.get('host')} "
                                "(--force)")
            else:
                raise WorkdirLockedError(
                    f"workdir {os.path.dirname(self.path)} is in use by pid {holder.get('pid')} "
                    f"on host {holder.get('host')} since {holder.get('start')}; use another "
                    f"--workdir, or, if that run is dead, rerun with --force")

    def _create(self) -> bool:
        """Create the lock whole: written to a file of our own, then linked to `lock` (fails
        when it exists). Where hard links are not supported, created exclusively."""
        tmp = f"{self.path}.{self.owner['pid']}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(self.owner, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:                 # a file system without hard links
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            return True
        finally:
            os.remove(tmp)

    def _read(self):
        """The holder ({host, pid, start}), None when there is no lock, or why it is
        damaged (a str)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(raw.decode("utf-8"))
            if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
                raise ValueError("no pid")
            return holder
        except (ValueError, UnicodeDecodeError) as e:
            return "empty" if not raw.strip() else f"not a lock: {str(e).splitlines()[0]}"

    def _take_over(self, what: str) -> None:
        logging.warning("workdir lock: taking over %s", what)
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock file (and the workdir, when this lock created it and nothing else
        was written: a run that failed before writing leaves no directory behind)."""
        if self._read() == self.owner:
            os.remove(self.path)
            self._remove_if_empty()

    def _remove_if_empty(self) -> None:
        workdir = os.path.dirname(self.path)
        if self.created and os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Interrupted(Exception):
    """A signal stopped what ran inside StopSignals.interrupting()."""


class StopSignals:
    """Catch SIGTERM and SIGINT while training: the handler only records the signal (no I/O);
    `status` is then "preempted" (SIGTERM) or "interrupted" (SIGINT), else None.

    The signal is acknowledged at once, with one line on stderr ("stopping after the current
    step: saving"), even while the main thread waits tens of seconds for a step: Python runs
    its handlers only between bytecodes of the main thread, so the C-level wakeup fd
    (`signal.set_wakeup_fd`) wakes a small thread that writes the line.

    Installed from the main thread (a Python rule); a no-op elsewhere. `uninstall()` (also on
    context exit) restores the previous handlers."""

    STATUS = {signal.SIGTERM: "preempted", signal.SIGINT: "interrupted"}
    SAY = {signal.SIGTERM: "SIGTERM: stopping after the current step: saving",
           signal.SIGINT: "Ctrl-C: stopping after the current step: saving"}

    def __init__(self, stream_fd: int = 2):
        self.signum: int | None = None
        self._interrupting = False
        self._previous = {}
        self._wakeup = None
        if threading.current_thread() is threading.main_thread():
            for signum in self.STATUS:
                self._previous[signum] = signal.signal(signum, self._handler)
            self._acknowledge(stream_fd)

    def _acknowledge(self, stream_fd: int) -> None:
        """The thread that writes the one line when the first SIGINT / SIGTERM arrives."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:                 # not the main thread of the main interpreter
            os.close(read), os.close(write)
            return
        self._wakeup = (read, write, previous)

        def watch():
            try:
                while data := os.read(read, 64):        # b"": uninstalled
                    said = next((self.SAY[s] for s in data if s in self.SAY), None)
                    if said:
                        os.write(stream_fd, f"{said}\n".encode())
                        return
            except OSError:
                pass
            finally:
                os.close(read)

        threading.Thread(target=watch, name="srupp-stop-signals", daemon=True).start()

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.signum is None:
            self.signum = signum
        if self._interrupting:
            self._interrupting = False
            raise Interrupted(self.status)

    def stoppable(self, evaluate, *args):
        """evaluate(*args) (an evaluation, srupp_jax.phases "eval.dev"), or None when a signal
        stopped it (interrupting): within seconds rather than at its end."""
        from srupp_jax import phases
        phases.enter("eval.dev")
        try:
            with self.interrupting():
                return evaluate(*args)
        except Interrupted:
            return None

    @contextlib.contextmanager
    def interrupting(self):
        """Inside, a signal (or one received before) raises Interrupted at once rather than
        waiting for the end of the step; with several processes, only the flag is set."""
        import jax
        alone = jax.process_count() == 1
        if alone and self.signum is not None:
            raise Interrupted(self.status)
        self._interrupting = alone
        try:
            yield
        finally:
            self._interrupting = False

    @property
    def status(self) -> str | None:
        return None if self.signum is None else self.STATUS[self.signum]

    def agreed_status(self) -> str | None:
        """`status` as all processes agree on it: with several processes (hosts), a signal
        seen by any one of them stops every one at the same step (so they save together
        instead of one entering a collective save alone). A collective: every process calls
        it at every step."""
        import jax
        from jax.experimental import multihost_utils
        if jax.process_count() == 1:
            return self.status
        order = [None, "interrupted", "preempted"]
        import numpy as np
        seen = multihost_utils.process_allgather(np.int32(order.index(self.status)))
        return order[int(np.max(seen))]

    def uninstall(self) -> None:
        while self._previous:
            signum, prev = self._previous.popitem()
            signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
        if self._wakeup:
            read, write, previous = self._wakeup
            self._wakeup = None
            signal.set_wakeup_fd(previous)
            os.close(write)            # the thread reads the end of the pipe and returns

    def __enter__(self) -> "StopSignals":
        return self

    def __exit__(self, *exc) -> None:
        self.uninstall()
