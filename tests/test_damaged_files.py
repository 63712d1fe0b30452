"""Damaged files are found, never trusted (through main.py for every kind of file, as a user's
disk leaves them; the other kinds of damage of the same file in the process): a truncated,
empty or garbled cache (token arrays, vocabulary, BPE model, subword ids and texts) is
rebuilt, saying so, and the run's results are those of the sound cache; a damaged record
(config.json, config_changes.jsonl, metrics.jsonl, the lock, a prepared TFDS dataset) stops
the run with one line naming the file and what to do, before anything is written."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from test_configs import SIZES, _sentences, last_json, main_py
from test_faults import TINY, TINY_TRANSLATION, flip_byte

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = ["--config.train.steps=2", "--config.train.warmup_steps=1",
         "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
         "--config.train.log_every=1"]
LM = [*TINY, *STEPS]


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


def cache_file(cache, name):
    [path] = [p for p in pathlib.Path(cache).glob(f"*/{name}")]
    return path


@pytest.fixture
def jax_cache(jax_runs):
    return jax_runs


def evaluate(w, cache, jax_cache):
    return main_py(f"--workdir={w}", "--mode=eval", f"--config.data.cache_dir={cache}",
                   cache=jax_cache)


@pytest.fixture(scope="module")
def lm(tmp_path_factory, jax_runs):
    """(root holding a workdir w trained 2 steps by main.py and its data cache, its eval)."""
    root = tmp_path_factory.mktemp("lm")
    last_json(main_py(*LM, f"--workdir={root / 'w'}", f"--config.data.cache_dir={root / 'c'}",
                      cache=jax_runs))
    return root, last_json(evaluate(root / "w", root / "c", jax_runs))


def use(lm, tmp_path):
    """A copy of the trained workdir and its cache (the test damages it)."""
    shutil.copytree(lm[0], tmp_path / "run")
    return tmp_path / "run" / "w", tmp_path / "run" / "c"


# ---------------------------------------------------------------------------------- caches
@pytest.mark.slow
def test_a_token_cache_cut_in_half_is_rebuilt(lm, jax_cache, tmp_path):
    """It used to stop with 'error: mmap length is greater than file size' (neither the file
    nor the fix named, nothing rebuilt)."""
    w, cache = use(lm, tmp_path)
    path = cache_file(cache, "train.npy")
    damage(path, "half")
    out = evaluate(w, cache, jax_cache)
    assert last_json(out) == lm[1]                  # the same numbers as the sound cache
    [line] = [x for x in out.stderr.splitlines() if "is damaged" in x]
    assert f"{path} is damaged (" in line and line.endswith("rebuilding it"), line
    assert "mmap length" not in out.stderr and not list(cache.glob(".*tmp*"))


@pytest.mark.parametrize("name,how", [("valid.npy", "empty"), ("test.npy", "garbled"),
                                      ("meta.json", "garbled"), ("meta.json", "still JSON"),
                                      ("vocab.txt", "reordered")])
def test_any_damage_to_a_token_cache_is_found_and_rebuilt(tmp_path, caplog, name, how):
    from srupp_jax.data import datasets
    (tmp_path / "words.txt").write_text("\n".join(_sentences(300, 0)) + "\n")
    load = lambda: datasets.load_tokens("text", cache_dir=str(tmp_path / "c"), text_source=dict(
        path=str(tmp_path / "words.txt"), unit="word"))
    sound = load()      # its arrays copied: damage under a memory map of them is a bus error
    arrays = {split: np.array(getattr(sound, split)) for split in ("train", "valid", "test")}
    path = cache_file(tmp_path / "c", name)
    if how == "still JSON":        # (a changed number: still JSON, not what was written)
        path.write_text(path.read_text().replace('"vocab_size": ', '"vocab_size": 1'))
    elif how == "reordered":
        path.write_text("\n".join(path.read_text().split("\n")[::-1]))
    else:
        damage(path, how)
    again = load()
    assert f"{path} is damaged" in caplog.text and "rebuilding it" in caplog.text
    assert again.vocab.tokens == sound.vocab.tokens
    for split, tokens in arrays.items():
        np.testing.assert_array_equal(getattr(again, split), tokens)


def loss_and_norm(smoke) -> tuple:
    """The loss and gradient norm --mode=smoke printed."""
    return re.search(r"loss ([\d.]+) nats.*grad norm ([\d.]+)", smoke.stdout).groups()


@pytest.mark.slow
def test_a_damaged_vocabulary_is_rebuilt(tmp_path, jax_cache):
    """--mode=smoke of a words model reads the vocabulary's size from the data."""
    (tmp_path / "words.txt").write_text("\n".join(_sentences(600, 0)) + "\n")
    smoke = lambda: main_py("--config=configs/text.py", "--config.data.unit=word", *SIZES,
                            f"--config.data.path={tmp_path / 'words.txt'}", "--mode=smoke",
                            f"--config.data.cache_dir={tmp_path / 'c'}", cache=jax_cache)
    sound = smoke()
    assert sound.returncode == 0, sound.stderr[-3000:]
    vocab = cache_file(tmp_path / "c", "vocab.txt")
    vocab.write_text("\n".join(vocab.read_text().split("\n")[::-1]))       # reordered ids
    out = smoke()
    assert out.returncode == 0 and f"{vocab} is damaged" in out.stderr
    assert loss_and_norm(out) == loss_and_norm(sound)


@pytest.mark.slow
def test_a_damaged_bpe_model_is_rebuilt(tmp_path, jax_cache):
    """--mode=smoke of the translation task reads the BPE's size from the data."""
    smoke = lambda: main_py(*TINY_TRANSLATION, "--mode=smoke",
                            f"--config.data.cache_dir={tmp_path / 'c'}", cache=jax_cache)
    sound = smoke()
    assert sound.returncode == 0, sound.stderr[-3000:]
    model = cache_file(tmp_path / "c", "spm.model")
    damage(model, "half")
    out = smoke()
    assert out.returncode == 0 and f"{model} is damaged" in out.stderr
    assert loss_and_norm(out) == loss_and_norm(sound)


@pytest.mark.parametrize("name,how", [("train.src.npy", "garbled"),
                                      ("valid.tgt.raw.txt", "empty"),
                                      ("test.src_offsets.npy", "half")])
def test_any_damage_to_a_translation_cache_is_found_and_rebuilt(tmp_path, caplog, name, how):
    from srupp_jax.data import translation_data
    load = lambda: translation_data.load_translation(
        "numbers_de_en", cache_dir=str(tmp_path / "c"),
        numbers_sizes=dict(train=200, valid=20, test=20))
    sound = load()
    flat = {split: np.array(sound.split(split).src.flat) for split in ("train", "valid", "test")}
    path = cache_file(tmp_path / "c", name)
    damage(path, how)
    again = load()
    assert f"{path} is damaged" in caplog.text and "rebuilding it" in caplog.text
    for split in ("train", "valid", "test"):
        a, b = sound.split(split), again.split(split)
        assert a.tgt_raw == b.tgt_raw and a.src_text == b.src_text
        np.testing.assert_array_equal(flat[split], b.src.flat)
        np.testing.assert_array_equal(a.src.offsets, b.src.offsets)


# --------------------------------------------------------------------------------- records
def snapshot(w):
    return {p.relative_to(w): p.read_bytes() for p in w.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_garbled_config_json_is_named_with_the_fix(lm, jax_cache, tmp_path):
    """It used to be `error: Expecting property name enclosed in double quotes: line 1 column
    20 (char 19)` (which file?). Eval and a rerun of training both stop, changing nothing."""
    w, cache = use(lm, tmp_path)
    (w / "config.json").write_bytes(b'{"data": {"cache_dir" "/x"}, "model": {}}')
    before = snapshot(w)
    for out in (evaluate(w, cache, jax_cache),
                main_py(*LM, "--config.train.steps=4", f"--workdir={w}",
                        f"--config.data.cache_dir={cache}", cache=jax_cache)):
        assert out.returncode == 2
        line = error_line(out)
        assert line.startswith(f"error: {w / 'config.json'} is damaged (not JSON: Expecting ':' "
                               "delimiter: line 1 column 23 (char 22)); it records the config "
                               "this run trained with: restore it from a copy"), line
        assert snapshot(w) == before


@pytest.mark.parametrize("content", [b"", b"[1, 2]", b'{"model": {"d": 16}}'],
                         ids=["empty", "not-a-dict", "not-a-config"])
def test_any_damaged_config_json_is_refused(tmp_path, content):
    from srupp_jax.files import DamagedFile
    from srupp_jax.training import run_config
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(DamagedFile, match="config.json is damaged .*restore it from a copy"):
        run_config.load(str(tmp_path))


@pytest.mark.slow
def test_damaged_change_record_metrics_and_lock_stop_in_one_line(lm, jax_cache, tmp_path):
    w, cache = use(lm, tmp_path)
    more = [*LM, "--config.train.steps=4", f"--workdir={w}", f"--config.data.cache_dir={cache}"]
    metrics = (w / "metrics.jsonl").read_bytes()
    lines = metrics.split(b"\n")
    garbled = b"\n".join([lines[0], lines[1][:5] + b"\xff" + lines[1][6:], *lines[2:]])
    cases = [  # (file, content, exit status, what the line says)
        ("config_changes.jsonl", b'{"step": 2, "key": "train.lr", "old": 1, "new": 2}\n{"st',
         2, "config_changes.jsonl is damaged at line 2"),
        ("metrics.jsonl", garbled, 2, "metrics.jsonl is damaged at line 2"),
        ("lock", b'{"host": "h", "pid"', 1, "lock is damaged (not a lock"),
        ("lock", b"", 1, "lock is damaged (empty)"),
    ]
    for name, content, code, says in cases:
        (w / name).write_bytes(content)
        before = snapshot(w)
        out = main_py(*more, cache=jax_cache)
        assert out.returncode == code, out.stderr[-2000:]
        line = error_line(out)
        assert says in line and ("--force" in line if name == "lock" else
                                 "restore it from a copy" in line), line
        assert snapshot(w) == before
        (w / name).unlink()
        if name == "metrics.jsonl":
            (w / name).write_bytes(metrics)
    out = main_py(*more, cache=jax_cache)     # sound again: resumes and finishes
    assert last_json(out)["step"] == 4


@pytest.mark.slow
def test_an_unfinished_last_metrics_row_is_dropped(lm, jax_cache, tmp_path):
    """What a run killed while writing a row leaves is not damage: the row is dropped."""
    w, cache = use(lm, tmp_path)
    with open(w / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 3, "split": "tr')
    out = main_py(*LM, "--config.train.steps=3", f"--workdir={w}",
                  f"--config.data.cache_dir={cache}", cache=jax_cache)
    assert last_json(out)["step"] == 3
    rows = [json.loads(r) for r in open(w / "metrics.jsonl")]
    keys = [(r["step"], r["split"]) for r in rows]
    assert len(keys) == len(set(keys)) and (3, "train") in keys


def test_nul_bytes_a_crash_leaves_after_the_last_row_are_dropped(tmp_path):
    from srupp_jax.training.metrics import MetricWriter, check_record, read_metrics
    with MetricWriter(tmp_path, tensorboard=False, devices=1) as w:
        w.write(1, {"loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "ab") as f:
        f.write(b"\0" * 64)
    check_record(tmp_path)
    with MetricWriter(tmp_path, tensorboard=False, devices=1, resume_step=1) as w:
        w.write(2, {"loss": 1.0})
    assert b"\0" not in (tmp_path / "metrics.jsonl").read_bytes()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


# ----------------------------------------------------------------- prepared TFDS datasets
@pytest.fixture(scope="module")
def enwik8(tmp_path_factory):
    """A tiny enwik8 (modified source) prepared by `python -m srupp_jax.data.prepare`."""
    from srupp_jax.data import corpus
    root = tmp_path_factory.mktemp("enwik8")
    (root / "src").mkdir()
    (root / "src" / "enwik8").write_bytes(corpus.embedded_corpus(40_000)[0])
    prepare = [sys.executable, "-m", "srupp_jax.data.prepare", "--dataset=enwik8",
               f"--manual_dir={root / 'src'}", f"--data_dir={root / 'tfds'}",
               f"--cache_dir={root / 'cache0'}", "--allow_modified_source"]
    assert subprocess.run(prepare, cwd=ROOT, capture_output=True).returncode == 0
    return root, prepare


def shard(prepared):
    return max(prepared.glob("*train.array_record*"), key=lambda p: p.stat().st_size)


@pytest.mark.slow
def test_a_damaged_prepared_dataset_is_refused_with_the_command_that_prepares_it(
        enwik8, tmp_path, jax_cache):
    root, prepare = enwik8
    shutil.copytree(root / "tfds", tmp_path / "tfds")
    prepared = tmp_path / "tfds" / "enwik8" / "1.0.0"
    flip_byte(shard(prepared), 0.3)
    train = ["--config=configs/enwik8.py", *SIZES, f"--config.data.data_dir={tmp_path / 'tfds'}",
             f"--config.data.cache_dir={tmp_path / 'cache'}", f"--workdir={tmp_path / 'w'}"]
    out = main_py(*train, cache=jax_cache)
    assert out.returncode == 2
    line = error_line(out)
    assert f"{shard(prepared)} is damaged" in line, line
    assert "srupp_jax.data.prepare --dataset=enwik8" in line and line.endswith("--overwrite")
    assert not (tmp_path / "w").exists()
    again = [a.replace(str(root / "tfds"), str(tmp_path / "tfds")) for a in prepare]
    fixed = subprocess.run([*again, "--overwrite"], cwd=ROOT, capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert last_json(main_py(*train, cache=jax_cache))["status"] == "finished"


@pytest.mark.parametrize("name", ["dataset_info.json", "srupp_source.json"])
def test_any_damaged_prepared_record_is_refused(enwik8, tmp_path, name):
    from srupp_jax.data import datasets
    from srupp_jax.files import DamagedFile
    shutil.copytree(enwik8[0] / "tfds", tmp_path / "tfds")
    path = tmp_path / "tfds" / "enwik8" / "1.0.0" / name
    flip_byte(path, 0.3)
    with pytest.raises(DamagedFile, match=f"{path} is damaged.*--overwrite"):
        datasets.load_tokens("enwik8", data_dir=str(tmp_path / "tfds"),
                             cache_dir=str(tmp_path / "cache"))
