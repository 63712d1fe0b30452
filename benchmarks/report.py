"""The one way the benchmark scripts save their results: JSON with the command that made it."""
import json
import os
import sys


def save_json(path: str, **payload) -> None:
    """Write `payload` plus the command line to `path` (folders created) and say so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(payload, command=" ".join(sys.argv)), f, indent=1)
    print(f"wrote {path}")
