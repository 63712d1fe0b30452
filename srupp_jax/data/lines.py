"""Text files of one item a line (sentences to translate, hypotheses, texts to classify):
read with their encoding checked ("-": stdin) and written ("-": stdout)."""
from __future__ import annotations

import sys
from typing import List, Sequence

from srupp_jax import files


def read_lines(path: str) -> List[str]:
    """The lines of `path` ("-": stdin) without their newlines; ValueError naming the file
    and the byte offset when it is not UTF-8."""
    if path == "-":
        data, name = sys.stdin.buffer.read(), "stdin"
    else:
        with open(path, "rb") as f:
            data, name = f.read(), path
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8 text (byte {e.start}); convert it, e.g. iconv "
                         "-t utf-8") from None
    return text.splitlines()


def write_lines(path: str, lines: Sequence[str]) -> None:
    """`lines` to `path` ("-": stdout), one a line; a file is written atomically (a full disk
    or a kill leaves the old file, and the error names the path)."""
    text = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        files.write_atomic(path, text)
