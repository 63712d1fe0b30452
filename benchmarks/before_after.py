"""The training step of two revisions of this repository, side by side in one run.

    python benchmarks/before_after.py --before 76e38c6 --after HEAD --rounds 3 -- \
        --config enwik8 --variants "" --batches 8 --d 64 --d_proj 16 --layers 10 --unroll 64 \
        --dtype float32 --impls scan --no-official

Each revision is checked out into a temporary git worktree; `benchmarks/training.py` of that
revision runs with the arguments after `--`, alternating between the revisions for --rounds
rounds (so that a change in the machine's load hits both alike). Prints each round's tokens/s
and the median per revision, and writes JSON (--out). A refactor that should not change speed
is held to this.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkout(rev: str, where: str) -> str:
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", where, rev], check=True,
                   capture_output=True)
    return subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def run(tree: str, args: list, out: str) -> list:
    """The rows of one benchmarks/training.py run of the revision checked out at `tree`."""
    cmd = [sys.executable, os.path.join(tree, "benchmarks", "training.py"), *args, "--out", out]
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)["rows"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, bench = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (
        argv, [])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True)
    p.add_argument("--after", default="HEAD")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                 "before_after.json"))
    args = p.parse_args(ours)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        try:
            for name in ("before", "after"):
                where = os.path.join(tmp, name)
                trees[name] = (where, checkout(getattr(args, name), where))
            results = {name: [] for name in trees}
            for r in range(args.rounds):
                for name, (where, _) in trees.items():
                    rows = run(where, bench, os.path.join(tmp, f"{name}{r}.json"))
                    results[name].append([row["tokens_per_sec"] for row in rows])
                    print(f"round {r + 1} {name} ({trees[name][1]}): "
                          + ", ".join(f"{t:,.0f}" for t in results[name][-1]) + " tokens/s",
                          flush=True)
        finally:
            for where, _ in trees.values():
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", where],
                               capture_output=True)
    medians = {name: [statistics.median(col) for col in zip(*runs)]
               for name, runs in results.items()}
    for i, (b, a) in enumerate(zip(medians["before"], medians["after"])):
        print(f"row {i}: before {b:,.0f}, after {a:,.0f} tokens/s (after / before {a / b:.3f})")
    with open(args.out, "w") as f:
        json.dump(dict(revisions={k: v[1] for k, v in trees.items()}, args=bench,
                       rounds=results, medians=medians), f, indent=1)
    return medians


if __name__ == "__main__":
    main()
