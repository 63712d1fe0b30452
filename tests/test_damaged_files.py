"""Damaged files are found, never trusted (through main.py, as a user's disk leaves them): a
truncated, empty or garbled cache (token arrays, vocabulary, BPE model, subword ids and texts)
is rebuilt, saying so, and the run's results are those of the sound cache; a damaged record
(config.json, config_changes.jsonl, metrics.jsonl, the lock, a prepared TFDS dataset) stops
the run with one line naming the file and what to do, before anything is written."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from test_configs import SIZES, jax_cache, last_json, main_py  # noqa: F401 (a fixture)
from test_faults import TINY, TINY_TRANSLATION, flip_byte

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = ["--config.train.steps=2", "--config.train.warmup_steps=1",
         "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
         "--config.train.log_every=1"]
LM = [*TINY, *STEPS]
TRANSLATION = [*TINY_TRANSLATION, *STEPS]
WORDS = ["--config=configs/text.py", "--config.data.unit=word", *SIZES,
         "--config.eval.batch_size=2"]


def damage(path: pathlib.Path, how: str) -> None:
    if how == "half":
        os.truncate(path, path.stat().st_size // 2)
    elif how == "empty":
        path.write_bytes(b"")
    else:                                   # garbled: a byte flipped in the middle
        flip_byte(path)


def error_line(out) -> str:
    lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return lines[0]


def trained(root, args, jax_cache):
    """(workdir, data cache) of a run trained by main.py in `root`."""
    w, cache = root / "w", root / "cache"
    last_json(main_py(*args, f"--workdir={w}", f"--config.data.cache_dir={cache}",
                      cache=jax_cache))
    return w, cache


def use(run_root, tmp_path):
    """A copy of a trained workdir and its cache (damaged by the test)."""
    shutil.copytree(run_root, tmp_path / "run")
    return tmp_path / "run" / "w", tmp_path / "run" / "cache"


def cache_file(cache, name):
    [path] = [p for p in cache.glob(f"*/{name}")]
    return path


def evaluate(w, cache, jax_cache, *args):
    return main_py(f"--workdir={w}", "--mode=eval", f"--config.data.cache_dir={cache}", *args,
                   cache=jax_cache)


@pytest.fixture(scope="module")
def lm(tmp_path_factory, jax_cache):
    root = tmp_path_factory.mktemp("lm")
    w, cache = trained(root, LM, jax_cache)
    return root, last_json(evaluate(w, cache, jax_cache))


# ---------------------------------------------------------------------------------- caches
@pytest.mark.slow
@pytest.mark.parametrize("name,how", [("train.npy", "half"), ("valid.npy", "empty"),
                                      ("test.npy", "garbled"), ("meta.json", "garbled")])
def test_a_damaged_token_cache_is_rebuilt(lm, jax_cache, tmp_path, name, how):
    """A token cache cut in half used to stop with 'mmap length is greater than file size'
    (neither the file nor the fix named, nothing rebuilt)."""
    root, sound = lm
    w, cache = use(root, tmp_path)
    path = cache_file(cache, name)
    damage(path, how)
    out = evaluate(w, cache, jax_cache)
    assert last_json(out) == sound                     # the same numbers as the sound cache
    [line] = [x for x in out.stderr.splitlines() if "is damaged" in x]
    assert str(path) in line and line.endswith("rebuilding it"), line
    assert "mmap length" not in out.stderr and not list(cache.glob(".*tmp*"))


@pytest.mark.slow
def test_a_damaged_vocabulary_is_rebuilt(tmp_path_factory, jax_cache, tmp_path):
    from test_configs import _sentences
    root = tmp_path_factory.mktemp("words")
    (root / "words.txt").write_text("\n".join(_sentences(600, 0)) + "\n")
    run_root = root / "run"
    trained(run_root, [*WORDS, f"--config.data.path={root / 'words.txt'}"], jax_cache)
    w, cache = run_root / "w", run_root / "cache"
    sound = last_json(evaluate(w, cache, jax_cache))
    vocab = cache_file(cache, "vocab.txt")
    vocab.write_text("\n".join(vocab.read_text().split("\n")[::-1]))    # reordered ids
    out = evaluate(w, cache, jax_cache)
    assert last_json(out) == sound and f"{vocab} is damaged" in out.stderr


@pytest.fixture(scope="module")
def translation(tmp_path_factory, jax_cache):
    root = tmp_path_factory.mktemp("translation")
    (root / "in.de").write_text("dreiundzwanzig Katzen\nim Jahr zweitausendeins\n")
    w, cache = trained(root, TRANSLATION, jax_cache)
    sound = translate(w, cache, root / "in.de", root / "sound.en", jax_cache)
    assert sound.returncode == 0, sound.stderr[-3000:]
    return root


def translate(w, cache, source, target, jax_cache):
    return main_py(f"--workdir={w}", "--mode=translate", f"--input={source}",
                   f"--output={target}", f"--config.data.cache_dir={cache}", cache=jax_cache)


@pytest.mark.slow
@pytest.mark.parametrize("name,how", [("spm.model", "half"), ("train.src.npy", "garbled"),
                                      ("valid.tgt.raw.txt", "empty")])
def test_a_damaged_bpe_cache_is_rebuilt(translation, jax_cache, tmp_path, name, how):
    w, cache = use(translation, tmp_path)
    path = cache_file(cache, name)
    damage(path, how)
    out = translate(w, cache, translation / "in.de", tmp_path / "out.en", jax_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{path} is damaged" in out.stderr and "rebuilding it" in out.stderr
    assert (tmp_path / "out.en").read_text() == (translation / "sound.en").read_text()


# --------------------------------------------------------------------------------- records
def untouched(w, before):
    """Nothing of the workdir changed (its files and their bytes), no lock left."""
    now = {p.relative_to(w): p.read_bytes() for p in w.rglob("*") if p.is_file()}
    assert now == before


def snapshot(w):
    return {p.relative_to(w): p.read_bytes() for p in w.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("content", [b'{"data": {"cache_dir" "/x"}, "model": {}}', b"",
                                     b"[1, 2]"], ids=["garbled", "empty", "not-a-config"])
def test_a_damaged_config_json_is_named_with_the_fix(lm, jax_cache, tmp_path, content):
    """It used to be `error: Expecting property name enclosed in double quotes: line 1 column
    20 (char 19)` (which file?)."""
    w, cache = use(lm[0], tmp_path)
    (w / "config.json").write_bytes(content)
    before = snapshot(w)
    for out in (evaluate(w, cache, jax_cache),
                main_py(*LM, "--config.train.steps=4", f"--workdir={w}",
                        f"--config.data.cache_dir={cache}", cache=jax_cache)):
        assert out.returncode == 2
        line = error_line(out)
        assert f"{w / 'config.json'} is damaged (" in line and "restore it from a copy" in line
        untouched(w, before)


@pytest.mark.slow
def test_damaged_change_record_metrics_and_lock_stop_in_one_line(lm, jax_cache, tmp_path):
    w, cache = use(lm[0], tmp_path)
    more = [*LM, "--config.train.steps=4", f"--workdir={w}", f"--config.data.cache_dir={cache}"]
    cases = [  # (file, content, exit status, what the line says)
        ("config_changes.jsonl", b'{"step": 2, "key": "train.lr", "old": 1, "new": 2}\n{"st',
         2, "config_changes.jsonl is damaged at line 2"),
        ("metrics.jsonl", None, 2, "metrics.jsonl is damaged at line 2"),
        ("lock", b'{"host": "h", "pid"', 1, "lock is damaged (not a lock"),
        ("lock", b"", 1, "lock is damaged (empty)"),
    ]
    metrics = (w / "metrics.jsonl").read_bytes()
    for name, content, code, says in cases:
        if content is None:                            # a garbled line amid the record
            lines = metrics.split(b"\n")
            content = b"\n".join([lines[0], lines[1][:5] + b"\xff" + lines[1][6:], *lines[2:]])
        (w / name).write_bytes(content)
        before = snapshot(w)
        out = main_py(*more, cache=jax_cache)
        assert out.returncode == code, out.stderr[-2000:]
        line = error_line(out)
        assert says in line and ("--force" in line if name == "lock" else
                                 "restore it from a copy" in line), line
        untouched(w, before)
        (w / name).unlink()
        if name == "metrics.jsonl":
            (w / name).write_bytes(metrics)
    out = main_py(*more, cache=jax_cache)     # sound again: resumes and finishes
    assert last_json(out)["step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("tail", [b'{"step": 3, "split": "tr', b"\0" * 64],
                         ids=["cut-short", "nul-bytes"])
def test_an_unfinished_last_metrics_line_is_dropped(lm, jax_cache, tmp_path, tail):
    """What a run killed while writing a row leaves (or a crash's NUL bytes): not damage."""
    w, cache = use(lm[0], tmp_path)
    with open(w / "metrics.jsonl", "ab") as f:
        f.write(tail)
    out = main_py(*LM, "--config.train.steps=3", f"--workdir={w}",
                  f"--config.data.cache_dir={cache}", cache=jax_cache)
    assert last_json(out)["step"] == 3
    rows = [json.loads(r) for r in open(w / "metrics.jsonl")]
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys)) and (3, "train") in keys


# ----------------------------------------------------------------- prepared TFDS datasets
@pytest.mark.slow
@pytest.mark.parametrize("name", ["dataset_info.json", "srupp_source.json", "shard"])
def test_a_damaged_prepared_dataset_is_refused_with_the_command_that_prepares_it(
        tmp_path, jax_cache, name):
    from srupp_jax.data import corpus
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "enwik8").write_bytes(corpus.embedded_corpus(40_000)[0])
    data = tmp_path / "tfds"
    prepare = [sys.executable, "-m", "srupp_jax.data.prepare", "--dataset=enwik8",
               f"--manual_dir={tmp_path / 'src'}", f"--data_dir={data}",
               f"--cache_dir={tmp_path / 'cache0'}", "--allow_modified_source"]
    assert subprocess.run(prepare, cwd=ROOT, capture_output=True).returncode == 0
    prepared = data / "enwik8" / "1.0.0"
    path = (max(prepared.glob("*train.array_record*"), key=lambda p: p.stat().st_size)
            if name == "shard" else prepared / name)
    flip_byte(path, 0.3)
    train = ["--config=configs/enwik8.py", *SIZES, f"--config.data.data_dir={data}",
             f"--config.data.cache_dir={tmp_path / 'cache'}", f"--workdir={tmp_path / 'w'}"]
    out = main_py(*train, cache=jax_cache)
    assert out.returncode == 2
    line = error_line(out)
    assert f"{path} is damaged" in line and "srupp_jax.data.prepare --dataset=enwik8" in line
    assert line.endswith("--overwrite") and not (tmp_path / "w").exists()
    fixed = subprocess.run([*prepare, "--overwrite"], cwd=ROOT, capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert last_json(main_py(*train, cache=jax_cache))["status"] == "finished"
