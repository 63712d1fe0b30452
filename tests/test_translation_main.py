"""Translation end to end, the user's path: main.py with the real config files and size
overrides only, on data in the formats the real sources come in (the generated number task, a
folder of parallel text, a tiny IWSLT'14 release in its real layout): train, resume, eval
(BLEU, hypotheses), translate, and the loop's guarantees through the task interface.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from test_configs import last_json, main_py
from test_translation_data import _release

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZES = ["--config.model.d=32", "--config.model.d_proj=8", "--config.model.d_embed=16",
         "--config.model.encoder_layers=1", "--config.model.decoder_layers=1",
         "--config.train.batch_tokens=256", "--config.train.warmup_steps=2",
         "--config.eval.batch_tokens=512"]
TINY = SIZES + ["--config.train.log_every=2", "--config.eval.max_sentences=20",
                "--config.decode.beam_size=2"]
NUMBERS = ["--config=configs/translate_default.py", "--config.data.numbers.train_size=600",
           "--config.data.numbers.valid_size=40", "--config.data.numbers.test_size=40"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The data cache and JAX compilation cache shared by this module's runs."""
    root = tmp_path_factory.mktemp("translation")
    return dict(data=str(root / "data"), jax=str(root / "jax"))


def run(cache, *args, timeout=600):
    return main_py(*args, f"--config.data.cache_dir={cache['data']}", cache=cache["jax"],
                   timeout=timeout)


@pytest.mark.slow
def test_default_task_trains_resumes_evaluates_and_translates(cache, tmp_path):
    w = tmp_path / "run"
    first = last_json(run(cache, *NUMBERS, *TINY, f"--workdir={w}", "--config.train.steps=8",
                          "--config.train.stop_at=4", "--config.train.eval_every=4"))
    assert first["status"] == "stopped" and {"dev_bleu", "dev_bleu_tok", "dev_chrf"} <= set(first)
    done = last_json(run(cache, *NUMBERS, *TINY, f"--workdir={w}", "--config.train.steps=8",
                         "--config.train.eval_every=4"))
    assert done["status"] == "finished" and done["step"] == 8
    rows = [json.loads(line) for line in open(w / "metrics.jsonl")]
    assert sorted(r["step"] for r in rows if r["split"] == "train") == [2, 4, 6, 8]
    out = main_py(f"--workdir={w}", "--mode=eval", cache=cache["jax"])
    ev = last_json(out)
    assert ev["step"] in (4, 8) and "sacreBLEU" in out.stderr and "tok:13a" in out.stderr
    for split in ("dev", "test"):
        assert {f"{split}_{k}" for k in ("loss", "ppl", "bleu", "bleu_tok", "chrf")} <= set(ev)
        assert len((w / f"hypotheses.{split}.txt").read_text().splitlines()) == 40
    (tmp_path / "in.de").write_text("dreiundzwanzig Katzen\n\nim Jahr zweitausendeins\n")
    tr = main_py(f"--workdir={w}", "--mode=translate", f"--input={tmp_path / 'in.de'}",
                 f"--output={tmp_path / 'out.en'}", cache=cache["jax"])
    assert tr.returncode == 0, tr.stderr[-3000:]
    lines = (tmp_path / "out.en").read_text().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    piped = subprocess.run([sys.executable, "main.py", f"--workdir={w}", "--mode=translate"],
                           input="vier\n", cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 1, piped.stderr[-2000:]


@pytest.mark.slow
def test_resume_mid_epoch_is_bit_identical(cache, tmp_path):
    """6 steps straight == 3 steps, stop, restart, 3 more: the same losses bit for bit (an
    epoch of the 600 pairs is ~30 steps, so the stop is mid-epoch), via the task interface."""
    from srupp_jax.programs import modes
    from test_train import _losses

    def config(**train):
        import importlib
        c = importlib.import_module("configs.translate_default").get_config()
        c.data.cache_dir = cache["data"]
        c.data.numbers.train_size, c.data.numbers.valid_size = 600, 40
        c.data.numbers.test_size = 40
        c.model.d, c.model.d_proj, c.model.d_embed = 32, 8, 16
        c.model.encoder_layers = c.model.decoder_layers = 1
        c.train.batch_tokens, c.train.steps, c.train.warmup_steps = 256, 6, 2
        c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 1, 100, 3
        c.eval.batch_tokens, c.eval.best = 512, "loss"
        for k, v in train.items():
            c.train[k] = v
        return c

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    modes.train(config(), str(straight))
    assert modes.train(config(stop_at=3), str(resumed))["status"] == "stopped"
    modes.train(config(), str(resumed))
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == list(range(1, 7)) and a == b, (a, b)


@pytest.mark.slow
def test_default_task_bleu_rises(cache, tmp_path):
    """The real default config, stopped after its first 500 steps (train.stop_at): dev BLEU
    rises by more than 10 points from step 250 to step 500."""
    out = last_json(run(cache, "--config=configs/translate_default.py", f"--workdir={tmp_path}",
                        "--config.train.stop_at=500", "--config.train.eval_every=250",
                        timeout=1200))
    dev = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")
           if '"dev"' in line]
    bleu = {r["step"]: r["dev_bleu"] for r in dev}
    assert sorted(bleu) == [250, 500] and out["status"] == "stopped"
    assert bleu[500] > bleu[250] + 10, bleu


def _parallel_folder(root):
    """Toy German-English pairs in the Moses layout, train only (valid/test split off)."""
    nouns = [("Hund", "dog"), ("Katze", "cat"), ("Haus", "house"), ("Baum", "tree")]
    adj = [("rot", "red"), ("gross", "big"), ("alt", "old")]
    de, en = [], []
    for i in range(300):
        (n_de, n_en), (a_de, a_en) = nouns[i % 4], adj[(i // 4) % 3]
        de.append(f"der {n_de} ist {a_de} .")
        en.append(f"the {n_en} is {a_en} .")
    os.makedirs(root)
    (root / "train.de").write_text("\n".join(de) + "\n")
    (root / "train.en").write_text("\n".join(en) + "\n")


@pytest.mark.slow
def test_your_parallel_folder_trains_evaluates_translates(cache, tmp_path):
    folder = tmp_path / "corpus"
    _parallel_folder(folder)
    w = tmp_path / "run"
    data = ["--config=configs/translate_text.py", f"--config.data.path={folder}",
            "--config.data.src=de", "--config.data.tgt=en", "--config.data.vocab_size=40",
            "--config.train.max_len=16"]
    trained = last_json(run(cache, *data, *TINY, f"--workdir={w}", "--config.train.steps=4",
                            "--config.train.eval_every=4"))
    assert trained["step"] == 4 and "dev_bleu" in trained
    ev = last_json(main_py(f"--workdir={w}", "--mode=eval", cache=cache["jax"]))
    assert "test_bleu" in ev and (w / "hypotheses.test.txt").exists()
    tr = subprocess.run([sys.executable, "main.py", f"--workdir={w}", "--mode=translate"],
                        input="der Hund ist alt .\n", cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
    assert tr.returncode == 0 and len(tr.stdout.splitlines()) == 1, tr.stderr[-2000:]
    bad = run(cache, *data[:1], "--config.data.path=" + str(tmp_path / "missing"),
              "--config.data.src=de", "--config.data.tgt=en", f"--workdir={tmp_path / 'x'}")
    assert bad.returncode == 2 and "missing" in bad.stderr.splitlines()[-1]


@pytest.fixture(scope="module")
def iwslt(tmp_path_factory):
    """A tiny IWSLT'14 release in its real layout, prepared through the README's command."""
    root = tmp_path_factory.mktemp("iwslt")
    _release(str(root / "release"))
    out = subprocess.run([sys.executable, "-m", "srupp_jax.data.prepare",
                          "--dataset=iwslt14_de_en", f"--manual_dir={root / 'release'}",
                          f"--data_dir={root / 'tfds'}", f"--cache_dir={root / 'cache'}",
                          "--vocab_size=80"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [f"--config.data.data_dir={root / 'tfds'}", f"--config.data.cache_dir={root / 'cache'}",
            "--config.data.vocab_size=80"]


@pytest.mark.parametrize("config", [
    "configs/iwslt14.py", pytest.param("configs/iwslt14.py:k2", marks=pytest.mark.slow),
    "configs/iwslt14_transformer.py"])
@pytest.mark.slow
def test_iwslt14_configs_train_and_report_test_bleu(config, iwslt, cache, tmp_path):
    sizes = (["--config.model.d=32", "--config.model.num_heads=2", "--config.model.d_inner=64",
              "--config.model.encoder_layers=2", "--config.model.decoder_layers=2"]
             if "transformer" in config else TINY[:3] + ["--config.model.encoder_layers=2",
                                                         "--config.model.decoder_layers=2"])
    out = main_py(f"--config={config}", f"--workdir={tmp_path}", *iwslt, *sizes,
                  "--config.train.batch_tokens=256", "--config.train.steps=2",
                  "--config.train.warmup_steps=1", "--config.train.eval_every=2",
                  "--config.eval.batch_tokens=1024", cache=cache["jax"])
    trained = last_json(out)
    assert trained["step"] == 2 and "dev_bleu" in trained
    assert " parameters" in out.stderr
    ev = last_json(main_py(f"--workdir={tmp_path}", "--mode=eval", cache=cache["jax"]))
    assert ev["test_bleu"] >= 0 and "test_bleu_tok" in ev
    assert len((tmp_path / "hypotheses.test.txt").read_text().splitlines()) == 8   # 4 sets


def test_every_translation_config_is_walked():
    """The translation configs are these files (tests/test_configs.py walks the others)."""
    from test_configs import translation_configs
    assert translation_configs() == ["iwslt14", "iwslt14_transformer", "translate_default",
                                     "translate_text"]
