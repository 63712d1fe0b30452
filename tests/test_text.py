"""configs/text.py: your own text, byte and word level, through main.py; the token cache is
keyed by the files' contents."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from srupp_jax.data import datasets, text
from srupp_jax.data.vocab import EOS

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZES = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2",
         "--config.train.batch_size=2", "--config.train.unroll=8", "--config.train.steps=2",
         "--config.train.warmup_steps=1", "--config.train.log_every=1",
         "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
         "--config.eval.batch_size=1", "--config.eval.unroll=16", "--config.eval.mem_len=16"]


def _words(n_lines, n_words=150, seed=0):
    """n_lines lines over a vocabulary of n_words made-up words."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(n_words)]
    return "\n".join(" ".join(rng.choice(vocab, rng.integers(3, 10))) for _ in range(n_lines))


def _main(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["byte", "word"])
def test_text_config_trains_evaluates_generates(unit, tmp_path):
    source = tmp_path / "my.txt"
    source.write_text(_words(600) + "\n")
    workdir = tmp_path / "run"
    common = [f"--workdir={workdir}", f"--config.data.cache_dir={tmp_path / 'cache'}"]
    out = _main("--config=configs/text.py", f"--config.data.path={source}",
                f"--config.data.unit={unit}", *common, *SIZES)
    metric = "ppl" if unit == "word" else "bpc"
    assert json.loads(out.stdout.splitlines()[-1])[f"dev_{metric}"] > 0
    saved = json.loads((workdir / "config.json").read_text())["model"]
    data = datasets.load_tokens("text", cache_dir=tmp_path / "cache", text_source=dict(
        path=str(source), valid_path="", test_path="", unit=unit))
    assert saved["vocab_size"] == data.vocab_size
    if unit == "word":    # 150 words + <eos> + <unk>: adaptive softmax at V/20 and V/4
        assert data.vocab_size == 152 and data.vocab.tokens[0] == EOS
        assert saved["cutoffs"] == [152 // 20, 152 // 4]
    else:
        assert saved["vocab_size"] == 256 and saved["cutoffs"] == []
    evaluated = json.loads(_main(*common[:1], "--mode=eval").stdout.splitlines()[-1])
    assert evaluated[f"test_{metric}"] > 0
    prompt = "w1 w2" if unit == "word" else "w1 "
    sample = _main(*common[:1], "--mode=generate", f"--prompt={prompt}", "--num_tokens=5")
    assert sample.stdout.startswith(prompt) and len(sample.stdout) > len(prompt) + 1


def test_edited_file_is_retokenized(tmp_path):
    path = tmp_path / "t.txt"
    src = lambda unit: dict(path=str(path), valid_path="", test_path="", unit=unit)
    path.write_bytes(b"abc " * 1000)
    a = datasets.load_tokens("text", cache_dir=tmp_path / "c", text_source=src("byte"))
    assert a.vocab.decode_bytes(np.concatenate([a.train, a.valid, a.test])) == b"abc " * 1000
    assert (a.train.shape[0], a.valid.shape[0], a.test.shape[0]) == (3600, 200, 200)
    path.write_bytes(b"xyz " * 1000)           # same size, new content
    b = datasets.load_tokens("text", cache_dir=tmp_path / "c", text_source=src("byte"))
    assert b.info["cache_path"] != a.info["cache_path"]
    assert b.vocab.decode_bytes(b.train[:8]) == b"xyz xyz "
    again = datasets.load_tokens("text", cache_dir=tmp_path / "c", text_source=src("byte"))
    assert again.info["cache_path"] == b.info["cache_path"] and isinstance(again.train,
                                                                         np.memmap)
    w = datasets.load_tokens("text", cache_dir=tmp_path / "c", text_source=src("word"))
    assert w.unit == "word" and w.vocab.decode(w.train[:3]) == "xyz xyz xyz"


def test_folder_and_separate_valid_test_files(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second file")
    (folder / "a.txt").write_text("first file\n")
    (folder / "sub" / "c.txt").write_text("third")
    (folder / "skip.md").write_text("not text")
    assert text.read_source(str(folder)) == b"first file\nsecond file\nthird\n"
    (tmp_path / "v.txt").write_text("valid part\n")
    (tmp_path / "t.txt").write_text("test part here\n")
    arrays, vocab = text.build(str(folder), str(tmp_path / "v.txt"), str(tmp_path / "t.txt"),
                               unit="word")
    assert vocab.decode(arrays["train"]) == "first file <eos> second file <eos> third <eos>"
    assert vocab.decode(arrays["valid"]) == "<unk> <unk> <eos>"
    assert arrays["test"].shape == (4,)
    lines = "\n".join(f"line {i}" for i in range(40))
    (tmp_path / "l.txt").write_text(lines)
    arrays, vocab = text.build(str(tmp_path / "l.txt"), unit="word")     # 36 / 2 / 2 lines
    assert vocab.decode(arrays["valid"]) == "line <unk> <eos> line <unk> <eos>"  # 36, 37
    assert vocab.decode(arrays["train"][-3:]) == "line 35 <eos>"


@pytest.mark.parametrize("kw,match", [
    (dict(path=""), "data.path is empty"),
    (dict(path="/no/such/file.txt"), "data.path='/no/such/file.txt' does not exist"),
    (dict(path="EMPTY"), "folder without .txt files"),
    (dict(path="FILE", valid_path="FILE"), "give both"),
    (dict(path="FILE", unit="char"), "data.unit='char'; expected 'byte' or 'word'"),
])
def test_text_source_errors_name_the_value(kw, match, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "f.txt").write_text("some text\n")
    names = dict(EMPTY=str(tmp_path / "empty"), FILE=str(tmp_path / "f.txt"))
    kw = {k: names.get(v, v) for k, v in kw.items()}
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        text.build(**kw)
