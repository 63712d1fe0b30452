"""How the programs log (main.py / srupp, the study, prepare): short lines a reader can follow.

    10:49:58 model srupp: 9,170 parameters
    10:49:58 recurrence: scan (CPU)
    10:50:03 warning: 2 step(s) up to step 300 had a non-finite loss or gradient; ...

`setup()` (called by each program's main) shows this package's INFO lines by default, each as
the time and the message (`warning: ` / `error: ` before what the user should act on); other
libraries' lines (Orbax, JAX, TFDS) only from WARNING up, without their known noise (NOISE);
Python warnings become one such line. `--verbosity=N` (absl's flag) given explicitly shows
every library's lines at that level.
"""
from __future__ import annotations

import logging as std
import os
import re
import time

from absl import flags, logging

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS = tuple(os.path.join(_ROOT, name) + os.sep for name in ("srupp_jax", "pallas_kernels"))
NOISE = (
    "tracked_metric`; did not provide metrics",   # Orbax, at every save without dev metrics
    # Orbax's threads, when a save fails (a full disk): the run's one line says it
    "_SignalingThread.run() raised an exception", "Failed to write metadata=",
    "Failed to update metadata=",
    "Handler Commit operations or the Commit callback", "Save Finalize thread",
)
_WARNING = re.compile(r"^.*?:\d+: (\w+): (.*)$")         # warnings.formatwarning's first line


class ShortFormatter(std.Formatter):
    """HH:MM:SS message; `warning: ` / `error: ` before WARNING / ERROR and above."""

    def format(self, record: std.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":          # "file:line: UserWarning: text\n  source"
            match = _WARNING.match(message.splitlines()[0] if message else "")
            message = f"{match.group(2)} ({match.group(1)})" if match else message
        level = ("" if record.levelno < std.WARNING else
                 "warning: " if record.levelno < std.ERROR else "error: ")
        return f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {level}{message}"


class Quiet(std.Filter):
    """Keeps this package's lines, and other libraries' from WARNING up (`everything`: every
    line at the logger's level), without NOISE."""

    def __init__(self, everything: bool = False):
        super().__init__()
        self.everything = everything

    def filter(self, record: std.LogRecord) -> bool:
        if any(n in record.getMessage() for n in NOISE):
            return False
        return (self.everything or record.levelno >= std.WARNING
                or record.pathname.startswith(OURS))


def setup() -> None:
    """Short INFO lines on stderr for this program (see the module docstring); idempotent."""
    logging.use_absl_handler()
    if not flags.FLAGS.is_parsed():       # argparse programs: absl's flags keep defaults
        flags.FLAGS.mark_as_parsed()
    explicit = bool(flags.FLAGS["verbosity"].present)
    if not explicit:
        logging.set_verbosity(logging.INFO)
    handler = logging.get_absl_handler()
    handler.setFormatter(ShortFormatter())
    for old in [f for f in handler.filters if isinstance(f, Quiet)]:
        handler.removeFilter(old)
    handler.addFilter(Quiet(everything=explicit))
    std.captureWarnings(True)
