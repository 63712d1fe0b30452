"""Long phases are bounded and visible, and stop when asked (through main.py, off a
terminal): the evaluation of an early translation checkpoint (beams that do not end) is
bounded by the length rule and shows how far it is; tokenizing a large text of your own says
what it does and how far it is; SIGTERM or Ctrl-C during an evaluation or a preparation stops
it within seconds (at the next batch), saying so, and the same command finishes it."""
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import killing
from test_configs import SIZES, last_json, main_py
from test_faults import TINY_TRANSLATION

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def jax_cache(jax_runs):
    return jax_runs


def progress_lines(stderr: str, what: str) -> list:
    """The percentages of the progress lines of `what` ("eval dev: 3/10 batches (30%), ...")."""
    return [int(p) for p in re.findall(rf"{re.escape(what)}: [\d,.]+/[\d,.]+ [^(]+\((\d+)%\)",
                                       stderr)]


@pytest.mark.slow
def test_an_early_translation_checkpoint_evaluates_bounded_and_visibly(tmp_path, jax_cache):
    cache = tmp_path / "cache"
    w = tmp_path / "w"
    decode = ["--config.decode.max_len_a=1.5", "--config.decode.max_len_b=4"]
    last_json(main_py(*TINY_TRANSLATION, "--config.train.steps=1",
                      "--config.train.warmup_steps=0", f"--workdir={w}",
                      f"--config.data.cache_dir={cache}", *decode, cache=jax_cache))
    out = main_py(f"--workdir={w}", "--mode=eval", f"--config.data.cache_dir={cache}",
                  cache=jax_cache)
    last_json(out)
    for split in ("dev", "test"):
        shown = progress_lines(out.stderr, f"eval {split}")
        assert shown and shown == sorted(shown) and max(shown) < 100, out.stderr[-3000:]
    # bounded: at most floor(1.5 n + 4) subwords for a source of n tokens (its subwords and
    # the EOS the batches end it with), and the untrained model's beams run to that limit
    # (they do not end by themselves)
    from srupp_jax.data.translation_data import from_config
    from srupp_jax.inference.translate import translate_ids
    from srupp_jax.programs import modes
    from srupp_jax.training import run_config
    config = run_config.load(str(w))
    model, params, rest, _ = modes.restore(config, str(w))
    from flax import nnx
    nnx.update(model, params, rest)
    sources = from_config(config.data, cache_dir=str(cache)).valid.src
    hyps = translate_ids(model, sources, config)
    limits = np.floor(1.5 * (sources.lengths + 1).astype(np.float32) + 4).astype(int)
    lengths = np.array([len(h) for h in hyps])
    assert np.all(lengths <= limits) and np.any(lengths == limits)


@pytest.mark.slow
def test_tokenizing_a_large_text_says_what_it_does_and_how_far_it_is(tmp_path, jax_cache):
    from test_configs import WORDS
    rng = np.random.RandomState(0)
    text = "\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(40_000)) + "\n"
    (tmp_path / "big.txt").write_text(text)            # 2.7 MB of words
    out = main_py("--config=configs/text.py", "--config.data.unit=word",
                  f"--config.data.path={tmp_path / 'big.txt'}", *SIZES,
                  "--config.train.steps=1", "--config.train.warmup_steps=0",
                  f"--config.data.cache_dir={tmp_path / 'cache'}",
                  f"--workdir={tmp_path / 'w'}", cache=jax_cache)
    last_json(out)
    assert re.search(rf"tokenizing {tmp_path / 'big.txt'} \(2\.\d MB\) into words, once: the "
                     r"tokens are cached in ", out.stderr), out.stderr[-3000:]
    for what in ("counting", "encoding train"):
        shown = progress_lines(out.stderr, f"words of {tmp_path / 'big.txt'}: {what}")
        assert shown == list(range(10, 100, 10)), out.stderr[-3000:]


# ----------------------------------------------------------------- stopped, then finished
@pytest.fixture
def straight(straight_runs):
    return straight_runs("lm")


@pytest.mark.slow
@pytest.mark.parametrize("signal,status,code", [("term", "preempted", 75),
                                                ("int", "interrupted", 130)])
def test_a_signal_during_a_dev_evaluation_stops_it_and_the_rerun_does_it_first(
        straight, jax_cache, tmp_path, signal, status, code):
    """The signal comes at the 3rd batch of the first dev evaluation (step 6 of 12): the run
    stops there, saves step 6 with its evaluation pending, and the rerun evaluates step 6
    first; everything then equals the run never stopped."""
    w, cache = tmp_path / "w", tmp_path / "cache"
    out = killing.run("lm", w, cache, jax_cache, SRUPP_JAX_AT=f"eval.batch#3={signal}")
    assert out.returncode == code, out.stderr[-3000:]
    assert killing.final_json(out.stdout)["status"] == status
    assert "step 6: the dev evaluation was stopped; the rerun does it first" in out.stderr
    rows = [json.loads(r) for r in open(w / "metrics.jsonl")]
    assert not [r for r in rows if r["split"] == "dev"]      # stopped before its end
    rerun = killing.run("lm", w, cache, jax_cache)
    assert ("resumed from step 6; its dev evaluation, which a signal stopped, comes first"
            in rerun.stderr)
    assert killing.problems(rerun, w, cache, straight) == []


@pytest.mark.slow
def test_sigterm_during_an_evaluation_or_a_preparation_says_so_and_the_rerun_finishes(
        straight, jax_cache, tmp_path):
    evaluate = [f"--workdir={straight.root / 'w'}", "--mode=eval"]
    whole = last_json(main_py(*evaluate, cache=jax_cache))
    stopped = subprocess.run([sys.executable, "main.py", *evaluate], cwd=ROOT,
                             capture_output=True, text=True, timeout=600,
                             env=killing.env(jax_cache, SRUPP_JAX_AT="eval.batch#4=term"))
    assert stopped.returncode == 75
    [line] = [x for x in stopped.stderr.splitlines() if x.startswith("error:")]
    assert line == ("error: stopped by SIGTERM while evaluating; nothing half-written is "
                    "kept: rerun the same command to finish"), stopped.stderr[-3000:]
    assert last_json(main_py(*evaluate, cache=jax_cache)) == whole
    # preparing a dataset, and a data cache as training starts
    from srupp_jax.data import corpus
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "enwik8").write_bytes(corpus.embedded_corpus(40_000)[0])
    data = tmp_path / "tfds"
    prepare = [sys.executable, "-m", "srupp_jax.data.prepare", "--dataset=enwik8",
               f"--manual_dir={tmp_path / 'src'}", f"--data_dir={data}",
               f"--cache_dir={tmp_path / 'cache'}", "--allow_modified_source"]
    for phase, sig, code, says in (("prepare.build", "term", 75, "stopped by SIGTERM while "
                                    "preparing a dataset"),
                                   ("cache.write", "int", 130, "interrupted (Ctrl-C) while "
                                    "writing a data cache")):
        out = subprocess.run(prepare, cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env=killing.env(jax_cache, SRUPP_JAX_AT=f"{phase}={sig}"))
        assert out.returncode == code and f"error: {says}; nothing half-written" in out.stderr
        left = [p for p in (*data.rglob("*"), *(tmp_path / "cache").rglob("*"))
                if "tmp" in p.name]
        assert not left, left
    done = subprocess.run(prepare, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
