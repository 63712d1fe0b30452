"""Faults a long run meets: every one resumes bit-exactly or stops with one clear message and a
non-zero exit code; nothing is lost or reported wrong with exit code 0.

Tiny model on a slice of the embedded corpus; the user's path (main.py as a subprocess) where
the fault is a process-level one (signals, kill -9, a second trainer, 8 devices).
"""
import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from srupp_jax.data.stdlib_lines import PACKAGES
from srupp_jax.training import checkpoint, leaves, trainer

from srupp_jax.programs import modes
from srupp_jax.training.steps import StepMetrics
from srupp_jax.training.workdir import EXIT_CODES, WorkdirLock, WorkdirLockedError

from test_train import _losses, tiny_config
from test_classification_main import TINY as TINY_CLASSIFICATION
from test_translation_main import NUMBERS, SIZES

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config=configs/default.py", "--config.model.d=16", "--config.model.d_proj=4",
        "--config.model.num_layers=2", "--config.train.batch_size=4",
        "--config.train.unroll=16", "--config.train.warmup_steps=2",
        "--config.eval.batch_size=2", "--config.eval.unroll=32", "--config.eval.mem_len=32",
        "--config.eval.max_tokens=2000", "--config.data.max_bytes=200000"]


# The same loop through the translation and classification tasks (their tests' sizes).
TINY_TRANSLATION = [*NUMBERS, *SIZES, "--config.eval.best=loss"]


def main_py(workdir, *args, timeout=300, task=TINY, **popen):
    """Run main.py on the tiny model (of `task`: TINY, the LM, TINY_TRANSLATION or
    TINY_CLASSIFICATION); returns the CompletedProcess (or Popen with popen)."""
    cmd = [sys.executable, "main.py", *task, f"--workdir={workdir}", *args]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def final_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def saved_steps(workdir) -> list:
    d = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def wait_for_rows(workdir, rows, proc, timeout=300):
    metrics = pathlib.Path(workdir) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= rows:
            return
        time.sleep(0.2)
    raise AssertionError(proc.communicate()[1][-3000:])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir trained 6 steps (checkpoints at 3 and 6, dev eval at both): copy before use."""
    workdir = tmp_path_factory.mktemp("trained")
    last = modes.train(tiny_config(), str(workdir))
    assert last["status"] == "finished" and saved_steps(workdir) == [3, 6]
    return workdir


def copy_of(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "w")
    return tmp_path / "w"


# ---------------------------------------------------------------------------------- epochs
@pytest.mark.slow
def test_runs_past_epoch_boundaries_on_one_device(tmp_path):
    """2.5 epochs: the carry is rebuilt at every boundary (it used to be a freed buffer)."""
    config = tiny_config(steps=105, log_every=35, eval_every=105, checkpoint_every=105)
    config.data.max_bytes = 3000       # 2,700 train bytes, 4 streams x 16: 42 steps an epoch
    last = modes.train(config, str(tmp_path))
    assert last["status"] == "finished" and last["step"] == 105
    assert np.isfinite(last["train_loss"]) and np.isfinite(last["dev_loss"])


@pytest.mark.slow
def test_runs_past_epoch_boundaries_on_eight_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "main.py", *TINY, f"--workdir={tmp_path}",
           "--config.train.batch_size=8", "--config.data.max_bytes=3000",
           "--config.train.steps=53", "--config.train.log_every=10",   # 21 steps an epoch
           "--config.train.eval_every=53", "--config.train.checkpoint_every=53"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = final_json(out.stdout)
    assert result["status"] == "finished" and result["step"] == 53 and result["devices"] == 8


# ------------------------------------------------------------------------ checkpoint faults
@pytest.mark.slow
def test_corrupt_latest_is_quarantined_and_training_saves_again(trained, tmp_path):
    """The latest checkpoint's arrays are corrupt: training falls back to step 3, moves step 6
    to quarantine, retrains 4..6 exactly as before, and saves 6 again (saves used to be
    refused after a fallback, silently)."""
    w = copy_of(trained, tmp_path)
    before = _losses(w)
    flip_byte(largest_file(w / "checkpoints" / "6" / "params"))
    last = modes.train(tiny_config(), str(w))
    assert last["status"] == "finished" and saved_steps(w) == [3, 6]
    assert (w / "checkpoints" / "quarantine" / "6").is_dir()
    after = _losses(w)
    assert {s: after[s] for s in (4, 5, 6)} == {s: before[s] for s in (4, 5, 6)}
    rows = [json.loads(r) for r in open(w / "metrics.jsonl")]
    steps = [(r["step"], r["split"]) for r in rows]
    assert len(steps) == len(set(steps)), "rows of redone steps are not duplicated"


@pytest.mark.slow
def test_stray_higher_step_directory_does_not_stop_saving(trained, tmp_path):
    w = copy_of(trained, tmp_path)
    (w / "checkpoints" / "700").mkdir()
    last = modes.train(tiny_config(steps=9), str(w))
    assert last["step"] == 9 and 9 in saved_steps(w) and 700 not in saved_steps(w)
    assert (w / "checkpoints" / "quarantine" / "700").is_dir()


def largest_file(root):
    files = [p for p in pathlib.Path(root).rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def flip_byte(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x5A
    path.write_bytes(bytes(data))


def training_items(config):
    """The trees modes.train checkpoints, freshly initialised (restore targets)."""
    from flax import nnx
    from srupp_jax.training.optim import make_optimizer
    from srupp_jax.training.rng import model_rngs
    t = config.train
    model = modes.build_model(config, model_rngs(config))
    _, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(t.lr, t.warmup_steps, t.steps)
    return {"params": params, "rest": rest, "opt_state": tx.init(params),
            "carry": model.init_state(t.batch_size, t.unroll)}


@pytest.mark.slow
def test_a_flipped_byte_in_any_checkpoint_file_never_restores_wrong_arrays(trained, tmp_path):
    """For every file of step 6 (arrays of params, rest, opt_state and carry, their metadata,
    Orbax's and ours), flip a byte: restoring everything training restores either falls back
    to step 3 (step 6 quarantined) or gives step 6's exact arrays. (That a flipped array file
    is detected: test_corrupt_latest_is_quarantined_and_training_saves_again.)"""
    import jax
    like = training_items(tiny_config())
    as_numpy = lambda tree: [np.asarray(jax.random.key_data(x) if leaves.is_key(x) else x)
                             for x in jax.tree.leaves(tree)]
    with checkpoint.Checkpoints(trained / "checkpoints", read_only=True) as ck:
        step, good = ck.restore(like)
    assert step == 6
    root = trained / "checkpoints" / "6"
    files = [p.relative_to(root) for p in sorted(root.rglob("*"))
             if p.is_file() and p.stat().st_size > 0]
    assert len(files) >= 40 and {"params", "rest", "opt_state", "carry", "meta"} <= {
        f.parts[0] for f in files}, files
    fell_back = 0
    for i, rel in enumerate(files):
        w = tmp_path / str(i)
        shutil.copytree(trained / "checkpoints", w)
        flip_byte(w / "6" / rel)
        try:
            with checkpoint.Checkpoints(w, read_only=True) as ck:
                step, items = ck.restore(like)
        except checkpoint.CheckpointMismatchError:
            step = None   # the stored shapes were corrupted: reported, nothing restored
        if step == 6:
            for a, b in zip(as_numpy(items), as_numpy(good)):
                np.testing.assert_array_equal(a, b, err_msg=str(rel))
        elif step is not None:
            assert step == 3 and (w / "quarantine" / "6").is_dir(), rel
            fell_back += 1
    assert fell_back >= 8, fell_back


@pytest.mark.slow
def test_garbage_metrics_file_is_set_aside(trained, tmp_path):
    """Orbax reads every step's metrics when it opens a directory: garbage in one used to
    stop resume, eval and generate. It is moved aside; that checkpoint still restores."""
    w = copy_of(trained, tmp_path)
    (w / "checkpoints" / "6" / "metrics" / "metrics").write_text("{not json")
    _, _, _, step = modes.restore(tiny_config(), str(w), "latest")
    assert step == 6 and (w / "checkpoints" / "quarantine" / "6.metrics").is_file()
    assert modes.train(tiny_config(steps=7), str(w))["step"] == 7


@pytest.mark.slow
def test_eval_falls_back_past_a_corrupt_best_checkpoint_and_names_a_mismatch(trained,
                                                                             tmp_path):
    w = copy_of(trained, tmp_path)
    best = checkpoint.Checkpoints(w / "checkpoints", read_only=True)
    best_step = best.best_step()
    best.close()
    flip_byte(largest_file(w / "checkpoints" / str(best_step) / "params"))
    base = ["--config.model.d=16", "--config.model.d_proj=4", "--config.model.num_layers=2",
            "--config.data.max_bytes=200000", "--config.eval.max_tokens=2000"]
    out = subprocess.run([sys.executable, "main.py", "--config=configs/default.py", *base,
                          f"--workdir={w}", "--mode=eval"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert final_json(out.stdout)["step"] == ({3, 6} - {best_step}).pop()
    moved = [line for line in out.stderr.splitlines() if "quarantine" in line]
    assert len(moved) == 1 and f"checkpoint step {best_step}" in moved[0], out.stderr
    assert "Traceback" not in out.stderr
    wider = [a for a in base if "model.d=" not in a] + ["--config.model.d=32"]
    mismatch = subprocess.run([sys.executable, "main.py", "--config=configs/default.py", *wider,
                               f"--workdir={w}", "--mode=eval"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert mismatch.returncode == 2
    [line] = [x for x in mismatch.stderr.splitlines() if x.startswith("error:")]
    assert "d: checkpoint 16, config 32" in line, mismatch.stderr[-3000:]
    assert "strict" not in mismatch.stderr and "Traceback" not in mismatch.stderr


@pytest.mark.slow
def test_a_classifiers_corrupt_best_checkpoint_is_passed_over_in_eval_and_predict(tmp_path):
    """The best checkpoint by dev accuracy (the highest) fails its checksum: eval and predict
    use the other step, moving the corrupt one to quarantine once."""
    args = ["--config.train.steps=4", "--config.train.eval_every=2",
            "--config.train.checkpoint_every=2", "--config.train.lr=0.03"]
    trained = main_py(tmp_path, *args, task=TINY_CLASSIFICATION)
    assert trained.returncode == 0, trained.stderr[-3000:]
    with checkpoint.Checkpoints(tmp_path / "checkpoints", read_only=True,
                                best_metric="dev_accuracy", best_mode="max") as ck:
        best = ck.best_step()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    accuracy = {r["step"]: r["dev_accuracy"] for r in rows if r["split"] == "dev"}
    assert sorted(accuracy) == [2, 4] and accuracy[best] == max(accuracy.values())
    flip_byte(largest_file(tmp_path / "checkpoints" / str(best) / "params"))
    out = main_py(tmp_path, "--mode=eval", task=[])
    assert out.returncode == 0 and final_json(out.stdout)["step"] == ({2, 4} - {best}).pop()
    assert (tmp_path / "checkpoints" / "quarantine" / str(best)).is_dir()
    label = subprocess.run([sys.executable, "main.py", f"--workdir={tmp_path}",
                            "--mode=predict"], input="import unittest\n", cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert label.returncode == 0 and label.stdout.split("\t")[0] in PACKAGES, label.stderr


def test_eval_of_a_workdir_without_checkpoints_creates_nothing(tmp_path):
    missing = tmp_path / "never" / "trained"
    with pytest.raises(FileNotFoundError, match="train first"):
        modes.restore(tiny_config(), str(missing))
    assert not (tmp_path / "never").exists()


def test_failed_asynchronous_save_stops_at_the_next_step(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp
    calls = []

    def failing(self):
        calls.append(1)
        if self.all_steps():        # after the first save (step 3) has been started
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "check_for_errors", failing)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device"):
        modes.train(tiny_config(), str(tmp_path))
    assert max(_losses(tmp_path)) == 3      # stopped at step 4, right after the failed save


# ----------------------------------------------------------------------------- the loop
def test_non_finite_last_steps_still_evaluate_and_save(tmp_path, monkeypatch):
    """The last two steps are non-finite (fewer than max_bad_steps): the final evaluation and
    checkpoint still happen (the loop used to skip them and exit 0 with stale metrics)."""
    real = trainer.make_train_step

    def make(graphdef, tx, loss, *scaling):
        step = real(graphdef, tx, loss, *scaling)
        calls = []

        def maybe_bad(params, rest, opt_state, carry, inputs, targets):
            calls.append(1)
            if len(calls) >= 5:      # steps 5 and 6 of 6: what a non-finite step returns
                nan = np.float32(np.nan)
                return params, rest, opt_state, carry, StepMetrics(nan, nan, False)
            return step(params, rest, opt_state, carry, inputs, targets)
        return maybe_bad

    monkeypatch.setattr(trainer, "make_train_step", make)
    last = modes.train(tiny_config(eval_every=100, checkpoint_every=100),
                                    str(tmp_path))
    assert last["status"] == "finished" and last["step"] == 6 and "dev_loss" in last
    assert saved_steps(tmp_path) == [6]
    dev = [json.loads(r) for r in open(tmp_path / "metrics.jsonl") if '"dev"' in r]
    assert [r["step"] for r in dev] == [6]


@pytest.mark.parametrize("key", ["log_every", "eval_every", "checkpoint_every", "batch_size"])
def test_zero_intervals_and_batch_are_named(key):
    config = tiny_config(**{key: 0})
    with pytest.raises(ValueError, match=f"train.{key}=0; expected >= 1"):
        modes.validate_config(config, num_devices=1)


@pytest.mark.slow
def test_kill_9_during_saves_then_resume_is_bit_exact(tmp_path):
    """Saving every step, kill -9 lands in or near a save; the rerun resumes from the last
    complete checkpoint and reproduces the straight run's losses exactly."""
    args = ["--config.train.steps=30", "--config.train.log_every=1",
            "--config.train.eval_every=1000", "--config.train.checkpoint_every=1"]
    straight = main_py(tmp_path / "straight", *args)
    assert straight.returncode == 0, straight.stderr[-3000:]
    proc = main_py(tmp_path / "killed", *args, popen=True)
    wait_for_rows(tmp_path / "killed", 12, proc)
    proc.kill()
    proc.wait()
    rerun = main_py(tmp_path / "killed", *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "taking over a stale lock" in rerun.stderr
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "straight")


# ------------------------------------------------------------------ signals, lock, status
@pytest.mark.parametrize("signum,status,task", [
    (signal.SIGINT, "interrupted", TINY), (signal.SIGTERM, "preempted", TINY),
    pytest.param(signal.SIGINT, "interrupted", TINY_TRANSLATION, id="translation"),
    pytest.param(signal.SIGINT, "interrupted", TINY_CLASSIFICATION, id="classification",
                 marks=pytest.mark.slow)])
@pytest.mark.slow
def test_signal_saves_reports_exits_with_its_code_and_resumes(tmp_path, signum, status, task):
    w = tmp_path / "run"
    args = ["--config.train.steps=100000", "--config.train.log_every=1",
            "--config.train.eval_every=100000", "--config.train.checkpoint_every=100000"]
    main_py = functools.partial(globals()["main_py"], task=task)
    proc = main_py(w, *args, popen=True)
    wait_for_rows(w, 3, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_CODES[status], err[-3000:]
    result = final_json(out)
    assert result["status"] == status and saved_steps(w) == [result["step"]]
    assert 1 <= result["train_step"] <= result["step"]     # the step the train_* were measured
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.count("stopping after the current step: saving") == 1      # acknowledged
    assert not (w / "lock").exists()
    reached = result["step"]
    rerun = main_py(w, *args, f"--config.train.stop_at={reached + 2}")
    assert rerun.returncode == 0 and f"resumed from step {reached}" in rerun.stderr
    assert final_json(rerun.stdout)["status"] == "stopped"
    if signum == signal.SIGINT:     # bit-identical to a run that was never interrupted
        main_py(tmp_path / "straight", *args, f"--config.train.stop_at={reached + 2}")
        assert _losses(tmp_path / "straight") == _losses(w)


def test_a_second_trainer_on_a_workdir_in_use_stops(tmp_path):
    with WorkdirLock(str(tmp_path)):           # held by this (live) process
        out = main_py(tmp_path, "--config.train.steps=3")
        assert out.returncode == 1
        [line] = [x for x in out.stderr.splitlines() if x.startswith("error:")]
        assert f"is in use by pid {os.getpid()}" in line and "--force" in line
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_stale_and_foreign_locks(tmp_path):
    lock = tmp_path / "lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead), "start": "x"}))
    with WorkdirLock(str(tmp_path)):            # a dead pid on this host: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    lock.write_text(json.dumps({"host": "another-host", "pid": 1, "start": "y"}))
    with pytest.raises(WorkdirLockedError, match="pid 1 on host another-host since y"):
        WorkdirLock(str(tmp_path))
    with WorkdirLock(str(tmp_path), force=True):
        pass


@pytest.mark.slow
def test_rerunning_a_finished_workdir_reports_it(trained, tmp_path):
    w = copy_of(trained, tmp_path)
    out = main_py(w, "--config.train.steps=6", "--config.train.eval_every=3",
                  "--config.train.checkpoint_every=3", "--config.train.log_every=1")
    assert out.returncode == 0, out.stderr[-3000:]
    result = final_json(out.stdout)
    assert result["status"] == "finished" and result["step"] == 6
    assert "has finished training" in out.stderr and "dev_bpc" in result
    assert saved_steps(w) == [3, 6]


# ------------------------------------------------------------------------------- prepare
def _prepare(*args):
    from srupp_jax.data import prepare
    return prepare.main(["--dataset=enwik8", *map(str, args)])


def test_prepare_rejects_bad_sources_with_one_line(tmp_path, capsys):
    data, cache = tmp_path / "tfds", tmp_path / "cache"
    common = (f"--data_dir={data}", f"--cache_dir={cache}")
    cases = {
        "missing": (tmp_path / "nope", "does not exist"),
        "empty": (tmp_path / "empty", "holds no file named enwik8 or enwik8.zip"),
        "garbage": (tmp_path / "garbage", "is not a valid zip or tar file"),
        "truncated": (tmp_path / "truncated", "is not a valid zip or tar file"),
        "small": (tmp_path / "small", "has 50,000 bytes"),
    }
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "enwik8.zip").write_bytes(os.urandom(5000))
    (tmp_path / "truncated").mkdir()
    with zipfile.ZipFile(tmp_path / "full.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("enwik8", os.urandom(50_000))
    (tmp_path / "truncated" / "enwik8.zip").write_bytes((tmp_path / "full.zip").read_bytes()[
        :20_000])
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "enwik8").write_bytes(os.urandom(50_000))
    for name, (manual, message) in cases.items():
        capsys.readouterr()
        assert _prepare(f"--manual_dir={manual}", *common) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (name, err)
    assert not data.exists() or not any(data.rglob("dataset_info.json"))


@pytest.mark.slow
def test_modified_source_is_marked_and_a_different_source_is_not_reused(tmp_path, capsys):
    data, cache = tmp_path / "tfds", tmp_path / "cache"
    common = (f"--data_dir={data}", f"--cache_dir={cache}")
    for name, seed in (("a", 0), ("b", 1)):
        (tmp_path / name).mkdir()
        raw = np.random.RandomState(seed).randint(32, 127, 40_000).astype(np.uint8).tobytes()
        (tmp_path / name / "enwik8").write_bytes(raw)
    assert _prepare(f"--manual_dir={tmp_path / 'a'}", *common, "--allow_modified_source") == 0
    assert "not the standard enwik8" in capsys.readouterr().out
    from srupp_jax.data import datasets
    a = datasets.load_tokens("enwik8", data_dir=str(data), cache_dir=str(cache))
    assert a.info["standard_source"] is False
    assert _prepare(f"--manual_dir={tmp_path / 'b'}", *common, "--allow_modified_source") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _prepare(f"--manual_dir={tmp_path / 'b'}", *common, "--allow_modified_source",
                    "--overwrite") == 0
    b = datasets.load_tokens("enwik8", data_dir=str(data), cache_dir=str(cache))
    assert not np.array_equal(a.train[:1000], b.train[:1000])
    # every metric of a run on it says so
    config = tiny_config(steps=2, warmup_steps=1, eval_every=2, checkpoint_every=2)
    config.data.name, config.data.max_bytes = "enwik8", 0
    config.data.data_dir, config.data.cache_dir = str(data), str(cache)
    last = modes.train(config, str(tmp_path / "run"))
    assert last["standard_data"] == 0
    rows = [json.loads(r) for r in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows and all(r["standard_data"] == 0 for r in rows)
