"""A full disk (or a read-only file system) at each moment a run writes: preparing a dataset,
building a cache, config.json, metrics.jsonl, TensorBoard, a checkpoint, evaluation outputs.
Each stops with one line naming what could not be written and what to do, and leaves the
state resumable: the same command, with space again, finishes the run as if nothing had
happened (the kill harness's comparison, tests/killing.py). The disk is made full by
tests/full_disk.py (the write calls of files matching a pattern fail with ENOSPC), and, where
this machine lets the tests mount one, by a real tmpfs of 600 KB."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import killing
from test_configs import last_json, main_py
from test_faults import TINY_TRANSLATION

ROOT = pathlib.Path(__file__).resolve().parents[1]
FULL = "No space left on device (free some space or use another directory)"


def full_disk(match: str, after: int = 0, code: str = "ENOSPC") -> list:
    """The command prefix that runs a program with that disk full (tests/full_disk.py)."""
    return [sys.executable, "tests/full_disk.py", f"--match={match}", f"--after={after}",
            f"--errno={code}"]


def one_error_line(out) -> str:
    lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return lines[0]


@pytest.fixture
def jax_cache(jax_runs):
    return jax_runs


@pytest.fixture
def straight(straight_runs):
    return straight_runs("lm")


# (what fills up, the files whose writes fail, after how many writes, errno, exit status, the
# line's words); {w}: the workdir, {cache}: the data cache
MOMENTS = [
    ("cache", "*/cache/.*tmp*/train.npy", 0, "ENOSPC", 2, "{cache}/default-"),
    ("config.json", "*/w/config.json*", 0, "ENOSPC", 2, "{w}/config.json: " + FULL),
    ("metrics", "*/w/metrics.jsonl", 3, "ENOSPC", 2, "{w}/metrics.jsonl: " + FULL),
    ("read-only", "*/w/metrics.jsonl", 3, "EROFS", 2,
     "{w}/metrics.jsonl: Read-only file system (a read-only file system; use another "
     "directory)"),
    ("tensorboard", "*/w/tensorboard/*", 4, "ENOSPC", 2, "{w}/tensorboard/train: " + FULL),
    ("checkpoint", "*/_CHECKPOINT_METADATA", 2, "ENOSPC", 1,
     "saving a checkpoint in {w}/checkpoints failed: " + FULL),
]


@pytest.mark.slow
@pytest.mark.parametrize("what,match,after,code,status,says", MOMENTS,
                         ids=[m[0] for m in MOMENTS])
def test_a_full_disk_stops_in_one_line_and_the_rerun_finishes_the_run(
        straight, jax_cache, tmp_path, what, match, after, code, status, says):
    w, cache = tmp_path / "w", tmp_path / "cache"
    cmd = [*full_disk(match, after, code), *killing.command("lm", w, cache)[1:]]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=killing.env(jax_cache))
    assert out.returncode == status, out.stderr[-3000:]
    assert says.format(w=w, cache=cache) in one_error_line(out)
    rerun = killing.run("lm", w, cache, jax_cache)
    assert killing.problems(rerun, w, cache, straight) == []


@pytest.mark.slow
def test_a_full_disk_while_writing_hypotheses_keeps_the_old_ones(tmp_path, jax_cache):
    w, cache = tmp_path / "w", f"--config.data.cache_dir={tmp_path / 'cache'}"
    last_json(main_py(*TINY_TRANSLATION, "--config.train.steps=2",
                      "--config.train.warmup_steps=1", f"--workdir={w}", cache, cache=jax_cache))
    evaluate = [f"--workdir={w}", "--mode=eval", cache]
    last_json(main_py(*evaluate, cache=jax_cache))
    before = (w / "hypotheses.dev.txt").read_bytes()
    out = subprocess.run([*full_disk("*/hypotheses.dev.txt*"), "main.py", *evaluate],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=killing.env(jax_cache))
    assert out.returncode == 2
    assert f"{w}/hypotheses.dev.txt: {FULL}" in one_error_line(out)
    assert (w / "hypotheses.dev.txt").read_bytes() == before
    assert not [p for p in w.iterdir() if "tmp" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize("match", ["*/srupp_source.json", "*/cache/.*tmp*/valid.npy"],
                         ids=["dataset", "cache"])
def test_a_full_disk_while_preparing_leaves_nothing_half_built(tmp_path, match):
    from srupp_jax.data import corpus
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "enwik8").write_bytes(corpus.embedded_corpus(40_000)[0])
    data, cache = tmp_path / "tfds", tmp_path / "cache"
    args = ["-m", "srupp_jax.data.prepare", "--dataset=enwik8",
            f"--manual_dir={tmp_path / 'src'}", f"--data_dir={data}", f"--cache_dir={cache}",
            "--allow_modified_source"]
    out = subprocess.run([*full_disk(match), *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 2
    where = data / "enwik8" / "1.0.0" if "source" in match else cache
    assert f"{where}" in one_error_line(out) and FULL in one_error_line(out)
    half = [p for p in (*data.rglob("*"), *cache.rglob("*")) if "tmp" in p.name]
    assert not half and ("source" not in match or not (data / "enwik8" / "1.0.0").exists())
    again = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_a_real_full_disk_during_a_save(tmp_path, jax_cache):
    """A tmpfs of 600 KB holds the workdir (where the machine lets the tests mount one): the
    run stops at the first write that does not fit (a checkpoint, exit 1, or a metrics row,
    exit 2), in one line; moved to a disk with space, the same command finishes it."""
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        args = [*killing.TASKS["lm"].args, "--config.model.d=64", "--config.model.d_proj=16",
                "--config.train.checkpoint_every=1", f"--config.data.cache_dir={tmp_path}/c"]
        out = main_py(*args, f"--workdir={small / 'w'}", cache=jax_cache)
        assert out.returncode in (1, 2)
        line = one_error_line(out)
        assert str(small / "w") in line and FULL in line, line
        shutil.copytree(small / "w", tmp_path / "w")
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    done = last_json(main_py(*args, f"--workdir={tmp_path / 'w'}", cache=jax_cache))
    rows = [json.loads(r) for r in open(tmp_path / "w" / "metrics.jsonl")]
    keys = [(r["step"], r["split"]) for r in rows]
    assert done["status"] == "finished" and len(keys) == len(set(keys))
    assert not [p for p in (tmp_path / "w").rglob("*") if "tmp" in p.name]
    assert os.listdir(tmp_path / "w" / "checkpoints")
