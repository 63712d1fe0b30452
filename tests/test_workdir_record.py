"""The workdir's record (config.json) always says what trained, through main.py.

A rerun whose config differs from the record in what trains is refused (exit 2, one line
naming the keys) before anything is written; with --allow_config_change it goes on and the
change is recorded with its step. A command that is rejected never rewrites config.json.
"""
import functools
import json

import pytest

from test_faults import TINY, TINY_CLASSIFICATION, final_json
from test_faults import main_py as run_main

TASKS = [pytest.param(TINY, id="lm"),
         pytest.param(TINY_CLASSIFICATION, id="classification", marks=pytest.mark.slow)]


def _record(workdir):
    return (workdir / "config.json").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_a_rejected_rerun_leaves_the_record_and_eval_works(tmp_path, task):
    main_py = functools.partial(run_main, task=task)
    first = main_py(tmp_path, "--config.train.steps=4", "--config.train.eval_every=2",
                    "--config.train.checkpoint_every=2")
    assert first.returncode == 0, first.stderr[-3000:]
    record = _record(tmp_path)
    for override, key in (("--config.model.d=32", "model.d 16 -> 32"),
                          ("--config.train.lr=0.001", "train.lr 0.003 -> 0.001")):
        out = main_py(tmp_path, "--config.train.steps=4", override)
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and len(errors) == 1 and key in errors[0], out.stderr[-2000:]
        assert "--allow_config_change" in errors[0]
        assert _record(tmp_path) == record
    ev = main_py(tmp_path, "--mode=eval")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert final_json(ev.stdout)["step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_an_allowed_change_is_recorded_with_its_step(tmp_path, task):
    main_py = functools.partial(run_main, task=task)
    stopped = main_py(tmp_path, "--config.train.steps=4", "--config.train.stop_at=2",
                      "--config.train.checkpoint_every=2")
    assert stopped.returncode == 0 and final_json(stopped.stdout)["status"] == "stopped"
    record = _record(tmp_path)
    size = main_py(tmp_path, "--config.train.steps=4", "--config.model.d=32",
                   "--allow_config_change")          # the checkpoint cannot hold d = 32
    assert size.returncode == 2 and "d: checkpoint 16, config 32" in size.stderr
    assert _record(tmp_path) == record and not (tmp_path / "config_changes.jsonl").exists()
    lower = main_py(tmp_path, "--config.train.steps=4", "--config.train.lr=0.001",
                    "--allow_config_change")
    assert lower.returncode == 0 and final_json(lower.stdout)["step"] == 4, lower.stderr[-2000:]
    changes = [json.loads(line) for line in open(tmp_path / "config_changes.jsonl")]
    assert changes == [{"step": 2, "key": "train.lr", "old": 0.003, "new": 0.001}]
    assert json.loads(_record(tmp_path))["train"]["lr"] == 0.001
    assert "--config.train.lr" not in " ".join(task)    # 0.003 is the config file's
