"""The form of every config check: (ok, message) pairs, the first failure raised.

    require([(t.steps >= 1, f"train.steps={t.steps}; expected >= 1"), ...])

A message names the config key and its value, then what was expected (and the fix when it is
not obvious), so that the command line can print it as one line (`error: ...`, exit 2).
"""
from __future__ import annotations

from typing import Iterable, Tuple


def require(checks: Iterable[Tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first (ok, message) pair that is not ok."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
