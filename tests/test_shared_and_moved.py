"""Two runs preparing the same dataset or cache at once both end with a correct one (one
builds, the other waits, saying so, and reuses it); a workdir moved or copied to another
path (or another machine, without the data cache) resumes and evaluates, and nothing in it
holds the absolute path it was made at."""
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

import killing
from test_configs import SIZES, WORDS, last_json, main_py

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def jax_cache(jax_runs):
    return jax_runs


def start_paused(cmd, log, phase, jax_cache):
    """Start `cmd` so that it sleeps 5 s on entering `phase` (holding what it builds); return
    once it is there."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=killing.env(jax_cache, SRUPP_JAX_PHASES=str(log),
                                                       SRUPP_JAX_AT=f"{phase}=sleep:5"))
    deadline = time.time() + 300
    while not (log.exists() and phase in log.read_text().split()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    return proc


@pytest.mark.slow
def test_two_preparations_of_one_dataset_at_once(tmp_path, jax_cache):
    from srupp_jax.data import corpus
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "enwik8").write_bytes(corpus.embedded_corpus(40_000)[0])
    data, cache = tmp_path / "tfds", tmp_path / "cache"
    prepare = [sys.executable, "-m", "srupp_jax.data.prepare", "--dataset=enwik8",
               f"--manual_dir={tmp_path / 'src'}", f"--data_dir={data}", f"--cache_dir={cache}",
               "--allow_modified_source"]
    first = start_paused(prepare, tmp_path / "phases.log", "prepare.build", jax_cache)
    second = subprocess.run(prepare, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=killing.env(jax_cache))
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert "waiting for another process building the prepared enwik8" in second.stderr
    assert out.splitlines()[-1] == second.stdout.splitlines()[-1]       # the same cache
    assert [p.name for p in (data / "enwik8").iterdir() if not p.name.startswith(".")] == [
        "1.0.0"]
    assert not [p for p in (*data.rglob("*"), *cache.rglob("*")) if "tmp" in p.name]
    from srupp_jax.data import datasets
    tokens = datasets.load_tokens("enwik8", data_dir=str(data), cache_dir=str(cache))
    assert tokens.train.shape[0] == 36_000


@pytest.mark.slow
def test_two_runs_building_one_token_cache_at_once(tmp_path, jax_cache):
    (tmp_path / "words.txt").write_text(
        "\n".join(" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(9))
                  for i in range(3000)) + "\n")
    run = lambda w: [sys.executable, "main.py", "--config=configs/text.py",
                     "--config.data.unit=word", f"--config.data.path={tmp_path / 'words.txt'}",
                     *SIZES, f"--config.data.cache_dir={tmp_path / 'cache'}", f"--workdir={w}"]
    first = start_paused(run(tmp_path / "a"), tmp_path / "phases.log", "cache.build",
                         jax_cache)
    log = tmp_path / "second.log"
    second = subprocess.run(run(tmp_path / "b"), cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=killing.env(jax_cache, SRUPP_JAX_PHASES=str(log)))
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert "waiting for another process building the token cache of text" in second.stderr
    assert "cache.build" not in log.read_text().split()                  # built once
    volatile = lambda r: {k: v for k, v in r.items() if k not in killing.VOLATILE}
    assert volatile(killing.final_json(out)) == volatile(killing.final_json(second.stdout))
    caches = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(caches) == 1 and not list((tmp_path / "cache").glob(".*tmp*"))


@pytest.fixture
def straight(straight_runs):
    return straight_runs("lm")


@pytest.mark.slow
def test_a_moved_workdir_resumes_and_a_copy_evaluates_elsewhere(straight, jax_cache, tmp_path):
    first, cache = tmp_path / "first" / "w", tmp_path / "cache"
    out = subprocess.run([*killing.command("lm", first, cache), "--config.train.stop_at=6"],
                         cwd=ROOT, capture_output=True, text=True, env=killing.env(jax_cache))
    assert killing.final_json(out.stdout)["status"] == "stopped", out.stderr[-3000:]
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(first, moved)
    rerun = killing.run("lm", moved, cache, jax_cache)
    assert "resumed from step 6" in rerun.stderr
    assert killing.problems(rerun, moved, cache, straight) == []
    # (Orbax's commit_success.txt markers say where they were written: only their presence
    # is read, atomicity.py)
    held = [p for p in moved.rglob("*") if p.is_file() and p.name != "commit_success.txt"
            and str(first).encode() in p.read_bytes()]
    assert not held, held
    # another machine: a copy at another path, without the data cache it was trained with
    copy = tmp_path / "machine2" / "run"
    shutil.copytree(moved, copy)
    evaluate = lambda w: last_json(main_py(f"--workdir={w}", "--mode=eval", cache=jax_cache))
    here = evaluate(moved)
    shutil.rmtree(cache)
    assert evaluate(copy) == here
