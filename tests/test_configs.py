"""Every config file in configs/ and each of its variants, through the README's own commands.

Tiny datasets in the formats the builders expect are prepared once per session through
`python -m srupp_jax.data.prepare --manual_dir`: a fake `enwik8` file, fake `wiki.*.tokens`
files and a fake One Billion Word folder with its 1b_word_vocab.txt. Then,
for each config, `main.py` runs as a subprocess with the real config file and only size
overrides: train a few steps, `--mode=eval` and `--mode=generate` on the workdir alone (they
read the saved config), and `python -m srupp_jax.plot`.
"""
import importlib
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = ("the cat sat on a mat and dog ran to red big small house tree river under over "
         "bird sang song went home with her his old new day night").split()

# Tiny sizes: 2 layers of d = 16 (5 for the k = 5 variants, so that layer 5 has attention),
# 2 streams x 8 tokens, 2 steps. Word configs get cutoffs that fit the tiny vocabularies, and
# Billion Word d = 64 so that its 4 adaptive clusters (factor 4) are at least 1 wide.
SIZES = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2",
         "--config.train.batch_size=2", "--config.train.unroll=8", "--config.train.steps=2",
         "--config.train.warmup_steps=1", "--config.train.log_every=1",
         "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
         "--config.eval.unroll=16", "--config.eval.mem_len=16", "--config.eval.max_tokens=300"]
K5 = ["--config.model.num_layers=5"]
WIKI = ["--config.model.cutoffs=(8,16)"]
LM1B = ["--config.model.cutoffs=(4,8,12)", "--config.model.d=64", "--config.model.d_proj=16",
        "--config.model.d_embed=64"]
TXL = ["--config.model.num_heads=2", "--config.model.d_head=8", "--config.model.d_inner=32"]
SHA = ["--config.model.d_inner=32", "--config.model.attention_layers=(1,)"]

# (config argument, dataset, overrides); slow: the variants and large configs (the same code
# paths at the same toy sizes as their base config).
CONFIGS = [
    pytest.param("configs/default.py", "default", ["--config.data.max_bytes=60000"]),
    pytest.param("configs/enwik8.py", "enwik8", []),
    pytest.param("configs/enwik8.py:k5", "enwik8", K5, marks=pytest.mark.slow),
    pytest.param("configs/enwik8_large.py", "enwik8", [], marks=pytest.mark.slow),
    pytest.param("configs/enwik8_large.py:ratio8", "enwik8", [], marks=pytest.mark.slow),
    pytest.param("configs/wiki103.py", "wikitext103", WIKI),
    pytest.param("configs/wiki103_large.py", "wikitext103", WIKI, marks=pytest.mark.slow),
    pytest.param("configs/wiki103_large.py:ratio8", "wikitext103", WIKI,
                 marks=pytest.mark.slow),
    pytest.param("configs/wiki103_large.py:ratio8_k5", "wikitext103", WIKI + K5,
                 marks=pytest.mark.slow),
    pytest.param("configs/billion_word.py", "lm1b", LM1B),
    pytest.param("configs/billion_word.py:large", "lm1b", LM1B + K5, marks=pytest.mark.slow),
    # the baselines (tests/test_baselines_main.py tests them in depth; here their files)
    pytest.param("configs/txl_enwik8.py", "enwik8", TXL, marks=pytest.mark.slow),
    pytest.param("configs/txl_wiki103.py", "wikitext103", TXL + WIKI, marks=pytest.mark.slow),
    pytest.param("configs/sharnn_enwik8.py", "enwik8", SHA, marks=pytest.mark.slow),
    pytest.param("configs/sharnn_enwik8.py:sru", "enwik8", [], marks=pytest.mark.slow),
]
WORD_LEVEL = ("wikitext103", "lm1b")


def _sentences(n, seed):
    import random
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + " ."
            for _ in range(n)]


def _prepare(name, data_dir, cache_dir, manual_dir):
    out = subprocess.run([sys.executable, "-m", "srupp_jax.data.prepare", f"--dataset={name}",
                          f"--manual_dir={manual_dir}", f"--data_dir={data_dir}",
                          f"--cache_dir={cache_dir}", "--allow_modified_source"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """{"data_dir", "cache_dir"} holding tiny enwik8, wikitext103 and lm1b datasets."""
    from srupp_jax.data import corpus
    root = tmp_path_factory.mktemp("datasets")
    data_dir, cache_dir = root / "tfds", root / "cache"
    enwik8 = root / "enwik8_src"
    enwik8.mkdir()
    (enwik8 / "enwik8").write_bytes(corpus.embedded_corpus(40_000)[0])
    _prepare("enwik8", data_dir, cache_dir, enwik8)
    wiki = root / "wiki_src"
    wiki.mkdir()
    for split, n, seed in (("train", 400, 0), ("valid", 40, 1), ("test", 40, 2)):
        lines = [" = Title = ", ""] + _sentences(n, seed)
        (wiki / f"wiki.{split}.tokens").write_text("\n".join(f" {l} " for l in lines) + "\n")
    _prepare("wikitext103", data_dir, cache_dir, wiki)
    from test_data import write_billion_word
    vocab = "".join(f"{w} {99 - i}\n" for i, w in enumerate(["<S>", "</S>", "<UNK>", *WORDS, "."]))
    lm1b = write_billion_word(root / "lm1b_src", [_sentences(150, 3), _sentences(150, 4)],
                              _sentences(30, 5), vocab)
    _prepare("lm1b", data_dir, cache_dir, lm1b)
    return dict(data_dir=str(data_dir), cache_dir=str(cache_dir))


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """A JAX compilation cache shared by the session's subprocesses: eval and generate reuse
    what training compiled, and the configs share their small compiled functions."""
    return str(tmp_path_factory.mktemp("jax_cache"))


def main_py(*args, cache="", cwd=ROOT, timeout=300):
    """Run main.py (with the compilation cache `cache`, if given); returns the process."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def last_json(out):
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("config,dataset,overrides", CONFIGS)
def test_config_trains_evaluates_generates_plots(config, dataset, overrides, prepared,
                                                 jax_cache, tmp_path):
    data = [f"--config.data.data_dir={prepared['data_dir']}",
            f"--config.data.cache_dir={prepared['cache_dir']}"]
    workdir = tmp_path / "run"
    metric = "ppl" if dataset in WORD_LEVEL else "bpc"
    trained = last_json(main_py(f"--config={config}", f"--workdir={workdir}", *data, *SIZES,
                                *overrides, cache=jax_cache))
    assert trained["mode"] == "train" and trained[f"dev_{metric}"] > 0
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["data"]["name"] == dataset and saved["model"]["vocab_size"] > 0
    assert saved["data"]["vocab_rule"] == dict(default="bytes", enwik8="byte_values",
                                               wikitext103="counts", lm1b="file")[dataset]
    if dataset == "default":
        assert saved["model"]["vocab_size"] == 256
    # eval and generate on the workdir alone: the saved config brings every override back
    out = main_py(f"--workdir={workdir}", "--mode=eval", cache=jax_cache)
    evaluated = last_json(out)
    assert "eval dev" in out.stderr and "eval test" in out.stderr     # progress bars
    assert evaluated["step"] == 2
    assert evaluated[f"dev_{metric}"] > 0 and evaluated[f"test_{metric}"] > 0
    prompt = "the cat" if dataset in WORD_LEVEL else "The "
    generated = main_py(f"--workdir={workdir}", "--mode=generate", f"--prompt={prompt}",
                        "--num_tokens=8", "--seed=1", cache=jax_cache)
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert generated.stdout.startswith(prompt) and len(generated.stdout) > len(prompt) + 1
    plot = subprocess.run([sys.executable, "-m", "srupp_jax.plot", f"--workdir={workdir}",
                           f"--out={tmp_path / 'dev.png'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert (tmp_path / "dev.png").read_bytes()[:4] == b"\x89PNG"


def _variants(name):
    """The variants a config file accepts, read from its unknown-variant error."""
    module = importlib.import_module(f"configs.{name}")
    try:
        module.get_config("no_such_variant")
    except TypeError:
        return [""]                          # get_config() takes no variant
    except ValueError as e:
        return re.findall(r"'([^']*)'", str(e).split("expected", 1)[1])
    raise AssertionError(f"{name}.get_config accepted an unknown variant")


def task_configs(task):
    """The config files of `task` (not the studies)."""
    names = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.stem.startswith(
        ("_", "base", "study")))
    return [n for n in names
            if importlib.import_module(f"configs.{n}").get_config().get("task") == task]


def translation_configs():
    """The config files of the translation task (tests/test_translation_main.py)."""
    return task_configs("translation")


def classification_configs():
    """The config files of the classification task (tests/test_classification_main.py)."""
    return task_configs("classification")


def test_every_config_and_variant_is_walked():
    files = sorted(p.stem for p in (ROOT / "configs").glob("*.py")
                   if p.stem not in ("__init__", "base", "text", "study_enwik8", "study_iwslt14",
                                     *translation_configs(), *classification_configs()))
    # text: tests/test_text.py; the studies (python -m srupp_jax.study): tests/test_study.py;
    # translation: tests/test_translation_main.py; classification:
    # tests/test_classification_main.py
    walked = {p.values[0] for p in CONFIGS}
    expected = {f"configs/{f}.py" + (f":{v}" if v else "") for f in files for v in _variants(f)}
    assert expected == walked
