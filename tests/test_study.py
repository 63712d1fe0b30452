"""The compute-efficiency study end to end on the embedded corpus with a budget of seconds:
every run trains to its budget, dev BPC at each time mark, table + figure + JSON; a second
invocation skips the finished runs and writes the same table. The config is named by name,
from another directory (as the installed program finds it)."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from srupp_jax.programs import study

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_parse_budget():
    assert study.parse_budget("90") == 90 and study.parse_budget("20m") == 1200
    assert study.parse_budget("1.5h") == 5400 and study.parse_budget("3s") == 3
    for bad in ("0", "-3", "2d", "soon"):
        with pytest.raises(ValueError, match="budget="):
            study.parse_budget(bad)
    assert study.time_marks(8.0, 4) == (2.0, 4.0, 6.0, 8.0)


@pytest.mark.slow
def test_study_end_to_end_and_resume(tmp_path):
    elsewhere = dict(cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    args = [sys.executable, "-m", "srupp_jax.study", "--config=study_enwik8:cpu",
            f"--workdir={tmp_path}", "--budget=3s", "--config.study.marks=2",
            "--config.study.order=('srupp_k1', 'transformer_xl', 'sha_rnn')",
            "--config.data.max_bytes=200000", "--config.eval.max_tokens=2000",
            "--config.study.runs.srupp_k1.model.num_layers=2",
            "--config.study.runs.transformer_xl.model.num_layers=1",
            "--config.study.runs.sha_rnn.model.num_layers=2",
            "--config.study.runs.sha_rnn.model.attention_layers=(1,)"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, **elsewhere)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count(": done, ") == 3 and "rerun" not in out.stderr, out.stderr[-3000:]
    assert not re.search(r"^[IWEF]\d{4} ", out.stderr, re.M)         # no absl prefixes
    assert "tracked_metric" not in out.stderr                        # no Orbax noise
    for name in study.STUDY_FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    rows = json.load(open(tmp_path / "study.json"))["rows"]
    assert [r["arch"] for r in rows] == ["srupp", "transformer_xl", "sha_rnn"]
    for r in rows:
        assert r["params"] > 1000 and r["flops_per_token"] > 0 and r["tokens_per_sec"] > 0
        assert r["steps"] >= 2 and r["train_seconds"] >= 3.0, r
        assert r["marks_seconds"] == [1.5, 3.0]
        assert all(0 < b < 9 for b in r["dev_bpc_at_marks"]), r
    table = (tmp_path / "study.md").read_text()
    assert "SRU++ k=1" in table and "Transformer-XL" in table and "dev BPC @ 3 s" in table
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, **elsewhere)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("finished earlier, skipped") == 3
    assert (tmp_path / "study.md").read_text() == table


def test_unknown_run_is_named():
    import importlib
    config = importlib.import_module("configs.study_enwik8").get_config("cpu")
    with pytest.raises(ValueError, match="'lstm', which is not in study.runs"):
        study.config_of_run(config, "lstm", 10)


@pytest.mark.slow
def test_training_seconds_continue_across_a_restart(tmp_path):
    """Stopped at step 3 and restarted, a timed run continues its training seconds from the
    checkpointed step; the first step of each session (it compiles) adds nothing."""
    from srupp_jax.programs import modes
    from srupp_jax.training.metrics import read_metrics
    from tests.test_train import tiny_config

    def config(**kw):
        c = tiny_config(eval_every=100, **kw)
        with c.unlocked():
            c.train.eval_marks = (1e9,)     # timed, no mark reached
        return c

    modes.train(config(stop_at=3), str(tmp_path))
    modes.train(config(), str(tmp_path))
    seconds = {r["step"]: r["train_seconds"] for r in read_metrics(tmp_path, split="train")}
    assert sorted(seconds) == list(range(1, 7))
    assert seconds[1] == 0.0 and seconds[4] == seconds[3]       # compiling steps not counted
    assert 0 < seconds[2] < seconds[3] < seconds[5] < seconds[6]


@pytest.mark.slow
def test_translation_study_on_the_number_task(tmp_path):
    """The Table 8 comparison at toy size: SRU++ and the Transformer, dev BLEU at each mark;
    runs that reach train.steps before the marks show their last evaluation there."""
    args = [sys.executable, "-m", "srupp_jax.study", "--config=configs/study_iwslt14.py:cpu",
            f"--workdir={tmp_path}", "--budget=60s", "--config.study.marks=2",
            "--config.study.order=('srupp', 'transformer')",
            "--config.data.numbers.train_size=400", "--config.data.numbers.valid_size=20",
            "--config.data.numbers.test_size=20", "--config.train.batch_tokens=256",
            "--config.eval.batch_tokens=512", "--config.decode.beam_size=2",
            "--config.model.d=32", "--config.model.d_proj=8",          # the SRU++ runs
            "--config.model.encoder_layers=1", "--config.model.decoder_layers=1",
            "--config.study.runs.transformer.model.d=16",
            "--config.study.runs.transformer.model.encoder_layers=1",
            "--config.study.runs.transformer.model.decoder_layers=1",
            "--config.train.steps=3", "--config.train.warmup_steps=1"]   # before the marks
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.load(open(tmp_path / "study.json"))["rows"]
    assert [r["arch"] for r in rows] == ["srupp", "transformer"]
    for r in rows:
        assert r["metric"] == "dev_bleu" and r["params"] > 1000 and r["tokens_per_sec"] > 0
        assert all(b is not None and 0 <= b <= 100 for b in r["dev_bleu_at_marks"]), r
        assert r["steps"] == 3 and r["train_seconds"] < 30
        assert r["dev_bleu_at_marks"] == [r["dev_curve"][-1][1]] * 2     # the last one
    assert "dev BLEU @ 60 s" in (tmp_path / "study.md").read_text()
