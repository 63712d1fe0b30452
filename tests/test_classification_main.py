"""Classification end to end, the user's path: main.py with the real config files and size
overrides only, on the generated default task and on a folder of TSV files (bytes, words,
BPE): train, resume, eval (metrics, predictions, confusion matrix), predict, fine-tuning from
a language model's workdir, and a mode of another task refused in one line.
"""
import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from test_configs import last_json, main_py

from srupp_jax.data.stdlib_lines import PACKAGES

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
SIZES = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=1",
         "--config.train.batch_tokens=256", "--config.train.max_len=24",
         "--config.train.warmup_steps=2", "--config.eval.batch_tokens=2048"]
TINY = ["--config=configs/classify_default.py", *SIZES]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The JAX compilation cache shared by this module's runs."""
    return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def lm_workdir(tmp_path_factory, cache):
    """A tiny byte LM of configs/default.py (d 16, d' 4, 2 layers), trained 3 steps."""
    from test_faults import TINY as TINY_LM
    w = tmp_path_factory.mktemp("lm")
    last_json(main_py(*TINY_LM, f"--workdir={w}", "--config.train.steps=3",
                      "--config.train.eval_every=3", cache=cache))
    return w


def predict(workdir, text, *args):
    return subprocess.run([sys.executable, "main.py", f"--workdir={workdir}", "--mode=predict",
                           *args], input=text, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_default_task_trains_resumes_evaluates_and_predicts(cache, tmp_path):
    w = tmp_path / "run"
    args = [*TINY, f"--workdir={w}", "--config.train.steps=8", "--config.train.log_every=2",
            "--config.train.eval_every=4"]
    first = last_json(main_py(*args, "--config.train.stop_at=4", cache=cache))
    assert first["status"] == "stopped" and {"dev_accuracy", "dev_macro_f1"} <= set(first)
    done = last_json(main_py(*args, cache=cache))
    assert done["status"] == "finished" and done["step"] == 8
    rows = [json.loads(line) for line in open(w / "metrics.jsonl")]
    assert sorted(r["step"] for r in rows if r["split"] == "train") == [2, 4, 6, 8]
    saved = json.loads((w / "config.json").read_text())
    assert saved["data"]["labels"] == list(PACKAGES) and saved["model"]["num_classes"] == 9
    ev = last_json(main_py(f"--workdir={w}", "--mode=eval", cache=cache))
    for split, n in (("dev", 1000), ("test", 2000)):
        assert {f"{split}_{k}" for k in ("loss", "accuracy", "macro_f1")} <= set(ev)
        classes = ev[f"{split}_classes"]
        assert list(classes) == list(PACKAGES)
        assert sum(c["support"] for c in classes.values()) == n
        assert all(0 <= c["precision"] <= 1 and 0 <= c["recall"] <= 1 for c in classes.values())
        lines = (w / f"predictions.{split}.tsv").read_text().splitlines()
        assert len(lines) == n and all(len(line.split("\t")) == 3 for line in lines)
        right = np.mean([a == c for a, _, c in (line.split("\t") for line in lines)])
        assert abs(right - ev[f"{split}_accuracy"]) < 1e-9
        assert (w / f"confusion.{split}.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "in.txt").write_text("self.assertEqual(a, b)\n\nimport xml.dom.minidom\n")
    out = main_py(f"--workdir={w}", "--mode=predict", f"--input={tmp_path / 'in.txt'}",
                  f"--output={tmp_path / 'out.tsv'}", cache=cache)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (tmp_path / "out.tsv").read_text().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    for line in (lines[0], lines[2]):
        label, prob = line.split("\t")
        assert label in PACKAGES and 1 / 9 <= float(prob) <= 1
    piped = predict(w, "def handle(self):\n")
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 1, piped.stderr[-2000:]


@pytest.mark.slow
def test_resume_mid_epoch_is_bit_identical(tmp_path):
    """6 steps straight == 3 steps, stop, restart, 3 more: the same losses bit for bit (an
    epoch is ~2,000 steps at this size), through the task interface."""
    from srupp_jax.programs import modes
    from test_train import _losses

    def config(**train):
        c = importlib.import_module("configs.classify_default").get_config()
        c.model.d, c.model.d_proj, c.model.num_layers = 16, 4, 1
        c.train.batch_tokens, c.train.max_len, c.train.steps = 256, 24, 6
        c.train.warmup_steps, c.eval.batch_tokens = 2, 2048
        c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 1, 100, 3
        for k, v in train.items():
            c.train[k] = v
        return c

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    modes.train(config(), str(straight))
    assert modes.train(config(stop_at=3), str(resumed))["status"] == "stopped"
    modes.train(config(), str(resumed))
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == list(range(1, 7)) and a == b, (a, b)


def _folder(root):
    """A toy sentiment folder: train.tsv only (valid and test split off)."""
    good, bad = ["great", "fine", "lovely", "superb"], ["awful", "poor", "dull", "broken"]
    things = ["film", "book", "meal", "hotel", "song"]
    lines = [f"{'pos' if i % 2 == 0 else 'neg'}\tthe {things[i % 5]} was "
             f"{(good if i % 2 == 0 else bad)[(i // 2) % 4]}" for i in range(120)]
    root.mkdir()
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("unit", ["byte", pytest.param("word", marks=pytest.mark.slow),
                                  pytest.param("bpe", marks=pytest.mark.slow)])
@pytest.mark.slow
def test_your_tsv_folder_trains_evaluates_and_predicts(unit, cache, tmp_path):
    folder = _folder(tmp_path / "data")
    w = tmp_path / "run"
    trained = last_json(main_py("--config=configs/classify_text.py",
                                f"--config.data.path={folder}", f"--config.data.unit={unit}",
                                "--config.data.vocab_size=60", *SIZES, f"--workdir={w}",
                                "--config.train.steps=4", "--config.train.eval_every=4",
                                f"--config.data.cache_dir={tmp_path / 'cache'}", cache=cache))
    assert trained["step"] == 4 and "dev_accuracy" in trained
    assert json.loads((w / "config.json").read_text())["data"]["labels"] == ["pos", "neg"]
    ev = last_json(main_py(f"--workdir={w}", "--mode=eval", cache=cache))
    assert set(ev["test_classes"]) == {"pos", "neg"}
    assert len((w / "predictions.test.tsv").read_text().splitlines()) == 6      # 5% of 120
    out = predict(w, "the film was great\nthe song was dull\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line.split("\t")[0] in ("pos", "neg") for line in out.stdout.splitlines()] == [
        True, True]


def test_bad_data_is_one_line_and_writes_nothing(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.tsv").write_text("pos\tgood\nneg bad\n")
    w = tmp_path / "run"
    out = main_py("--config=configs/classify_text.py", f"--config.data.path={folder}",
                  f"--workdir={w}")
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr
    assert f"{folder / 'train.tsv'}, line 2 has no tab" in errors[0]
    assert not w.exists() or not any(w.iterdir())


def _embedding(workdir):
    from srupp_jax.training.checkpoint import Checkpoints
    ckpt = Checkpoints(f"{workdir}/checkpoints", read_only=True)
    try:
        _, params = ckpt.restore_saved("params", which="latest")
    finally:
        ckpt.close()
    return np.asarray(params["['embed']['embedding'].value"])


@pytest.mark.slow
def test_fine_tuning_from_a_language_models_workdir(lm_workdir, cache, tmp_path):
    lm_sizes = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2"]
    start = [*TINY[1:], *lm_sizes, f"--config.train.init_from={lm_workdir}",
             "--config.train.steps=1", "--config.train.warmup_steps=0",
             "--config.train.lr=1e-12"]              # one step that barely moves
    w = tmp_path / "tuned"
    out = main_py("--config=configs/classify_default.py:from_lm", *start, f"--workdir={w}",
                  cache=cache)
    assert last_json(out)["status"] == "finished"
    assert f"starting from {lm_workdir} (step 3): its parameters, a fresh optimizer" in out.stderr
    np.testing.assert_allclose(_embedding(w), _embedding(lm_workdir), atol=1e-6)
    bad = main_py("--config=configs/classify_default.py", *start,
                  f"--workdir={tmp_path / 'bad'}", cache=cache)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and len(errors) == 1, bad.stderr[-3000:]
    assert "rnn.layers.0.v: [2, 1, 16] in the language model, [2, 2, 8] here;" in errors[0]
    assert "--config.model.encoder_bidirectional=False" in errors[0]
    assert not (tmp_path / "bad" / "checkpoints").exists()
    assert not (tmp_path / "bad" / "config.json").exists()
    nowhere = main_py("--config=configs/classify_default.py:from_lm", *start[:-4],
                      f"--config.train.init_from={tmp_path / 'nowhere'}",
                      f"--workdir={tmp_path / 'none'}", cache=cache)
    assert nowhere.returncode == 2 and nowhere.stderr.strip().endswith(
        "holds no config.json; expected a workdir of srupp_jax (trained, or written by "
        "--mode=import)")


@pytest.mark.slow
def test_fine_tuning_from_a_word_language_model(cache, tmp_path):
    """A word LM of configs/text.py (150 words: adaptive input with cutoffs) and a word
    classifier started from it: the LM's vocabulary and cutoffs are taken, its embedding
    arrives, and a word the LM never saw is <unk>."""
    words = [f"w{i}" for i in range(150)]
    rng = np.random.RandomState(0)
    lines = [" ".join(rng.choice(words, 12)) for _ in range(400)]
    (tmp_path / "lm.txt").write_text("\n".join(lines) + "\n")
    lm, tuned = tmp_path / "lm", tmp_path / "tuned"
    sizes = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=1"]
    last_json(main_py("--config=configs/text.py", f"--config.data.path={tmp_path / 'lm.txt'}",
                      "--config.data.unit=word", *sizes, "--config.train.batch_size=2",
                      "--config.train.unroll=8", "--config.train.steps=2",
                      "--config.train.warmup_steps=1", "--config.train.eval_every=2",
                      "--config.eval.batch_size=1", "--config.eval.unroll=16",
                      "--config.eval.mem_len=16", f"--config.data.cache_dir={tmp_path / 'c'}",
                      f"--workdir={lm}", cache=cache))
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.tsv").write_text("".join(
        f"{'a' if int(line.split()[0][1:]) < 75 else 'b'}\t{line} unseen\n" for line in lines))
    out = main_py("--config=configs/classify_text.py", f"--config.data.path={folder}",
                  "--config.data.unit=word", "--config.model.encoder_bidirectional=False",
                  *SIZES[3:], *sizes, f"--config.train.init_from={lm}", f"--workdir={tuned}",
                  "--config.train.steps=1", "--config.train.warmup_steps=0",
                  "--config.train.lr=1e-12", cache=cache)
    assert last_json(out)["status"] == "finished"
    ours, theirs = (json.loads((w / "config.json").read_text())["model"] for w in (tuned, lm))
    assert ours["vocab_size"] == theirs["vocab_size"] and ours["cutoffs"] == theirs["cutoffs"]
    assert len(theirs["cutoffs"]) == 2
    from srupp_jax.training.checkpoint import Checkpoints
    tables = []
    for w in (tuned, lm):
        with Checkpoints(f"{w}/checkpoints", read_only=True) as ckpt:
            _, params = ckpt.restore_saved("params", which="latest")
        tables.append({k: np.asarray(v) for k, v in params.items() if "['embed']" in k})
    assert tables[0].keys() == tables[1].keys() and len(tables[0]) >= 4
    for key in tables[0]:
        np.testing.assert_allclose(tables[0][key], tables[1][key], atol=1e-6, err_msg=key)


def test_a_mode_of_another_task_is_one_line_naming_the_task_and_its_modes(tmp_path):
    """generate on a translation workdir, translate and predict on a language model's, generate
    and export on a classifier's: refused before a model is built or a checkpoint read, so
    each workdir holds the config.json its run writes when it starts (configs/translate_default
    .py, configs/default.py, configs/classify_default.py)."""
    from srupp_jax.training import run_config
    workdirs = {}
    for task, config in (("translation", "translate_default"), ("lm", "default"),
                         ("classification", "classify_default")):
        workdirs[task] = tmp_path / task
        run_config.save(importlib.import_module(f"configs.{config}").get_config(),
                        str(workdirs[task]))
    base = "train, eval, smoke, plan, "
    cases = [("translation", "generate", base + "export, show_config, translate"),
             ("lm", "translate", base + "export, show_config, generate, import"),
             ("lm", "predict", base + "export, show_config, generate, import"),
             ("classification", "generate", base + "show_config, predict"),
             ("classification", "export", base + "show_config, predict")]
    for task, mode, has in cases:
        extra = ["--output=/tmp/x"] if mode == "export" else []
        out = main_py(f"--workdir={workdirs[task]}", f"--mode={mode}", *extra)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-2000:]
        assert out.stderr.strip() == (
            f"error: --mode={mode} does not apply here: {workdirs[task]} holds a {task!r} run, "
            f"whose modes are {has}"), out.stderr


@pytest.mark.slow
def test_the_transformer_baseline_trains_and_evaluates(cache, tmp_path):
    w = tmp_path / "run"
    out = main_py("--config=configs/classify_default.py:transformer", *SIZES[3:],
                  "--config.model.d=16", "--config.model.num_heads=2",
                  "--config.model.d_inner=32", "--config.model.num_layers=1", f"--workdir={w}",
                  "--config.train.steps=3", "--config.train.eval_every=3", cache=cache)
    trained = last_json(out)
    assert trained["step"] == 3 and "model transformer:" in out.stderr
    ev = last_json(main_py(f"--workdir={w}", "--mode=eval", cache=cache))
    assert 0 <= ev["test_accuracy"] <= 1


@pytest.mark.slow
def test_every_classification_config_and_variant_is_walked():
    """The classification configs are these files and variants (tests/test_configs.py walks
    the language models', tests/test_translation_main.py translation's); the Transformer
    variant has the default's size within 5%."""
    from flax import nnx
    from test_configs import _variants, classification_configs

    from srupp_jax.models import archs
    from srupp_jax.training.steps import count_params
    assert classification_configs() == ["classify_default", "classify_text"]
    assert _variants("classify_default") == ["", "transformer", "from_lm"]
    assert _variants("classify_text") == ["", "cpu"]
    sizes = {}
    for variant in ("", "transformer", "from_lm"):
        c = importlib.import_module("configs.classify_default").get_config(variant)
        c.model.vocab_size, c.model.num_classes = 256, 9
        model = archs.model_config(c, "classification").build(nnx.Rngs(0))
        sizes[variant] = count_params(model)
    assert abs(sizes["transformer"] / sizes[""] - 1) < 0.05, sizes
